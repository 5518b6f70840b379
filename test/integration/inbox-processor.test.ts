import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { sql } from 'kysely';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { PROVIDER_EVENT_NAMES } from '../../src/engine/inbox/interpret.js';
import { parseProductEvents } from '../../src/engine/inbox/parse.js';
import { InboxProcessor } from '../../src/engine/inbox/processor.js';
import { InboxRepository, LeaseLost } from '../../src/engine/inbox/repository.js';
import { openStore, type Store } from '../../src/store/index.js';
import { serveHttp, type RunningHttpServer } from '../../src/transports/http.js';
import { availableDialects, createTarget, type DatabaseTarget } from '../helpers/databases.js';
import { startInMemory, testEnv, type InMemoryHarness } from '../helpers/mcp.js';
import { post, sendgridSigner, sgEvent } from '../helpers/webhooks.js';
import { until } from '../helpers/until.js';

/**
 * The inbox's promises: stored events are processed exactly once, a processing failure is retried
 * (and finally kept as `failed`) without losing the event or holding up the others, a processor that
 * stopped mid-batch is taken over when its lease runs out, several processors on one database share
 * the work, and an unsubscribe that arrives while a campaign is being delivered stops the messages
 * not yet sent.
 */

const log = pino({ level: 'silent' });
const dialects = await availableDialects();



describe.each(dialects)('inbox processor on %s', (dialect) => {
  let target: DatabaseTarget;
  let store: Store;
  let repo: InboxRepository;
  const processor = (opts: Partial<ConstructorParameters<typeof InboxProcessor>[0]> = {}) =>
    new InboxProcessor({ repo, store, log, pollMs: 20, retentionDays: 30, retryBaseMs: 20, maxAttempts: 3, ...opts });
  const storeEvents = (events: Array<Record<string, unknown>>) =>
    repo.store('events', parseProductEvents(Buffer.from(JSON.stringify({ events })), new Date().toISOString(), PROVIDER_EVENT_NAMES));
  const row = (id: string) => store.db.selectFrom('inbox_events').selectAll().where('dedup_key', '=', `events:${id}`).executeTakeFirstOrThrow();
  const count = async (table: 'customer_events' | 'timeline', name?: string) => {
    let q = store.db.selectFrom(table as 'customer_events').select((eb) => eb.fn.countAll().as('n'));
    if (name) q = q.where('name', '=', name);
    return Number((await q.executeTakeFirstOrThrow()).n);
  };
  const installFailure = async () => {
    if (dialect === 'sqlite') {
      await sql`create trigger boom before insert on customer_events when new.name = 'boom' begin select raise(abort, 'boom: refused by a test trigger'); end`.execute(store.db);
    } else {
      await sql`create or replace function boom() returns trigger language plpgsql as $$ begin if new.name = 'boom' then raise exception 'boom: refused by a test trigger'; end if; return new; end $$`.execute(store.db);
      await sql`create trigger boom before insert on customer_events for each row execute function boom()`.execute(store.db);
    }
  };
  const removeFailure = () => sql`drop trigger if exists boom${sql.raw(dialect === 'postgres' ? ' on customer_events' : '')}`.execute(store.db);

  beforeEach(async () => {
    target = await createTarget(dialect);
    store = await openStore(loadConfig(testEnv(target.env) as NodeJS.ProcessEnv), log);
    repo = new InboxRepository(store.db, store.dialect);
    await store.roster.createClient({ client_id: 'acme', name: 'Acme', tier: 'standard', lifecycle_stage: 'adopting' } as never);
    for (let i = 0; i < 20; i++) await store.roster.upsertContact('acme', { email: `p${i}@acme.example` } as never);
  });
  afterEach(async () => {
    await store.close();
    await target.cleanup();
  });

  /** The backoff is a minute here: time passing is simulated by making the event due now. */
  const makeDue = (id: string) => store.db.updateTable('inbox_events').set({ next_attempt_at: new Date().toISOString() }).where('dedup_key', '=', `events:${id}`).execute();

  it('retries a failing event with backoff without holding up the others, and records it once when it succeeds', async () => {
    await installFailure();
    await storeEvents([
      { id: 'ok-1', name: 'login', email: 'p1@acme.example' },
      { id: 'bad', name: 'boom', email: 'p2@acme.example' },
      { id: 'ok-2', name: 'login', email: 'p3@acme.example' },
    ]);
    const p = processor({ retryBaseMs: 60_000 });
    await p.drain();
    expect((await row('ok-1')).state).toBe('processed');
    expect((await row('ok-2')).state).toBe('processed');
    const first = await row('bad');
    expect(first).toMatchObject({ state: 'pending', attempts: 1, last_error: expect.stringMatching(/boom/), lease_owner: null });
    expect(Date.parse(first.next_attempt_at)).toBeGreaterThan(Date.now() + 50_000);
    expect(await p.drain()).toBe(0); // not due yet
    await makeDue('bad');
    await p.drain();
    expect(await row('bad')).toMatchObject({ state: 'pending', attempts: 2 });
    await removeFailure();
    await makeDue('bad');
    await p.drain();
    expect(await row('bad')).toMatchObject({ state: 'processed', last_error: null });
    expect(await count('customer_events', 'boom')).toBe(1);
    expect(await count('customer_events', 'login')).toBe(2);
  });

  it('keeps an event that fails on every attempt as failed (listed, never lost)', async () => {
    await installFailure();
    await storeEvents([{ id: 'bad', name: 'boom', email: 'p2@acme.example' }]);
    const settled: string[] = [];
    const p = processor({ retryBaseMs: 60_000, observer: { webhookSettled: (provider, state, lag) => settled.push(`${provider}:${state}:${lag >= 0}`) } });
    for (let i = 0; i < 3; i++) {
      await p.drain();
      await makeDue('bad');
    }
    expect(await row('bad')).toMatchObject({ state: 'failed', attempts: 3, last_error: expect.stringMatching(/boom/) });
    expect(settled).toEqual(['events:failed:true']); // the metrics hear of it once, when it gives up
    expect((await repo.list({ states: ['failed'] }, 10)).events).toHaveLength(1);
    expect(await p.drain()).toBe(0);
    expect(await count('customer_events')).toBe(0);
  });

  it('takes over a stopped processor\'s batch when its lease runs out; the stopped one can no longer settle it', async () => {
    await storeEvents(Array.from({ length: 5 }, (_, i) => ({ id: `e${i}`, name: 'login', email: `p${i}@acme.example` })));
    const claimed = await repo.claim('stopped-processor', 100, 60_000);
    expect(claimed).toHaveLength(5);
    const p = processor();
    expect(await p.drain()).toBe(0); // leased to someone else
    // The stopped processor never renews: its lease runs out (simulated rather than waited for).
    await store.db.updateTable('inbox_events').set({ lease_until: new Date(Date.now() - 1).toISOString() }).where('lease_owner', '=', 'stopped-processor').execute();
    expect(await p.drain()).toBe(5);
    await expect(store.db.transaction().execute((trx) => repo.settle(trx, 'stopped-processor', [{ ids: claimed.map((c) => c.inbox_id), state: 'processed', note: 'late' }]))).rejects.toBeInstanceOf(LeaseLost);
    expect(await count('customer_events', 'login')).toBe(5);
  });

  it('resumes after a restart: events stored while nothing processed are processed by the next process', async () => {
    await storeEvents(Array.from({ length: 3 }, (_, i) => ({ id: `r${i}`, name: 'login', email: `p${i}@acme.example` })));
    await store.close();
    store = await openStore(loadConfig(testEnv(target.env) as NodeJS.ProcessEnv), log);
    repo = new InboxRepository(store.db, store.dialect);
    const p = processor();
    p.start();
    try {
      await until(() => repo.backlog(), (b) => b.length === 0);
    } finally {
      await p.stop();
    }
    expect(await count('customer_events', 'login')).toBe(3);
  });

  it('retention deletes settled events older than the window, never pending ones', async () => {
    await storeEvents(Array.from({ length: 6 }, (_, i) => ({ id: `old${i}`, name: 'login', email: `p${i}@acme.example` })));
    await processor().drain();
    await storeEvents([{ id: 'old-pending', name: 'login', email: 'p1@acme.example' }, { id: 'recent', name: 'login', email: 'p2@acme.example' }]);
    const longAgo = new Date(Date.now() - 40 * 86_400_000).toISOString();
    await store.db.updateTable('inbox_events').set({ received_at: longAgo }).where('dedup_key', '!=', 'events:recent').execute();
    expect(await repo.prune(Date.now() - 30 * 86_400_000)).toBe(6);
    const left = await store.db.selectFrom('inbox_events').select(['dedup_key', 'state']).orderBy('inbox_id').execute();
    expect(left).toEqual([
      { dedup_key: 'events:old-pending', state: 'pending' },
      { dedup_key: 'events:recent', state: 'pending' },
    ]);
  });

  it('two processors on one database process every event exactly once', async () => {
    const n = 1200;
    await storeEvents(Array.from({ length: n }, (_, i) => ({ id: `m${i}`, name: 'feature_used', email: `p${i % 20}@acme.example`, properties: { i } })));
    // PostgreSQL: a second connection pool, as a second server would have. SQLite: the same connection
    // (better-sqlite3 waits for a lock synchronously, so two connections in one process would deadlock;
    // separate processes each have their own and wait for each other's transactions).
    const other = dialect === 'postgres' ? await openStore(loadConfig(testEnv(target.env) as NodeJS.ProcessEnv), log) : store;
    try {
      const a = processor({ batchSize: 50 });
      const b = new InboxProcessor({ repo: new InboxRepository(other.db, other.dialect), store: other, log, pollMs: 20, retentionDays: 30, batchSize: 50 });
      const [na, nb] = await Promise.all([a.drain(), b.drain()]);
      expect(na + nb).toBe(n);
      if (dialect === 'postgres') expect(Math.min(na, nb)).toBeGreaterThan(0);
    } finally {
      if (other !== store) await other.close();
    }
    expect(await count('customer_events', 'feature_used')).toBe(n);
    const timeline = await store.db.selectFrom('timeline').select((eb) => eb.fn.countAll().as('n')).where('type', '=', 'inbound_event').executeTakeFirstOrThrow();
    expect(Number(timeline.n)).toBe(n);
    expect(await repo.backlog()).toEqual([]);
  });
});

/** A SendGrid stand-in that holds its first mail-send request until the test lets it go. */
async function gatedSendGrid() {
  const received: string[] = [];
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let firstArrived!: () => void;
  const first = new Promise<void>((r) => (firstArrived = r));
  const server = http.createServer(async (req, res) => {
    let body = '';
    for await (const c of req) body += c;
    if (req.method === 'POST' && req.url === '/v3/mail/send') {
      received.push(JSON.parse(body).personalizations[0].to[0].email);
      firstArrived();
      await gate;
      res.writeHead(202, { 'X-Message-Id': randomBytes(11).toString('base64url') }).end();
      return;
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    received,
    first,
    release,
    stop: () => new Promise<void>((r) => (server.closeAllConnections(), server.close(() => r()))),
  };
}

describe.each(dialects)('consent arriving mid-delivery on %s', (dialect) => {
  const signer = sendgridSigner();
  let target: DatabaseTarget;
  let sg: Awaited<ReturnType<typeof gatedSendGrid>>;
  let h: InMemoryHarness;
  let server: RunningHttpServer;

  beforeAll(async () => {
    target = await createTarget(dialect);
    sg = await gatedSendGrid();
    h = await startInMemory(
      testEnv({
        ...target.env,
        SENDGRID_API_KEY: 'SG.gated',
        SENDGRID_BASE_URL: sg.url,
        SENDGRID_FROM_EMAIL: 'success@ourco.test',
        HTTP_TIMEOUT_MS: '20000',
        CAMPAIGN_DISPATCH_CONCURRENCY: '1',
        CAMPAIGN_EMAIL_BATCHING: 'false', // one message per request: the first is held while consent arrives
        CAMPAIGN_DISPATCH_POLL_MS: '50',
        MCP_HTTP_PORT: '0',
        SENDGRID_WEBHOOK_PUBLIC_KEY: signer.publicKey,
        WEBHOOK_PROCESS_POLL_MS: '50',
      }),
    );
    server = await serveHttp(h.services);
    await h.call('register_client', { client_id: 'acme', name: 'Acme', tier: 'enterprise' });
    for (const who of ['a', 'b', 'c', 'd']) await h.call('upsert_contact', { client_id: 'acme', email: `${who}@acme.example` });
  });
  afterAll(async () => {
    sg?.release();
    await server?.close();
    await h?.close();
    await sg?.stop();
    await target?.cleanup();
  });

  it('an unsubscribe and a spam report received while the campaign is being delivered skip the messages not yet sent', async () => {
    const args = { campaign_name: 'Mid-flight', template_type: 'newsletter', subject_line: 'News', body_text: 'Hello', target_client_ids: ['acme'] };
    const preview = await h.call('send_personalized_email', args);
    expect(preview.structuredContent.audience.recipients).toBe(4);
    const confirmed = await h.call('send_personalized_email', { ...args, confirmation_token: preview.structuredContent.confirmation_token });
    const id = confirmed.structuredContent.campaign_id;
    await sg.first; // one message is in flight, three are queued
    const mid = await h.call('get_campaign_status', { campaign_id: id });
    expect(mid.structuredContent.campaign.totals).toMatchObject({ sending: 1, queued: 3 });

    const body = JSON.stringify([sgEvent('unsubscribe', 'd@acme.example'), sgEvent('spamreport', 'c@acme.example')]);
    expect((await post(`${server.url.replace(/\/mcp$/, '')}/webhooks/sendgrid`, body, signer.headers(body))).status).toBe(200);
    await until(() => h.call('list_inbound_events', { states: ['pending'] }), (r) => r.structuredContent.events.length === 0);
    sg.release();

    const done = (await h.call('get_campaign_status', { campaign_id: id, wait_seconds: 20 })).structuredContent.campaign;
    expect(done.totals).toMatchObject({ sent: 2, skipped: 2, queued: 0, sending: 0 });
    expect(done.skipped_by_reason).toEqual({ email_suppressed: 2 });
    expect(sg.received.sort()).toEqual(['a@acme.example', 'b@acme.example']);
    const tl = await h.call('get_client_timeline', { client_id: 'acme', types: ['email'] });
    const skipped = tl.structuredContent.entries.filter((e: { outcome: string }) => e.outcome === 'skipped').map((e: { summary: string }) => e.summary);
    expect(skipped).toHaveLength(2);
    expect(skipped.join('\n')).toMatch(/d@acme\.example unsubscribed from emails/);
    expect(skipped.join('\n')).toMatch(/c@acme\.example reported an email as spam/);
  });
});
