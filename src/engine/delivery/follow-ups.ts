import type { Logger } from '../../log.js';

/**
 * Work that follows a delivery (a tracking event in Intercom) and must never delay a message: it runs
 * only while its provider has no message in flight or waiting for budget, so messages go first within
 * the provider's budget. Bounded: past `max` queued jobs new ones are dropped and counted (a tracking
 * event is worth less than memory); on shutdown what is left gets a bounded drain.
 */
export class FollowUpQueue {
  private readonly queue: Array<() => Promise<void>> = [];
  private running = 0;
  private timer?: NodeJS.Timeout;
  dropped = 0;

  constructor(
    private readonly name: string,
    /** True while nothing of higher priority needs the provider. */
    private readonly idle: () => boolean,
    private readonly log: Logger,
    private readonly opts: { max: number; concurrency: number; recheckMs: number } = { max: 50_000, concurrency: 2, recheckMs: 100 },
  ) {}

  get size(): number {
    return this.queue.length;
  }

  push(job: () => Promise<void>): void {
    if (this.queue.length >= this.opts.max) {
      if (this.dropped++ % 1000 === 0) this.log.warn({ queue: this.name, dropped: this.dropped }, 'follow-up queue full: dropping follow-ups (tracking events)');
      return;
    }
    this.queue.push(job);
    this.pump();
  }

  private pump(): void {
    while (this.running < this.opts.concurrency && this.queue.length) {
      if (!this.idle()) {
        this.timer ??= setTimeout(() => {
          this.timer = undefined;
          this.pump();
        }, this.opts.recheckMs);
        this.timer.unref();
        return;
      }
      this.run(this.queue.shift()!);
    }
  }

  private run(job: () => Promise<void>): void {
    this.running += 1;
    void job()
      .catch((err: unknown) => this.log.warn({ err, queue: this.name }, 'follow-up failed'))
      .finally(() => {
        this.running -= 1;
        this.pump();
      });
  }

  /** Runs what is left, whatever the priority, until `deadlineMs` passes. */
  async drain(deadlineMs: number): Promise<void> {
    const end = Date.now() + deadlineMs;
    while ((this.queue.length || this.running) && Date.now() < end) {
      while (this.running < this.opts.concurrency && this.queue.length) this.run(this.queue.shift()!);
      await new Promise((r) => setTimeout(r, 20));
    }
    if (this.queue.length) this.log.warn({ queue: this.name, left: this.queue.length }, 'follow-ups not run before shutdown');
  }
}
