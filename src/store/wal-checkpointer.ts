import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import type { Logger } from '../log.js';

/**
 * SQLite's WAL checkpoints, run on a thread of their own. Left to SQLite, a checkpoint runs inside
 * whichever commit pushes the WAL past 1,000 pages, on the event loop: it copies the pages into the
 * database file and waits for the disk (fsync). While a campaign sends at 1,000 a second that was a
 * commit of 5–20 ms about every seventh, and now and then one of 100–770 ms, during which no request
 * went out and no tool call was answered.
 *
 * Here the connection's own checkpoints start only past BACKSTOP_PAGES (a bound on the WAL if this
 * thread falls behind or fails), and a worker with its own connection to the file checkpoints
 * (PASSIVE: it never blocks a writer) at most once every CHECKPOINT_INTERVAL_MS while commits
 * happen. Nothing runs while nothing is written: the next checkpoint is asked for by a commit.
 */

/**
 * At most one checkpoint this often while sending. About as often as SQLite's own at 100 messages a
 * second (1,000 pages); once a second looked costlier there (warm, 1.02–1.11 against 0.93–1.08 ms
 * of CPU a message in four runs each: a page written often is copied once per checkpoint). At 1,000
 * a second, two seconds of log (about 8,000 pages) stay well under the backstop.
 */
export const CHECKPOINT_INTERVAL_MS = 2000;
/** The connection's own automatic checkpoint, kept as a bound: about 80 MB of WAL (4 KiB pages). */
export const BACKSTOP_PAGES = 20_000;
/** SQLite's default, restored if the worker stops. */
const DEFAULT_PAGES = 1000;

// CommonJS, given as text: the same code whether the server runs from dist/ or its sources (tests).
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.module);
const db = new Database(workerData.file, { fileMustExist: true });
db.pragma('synchronous = NORMAL');
parentPort.on('message', (msg) => {
  if (msg === 'close') { db.close(); parentPort.close(); return; }
  try {
    const [r] = db.pragma('wal_checkpoint(PASSIVE)');
    parentPort.postMessage({ ok: true, log: r.log });
  } catch (err) {
    parentPort.postMessage({ ok: false, message: String(err && err.message || err) });
  }
});
`;

/** A checkpoint's outcome: the WAL frames it found, or why it failed. */
interface CheckpointAnswer {
  ok: boolean;
  log?: number;
  message?: string;
}

export class WalCheckpointer {
  private worker?: Worker;
  private timer?: NodeJS.Timeout;
  private inFlight = false;
  /** When the last checkpoint began; opening counts as one, so a process that lives less than an interval starts no thread. */
  private lastAt = Date.now();
  private stopped = false;
  /** Checkpoints done, and WAL frames they found (tests, diagnostics). */
  readonly stats = { checkpoints: 0, frames: 0 };
  private waiters: Array<() => void> = [];

  constructor(
    private readonly file: string,
    private readonly setAutoCheckpoint: (pages: number) => void,
    private readonly log: Logger,
  ) {
    setAutoCheckpoint(BACKSTOP_PAGES);
  }

  /** After a commit: a checkpoint is due within CHECKPOINT_INTERVAL_MS. */
  committed(): void {
    if (this.stopped || this.timer || this.inFlight) return;
    const wait = Math.max(0, this.lastAt + CHECKPOINT_INTERVAL_MS - Date.now());
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.run();
    }, wait);
    this.timer.unref();
  }

  /** Resolves once the next checkpoint has been answered (tests). */
  next(): Promise<void> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  private run(): void {
    if (this.stopped) return;
    let worker = this.worker;
    if (!worker) {
      try {
        worker = this.start();
      } catch (err) {
        this.fail(err);
        return;
      }
    }
    this.inFlight = true;
    this.lastAt = Date.now();
    worker.postMessage('checkpoint');
  }

  private start(): Worker {
    const module = createRequire(import.meta.url).resolve('better-sqlite3');
    const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { file: this.file, module } });
    worker.unref();
    worker.on('message', (answer: CheckpointAnswer) => {
      this.inFlight = false;
      if (answer.ok) {
        this.stats.checkpoints += 1;
        this.stats.frames += answer.log ?? 0;
      } else {
        // A failed checkpoint (e.g. disk full) is tried again at the next commit; the backstop bounds the WAL meanwhile.
        this.log.warn({ reason: answer.message }, 'WAL checkpoint failed; it will be tried again');
      }
      for (const w of this.waiters.splice(0)) w();
    });
    worker.on('error', (err) => this.fail(err));
    worker.on('exit', (code) => {
      if (!this.stopped) this.fail(new Error(`checkpoint thread exited (code ${code})`));
    });
    this.worker = worker;
    return worker;
  }

  /** The worker is gone: SQLite checkpoints on the connection again, as by default. */
  private fail(err: unknown): void {
    if (this.stopped) return;
    this.stopped = true;
    this.worker = undefined;
    this.inFlight = false;
    try {
      this.setAutoCheckpoint(DEFAULT_PAGES);
    } catch {
      // the connection is closing
    }
    this.log.warn({ reason: err instanceof Error ? err.message : String(err) }, 'WAL checkpoint thread stopped; checkpoints run on the main connection again');
    for (const w of this.waiters.splice(0)) w();
  }

  /** Stops the thread (its connection closed); the main connection's close checkpoints what is left. */
  async close(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const worker = this.worker;
    this.worker = undefined;
    if (!worker) return;
    await new Promise<void>((resolve) => {
      worker.once('exit', () => resolve());
      worker.ref(); // held until it has closed its connection, or this await would be the process's last
      worker.postMessage('close');
      // A worker busy in a long checkpoint is stopped rather than waited for.
      setTimeout(() => void worker.terminate(), 2000).unref();
    });
    for (const w of this.waiters.splice(0)) w();
  }
}
