import { CompiledQuery, sql, type Kysely } from 'kysely';
import pino from 'pino';
import { loadConfig } from '../../src/config.js';
import { openStore, type Store } from '../../src/store/index.js';
import { availableDialects, createTarget, type DatabaseTarget } from '../helpers/databases.js';
import { testEnv } from '../helpers/mcp.js';
import { dbFaults } from '../helpers/db-faults.js';
import { until } from '../helpers/until.js';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { SendAdmission } from '../../src/engine/delivery/admission.js';
import { OutboxDispatcher, type DeliveryOutcome, type DeliveryPort, type DeliveryReceipt } from '../../src/engine/delivery/dispatcher.js';
import { expiredQueuedStatement, expiredSendingStatement, insertMessages, markSendingStatement, OutboxRepository, type OutboxRow } from '../../src/engine/delivery/outbox.js';
import type { MessagePolicy } from '../../src/engine/delivery/message.js';
import { SettlementWriter, type SettlementPort } from '../../src/engine/delivery/settlement.js';
import { DailySendLimit } from '../../src/safety/daily-limit.js';
import { MAX_PREPARED_LIST, prepared } from '../../src/store/prepared.js';
import { linkIntercomContactsIn } from '../../src/store/roster.js';
import type { TimelineInput } from '../../src/store/timeline.js';
import type { RequestHook } from '../../src/resilience/request-hooks.js';
import { ToolError } from '../../src/result.js';
import type { Database as Schema } from '../../src/store/schema.js';

const log = pino({ level: 'silent' });

const dialects = await availableDialects();
const faults = dbFaults();
await faults.installInProcess();
/** The statement that records a row's final state (OutboxRepository.finish). */
const SETTLEMENT = /update "outbox" set "state" = \S+, "provider_message_id"/;

async function seed(
  db: Kysely<Schema>,
  n: number,
  campaignId = 'cmp_test',
  notBefore = new Date().toISOString(),
  extra: { channel?: 'email' | 'intercom_inapp'; kind?: 'campaign' | 'automation'; policy?: MessagePolicy } = {},
) {
  await db.insertInto('clients').values({ client_id: 'acme', name: 'Acme', tier: 'standard', lifecycle_stage: 'mature', health_score: null, mrr: null, renewal_date: null, owner_email: null, custom_attributes: '{}', created_at: notBefore, updated_at: notBefore }).onConflict((oc) => oc.column('client_id').doNothing()).execute();
  const contacts = Array.from({ length: n }, (_, i) => ({ contact_id: `c${i}`, email: `p${i}@acme.test` }));
  for (const c of contacts) {
    await db.insertInto('contacts').values({ ...c, client_id: 'acme', name: null, first_name: null, role: null, phone: null, external_user_id: null, intercom_contact_id: null, intercom_role: null, unsubscribed: 0, unsubscribed_at: null, unsubscribe_source: null, unsubscribe_reason: null, email_status: null, email_status_at: null, email_status_source: null, email_status_reason: null, timezone: null, created_at: notBefore, updated_at: notBefore }).onConflict((oc) => oc.column('contact_id').doNothing()).execute();
  }
  await insertMessages(
    db,
    contacts.map((c) => ({
      source_kind: extra.kind ?? ('campaign' as const),
      source_id: campaignId,
      contact_id: c.contact_id,
      client_id: 'acme',
      channel: extra.channel ?? ('email' as const),
      idempotency_key: `${campaignId}:${c.contact_id}:${extra.channel ?? 'email'}`,
      policy: extra.policy,
      content: { subject: 's', text: 't', to_email: c.email },
      meta: { label: 'T', custom_args: {} },
      not_before: notBefore,
    })),
  );
}

/** A provider stand-in for the port: records every send that really "went out". */
class FakePort implements DeliveryPort, SettlementPort {
  sent: string[] = [];
  /** When each send went out (ms). */
  sentAt: number[] = [];
  settledRows: Array<{ key: string; state: string }> = [];
  maxConcurrent = 0;
  private concurrent = 0;
  failWith?: (row: OutboxRow, attempt: number) => ToolError | undefined;
  delayMs = 2;
  /** Sends this far apart, each waiting for its place before it is written, as a provider's rate budget paces them. */
  budgetGapMs = 0;
  private nextPlace = 0;
  private attempts = new Map<string, number>();

  async prepare(row: OutboxRow): Promise<(beforeSend: RequestHook) => Promise<DeliveryReceipt>> {
    return async (beforeSend) => {
      if (this.budgetGapMs) {
        const at = (this.nextPlace = Math.max(this.nextPlace + this.budgetGapMs, Date.now()));
        await new Promise((r) => setTimeout(r, at - Date.now()));
      }
      this.concurrent += 1;
      this.maxConcurrent = Math.max(this.maxConcurrent, this.concurrent);
      try {
        await beforeSend(); // what the observed fetch does right before writing the request
        const n = (this.attempts.get(row.idempotency_key) ?? 0) + 1;
        this.attempts.set(row.idempotency_key, n);
        await new Promise((r) => setTimeout(r, this.delayMs));
        const err = this.failWith?.(row, n);
        if (err) throw err;
        this.sent.push(row.idempotency_key);
        this.sentAt.push(Date.now());
        return { provider_message_id: `msg-${row.outbox_id}` };
      } finally {
        this.concurrent -= 1;
      }
    };
  }

  needsLookup(row: OutboxRow): boolean {
    return row.channel === 'intercom_inapp';
  }

  /** Rows whose provider lookups were prefetched (Intercom contact searches, in the real port). */
  prefetched: string[] = [];
  prefetch(rows: OutboxRow[]): void {
    this.prefetched.push(...rows.filter((r) => this.needsLookup(r)).map((r) => r.idempotency_key));
  }

  /** Batch every row (like small campaign emails): one "request" for many rows. */
  batching = false;
  /** Runs while a batch is being prepared: after the cheap checks, before the last-moment admission. */
  beforeBatchSend?: (rows: OutboxRow[]) => Promise<void>;
  requests: string[][] = [];

  batchKey(row: OutboxRow): string | undefined {
    return this.batching ? row.source_id : undefined;
  }

  async prepareBatch(rows: OutboxRow[]): Promise<(beforeSend: RequestHook) => Promise<DeliveryReceipt>> {
    await this.beforeBatchSend?.(rows);
    return async (beforeSend) => {
      await beforeSend();
      this.requests.push(rows.map((r) => r.idempotency_key));
      this.sent.push(...rows.map((r) => r.idempotency_key));
      return { provider_message_id: `batch-${this.requests.length}` };
    };
  }

  timelineEntry(row: OutboxRow, outcome: DeliveryOutcome): TimelineInput {
    return { client_id: row.client_id, contact_id: row.contact_id, type: 'email', channel: 'sendgrid', summary: `test ${outcome.state}`, outcome: outcome.state === 'sent' ? 'success' : outcome.state };
  }

  followUp(row: OutboxRow, outcome: DeliveryOutcome): void {
    this.settledRows.push({ key: row.idempotency_key, state: outcome.state });
  }
}

describe.each(dialects)('OutboxDispatcher on %s', (dialect) => {
  let target: DatabaseTarget;
  let store: Store;
  let db: Kysely<Schema>;
  let repo: OutboxRepository;
  let port: FakePort;
  let dispatcher: OutboxDispatcher | undefined;
  let settleOpts: ConstructorParameters<typeof SettlementWriter>[4];
  const make = (over: Partial<ConstructorParameters<typeof OutboxDispatcher>[0]> = {}, dailyLimit = 0) =>
    new OutboxDispatcher({
      repo,
      admission: new SendAdmission(repo, new DailySendLimit(dailyLimit), { perDay: 1, perWeek: 3, kinds: ['automation'] }),
      port,
      settlements: new SettlementWriter(repo, store.timeline, port, log, settleOpts),
      log,
      concurrency: 4,
      pollMs: 20,
      leaseMs: 2000,
      channelGate: () => ({ blocked: [] }),
      retryBaseMs: 10,
      ...over,
    });
  /** Resolves after the dispatcher has made `passes` more claim passes: time enough to have sent anything due. */
  const morePasses = async (passes = 3) => {
    const claims = vi.spyOn(repo, 'claim');
    const before = claims.mock.calls.length;
    await until(() => claims.mock.calls.length >= before + passes, { message: `${passes} more dispatch passes` });
    claims.mockRestore();
  };
  const states = async () =>
    Object.fromEntries(
      (await db.selectFrom('outbox').select(['state', (eb) => eb.fn.countAll<number>().as('n')]).groupBy('state').execute()).map((r) => [r.state, Number(r.n)]),
    );

  beforeEach(async () => {
    target = await createTarget(dialect);
    store = await openStore(loadConfig(testEnv(target.env) as NodeJS.ProcessEnv), log);
    db = store.db;
    repo = new OutboxRepository(db, store.dialect);
    port = new FakePort();
    settleOpts = undefined;
  });
  afterEach(async () => {
    faults.clear();
    await dispatcher?.stop();
    dispatcher = undefined;
    await store.close();
    await target.cleanup();
  });

  it("records each row's own final state and values, one row at a time", async () => {
    await seed(db, 4);
    const rows = await repo.claim('me', 10, [], 60_000);
    expect(await repo.markSendingMany(db, rows, 'me', 60_000)).toHaveLength(4);
    const [a, b, c, d] = rows.sort((x, y) => x.outbox_id - y.outbox_id) as [OutboxRow, OutboxRow, OutboxRow, OutboxRow];
    const now = Date.parse('2026-12-07T10:00:00.000Z');
    await repo.finishMany([{ row: a, state: 'sent', provider_message_id: 'pm-a' }], now);
    await repo.finishMany([{ row: b, state: 'failed', error_code: 'invalid_input', error_message: 'bad address' }], now + 1);
    await repo.finishMany([{ row: c, state: 'unknown', error_code: 'timeout', error_message: 'in doubt' }], now + 2);
    await repo.finishMany([{ row: d, state: 'sent', provider_message_id: 'pm-d' }], now + 3);
    // A row already settled keeps its state: a late answer for it changes nothing.
    await repo.finishMany([{ row: b, state: 'sent', provider_message_id: 'pm-late' }], now + 4);
    const got = await db.selectFrom('outbox').select(['outbox_id', 'state', 'provider_message_id', 'error_code', 'error_message', 'updated_at', 'sent_at', 'lease_owner']).orderBy('outbox_id').execute();
    expect(got.map(({ sent_at, ...r }) => ({ ...r, sent: sent_at !== null }))).toEqual([
      { outbox_id: a.outbox_id, state: 'sent', provider_message_id: 'pm-a', error_code: null, error_message: null, updated_at: new Date(now).toISOString(), lease_owner: null, sent: true },
      { outbox_id: b.outbox_id, state: 'failed', provider_message_id: null, error_code: 'invalid_input', error_message: 'bad address', updated_at: new Date(now + 1).toISOString(), lease_owner: null, sent: false },
      { outbox_id: c.outbox_id, state: 'unknown', provider_message_id: null, error_code: 'timeout', error_message: 'in doubt', updated_at: new Date(now + 2).toISOString(), lease_owner: null, sent: true },
      { outbox_id: d.outbox_id, state: 'sent', provider_message_id: 'pm-d', error_code: null, error_message: null, updated_at: new Date(now + 3).toISOString(), lease_owner: null, sent: true },
    ]);
  });

  it('records a settled group in one statement per outcome, each row with its own provider id and values (finishMany)', async () => {
    await seed(db, 7);
    const rows = (await repo.claim('me', 10, [], 60_000)).sort((x, y) => x.outbox_id - y.outbox_id);
    expect(await repo.markSendingMany(db, rows, 'me', 60_000)).toHaveLength(7);
    const [a, b, c, d, e, f, g] = rows as [OutboxRow, OutboxRow, OutboxRow, OutboxRow, OutboxRow, OutboxRow, OutboxRow];
    // Already settled: a late answer for it changes nothing.
    await repo.finishMany([{ row: g, state: 'failed', error_code: 'invalid_input', error_message: 'peer' }]);
    const now = Date.parse('2026-12-07T11:00:00.000Z');
    const statements = vi.spyOn(db, 'executeQuery');
    await repo.finishMany(
      [
        { row: a, state: 'sent', provider_message_id: 'pm-a' },
        { row: b, state: 'failed', error_code: 'invalid_input', error_message: 'bad address' },
        { row: c, state: 'sent', provider_message_id: 'pm-c' },
        { row: d, state: 'unknown', error_code: 'timeout', error_message: 'in doubt' },
        { row: e, state: 'failed', error_code: 'invalid_input', error_message: 'another address' },
        { row: f, state: 'sent', provider_message_id: "pm-f'; drop table outbox; --" },
        { row: g, state: 'sent', provider_message_id: 'pm-late' },
      ],
      now,
      db,
    );
    // Sent (4 rows), failed twice with different messages, unknown: four statements for seven rows.
    expect(statements.mock.calls.map(([q]) => (q as CompiledQuery).sql).filter((s) => SETTLEMENT.test(s))).toHaveLength(4);
    statements.mockRestore();
    const got = await db.selectFrom('outbox').select(['outbox_id', 'state', 'provider_message_id', 'error_code', 'error_message', 'updated_at', 'sent_at', 'lease_owner', 'lease_until']).orderBy('outbox_id').execute();
    const at = new Date(now).toISOString();
    expect(got.map(({ sent_at, outbox_id, updated_at, ...r }) => ({ ...r, sent: sent_at !== null, at: updated_at === at }))).toEqual([
      { state: 'sent', provider_message_id: 'pm-a', error_code: null, error_message: null, lease_owner: null, lease_until: null, sent: true, at: true },
      { state: 'failed', provider_message_id: null, error_code: 'invalid_input', error_message: 'bad address', lease_owner: null, lease_until: null, sent: false, at: true },
      { state: 'sent', provider_message_id: 'pm-c', error_code: null, error_message: null, lease_owner: null, lease_until: null, sent: true, at: true },
      { state: 'unknown', provider_message_id: null, error_code: 'timeout', error_message: 'in doubt', lease_owner: null, lease_until: null, sent: true, at: true },
      { state: 'failed', provider_message_id: null, error_code: 'invalid_input', error_message: 'another address', lease_owner: null, lease_until: null, sent: false, at: true },
      { state: 'sent', provider_message_id: "pm-f'; drop table outbox; --", error_code: null, error_message: null, lease_owner: null, lease_until: null, sent: true, at: true },
      { state: 'failed', provider_message_id: null, error_code: 'invalid_input', error_message: 'peer', lease_owner: null, lease_until: null, sent: false, at: false },
    ]);
  });

  it('a settled group larger than one statement takes (64 rows) is written whole', async () => {
    await seed(db, 150);
    const rows = await repo.claim('me', 200, [], 60_000);
    await repo.markSendingMany(db, rows, 'me', 60_000);
    await repo.finishMany(rows.map((row) => ({ row, state: 'sent' as const, provider_message_id: `pm-${row.outbox_id}` })));
    const got = await db.selectFrom('outbox').select(['outbox_id', 'state', 'provider_message_id']).execute();
    expect(got).toHaveLength(150);
    expect(got.every((r) => r.state === 'sent' && r.provider_message_id === `pm-${r.outbox_id}`)).toBe(true);
  });

  it('a prepared statement names every value it is given, and keeps its constants', async () => {
    const careless = prepared(['id', 'unused'] as const, (db, p) => db.selectFrom('outbox').select('state').where('outbox_id', '=', p.id as unknown as number));
    expect(() => careless(db, { id: 1, unused: 2 })).toThrow(/unused not used/);
    await seed(db, 2);
    const byState = prepared(['id'] as const, (db, p) => db.selectFrom('outbox').select('idempotency_key').where('outbox_id', '=', p.id as unknown as number).where('state', 'in', ['queued', 'sending']));
    const ids = (await db.selectFrom('outbox').select('outbox_id').orderBy('outbox_id').execute()).map((r) => r.outbox_id);
    expect((await byState(db, { id: ids[1] })).rows).toEqual([{ idempotency_key: 'cmp_test:c1:email' }]);
    expect((await byState(db, { id: ids[0] })).rows).toEqual([{ idempotency_key: 'cmp_test:c0:email' }]);
  });

  it('a prepared statement with a list is compiled once per length, and each run binds its own items', async () => {
    await seed(db, 70);
    const ids = (await db.selectFrom('outbox').select('outbox_id').orderBy('outbox_id').execute()).map((r) => r.outbox_id);
    let builds = 0;
    const keysOf = prepared(
      ['state'] as const,
      (db, p) => {
        builds += 1;
        return db.selectFrom('outbox').select('idempotency_key').where('outbox_id', 'in', p.ids as unknown as number[]).where('state', '=', p.state).orderBy('outbox_id');
      },
      ['ids'] as const,
    );
    const keys = async (pick: number[]) => (await keysOf(db, { state: 'queued', ids: pick.map((i) => ids[i]) })).rows.map((r) => (r as { idempotency_key: string }).idempotency_key);
    expect(await keys([0, 2])).toEqual(['cmp_test:c0:email', 'cmp_test:c2:email']);
    expect(await keys([5, 1])).toEqual(['cmp_test:c1:email', 'cmp_test:c5:email']);
    expect(await keys([3])).toEqual(['cmp_test:c3:email']);
    expect(builds).toBe(2); // lengths 2 and 1
    expect((await keysOf(db, { state: 'sent', ids: [ids[0]] })).rows).toEqual([]);
    // Past MAX_PREPARED_LIST: built afresh each time, never kept.
    const many = Array.from({ length: MAX_PREPARED_LIST + 1 }, (_, i) => i);
    expect(await keys(many)).toHaveLength(MAX_PREPARED_LIST + 1);
    expect(await keys(many)).toHaveLength(MAX_PREPARED_LIST + 1);
    expect(builds).toBe(4);
    const careless = prepared([] as const, (db) => db.selectFrom('outbox').select('state'), ['ids'] as const);
    expect(() => careless(db, { ids: [1] })).toThrow(/ids not used/);
  });

  it('delivers every row exactly once at bounded concurrency', async () => {
    await seed(db, 60);
    dispatcher = make();
    dispatcher.start();
    await until(async () => (await states()).sent === 60);
    expect(new Set(port.sent).size).toBe(60);
    expect(port.sent).toHaveLength(60);
    expect(port.maxConcurrent).toBeLessThanOrEqual(4);
    const rows = await db.selectFrom('outbox').selectAll().execute();
    expect(rows.every((r) => r.attempts === 1 && r.provider_message_id && r.sent_at && r.lease_owner === null)).toBe(true);
  });

  it('starts with 32 deliveries in flight, and gives back those a pacing budget leaves waiting (they would only hold claimed rows)', async () => {
    await seed(db, 300);
    port.budgetGapMs = 50; // 20 a second: 400 ms of that pace needs 8 in flight
    dispatcher = make({ concurrency: 64, channelGate: () => ({ blocked: [], paced: true }) });
    expect(dispatcher.concurrency).toBe(32);
    dispatcher.start();
    await until(() => dispatcher!.concurrency, (c) => c <= 12, { timeoutMs: 15_000, message: 'deliveries in flight down to about what the pace needs' });
    // Never below what the pace needs: the budget, not the dispatcher, stays the limit.
    const sent = port.sent.length;
    await until(() => port.sent.length >= sent + 40, { message: 'two more seconds of sending' });
    expect(dispatcher.concurrency).toBeGreaterThanOrEqual(8);
    expect(dispatcher.concurrency).toBeLessThanOrEqual(12);
  });

  it('after a quiet spell starts afresh at 32, and judges the pace from when sending began: a paced campaign keeps the deliveries its pace needs', async () => {
    dispatcher = make({ concurrency: 64, channelGate: () => ({ blocked: [], paced: true }) });
    dispatcher.start();
    await morePasses(60); // a second and more with nothing to send
    port.budgetGapMs = 5; // 200 a second: 400 ms of that pace needs 80 in flight, more than the 32 it starts with
    await seed(db, 400);
    dispatcher.wake();
    let fewest = dispatcher.concurrency;
    await until(
      () => {
        fewest = Math.min(fewest, dispatcher!.concurrency);
        return port.sent.length;
      },
      (n) => n >= 200,
      { message: 'a second of sending' },
    );
    // Shrunk while idle, the run began with 9; measured over the idle second too, the pace looked like a
    // fifth of itself and took them to 25.
    expect(fewest).toBe(32);
  });

  it('two dispatchers on the same outbox never deliver a row twice', async () => {
    await seed(db, 80);
    const a = make();
    const b = make();
    a.start();
    b.start();
    try {
      await until(async () => (await states()).sent === 80);
    } finally {
      await a.stop();
      await b.stop();
    }
    expect(port.sent).toHaveLength(80);
    expect(new Set(port.sent).size).toBe(80);
  });

  it('marks a send with unknown outcome as unknown and never resends it', async () => {
    await seed(db, 3);
    port.failWith = (row) =>
      row.contact_id === 'c1' ? new ToolError('timeout', 'no answer', { outcomeUnknown: true, retryable: true }) : undefined;
    dispatcher = make();
    dispatcher.start();
    await until(async () => (await states()).sent === 2 && (await states()).unknown === 1);
    await morePasses();
    const row = await db.selectFrom('outbox').selectAll().where('contact_id', '=', 'c1').executeTakeFirstOrThrow();
    expect(row).toMatchObject({ state: 'unknown', attempts: 1, error_code: 'timeout' });
    expect(port.settledRows).toContainEqual({ key: row.idempotency_key, state: 'unknown' });
  });

  it('retries a provably unsent delivery (429) and fails a definitive rejection without retrying', async () => {
    await seed(db, 2);
    port.failWith = (row, attempt) => {
      if (row.contact_id === 'c0' && attempt < 3) return new ToolError('rate_limited', 'slow down', { retryAfterMs: 20 });
      if (row.contact_id === 'c1') return new ToolError('invalid_input', 'bad address');
      return undefined;
    };
    dispatcher = make();
    dispatcher.start();
    await until(async () => (await states()).sent === 1 && (await states()).failed === 1);
    const c0 = await db.selectFrom('outbox').selectAll().where('contact_id', '=', 'c0').executeTakeFirstOrThrow();
    const c1 = await db.selectFrom('outbox').selectAll().where('contact_id', '=', 'c1').executeTakeFirstOrThrow();
    expect(c0).toMatchObject({ state: 'sent', attempts: 3 });
    expect(c1).toMatchObject({ state: 'failed', attempts: 1, error_code: 'invalid_input' });
  });

  it('leaves rows of a blocked channel (open circuit) waiting instead of failing them', async () => {
    await seed(db, 5);
    let blocked = true;
    dispatcher = make({ channelGate: () => ({ blocked: blocked ? ['email'] : [] }) });
    dispatcher.start();
    await morePasses();
    expect(await states()).toEqual({ queued: 5 });
    blocked = false;
    dispatcher.wake();
    await until(async () => (await states()).sent === 5);
  });

  it('wakes itself when a blocked channel\'s circuit lets a trial through, with no poll and nothing else to wake it', async () => {
    await seed(db, 3);
    const reopensAt = Date.now() + 300;
    const blocked = () => Date.now() < reopensAt;
    // Nothing is claimable while the channel is blocked (rows of blocked channels are not due work), so
    // neither the poll (a minute) nor the lease renewal (40 s) nor a due row wakes the dispatcher: only
    // the circuit's reopening time can.
    vi.spyOn(repo, 'nextClaimableAt').mockImplementation(async () => undefined);
    dispatcher = make({ pollMs: 60_000, leaseMs: 120_000, channelGate: () => (blocked() ? { blocked: ['email'], reopensInMs: Math.max(0, reopensAt - Date.now()) } : { blocked: [] }) });
    dispatcher.start();
    await until(async () => (await states()).sent === 3, { timeoutMs: 20_000, message: 'sent after the circuit reopened (the fallback would be 40 s)' });
    expect(Math.min(...port.sentAt)).toBeGreaterThanOrEqual(reopensAt);
  });

  it('does not send rows before their scheduled time', async () => {
    const notBefore = Date.now() + 400;
    await seed(db, 3, 'cmp_later', new Date(notBefore).toISOString());
    dispatcher = make();
    dispatcher.start();
    await until(async () => (await states()).sent === 3);
    expect(Math.min(...port.sentAt)).toBeGreaterThanOrEqual(notBefore);
  });

  it('cancelling stops queued rows, including ones already claimed but not yet sending', async () => {
    await seed(db, 10);
    const claimed = await repo.claim('someone-else', 10, [], 60_000);
    expect(claimed).toHaveLength(10);
    expect(await repo.cancelQueued('campaign', 'cmp_test')).toBe(10);
    for (const row of claimed) expect(await repo.markSending(db, row, 'someone-else', 60_000)).toBe(false);
    expect(await states()).toEqual({ cancelled: 10 });
  });

  it('recovers after a crash: claimed rows are retried, rows caught mid-send become unknown', async () => {
    // A previous process claimed all four a while ago and had started sending two; its leases ran out.
    const then = Date.now() - 60_000;
    await seed(db, 4, 'cmp_test', new Date(then).toISOString());
    const claimed = await repo.claim('dead-process', 4, [], 50, then);
    await repo.markSending(db, claimed[0]!, 'dead-process', 50, then);
    await repo.markSending(db, claimed[1]!, 'dead-process', 50, then);
    dispatcher = make();
    dispatcher.start();
    await until(async () => {
      const s = await states();
      return s.sent === 2 && s.unknown === 2;
    });
    expect(port.sent.sort()).toEqual([claimed[2]!.idempotency_key, claimed[3]!.idempotency_key].sort());
  });

  it('checks consent at the moment of sending: a contact unsubscribed after queueing is skipped, counted by reason', async () => {
    await seed(db, 3);
    await db.updateTable('contacts').set({ unsubscribed: 1, unsubscribed_at: new Date().toISOString(), unsubscribe_source: 'sendgrid' }).where('contact_id', '=', 'c1').execute();
    await db.updateTable('contacts').set({ email_status: 'bounced', email_status_at: new Date().toISOString() }).where('contact_id', '=', 'c2').execute();
    dispatcher = make();
    dispatcher.start();
    await until(async () => (await states()).sent === 1 && (await states()).skipped === 2);
    expect(port.sent).toEqual(['cmp_test:c0:email']);
    const reasons = await repo.reasons('campaign', 'cmp_test', ['skipped']);
    expect(Object.fromEntries(reasons.map((r) => [r.code, r.n]))).toEqual({ unsubscribed: 1, email_suppressed: 1 });
    expect(port.settledRows.filter((r) => r.state === 'skipped')).toHaveLength(2);
  });

  it('rows that need a provider lookup are checked a claim at a time: an unsubscribed contact is skipped before any lookup, with one read for the claim', async () => {
    await seed(db, 4, 'cmp_inapp', undefined, { channel: 'intercom_inapp' });
    await db.updateTable('contacts').set({ unsubscribed: 1 }).where('contact_id', '=', 'c2').execute();
    const admission = new SendAdmission(repo, new DailySendLimit(0), { perDay: 1, perWeek: 3, kinds: ['automation'] });
    const checkMany = vi.spyOn(admission, 'checkMany');
    const check = vi.spyOn(admission, 'check');
    dispatcher = make({ admission });
    dispatcher.start();
    await until(async () => {
      const s = await states();
      return s.sent === 3 && s.skipped === 1;
    }, { message: 'three sent, the unsubscribed one skipped' });
    expect(port.prefetched.sort()).toEqual(['cmp_inapp:c0:intercom_inapp', 'cmp_inapp:c1:intercom_inapp', 'cmp_inapp:c3:intercom_inapp']);
    expect(checkMany).toHaveBeenCalledTimes(1);
    expect(checkMany.mock.calls[0]![0]).toHaveLength(4);
    expect(check).not.toHaveBeenCalled();
    expect(port.sent).not.toContain('cmp_inapp:c2:intercom_inapp');
  });

  it('an email suppression skips email but not in-app messages', async () => {
    await seed(db, 1, 'cmp_inapp', undefined, { channel: 'intercom_inapp' });
    await db.updateTable('contacts').set({ email_status: 'unsubscribed' }).where('contact_id', '=', 'c0').execute();
    dispatcher = make();
    dispatcher.start();
    await until(async () => (await states()).sent === 1);
  });

  it('the daily limit defers what is over it to the next UTC day, as queued with its reason (nothing lost)', async () => {
    await seed(db, 5);
    dispatcher = make({}, 3);
    dispatcher.start();
    await until(async () => (await states()).sent === 3 && (await db.selectFrom('outbox').select('error_code').where('error_code', '=', 'daily_limit').execute()).length === 2);
    expect(await states()).toEqual({ sent: 3, queued: 2 });
    const waiting = await db.selectFrom('outbox').select('not_before').where('state', '=', 'queued').execute();
    const tomorrow = new Date();
    tomorrow.setUTCHours(24, 0, 0, 0);
    for (const w of waiting) expect(Date.parse(w.not_before)).toBe(tomorrow.getTime());
  });

  it('an automation message outside its send window waits for the window to open; over the frequency cap it waits or is skipped', async () => {
    const now = new Date();
    const closedToday = (now.getUTCDay() + 2) % 7 || 7; // a weekday that is not today (ISO numbering)
    await seed(db, 1, 'wf_window', undefined, { kind: 'automation', policy: { send_window: { days: [closedToday], start_hour: 9, end_hour: 17, timezone: 'UTC' } } });
    await seed(db, 2, 'wf_cap_wait', undefined, { kind: 'automation', policy: { frequency_cap: true, cap_action: 'wait' } });
    await seed(db, 2, 'wf_cap_skip', undefined, { kind: 'automation', policy: { frequency_cap: true, cap_action: 'skip' } });
    dispatcher = make();
    dispatcher.start();
    // c0 and c1 each get one automated message (1 a day); their second one waits (wait) or is skipped (skip).
    await until(async () => {
      const rows = await db.selectFrom('outbox').select(['source_id', 'state', 'error_code']).execute();
      return rows.filter((r) => r.state === 'sent').length === 2 && rows.filter((r) => r.error_code === 'frequency_cap').length === 2 && rows.some((r) => r.error_code === 'send_window');
    });
    const rows = await db.selectFrom('outbox').selectAll().execute();
    const window = rows.find((r) => r.source_id === 'wf_window')!;
    expect(window).toMatchObject({ state: 'queued', error_code: 'send_window' });
    const opens = new Date(window.not_before);
    expect(opens.getUTCHours()).toBe(9);
    expect(opens.getUTCDay() || 7).toBe(closedToday);
    // Whichever message of a contact went first, the other one obeys its own cap_action.
    const capped = rows.filter((r) => r.error_code === 'frequency_cap');
    expect(capped).toHaveLength(2);
    for (const r of capped) expect(r.state).toBe(JSON.parse(r.policy!).cap_action === 'skip' ? 'skipped' : 'queued');
    expect(new Set(rows.filter((r) => r.state === 'sent').map((r) => r.contact_id))).toEqual(new Set(['c0', 'c1']));
  });

  it('batches rows that may share a request; a row held back at the last moment stops the request, the rest go after it without it', async () => {
    await seed(db, 30);
    port.batching = true;
    await db.updateTable('contacts').set({ unsubscribed: 1 }).where('contact_id', '=', 'c3').execute();
    let raced = false;
    port.beforeBatchSend = async () => {
      if (raced) return;
      raced = true; // an unsubscribe committed between the cheap checks and the request
      await db.updateTable('contacts').set({ unsubscribed: 1 }).where('contact_id', '=', 'c7').execute();
    };
    dispatcher = make();
    dispatcher.start();
    await until(async () => (await states()).sent === 28 && (await states()).skipped === 2);
    // The first request never left (it still had c7); what went carried everyone else, in batches.
    expect(port.requests.length).toBeLessThanOrEqual(2);
    expect(port.requests.flat().sort()).toEqual(port.sent.slice().sort());
    expect(port.sent).not.toContain('cmp_test:c3:email');
    expect(port.sent).not.toContain('cmp_test:c7:email');
    expect(new Set(port.sent).size).toBe(port.sent.length);
  });

  it('a settlement that cannot be written for a while is retried until it is: nothing stays sending, nothing is resent', async () => {
    await seed(db, 3);
    // Six failed writes in a row (today's writer gave up after three, leaving the rows `sending` for good).
    faults.fail(SETTLEMENT, 6);
    dispatcher = make();
    dispatcher.start();
    await until(async () => (await states()).sent === 3, { timeoutMs: 15_000, message: 'every row recorded sent' });
    expect(faults.hits().length).toBeGreaterThanOrEqual(6);
    expect(port.sent.slice().sort()).toEqual(['cmp_test:c0:email', 'cmp_test:c1:email', 'cmp_test:c2:email']);
  });

  it('a settlement that cannot be written at all: its rows become unknown after their lease (not renewed), never resent', async () => {
    await seed(db, 3);
    settleOpts = { maxBatch: 200, delayMs: 5, retryForMs: 300 };
    faults.fail(SETTLEMENT);
    dispatcher = make({ leaseMs: 600 });
    dispatcher.start();
    await until(async () => (await states()).unknown === 3, { timeoutMs: 15_000, message: 'the rows whose outcome was lost marked unknown' });
    faults.clear();
    await morePasses();
    expect(await states()).toEqual({ unknown: 3 });
    expect(port.sent).toHaveLength(3);
    expect(new Set(port.sent).size).toBe(3);
  });

  it('counts the rows of one contact admitted together against the frequency cap (a cap of 1 a day sends 1, not 2 in one request)', async () => {
    const policy: MessagePolicy = { frequency_cap: true, cap_action: 'skip' };
    await seed(db, 1, 'wf_burst', undefined, { kind: 'automation', policy });
    await seed(db, 1, 'wf_burst', undefined, { kind: 'automation', channel: 'intercom_inapp', policy });
    port.batching = true;
    dispatcher = make();
    dispatcher.start();
    await until(async () => {
      const s = await states();
      return (s.sent ?? 0) + (s.skipped ?? 0) === 2;
    });
    expect(await states()).toEqual({ sent: 1, skipped: 1 });
    expect(port.sent).toHaveLength(1);
  });

  it('admissions that arrive in one turn are decided together in one transaction, each by its own rules; a failed one sends none', async () => {
    await seed(db, 8);
    const admission = new SendAdmission(repo, new DailySendLimit(5), { perDay: 1, perWeek: 3, kinds: ['automation'] });
    const rows = await repo.claim('me', 8, [], 60_000);
    expect(rows).toHaveLength(8);
    // One contact unsubscribes before the admissions: the group still decides it by its own rules.
    await db.updateTable('contacts').set({ unsubscribed: 1 }).where('contact_id', '=', rows[7]!.contact_id).execute();
    const transactions = vi.spyOn(db, 'transaction');
    // Each reaches admission a few promise steps after the last (as requests a pacer released together do).
    const decisions = await Promise.all(rows.map(async (r, i) => {
      for (let step = 0; step < i * 3; step++) await Promise.resolve();
      return admission.admit(r, 'me', 60_000);
    }));
    // All eight arrived in one turn of the event loop: one transaction decides them.
    expect(transactions).toHaveBeenCalledTimes(1);
    transactions.mockRestore();
    expect(decisions.map((d) => d.kind)).toEqual(['send', 'send', 'send', 'send', 'send', 'defer', 'defer', 'skip']);
    expect((await states()).sending).toBe(5);

    // A group whose transaction fails: every request in it is refused, and no row is marked sending.
    await db.deleteFrom('send_counters').execute();
    await seed(db, 2, 'cmp_two');
    const more = await repo.claim('me', 8, [], 60_000);
    expect(more).toHaveLength(2);
    const sendingBefore = (await states()).sending;
    faults.fail(/^update "outbox" set "state" = \S+, "attempts" = attempts \+ 1/, 2);
    const failed = await Promise.allSettled(more.slice(0, 2).map((r) => admission.admit(r, 'me', 60_000)));
    expect(failed.map((f) => f.status)).toEqual(['rejected', 'rejected']);
    expect((await states()).sending).toBe(sendingBefore);
  });

  it('settled rows ride in the next admission\'s transaction; if their part fails it is rolled back alone, and they are written on their own', async () => {
    await seed(db, 6);
    const admission = new SendAdmission(repo, new DailySendLimit(0), { perDay: 1, perWeek: 3, kinds: ['automation'] });
    const settlements = new SettlementWriter(repo, store.timeline, port, log, { maxBatch: 200, delayMs: 60_000 });
    admission.riders = () => settlements.board();
    const rows = (await repo.claim('me', 6, [], 60_000)).sort((a, b) => a.outbox_id - b.outbox_id);
    const sentState = async (ids: number[]) =>
      (await db.selectFrom('outbox').select(['outbox_id', 'state']).where('outbox_id', 'in', ids).orderBy('outbox_id').execute()).map((r) => r.state);
    const admitAndSettle = async (row: OutboxRow) => {
      expect((await admission.admit(row, 'me', 60_000)).kind).toBe('send');
      settlements.settle(row, { state: 'sent', receipt: { provider_message_id: `m-${row.outbox_id}` } });
    };
    await Promise.all([rows[0]!, rows[1]!].map((r) => admission.admit(r, 'me', 60_000)));
    for (const row of rows.slice(0, 2)) settlements.settle(row, { state: 'sent', receipt: { provider_message_id: `m-${row.outbox_id}` } });
    expect(await sentState([rows[0]!.outbox_id, rows[1]!.outbox_id])).toEqual(['sending', 'sending']);

    // The next admission carries both settlements: one transaction, no write of their own (its timer is a minute away).
    const transactions = vi.spyOn(db, 'transaction');
    await admitAndSettle(rows[2]!);
    expect(transactions).toHaveBeenCalledTimes(1);
    expect(await sentState([rows[0]!.outbox_id, rows[1]!.outbox_id])).toEqual(['sent', 'sent']);
    expect(port.settledRows.map((r) => r.key)).toEqual(['cmp_test:c0:email', 'cmp_test:c1:email']);
    const timeline = await db.selectFrom('timeline').select('contact_id').execute();
    expect(timeline.map((t) => t.contact_id).sort()).toEqual(['c0', 'c1']);

    // Their part fails midway (row 2's state was written, its timeline entry cannot be): that part is rolled
    // back alone; the admission still commits (row 3 is sending), and row 2 waits to be written on its own.
    faults.fail(/^insert into "timeline"/, 1);
    await admitAndSettle(rows[3]!);
    expect(await sentState([rows[2]!.outbox_id, rows[3]!.outbox_id])).toEqual(['sending', 'sending']);
    expect(port.settledRows).toHaveLength(2);
    await settlements.flush();
    expect(await sentState([rows[2]!.outbox_id, rows[3]!.outbox_id])).toEqual(['sent', 'sent']);

    // The admission itself fails: nothing of the transaction stays, and the riders are written on their own.
    await admitAndSettle(rows[4]!);
    // Its commit fails after the riders' part was written.
    faults.fail(/^commit/i, 1);
    await expect(admission.admit(rows[5]!, 'me', 60_000)).rejects.toThrow();
    expect(await sentState([rows[4]!.outbox_id, rows[5]!.outbox_id])).toEqual(['sending', 'queued']);
    expect(port.settledRows).toHaveLength(4);
    await settlements.flush();
    expect(await sentState([rows[4]!.outbox_id])).toEqual(['sent']);
    expect(port.settledRows.map((r) => r.key)).toEqual(['cmp_test:c0:email', 'cmp_test:c1:email', 'cmp_test:c2:email', 'cmp_test:c3:email', 'cmp_test:c4:email']);
    transactions.mockRestore();
  });

  it('writes that follow settled rows (a learned Intercom id) fail alone: the rows still settle, the failed part leaves nothing', async () => {
    await seed(db, 2);
    const rows = await repo.claim('me', 2, [], 60_000);
    const admission = new SendAdmission(repo, new DailySendLimit(0), { perDay: 1, perWeek: 3, kinds: ['automation'] });
    await Promise.all(rows.map((r) => admission.admit(r, 'me', 60_000)));
    const failing = Object.assign(Object.create(port) as FakePort, {
      async settledWrites(trx: Kysely<Schema>) {
        await trx.updateTable('contacts').set({ intercom_contact_id: 'half-written' }).execute();
        throw new Error('the link could not be written');
      },
    });
    const settlements = new SettlementWriter(repo, store.timeline, failing, log);
    for (const row of rows) settlements.settle(row, { state: 'sent', receipt: { provider_message_id: `m-${row.outbox_id}` } });
    await settlements.flush();
    expect(await states()).toEqual({ sent: 2 });
    expect(await db.selectFrom('contacts').select('contact_id').where('intercom_contact_id', 'is not', null).execute()).toEqual([]);
  });

  it('an Intercom id is linked to the contacts its email or external user id names, replacing another id or role, leaving one that has both', async () => {
    await seed(db, 5);
    await db.updateTable('contacts').set({ external_user_id: 'u-1' }).where('contact_id', '=', 'c1').execute();
    await db.updateTable('contacts').set({ intercom_contact_id: 'ic-old', intercom_role: 'user' }).where('contact_id', '=', 'c2').execute();
    await db.updateTable('contacts').set({ intercom_contact_id: 'ic-3', intercom_role: 'user' }).where('contact_id', '=', 'c3').execute();
    await linkIntercomContactsIn(db, [
      { email: ' P0@Acme.test ', id: 'ic-0', role: 'user' },
      { external_user_id: 'u-1', id: 'ic-1', role: 'lead' },
      { email: 'p2@acme.test', id: 'ic-2', role: 'user' },
      { email: 'p3@acme.test', id: 'ic-3', role: 'lead' },
      // Either reference names the contact; without a role, the role is left as it is.
      { email: 'p4@acme.test', external_user_id: 'u-nobody', id: 'ic-4' },
    ], '2026-01-01T00:00:00.000Z');
    // The same link again changes nothing (its time stays).
    await linkIntercomContactsIn(db, [{ email: 'p0@acme.test', id: 'ic-0', role: 'user' }], '2026-02-02T00:00:00.000Z');
    const rows = await db.selectFrom('contacts').select(['contact_id', 'intercom_contact_id', 'intercom_role', 'updated_at']).orderBy('contact_id').execute();
    expect(rows).toEqual([
      { contact_id: 'c0', intercom_contact_id: 'ic-0', intercom_role: 'user', updated_at: '2026-01-01T00:00:00.000Z' },
      { contact_id: 'c1', intercom_contact_id: 'ic-1', intercom_role: 'lead', updated_at: '2026-01-01T00:00:00.000Z' },
      { contact_id: 'c2', intercom_contact_id: 'ic-2', intercom_role: 'user', updated_at: '2026-01-01T00:00:00.000Z' },
      { contact_id: 'c3', intercom_contact_id: 'ic-3', intercom_role: 'lead', updated_at: '2026-01-01T00:00:00.000Z' },
      { contact_id: 'c4', intercom_contact_id: 'ic-4', intercom_role: null, updated_at: '2026-01-01T00:00:00.000Z' },
    ]);
  });

  it('once a claim finds the queue dry, finished deliveries do not each claim again; news (wake) is claimed at once', async () => {
    await seed(db, 20);
    port.delayMs = 100;
    dispatcher = make({ concurrency: 2, pollMs: 60_000 });
    const claims: Array<{ sentBefore: number; keys: string[] }> = [];
    const claim = repo.claim.bind(repo);
    vi.spyOn(repo, 'claim').mockImplementation(async (...args) => {
      const sentBefore = port.sent.length;
      const rows = await claim(...args);
      claims.push({ sentBefore, keys: rows.map((r) => r.idempotency_key) });
      return rows;
    });
    dispatcher.start();
    await until(() => port.sent.length >= 4, { message: 'sending under way' });
    // The first claim took all 20 (it asked for more): the queue is dry while they go, two at a time.
    expect(claims[0]!.keys).toHaveLength(20);
    await seed(db, 30, 'cmp_news');
    dispatcher.wake();
    await until(() => claims.find((c) => c.keys.some((k) => k.startsWith('cmp_news'))), { message: 'the new rows claimed' });
    // Claimed on the news, while the first rows were still going out: not when the dispatcher ran out of work.
    const news = claims.find((c) => c.keys.some((k) => k.startsWith('cmp_news')))!;
    expect(news.sentBefore).toBeLessThan(20);
    await until(async () => (await states()).sent === 50);
    // 50 deliveries finished, each followed by a pass. While they went, the claims were the first, the
    // news and its top-ups (four here); without the check, nearly one per finished delivery (24).
    expect(claims.filter((c) => c.sentBefore < 50).length).toBeLessThanOrEqual(8);
  });

  it('sleeps while only an open circuit holds back the work: few claim passes until its trial time, then delivers', async () => {
    await seed(db, 5);
    const reopensAt = Date.now() + 1500;
    dispatcher = make({
      pollMs: 1000,
      channelGate: () => {
        const ms = reopensAt - Date.now();
        return ms > 0 ? { blocked: ['email'], reopensInMs: ms } : { blocked: [] };
      },
    });
    const claimedAt: number[] = [];
    const claim = repo.claim.bind(repo);
    vi.spyOn(repo, 'claim').mockImplementation((...args) => {
      claimedAt.push(Date.now());
      return claim(...args);
    });
    dispatcher.start();
    await until(async () => (await states()).sent === 5);
    expect(Math.min(...port.sentAt)).toBeGreaterThanOrEqual(reopensAt);
    // Asleep until the trial time (a pass each lease third, to renew): not a pass every 10 ms.
    const passesBeforeTrial = claimedAt.filter((t) => t < reopensAt).length;
    expect(passesBeforeTrial).toBeGreaterThan(0);
    expect(passesBeforeTrial).toBeLessThanOrEqual(6);
  });
});

describe('the outbox on SQLite: query plans', () => {
  it('marking rows sending reads them by id and holder, not every queued row', async () => {
    const target = await createTarget('sqlite');
    const store = await openStore(loadConfig(testEnv(target.env) as NodeJS.ProcessEnv), log);
    const db = store.db;
    const repo = new OutboxRepository(db, 'sqlite');
    try {
      // Without statistics of a full outbox (none yet, or those `pragma optimize` took after an import, while
      // the outbox was empty), SQLite chose the due index (state) for this update and read every queued row:
      // 1.4 ms a group at 20,000 queued, a third of the SQL time at 1,000/s. The holder's index is cheaper.
      await sql`analyze`.execute(db);
      await seed(db, 3000);
      const rows = await repo.claim('holder', 17, [], 60_000);
      const q = markSendingStatement.compiledFor(db, { ids: rows.map((r) => r.outbox_id), owner: 'holder', at: new Date().toISOString(), until: new Date().toISOString() });
      const plan = (await db.executeQuery(CompiledQuery.raw(`explain query plan ${q.sql}`, [...q.parameters]))).rows.map((r) => (r as { detail: string }).detail);
      expect(plan.join(' | ')).not.toMatch(/outbox_due_idx|SCAN outbox/);
      expect(plan.join(' | ')).toMatch(/outbox_lease_owner_idx|rowid=/);
      // And the statement still marks exactly the rows held.
      expect(await repo.markSendingMany(db, rows, 'holder', 60_000)).toHaveLength(17);
    } finally {
      await store.close();
      await target.cleanup();
    }
  });

  it('recovering run-out leases reads the leased rows, not every queued row, with or without statistics', async () => {
    const target = await createTarget('sqlite');
    const store = await openStore(loadConfig(testEnv(target.env) as NodeJS.ProcessEnv), log);
    const db = store.db;
    const repo = new OutboxRepository(db, 'sqlite');
    const planOf = async (q: CompiledQuery) => (await db.executeQuery(CompiledQuery.raw(`explain query plan ${q.sql}`, [...q.parameters]))).rows.map((r) => (r as { detail: string }).detail).join(' | ');
    try {
      await seed(db, 3000);
      const sending = await repo.claim('gone', 5, [], 1);
      await repo.markSendingMany(db, sending, 'gone', 1);
      const queued = await repo.claim('gone', 12, [], 1);
      const now = new Date(Date.now() + 60_000).toISOString();
      // None (as a server has while its first campaign runs), then those of an outbox all but queued.
      for (const withStatistics of [false, true]) {
        if (withStatistics) await sql`analyze`.execute(db);
        const queuedPlan = await planOf(expiredQueuedStatement.compiledFor(db, { now }));
        expect(queuedPlan).not.toMatch(/outbox_due_idx|SCAN outbox/);
        expect(queuedPlan).toMatch(/outbox_lease_owner_idx/);
        // Rows in `sending` are the few in flight: by the holders' index or by state, never the table.
        expect(await planOf(expiredSendingStatement.compiledFor(db, { now }))).not.toMatch(/SCAN outbox/);
      }
      // And the holder's rows are recovered: the sending ones in doubt, the queued ones claimable again.
      const { unknown } = await repo.recoverExpired(Date.now() + 60_000);
      expect(unknown.map((r) => r.outbox_id).sort()).toEqual(sending.map((r) => r.outbox_id).sort());
      const left = await db.selectFrom('outbox').select(['outbox_id']).where('lease_owner', 'is not', null).execute();
      expect(left).toEqual([]);
      expect(queued).toHaveLength(12);
    } finally {
      await store.close();
      await target.cleanup();
    }
  });
});
