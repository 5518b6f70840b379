/**
 * The shape both background workers share (the outbox dispatcher, the automation scheduler): a pass
 * claims work and says how long to sleep; something happening wakes it early; units of work launched
 * by a pass run beside the loop, each freeing a slot (and waking the loop) when done; stop waits for
 * the pass, then (bounded) for the work in flight.
 */
export class WorkLoop {
  private stopped = true;
  private loop?: Promise<void>;
  private wakeUp?: () => void;
  /** A wake that came mid-pass: the next sleep is skipped, or the news would wait a whole poll. */
  private wakeRequested = false;
  private readonly inFlight = new Set<Promise<void>>();

  constructor(
    private readonly o: {
      /** One pass; returns how long to sleep (ms) unless woken. */
      pass: () => Promise<number>;
      /** The sleep after a pass that failed. */
      retryMs: () => number;
      onPassError: (err: unknown) => void;
    },
  ) {}

  get running(): boolean {
    return !this.stopped;
  }

  /** Units of work in flight. */
  get active(): number {
    return this.inFlight.size;
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.loop = this.run();
  }

  wake(): void {
    if (this.wakeUp) this.wakeUp();
    else this.wakeRequested = true;
  }

  /** Runs `work` beside the loop (it must not throw); the loop is woken when it ends: a slot is free. */
  launch(work: () => Promise<void>): void {
    const p = work().finally(() => {
      this.inFlight.delete(p);
      this.wake();
    });
    this.inFlight.add(p);
  }

  /** Stops passing and waits (bounded) for work in flight to settle. */
  async stop(graceMs = 10_000): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.wake();
    await this.loop;
    await Promise.race([Promise.allSettled([...this.inFlight]), new Promise((r) => setTimeout(r, graceMs).unref())]);
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      let sleepMs = this.o.retryMs();
      try {
        sleepMs = await this.o.pass();
      } catch (err) {
        this.o.onPassError(err);
      }
      if (this.stopped) break;
      if (this.wakeRequested) {
        this.wakeRequested = false;
        continue;
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, sleepMs);
        timer.unref();
        this.wakeUp = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wakeUp = undefined;
    }
  }
}
