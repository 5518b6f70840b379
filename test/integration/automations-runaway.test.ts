import { afterEach, describe, expect, it } from 'vitest';
import { serveHttp, type RunningHttpServer } from '../../src/transports/http.js';
import { activate } from '../helpers/automations.js';
import { startInMemory, tempDataDir, testEnv, type InMemoryHarness, standInEnv } from '../helpers/mcp.js';
import { Scrape } from '../helpers/metrics.js';
import { until } from '../helpers/until.js';
import { eventId, post, productHeaders, sendgridSigner, sgEvent } from '../helpers/webhooks.js';
import { startIntercomStandIn, type IntercomStandIn } from '../stand-ins/intercom.js';
import { startMixpanelStandIn, type MixpanelStandIn } from '../stand-ins/mixpanel.js';
import { startSendGridStandIn, type SendGridStandIn } from '../stand-ins/sendgrid.js';

/**
 * Automations that cannot run away (issue 16, items 1–4), each the way a manipulated model or a
 * looping provider would act: forged roster events, a workflow fed by the delivery webhooks of its own
 * emails, a schedule every second, and a fan-out inside the chain limit. SQLite, one in-memory server
 * per test (with the HTTP endpoint for the signed webhooks), stand-ins on 127.0.0.1.
 */

const SG_KEY = 'SG.automations_runaway_abc.0123456789abcdef';
const IC_TOKEN = 'intercom-automation-runaway-token';
const EVENTS_SECRET = 'product-events-secret-runaway-0123456789';

interface World {
  h: InMemoryHarness;
  sg: SendGridStandIn;
  ic: IntercomStandIn;
  mp: MixpanelStandIn;
  server: RunningHttpServer;
  base: string;
  signer: ReturnType<typeof sendgridSigner>;
  cleanup: () => Promise<void>;
}

let world: World | undefined;
afterEach(async () => {
  await world?.cleanup();
  world = undefined;
});

async function start(extra: Record<string, string> = {}): Promise<World> {
  const data = tempDataDir();
  const sg = await startSendGridStandIn({ apiKey: SG_KEY });
  const ic = await startIntercomStandIn({ token: IC_TOKEN });
  const mp = await startMixpanelStandIn();
  const signer = sendgridSigner();
  const h = await startInMemory(
    testEnv(
      {
        ...standInEnv({ sendgrid: { url: sg.url, apiKey: SG_KEY }, intercom: { url: ic.url, token: IC_TOKEN } }),
        MIXPANEL_PROJECT_TOKEN: 'mp-token',
        MIXPANEL_API_SECRET: 'mp-secret',
        MIXPANEL_PROJECT_ID: '12345',
        MIXPANEL_API_HOST: mp.url,
        MIXPANEL_FLUSH_INTERVAL_MS: '600000',
        MCP_HTTP_PORT: '0',
        SENDGRID_WEBHOOK_PUBLIC_KEY: signer.publicKey,
        CS_MCP_EVENTS_WEBHOOK_SECRET: EVENTS_SECRET,
        WEBHOOK_PROCESS_POLL_MS: '50',
        CAMPAIGN_DISPATCH_POLL_MS: '50',
        HTTP_TIMEOUT_MS: '15000',
        AUTOMATION_TICK_MS: '50',
        AUTOMATION_LEASE_MS: '3000',
        AUTOMATION_MAX_MESSAGES_PER_CONTACT_PER_DAY: '100',
        AUTOMATION_MAX_MESSAGES_PER_CONTACT_PER_WEEK: '100',
        ...extra,
      },
      data.dir,
    ),
  );
  const server = await serveHttp(h.services);
  const w: World = {
    h,
    sg,
    ic,
    mp,
    server,
    signer,
    base: server.url.replace(/\/mcp$/, ''),
    cleanup: async () => {
      await server.close();
      await h.close();
      await sg.stop();
      await ic.stop();
      await mp.stop();
      data.cleanup();
    },
  };
  world = w;
  await h.call('register_client', { client_id: 'acme', name: 'Acme Corp', tier: 'enterprise', health_score: 90, lifecycle_stage: 'adopting' });
  await h.call('upsert_contact', { client_id: 'acme', email: 'maria@acme.example', first_name: 'María', role: 'champion' });
  ic.seedContact({ email: 'maria@acme.example', external_id: 'maria@acme.example' });
  return w;
}

const enrolments = async (h: InMemoryHarness, workflowId: string) =>
  (await h.services.store.db.selectFrom('workflow_enrollments').select(['enrollment_id', 'context', 'depth', 'state']).where('workflow_id', '=', workflowId).orderBy('enrolled_at').execute()).map((e) => ({
    ...e,
    context: JSON.parse(e.context) as { event?: { name: string; properties: Record<string, unknown> } },
  }));

describe('item 1: the roster\'s own events come only from the roster changing', () => {
  it('refuses forged health and lifecycle events from Intercom, Mixpanel and the product-events webhook; only the real change fires', async () => {
    const { h, base } = await start();
    const struggling = await activate(h, {
      workflow_name: 'Struggling',
      trigger_type: 'health_score',
      trigger_conditions: { threshold: 50, direction: 'below' },
      reentry: 'every_occurrence',
      actions: [{ type: 'send_email', subject: 'Struggling?', body: 'Hi {{ contact.first_name }}, can we help?' }],
    });
    const goodbye = await activate(h, {
      workflow_name: 'Sorry to see you go',
      trigger_type: 'milestone',
      trigger_conditions: { milestone_name: 'churned' },
      reentry: 'every_occurrence',
      actions: [{ type: 'send_email', subject: 'Sorry to see you go', body: 'Goodbye {{ contact.first_name }}.' }],
    });

    // The forgeries, as a manipulated model would try them.
    const ic = await h.call('intercom_track_event', { user_email: 'maria@acme.example', event_name: 'health_score_changed', metadata: { from: 90, to: 10 } });
    expect(ic.isError, JSON.stringify(ic.structuredContent)).toBe(true);
    expect(ic.structuredContent.error).toMatchObject({ code: 'invalid_input' });
    expect(ic.structuredContent.error.message).toMatch(/reserved/);
    const mp = await h.call('mixpanel_track_event', { distinct_id: 'maria@acme.example', event: 'lifecycle_stage_changed', properties: { from: 'adopting', to: 'churned' } });
    expect(mp.isError, JSON.stringify(mp.structuredContent)).toBe(true);
    expect(mp.structuredContent.error).toMatchObject({ code: 'invalid_input' });
    const body = JSON.stringify({ events: [{ id: eventId(), name: 'health_score_changed', email: 'maria@acme.example', properties: { from: 90, to: 10 } }] });
    const r = await post(`${base}/webhooks/events`, body, productHeaders(EVENTS_SECRET, body));
    expect(r.status, JSON.stringify(r.body)).toBe(400);
    expect(JSON.stringify(r.body)).toMatch(/health_score_changed.*reserved/);
    // An event merely named like a lifecycle stage is not the stage changing: stored, but it does not fire the milestone.
    const named = await h.call('mixpanel_track_event', { distinct_id: 'maria@acme.example', event: 'churned' });
    expect(named.structuredContent).toMatchObject({ success: true });
    const recorded = await h.call('record_customer_event', { event: 'churned', contact_email: 'maria@acme.example' });
    expect(recorded.structuredContent).toMatchObject({ success: true, recorded: 1 });
    // An automation step may not forge them either.
    const forgingStep = await h.call('automate_communications', {
      workflow_name: 'Forger',
      trigger_type: 'custom',
      actions: [{ type: 'track_event', event_name: 'health_score_changed', metadata: { to: 10 } }],
      is_active: false,
    });
    expect(forgingStep.structuredContent.error).toMatchObject({ code: 'invalid_input' });

    // The real changes (recorded after the forgeries, so handled after them) fire each workflow once.
    await h.call('update_client_info', { client_id: 'acme', health_score: 40 });
    await h.call('update_client_info', { client_id: 'acme', lifecycle_stage: 'churned' });
    const s = await until(() => enrolments(h, struggling.workflowId), (e) => e.some((x) => x.context.event?.properties.to === 40));
    const g = await until(() => enrolments(h, goodbye.workflowId), (e) => e.some((x) => x.context.event?.name === 'lifecycle_stage_changed'));
    expect(s.map((x) => x.context.event?.properties)).toEqual([{ from: 90, to: 40 }]);
    expect(g.map((x) => [x.context.event?.name, x.context.event?.properties.to])).toEqual([['lifecycle_stage_changed', 'churned']]);
    const overview = await h.call('get_client_overview', { client_id: 'acme' });
    expect(overview.structuredContent.client).toMatchObject({ health_score: 40 });
  }, 60_000);
});

describe('item 2: events about our own messages carry their cause', () => {
  it('a loop through signed SendGrid delivered webhooks: never re-fires its own workflow, stops at the chain depth', async () => {
    const { h, sg, base, signer } = await start();
    const replyA = await activate(h, {
      workflow_name: 'Delivered → email (A)',
      trigger_type: 'event_based',
      trigger_conditions: { event: 'email_delivered' },
      reentry: 'every_occurrence',
      actions: [{ type: 'send_email', subject: 'A', body: 'A to {{ contact.first_name }}' }],
    });
    const replyB = await activate(h, {
      workflow_name: 'Delivered → email (B)',
      trigger_type: 'event_based',
      trigger_conditions: { event: 'email_delivered' },
      reentry: 'every_occurrence',
      actions: [{ type: 'send_email', subject: 'B', body: 'B to {{ contact.first_name }}' }],
    });
    // A barrier: a later event that fires this one proves the evaluator has handled every earlier event.
    const probe = await activate(h, { workflow_name: 'Probe', trigger_type: 'event_based', trigger_conditions: { event: 'probe' }, reentry: 'every_occurrence', actions: [{ type: 'update_health_score', adjust: 0 }] });
    const run = await h.call('run_workflow', { workflow_id: replyA.workflowId, contact_emails: ['maria@acme.example'] });
    const ran = await h.call('run_workflow', { workflow_id: replyA.workflowId, contact_emails: ['maria@acme.example'], confirmation_token: run.structuredContent.confirmation_token });
    expect(ran.structuredContent).toMatchObject({ success: true, enrolled: 1 });

    const settled = async () => {
      for (const id of [replyA.workflowId, replyB.workflowId]) {
        await until(() => h.call('get_workflow', { workflow_id: id }), (w) => w.structuredContent.enrollments.active === 0 && !w.structuredContent.messages.by_state.queued && !w.structuredContent.messages.by_state.sending);
      }
    };
    // Act as SendGrid: every email it accepted is delivered, and the delivered event is posted, signed, with the custom_args it carried.
    const acked = new Set<string>();
    for (let round = 1; round <= 8; round++) {
      await settled();
      const fresh = sg.delivered.filter((d) => !acked.has(d.message_id));
      if (!fresh.length) break;
      for (const d of fresh) acked.add(d.message_id);
      const events = JSON.stringify(fresh.map((d) => sgEvent('delivered', d.to, { ...d.custom_args, sg_message_id: `${d.message_id}.filterdrecv-1-2-3` })));
      expect((await post(`${base}/webhooks/sendgrid`, events, signer.headers(events))).status).toBe(200);
      await until(() => h.services.inbox.repo.backlog(), (b) => !b.some((x) => x.state === 'pending'));
      await h.call('record_customer_event', { event: 'probe', contact_email: 'maria@acme.example' });
      await until(() => enrolments(h, probe.workflowId), (e) => e.length === round);
    }
    await settled();
    // A's email (depth 0) fires B only (depth 1); B's fires A (depth 2); A's then is at the chain limit (3).
    const a = await enrolments(h, replyA.workflowId);
    const b = await enrolments(h, replyB.workflowId);
    expect(a.map((e) => e.depth)).toEqual([0, 2]);
    expect(b.map((e) => e.depth)).toEqual([1]);
    expect(sg.delivered.map((d) => d.subject)).toEqual(['A', 'B', 'A']);
    // Each enrolment from a delivered event was caused by the other workflow's message.
    expect(String(b[0]!.context.event?.properties.workflow_id)).toBe(replyA.workflowId);
    expect(String(a[1]!.context.event?.properties.workflow_id)).toBe(replyB.workflowId);
  }, 90_000);
});

describe('item 3: schedules have a minimum interval', () => {
  const every = (schedule: string) => ({ workflow_name: `Every ${schedule}`, trigger_type: 'time_based', trigger_conditions: { schedule }, actions: [{ type: 'send_email', subject: 'tick', body: 'tick' }] });

  it('refuses a schedule every second or every five minutes by default, and counts the runs of the next 7 days exactly', async () => {
    const { h } = await start();
    for (const schedule of ['* * * * * *', '*/5 * * * *', '0,30 9 * * *']) {
      const r = await h.call('automate_communications', every(schedule));
      expect(r.isError, `${schedule}: ${JSON.stringify(r.structuredContent).slice(0, 400)}`).toBe(true);
      expect(r.structuredContent.error).toMatchObject({ code: 'invalid_input' });
      expect(r.structuredContent.error.message).toMatch(/AUTOMATION_MIN_SCHEDULE_INTERVAL_SECONDS/);
    }
    const hourly = await h.call('automate_communications', every('0 * * * *'));
    expect(hourly.structuredContent).toMatchObject({ success: true, phase: 'preview' });
    expect(hourly.structuredContent.estimate_basis).toMatch(/^16[78] runs in the next 7 days/);
  }, 60_000);

  it('with the minimum lowered to a minute, every minute is allowed and counted exactly (10,080 runs, not 200); seconds still refused', async () => {
    const { h } = await start({ AUTOMATION_MIN_SCHEDULE_INTERVAL_SECONDS: '60' });
    const minutely = await h.call('automate_communications', every('* * * * *'));
    expect(minutely.structuredContent).toMatchObject({ success: true, phase: 'preview' });
    expect(minutely.structuredContent.estimate_basis).toMatch(/^100(79|80) runs in the next 7 days/);
    const seconds = await h.call('automate_communications', every('0 * * * * *'));
    expect(seconds.structuredContent.error).toMatchObject({ code: 'invalid_input' });
    expect(seconds.structuredContent.error.message).toMatch(/seconds/);
  }, 60_000);
});

describe('item 4: action budgets', () => {
  const notes = (ic: IntercomStandIn) => ic.notes.filter((n) => n.body.startsWith('Fan-out'));

  it('a fan-out that trips the workflow budget pauses itself (runaway): audit entry, integrations_status line, nothing beyond the budget sent', async () => {
    const { h, ic, sg } = await start({ AUTOMATION_MAX_ACTIONS_PER_WORKFLOW_PER_HOUR: '5' });
    for (let i = 0; i < 12; i++) {
      await h.call('register_client', { client_id: `fan-${i}`, name: `Fan ${i}`, tier: 'standard' });
      await h.call('upsert_contact', { client_id: `fan-${i}`, email: `p${i}@fan.example`, first_name: `P${i}` });
      ic.seedContact({ email: `p${i}@fan.example` });
    }
    const draft = await h.call('automate_communications', {
      workflow_name: 'Fan-out',
      trigger_type: 'custom',
      is_active: false,
      actions: [{ type: 'create_note', body: 'Fan-out for {{ client.name }}' }, { type: 'send_email', subject: 'Fan-out', body: 'Hi' }],
    });
    const id = draft.structuredContent.workflow_id;
    const clientIds = Array.from({ length: 12 }, (_, i) => `fan-${i}`);
    const p = await h.call('run_workflow', { workflow_id: id, client_ids: clientIds });
    expect((await h.call('run_workflow', { workflow_id: id, client_ids: clientIds, confirmation_token: p.structuredContent.confirmation_token })).structuredContent).toMatchObject({ enrolled: 12 });
    const w = await until(() => h.call('get_workflow', { workflow_id: id }), (x) => x.structuredContent.workflow.status === 'paused');
    expect(w.structuredContent.workflow).toMatchObject({ status: 'paused', pause_reason: 'runaway' });
    // Five actions in all (notes and emails queued together), never more: the rest waits, paused.
    const sent = () => notes(ic).length + sg.delivered.length;
    await until(() => h.call('get_workflow', { workflow_id: id }), (x) => !x.structuredContent.messages.by_state.queued && !x.structuredContent.messages.by_state.sending);
    expect(sent()).toBeLessThanOrEqual(5);
    const used = await h.services.store.db.selectFrom('automation_budget').select(['scope', 'used']).where('scope', '=', id).execute();
    expect(used.map((u) => Number(u.used))).toEqual([5]);
    const audit = await h.services.store.db.selectFrom('audit_log').selectAll().where('policy', '=', 'runaway').execute();
    expect(audit).toHaveLength(1);
    expect(audit[0]!.message).toMatch(/AUTOMATION_MAX_ACTIONS_PER_WORKFLOW_PER_HOUR \(5\)/);
    const status = await h.call('integrations_status');
    expect(status.structuredContent.automations.paused_runaway).toEqual([expect.objectContaining({ workflow_id: id, line: expect.stringMatching(/runaway/) })]);
    // Nothing more happens while it is paused.
    await h.call('record_customer_event', { event: 'probe', client_id: 'acme' });
    expect(sent()).toBeLessThanOrEqual(5);
    // What /metrics says: one runaway pause, the workflow counted as paused by runaway, its twelve enrolments, an approval by policy.
    const m = Scrape.parse(await h.services.metrics.render());
    expect(m.sum('csmcp_automation_runaway_pauses_total')).toBe(1);
    expect(m.sum('csmcp_automation_workflows', { status: 'paused', runaway: 'true' })).toBe(1);
    expect(m.sum('csmcp_automation_enrollments')).toBe(12);
    expect(m.sum('csmcp_approval_requests_total', { action: 'workflow_run', outcome: 'approved_by_policy' })).toBe(1);
  }, 60_000);

  it('the budget for all automations holds across two processes sharing the database', async () => {
    const data = tempDataDir();
    const ic = await startIntercomStandIn({ token: IC_TOKEN, latencyMs: 5 });
    const env = testEnv(
      {
        ...standInEnv({ intercom: { url: ic.url, token: IC_TOKEN } }),
        AUTOMATION_TICK_MS: '50',
        AUTOMATION_LEASE_MS: '3000',
        HTTP_TIMEOUT_MS: '15000',
        AUTOMATION_MAX_ACTIONS_PER_HOUR: '7',
      },
      data.dir,
    );
    const one = await startInMemory(env);
    const two = await startInMemory(env);
    try {
      for (let i = 0; i < 20; i++) {
        await one.call('register_client', { client_id: `fan-${i}`, name: `Fan ${i}`, tier: 'standard' });
        await one.call('upsert_contact', { client_id: `fan-${i}`, email: `p${i}@fan.example` });
        ic.seedContact({ email: `p${i}@fan.example` });
      }
      const ids: string[] = [];
      for (const name of ['Fan-out one', 'Fan-out two']) {
        const d = await one.call('automate_communications', { workflow_name: name, trigger_type: 'custom', is_active: false, actions: [{ type: 'create_note', body: 'Fan-out {{ client.name }}' }] });
        ids.push(d.structuredContent.workflow_id);
      }
      const clientIds = Array.from({ length: 20 }, (_, i) => `fan-${i}`);
      for (const [h, id] of [[one, ids[0]!], [two, ids[1]!]] as const) {
        const p = await h.call('run_workflow', { workflow_id: id, client_ids: clientIds });
        await h.call('run_workflow', { workflow_id: id, client_ids: clientIds, confirmation_token: p.structuredContent.confirmation_token });
      }
      for (const id of ids) await until(() => one.call('get_workflow', { workflow_id: id }), (x) => x.structuredContent.workflow.status === 'paused');
      await until(async () => (await one.services.store.db.selectFrom('workflow_step_runs').select('state').where('state', '=', 'started').execute()).length, (n) => n === 0);
      expect(notes(ic)).toHaveLength(7);
      const runs = await one.services.store.db.selectFrom('workflow_step_runs').select('owner').execute();
      expect(runs).toHaveLength(7);
    } finally {
      await one.close();
      await two.close();
      await ic.stop();
      data.cleanup();
    }
  }, 60_000);
});
