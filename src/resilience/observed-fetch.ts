import type { Logger } from '../log.js';
import { ToolError, type ProviderName } from '../result.js';
import { networkError } from './http-errors.js';
import { isBuffered, leanFetch } from './lean-fetch.js';
import type { RateBudget } from './rate-budget.js';
import type { RequestHook } from './request-hooks.js';

/**
 * What the transport saw during one attempt. SDKs (intercom-client) swallow transport errors and
 * headers into their own error types; recording them here lets the policy classify every failure the
 * same way, whichever client made the request.
 */
export interface AttemptRecord {
  response?: { status: number; headers: Headers };
  error?: ToolError;
  /** The send's hook: run after pacing, right before the request is written. */
  beforeSend?: RequestHook;
}

/**
 * How a request made through an SDK names its attempt: the runtime gives each attempt an id, the SDK
 * call sends it as this header (intercom-client: request option `headers`), and the observed fetch
 * takes it off again and records into that attempt. A fetch made directly is given the record instead
 * (CallContext.fetch). Neither needs AsyncLocalStorage, whose promise hooks, once enabled, slow down
 * every promise in the process.
 */
export const ATTEMPT_HEADER = 'x-cs-mcp-attempt';
const openAttempts = new Map<string, AttemptRecord>();
let attemptSeq = 0;

/** Runs one attempt with a fresh record, findable by its id while it runs. */
export async function withAttemptRecord<T>(fn: (record: AttemptRecord, id: string) => Promise<T>, beforeSend?: RequestHook): Promise<T> {
  const record: AttemptRecord = beforeSend ? { beforeSend } : {};
  const id = String(++attemptSeq);
  openAttempts.set(id, record);
  try {
    return await fn(record, id);
  } finally {
    openAttempts.delete(id);
  }
}

/** The attempt a request names by its header (which is removed: it is not for the provider). */
function attemptOf(init: RequestInit | undefined): AttemptRecord | undefined {
  const headers = init?.headers;
  if (!headers) return undefined;
  if (headers instanceof Headers) {
    const id = headers.get(ATTEMPT_HEADER);
    if (id === null) return undefined;
    headers.delete(ATTEMPT_HEADER);
    return openAttempts.get(id);
  }
  if (Array.isArray(headers)) return undefined;
  const id = headers[ATTEMPT_HEADER];
  if (typeof id !== 'string') return undefined;
  delete headers[ATTEMPT_HEADER];
  return openAttempts.get(id);
}

/** fetch, plus the attempt to record into when the caller has it at hand. */
export type ObservedFetch = (input: string | URL | Request, init?: RequestInit, record?: AttemptRecord) => Promise<Response>;

/** How one request ended: the answer's status class, or why there was none. */
export type RequestResult = '2xx' | '3xx' | '4xx' | '429' | '5xx' | 'timeout' | 'network' | 'aborted';

export function resultOfStatus(status: number): RequestResult {
  if (status === 429) return '429';
  if (status >= 500) return '5xx';
  if (status >= 400) return '4xx';
  if (status >= 300) return '3xx';
  return '2xx';
}

export interface ObservedFetchOptions {
  provider: ProviderName;
  /** Told how every request that was sent ended (metrics). */
  onResult?: (result: RequestResult) => void;
  budget: RateBudget;
  timeoutMs: number;
  log: Logger;
  baseFetch?: typeof fetch;
}

/**
 * A fetch that paces by the provider's reported budget, bounds each attempt with a timeout, reads
 * rate-limit headers, and turns transport failures into classified ToolErrors.
 */
export function createObservedFetch(opts: ObservedFetchOptions): ObservedFetch {
  const baseFetch = opts.baseFetch ?? leanFetch;
  return async (input: string | URL | Request, init?: RequestInit, given?: AttemptRecord): Promise<Response> => {
    const record = given ?? attemptOf(init);
    const callerSignal = init?.signal ?? undefined;
    const sentAt = await opts.budget.acquire(callerSignal);
    const hook = record?.beforeSend;
    if (hook) {
      try {
        await hook(); // the outbox's point of no return, right before the request is written
      } catch (err) {
        opts.budget.release(sentAt);
        throw err;
      }
    }
    const controller = new AbortController();
    let timedOut = false;
    // The timer also covers reading the body (fetch resolves at the headers); unref so it never holds the process.
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort(new Error(`timed out after ${opts.timeoutMs} ms`));
      if (record && !record.error) record.error = networkError(opts.provider, undefined, opts.timeoutMs);
    }, opts.timeoutMs);
    timer.unref?.();
    const onCallerAbort = () => controller.abort(callerSignal?.reason);
    callerSignal?.addEventListener('abort', onCallerAbort, { once: true });
    let answered = false;
    try {
      const response = await baseFetch(input, { ...init, signal: controller.signal });
      answered = true;
      opts.onResult?.(resultOfStatus(response.status));
      opts.budget.observe(response.headers, response.status, sentAt);
      if (record) record.response = { status: response.status, headers: response.headers };
      if (response.status >= 400) {
        opts.log.debug({ provider: opts.provider, status: response.status, method: init?.method ?? 'GET' }, 'provider answered with an error status');
      }
      return clearOnceRead(response, timer);
    } catch (err) {
      clearTimeout(timer);
      opts.onResult?.(timedOut ? 'timeout' : callerSignal?.aborted ? 'aborted' : 'network');
      if (callerSignal?.aborted && !timedOut) throw err;
      const classified = networkError(opts.provider, err, timedOut ? opts.timeoutMs : undefined);
      if (record) record.error = classified;
      throw classified;
    } finally {
      opts.budget.release(sentAt);
      callerSignal?.removeEventListener('abort', onCallerAbort);
      if (!answered) clearTimeout(timer);
    }
  };
}

const BODY_READERS = ['text', 'json', 'arrayBuffer', 'blob', 'bytes', 'formData'] as const;

/**
 * Clears the attempt's timer once the body has been read whole, cancelled, or failed. Left running,
 * every request left a timer behind that later woke the process to abort a finished request and build
 * an error nobody read (one wake-up per message, ten seconds late). A body leanFetch already read whole
 * has nothing left to time out. A body read as a stream stays under the timer, as before.
 */
function clearOnceRead(response: Response, timer: NodeJS.Timeout): Response {
  // Buffered first: asking a buffered response for its body would build a stream for nothing.
  const body = isBuffered(response) ? null : response.body;
  if (body === null) {
    clearTimeout(timer);
    return response;
  }
  const done = () => clearTimeout(timer);
  const r = response as unknown as Record<string, (() => Promise<unknown>) | undefined>;
  for (const name of BODY_READERS) {
    const read = r[name];
    if (typeof read === 'function') r[name] = () => read.call(response).finally(done);
  }
  const cancel = body.cancel;
  body.cancel = (reason?: unknown) => cancel.call(body, reason).finally(done);
  return response;
}
