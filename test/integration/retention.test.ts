import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Retention, type RetentionKind } from '../../src/engine/retention.js';
import { AutomationRepository, DEFINITION_CACHE_SIZE } from '../../src/engine/automations/repository.js';
import { COMPILED_CACHE_SIZE, EnrolmentRunner } from '../../src/engine/automations/steps.js';
import type { WorkflowDefinition } from '../../src/engine/automations/definition.js';
import { availableDialects, createTarget, type DatabaseTarget } from '../helpers/databases.js';
import { startInMemory, standInEnv, testEnv, type InMemoryHarness } from '../helpers/mcp.js';
import { until } from '../helpers/until.js';
import { intercomHeaders, intercomNotification } from '../helpers/webhooks.js';
import { startSendGridStandIn, type SendGridStandIn } from '../stand-ins/sendgrid.js';

/**
 * Retention with rows aged by a clock the test moves (the Retention's `now`): each kind goes after its
 * own horizon, a batch at a time, and nothing exactly-once still depends on is deleted.
 */

const SG_KEY = 'SG.retentionkey_abcdef.0123456789abcdef';
const IC_SECRET = 'intercom-client-secret-for-retention';
const DAY = 86_400_000;
const dialects = await availableDialects();

describe.each(dialects)('retention on %s', (dialect) => {
  let target: DatabaseTarget;
  let sg: SendGridStandIn;
  let h: InMemoryHarness;
  const start = Date.now();
  let finishedCampaign = '';
  let scheduledCampaign = '';

  beforeAll(async () => {
    target = await createTarget(dialect);
    sg = await startSendGridStandIn({ apiKey: SG_KEY });
    h = await startInMemory(
      testEnv({ ...standInEnv({ sendgrid: { url: sg.url, apiKey: SG_KEY } }), CAMPAIGN_DISPATCH_POLL_MS: '50', INTERCOM_CLIENT_SECRET: IC_SECRET, CS_MCP_DUPLICATE_WINDOW_S: '0', ...target.env }),
    );
    await h.call('register_client', { client_id: 'acme', name: 'Acme', tier: 'enterprise', health_score: 50 });
    await h.call('upsert_contact', { client_id: 'acme', email: 'ana@acme.example', first_name: 'Ana' });
    await h.call('upsert_contact', { client_id: 'acme', email: 'bo@acme.example', first_name: 'Bo' });
    const campaign = async (name: string, extra: Record<string, unknown> = {}) => {
      const args = { campaign_name: name, template_type: 'health_check', subject_line: 'Hi', body_text: 'Hello {{ contact.first_name }}', target_client_ids: ['acme'], ...extra };
      const p = await h.call('send_personalized_email', args);
      const r = await h.call('send_personalized_email', { ...args, confirmation_token: p.structuredContent.confirmation_token });
      expect(r.structuredContent.campaign_id, JSON.stringify([p.structuredContent, r.structuredContent]).slice(0, 1500)).toBeTypeOf('string');
      return r.structuredContent.campaign_id as string;
    };
    finishedCampaign = await campaign('Finished');
    const s = await h.call('get_campaign_status', { campaign_id: finishedCampaign, wait_seconds: 20 });
    expect(s.structuredContent.campaign?.status, JSON.stringify(s.structuredContent)).toBe('completed');
    // Scheduled later: its rows stay queued, so the campaign is not finished.
    scheduledCampaign = await campaign('Later', { scheduled_send_time: new Date(start + 300 * DAY).toISOString() });
    await h.call('record_customer_event', { event: 'login', contact_email: 'ana@acme.example', dedup_key: 'login-1' });
    await h.call('sendgrid_send_email', { to: 'ana@acme.example', subject: 'Direct', text: 'Hi', idempotency_key: 'direct-1' });
  });
  afterAll(async () => {
    await h?.close();
    await sg?.stop();
    await target?.cleanup();
  });

  const db = () => h.services.store.db;
  const count = async (table: 'outbox' | 'timeline' | 'customer_events' | 'confirmation_tokens' | 'audit_log' | 'idempotency_records' | 'campaigns' | 'message_events') =>
    Number((await db().selectFrom(table).select((eb) => eb.fn.countAll<number | string>().as('n')).executeTakeFirstOrThrow()).n);
  const retentionAt = (clock: { now: number }, batch = 3) =>
    new Retention({
      db: db(),
      config: { ...h.services.config.retention, batch },
      log: h.services.log,
      prune: { audit: (now, limit) => h.services.audit.prune(now, limit), idempotency: (now, limit) => h.services.idempotency.prune(now, limit) },
      now: () => clock.now,
    });

  it('keeps everything inside its horizon', async () => {
    const before = { outbox: await count('outbox'), timeline: await count('timeline'), events: await count('customer_events'), audit: await count('audit_log') };
    const deleted = await retentionAt({ now: Date.now() + 6 * DAY }).drain();
    expect(Object.values(deleted).reduce((a, b) => a + b, 0)).toBe(0);
    expect({ outbox: await count('outbox'), timeline: await count('timeline'), events: await count('customer_events'), audit: await count('audit_log') }).toEqual(before);
  });

  it('deletes each kind after its own horizon, at most a batch per statement, never what a live source still needs', async () => {
    // Automation rows: one of an enrolment still active (its step may run again with the same key), one of a finished one.
    const now = new Date().toISOString();
    const enrolment = (id: string, state: string) => ({
      enrollment_id: id, workflow_id: 'wf_x', version: 1, occurrence_key: `occ:${id}`, subject_kind: 'contact', client_id: 'acme', contact_id: null, state,
      step_index: 1, next_run_at: now, lease_owner: null, lease_until: null, depth: 0, context: '{}', start_event_id: 0, enrolled_at: now, updated_at: now, finished_at: null, exit_reason: null,
    });
    await db().insertInto('workflow_enrollments').values([enrolment('enr_live', 'active'), enrolment('enr_done', 'completed')]).execute();
    const row = (ref: string) => ({
      source_kind: 'automation', source_id: 'wf_x', source_ref: `${ref}:0`, contact_id: 'c', client_id: 'acme', channel: 'email', idempotency_key: `wf_x:${ref}:0`, recipient_email: 'ana@acme.example',
      payload: '{}', meta: '{}', policy: null, state: 'sent', attempts: 1, not_before: now, provider_message_id: null, error_code: null, error_message: null, updated_at: now, sent_at: now, lease_owner: null, lease_until: null,
    });
    await db().insertInto('outbox').values([row('enr_live'), row('enr_done')]).execute();
    const finishedRows = await db().selectFrom('outbox').select('outbox_id').where('source_id', '=', finishedCampaign).execute();
    expect(finishedRows).toHaveLength(2);
    const scheduledRows = await db().selectFrom('outbox').select('outbox_id').where('source_id', '=', scheduledCampaign).orderBy('outbox_id').execute();
    expect(scheduledRows).toHaveLength(2);
    // One of the scheduled campaign's rows is finished (skipped), the other still queued: the campaign is not finished, both stay.
    await db().updateTable('outbox').set({ state: 'skipped' }).where('outbox_id', '=', scheduledRows[0]!.outbox_id).execute();

    const clock = { now: Date.now() + 181 * DAY };
    const r = retentionAt(clock, 1);
    const passes: Array<Record<RetentionKind, number>> = [];
    for (;;) {
      const p = await r.pass();
      passes.push(p.deleted);
      if (!p.more) break;
    }
    // One row per kind per pass (batch 1): a backlog is worked off in small steps, the loop yielding between them.
    for (const p of passes) for (const [k, n] of Object.entries(p)) if (k !== 'idempotency') expect(n, k).toBeLessThanOrEqual(1);
    expect(passes.length).toBeGreaterThan(3);

    // Outbox: the finished campaign and the finished enrolment are gone; the scheduled campaign and the live enrolment stay.
    const left = await db().selectFrom('outbox').select(['source_id', 'source_ref', 'state']).execute();
    expect(left.filter((o) => o.source_id === finishedCampaign)).toEqual([]);
    expect(left.filter((o) => o.source_id === scheduledCampaign)).toHaveLength(2);
    expect(left.filter((o) => o.source_ref === 'enr_live:0')).toHaveLength(1);
    expect(left.filter((o) => o.source_ref === 'enr_done:0')).toHaveLength(0);
    const status = await h.call('get_campaign_status', { campaign_id: finishedCampaign });
    expect(status.structuredContent.error.code).toBe('not_found');
    expect((await h.call('get_campaign_status', { campaign_id: scheduledCampaign })).structuredContent.campaign.status).toBe('scheduled');
    // Tokens (30 days), audit (90 days), idempotency keys (168 h) are past their horizons; timeline (730) and events (365) are not.
    expect(await count('confirmation_tokens')).toBe(0);
    expect(await count('audit_log')).toBe(0);
    expect(await count('idempotency_records')).toBe(0);
    expect(await count('customer_events')).toBeGreaterThan(0);
    expect(await count('timeline')).toBeGreaterThan(0);

    clock.now = Date.now() + 366 * DAY;
    expect((await r.drain()).customer_events).toBeGreaterThan(0);
    expect(await count('customer_events')).toBe(0);
    expect(await count('timeline')).toBeGreaterThan(0);
    clock.now = Date.now() + 731 * DAY;
    await r.drain();
    expect(await count('timeline')).toBe(0);
    // The scheduled campaign (rows still queued) and the live enrolment survive every horizon.
    expect(await count('outbox')).toBe(3);
  });

  it('an idempotency key is kept for its whole window: a repeat inside it is answered from the record, not resent', async () => {
    const sent = sg.delivered.length;
    await h.call('sendgrid_send_email', { to: 'bo@acme.example', subject: 'Keyed', text: 'Hi', idempotency_key: 'keyed-1' });
    expect(sg.delivered.length).toBe(sent + 1);
    await retentionAt({ now: Date.now() + 167 * 3_600_000 }).drain();
    const again = await h.call('sendgrid_send_email', { to: 'bo@acme.example', subject: 'Keyed', text: 'Hi', idempotency_key: 'keyed-1' });
    expect(again.structuredContent).toMatchObject({ success: true, replayed: true });
    expect(sg.delivered.length).toBe(sent + 1);
  });

  it('Intercom (no signed timestamp): a replay is refused also after its dedup record was pruned', async () => {
    const body = JSON.stringify(intercomNotification('contact.unsubscribed', { type: 'contact', id: 'ic1', email: 'bo@acme.example' }));
    const headers = Object.fromEntries(Object.entries(intercomHeaders(IC_SECRET, body)).map(([k, v]) => [k.toLowerCase(), v]));
    const t0 = Date.now();
    const first = await h.services.inbox.receive('intercom', headers, Buffer.from(body), t0);
    expect(first).toMatchObject({ status: 200, body: { stored: 1 } });
    // Within the retention: remembered, stored once.
    expect(await h.services.inbox.receive('intercom', headers, Buffer.from(body), t0 + 10 * DAY)).toMatchObject({ status: 200, body: { stored: 0, duplicates: 1 } });
    // The settled event is pruned after WEBHOOK_RETENTION_DAYS (30)…
    // (once processed: pending events are never pruned)
    await until(() => h.services.inbox.repo.prune(t0 + 1), (n) => n > 0, { message: 'the settled Intercom event pruned' });
    // …and a replay after that is refused by its age, not stored again.
    const inboxBefore = await count('customer_events');
    const late = await h.services.inbox.receive('intercom', headers, Buffer.from(body), t0 + 31 * DAY);
    expect(late.status).toBe(400);
    expect(JSON.stringify(late.body)).toMatch(/replay horizon/);
    expect(await h.services.inbox.repo.backlog()).toEqual([]);
    expect(await count('customer_events')).toBe(inboxBefore);
    // Just inside the horizon (30 days less the hour for clocks) it is still accepted, and deduplicated.
    const fresh = JSON.stringify(intercomNotification('contact.unsubscribed', { type: 'contact', id: 'ic1', email: 'bo@acme.example' }));
    const fh = Object.fromEntries(Object.entries(intercomHeaders(IC_SECRET, fresh)).map(([k, v]) => [k.toLowerCase(), v]));
    expect((await h.services.inbox.receive('intercom', fh, Buffer.from(fresh), t0 + 30 * DAY - 2 * 3_600_000)).status).toBe(200);
    // A notification that cannot be dated cannot be told from a replay.
    const { created_at: _c, first_sent_at: _f, ...undated } = JSON.parse(fresh) as Record<string, unknown>;
    const ub = JSON.stringify({ ...undated, id: 'notif_undated' });
    const uh = Object.fromEntries(Object.entries(intercomHeaders(IC_SECRET, ub)).map(([k, v]) => [k.toLowerCase(), v]));
    expect((await h.services.inbox.receive('intercom', uh, Buffer.from(ub), t0)).status).toBe(400);
  });
});

describe('bounded caches', () => {
  const def = (n: number): WorkflowDefinition =>
    ({ name: `w${n}`, steps: [{ type: 'send_email', subject: 'Hi {{ contact.first_name }}', text: `Step ${n}` }], exit_when: [] }) as unknown as WorkflowDefinition;

  it(`workflow definitions: the most recent ${DEFINITION_CACHE_SIZE} versions`, async () => {
    let reads = 0;
    const fakeDb = {
      selectFrom: () => ({
        select: () => ({ where: () => ({ where: () => ({ executeTakeFirstOrThrow: async () => (reads++, { definition: JSON.stringify(def(1)) }) }) }) }),
      }),
    };
    const repo = new AutomationRepository(fakeDb as never, 'sqlite');
    for (let v = 0; v < DEFINITION_CACHE_SIZE + 50; v++) await repo.definition('wf', v);
    expect((repo as unknown as { definitions: { size: number } }).definitions.size).toBe(DEFINITION_CACHE_SIZE);
    const n = reads;
    await repo.definition('wf', DEFINITION_CACHE_SIZE + 49); // recent: cached
    expect(reads).toBe(n);
    await repo.definition('wf', 0); // evicted: read again
    expect(reads).toBe(n + 1);
  });

  it(`compiled templates: the most recent ${COMPILED_CACHE_SIZE} versions`, () => {
    const runner = new EnrolmentRunner({} as never, 'test');
    const templates = (v: number) => (runner as unknown as { templates(e: unknown, d: WorkflowDefinition): unknown }).templates({ workflow_id: 'wf', version: v }, def(v));
    for (let v = 0; v < COMPILED_CACHE_SIZE + 50; v++) templates(v);
    expect((runner as unknown as { compiled: { size: number } }).compiled.size).toBe(COMPILED_CACHE_SIZE);
  });
});
