/**
 * A hook that runs after pacing and immediately before a request is written. The outbox uses it to
 * record "sending" at the last possible moment: a row is marked only once the request is really about
 * to leave, so a crash before that point leaves the row safely queued, and a crash after it leaves a
 * row known to be in doubt.
 *
 * The hook is handed down explicitly (the send → the provider service → ProviderRuntime.call → the
 * attempt's record → the observed fetch), not through AsyncLocalStorage: once used, its promise hooks
 * slow down every promise in the process (about a third more CPU per database transaction here).
 *
 * Calls given a hook get one attempt only: the outbox owns their retries (a refused request goes back
 * to the queue), so a row is never `sending` while a retry merely waits.
 */
export type RequestHook = () => Promise<void>;

/** What a send passes to the provider call it makes. */
export interface SendCall {
  beforeSend?: RequestHook;
}
