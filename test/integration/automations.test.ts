import { createHmac } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { availableDialects, createTarget, type DatabaseTarget } from '../helpers/databases.js';
import { startInMemory, tempDataDir, testEnv, type InMemoryHarness, standInEnv } from '../helpers/mcp.js';
import { activate, settled } from '../helpers/automations.js';
import { until } from '../helpers/until.js';
import { HttpStandIn } from '../stand-ins/http-stand-in.js';
import { startIntercomStandIn, type IntercomStandIn } from '../stand-ins/intercom.js';
import { startMixpanelStandIn, type MixpanelStandIn } from '../stand-ins/mixpanel.js';
import { startSendGridStandIn, type SendGridStandIn } from '../stand-ins/sendgrid.js';

const SG_KEY = 'SG.automations_abcdef.0123456789abcdef';
const IC_TOKEN = 'intercom-automation-token';
const WEBHOOK_SECRET = 'whsec_automation_test_secret';

/** Mail-send requests SendGrid received, per address. */
function mailsTo(sg: SendGridStandIn): Map<string, string[]> {
  const m = new Map<string, string[]>();
  for (const r of sg.matching(/^POST \/v3\/mail\/send/)) {
    const b = r.body as any;
    for (const p of b.personalizations ?? []) for (const to of p.to ?? []) m.set(to.email, [...(m.get(to.email) ?? []), p.subject ?? b.subject]);
  }
  return m;
}


const dialects = await availableDialects();

describe.each(dialects)('automations on %s', (dialect) => {
  let target: DatabaseTarget;
  let sg: SendGridStandIn;
  let ic: IntercomStandIn;
  let mp: MixpanelStandIn;
  let slack: HttpStandIn;
  let hooks: HttpStandIn;
  let h: InMemoryHarness;

  beforeAll(async () => {
    target = await createTarget(dialect);
    sg = await startSendGridStandIn({ apiKey: SG_KEY });
    ic = await startIntercomStandIn({ token: IC_TOKEN });
    mp = await startMixpanelStandIn();
    slack = await new HttpStandIn({ name: 'slack' }, () => ({ status: 200, body: 'ok', headers: { 'Content-Type': 'text/plain' } })).start();
    hooks = await new HttpStandIn({ name: 'receiver' }, () => ({ status: 202, body: { received: true } })).start();
    h = await startInMemory(
      testEnv({
        ...standInEnv({ sendgrid: { url: sg.url, apiKey: SG_KEY }, intercom: { url: ic.url, token: IC_TOKEN } }),
        INTERCOM_TICKET_TYPE_ID: '88',
        MIXPANEL_API_SECRET: 'mp-secret',
        MIXPANEL_PROJECT_TOKEN: 'mp-token',
        MIXPANEL_API_HOST: mp.url,
        SLACK_WEBHOOK_URL: `${slack.url}/services/T000/B000/XXXX`,
        AUTOMATION_WEBHOOK_ALLOWED_HOSTS: new URL(hooks.url).origin,
        AUTOMATION_WEBHOOK_PRIVATE_ORIGINS: new URL(hooks.url).origin, // the stand-in is on 127.0.0.1
        AUTOMATION_WEBHOOK_SECRET: WEBHOOK_SECRET,
        CAMPAIGN_DISPATCH_POLL_MS: '50',
        AUTOMATION_MIN_SCHEDULE_INTERVAL_SECONDS: '1', // the time-based test schedules to the second
        AUTOMATION_TICK_MS: '50',
        AUTOMATION_SWEEP_MS: '150',
        AUTOMATION_LEASE_MS: '3000',
        AUTOMATION_MAX_MESSAGES_PER_CONTACT_PER_DAY: '1',
        ...target.env,
      }),
    );
    const reg = (client_id: string, name: string, tier: string, extra: Record<string, unknown> = {}) => h.call('register_client', { client_id, name, tier, owner_email: 'dana@ourco.test', ...extra });
    await reg('acme', 'Acme Corp', 'enterprise', { health_score: 70 });
    await reg('globex', 'Globex', 'enterprise', { health_score: 80 });
    await reg('initech', 'Initech', 'standard', { health_score: 60 });
    const contact = (client_id: string, email: string, extra: Record<string, unknown> = {}) => h.call('upsert_contact', { client_id, email, ...extra });
    await contact('acme', 'maria@acme.example', { first_name: 'María', role: 'champion' });
    await contact('acme', 'tom@acme.example', { first_name: 'Tom', role: 'decision_maker' });
    await contact('acme', 'ops@acme.example', { role: 'user' });
    await contact('globex', 'hank@globex.example', { first_name: 'Hank', role: 'champion' });
    await contact('initech', 'peter@initech.example', { first_name: 'Peter', role: 'champion' });
    for (const email of ['maria@acme.example', 'tom@acme.example', 'ops@acme.example', 'hank@globex.example', 'peter@initech.example']) ic.seedContact({ email });
  });
  afterAll(async () => {
    await h?.close();
    await Promise.all([sg?.stop(), ic?.stop(), mp?.stop(), slack?.stop(), hooks?.stop()]);
    await target?.cleanup();
  });

  it('an event by a contact reaches that contact only, once per event', async () => {
    const { workflowId, preview } = await activate(h, {
      workflow_name: 'Export failed follow-up',
      trigger_type: 'event_based',
      trigger_conditions: { event: 'export_failed', properties: { format: 'csv' } },
      actions: [{ type: 'send_email', subject: 'About your {{ event.properties.format }} export', body: 'Hi {{ contact.first_name | fallback: "there" }}, we saw your export fail.' }],
    });
    expect(preview.samples[0]).toMatchObject({ type: 'send_email', channel: 'email', subject: 'About your csv export' });
    expect(preview.entering_now).toMatchObject({ applies: false, count: 0 });
    const r = await h.call('record_customer_event', { event: 'export_failed', contact_email: 'tom@acme.example', properties: { format: 'csv' } });
    expect(r.structuredContent).toMatchObject({ success: true, recorded: 1 });
    await h.call('record_customer_event', { event: 'export_failed', contact_email: 'maria@acme.example', properties: { format: 'pdf' } }); // properties do not match
    await until(() => mailsTo(sg).get('tom@acme.example')?.length ?? 0, (n) => n === 1);
    const status = await until(
      () => h.call('get_workflow', { workflow_id: workflowId }),
      (s) => s.structuredContent.messages?.by_state?.sent === 1 && s.structuredContent.enrollments.completed === 1,
    );
    expect(status.structuredContent.enrollments).toMatchObject({ total: 1, completed: 1 });
    expect([...mailsTo(sg).keys()]).toEqual(['tom@acme.example']);
    expect(mailsTo(sg).get('tom@acme.example')).toEqual(['About your csv export']);
    const body = sg.matching(/^POST \/v3\/mail\/send/)[0]!.body as any;
    expect(body.custom_args).toMatchObject({ workflow_id: workflowId, client_id: 'acme' });
    expect(body.categories).toEqual(['automation']);
    await h.call('pause_workflow', { workflow_id: workflowId });
  });

  it('a time-based workflow fires at its time, for the audience of that moment, signed and keyed', async () => {
    // The scheduler is held while the workflow is activated and the audience changes, however long that
    // takes on a slow machine; started again after the time, it fires the run that fell due (catch-up).
    await h.services.automations.stop();
    const at = new Date(Date.now() + 10_000);
    const schedule = `${at.getUTCSeconds()} ${at.getUTCMinutes()} ${at.getUTCHours()} * * *`;
    const { workflowId, confirmed } = await activate(h, {
      workflow_name: 'Daily digest hook',
      trigger_type: 'time_based',
      trigger_conditions: { schedule, timezone: 'UTC' },
      audience: { tier: 'enterprise' },
      actions: [{ type: 'trigger_webhook', url: `${hooks.url}/digest`, payload: { kind: 'digest' } }],
    });
    expect(confirmed.next_fire_at).toBe(new Date(Math.floor(at.getTime() / 1000) * 1000).toISOString());
    // Before it fires, the audience changes: initech becomes enterprise, globex leaves it.
    await h.call('update_client_info', { client_id: 'initech', tier: 'enterprise' });
    await h.call('update_client_info', { client_id: 'globex', tier: 'professional' });
    expect(hooks.matching(/^POST \/digest/)).toHaveLength(0);
    await until(() => Date.now() > at.getTime() + 1000, { timeoutMs: 30_000, message: 'the scheduled time passed' });
    h.services.automations.start();
    const posts = await until(() => hooks.matching(/^POST \/digest/), (r) => r.length >= 2);
    await settled(h); // nothing more arrives
    expect(hooks.matching(/^POST \/digest/).map((r) => (r.body as any).client.id).sort()).toEqual(['acme', 'initech']);
    for (const r of posts) {
      const ts = String(r.headers['x-cs-mcp-timestamp']);
      const expected = `sha256=${createHmac('sha256', WEBHOOK_SECRET).update(`${ts}.${r.rawBody}`).digest('hex')}`;
      expect(r.headers['x-cs-mcp-signature']).toBe(expected);
      expect(String(r.headers['idempotency-key'])).toMatch(/^en_[0-9a-f]+:0$/);
      expect(r.body).toMatchObject({ kind: 'digest', workflow: { id: workflowId, name: 'Daily digest hook' }, step: 0 });
    }
    const s = await h.call('get_workflow', { workflow_id: workflowId });
    expect(s.structuredContent.workflow.last_fired_at).toBe(confirmed.next_fire_at);
    expect(s.structuredContent.steps[0]).toMatchObject({ type: 'trigger_webhook', done: 2 });
    await h.call('archive_workflow', { workflow_id: workflowId });
    await h.call('update_client_info', { client_id: 'initech', tier: 'standard' });
    await h.call('update_client_info', { client_id: 'globex', tier: 'enterprise' });
  });

  it('a contract_event fires once per client per renewal date; a moved date re-arms it', async () => {
    const day = (d: number) => new Date(Date.now() + d * 86_400_000).toISOString().slice(0, 10);
    await h.call('update_client_info', { client_id: 'acme', renewal_date: day(20) }); // already in the window at activation
    const { workflowId, preview } = await activate(h, {
      workflow_name: 'Renewal in 30 days',
      trigger_type: 'contract_event',
      trigger_conditions: { event_type: 'renewal_upcoming', days_before: 30 },
      audience: { tier: 'enterprise' },
      actions: [{ type: 'send_slack_message', text: 'Renewal: {{ client.name }} on {{ client.renewal_date }}' }],
    });
    expect(preview.entering_now).toMatchObject({ applies: true, count: 1, examples: [`Acme Corp (renews ${day(20)})`] });
    expect(preview.definition.reentry).toEqual({ mode: 'every_occurrence' });
    const texts = () => slack.requests.map((r) => (r.body as any).text as string);
    await h.call('update_client_info', { client_id: 'globex', renewal_date: day(10) });
    await until(texts, (t) => t.includes(`Renewal: Globex on ${day(10)}`));
    await settled(h); // several sweeps later: still once, and acme (already inside at activation) not at all
    expect(texts()).toEqual([`Renewal: Globex on ${day(10)}`]);
    await h.call('update_client_info', { client_id: 'globex', renewal_date: day(25) });
    await h.call('update_client_info', { client_id: 'acme', renewal_date: day(15) });
    await until(texts, (t) => t.length === 3);
    await settled(h);
    expect(texts().sort()).toEqual([`Renewal: Acme Corp on ${day(15)}`, `Renewal: Globex on ${day(10)}`, `Renewal: Globex on ${day(25)}`]);
    expect(slack.requests.every((r) => r.path === '/services/T000/B000/XXXX')).toBe(true);
    await h.call('archive_workflow', { workflow_id: workflowId });
  });

  it('the frequency cap and a send window hold across two workflows', async () => {
    const wf = (name: string, extra: Record<string, unknown> = {}) =>
      activate(h, {
        workflow_name: name,
        trigger_type: 'event_based',
        trigger_conditions: { event: 'trial_expiring' },
        actions: [{ type: 'send_email', subject: `${name} for {{ client.name }}`, body: 'Hi {{ contact.first_name | fallback: "there" }}' }],
        ...extra,
      });
    const a = await wf('Cap A');
    const b = await wf('Cap B', { frequency_cap_action: 'skip' });
    const now = new Date();
    const closedHour = (now.getUTCHours() + 3) % 24;
    const c = await wf('Window C', { send_window: { days: ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'], start_hour: Math.min(closedHour, 22), end_hour: Math.min(closedHour, 22) + 1, timezone: 'UTC' } });
    await h.call('record_customer_event', { event: 'trial_expiring', contact_email: 'hank@globex.example' });
    // hank gets exactly one of the three: the cap (1 a day) holds across workflows, and C waits for its window anyway.
    await until(() => mailsTo(sg).get('hank@globex.example')?.length ?? 0, (n) => n === 1);
    const status = async (id: string) => (await h.call('get_workflow', { workflow_id: id })).structuredContent;
    const [sa, sb, sc] = await until(
      () => Promise.all([status(a.workflowId), status(b.workflowId), status(c.workflowId)]),
      // Settled into their reasons: one sent, C waiting for its window, the other held by the cap.
      (xs) =>
        xs.filter((x) => x.messages.by_state.sent === 1).length === 1 &&
        xs[2].messages.waiting_by_reason.send_window === 1 &&
        xs.some((x) => x.messages.suppressed_by_cap.skipped + x.messages.suppressed_by_cap.waiting === 1),
    );
    const sent = [sa, sb, sc].filter((x) => x.messages.by_state.sent === 1);
    expect(sent).toHaveLength(1);
    expect(sc.messages.by_state.sent ?? 0).toBe(0);
    expect(sc.messages.waiting_by_reason).toMatchObject({ send_window: 1 });
    // The cap's other victim waits (A) or is skipped (B), whichever lost the race for the one place.
    const loser = sent[0] === sa ? sb : sa;
    if (loser === sb) expect(sb.messages).toMatchObject({ not_sent_by_reason: { frequency_cap: 1 }, suppressed_by_cap: { skipped: 1 } });
    else expect(sa.messages).toMatchObject({ waiting_by_reason: { frequency_cap: 1 }, suppressed_by_cap: { waiting: 1 } });
    expect(mailsTo(sg).get('hank@globex.example')).toHaveLength(1);
    for (const x of [a, b, c]) await h.call('archive_workflow', { workflow_id: x.workflowId });
  });

  it('a workflow\'s own steps do not re-trigger it, and chains stop at AUTOMATION_MAX_CHAIN_DEPTH', async () => {
    const chain = (name: string, on: string, emits: string) =>
      activate(h, {
        workflow_name: name,
        trigger_type: 'event_based',
        trigger_conditions: { event: on },
        reentry: 'every_occurrence',
        actions: [{ type: 'track_event', event_name: emits, destinations: ['mixpanel'] }],
      });
    const self = await chain('Echo', 'ping', 'ping');
    const a = await chain('Chain A', 'chain_a', 'chain_b');
    const b = await chain('Chain B', 'chain_b', 'chain_a');
    await h.call('record_customer_event', { event: 'ping', contact_email: 'peter@initech.example' });
    await h.call('record_customer_event', { event: 'chain_a', contact_email: 'peter@initech.example' });
    const count = async (id: string) => (await h.call('get_workflow', { workflow_id: id })).structuredContent.enrollments.total as number;
    await until(() => h.logs.some((l) => l.includes('automation chain stopped')), (x) => x);
    await settled(h);
    expect(await count(self.workflowId)).toBe(1);
    // chain_a (depth 0) → A → chain_b (1) → B → chain_a (2) → A → chain_b (3): stopped.
    expect(await count(a.workflowId)).toBe(2);
    expect(await count(b.workflowId)).toBe(1);
    const events = await h.call('list_customer_events', { contact_email: 'peter@initech.example', names: ['chain_a', 'chain_b'] });
    expect(events.structuredContent.events.map((e: any) => e.name)).toEqual(['chain_b', 'chain_a', 'chain_b', 'chain_a']);
    for (const x of [self, a, b]) await h.call('archive_workflow', { workflow_id: x.workflowId });
  });

  it('run_workflow tries a workflow on one account: tickets, notes, tags, health, events — each once', async () => {
    const draft = await h.call('automate_communications', {
      workflow_name: 'At-risk playbook',
      trigger_type: 'custom',
      is_active: false,
      audience: { contact_roles: ['champion'] },
      actions: [
        { type: 'create_ticket', title: 'Check in with {{ client.name }}', description: 'Health {{ client.health_score }}' },
        { type: 'create_note', body: 'Playbook started for {{ contact.first_name }}' },
        { type: 'add_tag', tag: 'at-risk-playbook' },
        { type: 'update_health_score', adjust: -15 },
        { type: 'track_event', event_name: 'playbook_started', metadata: { playbook: 'at-risk' } },
        { type: 'create_task', title: 'Call {{ client.name }}', due_in_days: 2 },
      ],
    });
    expect(draft.structuredContent).toMatchObject({ success: true, phase: 'saved', status: 'draft' });
    expect(draft.structuredContent.confirmation_token).toBeUndefined();
    const id = draft.structuredContent.workflow_id;
    const preview = await h.call('run_workflow', { workflow_id: id, client_ids: ['acme', 'nope'] });
    expect(preview.structuredContent).toMatchObject({ phase: 'preview', subjects: { count: 1, unknown: ['nope'] } });
    expect(preview.structuredContent.samples[0]).toMatchObject({ type: 'create_ticket', subject: 'Check in with Acme Corp', text: 'Health 70' });
    const run = await h.call('run_workflow', { workflow_id: id, client_ids: ['acme', 'nope'], confirmation_token: preview.structuredContent.confirmation_token });
    expect(run.structuredContent).toMatchObject({ phase: 'confirmed', enrolled: 1 });
    const s = await until(() => h.call('get_workflow', { workflow_id: id }), (x) => x.structuredContent.enrollments.completed === 1);
    expect(s.structuredContent.steps.map((x: any) => x.done)).toEqual([1, 1, 1, 1, 1, 1]);
    const maria = [...ic.contacts.values()].find((c) => c.email === 'maria@acme.example')!;
    expect(ic.tickets).toEqual([expect.objectContaining({ ticket_type_id: '88', contact_id: maria.id, attributes: { _default_title_: 'Check in with Acme Corp', _default_description_: 'Health 70' } })]);
    expect(ic.notes.filter((n) => n.contact_id === maria.id).map((n) => n.body.split('\n')[0])).toEqual(['Playbook started for María', '[Task] Call Acme Corp']);
    expect(maria.tags.map((t) => ic.tags.get(t)!.name)).toEqual(['at-risk-playbook']);
    expect(ic.events.filter((e) => e.event_name === 'playbook_started')).toHaveLength(1);
    const ov = await h.call('get_client_overview', { client_id: 'acme' });
    expect(ov.structuredContent.client.health_score).toBe(55);
    const health = await h.call('list_customer_events', { client_id: 'acme', names: ['health_score_changed'] });
    expect(health.structuredContent.events[0]).toMatchObject({ properties: { from: 70, to: 55 }, source: 'automation', source_ref: id });
    const tasks = await h.call('get_client_timeline', { client_id: 'acme', types: ['task'] });
    expect(tasks.structuredContent.entries[0].summary).toMatch(/^Task for dana@ourco.test: Call Acme Corp \(due /);
    // The same confirmation again enrols no one.
    const again = await h.call('run_workflow', { workflow_id: id, client_ids: ['acme', 'nope'], confirmation_token: preview.structuredContent.confirmation_token });
    expect(again.structuredContent).toMatchObject({ phase: 'confirmed', already_confirmed: true });
    expect((await h.call('get_workflow', { workflow_id: id })).structuredContent.enrollments.total).toBe(1);
    expect(ic.violations).toEqual([]);
    await h.call('update_client_info', { client_id: 'acme', health_score: 70 });
  });

  it('goals: an enrolment leaves when the first email of this workflow is opened', async () => {
    const { workflowId } = await activate(h, {
      workflow_name: 'Onboarding nudges',
      trigger_type: 'event_based',
      trigger_conditions: { event: 'signed_up' },
      exit_when: [{ event: 'email_opened', of_this_workflow: true }],
      actions: [
        { type: 'send_in_app_notification', body: 'Welcome {{ contact.first_name }}!' },
        { type: 'wait', minutes: 1 },
        { type: 'send_in_app_notification', body: 'Still there?' },
      ],
    });
    await h.call('record_customer_event', { event: 'signed_up', contact_email: 'peter@initech.example' });
    const msg = await until(
      () => h.services.store.db.selectFrom('outbox').selectAll().where('source_id', '=', workflowId).execute(),
      (rows) => rows.length === 1,
    );
    // An open of another workflow's message is not this goal; an open of this enrolment's message is.
    await h.call('record_customer_event', { event: 'email_opened', contact_email: 'peter@initech.example', properties: { outbox_key: 'wf_other:en_x:0:c:email', workflow_id: 'wf_other' } });
    await settled(h);
    expect((await h.call('get_workflow', { workflow_id: workflowId })).structuredContent.enrollments.active).toBe(1);
    await h.call('record_customer_event', { event: 'email_opened', contact_email: 'peter@initech.example', properties: { outbox_key: msg[0]!.idempotency_key, workflow_id: workflowId } });
    const s = await until(() => h.call('get_workflow', { workflow_id: workflowId }), (x) => x.structuredContent.enrollments.exited === 1);
    expect(s.structuredContent.goals_reached).toEqual({ total: 1, by_goal: { 'email_opened recorded': 1 } });
    expect(s.structuredContent.steps[2]).toMatchObject({ waiting_here: 0 });
    await h.call('archive_workflow', { workflow_id: workflowId });
  });

  it('usage_pattern fires when usage in the window crosses the threshold', async () => {
    const ago = (ms: number) => new Date(Date.now() - ms).toISOString();
    // acme: one login that leaves the 1-day window in ~4 s; globex: none (already below at activation).
    await h.call('record_customer_event', { event: 'login', client_id: 'acme', occurred_at: ago(86_400_000 - 4_000) });
    const { workflowId, preview } = await activate(h, {
      workflow_name: 'Usage dropped',
      trigger_type: 'usage_pattern',
      trigger_conditions: { metric: 'login', threshold: 1, window_days: 1, direction: 'below' },
      audience: { tier: 'enterprise' },
      actions: [{ type: 'create_task', title: 'Usage dropped at {{ client.name }}' }],
    });
    expect(preview.entering_now.examples).toEqual(['Globex (0)']);
    const s = await until(() => h.call('get_workflow', { workflow_id: workflowId }), (x) => x.structuredContent.enrollments.total >= 1, { timeoutMs: 10_000 });
    await settled(h);
    const enrolled = await h.services.store.db.selectFrom('workflow_enrollments').select('client_id').where('workflow_id', '=', workflowId).execute();
    expect(enrolled.map((e) => e.client_id)).toEqual(['acme']);
    expect(s.structuredContent.trigger).toMatch(/"login" count over 1 days goes below 1/);
    await h.call('archive_workflow', { workflow_id: workflowId });
  });

  it('behavior_based fires when a contact has had no activity for the set days, once per quiet stretch', async () => {
    for (const [id, email] of [['quietco', 'quiet@quietco.example'], ['busyco', 'busy@busyco.example']]) {
      await h.call('register_client', { client_id: id, name: id, tier: 'starter', segments: ['behavior-test'] });
      await h.call('upsert_contact', { client_id: id, email, role: 'champion' });
      ic.seedContact({ email });
    }
    // An old roster: these contacts were created long ago.
    await h.services.store.db.updateTable('contacts').set({ created_at: new Date(Date.now() - 30 * 86_400_000).toISOString() }).where('client_id', 'in', ['quietco', 'busyco']).execute();
    const ago = (ms: number) => new Date(Date.now() - ms).toISOString();
    await h.call('record_customer_event', { event: 'login', contact_email: 'busy@busyco.example', occurred_at: ago(86_400_000 - 4_000) });
    const { workflowId, preview } = await activate(h, {
      workflow_name: 'Gone quiet',
      trigger_type: 'behavior_based',
      trigger_conditions: { behavior: 'inactive', days: 1 },
      audience: { segment: 'behavior-test', contact_roles: ['champion'] },
      reentry: 'every_occurrence',
      actions: [{ type: 'create_note', body: '{{ contact.email }} has gone quiet' }],
    });
    // quiet@ is already inactive: without enroll_existing it does not enter; busy@ goes quiet in about 4 s and does.
    expect(preview.entering_now).toMatchObject({ count: 0, examples: ['quiet@quietco.example'] });
    const notes = () => ic.notes.filter((n) => n.body.endsWith('has gone quiet')).map((n) => n.body);
    await until(notes, (n) => n.length === 1, { timeoutMs: 10_000 });
    await settled(h);
    expect(notes()).toEqual(['busy@busyco.example has gone quiet']);
    // New activity, then quiet again: a new stretch (re-entry every_occurrence lets it in again).
    await h.call('record_customer_event', { event: 'login', contact_email: 'busy@busyco.example', occurred_at: ago(86_400_000 - 1_000) });
    await until(notes, (n) => n.length === 2, { timeoutMs: 10_000 });
    await h.call('archive_workflow', { workflow_id: workflowId });
  });
});

describe('automations: validation, lifecycle, read-only, missed schedules', () => {
  let sg: SendGridStandIn;
  let ic: IntercomStandIn;
  let hooks: HttpStandIn;
  const data = tempDataDir();
  let env: Record<string, string>;
  let h: InMemoryHarness;

  beforeAll(async () => {
    sg = await startSendGridStandIn({ apiKey: SG_KEY });
    ic = await startIntercomStandIn({ token: IC_TOKEN });
    hooks = await new HttpStandIn({ name: 'receiver' }, () => ({ status: 200, body: {} })).start();
    env = testEnv(
      {
        ...standInEnv({ sendgrid: { url: sg.url, apiKey: SG_KEY }, intercom: { url: ic.url, token: IC_TOKEN } }),
        AUTOMATION_WEBHOOK_ALLOWED_HOSTS: new URL(hooks.url).origin,
        AUTOMATION_WEBHOOK_PRIVATE_ORIGINS: new URL(hooks.url).origin, // the stand-in is on 127.0.0.1
        AUTOMATION_WEBHOOK_SECRET: WEBHOOK_SECRET,
        CAMPAIGN_DISPATCH_POLL_MS: '50',
        AUTOMATION_MIN_SCHEDULE_INTERVAL_SECONDS: '1', // the schedules here run every two seconds
        AUTOMATION_TICK_MS: '50',
        AUTOMATION_LEASE_MS: '2000',
      },
      data.dir,
    );
    h = await startInMemory(env);
    await h.call('register_client', { client_id: 'acme', name: 'Acme Corp', tier: 'enterprise', health_score: 70 });
    await h.call('upsert_contact', { client_id: 'acme', email: 'maria@acme.example', first_name: 'María', role: 'champion' });
  });
  afterAll(async () => {
    await h?.close();
    await Promise.all([sg?.stop(), ic?.stop(), hooks?.stop()]);
    data.cleanup();
  });

  const base = {
    workflow_name: 'Check',
    trigger_type: 'health_score',
    trigger_conditions: { threshold: 50, direction: 'below' },
    actions: [{ type: 'send_email', subject: 'Hi', body: 'Hello {{ contact.first_name | fallback: "there" }}' }],
  };
  const fieldsOf = (r: any) => (r.structuredContent.error.details?.fields ?? []).map((f: any) => f.field);

  it('names every wrong field with the fix; unknown types list the supported ones; send_sms is refused and nothing is saved', async () => {
    const badTrigger = await h.call('automate_communications', { ...base, trigger_type: 'sometimes' });
    expect(badTrigger.structuredContent.error.code).toBe('invalid_input');
    expect(badTrigger.structuredContent.error.message).toMatch(/trigger_type: unknown trigger_type; supported: time_based, event_based, health_score, milestone, contract_event, usage_pattern, behavior_based, custom/);
    const badStep = await h.call('automate_communications', { ...base, actions: [{ type: 'send_fax', body: 'x' }] });
    expect(fieldsOf(badStep)).toEqual(['actions.0.type']);
    expect(badStep.structuredContent.error.message).toMatch(/unknown step type "send_fax"; supported: send_email, send_in_app_notification, send_intercom_email, create_task/);
    const sms = await h.call('automate_communications', { ...base, actions: [{ type: 'send_sms', body: 'x' }, { type: 'schedule_meeting' }] });
    expect(fieldsOf(sms)).toEqual(['actions.0.type', 'actions.1.type']);
    expect(sms.structuredContent.error.message).toMatch(/send_sms is not available: this product has no SMS provider/);
    expect(sms.structuredContent.error.message).toMatch(/schedule_meeting is not available: this product has no calendar provider/);
    const conditions = await h.call('automate_communications', { ...base, trigger_conditions: { threshhold: 50 } });
    expect(fieldsOf(conditions).sort()).toEqual(['trigger_conditions.threshhold', 'trigger_conditions.threshold']);
    expect(conditions.structuredContent.error.message).toMatch(/threshhold/);
    const upcoming = await h.call('automate_communications', { ...base, trigger_type: 'contract_event', trigger_conditions: { event_type: 'renewal_upcoming' } });
    expect(upcoming.structuredContent.error.message).toMatch(/trigger_conditions.days_before: renewal_upcoming needs days_before/);
    const cron = await h.call('automate_communications', { ...base, trigger_type: 'time_based', trigger_conditions: { schedule: 'every monday at 9' } });
    expect(fieldsOf(cron)).toEqual(['trigger_conditions.schedule']);
    const tz = await h.call('automate_communications', { ...base, trigger_type: 'time_based', trigger_conditions: { schedule: '0 9 * * 1', timezone: 'Mars/Olympus' } });
    expect(fieldsOf(tz)).toEqual(['trigger_conditions.timezone']);
    const host = await h.call('automate_communications', { ...base, actions: [{ type: 'trigger_webhook', url: 'https://evil.example/collect' }] });
    expect(host.structuredContent.error).toMatchObject({ code: 'invalid_input', details: { field: 'actions[0].url' } });
    expect(host.structuredContent.error.message).toMatch(/https:\/\/evil.example is not an allowed webhook origin \(scheme, host and port must all match\). Allowed \(AUTOMATION_WEBHOOK_ALLOWED_HOSTS\): http:\/\/127.0.0.1:/);
    const template = await h.call('automate_communications', { ...base, actions: [{ type: 'send_email', subject: 'Hi', body: 'Hi {{ frist.name }}' }] });
    expect(template.structuredContent.error).toMatchObject({ code: 'invalid_input', details: { field: 'actions[0].body', unknown_variables: ['frist'] } });
    expect(template.structuredContent.error.message).toMatch(/Use contact\.\*, client\.\*, sender\.\*, workflow\.\*, event\.\*/);
    const slack = await h.call('automate_communications', { ...base, actions: [{ type: 'send_slack_message', text: 'x' }] });
    expect(slack.structuredContent.error).toMatchObject({ code: 'not_configured' });
    expect(slack.structuredContent.error.message).toMatch(/actions\[0\] \(send_slack_message\): Slack is not configured: set SLACK_WEBHOOK_URL/);
    expect((await h.call('list_workflows', {})).structuredContent.workflows).toEqual([]);
  });

  it('draft → resume (previewed, confirmed) → pause (queued messages cancelled) → archive', async () => {
    const draft = await h.call('automate_communications', { ...base, workflow_name: 'Lifecycle', is_active: false });
    expect(draft.structuredContent).toMatchObject({ phase: 'saved', status: 'draft', version: 1 });
    const id = draft.structuredContent.workflow_id;
    const forged = await h.call('resume_workflow', { workflow_id: id, confirmation_token: 'cst_not_a_real_token' });
    expect(forged.structuredContent.error.message).toMatch(/not one this server issued for resume_workflow/);
    expect(forged.structuredContent.error.details.fresh_preview.confirmation_token).toMatch(/^cst_/);
    const preview = await h.call('resume_workflow', { workflow_id: id });
    expect(preview.structuredContent).toMatchObject({ phase: 'preview', workflow_id: id, trigger: "when a client's health score crosses below 50" });
    const resumed = await h.call('resume_workflow', { workflow_id: id, confirmation_token: preview.structuredContent.confirmation_token });
    expect(resumed.structuredContent).toMatchObject({ phase: 'confirmed', status: 'active', result_id: id });
    // A send window that is closed now keeps the message queued; pausing cancels it.
    const closed = (new Date().getUTCHours() + 3) % 24;
    const v2 = { ...base, workflow_name: 'Lifecycle', workflow_id: id, send_window: { days: ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'], start_hour: Math.min(closed, 22), end_hour: Math.min(closed, 22) + 1 } };
    const p2 = await h.call('automate_communications', v2);
    const c2 = await h.call('automate_communications', { ...v2, confirmation_token: p2.structuredContent.confirmation_token });
    expect(c2.structuredContent).toMatchObject({ phase: 'confirmed', version: 2 });
    await h.call('update_client_info', { client_id: 'acme', health_score: 40 });
    const waiting = await until(() => h.call('get_workflow', { workflow_id: id }), (s) => s.structuredContent.messages.waiting_by_reason.send_window === 1);
    expect(waiting.structuredContent.workflow.version).toBe(2);
    const paused = await h.call('pause_workflow', { workflow_id: id });
    expect(paused.structuredContent).toMatchObject({ status: 'paused', cancelled_messages: 1 });
    expect((await h.call('pause_workflow', { workflow_id: id })).structuredContent.cancelled_messages).toBe(0);
    const archived = await h.call('archive_workflow', { workflow_id: id });
    expect(archived.structuredContent).toMatchObject({ status: 'archived' });
    const again = await h.call('resume_workflow', { workflow_id: id });
    expect(again.structuredContent.error.message).toMatch(/archived and cannot run again/);
    expect(sg.requests).toHaveLength(0);
    await h.call('update_client_info', { client_id: 'acme', health_score: 70 });
  });

  it('a schedule missed while nothing ran fires once for the latest missed time, never a burst', async () => {
    const { workflowId } = await activate(h, {
      workflow_name: 'Every two seconds',
      trigger_type: 'time_based',
      trigger_conditions: { schedule: '*/2 * * * * *' },
      actions: [{ type: 'trigger_webhook', url: `${hooks.url}/tick` }],
    });
    const firedAt = () => hooks.matching(/^POST \/tick/).map((r) => Date.parse((r.body as any).fired_at));
    await until(firedAt, (f) => f.length >= 1);
    await h.close();
    const stoppedAt = Date.now();
    await new Promise((r) => setTimeout(r, 7_000)); // three or four scheduled times pass with nothing running
    const restartedAt = Date.now();
    h = await startInMemory(env);
    await until(firedAt, (f) => f.some((t) => t > stoppedAt));
    await h.call('pause_workflow', { workflow_id: workflowId });
    const missed = firedAt().filter((t) => t > stoppedAt && t <= restartedAt);
    expect(missed).toHaveLength(1);
    expect(restartedAt - missed[0]!).toBeLessThan(2_100);
  }, 30_000);
});

describe('automations in read-only mode', () => {
  it('do not run, and say so at start-up and in integrations_status', async () => {
    const data = tempDataDir();
    const h = await startInMemory(testEnv({ CS_MCP_READ_ONLY: 'true' }, data.dir));
    try {
      const { tools } = await h.client.listTools();
      const names = tools.map((t) => t.name);
      expect(names).toEqual(expect.arrayContaining(['list_workflows', 'get_workflow', 'list_customer_events']));
      for (const t of ['automate_communications', 'run_workflow', 'resume_workflow', 'pause_workflow', 'record_customer_event']) expect(names).not.toContain(t);
      const s = await h.call('integrations_status');
      expect(s.structuredContent.mode).toMatchObject({ read_only: true, automations_running: false, outbox_sending: false });
      expect(h.logs.some((l) => l.includes('automations do not run'))).toBe(true);
    } finally {
      await h.close();
      data.cleanup();
    }
  });
});
