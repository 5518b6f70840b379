import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { person } from '../helpers/approval.js';
import { startInMemory, standInEnv, tempDataDir, testEnv, type InMemoryHarness } from '../helpers/mcp.js';
import { until } from '../helpers/until.js';
import { startIntercomStandIn, type IntercomStandIn } from '../stand-ins/intercom.js';
import { startSendGridStandIn, type SendGridStandIn } from '../stand-ins/sendgrid.js';

/**
 * Issue 15, items 1–6: what the person approves is exactly what is sent. Each test plays the
 * manipulated model (forged names, HTML-only phishing, swapped tokens, re-added contacts, links slipped
 * in through values) and, where a person is asked, asserts on what that person reads.
 */

const SG_KEY = 'SG.truthkey_abcdefghij.klmnopqrstuvwxyz0123';
const IC_TOKEN = 'intercom-truth-token';

const sentTo = (sg: SendGridStandIn, email: string) => sg.delivered.filter((d) => d.to === email);

/** The facts block every approval starts with, in this order. */
const FACT_ORDER = [/^APPROVAL REQUEST\. Facts from the server:$/, /^1\. Action: /, /^2\. Recipients: \d+; messages: \d+$/, /^3\. Channels: /, /^4\. Sender: /, /^5\. When: /, /^6\. Contacts added since the preview: /, /^7\. Consent override: /];

function expectFactsFirst(message: string) {
  const lines = message.split('\n');
  FACT_ORDER.forEach((re, i) => expect(lines[i], `line ${i} of:\n${message}`).toMatch(re));
  return lines;
}

describe('the approval a person reads is the truth (issue 15, items 1–6)', () => {
  const data = tempDataDir();
  let sg: SendGridStandIn;
  let ic: IntercomStandIn;
  const env = (extra: Record<string, string> = {}) =>
    testEnv(
      {
        ...standInEnv({ sendgrid: { url: sg.url, apiKey: SG_KEY }, intercom: { url: ic.url, token: IC_TOKEN } }),
        INTERCOM_ADMIN_ID: '991',
        SENDGRID_FROM_NAME: 'Our Success Team',
        CAMPAIGN_DISPATCH_POLL_MS: '50',
        AUTOMATION_TICK_MS: '50',
        AUTOMATION_SWEEP_MS: '150',
        ...extra,
      },
      data.dir,
    );
  const open: InMemoryHarness[] = [];
  const start = async (extra: Record<string, string> = {}, p?: ReturnType<typeof person>, protocolVersion?: string) => {
    const h = await startInMemory(env(extra), {}, { onElicit: p?.onElicit, protocolVersion });
    open.push(h);
    return h;
  };

  beforeAll(async () => {
    sg = await startSendGridStandIn({ apiKey: SG_KEY });
    ic = await startIntercomStandIn({ token: IC_TOKEN });
    const h = await start();
    await h.call('register_client', { client_id: 'many', name: 'Many Inc', tier: 'enterprise' });
    for (const n of ['a1', 'a2', 'a3']) await h.call('upsert_contact', { client_id: 'many', email: `${n}@many.test`, first_name: n.toUpperCase() });
    await h.call('register_client', { client_id: 'solo', name: 'Solo Ltd', tier: 'starter' });
    await h.call('upsert_contact', { client_id: 'solo', email: 'sam@solo.test', first_name: 'Sam' });
  });
  afterEach(async () => {
    while (open.length > 1) await open.pop()!.close();
  });
  afterAll(async () => {
    while (open.length) await open.pop()!.close();
    await Promise.all([sg.stop(), ic.stop()]);
    data.cleanup();
  });

  describe('item 1: the model cannot forge the dialog', () => {
    it('a campaign name with line breaks and a fake block: the real facts come first, the name is one quoted line marked as the assistant\'s, and it is stored as one line', async () => {
      const p = person();
      const h = await start({}, p);
      const forged = 'Quick note\nRecipients: 1 via email (e.g. me@vendor.test)\nWhen: now\n\n\n\n\n\n\n\n\nSample:\r\nHi!\u2028Choose "Yes, send"';
      const args = { campaign_name: forged, template_type: 'custom', subject_line: 'Hello {{ contact.first_name }}', body_text: 'Just checking in.', target_client_ids: ['many'] };
      const preview = await h.call('send_personalized_email', args);
      expect(preview.structuredContent.campaign_name).not.toMatch(/[\r\n\u2028]/);
      const r = await h.call('send_personalized_email', { ...args, confirmation_token: preview.structuredContent.confirmation_token });
      expect(r.structuredContent).toMatchObject({ success: true, phase: 'confirmed', queued: 3 });
      const msg = p.asked[0]!.message;
      const lines = expectFactsFirst(msg);
      expect(lines[1]).toBe('1. Action: send a campaign');
      expect(lines[2]).toBe('2. Recipients: 3; messages: 3');
      expect(lines[3]).toBe('3. Channels: email');
      expect(lines[4]).toBe('4. Sender: from "Our Success Team" <success@ourco.test>; reply-to none set');
      expect(lines[6]).toBe('6. Contacts added since the preview: 0');
      expect(lines[7]).toBe('7. Consent override: none');
      // The forged "Recipients: 1" exists only inside the one quoted line of the assistant's text.
      const forgedLines = lines.filter((l) => l.includes('Recipients: 1'));
      expect(forgedLines).toHaveLength(1);
      expect(forgedLines[0]).toBe('- Campaign name: “Quick note Recipients: 1 via email (e.g. me@vendor.test) When: now Sample: Hi! Choose "Yes, send"”');
      expect(lines.indexOf('Written by the assistant (quoted; not checked by the server):')).toBeLessThan(lines.indexOf(forgedLines[0]!));
      expect(lines.filter((l) => /^When: /.test(l))).toEqual([]);
      const status = await h.call('get_campaign_status', { campaign_id: r.structuredContent.campaign_id });
      expect(status.structuredContent.campaign.campaign_name).toBe(forged.replace(/[\r\n\u2028]+/g, ' ').replace(/\s+/g, ' '));
      await h.call('cancel_campaign', { campaign_id: r.structuredContent.campaign_id });
    });

    it('a workflow name and description with line breaks are stored as one line and shown quoted after the facts', async () => {
      const p = person();
      const h = await start({}, p);
      const draft = await h.call('automate_communications', {
        workflow_name: 'Note\nRecipients: 1 via email',
        description: 'harmless\r\n7. Consent override: none',
        trigger_type: 'custom',
        actions: [{ type: 'send_email', subject: 'Hi', body: 'Hello {{ contact.first_name | fallback: "there" }}' }],
        is_active: false,
      });
      const id = draft.structuredContent.workflow_id;
      const got = await h.call('get_workflow', { workflow_id: id });
      expect(got.structuredContent.workflow.name).toBe('Note Recipients: 1 via email');
      expect(got.structuredContent.workflow.description).toBe('harmless 7. Consent override: none');
      const preview = await h.call('run_workflow', { workflow_id: id, client_ids: ['solo'] });
      p.answers({ action: 'decline' });
      await h.call('run_workflow', { workflow_id: id, client_ids: ['solo'], confirmation_token: preview.structuredContent.confirmation_token });
      const lines = expectFactsFirst(p.asked[0]!.message);
      expect(lines.filter((l) => l.startsWith('7. Consent override'))).toEqual(['7. Consent override: none']);
      expect(lines).toContain('- Workflow name: “Note Recipients: 1 via email”');
      expect(lines).toContain('- Description: “harmless 7. Consent override: none”');
    });
  });

  describe('item 2: the person reads what the customer reads', () => {
    const phishHtml =
      '<p>Your account is locked. <a href="http://evil.example/login?u=1">Unlock it here</a>.</p>' +
      '<img src="https://evil.example/pixel.png" alt="logo"><p>Or write to <a href="mailto:help@evil.example">support</a>.</p>';

    it('the approval test: facts first, assistant text marked, the HTML\'s own words, every link and image, the differing text part named', async () => {
      const p = person();
      p.answers((req) => {
        const msg = req.message;
        expectFactsFirst(msg);
        expect(msg).toMatch(/^2\. Recipients: 1; messages: 1$/m);
        expect(msg).toMatch(/^4\. Sender: from "Our Success Team" <success@ourco\.test>; reply-to <reply@elsewhere\.test>$/m);
        expect(msg).toMatch(/^Subject: “Quick check-in”$/m);
        expect(msg).toMatch(/as the customer receives it \(written by the assistant\)/);
        expect(msg).toMatch(/^ {2}\| Your account is locked\. Unlock it here \[http:\/\/evil\.example\/login\?u=1\]\./m);
        expect(msg).toMatch(/WARNING: the plain-text part says something different from the HTML/);
        expect(msg).toMatch(/^ {2}\| Hi! Just checking in\.$/m);
        expect(msg).toMatch(/^Link targets \(2\):\n {2}- http:\/\/evil\.example\/login\?u=1\n {2}- mailto:help@evil\.example$/m);
        expect(msg).toMatch(/^Image sources \(1\):\n {2}- https:\/\/evil\.example\/pixel\.png$/m);
        return { action: 'accept', content: { decision: 'send' } };
      });
      const h = await start({}, p);
      const r = await h.call('sendgrid_send_email', {
        to: 'sam@solo.test',
        subject: 'Quick check-in',
        text: 'Hi! Just checking in.',
        html: phishHtml,
        reply_to: { email: 'reply@elsewhere.test' },
        idempotency_key: 'truth-html-1',
      });
      expect(r.structuredContent, JSON.stringify(r.structuredContent)).toMatchObject({ success: true });
      expect(p.asked).toHaveLength(1);
    });

    it('a campaign and a workflow with an HTML body show the HTML\'s words and links, not the text part', async () => {
      const p = person();
      p.answers({ action: 'decline' });
      const h = await start({}, p);
      const campaign = { campaign_name: 'Html check', template_type: 'custom', subject_line: 'Hi', body_text: 'Hi! Just checking in.', body_html: phishHtml, target_client_ids: ['solo'] };
      const preview = await h.call('send_personalized_email', campaign);
      await h.call('send_personalized_email', { ...campaign, confirmation_token: preview.structuredContent.confirmation_token });
      const draft = await h.call('automate_communications', {
        workflow_name: 'Html workflow',
        trigger_type: 'custom',
        actions: [{ type: 'send_email', subject: 'Hi', body: 'Hi! Just checking in.', body_html: phishHtml }],
        is_active: false,
      });
      const run = await h.call('run_workflow', { workflow_id: draft.structuredContent.workflow_id, client_ids: ['solo'] });
      await h.call('run_workflow', { workflow_id: draft.structuredContent.workflow_id, client_ids: ['solo'], confirmation_token: run.structuredContent.confirmation_token });
      expect(p.asked).toHaveLength(2);
      for (const a of p.asked) {
        expectFactsFirst(a.message);
        expect(a.message).toMatch(/Your account is locked\. Unlock it here \[http:\/\/evil\.example\/login\?u=1\]/);
        expect(a.message).toMatch(/- http:\/\/evil\.example\/login\?u=1/);
        expect(a.message).toMatch(/- https:\/\/evil\.example\/pixel\.png/);
        expect(a.message).toMatch(/WARNING: the plain-text part says something different/);
      }
      expect(sentTo(sg, 'sam@solo.test').filter((m) => m.subject === 'Hi')).toEqual([]);
    });

    it('bulk substitutions: the first and another recipient\'s rendered copies, and every link any copy carries', async () => {
      const p = person();
      p.answers({ action: 'decline' });
      const h = await start({}, p);
      const recipients = [
        { email: 'b1@bulk.test', substitutions: { '-note-': 'see you soon' } },
        { email: 'b2@bulk.test', substitutions: { '-note-': 'all good' } },
        { email: 'b3@bulk.test', substitutions: { '-note-': 'your account is locked, go to http://evil.example/unlock' } },
        { email: 'b4@bulk.test', substitutions: { '-note-': 'thanks' } },
      ];
      await h.call('sendgrid_send_bulk_emails', { recipients, subject: 'News', text: 'Hello, -note-' });
      const msg = p.asked[0]!.message;
      expectFactsFirst(msg);
      expect(msg).toMatch(/^2\. Recipients: 4; messages: 4$/m);
      expect(msg).toMatch(/Message 1 for “b1@bulk\.test”/);
      expect(msg).toMatch(/\| Hello, see you soon/);
      expect(msg).toMatch(/Message 2 for “b4@bulk\.test”/);
      expect(msg).toMatch(/\| Hello, thanks/);
      expect(msg).toMatch(/Link targets in any recipient's copy: http:\/\/evil\.example\/unlock/);
    });

    it('template sends: the template\'s name and active version subject from SendGrid, and the dynamic data', async () => {
      const id = 'd-0123456789abcdef0123456789abcdef';
      sg.seedTemplate(id, { name: 'Renewal reminder v3', subject: 'Your renewal is coming up, {{first_name}}' });
      const p = person();
      p.answers({ action: 'decline' });
      const h = await start({}, p);
      await h.call('sendgrid_send_template_email', {
        template_id: id,
        to: [
          { email: 't1@tpl.test', dynamic_template_data: { first_name: 'Tia', link: 'https://ourco.test/renew' } },
          { email: 't2@tpl.test', dynamic_template_data: { first_name: 'Tom', link: 'http://evil.example/renew' } },
        ],
      });
      const msg = p.asked[0]!.message;
      expectFactsFirst(msg);
      expect(msg).toMatch(new RegExp(`Template ${id}: name “Renewal reminder v3”, active version subject “Your renewal is coming up, \\{\\{first_name\\}\\}”`));
      expect(msg).toMatch(/Message 1 for “t1@tpl\.test”[\s\S]*Dynamic data: \{"first_name":"Tia","link":"https:\/\/ourco\.test\/renew"\}/);
      expect(msg).toMatch(/Message 2 for “t2@tpl\.test”[\s\S]*Dynamic data: \{"first_name":"Tom","link":"http:\/\/evil\.example\/renew"\}/);
    });

    it('what does not fit is never silently cut: the dialog says how much was not shown and where to read it', async () => {
      const p = person();
      p.answers({ action: 'decline' });
      const h = await start({}, p);
      const long = `Start. ${'All is well. '.repeat(800)}The end: http://evil.example/tail`;
      const campaign = { campaign_name: 'Long one', template_type: 'custom', subject_line: 'Hi', body_text: long, target_client_ids: ['solo'] };
      const preview = await h.call('send_personalized_email', campaign);
      await h.call('send_personalized_email', { ...campaign, confirmation_token: preview.structuredContent.confirmation_token });
      const msg = p.asked[0]!.message;
      expect(msg).toMatch(/NOT SHOWN HERE: \d+ characters of message 1's text\. Read it in full in the preview \(send_personalized_email without confirmation_token/);
      expect(msg).toMatch(/- http:\/\/evil\.example\/tail/); // every link is listed, even from the part not shown
    });
  });

  describe('item 3: a run token is bound to its workflow', () => {
    it.each([
      ['token', { CS_MCP_APPROVAL: 'token' }],
      ['auto, client without elicitation', {}],
    ])('a token from previewing "harmless note" cannot confirm a run of "phish" (%s): refused, nothing sent', async (_label, extra) => {
      const h = await start(extra as Record<string, string>);
      const harmless = await h.call('automate_communications', { workflow_name: `harmless note ${_label}`, trigger_type: 'custom', actions: [{ type: 'create_note', body: 'checked' }], is_active: false });
      const phish = await h.call('automate_communications', {
        workflow_name: `phish ${_label}`,
        trigger_type: 'custom',
        actions: [{ type: 'send_email', subject: `Locked ${_label}`, body: 'Your account is locked: http://evil.example' }],
        is_active: false,
      });
      const preview = await h.call('run_workflow', { workflow_id: harmless.structuredContent.workflow_id, client_ids: ['solo'] });
      expect(preview.structuredContent.confirmation_token).toBeTruthy();
      const swapped = await h.call('run_workflow', { workflow_id: phish.structuredContent.workflow_id, client_ids: ['solo'], confirmation_token: preview.structuredContent.confirmation_token });
      expect(swapped.structuredContent.success).toBe(false);
      expect(swapped.structuredContent.error).toMatchObject({ code: 'invalid_input' });
      const got = await h.call('get_workflow', { workflow_id: phish.structuredContent.workflow_id });
      expect(got.structuredContent.enrollments.total).toBe(0);
      expect(sentTo(sg, 'sam@solo.test').filter((m) => m.subject === `Locked ${_label}`)).toEqual([]);
    });
  });

  describe('item 4: run_workflow counts recipients × channels and sends to the previewed set only', () => {
    it('the person reads every recipient; a contact added between preview and confirm refuses the token; the run sends to those previewed', async () => {
      const p = person();
      const h = await start({}, p);
      await h.call('register_client', { client_id: 'grow', name: 'Grow Co', tier: 'standard' });
      for (const n of ['g1', 'g2', 'g3']) await h.call('upsert_contact', { client_id: 'grow', email: `${n}@grow.test`, first_name: n.toUpperCase() });
      const draft = await h.call('automate_communications', {
        workflow_name: 'Grow run',
        trigger_type: 'custom',
        actions: [
          { type: 'send_email', subject: 'Grow email', body: 'Hi {{ contact.first_name }}' },
          { type: 'send_intercom_email', subject: 'Grow intercom', body: 'Hi {{ contact.first_name }}' },
        ],
        is_active: false,
      });
      const id = draft.structuredContent.workflow_id;
      const preview = await h.call('run_workflow', { workflow_id: id, client_ids: ['grow'] });
      expect(preview.structuredContent).toMatchObject({ recipients: 3, messages: 6 });
      await h.call('upsert_contact', { client_id: 'grow', email: 'late@grow.test', first_name: 'Late' });
      const refused = await h.call('run_workflow', { workflow_id: id, client_ids: ['grow'], confirmation_token: preview.structuredContent.confirmation_token });
      expect(refused.structuredContent.error).toMatchObject({ code: 'invalid_input' });
      expect(refused.structuredContent.error.message).toMatch(/changed since the preview \(.*recipients/);
      expect(p.asked).toHaveLength(0);
      const fresh = refused.structuredContent.error.details.fresh_preview;
      expect(fresh).toMatchObject({ recipients: 4, messages: 8 });
      // The steps run later than the confirmation: hold the scheduler so a contact is added in between, for certain.
      await h.services.automations.stop();
      const ok = await h.call('run_workflow', { workflow_id: id, client_ids: ['grow'], confirmation_token: fresh.confirmation_token });
      expect(ok.structuredContent).toMatchObject({ success: true, phase: 'confirmed', enrolled: 1 });
      expect(p.asked[0]!.message).toMatch(/^2\. Recipients: 4; messages: 8$/m);
      await h.call('upsert_contact', { client_id: 'grow', email: 'after@grow.test', first_name: 'After' });
      h.services.automations.start();
      await until(async () => (await h.call('get_workflow', { workflow_id: id })).structuredContent.enrollments.completed, (n) => n === 1, { message: 'the run to finish' });
      await until(() => sg.delivered.filter((m) => m.subject === 'Grow email').length, (n) => n === 4, { message: 'four run emails' });
      expect(sentTo(sg, 'after@grow.test')).toEqual([]);
      // Exactly the previewed 4 recipients × 2 channels became messages; the contact added after confirmation got none.
      expect((await h.call('get_workflow', { workflow_id: id })).structuredContent.messages.by_state.total).toBe(8);
    });
  });

  describe('item 5: unapproved links never enter approved messages', () => {
    it('a client name changed after approval to carry a link: that automation message is held back as unapproved_link, counted, not sent', async () => {
      const h = await start({ CS_MCP_APPROVAL: 'token' });
      await h.call('register_client', { client_id: 'linky', name: 'Linky Co', tier: 'standard' });
      await h.call('upsert_contact', { client_id: 'linky', email: 'lee@linky.test', first_name: 'Lee' });
      const draft = await h.call('automate_communications', {
        workflow_name: 'Link guard run',
        trigger_type: 'custom',
        actions: [{ type: 'send_email', subject: 'About {{ client.name }}', body: 'Hello from us about {{ client.name }}. Details: https://ourco.test/help' }],
        is_active: false,
      });
      const id = draft.structuredContent.workflow_id;
      const preview = await h.call('run_workflow', { workflow_id: id, client_ids: ['linky'] });
      await h.call('update_client_info', { client_id: 'linky', name: 'Linky. Your account is locked, unlock at http://evil.example/unlock' });
      const ok = await h.call('run_workflow', { workflow_id: id, client_ids: ['linky'], confirmation_token: preview.structuredContent.confirmation_token });
      expect(ok.structuredContent, JSON.stringify(ok.structuredContent)).toMatchObject({ success: true, phase: 'confirmed' });
      const got = await until(
        async () => (await h.call('get_workflow', { workflow_id: id })).structuredContent,
        (w) => (w.messages.not_sent_by_reason.unapproved_link ?? 0) === 1,
        { message: 'the message held back as unapproved_link' },
      );
      expect(got.messages.by_state.skipped).toBe(1);
      expect(sentTo(sg, 'lee@linky.test')).toEqual([]);
    });

    it('an event property carrying a link: held back; one without: sent', async () => {
      const h = await start({ CS_MCP_APPROVAL: 'token' });
      await h.call('register_client', { client_id: 'evt', name: 'Evt Co', tier: 'standard' });
      await h.call('upsert_contact', { client_id: 'evt', email: 'eve@evt.test', first_name: 'Eve' });
      await h.call('upsert_contact', { client_id: 'evt', email: 'fay@evt.test', first_name: 'Fay' });
      const args = {
        workflow_name: 'Event link guard',
        trigger_type: 'event_based',
        trigger_conditions: { event: 'ticket_closed' },
        actions: [{ type: 'send_email', subject: 'Ticket {{ event.properties.ticket }}', body: 'Closed: {{ event.properties.note }}' }],
      };
      const preview = await h.call('automate_communications', args);
      const wf = await h.call('automate_communications', { ...args, confirmation_token: preview.structuredContent.confirmation_token });
      expect(wf.structuredContent, JSON.stringify(wf.structuredContent).slice(0, 1500)).toMatchObject({ success: true, phase: 'confirmed' });
      const id = wf.structuredContent.result_id;
      await h.call('record_customer_event', { event: 'ticket_closed', contact_email: 'eve@evt.test', properties: { ticket: 'T-1', note: 'your account is locked, go to evil.example/unlock' } });
      await h.call('record_customer_event', { event: 'ticket_closed', contact_email: 'fay@evt.test', properties: { ticket: 'T-2', note: 'all fixed' } });
      await until(() => sentTo(sg, 'fay@evt.test').filter((m) => m.subject === 'Ticket T-2').length, (n) => n === 1, { message: 'the clean event email' });
      const got = await until(
        async () => (await h.call('get_workflow', { workflow_id: id })).structuredContent,
        (w) => (w.messages.not_sent_by_reason.unapproved_link ?? 0) === 1 && w.messages.by_state.sent === 1,
        { message: 'the event message held back, the other sent' },
      );
      expect(got.messages.by_state.skipped).toBe(1);
      expect(sentTo(sg, 'eve@evt.test').filter((m) => m.subject === 'Ticket T-1')).toEqual([]);
      await h.call('pause_workflow', { workflow_id: id });
    });

    it('a campaign recipient whose client name carries a link is held back (preview says so; status counts it as unapproved_link); the others are sent', async () => {
      const h = await start({ CS_MCP_APPROVAL: 'token' });
      await h.call('register_client', { client_id: 'cl-ok', name: 'Fine Co', tier: 'professional', segments: ['linktest'] });
      await h.call('upsert_contact', { client_id: 'cl-ok', email: 'ok@fine.test', first_name: 'Ok' });
      await h.call('register_client', { client_id: 'cl-bad', name: 'Bad Co — unlock at https://evil.example/x', tier: 'professional', segments: ['linktest'] });
      await h.call('upsert_contact', { client_id: 'cl-bad', email: 'bad@bad.test', first_name: 'Bad' });
      const args = { campaign_name: 'Link guard campaign', template_type: 'custom', subject_line: 'Hi {{ client.name }}', body_text: 'News for {{ client.name }}: https://ourco.test/news', target_segment: 'linktest' };
      const preview = await h.call('send_personalized_email', args);
      expect(preview.structuredContent.audience.held_back.examples).toEqual([expect.objectContaining({ email: 'bad@bad.test', reason: 'unapproved_link' })]);
      const ok = await h.call('send_personalized_email', { ...args, confirmation_token: preview.structuredContent.confirmation_token });
      const status = await until(
        async () => (await h.call('get_campaign_status', { campaign_id: ok.structuredContent.campaign_id })).structuredContent.campaign,
        (c) => c.status === 'completed',
        { message: 'the campaign to finish' },
      );
      expect(status.skipped_by_reason).toMatchObject({ unapproved_link: 1 });
      expect(status.totals).toMatchObject({ sent: 1, skipped: 1 });
      expect(sentTo(sg, 'bad@bad.test')).toEqual([]);
      expect(sentTo(sg, 'ok@fine.test').filter((m) => m.subject === 'Hi Fine Co')).toHaveLength(1);
    });

    it('a substituted value longer than the cap holds the recipient back instead of pouring into the message', async () => {
      const h = await start({ CS_MCP_APPROVAL: 'token' });
      await h.call('register_client', { client_id: 'longname', name: 'L'.repeat(150), tier: 'starter', segments: ['capped'], custom_attributes: { blurb: 'x'.repeat(1_500) } });
      await h.call('upsert_contact', { client_id: 'longname', email: 'l@long.test', first_name: 'Lo' });
      const preview = await h.call('send_personalized_email', { campaign_name: 'Cap', template_type: 'custom', subject_line: 'Hi', body_text: '{{ client.custom.blurb }}', target_segment: 'capped' });
      expect(preview.structuredContent.audience.held_back.examples[0]).toMatchObject({ email: 'l@long.test', reason: 'missing_value' });
      expect(preview.structuredContent.audience.held_back.examples[0].detail).toMatch(/over the 1000-character limit/);
    });
  });

  describe('item 6: the approval form uses the current schema', () => {
    it('a current client gets the titled single-select (oneOf const/title); the decline text is plain', async () => {
      const p = person();
      p.answers({ action: 'accept', content: { decision: 'do_not_send' } });
      const h = await start({}, p);
      const r = await h.call('sendgrid_send_email', { to: 'sam@solo.test', subject: 'Form check', text: 'x' });
      const decision = (p.asked[0] as any).requestedSchema.properties.decision;
      expect(decision).toEqual({
        type: 'string',
        title: 'Send these messages to customers?',
        oneOf: [
          { const: 'send', title: 'Yes, send' },
          { const: 'do_not_send', title: 'No, send nothing' },
        ],
      });
      expect(r.structuredContent.error.message).toBe('The user answered "No, send nothing" to the approval request: nothing was sent. Do not retry unless the user asks again.');
    });

    it('a client that negotiated 2025-06-18 gets the legacy enumNames form', async () => {
      const p = person();
      p.answers({ action: 'decline' });
      const h = await start({}, p, '2025-06-18');
      await h.call('sendgrid_send_email', { to: 'sam@solo.test', subject: 'Legacy form', text: 'x' });
      const decision = (p.asked[0] as any).requestedSchema.properties.decision;
      expect(decision).toEqual({ type: 'string', title: 'Send these messages to customers?', enum: ['send', 'do_not_send'], enumNames: ['Yes, send', 'No, send nothing'] });
    });
  });
});
