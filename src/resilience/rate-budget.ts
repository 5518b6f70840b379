/**
 * Proactive pacing from the budget a provider reports (`X-RateLimit-Limit/Remaining/Reset`).
 *
 * Every request takes one unit before it is sent. Within a window we spend what the provider says is
 * left, counting our own requests still in flight (the header lags them), and when the budget is spent
 * we wait for the window to reset instead of running into a 429. Providers that report nothing are
 * not paced.
 */

export interface RateBudgetSnapshot {
  limit?: number;
  remaining?: number;
  reset_at?: string;
  observed_at?: string;
  waiting: number;
  in_flight: number;
  paced_waits: number;
}

export interface RateBudgetOptions {
  /** Requests kept in hand at the end of a window, for other clients of the same app. */
  reserve?: number;
  /** Added to a reset time before spending the new window: covers clock skew and coarse reset values. */
  resetMarginMs?: number;
  /** Longest single pacing wait; a reset further away than this is treated as unreliable. */
  maxWaitMs?: number;
  now?: () => number;
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
}

export class RateBudget {
  private limit?: number;
  private remaining?: number;
  private resetAtMs?: number;
  private observedAtMs?: number;
  private inFlight = 0;
  private waiting = 0;
  private pacedWaits = 0;
  /** Set by the first answer: until then nobody knows the budget, so one request goes first to find out. */
  private probed = false;
  private readonly reserve: number;
  private readonly resetMarginMs: number;
  private readonly maxWaitMs: number;
  private readonly now: () => number;
  private readonly sleep: (ms: number, signal?: AbortSignal) => Promise<void>;

  constructor(opts: RateBudgetOptions = {}) {
    this.reserve = opts.reserve ?? 0;
    this.resetMarginMs = opts.resetMarginMs ?? 50;
    this.maxWaitMs = opts.maxWaitMs ?? 60_000;
    this.now = opts.now ?? Date.now;
    this.sleep = opts.sleep ?? abortableSleep;
  }

  /** Waits until a request may be sent within the reported budget, then takes one unit. */
  async acquire(signal?: AbortSignal): Promise<void> {
    for (;;) {
      const wait = this.waitNeeded();
      if (wait <= 0) {
        if (this.remaining !== undefined) this.remaining -= 1;
        this.inFlight += 1;
        return;
      }
      this.waiting += 1;
      this.pacedWaits += 1;
      try {
        await this.sleep(wait, signal);
      } finally {
        this.waiting -= 1;
      }
    }
  }

  /** Call once for each acquire(), when its response (or failure) has arrived. */
  release(): void {
    if (this.inFlight > 0) this.inFlight -= 1;
  }

  /** Reads the rate-limit headers of a response. */
  observe(headers: Headers | Record<string, string | string[] | undefined>, status?: number): void {
    const get = (name: string): string | undefined => {
      if (typeof (headers as Headers).get === 'function') return (headers as Headers).get(name) ?? undefined;
      const rec = headers as Record<string, string | string[] | undefined>;
      const v = rec[name] ?? rec[name.toLowerCase()];
      return Array.isArray(v) ? v[0] : v;
    };
    this.probed = true;
    const limit = num(get('x-ratelimit-limit'));
    const remaining = num(get('x-ratelimit-remaining'));
    const reset = num(get('x-ratelimit-reset'));
    const now = this.now();
    if (limit === undefined && remaining === undefined && reset === undefined) {
      if (status === 429) this.exhaustFor(1000);
      return;
    }
    this.observedAtMs = now;
    if (limit !== undefined) this.limit = limit;
    const resetAt = reset === undefined ? undefined : resetToEpochMs(reset, now);
    if (remaining !== undefined) {
      // Requests we sent after this one was counted are still in flight: the header does not know them yet.
      const adjusted = Math.max(0, remaining - Math.max(0, this.inFlight - 1));
      const sameWindow = resetAt !== undefined && this.resetAtMs !== undefined && Math.abs(resetAt - this.resetAtMs) < 1000;
      this.remaining = sameWindow && this.remaining !== undefined ? Math.min(this.remaining, adjusted) : adjusted;
    }
    if (resetAt !== undefined) this.resetAtMs = resetAt;
    if (status === 429) this.remaining = 0;
  }

  /** A 429 with only a Retry-After: spend nothing until it has passed. */
  exhaustFor(ms: number): void {
    this.probed = true;
    this.remaining = 0;
    this.resetAtMs = this.now() + ms;
  }

  /** Milliseconds until the budget allows another request (0: now). */
  waitNeeded(): number {
    const now = this.now();
    if (this.resetAtMs !== undefined && now >= this.resetAtMs + this.resetMarginMs) {
      // A new window has begun: assume the full limit until a response tells us otherwise.
      this.remaining = this.limit;
      this.resetAtMs = undefined;
    }
    if (!this.probed && this.inFlight > 0) return 10;
    if (this.remaining === undefined) return 0;
    if (this.remaining > this.reserve) return 0;
    if (this.resetAtMs === undefined) {
      // Spent, with no reset known: wait for the in-flight answers to tell us about the window.
      return this.inFlight > 0 ? 25 : 0;
    }
    return Math.min(this.maxWaitMs, Math.max(1, this.resetAtMs + this.resetMarginMs - now));
  }

  snapshot(): RateBudgetSnapshot {
    return {
      limit: this.limit,
      remaining: this.remaining,
      reset_at: this.resetAtMs === undefined ? undefined : new Date(this.resetAtMs).toISOString(),
      observed_at: this.observedAtMs === undefined ? undefined : new Date(this.observedAtMs).toISOString(),
      waiting: this.waiting,
      in_flight: this.inFlight,
      paced_waits: this.pacedWaits,
    };
  }
}

function num(v: string | undefined): number | undefined {
  if (v === undefined || v.trim() === '') return undefined;
  const n = Number(v);
  return Number.isFinite(n) ? n : undefined;
}

/** Intercom and SendGrid send epoch seconds; some APIs send seconds-until-reset. Tell them apart. */
export function resetToEpochMs(reset: number, now: number): number {
  if (reset > 1e12) return reset; // already epoch ms
  if (reset > 1e9) return reset * 1000; // epoch seconds
  return now + reset * 1000; // seconds from now
}

export function abortableSleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason ?? new Error('aborted'));
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason ?? new Error('aborted'));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
