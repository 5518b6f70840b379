import { ExponentialBackoff, handleAll, retry } from 'cockatiel';
import type { Logger } from '../log.js';

/**
 * Writes that record what already happened (a send's outcome, an audit entry) must not be lost to a
 * brief database failure: they are retried with backoff for a bounded time in the call, and what still
 * fails is kept in memory and retried in the background until it is stored (or the process ends).
 */

/** In the call: 6 retries, 25 ms doubling to at most 800 ms (about 1.5 s in all, plus jitter). */
const inCall = retry(handleAll, { maxAttempts: 6, backoff: new ExponentialBackoff({ initialDelay: 25, maxDelay: 800 }) });

/** Runs `write`, retrying it briefly. Resolves true when it was stored, false when it still failed (never throws). */
export async function writeWithRetry(write: () => Promise<unknown>, onFailure?: (err: unknown) => void): Promise<boolean> {
  try {
    await inCall.execute(() => write());
    return true;
  } catch (err) {
    onFailure?.(err);
    return false;
  }
}

export interface PendingWrite {
  /** Stores it; throws while the database still fails. */
  write(): Promise<unknown>;
  /** Called once it is stored. */
  done?(): void;
}

/**
 * Writes waiting for the database to come back, retried every `baseMs` doubling to `maxMs`. Keyed, so
 * a newer write for the same key replaces an older one. At most `cap` are held: beyond it the oldest is
 * given up (logged as an error, counted in `dropped`).
 */
export class BackgroundWrites {
  private readonly pending = new Map<string, PendingWrite & { since: number; lastError?: string }>();
  private timer: NodeJS.Timeout | undefined;
  private delay: number;
  private running: Promise<void> | undefined;
  dropped = 0;
  lastError: string | undefined;

  constructor(
    private readonly what: string,
    private readonly log: Logger,
    private readonly opts: { baseMs?: number; maxMs?: number; cap?: number } = {},
  ) {
    this.delay = opts.baseMs ?? 500;
  }

  get size(): number {
    return this.pending.size;
  }

  has(key: string): boolean {
    return this.pending.has(key);
  }

  /** When the oldest waiting write was first attempted (ISO), if any. */
  oldest(): string | undefined {
    let min: number | undefined;
    for (const p of this.pending.values()) if (min === undefined || p.since < min) min = p.since;
    return min === undefined ? undefined : new Date(min).toISOString();
  }

  /** Keeps a write that failed (with `err`, its last failure) for the background retries. */
  add(key: string, w: PendingWrite, err?: unknown): void {
    if (err !== undefined) this.lastError = err instanceof Error ? err.message : String(err);
    const prior = this.pending.get(key);
    this.pending.delete(key);
    this.pending.set(key, { ...w, since: prior?.since ?? Date.now() });
    const cap = this.opts.cap ?? 10_000;
    while (this.pending.size > cap) {
      const [oldest] = this.pending.keys();
      this.pending.delete(oldest!);
      this.dropped++;
      this.log.error({ key: oldest, held: cap }, `gave up a ${this.what} that could not be stored (too many waiting for the database)`);
    }
    this.delay = this.opts.baseMs ?? 500;
    this.schedule();
  }

  private schedule(): void {
    if (this.timer || !this.pending.size) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.drain();
    }, this.delay);
    this.timer.unref();
  }

  /** Tries every waiting write once now. */
  drain(): Promise<void> {
    this.running ??= (async () => {
      let failed = false;
      for (const [key, p] of [...this.pending]) {
        try {
          await p.write();
          if (this.pending.get(key) === p) this.pending.delete(key);
          p.done?.();
        } catch (err) {
          failed = true;
          this.lastError = err instanceof Error ? err.message : String(err);
          break; // the database is still failing: wait before trying the rest
        }
      }
      if (failed) this.delay = Math.min(this.delay * 2, this.opts.maxMs ?? 30_000);
      else if (this.pending.size) this.log.info({ left: this.pending.size }, `${this.what}: stored what was waiting`);
      if (!this.pending.size) this.lastError = undefined;
    })().finally(() => {
      this.running = undefined;
      this.schedule();
    });
    return this.running;
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }
}
