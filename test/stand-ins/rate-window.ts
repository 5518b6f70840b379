/**
 * A fixed-window rate limit as providers enforce it, with the X-RateLimit-* headers they report.
 *
 * Two window styles, because real APIs differ and a pacer must work with both:
 * - `clock`: windows begin at multiples of the window length (a 1 s window starts on a whole second);
 * - `anchored`: a window begins at the first request after the previous one ended, so its edges fall
 *   anywhere within a second.
 * Either way `X-RateLimit-Reset` is in whole epoch seconds, rounded up, as Intercom and SendGrid send
 * it: for an anchored window it names a moment up to a second after the window really ends.
 */
export type RateWindowStyle = 'clock' | 'anchored';

export interface RateWindowOptions {
  limit: number;
  windowMs: number;
  /** Default `clock`. */
  style?: RateWindowStyle;
}

export class RateWindow {
  /** Start of the current window; -Infinity until the first request (anchored). */
  private windowStart = Number.NEGATIVE_INFINITY;
  private used = 0;
  /** Requests answered 429 so far. */
  rejected = 0;
  accepted = 0;
  /** Windows begun so far (anchored and clock alike): a benchmark divides by it. */
  windows = 0;
  /** When each window began that a request started (a benchmark sees where the time between windows went). */
  readonly starts: number[] = [];

  constructor(readonly opts: RateWindowOptions) {}

  private roll(now: number, starting: boolean): void {
    const w = this.opts.windowMs;
    if (this.opts.style === 'anchored') {
      // A new window begins only with a request that arrives after the current one has ended.
      if (starting && now >= this.windowStart + w) {
        this.windowStart = now;
        this.used = 0;
        this.windows += 1;
        this.starts.push(now);
      }
      return;
    }
    const start = now - (now % w);
    if (start !== this.windowStart) {
      this.windowStart = start;
      this.used = 0;
      if (starting) {
        this.windows += 1;
        this.starts.push(start);
      }
    }
  }

  /** Counts one request; false means it is over the limit and must be answered 429. */
  take(now = Date.now()): boolean {
    this.roll(now, true);
    if (this.used >= this.opts.limit) {
      this.rejected += 1;
      return false;
    }
    this.used += 1;
    this.accepted += 1;
    return true;
  }

  headers(now = Date.now()): Record<string, string> {
    this.roll(now, false);
    const ended = now >= this.windowStart + this.opts.windowMs;
    // An anchored window that has ended reports a full budget and no reset until the next request starts one.
    const used = ended ? 0 : this.used;
    const resetMs = ended ? now + this.opts.windowMs : this.windowStart + this.opts.windowMs;
    return {
      'X-RateLimit-Limit': String(this.opts.limit),
      'X-RateLimit-Remaining': String(Math.max(0, this.opts.limit - used)),
      'X-RateLimit-Reset': String(Math.ceil(resetMs / 1000)),
    };
  }
}
