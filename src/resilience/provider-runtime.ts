import type { ResilienceConfig } from '../config.js';
import type { Logger } from '../log.js';
import { notConfigured, PROVIDER_LABEL, ToolError, type ProviderName } from '../result.js';
import { httpStatusError } from './http-errors.js';
import { ATTEMPT_HEADER, createObservedFetch, withAttemptRecord, type AttemptRecord, type ObservedFetch, type RequestResult } from './observed-fetch.js';
import { ProviderPolicy, type CallOptions, type CircuitStateName, type LastError, type PolicyOptions } from './policy.js';
import { RateBudget, type RateBudgetOptions, type RateBudgetSnapshot } from './rate-budget.js';

export type { RequestResult } from './observed-fetch.js';

export interface ProviderStatus {
  provider: ProviderName;
  configured: boolean;
  /** When not configured: the environment variables to set. */
  missing?: string[];
  circuit: CircuitStateName;
  circuit_retry_in_ms?: number;
  last_error?: LastError;
  rate_limit: RateBudgetSnapshot;
}

export interface ProviderRuntimeOptions {
  provider: ProviderName;
  resilience: ResilienceConfig;
  log: Logger;
  /** Environment variables still missing; empty when the provider is usable. */
  missing: string[];
  baseFetch?: typeof fetch;
  budget?: RateBudgetOptions;
  policy?: PolicyOptions;
}

export interface CallContext {
  attempt: number;
  /** Present when the call was given a signal (CallOptions.signal): pass it on to the request. */
  signal?: AbortSignal;
  record: AttemptRecord;
  /** The runtime's fetch, recording into this attempt: what a provider calling HTTP itself uses. */
  fetch: typeof fetch;
  /** For a request made through an SDK (which calls the runtime's fetch itself): send these headers with it. */
  attemptHeaders: Record<string, string>;
}

export interface RuntimeCallOptions extends CallOptions {
  /** Pulls the provider's explanation out of an SDK error or error body, for the message. */
  describeError?: (err: unknown) => string | undefined;
}

/**
 * Everything a provider module needs to make calls the shared way: a paced, timed, observed fetch and
 * a policy that retries and breaks. One instance per provider, built from config in services.ts.
 */
export class ProviderRuntime {
  readonly provider: ProviderName;
  readonly budget: RateBudget;
  readonly policy: ProviderPolicy;
  /** Paced, timed and observed; outside `call` it records into no attempt. */
  readonly fetch: ObservedFetch;
  readonly missing: string[];
  private readonly requestListeners: Array<(result: RequestResult) => void> = [];

  constructor(opts: ProviderRuntimeOptions) {
    this.provider = opts.provider;
    this.missing = opts.missing;
    const log = opts.log; // policy and fetch name the provider in each line themselves
    this.budget = new RateBudget({ maxWaitMs: opts.resilience.maxDelayMs, provider: opts.provider, ...opts.budget });
    this.policy = new ProviderPolicy(opts.provider, opts.resilience, log, opts.policy);
    this.fetch = createObservedFetch({
      provider: opts.provider,
      budget: this.budget,
      timeoutMs: opts.resilience.timeoutMs,
      log,
      baseFetch: opts.baseFetch,
      onResult: (result) => {
        for (const listener of this.requestListeners) listener(result);
      },
    });
  }

  /** Called when each request to the provider ends: its status class, or timeout / network / aborted (metrics). */
  onRequest(listener: (result: RequestResult) => void): void {
    this.requestListeners.push(listener);
  }

  get configured(): boolean {
    return this.missing.length === 0;
  }

  /** Throws not_configured naming the variables to set. */
  requireConfigured(): void {
    if (!this.configured) throw notConfigured(this.provider, this.missing);
  }

  /**
   * Runs one logical call under the policy. Each attempt runs with a fresh AttemptRecord so whatever
   * the SDK throws, the failure is classified from what the transport actually saw.
   */
  async call<T>(opts: RuntimeCallOptions, fn: (ctx: CallContext) => Promise<T>): Promise<T> {
    this.requireConfigured();
    return this.policy.execute(opts, ({ attempt, signal }) =>
      withAttemptRecord(async (record, id) => {
        try {
          return await fn({ attempt, signal, record, fetch: (input, init) => this.fetch(input as string | URL | Request, init, record), attemptHeaders: { [ATTEMPT_HEADER]: id } });
        } catch (e) {
          throw this.classify(e, record, opts.describeError);
        }
      }, opts.beforeSend),
    );
  }

  classify(e: unknown, record: AttemptRecord, describe?: (err: unknown) => string | undefined): ToolError {
    if (e instanceof ToolError) return e;
    if (record.error) return record.error;
    if (record.response && record.response.status >= 400) {
      return httpStatusError(this.provider, record.response.status, record.response.headers, describe?.(e));
    }
    const message = e instanceof Error ? e.message : String(e);
    return new ToolError('provider_error', `Unexpected failure talking to ${PROVIDER_LABEL[this.provider]}: ${message}`, { provider: this.provider, cause: e });
  }

  status(): ProviderStatus {
    const s: ProviderStatus = {
      provider: this.provider,
      configured: this.configured,
      circuit: this.policy.state,
      rate_limit: this.budget.snapshot(),
    };
    if (!this.configured) s.missing = this.missing;
    const retryIn = this.policy.msUntilHalfOpen();
    if (retryIn !== undefined) s.circuit_retry_in_ms = retryIn;
    if (this.policy.lastError) s.last_error = this.policy.lastError;
    return s;
  }
}
