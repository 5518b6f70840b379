/**
 * A fixed-window rate limit as providers enforce it (Intercom: per 10-second window; the campaign
 * benchmark: 200 requests per 2 seconds), with the X-RateLimit-* headers they report. Windows are
 * aligned to multiples of the window length so `X-RateLimit-Reset` (epoch seconds) is exact.
 */
export interface RateWindowOptions {
  limit: number;
  windowMs: number;
}

export class RateWindow {
  private windowStart = 0;
  private used = 0;
  /** Requests answered 429 so far. */
  rejected = 0;
  accepted = 0;

  constructor(readonly opts: RateWindowOptions) {}

  private roll(now: number): void {
    const start = now - (now % this.opts.windowMs);
    if (start !== this.windowStart) {
      this.windowStart = start;
      this.used = 0;
    }
  }

  /** Counts one request; false means it is over the limit and must be answered 429. */
  take(now = Date.now()): boolean {
    this.roll(now);
    if (this.used >= this.opts.limit) {
      this.rejected += 1;
      return false;
    }
    this.used += 1;
    this.accepted += 1;
    return true;
  }

  headers(now = Date.now()): Record<string, string> {
    this.roll(now);
    return {
      'X-RateLimit-Limit': String(this.opts.limit),
      'X-RateLimit-Remaining': String(Math.max(0, this.opts.limit - this.used)),
      'X-RateLimit-Reset': String(Math.ceil((this.windowStart + this.opts.windowMs) / 1000)),
    };
  }
}
