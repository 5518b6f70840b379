import { AsyncLocalStorage } from 'node:async_hooks';
import type { Logger } from '../log.js';
import { ToolError, type ProviderName } from '../result.js';
import { networkError, retryAfterMs } from './http-errors.js';
import type { RateBudget } from './rate-budget.js';
import { currentRequestHook } from './request-hooks.js';

/**
 * What the transport saw during one attempt. SDKs (intercom-client) swallow transport errors and
 * headers into their own error types; recording them here lets the policy classify every failure the
 * same way, whichever client made the request.
 */
export interface AttemptRecord {
  response?: { status: number; headers: Headers };
  error?: ToolError;
}

const attempts = new AsyncLocalStorage<AttemptRecord>();

export function withAttemptRecord<T>(fn: (record: AttemptRecord) => Promise<T>): Promise<T> {
  const record: AttemptRecord = {};
  return attempts.run(record, () => fn(record));
}

export interface ObservedFetchOptions {
  provider: ProviderName;
  budget: RateBudget;
  timeoutMs: number;
  log: Logger;
  baseFetch?: typeof fetch;
}

/**
 * A fetch that paces by the provider's reported budget, bounds each attempt with a timeout, reads
 * rate-limit headers, and turns transport failures into classified ToolErrors.
 */
export function createObservedFetch(opts: ObservedFetchOptions): typeof fetch {
  const baseFetch = opts.baseFetch ?? globalThis.fetch;
  return async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const record = attempts.getStore();
    const callerSignal = init?.signal ?? undefined;
    await opts.budget.acquire(callerSignal);
    const hook = currentRequestHook();
    if (hook) {
      try {
        await hook(); // the outbox's point of no return, right before the request is written
      } catch (err) {
        opts.budget.release();
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
      opts.budget.observe(response.headers, response.status);
      if (response.status === 429 && !response.headers.get('x-ratelimit-reset')) {
        opts.budget.exhaustFor(retryAfterMs(response.headers) ?? 1000);
      }
      if (record) record.response = { status: response.status, headers: response.headers };
      if (response.status >= 400) {
        opts.log.debug({ provider: opts.provider, status: response.status, method: init?.method ?? 'GET' }, 'provider answered with an error status');
      }
      return clearOnceRead(response, timer);
    } catch (err) {
      clearTimeout(timer);
      if (callerSignal?.aborted && !timedOut) throw err;
      const classified = networkError(opts.provider, err, timedOut ? opts.timeoutMs : undefined);
      if (record) record.error = classified;
      throw classified;
    } finally {
      opts.budget.release();
      callerSignal?.removeEventListener('abort', onCallerAbort);
      if (!answered) clearTimeout(timer);
    }
  };
}

const BODY_READERS = ['text', 'json', 'arrayBuffer', 'blob', 'bytes', 'formData'] as const;

/**
 * Clears the attempt's timer once the body has been read whole (or failed). Left running, every request
 * left a timer behind that later aborted a finished request and built an error nobody read. A body read
 * as a stream stays under the timer, as before.
 */
function clearOnceRead(response: Response, timer: NodeJS.Timeout): Response {
  if (response.body === null) {
    clearTimeout(timer);
    return response;
  }
  const done = () => clearTimeout(timer);
  const r = response as unknown as Record<string, (() => Promise<unknown>) | undefined>;
  for (const name of BODY_READERS) {
    const read = r[name];
    if (typeof read === 'function') r[name] = () => read.call(response).finally(done);
  }
  return response;
}
