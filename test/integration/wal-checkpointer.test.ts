import fs from 'node:fs';
import path from 'node:path';
import SQLite from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import type { Logger } from '../../src/log.js';
import { BACKSTOP_PAGES, CHECKPOINT_INTERVAL_MS, WalCheckpointer } from '../../src/store/wal-checkpointer.js';
import { tempDataDir } from '../helpers/mcp.js';
import { until } from '../helpers/until.js';

/** A logger that keeps its warnings. */
function recordingLog(): Logger & { warnings: string[] } {
  const warnings: string[] = [];
  const log = { warnings, warn: (_o: unknown, msg: string) => warnings.push(msg), info() {}, debug() {}, error() {} };
  return log as unknown as Logger & { warnings: string[] };
}

const autoCheckpoint = (db: SQLite.Database) => db.pragma('wal_autocheckpoint', { simple: true });

describe('WAL checkpoints on their own thread', () => {
  const cleanups: Array<() => unknown> = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  function database(): { db: SQLite.Database; file: string } {
    const data = tempDataDir();
    const file = path.join(data.dir, 'wal.db');
    const db = new SQLite(file);
    db.pragma('journal_mode = WAL');
    db.exec('create table t (x text)');
    cleanups.push(() => data.cleanup(), () => db.close());
    return { db, file };
  }

  /** Writes about `pages` pages to the WAL in one transaction. */
  const write = (db: SQLite.Database, pages: number) => db.transaction(() => {
    const insert = db.prepare('insert into t values (?)');
    for (let i = 0; i < pages * 3; i++) insert.run('x'.repeat(1200));
  })();

  it('the connection checkpoints only past the backstop; the thread copies the WAL into the file, at most once an interval, and only when asked by a commit', async () => {
    const { db, file } = database();
    const log = recordingLog();
    const checkpointer = new WalCheckpointer(file, (pages) => db.pragma(`wal_autocheckpoint = ${pages}`), log);
    cleanups.push(() => checkpointer.close());
    expect(autoCheckpoint(db)).toBe(BACKSTOP_PAGES);

    write(db, 1500); // past SQLite's default of 1,000 pages: the connection itself no longer checkpointed
    expect(fs.statSync(`${file}-wal`).size).toBeGreaterThan(1500 * 4096);
    expect(fs.statSync(file).size).toBeLessThan(100 * 4096);

    const first = checkpointer.next();
    checkpointer.committed();
    checkpointer.committed(); // asked twice before it runs: one checkpoint
    await first;
    expect(checkpointer.stats.checkpoints).toBe(1);
    expect(checkpointer.stats.frames).toBeGreaterThan(1500);
    // The pages are in the database file now (before, they were in the WAL alone).
    expect(fs.statSync(file).size).toBeGreaterThan(1500 * 4096);

    // The next one waits for the interval since the last began (a lower bound: the clock cannot run early).
    write(db, 10);
    const startedAt = Date.now();
    const second = checkpointer.next();
    checkpointer.committed();
    await second;
    expect(checkpointer.stats.checkpoints).toBe(2);
    expect(Date.now() - startedAt).toBeGreaterThanOrEqual(CHECKPOINT_INTERVAL_MS - 300);
    expect(log.warnings).toEqual([]);
  });

  it('a store that has just opened starts no thread: the first checkpoint waits an interval from opening', async () => {
    const { db, file } = database();
    const checkpointer = new WalCheckpointer(file, (pages) => db.pragma(`wal_autocheckpoint = ${pages}`), recordingLog());
    cleanups.push(() => checkpointer.close());
    write(db, 10);
    checkpointer.committed();
    // Far less than the interval: a checkpoint due at once would have started its thread by now.
    await new Promise((r) => setTimeout(r, 300));
    expect(checkpointer.stats.checkpoints).toBe(0);
    expect((checkpointer as unknown as { worker?: unknown }).worker).toBeUndefined();
  });

  it('if the thread cannot work, the connection checkpoints as SQLite does by default, and says so', async () => {
    const { db } = database();
    const log = recordingLog();
    // A file that is not there: the thread's connection fails to open, and the thread ends.
    const checkpointer = new WalCheckpointer(path.join(path.dirname(db.name), 'missing.db'), (pages) => db.pragma(`wal_autocheckpoint = ${pages}`), log);
    cleanups.push(() => checkpointer.close());
    expect(autoCheckpoint(db)).toBe(BACKSTOP_PAGES);
    checkpointer.committed();
    await until(() => log.warnings.length > 0, { message: 'the thread stopping is logged' });
    expect(log.warnings[0]).toMatch(/checkpoints run on the main connection again/);
    expect(autoCheckpoint(db)).toBe(1000);
  });

  it('close ends the thread, and a commit after it starts nothing', async () => {
    const { db, file } = database();
    const checkpointer = new WalCheckpointer(file, (pages) => db.pragma(`wal_autocheckpoint = ${pages}`), recordingLog());
    const done = checkpointer.next();
    write(db, 10);
    checkpointer.committed();
    await done;
    await checkpointer.close();
    checkpointer.committed();
    expect((checkpointer as unknown as { timer?: unknown }).timer).toBeUndefined();
    expect((checkpointer as unknown as { worker?: unknown }).worker).toBeUndefined();
  });
});
