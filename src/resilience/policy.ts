import {
  BrokenCircuitError,
  CircuitState,
  ConsecutiveBreaker,
  DelegateBackoff,
  IsolatedCircuitError,
  circuitBreaker,
  handleWhen,
  retry,
  type CircuitBreakerPolicy,
  type IRetryBackoffContext,
  type RetryPolicy,
} from 'cockatiel';
import type { ResilienceConfig } from '../config.js';
import type { Logger } from '../log.js';
import { PROVIDER_LABEL, ToolError, type ProviderName } from '../result.js';
import type { RequestHook } from './request-hooks.js';

export interface CallOptions {
  /** Short name of the operation, for logs. */
  operation: string;
  /**
   * True for reads and writes that are safe to repeat. A non-idempotent call (a send) is retried only
   * when the provider provably did not act on it (refused connection, 429, 503, 408).
   */
  idempotent: boolean;
  signal?: AbortSignal;
  /** Runs right before the request is written (request-hooks.ts); the caller then owns the retries. */
  beforeSend?: RequestHook;
}

export type CircuitStateName = 'closed' | 'open' | 'half_open' | 'isolated';

export interface LastError {
  code: string;
  message: string;
  status?: number;
  at: string;
}

export interface PolicyOptions {
  random?: () => number;
}

/**
 * One provider's resilience policy: retry (exponential backoff with jitter, honouring Retry-After /
 * X-RateLimit-Reset) around a consecutive-failure circuit breaker. Built from config in one place;
 * provider code never loops or sleeps on its own.
 */
export class ProviderPolicy {
  readonly breaker: CircuitBreakerPolicy;
  private readonly retryIdempotent: RetryPolicy;
  private readonly retrySend: RetryPolicy;
  private readonly noRetry: RetryPolicy;
  private openedAt?: number;
  private last?: LastError;
  private readonly random: () => number;
  private readonly retryListeners: Array<(code: string | undefined) => void> = [];

  constructor(
    readonly provider: ProviderName,
    private readonly cfg: ResilienceConfig,
    private readonly log: Logger,
    opts: PolicyOptions = {},
  ) {
    this.random = opts.random ?? Math.random;
    // Only signs of an unhealthy provider count: network errors, timeouts, 5xx. A 4xx or 429 is a healthy answer.
    this.breaker = circuitBreaker(
      handleWhen((e) => e instanceof ToolError && e.breakerFailure),
      { halfOpenAfter: cfg.breakerResetMs, breaker: new ConsecutiveBreaker(cfg.breakerThreshold) },
    );
    this.breaker.onBreak(() => {
      this.openedAt = Date.now();
      log.warn({ provider, reset_ms: cfg.breakerResetMs }, 'circuit opened: failing fast until the provider recovers');
    });
    this.breaker.onHalfOpen(() => log.info({ provider }, 'circuit half-open: letting one trial request through'));
    this.breaker.onReset(() => {
      this.openedAt = undefined;
      log.info({ provider }, 'circuit closed: provider healthy again');
    });

    const backoff = new DelegateBackoff<IRetryBackoffContext<unknown>>((ctx) =>
      this.delayFor(ctx.attempt, 'error' in ctx.result ? ctx.result.error : undefined),
    );
    this.retryIdempotent = retry(handleWhen((e) => this.shouldRetry(e, true)), { maxAttempts: cfg.maxRetries, backoff });
    this.retrySend = retry(handleWhen((e) => this.shouldRetry(e, false)), { maxAttempts: cfg.maxRetries, backoff });
    this.noRetry = retry(handleWhen(() => false), { maxAttempts: 0 });
    for (const r of [this.retryIdempotent, this.retrySend]) {
      r.onRetry((ev) => {
        const err = 'error' in ev ? ev.error : undefined;
        log.info(
          { provider, attempt: ev.attempt, delay_ms: Math.round(ev.delay), code: err instanceof ToolError ? err.code : undefined },
          'retrying provider call',
        );
        for (const listener of this.retryListeners) listener(err instanceof ToolError ? err.code : undefined);
      });
    }
  }

  /** Called on every retry, with the error code that caused it (metrics). */
  onRetry(listener: (code: string | undefined) => void): void {
    this.retryListeners.push(listener);
  }

  /** Backoff before retry number `attempt` (1-based): the provider's own wait if it named one, else base × 2^(n-1) plus jitter. */
  delayFor(attempt: number, err: unknown): number {
    if (err instanceof ToolError && err.retryAfterMs !== undefined) {
      return Math.min(this.cfg.maxDelayMs, err.retryAfterMs + this.random() * Math.min(250, this.cfg.baseDelayMs));
    }
    const exp = this.cfg.baseDelayMs * 2 ** (attempt - 1);
    return Math.min(this.cfg.maxDelayMs, exp + exp * 0.25 * this.random());
  }

  shouldRetry(err: unknown, idempotent: boolean): boolean {
    if (!(err instanceof ToolError) || !err.retryable || err.code === 'circuit_open') return false;
    if (!idempotent && err.outcomeUnknown) return false; // a customer must not get the same message twice
    if (err.retryAfterMs !== undefined && err.retryAfterMs > this.cfg.maxDelayMs) return false; // report the wait instead
    return true;
  }

  get state(): CircuitStateName {
    switch (this.breaker.state) {
      case CircuitState.Open:
        return 'open';
      case CircuitState.HalfOpen:
        return 'half_open';
      case CircuitState.Isolated:
        return 'isolated';
      default:
        return 'closed';
    }
  }

  /** While open: how long until a trial request is allowed. */
  msUntilHalfOpen(now = Date.now()): number | undefined {
    if (this.state !== 'open' || this.openedAt === undefined) return undefined;
    return Math.max(0, this.openedAt + this.cfg.breakerResetMs - now);
  }

  get lastError(): LastError | undefined {
    return this.last;
  }

  /**
   * Runs `attempt` under the policy. `attempt` must throw ToolErrors (the runtime classifies transport
   * and HTTP failures before they get here).
   */
  async execute<T>(opts: CallOptions, attempt: (ctx: { attempt: number; signal?: AbortSignal }) => Promise<T>): Promise<T> {
    const policy = opts.beforeSend ? this.noRetry : opts.idempotent ? this.retryIdempotent : this.retrySend;
    // With a caller's signal: a signal of this call's own. Without one, the attempts get no signal at all:
    // cockatiel would hand every call the same never-aborted signal, and SDKs that attach abort
    // listeners to it (intercom-client does) would leak them forever; nor is a controller that can
    // never abort worth making on every call.
    const controller = opts.signal ? new AbortController() : undefined;
    const onAbort = () => controller?.abort(opts.signal?.reason);
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      return await policy.execute(async ({ attempt: n, signal }) => {
        let outcome: { value: T } | { error: ToolError };
        try {
          outcome = await this.breaker.execute(async () => {
            try {
              return { value: await attempt({ attempt: n, signal: controller ? signal : undefined }) };
            } catch (e) {
              const err = asToolError(e, this.provider);
              if (err.breakerFailure) throw err;
              return { error: err }; // a healthy "no" from the provider: do not count it against the breaker
            }
          }, signal);
        } catch (e) {
          if (e instanceof BrokenCircuitError || e instanceof IsolatedCircuitError) throw this.circuitOpenError();
          throw e;
        }
        if ('error' in outcome) throw outcome.error;
        return outcome.value;
      }, controller?.signal);
    } catch (e) {
      let err = asToolError(e, this.provider);
      if (!opts.idempotent && err.outcomeUnknown && err.retryable) {
        // The send may have gone out: the caller must check before repeating it, not just retry.
        err = new ToolError(err.code, err.message, {
          provider: err.provider,
          status: err.status,
          details: err.details,
          outcomeUnknown: true,
          breakerFailure: err.breakerFailure,
          retryable: false,
          cause: err,
        });
      }
      this.last = { code: err.code, message: err.message, status: err.status, at: new Date().toISOString() };
      this.log.warn({ provider: this.provider, operation: opts.operation, code: err.code, status: err.status }, 'provider call failed');
      throw err;
    } finally {
      opts.signal?.removeEventListener('abort', onAbort);
    }
  }

  private circuitOpenError(): ToolError {
    const wait = this.msUntilHalfOpen();
    return new ToolError(
      'circuit_open',
      `${PROVIDER_LABEL[this.provider]} has failed ${this.cfg.breakerThreshold} times in a row, so calls are paused to let it recover` +
        (wait !== undefined ? `; the next trial is allowed in about ${Math.ceil(wait / 1000)} s.` : '.') +
        ' Nothing was sent. Try again after that.',
      { provider: this.provider, retryable: true, retryAfterMs: wait },
    );
  }
}

export function asToolError(e: unknown, provider: ProviderName): ToolError {
  if (e instanceof ToolError) return e;
  const message = e instanceof Error ? e.message : String(e);
  return new ToolError('provider_error', `Unexpected failure talking to ${PROVIDER_LABEL[provider]}: ${message}`, { provider, cause: e });
}
