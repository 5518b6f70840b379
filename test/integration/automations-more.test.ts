import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startInMemory, tempDataDir, testEnv, type InMemoryHarness, standInEnv } from '../helpers/mcp.js';
import { activate, settled } from '../helpers/automations.js';
import { until } from '../helpers/until.js';
import { HttpStandIn } from '../stand-ins/http-stand-in.js';
import { startIntercomStandIn, type IntercomStandIn } from '../stand-ins/intercom.js';
import { startMixpanelStandIn, type MixpanelStandIn } from '../stand-ins/mixpanel.js';
import { startSendGridStandIn, type SendGridStandIn } from '../stand-ins/sendgrid.js';

/**
 * Automation behaviour the issue requires beyond automations.test.ts: the remaining steps
 * (send_intercom_email, remove_tag, update_health_score set / clamped), contract_event renewal_reached,
 * reentry after_days, the weekly frequency cap, a contact's own time zone in a send window, unsubscribed
 * and address-less contacts never messaged (and counted), Mixpanel tracking of message steps, and the
 * catch-up limit for missed schedules. SQLite, one in-memory server.
 */

const SG_KEY = 'SG.automations_more_abc.0123456789abcdef';
const IC_TOKEN = 'intercom-automation-more-token';
const HOUR = 3_600_000;
const DAY = 86_400_000;

function mailsTo(sg: SendGridStandIn, email: string): string[] {
  const out: string[] = [];
  for (const r of sg.matching(/^POST \/v3\/mail\/send/)) {
    const b = r.body as any;
    for (const p of b.personalizations ?? []) for (const to of p.to ?? []) if (to.email === email) out.push(p.subject ?? b.subject);
  }
  return out;
}


async function runNow(h: InMemoryHarness, workflowId: string, targets: Record<string, unknown>) {
  const preview = await h.call('run_workflow', { workflow_id: workflowId, ...targets });
  expect(preview.structuredContent, JSON.stringify(preview.structuredContent).slice(0, 2000)).toMatchObject({ success: true, phase: 'preview' });
  const confirmed = await h.call('run_workflow', { workflow_id: workflowId, ...targets, confirmation_token: preview.structuredContent.confirmation_token });
  expect(confirmed.structuredContent, JSON.stringify(confirmed.structuredContent).slice(0, 2000)).toMatchObject({ success: true, phase: 'confirmed' });
  return confirmed.structuredContent;
}

describe('automations: more steps, triggers and limits', () => {
  const data = tempDataDir();
  let sg: SendGridStandIn;
  let ic: IntercomStandIn;
  let mp: MixpanelStandIn;
  let hooks: HttpStandIn;
  let h: InMemoryHarness;

  const status = async (id: string) => (await h.call('get_workflow', { workflow_id: id })).structuredContent;
  const enrolledSubjects = async (id: string) =>
    (await h.services.store.db.selectFrom('workflow_enrollments').select(['client_id', 'contact_id', 'occurrence_key']).where('workflow_id', '=', id).orderBy('enrolled_at').execute());
  const client = async (id: string) => (await h.call('get_client_overview', { client_id: id })).structuredContent;

  beforeAll(async () => {
    sg = await startSendGridStandIn({ apiKey: SG_KEY });
    ic = await startIntercomStandIn({ token: IC_TOKEN });
    mp = await startMixpanelStandIn();
    hooks = await new HttpStandIn({ name: 'receiver' }, () => ({ status: 200, body: {} })).start();
    h = await startInMemory(
      testEnv(
        {
          ...standInEnv({ sendgrid: { url: sg.url, apiKey: SG_KEY }, intercom: { url: ic.url, token: IC_TOKEN } }),
          MIXPANEL_API_SECRET: 'mp-secret',
          MIXPANEL_PROJECT_TOKEN: 'mp-token',
          MIXPANEL_API_HOST: mp.url,
          MIXPANEL_FLUSH_INTERVAL_MS: '50',
          AUTOMATION_WEBHOOK_ALLOWED_HOSTS: new URL(hooks.url).origin,
        AUTOMATION_WEBHOOK_PRIVATE_ORIGINS: new URL(hooks.url).origin, // the stand-in is on 127.0.0.1
          AUTOMATION_WEBHOOK_SECRET: 'whsec_automation_more_secret',
          CAMPAIGN_DISPATCH_POLL_MS: '50',
          AUTOMATION_TICK_MS: '50',
          AUTOMATION_SWEEP_MS: '100',
          AUTOMATION_LEASE_MS: '3000',
          AUTOMATION_MAX_MESSAGES_PER_CONTACT_PER_DAY: '5',
          AUTOMATION_MAX_MESSAGES_PER_CONTACT_PER_WEEK: '2',
          AUTOMATION_CATCH_UP_MINUTES: '60',
        },
        data.dir,
      ),
    );
  });
  afterAll(async () => {
    await h?.close();
    await Promise.all([sg?.stop(), ic?.stop(), mp?.stop(), hooks?.stop()]);
    data.cleanup();
  });

  /** A client with one champion, known to Intercom too. */
  const account = async (id: string, email: string, extra: Record<string, unknown> = {}, contact: Record<string, unknown> = {}) => {
    await h.call('register_client', { client_id: id, name: id, tier: 'starter', owner_email: 'dana@ourco.test', ...extra });
    await h.call('upsert_contact', { client_id: id, email, first_name: 'Pat', role: 'champion', ...contact });
    return ic.seedContact({ email });
  };

  it('send_intercom_email, remove_tag and update_health_score (set, and adjust clamped to 0–100) each do what the definition says', async () => {
    const sam = await account('stepsco', 'sam@stepsco.example', { health_score: 30 });
    ic.tags.set('7900', { type: 'tag', id: '7900', name: 'at-risk' });
    ic.tags.set('7901', { type: 'tag', id: '7901', name: 'keep-me' });
    sam.tags.push('7900', '7901');
    const { workflowId } = await activate(h, {
      workflow_name: 'Steps tour',
      trigger_type: 'custom',
      actions: [
        { type: 'send_intercom_email', subject: 'Hello {{ client.name }}', body: 'Hi {{ contact.first_name }}, a note from us.' },
        { type: 'remove_tag', tag: 'at-risk' },
        { type: 'update_health_score', set: 90 },
        { type: 'update_health_score', adjust: 40 }, // 90 + 40 → 100
        { type: 'update_health_score', adjust: -100 }, // 100 − 100 → 0
        { type: 'update_health_score', adjust: -5 }, // 0 − 5 → 0, never below
        { type: 'update_health_score', set: 55 },
      ],
    });
    await runNow(h, workflowId, { client_ids: ['stepsco'] });
    const s = await until(() => status(workflowId), (x) => x.enrollments.completed === 1 && x.messages.by_state.sent === 1);
    // The email went through Intercom's messages API, as an email to that contact, rendered.
    const emails = ic.messages.filter((m) => m.to.id === sam.id);
    expect(emails).toHaveLength(1);
    expect(emails[0]).toMatchObject({ message_type: 'email', subject: 'Hello stepsco' });
    expect(emails[0]!.body).toContain('Hi Pat, a note from us.');
    expect(s.steps[0]).toMatchObject({ type: 'send_intercom_email' });
    // remove_tag detached exactly that tag.
    expect(sam.tags).toEqual(['7901']);
    expect(ic.matching(/^DELETE \/contacts\/[^/]+\/tags\/7900$/)).toHaveLength(1);
    // Each health step, in order, with the clamping; the roster ends at the last one.
    const runs = await h.services.store.db
      .selectFrom('workflow_step_runs')
      .select(['step_index', 'state', 'detail'])
      .where('workflow_id', '=', workflowId)
      .where('action_type', '=', 'update_health_score')
      .orderBy('step_index')
      .execute();
    expect(runs.map((r) => ({ step: r.step_index, state: r.state, ...JSON.parse(r.detail) }))).toEqual([
      { step: 2, state: 'done', from: 30, to: 90 },
      { step: 3, state: 'done', from: 90, to: 100 },
      { step: 4, state: 'done', from: 100, to: 0 },
      { step: 5, state: 'done', from: 0, to: 0 },
      { step: 6, state: 'done', from: 0, to: 55 },
    ]);
    expect((await client('stepsco')).client.health_score).toBe(55);
    const changes = await h.services.store.events.list({ client_id: 'stepsco', names: ['health_score_changed'] }, 20);
    expect(changes.events.filter((e) => e.source === 'automation').map((e) => e.properties.to).sort((a: any, b: any) => a - b)).toEqual([0, 55, 90, 100]); // 0 → 0 is no change: nothing recorded
    await h.call('archive_workflow', { workflow_id: workflowId });
  });

  it('contract_event renewal_reached fires once per client per renewal date; a moved date fires again', async () => {
    const day = (d: number) => new Date(Date.now() + d * DAY).toISOString().slice(0, 10);
    await h.call('register_client', { client_id: 'renewco', name: 'Renew Co', tier: 'enterprise', renewal_date: day(30) });
    await h.call('register_client', { client_id: 'donecos', name: 'Done Cos', tier: 'enterprise', renewal_date: day(0) }); // reached before activation
    const { workflowId, preview } = await activate(h, {
      workflow_name: 'Renewal day',
      trigger_type: 'contract_event',
      trigger_conditions: { event_type: 'renewal_reached' },
      audience: { tier: 'enterprise' },
      actions: [{ type: 'trigger_webhook', url: `${hooks.url}/renewal`, payload: { kind: 'renewal' } }],
    });
    expect(preview.entering_now).toMatchObject({ examples: [`Done Cos (renews ${day(0)})`] }); // past the date now, but not enrolled (enroll_existing is false)
    const posts = () => hooks.matching(/^POST \/renewal/).map((r) => `${(r.body as any).client.id} ${(r.body as any).client.renewal_date}`);
    await h.call('update_client_info', { client_id: 'renewco', renewal_date: day(0) });
    await until(posts, (p) => p.length === 1);
    await settled(h); // several sweeps later: still once; donecos (reached before activation) not at all
    expect(posts()).toEqual([`renewco ${day(0)}`]);
    // A renewal pushed out then reached again (another date) is a new occurrence.
    await h.call('update_client_info', { client_id: 'renewco', renewal_date: day(-1) });
    await until(posts, (p) => p.length === 2);
    await settled(h);
    expect(posts()).toEqual([`renewco ${day(0)}`, `renewco ${day(-1)}`]);
    // A date still in the future does not fire.
    await h.call('update_client_info', { client_id: 'renewco', renewal_date: day(3) });
    await settled(h);
    expect(posts()).toHaveLength(2);
    await h.call('archive_workflow', { workflow_id: workflowId });
  });

  it('reentry after_days: a second occurrence within the period does not enrol; once the period has passed it does', async () => {
    await account('reentryco', 'rita@reentryco.example');
    const { workflowId, preview } = await activate(h, {
      workflow_name: 'Re-entry after 2 days',
      trigger_type: 'event_based',
      trigger_conditions: { event: 'export_failed' },
      reentry: { after_days: 2 },
      actions: [{ type: 'trigger_webhook', url: `${hooks.url}/reentry` }],
    });
    expect(preview.definition.reentry).toEqual({ mode: 'after_days', days: 2 });
    const record = () => h.call('record_customer_event', { event: 'export_failed', contact_email: 'rita@reentryco.example' });
    await record();
    await until(() => enrolledSubjects(workflowId), (e) => e.length === 1);
    await record(); // inside the period
    await settled(h);
    expect(await enrolledSubjects(workflowId)).toHaveLength(1);
    // The gate was taken 3 days ago (as if time had passed): the next occurrence enrols again.
    await h.services.store.db.updateTable('workflow_marks').set({ at: new Date(Date.now() - 3 * DAY).toISOString() }).where('workflow_id', '=', workflowId).where('mark', 'like', 'gate:%').execute();
    await record();
    await until(() => enrolledSubjects(workflowId), (e) => e.length === 2);
    await record(); // the gate is closed again for another 2 days
    await settled(h);
    expect(await enrolledSubjects(workflowId)).toHaveLength(2);
    await until(() => hooks.matching(/^POST \/reentry/), (r) => r.length === 2);
    await h.call('archive_workflow', { workflow_id: workflowId });
  });

  it('the weekly frequency cap holds across two workflows (the daily cap is not what stops it)', async () => {
    await account('weekco', 'wendy@weekco.example');
    const wf = (name: string, event: string) =>
      activate(h, {
        workflow_name: name,
        trigger_type: 'event_based',
        trigger_conditions: { event },
        reentry: 'every_occurrence',
        actions: [{ type: 'send_email', subject: `${name} {{ event.properties.n }}`, body: 'Hi {{ contact.first_name }}' }],
      });
    const a = await wf('Week A', 'week_a');
    const b = await wf('Week B', 'week_b');
    // Two sends in the week (the weekly cap is 2; the daily one is 5).
    await h.call('record_customer_event', { event: 'week_a', contact_email: 'wendy@weekco.example', properties: { n: 1 } });
    await until(() => mailsTo(sg, 'wendy@weekco.example'), (m) => m.length === 1);
    await h.call('record_customer_event', { event: 'week_a', contact_email: 'wendy@weekco.example', properties: { n: 2 } });
    await until(() => mailsTo(sg, 'wendy@weekco.example'), (m) => m.length === 2);
    await h.call('record_customer_event', { event: 'week_b', contact_email: 'wendy@weekco.example', properties: { n: 3 } });
    const sb = await until(() => status(b.workflowId), (x) => x.messages.waiting_by_reason.frequency_cap === 1);
    expect(sb.messages.suppressed_by_cap).toEqual({ skipped: 0, waiting: 1 });
    const row = await h.services.store.db.selectFrom('outbox').selectAll().where('source_id', '=', b.workflowId).executeTakeFirstOrThrow();
    expect(row).toMatchObject({ state: 'queued', error_code: 'frequency_cap' });
    expect(row.error_message).toMatch(/5 a day, 2 a week/);
    // It waits for a week after the first send, not for a day.
    expect(Date.parse(row.not_before)).toBeGreaterThan(Date.now() + 6 * DAY);
    expect(mailsTo(sg, 'wendy@weekco.example')).toEqual(['Week A 1', 'Week A 2']);
    for (const x of [a, b]) await h.call('archive_workflow', { workflow_id: x.workflowId });
  });

  it("a contact's own time zone wins over the send window's", async () => {
    // Fixed-offset zones (Etc/GMT-k is UTC+k all year), chosen from the hour now so that no hour boundary
    // can change the answer: the window (09:00-16:00 in its own zone) is around midnight there now, and
    // around noon in the contact's zone, hours away from either edge.
    const H = new Date().getUTCHours();
    const zone = (k: number) => (k === 0 ? 'Etc/GMT' : k > 0 ? `Etc/GMT-${k}` : `Etc/GMT+${-k}`);
    const windowOffset = H <= 12 ? -H : 24 - H; // its local time is about 00:xx
    const contactOffset = 12 - H; // about 12:xx
    await account('tzco', 'zed@tzco.example', {}, { timezone: zone(contactOffset) });
    await h.call('upsert_contact', { client_id: 'tzco', email: 'utc@tzco.example', first_name: 'Uma', role: 'champion' });
    ic.seedContact({ email: 'utc@tzco.example' });
    const { workflowId } = await activate(h, {
      workflow_name: 'Windowed',
      trigger_type: 'custom',
      send_window: { days: ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'], start_hour: 9, end_hour: 16, timezone: zone(windowOffset) },
      actions: [{ type: 'send_email', subject: 'In your window', body: 'Hi {{ contact.first_name }}' }],
    });
    await runNow(h, workflowId, { client_ids: ['tzco'] });
    await until(() => mailsTo(sg, 'zed@tzco.example'), (m) => m.length === 1);
    const s = await until(() => status(workflowId), (x) => x.messages.by_state.sent === 1 && x.messages.waiting_by_reason.send_window === 1);
    expect(s.messages.by_state).toMatchObject({ sent: 1, queued: 1 });
    expect(mailsTo(sg, 'utc@tzco.example')).toEqual([]);
    const waiting = await h.services.store.db.selectFrom('outbox').selectAll().where('source_id', '=', workflowId).where('state', '=', 'queued').executeTakeFirstOrThrow();
    expect(waiting.recipient_email).toBe('utc@tzco.example');
    // It waits for the window's opening in the window's own zone: 09:00 there.
    const opens = new Date(waiting.not_before);
    expect(opens.getUTCHours()).toBe((9 - windowOffset + 24) % 24);
    expect(Date.parse(waiting.not_before)).toBeGreaterThan(Date.now());
    expect(opens.getUTCMinutes()).toBe(0);
    await h.call('archive_workflow', { workflow_id: workflowId });
  });

  it('never messages unsubscribed contacts or contacts without the address, and counts them', async () => {
    await account('consentco', 'ok@consentco.example');
    for (const email of ['gone@consentco.example', 'noaddr@consentco.example']) {
      await h.call('upsert_contact', { client_id: 'consentco', email, role: 'champion' });
      ic.seedContact({ email });
    }
    await h.call('set_contact_subscription', { email: 'gone@consentco.example', subscribed: false, reason: 'asked us' });
    // A contact whose address is missing (e.g. imported without one).
    await h.services.store.db.updateTable('contacts').set({ email: '' }).where('email', '=', 'noaddr@consentco.example').execute();
    const { workflowId } = await activate(h, {
      workflow_name: 'Consent check',
      trigger_type: 'custom',
      actions: [
        { type: 'send_email', subject: 'Hello', body: 'Hi {{ contact.first_name | fallback: "there" }}' },
        { type: 'send_in_app_notification', body: 'Hi in the app' },
      ],
    });
    await runNow(h, workflowId, { client_ids: ['consentco'] });
    const s = await until(() => status(workflowId), (x) => x.enrollments.completed === 1 && x.messages.by_state.sent === 2);
    expect(s.messages.not_sent_by_reason).toEqual({ unsubscribed: 2, missing_address: 2 });
    expect(s.messages.by_state).toMatchObject({ sent: 2, skipped: 4 });
    expect(mailsTo(sg, 'ok@consentco.example')).toEqual(['Hello']);
    expect(mailsTo(sg, 'gone@consentco.example')).toEqual([]);
    expect(sg.matching(/^POST \/v3\/mail\/send/).filter((r) => JSON.stringify(r.body).includes('consentco') && !JSON.stringify(r.body).includes('ok@consentco'))).toEqual([]);
    const gone = [...ic.contacts.values()].find((c) => c.email === 'gone@consentco.example')!;
    const ok = [...ic.contacts.values()].find((c) => c.email === 'ok@consentco.example')!;
    expect(ic.messages.filter((m) => m.to.id === gone.id)).toEqual([]);
    expect(ic.messages.filter((m) => m.to.id === ok.id)).toHaveLength(1);
    // Each step's record counts who it left out, by reason.
    const runs = await h.services.store.db.selectFrom('workflow_step_runs').select(['step_index', 'detail']).where('workflow_id', '=', workflowId).orderBy('step_index').execute();
    expect(runs.map((r) => JSON.parse(r.detail))).toEqual([
      { channel: 'email', queued: 1, not_sent: { unsubscribed: 1, missing_address: 1 } },
      { channel: 'intercom_inapp', queued: 1, not_sent: { unsubscribed: 1, missing_address: 1 } },
    ]);
    await h.call('archive_workflow', { workflow_id: workflowId });
  });

  it('tracks automation_action_executed in Mixpanel after a message step', async () => {
    await account('mixco', 'max@mixco.example');
    const { workflowId } = await activate(h, {
      workflow_name: 'Tracked',
      trigger_type: 'event_based',
      trigger_conditions: { event: 'mix_signup' },
      actions: [{ type: 'send_email', subject: 'Welcome', body: 'Hi {{ contact.first_name }}' }],
    });
    await h.call('record_customer_event', { event: 'mix_signup', contact_email: 'max@mixco.example' });
    await until(() => mailsTo(sg, 'max@mixco.example'), (m) => m.length === 1);
    const tracked = await until(
      () => [...mp.events.values()].filter((e) => e.event === 'automation_action_executed' && e.properties.workflow_id === workflowId),
      (x) => x.length >= 1,
    );
    expect(tracked).toHaveLength(1);
    expect(tracked[0]!.properties).toMatchObject({ workflow_id: workflowId, workflow_name: 'Tracked', trigger_type: 'event_based', action_type: 'send_email', channel: 'email', client_id: 'mixco', step: 0 });
    await h.call('archive_workflow', { workflow_id: workflowId });
  });

  it('missed schedules: one older than AUTOMATION_CATCH_UP_MINUTES does not fire; a recent one fires once', async () => {
    await h.call('register_client', { client_id: 'cronco', name: 'Cron Co', tier: 'starter', segments: ['cron-test'] });
    const at = (ms: number) => new Date(ms);
    const cronAt = (d: Date, daily: boolean) => `${d.getUTCMinutes()} ${daily ? d.getUTCHours() : '*'} * * *`;
    const fired = (path: string) => hooks.matching(new RegExp(`^POST /${path}`)).map((r) => (r.body as any).fired_at as string);
    const schedule = async (name: string, schedule: string, path: string, nextFireAt: string) => {
      const { workflowId } = await activate(h, {
        workflow_name: name,
        trigger_type: 'time_based',
        trigger_conditions: { schedule, timezone: 'UTC' },
        audience: { segment: 'cron-test' },
        actions: [{ type: 'trigger_webhook', url: `${hooks.url}/${path}` }],
      });
      // As if nothing had run since nextFireAt: that run (and any after it) were missed.
      await h.services.store.db.updateTable('workflows').set({ next_fire_at: nextFireAt }).where('workflow_id', '=', workflowId).execute();
      return workflowId;
    };
    const minute = (ms: number) => Math.floor(ms / 60_000) * 60_000;
    // Daily at a time 3 hours ago: the only missed run is 3 hours old (> 60 minutes): skipped.
    const old = at(minute(Date.now() - 3 * HOUR));
    const oldId = await schedule('Old daily', cronAt(old, true), 'old', old.toISOString());
    // Daily at a time 3 hours ago, missed for three days: the latest is 3 hours old: skipped too.
    const olds = await schedule('Old daily, many missed', cronAt(old, true), 'olds', new Date(old.getTime() - 3 * DAY).toISOString());
    // Hourly at a minute 20 minutes ago, missed for five hours: only the latest (20 minutes ago) fires, once.
    const recent = at(minute(Date.now() - 20 * 60_000));
    const recentId = await schedule('Recent hourly', cronAt(recent, false), 'recent', new Date(recent.getTime() - 5 * HOUR).toISOString());
    await until(() => fired('recent'), (f) => f.length === 1);
    const advanced = async (id: string) => (await h.services.store.db.selectFrom('workflows').select(['next_fire_at', 'last_fired_at']).where('workflow_id', '=', id).executeTakeFirstOrThrow());
    await until(() => Promise.all([oldId, olds].map(advanced)), (xs) => xs.every((x) => x.next_fire_at !== null && Date.parse(x.next_fire_at) > Date.now()));
    await settled(h);
    expect(fired('recent')).toEqual([recent.toISOString()]);
    expect(fired('old')).toEqual([]);
    expect(fired('olds')).toEqual([]);
    expect(h.logs.filter((l) => l.includes('missed by more than AUTOMATION_CATCH_UP_MINUTES')).length).toBeGreaterThanOrEqual(2);
    expect((await advanced(recentId)).last_fired_at).toBe(recent.toISOString());
    for (const id of [oldId, olds, recentId]) await h.call('archive_workflow', { workflow_id: id });
  });
});
