import pg from 'pg';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serveHttp, type RunningHttpServer } from '../../src/transports/http.js';
import { migrations } from '../../src/store/migrations/index.js';
import { availableDialects, createTarget, type DatabaseTarget } from '../helpers/databases.js';
import { dbFaults, type DbFaults } from '../helpers/db-faults.js';
import { startInMemory, testEnv, type InMemoryHarness } from '../helpers/mcp.js';
import { get } from '../helpers/metrics.js';
import { until } from '../helpers/until.js';

/**
 * /healthz answers while the process runs, database or not; /readyz answers 200 only while the
 * database answers in time with every migration of this version applied, and 503 naming what is not
 * ready otherwise — within MCP_READY_TIMEOUT_MS even when the database hangs. /metrics is off unless
 * asked for, and tokenless only on a loopback bind, behind the Host check.
 */

const dialects = await availableDialects();
const READY_TIMEOUT_MS = 300;
const LAST = Object.keys(migrations).at(-1)!;

describe.each(dialects)('/healthz and /readyz on %s', (dialect) => {
  let target: DatabaseTarget;
  let h: InMemoryHarness;
  let server: RunningHttpServer;
  let faults: DbFaults;
  let base = '';
  const readyz = async () => {
    const r = await get(`${base}/readyz`);
    return { status: r.status, body: JSON.parse(r.text), cache: r.headers['cache-control'] };
  };

  beforeAll(async () => {
    target = await createTarget(dialect);
    faults = dbFaults();
    await faults.installInProcess();
    h = await startInMemory(testEnv({ ...target.env, MCP_HTTP_PORT: '0', MCP_HTTP_TOKEN: 'mcp-token-readiness-0123456789abcdef', MCP_READY_TIMEOUT_MS: String(READY_TIMEOUT_MS) }));
    server = await serveHttp(h.services);
    base = server.url.replace(/\/mcp$/, '');
  });
  afterAll(async () => {
    faults?.clear();
    await server?.close();
    await h?.close();
    await target?.cleanup();
    faults?.cleanup();
  });

  it('answers 200 when ready, without the MCP token, naming the configured providers', async () => {
    const r = await readyz();
    expect(r.status).toBe(200);
    expect(r.cache).toBe('no-store');
    expect(r.body).toEqual({
      ready: true,
      not_ready: [],
      database: { ok: true },
      migrations: { ok: true, expected: Object.keys(migrations).length, applied: Object.keys(migrations).length },
      providers: { ok: true, configured: [], required: [] },
    });
    expect((await get(`${base}/healthz`)).status).toBe(200);
    // Polled by address: a Host the MCP endpoint would refuse is fine here.
    expect((await get(`${base}/readyz`, { Host: `10.1.2.3:${new URL(base).port}` })).status).toBe(200);
    expect((await get(`${base}/mcp`, { Host: `10.1.2.3:${new URL(base).port}` })).status).toBe(403);
  });

  it('answers 503 naming the missing migration, and 200 again once it is applied', async () => {
    const row = await sql<{ name: string; timestamp: string }>`select name, timestamp from kysely_migration where name = ${LAST}`.execute(h.services.store.db);
    await sql`delete from kysely_migration where name = ${LAST}`.execute(h.services.store.db);
    try {
      const r = await until(readyz, (x) => x.status === 503);
      expect(r.body).toMatchObject({ ready: false, not_ready: ['migrations'], database: { ok: true }, migrations: { ok: false, missing: [LAST] } });
    } finally {
      await sql`insert into kysely_migration (name, timestamp) values (${LAST}, ${row.rows[0]!.timestamp})`.execute(h.services.store.db);
    }
    await until(readyz, (x) => x.status === 200);
  });

  it('answers 503 when the database fails, saying nothing of the query or the connection; /healthz stays 200', async () => {
    faults.fail(/kysely_migration/);
    try {
      const r = await until(readyz, (x) => x.status === 503);
      expect(r.body).toMatchObject({ ready: false, not_ready: ['database', 'migrations'], database: { ok: false } });
      expect(r.body.database.error).toMatch(/the database query failed/);
      expect(JSON.stringify(r.body)).not.toMatch(/select|kysely_migration|injected|postgres:\/\/|\.db/i);
      // Every statement failing: /healthz asks the database nothing, so it still answers.
      faults.fail(/./);
      for (let i = 0; i < 5; i++) expect(await get(`${base}/healthz`)).toMatchObject({ status: 200, text: '{"ok":true}' });
    } finally {
      faults.clear();
    }
    await until(readyz, (x) => x.status === 200);
  });

  // PostgreSQL only (a lock that hangs a query; SQLite's busy wait would hold the event loop): not declared on SQLite, so CI shows no skip.
  if (dialect === 'postgres') it('answers 503 within its time limit while the database hangs, with one query waiting, not one per poll', async () => {
    const locker = new pg.Client({ connectionString: target.env.DATABASE_URL });
    await locker.connect();
    try {
      await locker.query('begin');
      await locker.query('lock table kysely_migration in access exclusive mode');
      await until(readyz, (x) => x.status === 503);
      // Every poll while it hangs: answered at once or within the limit, and never a second waiting query.
      for (let i = 0; i < 5; i++) {
        const started = Date.now();
        const r = await readyz();
        expect(r.status).toBe(503);
        expect(r.body.database.error).toMatch(/no answer within 300 ms|still running after \d+ ms/);
        expect(Date.now() - started).toBeLessThan(READY_TIMEOUT_MS + 2000);
      }
      const waiting = await locker.query(`select count(*)::int as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock' and query like '%kysely_migration%'`);
      expect(waiting.rows[0].n).toBe(1);
    } finally {
      await locker.query('rollback');
      await locker.end();
    }
    await until(readyz, (x) => x.status === 200);
  });
});

describe('/readyz with required providers, and /metrics off or tokenless', () => {
  it('is not ready while a provider it must have is not configured; /metrics is 404 by default', async () => {
    const target = await createTarget('sqlite');
    const h = await startInMemory(testEnv({ ...target.env, MCP_HTTP_PORT: '0', MCP_READY_PROVIDERS: 'sendgrid,intercom', INTERCOM_ACCESS_TOKEN: 'ic-token' }));
    const server = await serveHttp(h.services);
    const base = server.url.replace(/\/mcp$/, '');
    try {
      const r = await get(`${base}/readyz`);
      expect(r.status).toBe(503);
      expect(JSON.parse(r.text)).toMatchObject({ ready: false, not_ready: ['providers'], providers: { ok: false, required: ['sendgrid', 'intercom'], missing: ['sendgrid'], configured: ['intercom'] } });
      expect(r.text).not.toContain('ic-token');
      expect((await get(`${base}/metrics`)).status).toBe(404);
    } finally {
      await server.close();
      await h.close();
      await target.cleanup();
    }
  });

  it('serves /metrics without a token on a loopback bind when MCP_METRICS=true, refusing a foreign Host', async () => {
    const target = await createTarget('sqlite');
    const h = await startInMemory(testEnv({ ...target.env, MCP_HTTP_PORT: '0', MCP_METRICS: 'true' }));
    const server = await serveHttp(h.services);
    const base = server.url.replace(/\/mcp$/, '');
    try {
      const r = await get(`${base}/metrics`);
      expect(r.status).toBe(200);
      expect(r.text).toMatch(/^csmcp_process_cpu_seconds_total /m);
      expect(r.text).toMatch(/^csmcp_db_snapshot_up 1$/m);
      expect((await get(`${base}/metrics`, { Host: 'evil.example' })).status).toBe(403);
    } finally {
      await server.close();
      await h.close();
      await target.cleanup();
    }
  });
});
