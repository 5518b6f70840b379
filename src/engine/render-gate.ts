import { ToolError } from '../result.js';

/**
 * Bounds how many whole-audience render passes (previews, confirmations) run at once, and how many may
 * wait: each pass is bounded in time, and this bounds them together, so a burst of large previews can
 * neither exhaust memory nor starve other calls.
 */
export class RenderGate {
  private running = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(
    private readonly concurrency = 2,
    private readonly maxWaiting = 8,
  ) {}

  async run<T>(work: () => Promise<T>): Promise<T> {
    if (this.running >= this.concurrency) {
      if (this.waiting.length >= this.maxWaiting) {
        throw new ToolError('rate_limited', `The server is already rendering ${this.running + this.waiting.length} campaign previews or confirmations. Try again in a few seconds.`, {
          retryable: true,
          retryAfterMs: 5_000,
        });
      }
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    } else {
      this.running += 1;
    }
    try {
      return await work();
    } finally {
      const next = this.waiting.shift();
      if (next) next(); // hands its slot straight to the next in line
      else this.running -= 1;
    }
  }
}
