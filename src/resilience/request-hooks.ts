import { AsyncLocalStorage } from 'node:async_hooks';

/**
 * A hook that runs after pacing and immediately before a request is written, inside whatever provider
 * call is made under it. The outbox uses it to record "sending" at the last possible moment: a row is
 * marked only once the request is really about to leave, so a crash before that point leaves the row
 * safely queued, and a crash after it leaves a row known to be in doubt.
 *
 * Calls made under a hook get one attempt only: the outbox owns their retries (a refused request goes
 * back to the queue), so a row is never `sending` while a retry merely waits.
 */
type RequestHook = () => Promise<void>;

const hooks = new AsyncLocalStorage<RequestHook>();

export function withRequestHook<T>(hook: RequestHook, fn: () => Promise<T>): Promise<T> {
  return hooks.run(hook, fn);
}

/** Called by the observed fetch before every request. A hook that throws stops the request. */
export async function runRequestHook(): Promise<void> {
  await hooks.getStore()?.();
}

/** The hook the observed fetch must run before this request, if any (no promise when there is none). */
export function currentRequestHook(): RequestHook | undefined {
  return hooks.getStore();
}

/** True inside withRequestHook: the caller retries by itself, the policy must not. */
export function callerRetries(): boolean {
  return hooks.getStore() !== undefined;
}
