import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startInMemory, tempDataDir, testEnv, type InMemoryHarness, standInEnv } from '../helpers/mcp.js';
import { person } from '../helpers/approval.js';
import { until } from '../helpers/until.js';
import { startIntercomStandIn, type IntercomStandIn } from '../stand-ins/intercom.js';
import { startMixpanelStandIn, type MixpanelStandIn } from '../stand-ins/mixpanel.js';
import { startSendGridStandIn, type SendGridStandIn } from '../stand-ins/sendgrid.js';

/**
 * Safety policies of issue 9 that the other suites do not drive: approval of automations, the campaign
 * frequency cap, idempotency keys on notes, events and counters (and replays of the other send tools),
 * and the audit log's pagination, filters, retention and completeness.
 */

const SG_KEY = 'SG.policieskey_abcdefghij.klmnopqrstuvwxyz0123';
const IC_TOKEN = 'intercom-policies-token';


/** Mail-send personalizations SendGrid received for an address. */
const mailsTo = (sg: SendGridStandIn, email: string) =>
  sg
    .matching(/^POST \/v3\/mail\/send/)
    .flatMap((r) => ((r.body as any).personalizations ?? []).map((p: any) => ({ p, body: r.body as any })))
    .filter(({ p }) => (p.to ?? []).some((t: any) => t.email === email))
    .map(({ p, body }) => ({ subject: (p.subject ?? body.subject) as string }));

describe('safety policies (in memory)', () => {
  const data = tempDataDir();
  let sg: SendGridStandIn;
  let ic: IntercomStandIn;
  let mp: MixpanelStandIn;
  const env = (extra: Record<string, string> = {}, dir = data.dir) =>
    testEnv(
      {
        ...standInEnv({ sendgrid: { url: sg.url, apiKey: SG_KEY }, intercom: { url: ic.url, token: IC_TOKEN } }),
        INTERCOM_ADMIN_ID: '991',
        MIXPANEL_API_SECRET: 'mp-secret',
        MIXPANEL_PROJECT_TOKEN: 'mp-token',
        MIXPANEL_API_HOST: mp.url,
        MIXPANEL_FLUSH_INTERVAL_MS: '60000',
        CAMPAIGN_DISPATCH_POLL_MS: '50',
        AUTOMATION_TICK_MS: '50',
        AUTOMATION_SWEEP_MS: '150',
        ...extra,
      },
      dir,
    );
  const open: InMemoryHarness[] = [];
  const start = async (extra: Record<string, string> = {}, p?: ReturnType<typeof person>, name?: string, dir?: string) => {
    const h = await startInMemory(env(extra, dir), {}, { onElicit: p?.onElicit, name });
    open.push(h);
    return h;
  };

  beforeAll(async () => {
    sg = await startSendGridStandIn({ apiKey: SG_KEY });
    ic = await startIntercomStandIn({ token: IC_TOKEN });
    mp = await startMixpanelStandIn();
    const h = await start();
    await h.call('register_client', { client_id: 'acme', name: 'Acme Corp', tier: 'enterprise', health_score: 70 });
    await h.call('upsert_contact', { client_id: 'acme', email: 'ann@acme.test', first_name: 'Ann', external_user_id: 'u-ann', role: 'champion' });
    await h.call('register_client', { client_id: 'capco', name: 'Cap Co', tier: 'starter' });
    await h.call('upsert_contact', { client_id: 'capco', email: 'cap@capco.test', first_name: 'Cap' });
    ic.seedContact({ email: 'ann@acme.test', name: 'Ann Smith', external_id: 'u-ann' });
  });
  afterEach(async () => {
    while (open.length > 1) await open.pop()!.close();
    sg.clearFaults();
    ic.clearFaults();
    mp.clearFaults();
  });
  afterAll(async () => {
    while (open.length) await open.pop()!.close();
    await Promise.all([sg.stop(), ic.stop(), mp.stop()]);
    data.cleanup();
  });

  describe('approval of automations through elicitation', () => {
    const workflow = (name: string) => ({
      workflow_name: name,
      trigger_type: 'custom',
      audience: { contact_roles: ['champion'] },
      actions: [{ type: 'send_email', subject: `${name} for {{ client.name }}`, body: 'Hi {{ contact.first_name | fallback: "there" }}, a note from us.' }],
    });
    const statusOf = async (h: InMemoryHarness, id: string) => (await h.call('get_workflow', { workflow_id: id })).structuredContent;

    it('activating (automate_communications with its token): decline starts nothing and says so; accept activates', async () => {
      const p = person();
      const h = await start({}, p);
      const args = workflow('Approval activate');
      const preview = await h.call('automate_communications', args);
      expect(preview.structuredContent).toMatchObject({ success: true, phase: 'preview' });
      expect(p.asked).toHaveLength(0); // a preview asks nothing
      const token = preview.structuredContent.confirmation_token;
      p.answers({ action: 'decline' });
      const declined = await h.call('automate_communications', { ...args, confirmation_token: token });
      expect(declined.structuredContent.error).toMatchObject({ code: 'declined', retryable: false });
      expect(declined.structuredContent.error.message).toMatch(/declined the approval request: nothing was sent/);
      expect(p.asked).toHaveLength(1);
      expect(p.asked[0]!.message).toMatch(/^1\. Action: activate an automation/m);
      expect(p.asked[0]!.message).toMatch(/^- Workflow name: “Approval activate”$/m);
      expect(p.asked[0]!.message).toMatch(/Hi Ann, a note from us\./);
      const listed = await h.call('list_workflows', {});
      expect(listed.structuredContent.workflows.filter((w: any) => w.name === 'Approval activate')).toEqual([]);
      p.answers({ action: 'accept', content: { decision: 'send' } });
      const ok = await h.call('automate_communications', { ...args, confirmation_token: token });
      expect(ok.structuredContent).toMatchObject({ success: true, phase: 'confirmed', status: 'active' });
      expect(p.asked).toHaveLength(2);
      expect((await statusOf(h, ok.structuredContent.result_id)).workflow.status).toBe('active');
      await h.call('pause_workflow', { workflow_id: ok.structuredContent.result_id });
    });

    it('resume_workflow: decline leaves the workflow a draft; accept activates it', async () => {
      const p = person();
      const h = await start({}, p);
      const draft = await h.call('automate_communications', { ...workflow('Approval resume'), is_active: false });
      expect(draft.structuredContent).toMatchObject({ phase: 'saved', status: 'draft' });
      expect(p.asked).toHaveLength(0); // a draft sends nothing, asks nothing
      const id = draft.structuredContent.workflow_id;
      const preview = await h.call('resume_workflow', { workflow_id: id });
      p.answers({ action: 'cancel' });
      const cancelled = await h.call('resume_workflow', { workflow_id: id, confirmation_token: preview.structuredContent.confirmation_token });
      expect(cancelled.structuredContent.error).toMatchObject({ code: 'declined' });
      expect(cancelled.structuredContent.error.message).toMatch(/cancelled the approval request: nothing was sent/);
      expect(p.asked[0]!.message).toMatch(/^1\. Action: resume an automation/m);
      expect(p.asked[0]!.message).toMatch(/^- Workflow name: “Approval resume”$/m);
      expect((await statusOf(h, id)).workflow.status).toBe('draft');
      p.answers({ action: 'accept', content: { decision: 'send' } });
      const ok = await h.call('resume_workflow', { workflow_id: id, confirmation_token: preview.structuredContent.confirmation_token });
      expect(ok.structuredContent).toMatchObject({ phase: 'confirmed', status: 'active', result_id: id });
      expect((await statusOf(h, id)).workflow.status).toBe('active');
      await h.call('pause_workflow', { workflow_id: id });
    });

    it('run_workflow: decline enrols and sends nothing; accept enrols and the email goes out', async () => {
      const p = person();
      const h = await start({}, p);
      const draft = await h.call('automate_communications', { ...workflow('Approval run'), is_active: false });
      const id = draft.structuredContent.workflow_id;
      const preview = await h.call('run_workflow', { workflow_id: id, client_ids: ['acme'] });
      expect(preview.structuredContent).toMatchObject({ phase: 'preview', subjects: { count: 1 } });
      p.answers({ action: 'accept', content: { decision: 'do_not_send' } });
      const no = await h.call('run_workflow', { workflow_id: id, client_ids: ['acme'], confirmation_token: preview.structuredContent.confirmation_token });
      expect(no.structuredContent.error).toMatchObject({ code: 'declined' });
      expect(no.structuredContent.error.message).toMatch(/answered "No, send nothing" to the approval request: nothing was sent/);
      expect(p.asked[0]!.message).toMatch(/^1\. Action: run an automation now$/m);
      expect(p.asked[0]!.message).toMatch(/^- Workflow name: “Approval run”$/m);
      expect(p.asked[0]!.message).toMatch(/^2\. Recipients: 1; messages: 1$/m);
      expect(p.asked[0]!.message).toMatch(/^3\. Channels: email$/m);
      expect((await statusOf(h, id)).enrollments.total).toBe(0);
      p.answers({ action: 'accept', content: { decision: 'send' } });
      const ok = await h.call('run_workflow', { workflow_id: id, client_ids: ['acme'], confirmation_token: preview.structuredContent.confirmation_token });
      expect(ok.structuredContent).toMatchObject({ phase: 'confirmed', enrolled: 1 });
      await until(() => mailsTo(sg, 'ann@acme.test').filter((m) => m.subject === 'Approval run for Acme Corp').length, (n) => n === 1, { message: 'the run email' });
      expect(p.asked).toHaveLength(2);
    });
  });

  describe('CAMPAIGN_FREQUENCY_CAP', () => {
    const campaign = (name: string) => ({ campaign_name: name, template_type: 'newsletter', subject_line: `${name}`, body_text: 'Hello {{ contact.first_name }}', target_client_ids: ['capco'] });
    const send = async (h: InMemoryHarness, name: string) => {
      const preview = await h.call('send_personalized_email', campaign(name));
      const confirmed = await h.call('send_personalized_email', { ...campaign(name), confirmation_token: preview.structuredContent.confirmation_token });
      expect(confirmed.structuredContent).toMatchObject({ success: true, phase: 'confirmed', queued: 1 });
      return confirmed.structuredContent.campaign_id as string;
    };
    const status = async (h: InMemoryHarness, id: string) => (await h.call('get_campaign_status', { campaign_id: id })).structuredContent.campaign;

    it('with the cap on, a campaign to a contact over the cap is held (queued, counted by reason), not sent', async () => {
      const h = await start({ CAMPAIGN_FREQUENCY_CAP: 'true', AUTOMATION_MAX_MESSAGES_PER_CONTACT_PER_DAY: '1' });
      const first = await send(h, 'Cap one');
      await until(() => status(h, first), (c) => c.totals.sent === 1, { message: 'the first campaign sent' });
      const second = await send(h, 'Cap two');
      const held = await until(() => status(h, second), (c) => c.waiting_by_reason?.frequency_cap === 1, { message: 'the second campaign held by the cap' });
      expect(held.totals).toMatchObject({ sent: 0, queued: 1, failed: 0 });
      const row = await h.services.store.db.selectFrom('outbox').selectAll().where('source_id', '=', second).executeTakeFirstOrThrow();
      expect(row).toMatchObject({ state: 'queued', error_code: 'frequency_cap' });
      expect(Date.parse(row.not_before)).toBeGreaterThan(Date.now() + 3_600_000); // waits about a day: nothing lost
      expect(mailsTo(sg, 'cap@capco.test').map((m) => m.subject)).toEqual(['Cap one']);
    });

    it('with the cap off (the default), campaigns are not held by it', async () => {
      const h = await start({ AUTOMATION_MAX_MESSAGES_PER_CONTACT_PER_DAY: '1' });
      const id = await send(h, 'No cap');
      await until(() => status(h, id), (c) => c.totals.sent === 1, { message: 'sent despite an earlier message today' });
    });
  });

  describe('idempotency_key on notes, events, counters and every send tool', () => {
    it('intercom_create_note: a repeat adds no note and says replayed; other content under the key is conflict', async () => {
      const h = await start();
      const before = ic.notes.length;
      const args = { user_email: 'ann@acme.test', body: 'Called about renewal', idempotency_key: 'note-1' };
      const first = await h.call('intercom_create_note', args);
      const again = await h.call('intercom_create_note', args);
      expect(first.structuredContent.replayed).toBeUndefined();
      expect(again.structuredContent).toMatchObject({ success: true, replayed: true, note_id: first.structuredContent.note_id });
      expect(ic.notes.length - before).toBe(1);
      const other = await h.call('intercom_create_note', { ...args, body: 'Something else' });
      expect(other.structuredContent.error).toMatchObject({ code: 'conflict', details: { policy: 'idempotency' } });
      expect(ic.notes.length - before).toBe(1);
    });

    it('intercom_track_event: a repeat records nothing more; other content is conflict', async () => {
      const h = await start();
      const sent = () => ic.events.filter((e) => e.event_name === 'renewal-call-held').length;
      const args = { user_email: 'ann@acme.test', event_name: 'renewal-call-held', metadata: { minutes: 30 }, idempotency_key: 'event-1' };
      await h.call('intercom_track_event', args);
      const again = await h.call('intercom_track_event', args);
      expect(again.structuredContent).toMatchObject({ success: true, replayed: true, event_name: 'renewal-call-held' });
      expect(sent()).toBe(1);
      const recorded = await h.call('list_customer_events', { client_id: 'acme', names: ['renewal-call-held'] });
      expect(recorded.structuredContent.events).toHaveLength(1);
      const other = await h.call('intercom_track_event', { ...args, metadata: { minutes: 45 } });
      expect(other.structuredContent.error).toMatchObject({ code: 'conflict', details: { policy: 'idempotency' } });
      expect(sent()).toBe(1);
    });

    it('mixpanel_increment and mixpanel_track_usage_engagement: a repeat adds nothing more; other content is conflict', async () => {
      const h = await start();
      const inc = { distinct_id: 'u-keyed', increments: { logins: 1 }, idempotency_key: 'inc-1' };
      await h.call('mixpanel_increment', inc);
      const incAgain = await h.call('mixpanel_increment', inc);
      expect(incAgain.structuredContent).toMatchObject({ success: true, replayed: true });
      expect(mp.profiles.get('u-keyed')?.logins).toBe(1);
      const incOther = await h.call('mixpanel_increment', { ...inc, increments: { logins: 5 } });
      expect(incOther.structuredContent.error).toMatchObject({ code: 'conflict', details: { policy: 'idempotency' } });

      const usage = { distinct_id: 'u-keyed', feature: 'dashboards', duration_seconds: 60, idempotency_key: 'usage-1' };
      const first = await h.call('mixpanel_track_usage_engagement', usage);
      const again = await h.call('mixpanel_track_usage_engagement', usage);
      expect(again.structuredContent).toMatchObject({ success: true, replayed: true, insert_id: first.structuredContent.insert_id });
      const other = await h.call('mixpanel_track_usage_engagement', { ...usage, duration_seconds: 61 });
      expect(other.structuredContent.error).toMatchObject({ code: 'conflict', details: { policy: 'idempotency' } });
      await h.call('mixpanel_flush', {});
      expect(mp.profiles.get('u-keyed')).toMatchObject({ logins: 1, feature_uses: 1, usage_seconds: 60, 'uses:dashboards': 1 });
      expect([...mp.events.values()].filter((e) => e.event === 'feature_used' && e.properties.distinct_id === 'u-keyed')).toHaveLength(1);
    });

    it('sendgrid_send_template_email and intercom_send_message: a repeat is replayed and sends nothing; other content is conflict', async () => {
      const h = await start();
      const template = { template_id: 'd-0123456789abcdef0123456789abcdef', to: [{ email: 'tpl@else.test' }], idempotency_key: 'tpl-1' };
      const sends = () => sg.matching(/^POST \/v3\/mail\/send/).length;
      const before = sends();
      const first = await h.call('sendgrid_send_template_email', template);
      expect(first.structuredContent).toMatchObject({ success: true, accepted: 1 });
      const again = await h.call('sendgrid_send_template_email', template);
      expect(again.structuredContent).toMatchObject({ success: true, replayed: true, accepted: 1 });
      expect(sends() - before).toBe(1);
      const otherTpl = await h.call('sendgrid_send_template_email', { ...template, to: [{ email: 'tpl2@else.test' }] });
      expect(otherTpl.structuredContent.error).toMatchObject({ code: 'conflict', details: { policy: 'idempotency' } });
      expect(sends() - before).toBe(1);

      const msgs = ic.messages.length;
      const msg = { user_email: 'ann@acme.test', message_type: 'inapp', body: 'Keyed hello', idempotency_key: 'ic-msg-1' };
      const m1 = await h.call('intercom_send_message', msg);
      const m2 = await h.call('intercom_send_message', msg);
      expect(m2.structuredContent).toMatchObject({ success: true, replayed: true, message_id: m1.structuredContent.message_id });
      expect(ic.messages.length - msgs).toBe(1);
      const otherMsg = await h.call('intercom_send_message', { ...msg, body: 'Other words' });
      expect(otherMsg.structuredContent.error).toMatchObject({ code: 'conflict', details: { policy: 'idempotency' } });
      expect(ic.messages.length - msgs).toBe(1);
    });
  });

  describe('templates: | raw and line breaks in subjects', () => {
    it('a typed subject with CR/LF is invalid_input on every direct send tool, and nothing is sent', async () => {
      const h = await start();
      const before = sg.requests.length + ic.messages.length;
      const calls: Array<[string, Record<string, unknown>]> = [
        ['sendgrid_send_email', { to: 'crlf@else.test', subject: 'Hello\r\nBcc: victim@else.test', text: 'x' }],
        ['sendgrid_send_bulk_emails', { recipients: [{ email: 'crlf@else.test' }], subject: 'Hello\nBcc: victim@else.test', text: 'x' }],
        ['intercom_send_message', { user_email: 'ann@acme.test', message_type: 'email', subject: 'Hello\rBcc: victim@else.test', body: 'x' }],
      ];
      for (const [tool, args] of calls) {
        const r = await h.call(tool, args);
        expect(r.isError, tool).toBe(true);
        expect(r.structuredContent.error, tool).toMatchObject({ code: 'invalid_input' });
        expect(JSON.stringify(r.structuredContent.error), tool).toMatch(/subject/);
      }
      expect(sg.requests.length + ic.messages.length).toBe(before);
    });

    it('| raw in a campaign HTML body is refused at the preview with invalid_input naming body_html; nothing is queued', async () => {
      const h = await start();
      const args = { campaign_name: 'Raw html', template_type: 'newsletter', subject_line: 'Hi', body_text: 'Hello', body_html: '<p>Hello {{ contact.first_name | raw }}</p>', target_client_ids: ['acme'] };
      const r = await h.call('send_personalized_email', args);
      expect(r.isError).toBe(true);
      expect(r.structuredContent.error).toMatchObject({ code: 'invalid_input', details: { field: 'body_html' } });
      expect(r.structuredContent.error.message).toMatch(/raw filter, which is not available/);
      expect(r.structuredContent.confirmation_token).toBeUndefined();
    });

    it('a campaign subject with CR/LF, typed or from a contact value, reaches SendGrid as one line (breaks become spaces)', async () => {
      const h = await start();
      await h.call('register_client', { client_id: 'crlfco', name: 'CRLF Co', tier: 'starter' });
      // A contact's own value (as an import or a sync would store it) carries a header injection attempt.
      const c = await h.call('upsert_contact', { client_id: 'crlfco', email: 'inject@crlf.test', first_name: 'Eve\r\nX-Injected: yes' });
      expect(c.structuredContent.success).toBe(true);
      const args = { campaign_name: 'CRLF subject', template_type: 'newsletter', subject_line: 'Hi {{ contact.first_name }}\r\nX-Typed: yes', body_text: 'Hello', target_client_ids: ['crlfco'] };
      const preview = await h.call('send_personalized_email', args);
      expect(preview.structuredContent, JSON.stringify(preview.structuredContent).slice(0, 500)).toMatchObject({ success: true, phase: 'preview' });
      expect(preview.structuredContent.samples[0].subject).toBe('Hi Eve X-Injected: yes X-Typed: yes');
      const confirmed = await h.call('send_personalized_email', { ...args, confirmation_token: preview.structuredContent.confirmation_token });
      expect(confirmed.structuredContent).toMatchObject({ phase: 'confirmed', queued: 1 });
      const [mail] = await until(() => mailsTo(sg, 'inject@crlf.test'), (m) => m.length === 1, { message: 'the campaign email' });
      expect(mail!.subject).toBe('Hi Eve X-Injected: yes X-Typed: yes');
      expect(mail!.subject).not.toMatch(/[\r\n]/);
      expect(sg.matching(/^POST \/v3\/mail\/send/).some((r) => /X-Injected: yes\\r\\n|\\r\\nX-Injected/.test(JSON.stringify(r.body)))).toBe(false);
    });
  });

  describe('audit log', () => {
    it('records every write and send call, not only refusals: upsert_contact, an Intercom write and a send appear with their outcome', async () => {
      const own = tempDataDir();
      try {
        const h = await start({}, undefined, 'audit-all', own.dir);
        await h.call('register_client', { client_id: 'audco', name: 'Aud Co', tier: 'starter' });
        await h.call('upsert_contact', { client_id: 'audco', email: 'aud@audco.test', first_name: 'Aud' });
        await h.call('intercom_create_note', { user_email: 'ann@acme.test', body: 'Audited note' });
        await h.call('sendgrid_send_email', { to: 'aud@audco.test', subject: 'Audited send', text: 'hello' });
        await h.call('list_clients', {}); // a read that no policy refused: not recorded
        const entries = await until(
          async () => (await h.call('get_audit_log', { limit: 100 })).structuredContent.entries as any[],
          (e) => e.length >= 4,
          { message: 'four audit entries' },
        );
        expect(entries.map((e) => e.tool)).toEqual(['sendgrid_send_email', 'intercom_create_note', 'upsert_contact', 'register_client']);
        for (const e of entries) expect(e).toMatchObject({ outcome: 'success', client_name: 'audit-all', session_id: 'stdio' });
        expect(entries.find((e) => e.tool === 'upsert_contact')).toMatchObject({ kind: 'write', arguments: { email: 'aud@audco.test' } });
        expect(entries.find((e) => e.tool === 'intercom_create_note').arguments.body).toMatch(/^\[redacted: 12 characters/);
        expect(entries.find((e) => e.tool === 'sendgrid_send_email')).toMatchObject({ kind: 'send', arguments: { subject: 'Audited send' } });
      } finally {
        await open.pop()!.close();
        own.cleanup();
      }
    });

    it('get_audit_log pages with a cursor and filters by tool, outcome and time', async () => {
      const own = tempDataDir();
      try {
        const h = await start({}, undefined, 'audit-pages', own.dir);
        await h.call('register_client', { client_id: 'pageco', name: 'Page Co', tier: 'starter' });
        await until(async () => (await h.call('get_audit_log', {})).structuredContent.entries.length, (n) => n === 1);
        await new Promise((r) => setTimeout(r, 5)); // the next entries are stamped strictly later
        const t0 = new Date().toISOString();
        for (let i = 0; i < 5; i++) await h.call('upsert_contact', { client_id: 'pageco', email: `p${i}@pageco.test` });
        await h.call('set_contact_subscription', { email: 'p0@pageco.test', subscribed: false, reason: 'asked to stop' });
        await h.call('sendgrid_send_email', { to: 'p0@pageco.test', subject: 'Refused', text: 'x' }); // consent: forbidden
        await until(async () => (await h.call('get_audit_log', { limit: 100 })).structuredContent.entries.length, (n) => n === 8, { message: 'eight audit entries' });
        const t1 = new Date().toISOString();

        // Pagination: pages of 3, newest first, every entry once.
        const seen: any[] = [];
        let cursor: string | undefined;
        let pages = 0;
        do {
          const page = await h.call('get_audit_log', { limit: 3, ...(cursor ? { cursor } : {}) });
          expect(page.structuredContent.entries.length).toBeLessThanOrEqual(3);
          seen.push(...page.structuredContent.entries);
          cursor = page.structuredContent.next_cursor;
          pages += 1;
        } while (cursor);
        expect(pages).toBe(3);
        expect(seen).toHaveLength(8);
        const ids = seen.map((e) => e.audit_id);
        expect(new Set(ids).size).toBe(8);
        expect([...ids].sort((a, b) => b - a)).toEqual(ids);
        const bad = await h.call('get_audit_log', { cursor: 'not-a-cursor' });
        expect(bad.structuredContent.error).toMatchObject({ code: 'invalid_input', details: { field: 'cursor' } });

        // Filters.
        const byTool = (await h.call('get_audit_log', { tool: 'upsert_contact', limit: 100 })).structuredContent.entries;
        expect(byTool).toHaveLength(5);
        expect(byTool.every((e: any) => e.tool === 'upsert_contact')).toBe(true);
        const errors = (await h.call('get_audit_log', { outcome: 'error' })).structuredContent.entries;
        expect(errors).toEqual([expect.objectContaining({ tool: 'sendgrid_send_email', outcome: 'forbidden', policy: 'consent' })]);
        expect((await h.call('get_audit_log', { outcome: 'forbidden' })).structuredContent.entries).toHaveLength(1);
        expect((await h.call('get_audit_log', { outcome: 'success', limit: 100 })).structuredContent.entries).toHaveLength(7);
        const since = (await h.call('get_audit_log', { since: t0, limit: 100 })).structuredContent.entries;
        expect(since.map((e: any) => e.tool)).not.toContain('register_client');
        expect(since).toHaveLength(7);
        const untilT0 = (await h.call('get_audit_log', { until: t0, limit: 100 })).structuredContent.entries;
        expect(untilT0.map((e: any) => e.tool)).toEqual(['register_client']);
        expect((await h.call('get_audit_log', { since: t1 })).structuredContent.entries).toEqual([]);
        const window = (await h.call('get_audit_log', { since: t0, until: t1, tool: 'upsert_contact', limit: 2 })).structuredContent;
        expect(window.entries).toHaveLength(2);
        expect(window.next_cursor).toBeDefined();
      } finally {
        await open.pop()!.close();
        own.cleanup();
      }
    });

    it('entries older than CS_MCP_AUDIT_RETENTION_DAYS are pruned at start-up; newer ones stay', async () => {
      const own = tempDataDir();
      try {
        const first = await start({}, undefined, 'audit-retention', own.dir);
        await first.call('register_client', { client_id: 'oldco', name: 'Old Co', tier: 'starter' });
        await until(async () => (await first.call('get_audit_log', {})).structuredContent.entries.length, (n) => n === 1);
        const day = 86_400_000;
        const row = (at: number, tool: string) => ({ at: new Date(at).toISOString(), tool, kind: 'write', client_name: 'old', client_version: null, session_id: null, arguments: '{}', outcome: 'success', message: null, policy: null, details: '{}', duration_ms: 1 });
        await first.services.store.db
          .insertInto('audit_log')
          .values([row(Date.now() - 10 * day, 'ten_days_old'), row(Date.now() - 3 * day, 'three_days_old')])
          .execute();
        expect((await first.call('get_audit_log', { limit: 100 })).structuredContent.entries).toHaveLength(3);
        await open.pop()!.close();

        const second = await start({ CS_MCP_AUDIT_RETENTION_DAYS: '5' }, undefined, 'audit-retention', own.dir);
        const tools = await until(
          async () => ((await second.call('get_audit_log', { limit: 100 })).structuredContent.entries as any[]).map((e) => e.tool),
          (t) => !t.includes('ten_days_old'),
          { message: 'the ten-day-old entry pruned' },
        );
        expect([...tools].sort()).toEqual(['register_client', 'three_days_old']);
        await second.services.audit.prune(Date.now() + 3 * day); // as the hourly pass would, three days on
        expect(((await second.call('get_audit_log', { limit: 100 })).structuredContent.entries as any[]).map((e) => e.tool)).toEqual(['register_client']);
      } finally {
        await open.pop()!.close();
        own.cleanup();
      }
    });
  });
});
