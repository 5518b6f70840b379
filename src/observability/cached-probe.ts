/** What a probe answered: its value, or why there is none (it failed, or took longer than allowed). */
export type ProbeResult<T> = { ok: true; value: T; at: number } | { ok: false; error: string; at: number };

/** How long an answer is reused: fixed, or from how long the run that produced it took (a costlier run is reused longer). */
export type Ttl = number | ((runMs: number) => number);

export interface CachedProbeOptions {
  /** An answer is reused for this long: polling faster than this costs nothing. */
  ttlMs: Ttl;
  /** A run that has not answered by then is reported as failed (it is not started again while it hangs). */
  timeoutMs: number;
  now?: () => number;
}

/**
 * Runs a costly check (a database query) for many callers at a bounded cost: at most one run at a time,
 * each answer reused for `ttlMs`, and an answer within `timeoutMs` whatever the check does. A run still
 * hanging after its deadline keeps its place: callers hear "still running after N ms" until it settles,
 * so a hung database gets one stuck query per process, never one per poll.
 */
export class CachedProbe<T> {
  private last?: ProbeResult<T>;
  private running?: { promise: Promise<ProbeResult<T>>; startedAt: number };
  private readonly now: () => number;
  /** How long the last run that settled took. */
  private lastRunMs = 0;

  constructor(
    private readonly run: () => Promise<T>,
    private readonly opts: CachedProbeOptions,
  ) {
    this.now = opts.now ?? Date.now;
  }

  async get(): Promise<ProbeResult<T>> {
    const now = this.now();
    const ttl = this.opts.ttlMs;
    if (this.last && now - this.last.at < (typeof ttl === 'number' ? ttl : ttl(this.lastRunMs))) return this.last;
    if (this.running) {
      const waited = now - this.running.startedAt;
      if (waited >= this.opts.timeoutMs) return this.remember({ ok: false, error: `still running after ${waited} ms (limit ${this.opts.timeoutMs} ms)`, at: now });
      return this.within(this.running.promise, this.opts.timeoutMs - waited);
    }
    const startedAt = now;
    const promise: Promise<ProbeResult<T>> = this.run().then(
      (value) => ({ ok: true as const, value, at: this.now() }),
      (err: unknown) => ({ ok: false as const, error: err instanceof Error ? err.message : String(err), at: this.now() }),
    );
    this.running = { promise, startedAt };
    void promise.then((r) => {
      this.lastRunMs = r.at - startedAt;
      if (this.running?.promise === promise) this.running = undefined;
      this.remember(r);
    });
    return this.within(promise, this.opts.timeoutMs);
  }

  private async within(promise: Promise<ProbeResult<T>>, ms: number): Promise<ProbeResult<T>> {
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<ProbeResult<T>>((resolve) => {
      timer = setTimeout(() => resolve({ ok: false, error: `no answer within ${this.opts.timeoutMs} ms`, at: this.now() }), Math.max(0, ms));
      timer.unref?.();
    });
    try {
      const r = await Promise.race([promise, deadline]);
      return r.ok || this.running?.promise !== promise ? r : this.remember(r);
    } finally {
      clearTimeout(timer);
    }
  }

  private remember(r: ProbeResult<T>): ProbeResult<T> {
    if (!this.last || r.at >= this.last.at) this.last = r;
    return r;
  }
}
