import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { availableDialects, createTarget, type DatabaseTarget } from '../helpers/databases.js';
import { dbFaults } from '../helpers/db-faults.js';
import { startInMemory, standInEnv, testEnv, type InMemoryHarness } from '../helpers/mcp.js';
import { until } from '../helpers/until.js';
import { startSendGridStandIn, type SendGridStandIn } from '../stand-ins/sendgrid.js';

/**
 * Exactly once when the database blinks (issue 17): a direct send whose outcome cannot be stored is
 * never sent again, and never hands back its daily place.
 */

const SG_KEY = 'SG.onceonceonce_abcdefghij.klmnopqrstuvwxyz0123';
const dialects = await availableDialects();

describe.each(dialects)('a keyed send when the database blinks (%s)', (dialect) => {
  const faults = dbFaults();
  let target: DatabaseTarget;
  let sg: SendGridStandIn;
  const open: InMemoryHarness[] = [];
  const start = async () => {
    const h = await startInMemory(
      testEnv({ ...standInEnv({ sendgrid: { url: sg.url, apiKey: SG_KEY } }), ...target.env, CS_MCP_APPROVAL: 'token', CS_MCP_DAILY_SEND_LIMIT: '100' }),
    );
    open.push(h);
    return h;
  };
  const sendsTo = (email: string) => sg.delivered.filter((d) => d.to === email).length;

  beforeAll(async () => {
    await faults.installInProcess();
    target = await createTarget(dialect);
    sg = await startSendGridStandIn({ apiKey: SG_KEY });
  });
  afterEach(async () => {
    faults.clear();
    while (open.length) await open.pop()!.close();
  });
  afterAll(async () => {
    await sg.stop();
    await target.cleanup();
    faults.cleanup();
  });

  it('a brief failure to store the result is retried: the call succeeds, and a retry with the key is replayed, not resent', async () => {
    const h = await start();
    const args = { to: 'blip@acme.test', subject: 'Renewal', text: 'Hi', idempotency_key: `blip-${dialect}` };
    faults.fail(/update "idempotency_records"/, 2);
    const first = await h.call('sendgrid_send_email', args);
    expect(faults.hits().length).toBeGreaterThanOrEqual(1);
    expect(first.structuredContent).toMatchObject({ success: true, accepted: 1 });
    const again = await h.call('sendgrid_send_email', args);
    expect(again.structuredContent).toMatchObject({ success: true, replayed: true, message_id: first.structuredContent.message_id });
    expect(sendsTo('blip@acme.test')).toBe(1);
    expect(await h.services.dailyLimit.used(h.services.store.db)).toBe(1);
  });

  it('a result that cannot be stored at all: "in doubt, not resent" now and on every retry (here and on another instance); the daily place is kept', async () => {
    const h = await start();
    // Two in-process servers on one SQLite file wait on each other's locks at start-up (busy_timeout):
    // the second instance is exercised on PostgreSQL, the shared store of several instances.
    const other = dialect === 'postgres' ? await start() : h;
    const usedBefore = await h.services.dailyLimit.used(h.services.store.db);
    const args = { to: 'down@acme.test', subject: 'Renewal', text: 'Hi', idempotency_key: `down-${dialect}` };
    faults.fail(/update "idempotency_records"|delete from "idempotency_records"/);
    const first = await h.call('sendgrid_send_email', args);
    expect(first.isError, JSON.stringify(first.structuredContent)).toBe(true);
    expect(first.structuredContent.error, JSON.stringify(first.structuredContent)).toMatchObject({ code: 'provider_error', retryable: false, outcome_unknown: true, details: { policy: 'idempotency', in_doubt: true } });
    expect(first.structuredContent.error.message).toMatch(/not (been )?sent again|not resent|will not send/i);
    expect(sendsTo('down@acme.test')).toBe(1);

    for (const server of [h, other, h]) {
      const retry = await server.call('sendgrid_send_email', args);
      expect(retry.isError).toBe(true);
      expect(retry.structuredContent.error).toMatchObject({ outcome_unknown: true, retryable: false });
    }
    expect(sendsTo('down@acme.test')).toBe(1);
    expect(await h.services.dailyLimit.used(h.services.store.db)).toBe(usedBefore + 1);
    const claim = await h.services.store.db.selectFrom('idempotency_records').select('state').where('key', '=', args.idempotency_key).executeTakeFirst();
    expect(claim).toEqual({ state: 'in_progress' }); // what any other instance sees: "may have been delivered", nothing sent

    // The database heals: the outcome kept in memory is written in the background, and from then on a
    // retry anywhere is answered with the first call's result.
    faults.clear();
    const replay = await until(
      () => other.call('sendgrid_send_email', args),
      (r) => r.structuredContent.success === true,
      { message: 'the in-doubt outcome written once the database heals' },
    );
    expect(replay.structuredContent).toMatchObject({ success: true, replayed: true, accepted: 1 });
    expect(sendsTo('down@acme.test')).toBe(1);
    expect(await h.services.dailyLimit.used(h.services.store.db)).toBe(usedBefore + 1);
  });

  it('a note whose key cannot be settled is not added twice (idempotency.once)', async () => {
    const h = await start();
    const before = h.services.idempotency;
    let runs = 0;
    faults.fail(/update "idempotency_records"|delete from "idempotency_records"/);
    const work = async () => {
      runs++;
      return { ok: true };
    };
    const first = await before.once('test_once', `once-${dialect}`, { a: 1 }, 'a test write', work).catch((e: unknown) => e);
    expect(first).toMatchObject({ code: 'provider_error', outcomeUnknown: true });
    const second = await before.once('test_once', `once-${dialect}`, { a: 1 }, 'a test write', work).catch((e: unknown) => e);
    expect(second).toMatchObject({ outcomeUnknown: true });
    expect(runs).toBe(1);
    faults.clear();
    await until(async () => before.once('test_once', `once-${dialect}`, { a: 1 }, 'a test write', work).catch(() => undefined), (r) => r?.replayed === true);
    expect(runs).toBe(1);
  });
});

describe.each(dialects)('the audit of sends when the database blinks (%s)', (dialect) => {
  const faults = dbFaults();
  let target: DatabaseTarget;
  let sg: SendGridStandIn;
  const open: InMemoryHarness[] = [];
  const start = async () => {
    const h = await startInMemory(testEnv({ ...standInEnv({ sendgrid: { url: sg.url, apiKey: SG_KEY } }), ...target.env, CS_MCP_APPROVAL: 'token' }));
    open.push(h);
    return h;
  };
  const sendsTo = (email: string) => sg.delivered.filter((d) => d.to === email).length;
  const auditOf = (h: InMemoryHarness, tool: string) =>
    h.services.store.db.selectFrom('audit_log').select(['audit_id', 'outcome', 'details']).where('tool', '=', tool).orderBy('audit_id').execute();

  beforeAll(async () => {
    await faults.installInProcess();
    target = await createTarget(dialect);
    sg = await startSendGridStandIn({ apiKey: SG_KEY });
  });
  afterEach(async () => {
    faults.clear();
    while (open.length) await open.pop()!.close();
  });
  afterAll(async () => {
    await sg.stop();
    await target.cleanup();
    faults.cleanup();
  });

  it('no audit intent, no send: the call answers a retryable error and nothing reaches the customer', async () => {
    const h = await start();
    faults.fail(/insert into "audit_log"/);
    const r = await h.call('sendgrid_send_email', { to: 'unaudited@acme.test', subject: 'Hello', text: 'Hi', idempotency_key: `unaudited-${dialect}` });
    expect(r.isError).toBe(true);
    expect(r.structuredContent.error).toMatchObject({ code: 'provider_unavailable', retryable: true, details: { policy: 'audit' } });
    expect(r.structuredContent.error.message).toMatch(/Nothing was sent/);
    expect(sendsTo('unaudited@acme.test')).toBe(0);
    // Once the audit log can be written, the same call (same key) sends, once.
    faults.clear();
    const again = await h.call('sendgrid_send_email', { to: 'unaudited@acme.test', subject: 'Hello', text: 'Hi', idempotency_key: `unaudited-${dialect}` });
    expect(again.structuredContent).toMatchObject({ success: true, accepted: 1 });
    expect(sendsTo('unaudited@acme.test')).toBe(1);
  });

  it('a send is audited before (in_progress) and after; an outcome that cannot be written is retried, shown in integrations_status, and stored when the database heals', async () => {
    const h = await start();
    faults.fail(/update "audit_log"/);
    const r = await h.call('sendgrid_send_email', { to: 'audited@acme.test', subject: 'Hello', text: 'Hi' });
    expect(r.structuredContent).toMatchObject({ success: true, accepted: 1 });
    expect(sendsTo('audited@acme.test')).toBe(1);
    const pending = await until(async () => (await h.call('integrations_status')).structuredContent.pending_writes, (p) => p?.audit >= 1, { message: 'the waiting audit outcome shown' });
    expect(pending.last_error).toMatch(/injected database fault/);
    expect((await auditOf(h, 'sendgrid_send_email')).at(-1)).toMatchObject({ outcome: 'in_progress' }); // the intent, written before the send
    faults.clear();
    await until(async () => (await auditOf(h, 'sendgrid_send_email')).at(-1)?.outcome, (o) => o === 'success', { message: 'the outcome written once the database heals' });
    const last = (await auditOf(h, 'sendgrid_send_email')).at(-1)!;
    expect(JSON.parse(last.details)).toMatchObject({ message_id: r.structuredContent.message_id, recipients: 1 });
    await until(async () => (await h.call('integrations_status')).structuredContent.pending_writes.audit, (n) => n === 0);
  });

  it('an audit entry of a write that fails to be written is retried, not just logged', async () => {
    const h = await start();
    faults.fail(/insert into "audit_log"/, 3);
    const r = await h.call('register_client', { client_id: `audited-${dialect}`, name: 'Audited Co' });
    expect(r.structuredContent.success).toBe(true);
    await until(async () => (await auditOf(h, 'register_client')).length, (n) => n === 1, { message: 'the audit entry of register_client' });
  });
});

describe('a result that fails its own output schema after the work is done', () => {
  let sg: SendGridStandIn;
  let h: InMemoryHarness;
  const data = { dir: '' };
  beforeAll(async () => {
    sg = await startSendGridStandIn({ apiKey: SG_KEY });
    const target = await createTarget('sqlite');
    data.dir = target.env.CS_MCP_DATA_DIR!;
    h = await startInMemory(testEnv({ ...standInEnv({ sendgrid: { url: sg.url, apiKey: SG_KEY } }), ...target.env, CS_MCP_APPROVAL: 'token' }));
    // A schema defect, forced: the real send happens, then the service answers a message id of the wrong type.
    const sendgrid = h.services.sendgrid;
    const real = sendgrid.sendEmail.bind(sendgrid);
    sendgrid.sendEmail = (async (...args: Parameters<typeof real>) => ({ ...(await real(...args)), message_id: 12345 as unknown as string })) as typeof real;
  });
  afterAll(async () => {
    await h.close();
    await sg.stop();
  });

  it('after a send: success with a warning (never an error the model would resend on), the defect logged; a retry with the key sends nothing', async () => {
    const args = { to: 'defect@acme.test', subject: 'Hello', text: 'Hi', idempotency_key: 'defect-1' };
    const r = await h.call('sendgrid_send_email', args);
    expect(r.isError).toBeFalsy();
    expect(r.structuredContent).toMatchObject({ success: true, accepted: 1 });
    expect(r.structuredContent.message_id).toBeUndefined();
    expect(r.structuredContent.result_warning).toMatch(/sendgrid_send_email call was sent.*message_id.*Do not repeat the call/s);
    expect(h.logs.some((l) => /does not match its declared output/.test(l) && /message_id/.test(l))).toBe(true);
    expect(sg.delivered.filter((d) => d.to === 'defect@acme.test')).toHaveLength(1);
    const again = await h.call('sendgrid_send_email', args);
    expect(again.isError).toBeFalsy();
    expect(sg.delivered.filter((d) => d.to === 'defect@acme.test')).toHaveLength(1);
  });

  it('a read tool with a defect is still an error (nothing was done, a retry is harmless)', async () => {
    const roster = h.services.store.roster;
    const real = roster.listClients.bind(roster);
    roster.listClients = (async (...a: Parameters<typeof real>) => ({ ...(await real(...a)), clients: 'not a list' })) as unknown as typeof real;
    try {
      const r = await h.call('list_clients', {});
      expect(r.isError).toBe(true);
      expect(r.structuredContent.error).toMatchObject({ code: 'provider_error' });
    } finally {
      roster.listClients = real;
    }
  });
});
