import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import SQLite from 'better-sqlite3';
import { Kysely, Migrator, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { openStore } from '../../src/store/index.js';
import { BACKSTOP_PAGES } from '../../src/store/wal-checkpointer.js';
import { migrations } from '../../src/store/migrations/index.js';
import { ImmediateSqliteDialect } from '../../src/store/sqlite-dialect.js';
import { availableDialects, createTarget, POSTGRES_ADMIN_URL, type DatabaseTarget } from '../helpers/databases.js';
import { startInMemory, testEnv, type InMemoryHarness } from '../helpers/mcp.js';
import { until } from '../helpers/until.js';

const EXAMPLE = path.resolve(import.meta.dirname, '../../examples/clients.csv');
const dialects = await availableDialects();

describe.each(dialects)('customer roster on %s', (dialect) => {
  let target: DatabaseTarget;
  let h: InMemoryHarness;
  beforeAll(async () => {
    target = await createTarget(dialect);
    h = await startInMemory(testEnv(target.env));
  });
  afterAll(async () => {
    await h?.close();
    await target?.cleanup();
  });

  it('registers a client, refuses a duplicate id, and names a bad field', async () => {
    const r = await h.call('register_client', {
      client_id: 'northwind',
      name: 'Northwind Traders',
      tier: 'enterprise',
      segments: ['high_value', 'at_risk', 'at_risk'],
      health_score: 45,
      mrr: 12000,
      renewal_date: '2027-02-01',
      owner_email: 'Dana@OurCo.example',
      actor: 'dana@ourco.example',
    });
    expect(r.structuredContent).toMatchObject({ success: true, client: { client_id: 'northwind', segments: ['at_risk', 'high_value'], owner_email: 'dana@ourco.example' } });
    const dup = await h.call('register_client', { client_id: 'northwind', name: 'Again' });
    expect(dup.isError).toBe(true);
    expect(dup.structuredContent.error).toMatchObject({ code: 'conflict', retryable: false });
    const bad = await h.call('register_client', { client_id: 'No Spaces!', name: 'x', health_score: 140 });
    expect(bad.structuredContent.error.code).toBe('invalid_input');
    const fields = bad.structuredContent.error.details.fields.map((f: { field: string }) => f.field);
    expect(fields).toEqual(expect.arrayContaining(['client_id', 'health_score']));
  });

  it('updates a client partially and records before → after in the timeline (one transaction)', async () => {
    const r = await h.call('update_client_info', { client_id: 'northwind', health_score: 38, lifecycle_stage: 'renewal', actor: 'dana' });
    expect(r.structuredContent.changes).toEqual({ health_score: { from: 45, to: 38 }, lifecycle_stage: { from: 'onboarding', to: 'renewal' } });
    expect(r.structuredContent.client.tier).toBe('enterprise');
    const t = await h.call('get_client_timeline', { client_id: 'northwind', types: ['profile_change'] });
    expect(t.structuredContent.entries[0]).toMatchObject({ type: 'profile_change', actor: 'dana', data: { changes: { health_score: { from: 45, to: 38 } } } });
    const missing = await h.call('update_client_info', { client_id: 'nobody-here', health_score: 1 });
    expect(missing.structuredContent.error.code).toBe('not_found');
  });

  it('keeps contacts unique per client, validates emails, and tracks subscription', async () => {
    const a = await h.call('upsert_contact', { client_id: 'northwind', email: 'Anna@Northwind.example', name: 'Anna Berg', role: 'Champion' });
    expect(a.structuredContent).toMatchObject({ created: true, contact: { email: 'anna@northwind.example', role: 'champion', linked_to_intercom: false } });
    const again = await h.call('upsert_contact', { client_id: 'northwind', email: 'anna@northwind.example', phone: '+46 8 123' });
    expect(again.structuredContent).toMatchObject({ created: false, contact: { name: 'Anna Berg', phone: '+46 8 123' } });
    const bad = await h.call('upsert_contact', { client_id: 'northwind', email: 'not-an-email' });
    expect(bad.structuredContent.error).toMatchObject({ code: 'invalid_input' });
    expect(bad.structuredContent.error.message).toMatch(/email/);
    const unsub = await h.call('set_contact_subscription', { email: 'anna@northwind.example', subscribed: false, reason: 'asked by phone' });
    expect(unsub.structuredContent.contacts[0]).toMatchObject({ unsubscribed: true, unsubscribe_reason: 'asked by phone', unsubscribe_source: 'csm_request' });
    // Resubscribing lifts an opt-out: a person must approve it, and this client cannot ask one (see consent.test.ts).
    const re = await h.call('set_contact_subscription', { email: 'anna@northwind.example', subscribed: true });
    expect(re.structuredContent.error).toMatchObject({ code: 'forbidden', details: { policy: 'approval_required' } });
    await h.call('upsert_contact', { client_id: 'northwind', email: 'temp@northwind.example' });
    const removed = await h.call('remove_contact', { client_id: 'northwind', email: 'temp@northwind.example' });
    expect(removed.structuredContent.removed.email).toBe('temp@northwind.example');
    const ov = await h.call('get_client_overview', { client_id: 'northwind' });
    expect(ov.structuredContent.contacts.map((c: { email: string }) => c.email)).toEqual(['anna@northwind.example']);
    expect(ov.structuredContent.recent_timeline.length).toBeGreaterThan(3);
    expect(ov.structuredContent.renewal.date).toBe('2027-02-01');
  });

  it('imports the sample CSV, and re-importing it changes nothing', async () => {
    const first = await h.call('import_clients', { file_path: EXAMPLE });
    expect(first.structuredContent).toMatchObject({ imported: true, rows: 6, clients_created: 4, contacts_created: 6, rows_skipped: 0, errors: [] });
    const second = await h.call('import_clients', { file_path: EXAMPLE });
    expect(second.structuredContent).toMatchObject({ imported: true, clients_created: 0, clients_updated: 4, contacts_created: 0, contacts_updated: 6 });
    const acme = await h.call('get_client_overview', { client_id: 'acme-corp' });
    expect(acme.structuredContent.client).toMatchObject({ tier: 'enterprise', health_score: 42, segments: ['at_risk', 'high_value'], custom_attributes: { region: 'emea' } });
    expect(acme.structuredContent.contacts).toHaveLength(2);
  });

  it('validates every row first, reports row numbers, and imports nothing unless skip_invalid', async () => {
    const file = path.join(target.env.CS_MCP_DATA_DIR!, 'bad.csv');
    fs.writeFileSync(
      file,
      [
        'client_id,client_name,tier,health_score,contact_email',
        'wayne-ent,Wayne Enterprises,enterprise,70,bruce@wayne.example',
        'wayne-ent,Wayne Enterprises,starter,70,lucius@wayne.example',
        'Bad Id,Someone,standard,50,x@y.example',
        'stark,Stark,standard,101,tony@stark.example',
        'stark,Stark,standard,,not-an-email',
        'oscorp,Oscorp,standard,60,norman@oscorp.example',
      ].join('\n'),
    );
    const r = await h.call('import_clients', { file_path: file });
    expect(r.structuredContent.error.code).toBe('invalid_input');
    expect(r.structuredContent.error.details.errors).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ row: 3, field: 'tier' }),
        expect.objectContaining({ row: 4, field: 'client_id' }),
        expect.objectContaining({ row: 5, field: 'health_score' }),
        expect.objectContaining({ row: 6, field: 'contact_email' }),
      ]),
    );
    expect((await h.call('get_client_overview', { client_id: 'wayne-ent' })).structuredContent.error.code).toBe('not_found');
    const skipped = await h.call('import_clients', { file_path: file, skip_invalid: true });
    expect(skipped.structuredContent).toMatchObject({ imported: true, rows_skipped: 4, clients_created: 2, contacts_created: 2 });
  });

  it('lists clients with filters, counts, sorting and stable cursor pagination', async () => {
    const ent = await h.call('list_clients', { tier: ['enterprise'], health_max: 50, sort_by: 'health_score' });
    expect(ent.structuredContent.clients.map((c: { client_id: string }) => c.client_id)).toEqual(['northwind', 'acme-corp']);
    expect(ent.structuredContent.total).toBe(2);
    const seg = await h.call('list_clients', { segment: 'high_value' });
    expect(seg.structuredContent.total).toBe(3);
    const text = await h.call('list_clients', { search: 'GLOBEX.example' });
    expect(text.structuredContent.clients.map((c: { client_id: string }) => c.client_id)).toEqual(['globex']);
    const renewing = await h.call('list_clients', { renewal_within_days: 3650, owner_email: 'lee@ourco.example' });
    expect(renewing.structuredContent.total).toBe(2);

    const seen: string[] = [];
    let cursor: string | undefined;
    do {
      const page = await h.call('list_clients', { limit: 2, sort_by: 'mrr', sort_direction: 'desc', ...(cursor ? { cursor } : {}) });
      seen.push(...page.structuredContent.clients.map((c: { client_id: string }) => c.client_id));
      cursor = page.structuredContent.next_cursor;
    } while (cursor);
    const all = await h.call('list_clients', { limit: 200, sort_by: 'mrr', sort_direction: 'desc' });
    expect(seen).toEqual(all.structuredContent.clients.map((c: { client_id: string }) => c.client_id));
    expect(new Set(seen).size).toBe(all.structuredContent.total);
  });

  it('search finds accented and non-Latin names whatever their case, with the same answers on both stores', async () => {
    for (const [client_id, name] of [['oesterreich-ag', 'Österreich AG'], ['eclair-sarl', 'Éclair SARL'], ['strasse-gmbh', 'GROẞE STRAẞE GmbH'], ['athens-ae', 'ΑΘΗΝΑ Α.Ε.']] as const) {
      expect((await h.call('register_client', { client_id, name })).structuredContent.success).toBe(true);
    }
    const found = async (search: string) =>
      (await h.call('list_clients', { search, limit: 200 })).structuredContent.clients.map((c: { client_id: string }) => c.client_id);
    for (const q of ['Österreich', 'österreich', 'ÖSTERREICH', 'reich ag']) expect(await found(q), q).toEqual(['oesterreich-ag']);
    for (const q of ['Éclair', 'éclair', 'ÉCLAIR']) expect(await found(q), q).toEqual(['eclair-sarl']);
    expect(await found('große straße')).toEqual(['strasse-gmbh']);
    expect(await found('αθηνα')).toEqual(['athens-ae']);
    expect(await found('eclair')).toEqual([]); // no accent folding on either store: é is not e
  });

  it('offers customer://clients/{client_id} resources', async () => {
    const { resources } = await h.client.listResources();
    expect(resources.map((r) => r.uri)).toContain('customer://clients/acme-corp');
    const read = await h.client.readResource({ uri: 'customer://clients/acme-corp' });
    const body = JSON.parse(String((read.contents[0] as { text: string }).text));
    expect(body.client.name).toBe('Acme Corp');
    expect(body.contacts).toHaveLength(2);
  });
});

/** Opens (and so migrates) the store in a separate process, as a second server instance would. */
function openStoreInChildProcess(env: Record<string, string>): Promise<number> {
  const script = `
    const { loadConfig } = await import(${JSON.stringify(path.resolve('dist/config.js'))});
    const { openStore } = await import(${JSON.stringify(path.resolve('dist/store/index.js'))});
    const pino = (await import('pino')).default;
    const store = await openStore(loadConfig(process.env), pino({ level: 'silent' }));
    await store.close();`;
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'inherit'] });
    child.on('exit', (code) => resolve(code ?? 1));
  });
}

describe.each(dialects)('migrations on %s', (dialect) => {
  it('several instances migrating the same fresh database at once all succeed', async () => {
    const target = await createTarget(dialect);
    try {
      const codes = await Promise.all([1, 2, 3].map(() => openStoreInChildProcess(target.env)));
      expect(codes).toEqual([0, 0, 0]);
      const store = await openStore(loadConfig(testEnv(target.env) as NodeJS.ProcessEnv), pino({ level: 'silent' }));
      const applied = await (store.db as unknown as Kysely<any>).selectFrom('kysely_migration').select('name').orderBy('name').execute();
      expect(applied.map((t: { name: string }) => t.name)).toEqual(Object.keys(migrations).sort());
      await store.close();
    } finally {
      await target.cleanup();
    }
  });

  it('0003 carries queued campaign messages of an existing database over, with their tracking metadata', async () => {
    const target = await createTarget(dialect);
    const log = pino({ level: 'silent' });
    try {
      // A database as the previous version left it: migrations 0001 and 0002 only.
      const config = loadConfig(testEnv(target.env) as NodeJS.ProcessEnv);
      if (config.database.kind === 'sqlite') fs.mkdirSync(path.dirname(config.database.file), { recursive: true });
      const db: Kysely<any> =
        config.database.kind === 'postgres'
          ? new Kysely({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: config.database.url }) }) })
          : new Kysely({ dialect: new ImmediateSqliteDialect({ database: new SQLite(config.database.file) }) });
      const old = { '0001_roster': migrations['0001_roster']!, '0002_campaigns': migrations['0002_campaigns']! };
      const { error } = await new Migrator({ db, provider: { getMigrations: async () => old } }).migrateToLatest();
      expect(error).toBeUndefined();
      const now = new Date().toISOString();
      await db.insertInto('campaigns').values({ campaign_id: 'cmp_old', name: 'Old one', template_type: 'newsletter', definition: JSON.stringify({ campaign_name: 'Old one', template_type: 'newsletter', created_by: 'dana' }), content_hash: 'x', created_by: 'dana', scheduled_at: null, created_at: now, confirmed_at: now, cancelled_at: null }).execute();
      await db.insertInto('outbox').values({ outbox_id: 7, campaign_id: 'cmp_old', contact_id: 'ct_1', client_id: 'acme', channel: 'email', idempotency_key: 'cmp_old:ct_1:email', recipient_email: 'ann@acme.test', payload: JSON.stringify({ subject: 'S', text: 'T', to_email: 'ann@acme.test' }), state: 'queued', attempts: 0, not_before: now, updated_at: now }).execute();
      await db.destroy();

      const upgraded = await openStore(loadConfig(testEnv(target.env) as NodeJS.ProcessEnv), log);
      const row = await upgraded.db.selectFrom('outbox').selectAll().executeTakeFirstOrThrow();
      expect(row).toMatchObject({ outbox_id: 7, source_kind: 'campaign', source_id: 'cmp_old', state: 'queued', idempotency_key: 'cmp_old:ct_1:email' });
      expect(JSON.parse(row.meta)).toMatchObject({ label: 'Old one', category: 'newsletter', actor: 'dana', custom_args: { campaign_id: 'cmp_old', outbox_key: 'cmp_old:ct_1:email' } });
      // New rows continue after the carried-over ids.
      const next = await upgraded.db.insertInto('outbox').values({ ...row, outbox_id: undefined as never, idempotency_key: 'new' }).returning('outbox_id').executeTakeFirstOrThrow();
      expect(Number(next.outbox_id)).toBeGreaterThan(7);
      await upgraded.close();
    } finally {
      await target.cleanup();
    }
  });
});

describe.skipIf(!dialects.includes('postgres'))('PostgreSQL connection loss', () => {
  it('a server-side kill of idle connections is logged, not fatal, and the next query reconnects', async () => {
    const target = await createTarget('postgres');
    const lines: string[] = [];
    const log = pino({ level: 'warn' }, { write: (l: string) => void lines.push(l) });
    const store = await openStore(loadConfig(testEnv(target.env) as NodeJS.ProcessEnv), log);
    try {
      await store.roster.getClient('warm-up'); // leaves an idle pooled connection behind
      const dbName = new URL(target.env.DATABASE_URL!).pathname.slice(1);
      const admin = new pg.Client({ connectionString: POSTGRES_ADMIN_URL });
      await admin.connect();
      await admin.query('select pg_terminate_backend(pid) from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()', [dbName]);
      await admin.end();
      const dropped = () => lines.some((l) => l.includes('PostgreSQL dropped an idle connection'));
      await until(dropped, { message: 'the pool logging the dropped connection' });
      expect(await store.roster.getClient('still-works')).toBeUndefined();
    } finally {
      await store.close();
      await target.cleanup();
    }
  });
});

describe.skipIf(!dialects.includes('postgres'))('PostgreSQL session names', () => {
  it('each session names the process (customer-success-mcp/<pid>); an application_name in DATABASE_URL wins', async () => {
    const target = await createTarget('postgres');
    const nameOf = async (env: Record<string, string>) => {
      const store = await openStore(loadConfig(testEnv(env) as NodeJS.ProcessEnv), pino({ level: 'silent' }));
      try {
        return (await sql<{ name: string }>`select current_setting('application_name') as name`.execute(store.db)).rows[0]!.name;
      } finally {
        await store.close();
      }
    };
    try {
      expect(await nameOf(target.env)).toBe(`customer-success-mcp/${process.pid}`);
      const url = new URL(target.env.DATABASE_URL!);
      url.searchParams.set('application_name', 'ops-named');
      expect(await nameOf({ ...target.env, DATABASE_URL: url.toString() })).toBe('ops-named');
    } finally {
      await target.cleanup();
    }
  });
});

describe('SQLite connection settings', () => {
  it('keeps temporary tables and statement journals in memory, with WAL and NORMAL sync', async () => {
    // On disk every statement journal or temporary table is a file opened, written and unlinked:
    // several a second while a campaign sends.
    const target = await createTarget('sqlite');
    const store = await openStore(loadConfig(testEnv(target.env) as NodeJS.ProcessEnv), pino({ level: 'silent' }));
    try {
      const read = async (name: string) => Object.values((await sql.raw(`pragma ${name}`).execute(store.db)).rows[0] as object)[0];
      expect({ temp_store: await read('temp_store'), journal_mode: await read('journal_mode'), synchronous: await read('synchronous'), wal_autocheckpoint: await read('wal_autocheckpoint') }).toEqual({
        temp_store: 2, // MEMORY
        journal_mode: 'wal',
        synchronous: 1, // NORMAL
        wal_autocheckpoint: BACKSTOP_PAGES, // checkpoints run on their own thread (wal-checkpointer.test.ts); this only bounds the WAL
      });
      // A commit asks that thread for a checkpoint: what it wrote reaches the database file without the connection checkpointing.
      const file = (loadConfig(testEnv(target.env) as NodeJS.ProcessEnv).database as { file: string }).file;
      const before = fs.statSync(file).size;
      await store.db.transaction().execute(async (trx) => {
        await sql`create table bulk (x text)`.execute(trx);
        for (let i = 0; i < 60; i++) await sql.raw(`insert into bulk select '${'x'.repeat(1200)}' from (select 1 union all select 2 union all select 3) a, (select 1 union all select 2 union all select 3 union all select 4 union all select 5) b`).execute(trx);
      });
      await until(() => fs.statSync(file).size, (size) => size > before + 250 * 4096, { message: 'the checkpoint thread copies the commit into the file' });
    } finally {
      await store.close();
      await target.cleanup();
    }
  });
});
