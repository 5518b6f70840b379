export interface UntilOptions {
  /** Generous by default: a slow machine must not fail a correct test. */
  timeoutMs?: number;
  intervalMs?: number;
  /** Says what was awaited, in the error when it never happens. */
  message?: string;
}

/**
 * Waits for a condition instead of sleeping a fixed time: polls `probe` until `ok(value)` holds and
 * returns that value, or throws (with the last value seen) after `timeoutMs`.
 */
export async function until<T>(probe: () => T | Promise<T>, ok?: ((value: T) => boolean) | UntilOptions, options: UntilOptions = {}): Promise<T> {
  const check = typeof ok === 'function' ? ok : (v: T) => Boolean(v);
  const opts = typeof ok === 'object' ? ok : options;
  const timeoutMs = opts.timeoutMs ?? 20_000;
  const end = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (check(value)) return value;
    if (Date.now() > end) {
      const last = JSON.stringify(value)?.slice(0, 500);
      throw new Error(`${opts.message ?? 'condition'} not reached within ${timeoutMs} ms (last: ${last})`);
    }
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 20));
  }
}

/** Resolves when a child process exits (at once if it already has), with its exit code or signal. */
export function exited(child: { exitCode: number | null; signalCode: NodeJS.Signals | null; once(event: 'exit', fn: (code: number | null, signal: NodeJS.Signals | null) => void): unknown }): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
}
