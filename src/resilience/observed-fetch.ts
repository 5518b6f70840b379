import { AsyncLocalStorage } from 'node:async_hooks';
import type { Logger } from '../log.js';
import { ToolError, type ProviderName } from '../result.js';
import { networkError } from './http-errors.js';
import type { RateBudget } from './rate-budget.js';
import { runRequestHook } from './request-hooks.js';

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
    const sentAt = await opts.budget.acquire(callerSignal);
    try {
      await runRequestHook(); // the outbox's point of no return, right before the request is written
    } catch (err) {
      opts.budget.release(sentAt);
      throw err;
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
    try {
      const response = await baseFetch(input, { ...init, signal: controller.signal });
      opts.budget.observe(response.headers, response.status, sentAt);
      if (record) record.response = { status: response.status, headers: response.headers };
      if (response.status >= 400) {
        opts.log.debug({ provider: opts.provider, status: response.status, method: init?.method ?? 'GET' }, 'provider answered with an error status');
      }
      return response;
    } catch (err) {
      clearTimeout(timer);
      if (callerSignal?.aborted && !timedOut) throw err;
      const classified = networkError(opts.provider, err, timedOut ? opts.timeoutMs : undefined);
      if (record) record.error = classified;
      throw classified;
    } finally {
      opts.budget.release(sentAt);
      callerSignal?.removeEventListener('abort', onCallerAbort);
    }
  };
}
