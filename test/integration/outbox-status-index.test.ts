import Database from 'better-sqlite3';
import { sql } from 'kysely';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { OutboxRepository } from '../../src/engine/delivery/outbox.js';
import { openStore, type Store } from '../../src/store/index.js';
import { createTarget, type DatabaseTarget } from '../helpers/databases.js';
import { testEnv } from '../helpers/mcp.js';

/**
 * A campaign's status is read while it sends, often (a client polls, the status view every 2 s). Its
 * counts must read the source index alone: reading every row took 33 ms of the event loop at 20,000
 * rows and slowed the sending it watched. Checked on SQLite's query plan (PostgreSQL's choice depends
 * on its statistics; the index serves it the same way).
 */
describe('campaign status counts read the index alone', () => {
  let target: DatabaseTarget;
  let store: Store;
  beforeAll(async () => {
    target = await createTarget('sqlite');
    store = await openStore(loadConfig(testEnv(target.env) as NodeJS.ProcessEnv), pino({ level: 'silent' }));
  });
  afterAll(async () => {
    await store.close();
    await target.cleanup();
  });

  /** The SQL a repository call runs (captured as better-sqlite3 prepares it). */
  async function statementOf(run: () => Promise<unknown>): Promise<string> {
    const prepare = vi.spyOn(Database.prototype, 'prepare');
    try {
      await run();
      return String(prepare.mock.calls.at(-1)![0]);
    } finally {
      prepare.mockRestore();
    }
  }

  it.each([
    ['counts by state and channel', (repo: OutboxRepository) => repo.countsByStateAndChannel('campaign', 'cmp_1')],
    ['reasons by code', (repo: OutboxRepository) => repo.reasons('campaign', 'cmp_1', ['queued', 'skipped'])],
  ])('%s', async (_name, call) => {
    const repo = new OutboxRepository(store.db, store.dialect);
    const statement = await statementOf(() => call(repo));
    expect(statement).toMatch(/from "outbox"/);
    // The plan does not depend on the values: each parameter becomes a literal.
    const plan = await sql.raw<{ detail: string }>(`explain query plan ${statement.replace(/\?/g, "'x'")}`).execute(store.db);
    expect(plan.rows.map((r) => r.detail).join('\n')).toMatch(/USING COVERING INDEX outbox_source_idx/);
  });
});
