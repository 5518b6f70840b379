/** Small helpers the benchmarks share: percentiles and a peak-memory sampler. */

export function percentile(sortedMs: number[], p: number): number {
  if (!sortedMs.length) return NaN;
  const i = Math.min(sortedMs.length - 1, Math.max(0, Math.ceil((p / 100) * sortedMs.length) - 1));
  return sortedMs[i]!;
}

export function summarize(samplesMs: number[]): { p50: number; p99: number; mean: number; n: number } {
  const s = [...samplesMs].sort((a, b) => a - b);
  return { p50: percentile(s, 50), p99: percentile(s, 99), mean: s.reduce((a, b) => a + b, 0) / s.length, n: s.length };
}

export interface PeakMemory<T> {
  result: T;
  peakRssMiB: number;
  peakHeapMiB: number;
  /** What the process already used when the work started (earlier benchmarks share the process). */
  startRssMiB: number;
  startHeapMiB: number;
}

/** Samples RSS and heap while a piece of work runs; reports the peaks, and the starting point, in MiB. */
export async function withPeakMemory<T>(work: () => Promise<T>): Promise<PeakMemory<T>> {
  (globalThis as { gc?: () => void }).gc?.(); // with --expose-gc: start from live memory only
  const start = process.memoryUsage();
  let peakRss = start.rss;
  let peakHeap = start.heapUsed;
  const timer = setInterval(() => {
    const m = process.memoryUsage();
    peakRss = Math.max(peakRss, m.rss);
    peakHeap = Math.max(peakHeap, m.heapUsed);
  }, 20);
  try {
    const result = await work();
    const m = process.memoryUsage();
    return {
      result,
      peakRssMiB: Math.max(peakRss, m.rss) / 2 ** 20,
      peakHeapMiB: Math.max(peakHeap, m.heapUsed) / 2 ** 20,
      startRssMiB: start.rss / 2 ** 20,
      startHeapMiB: start.heapUsed / 2 ** 20,
    };
  } finally {
    clearInterval(timer);
  }
}

export const fmt = (n: number, digits = 2) => n.toFixed(digits);

export function line(label: string, value: string): void {
  process.stdout.write(`${label.padEnd(58)} ${value}\n`);
}

/** "peak RSS / heap (at start)" in MiB, for one line of output. */
export function memoryLine(m: PeakMemory<unknown>): string {
  return `${fmt(m.peakRssMiB, 1)} / ${fmt(m.peakHeapMiB, 1)} (at start ${fmt(m.startRssMiB, 1)} / ${fmt(m.startHeapMiB, 1)})`;
}
