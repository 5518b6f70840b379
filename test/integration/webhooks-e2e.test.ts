import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { insertMessages } from '../../src/engine/delivery/outbox.js';
import { serveHttp, type RunningHttpServer } from '../../src/transports/http.js';
import { availableDialects, createTarget, type DatabaseTarget } from '../helpers/databases.js';
import { startInMemory, testEnv, type InMemoryHarness, standInEnv } from '../helpers/mcp.js';
import { intercomHeaders, intercomNotification, post, sendgridSigner, sgEvent } from '../helpers/webhooks.js';
import { startIntercomStandIn, type IntercomStandIn } from '../stand-ins/intercom.js';
import { startSendGridStandIn, type SendGridStandIn } from '../stand-ins/sendgrid.js';
import { settled } from '../helpers/automations.js';
import { until } from '../helpers/until.js';

/**
 * The loop closed, end to end over the MCP client: a campaign goes out through the SendGrid stand-in;
 * the messages it accepted receive signed delivered / open / click / unsubscribe / bounce events, posted
 * to our endpoint as SendGrid posts them; the campaign status counts them, the timeline shows them, the
 * roster records the consent they carry, and the next campaign's preview leaves those contacts out.
 */

const dialects = await availableDialects();
const SG_KEY = 'SG.webhooks-e2e-key.0123456789abcdef';
const IC_TOKEN = 'intercom-webhooks-e2e-token';
const IC_SECRET = 'intercom-client-secret-e2e';


const campaign = {
  campaign_name: 'Q4 check-in',
  template_type: 'health_check',
  subject_line: '{{ client.name }}: quick check-in',
  body_text: 'Hi {{ contact.first_name | fallback: "there" }}, how is it going? https://acme.example/book',
  target_tier: 'enterprise',
  track_opens: true,
  track_clicks: true,
};

describe.each(dialects)('closing the loop on %s', (dialect) => {
  const signer = sendgridSigner();
  let target: DatabaseTarget;
  let sg: SendGridStandIn;
  let ic: IntercomStandIn;
  let h: InMemoryHarness;
  let server: RunningHttpServer;
  let base = '';
  let campaignId = '';
  /** Per address: the custom_args and message id SendGrid got with the campaign's email. */
  const sent = new Map<string, { custom_args: Record<string, string>; message_id: string }>();

  const postSendGrid = async (events: unknown[]) => {
    const body = JSON.stringify(events);
    const r = await post(`${base}/webhooks/sendgrid`, body, signer.headers(body));
    expect(r.status).toBe(200);
    return r.body;
  };
  const postIntercom = async (n: unknown) => {
    const body = JSON.stringify(n);
    const r = await post(`${base}/webhooks/intercom`, body, intercomHeaders(IC_SECRET, body));
    expect(r.status).toBe(200);
  };
  /** A SendGrid event about the campaign email to `email`, carrying what SendGrid echoes back. */
  const about = (event: string, email: string, extra: Record<string, unknown> = {}) => {
    const m = sent.get(email)!;
    return sgEvent(event, email, { ...m.custom_args, sg_message_id: `${m.message_id}.filterdrecv-5645d9c87f-2lz4x-1-5D4A`, ...extra });
  };
  const processed = () => until(() => h.call('list_inbound_events', { states: ['pending'] }), (r) => r.structuredContent.events.length === 0);
  const contact = async (clientId: string, email: string) => {
    const o = await h.call('get_client_overview', { client_id: clientId });
    return o.structuredContent.contacts.find((c: { email: string }) => c.email === email);
  };

  beforeAll(async () => {
    target = await createTarget(dialect);
    sg = await startSendGridStandIn({ apiKey: SG_KEY });
    ic = await startIntercomStandIn({ token: IC_TOKEN });
    h = await startInMemory(
      testEnv({
        ...target.env,
        ...standInEnv({ sendgrid: { url: sg.url, apiKey: SG_KEY }, intercom: { url: ic.url, token: IC_TOKEN } }),
        CAMPAIGN_DISPATCH_POLL_MS: '50',
        MCP_HTTP_PORT: '0',
        SENDGRID_WEBHOOK_PUBLIC_KEY: signer.publicKey,
        INTERCOM_CLIENT_SECRET: IC_SECRET,
        WEBHOOK_PROCESS_POLL_MS: '50',
      }),
    );
    server = await serveHttp(h.services);
    base = server.url.replace(/\/mcp$/, '');
    await h.call('register_client', { client_id: 'acme', name: 'Acme Corp', tier: 'enterprise' });
    await h.call('register_client', { client_id: 'globex', name: 'Globex', tier: 'enterprise' });
    await h.call('register_client', { client_id: 'initech', name: 'Initech', tier: 'standard' });
    await h.call('upsert_contact', { client_id: 'acme', email: 'maria@acme.example', first_name: 'María' });
    await h.call('upsert_contact', { client_id: 'acme', email: 'tom@acme.example', first_name: 'Tom' });
    await h.call('upsert_contact', { client_id: 'acme', email: 'ops@acme.example' });
    await h.call('upsert_contact', { client_id: 'globex', email: 'hank@globex.example', first_name: 'Hank' });
    await h.call('upsert_contact', { client_id: 'initech', email: 'peter@initech.example', first_name: 'Peter' });
  });
  afterAll(async () => {
    await server?.close();
    await h?.close();
    await sg?.stop();
    await ic?.stop();
    await target?.cleanup();
  });

  it('counts delivered, opened, clicked, unsubscribed and bounced messages in the campaign status, with rates of sent', async () => {
    const preview = await h.call('send_personalized_email', campaign);
    const confirmed = await h.call('send_personalized_email', { ...campaign, confirmation_token: preview.structuredContent.confirmation_token });
    campaignId = confirmed.structuredContent.campaign_id;
    const done = await h.call('get_campaign_status', { campaign_id: campaignId, wait_seconds: 20 });
    expect(done.structuredContent.campaign.totals).toMatchObject({ sent: 4, total: 4 });
    expect(done.structuredContent.campaign.engagement.totals).toMatchObject({ delivered: 0, opened: 0, rates: { delivered: 0 } });
    for (const d of sg.delivered) sent.set(d.to, { custom_args: d.custom_args, message_id: d.message_id });
    expect(sent.get('maria@acme.example')?.custom_args).toMatchObject({ campaign_id: campaignId, outbox_key: expect.stringContaining(campaignId) });

    const stored = await postSendGrid([
      about('processed', 'maria@acme.example'),
      about('delivered', 'maria@acme.example'),
      about('delivered', 'tom@acme.example'),
      about('delivered', 'ops@acme.example'),
      // No custom_args: matched by the X-Message-Id prefix of sg_message_id and the address.
      sgEvent('delivered', 'hank@globex.example', { sg_message_id: `${sent.get('hank@globex.example')!.message_id}.filterdrecv-1-2-3-4.0` }),
      about('open', 'maria@acme.example'),
      about('open', 'maria@acme.example'), // a second open of the same message: one opened message
      about('open', 'tom@acme.example', { sg_machine_open: true }),
      about('click', 'maria@acme.example', { url: 'https://acme.example/book' }),
    ]);
    expect(stored).toMatchObject({ received: 9, stored: 9 });
    await postSendGrid([
      about('unsubscribe', 'tom@acme.example'),
      about('bounce', 'ops@acme.example', { type: 'bounce', reason: '550 5.1.1 The email account does not exist', status: '5.1.1' }),
    ]);
    await processed();

    const status = (await h.call('get_campaign_status', { campaign_id: campaignId })).structuredContent.campaign;
    const expected = { delivered: 4, opened: 2, clicked: 1, unsubscribed: 1, bounced: 1, spam_reported: 0, dropped: 0, replied: 0 };
    expect(status.engagement.totals).toMatchObject({ ...expected, rates: { delivered: 100, opened: 50, clicked: 25, unsubscribed: 25, bounced: 25, spam_reported: 0 } });
    expect(status.engagement.per_channel.email).toMatchObject(expected);
  });

  it('shows each event in the client timeline, and records the consent they carry with reason and source', async () => {
    const tl = await h.call('get_client_timeline', { client_id: 'acme', types: ['inbound_event'], limit: 50 });
    const summaries = tl.structuredContent.entries.map((e: { summary: string }) => e.summary);
    expect(summaries).toEqual(
      expect.arrayContaining([
        `Email delivered to the mailbox (campaign ${campaignId}, email)`,
        `Email opened (campaign ${campaignId}, email)`,
        `Link clicked: https://acme.example/book (campaign ${campaignId}, email)`,
        `Unsubscribed from all email (SendGrid unsubscribe link) (campaign ${campaignId}, email)`,
        `Email bounced: 550 5.1.1 The email account does not exist (campaign ${campaignId}, email)`,
      ]),
    );
    expect(tl.structuredContent.entries.every((e: { channel: string }) => e.channel === 'sendgrid')).toBe(true);
    const subs = await h.call('get_client_timeline', { client_id: 'acme', types: ['subscription'] });
    expect(subs.structuredContent.entries.map((e: { summary: string }) => e.summary)).toEqual(
      expect.arrayContaining([
        "Email to tom@acme.example suppressed (unsubscribed): unsubscribed through the email's unsubscribe link",
        'Email to ops@acme.example suppressed (bounced): 550 5.1.1 The email account does not exist',
      ]),
    );
    expect(await contact('acme', 'tom@acme.example')).toMatchObject({ email_status: 'unsubscribed', email_status_source: 'sendgrid', unsubscribed: false });
    expect(await contact('acme', 'ops@acme.example')).toMatchObject({ email_status: 'bounced' });
    expect(await contact('acme', 'maria@acme.example')).toMatchObject({ email_status: null });
  });

  it('leaves the unsubscribed and bounced contacts out of the next campaign, with the reason; direct sends refuse them too', async () => {
    const next = await h.call('send_personalized_email', { ...campaign, campaign_name: 'Follow-up' });
    const a = next.structuredContent.audience;
    expect(a.recipients).toBe(2);
    expect(a.excluded.by_reason).toEqual({ email_suppressed: 2 });
    expect(a.excluded.examples).toEqual(
      expect.arrayContaining([
        { email: 'tom@acme.example', client_id: 'acme', reason: 'email_suppressed', channel: 'email' },
        { email: 'ops@acme.example', client_id: 'acme', reason: 'email_suppressed', channel: 'email' },
      ]),
    );
    const direct = await h.call('sendgrid_send_email', { to: 'tom@acme.example', subject: 'Hi', text: 'Hello' });
    expect(direct.structuredContent).toMatchObject({ success: false, error: { code: 'forbidden', details: { policy: 'consent' } } });
    expect(direct.structuredContent.error.message).toMatch(/unsubscribed from emails/);
  });

  it('records customer events in the agreed shape for automations (campaign and automation messages)', async () => {
    const [opened] = (await h.services.store.events.list({ names: ['email_opened'], contact_id: (await contact('acme', 'maria@acme.example')).contact_id }, 1)).events;
    const key = sent.get('maria@acme.example')!.custom_args.outbox_key!;
    expect(opened).toMatchObject({
      name: 'email_opened',
      client_id: 'acme',
      properties: { outbox_key: key, channel: 'email', campaign_id: campaignId, email: 'maria@acme.example' },
      source: 'webhook:sendgrid',
      source_ref: key,
      dedup_key: expect.stringMatching(/^sendgrid:/),
    });

    // A message an automation queued (the automations engine writes outbox rows like this one).
    const maria = await contact('acme', 'maria@acme.example');
    const autoKey = 'wf_followup:enr_1:step_2:email';
    await insertMessages(h.services.store.db, [
      {
        source_kind: 'automation',
        source_id: 'wf_followup',
        source_ref: 'enr_1',
        contact_id: maria.contact_id,
        client_id: 'acme',
        channel: 'email',
        idempotency_key: autoKey,
        content: { subject: 'Following up', text: 'Did you see our note?', to_email: 'maria@acme.example' },
        meta: { label: 'Follow-up', custom_args: { workflow_id: 'wf_followup', contact_id: maria.contact_id, client_id: 'acme', outbox_key: autoKey } },
        not_before: new Date().toISOString(),
      },
    ]);
    h.services.delivery.wake();
    const delivered = await until(async () => sg.delivered.find((d) => d.custom_args.outbox_key === autoKey), (d) => d !== undefined);
    const before = (await h.services.store.events.after(0, 1000, ['email_opened'])).length;
    await postSendGrid([sgEvent('open', 'maria@acme.example', { ...delivered!.custom_args, sg_message_id: `${delivered!.message_id}.filter0001` })]);
    await processed();
    const opens = await h.services.store.events.after(0, 1000, ['email_opened']);
    expect(opens).toHaveLength(before + 1);
    expect(opens.at(-1)).toMatchObject({
      contact_id: maria.contact_id,
      client_id: 'acme',
      properties: { outbox_key: autoKey, channel: 'email', workflow_id: 'wf_followup' },
      source: 'webhook:sendgrid',
      source_ref: autoKey,
    });
  });

  it('an "opened" webhook reaches an automation goal: the follow-up step of the workflow is cancelled', async () => {
    const args = {
      workflow_name: 'Welcome then follow-up',
      trigger_type: 'event_based',
      trigger_conditions: { event: 'trial_started' },
      exit_when: [{ event: 'email_opened', of_this_workflow: true }],
      actions: [
        { type: 'send_email', subject: 'Welcome, {{ contact.first_name | fallback: "there" }}', body: 'Here is how to start.' },
        { type: 'wait', minutes: 1 },
        { type: 'send_email', subject: 'Did you get started?', body: 'Just checking in.' },
      ],
    };
    const preview = await h.call('automate_communications', args);
    const confirmed = await h.call('automate_communications', { ...args, confirmation_token: preview.structuredContent.confirmation_token });
    expect(confirmed.structuredContent.phase).toBe('confirmed');
    const workflowId = confirmed.structuredContent.result_id as string;
    // A contact the earlier tests left alone (no suppression from their events).
    await h.call('upsert_contact', { client_id: 'acme', email: 'newbie@acme.example', first_name: 'Nia' });
    await h.call('record_customer_event', { event: 'trial_started', contact_email: 'newbie@acme.example' });
    // The first email goes out through SendGrid with the workflow's custom_args …
    const welcome = await until(async () => sg.delivered.find((d) => d.custom_args.workflow_id === workflowId), (d) => d !== undefined);
    expect(welcome!.subject).toBe('Welcome, Nia');
    // … SendGrid reports it opened, signed, to our endpoint …
    await postSendGrid([sgEvent('open', 'newbie@acme.example', { ...welcome!.custom_args, sg_message_id: `${welcome!.message_id}.filter0002` })]);
    await processed();
    // … and the enrolment leaves at its goal before the follow-up.
    const wf = await until(() => h.call('get_workflow', { workflow_id: workflowId }), (x) => x.structuredContent.enrollments.exited === 1);
    expect(wf.structuredContent.goals_reached.total).toBe(1);
    // Even once the wait would have ended, the follow-up is never sent.
    await h.services.store.db.updateTable('workflow_enrollments').set({ next_run_at: new Date(Date.now() - 1000).toISOString() }).where('workflow_id', '=', workflowId).execute();
    await settled(h);
    expect(sg.delivered.filter((d) => d.custom_args.workflow_id === workflowId).map((d) => d.subject)).toEqual(['Welcome, Nia']);
    await h.call('archive_workflow', { workflow_id: workflowId });
  });

  it('a group resubscribe lifts only that group\'s unsubscribe, never a bounce or a spam report', async () => {
    await postSendGrid([about('group_unsubscribe', 'hank@globex.example', { asm_group_id: 42 })]);
    await processed();
    expect(await contact('globex', 'hank@globex.example')).toMatchObject({ email_status: 'group_unsubscribed' });
    await postSendGrid([about('group_resubscribe', 'hank@globex.example', { asm_group_id: 7 })]);
    await processed();
    expect(await contact('globex', 'hank@globex.example')).toMatchObject({ email_status: 'group_unsubscribed' });
    await postSendGrid([about('group_resubscribe', 'hank@globex.example', { asm_group_id: 42 })]);
    await processed();
    expect(await contact('globex', 'hank@globex.example')).toMatchObject({ email_status: null });

    await postSendGrid([about('group_resubscribe', 'ops@acme.example', { asm_group_id: 42 })]);
    await postSendGrid([about('spamreport', 'hank@globex.example')]);
    await processed();
    await postSendGrid([about('group_unsubscribe', 'hank@globex.example', { asm_group_id: 42 })]);
    await postSendGrid([about('group_resubscribe', 'hank@globex.example', { asm_group_id: 42 })]);
    await processed();
    expect(await contact('acme', 'ops@acme.example')).toMatchObject({ email_status: 'bounced' });
    expect(await contact('globex', 'hank@globex.example')).toMatchObject({ email_status: 'spam_report' });
    const events = await h.services.store.events.list({ client_id: 'globex', names: ['email_group_unsubscribed', 'email_group_resubscribed', 'email_spam_reported'] }, 20);
    expect(events.events.map((e) => e.name).sort()).toEqual(['email_group_resubscribed', 'email_group_resubscribed', 'email_group_resubscribed', 'email_group_unsubscribed', 'email_group_unsubscribed', 'email_spam_reported']);
    expect(events.events.find((e) => e.name === 'email_group_unsubscribed')?.properties).toMatchObject({ group_id: '42', campaign_id: campaignId });
  });

  it('Intercom: unsubscribe and resubscribe (its own only), tags, and a reply to an Intercom campaign message', async () => {
    const peter = ic.seedContact({ email: 'peter@initech.example', external_id: 'u-peter', name: 'Peter' });
    const icContact = { type: 'contact', id: peter.id, external_id: 'u-peter', email: 'peter@initech.example', role: 'user' };
    await postIntercom(intercomNotification('contact.unsubscribed', icContact));
    await processed();
    expect(await contact('initech', 'peter@initech.example')).toMatchObject({ email_status: 'unsubscribed', email_status_source: 'intercom', intercom_contact_id: peter.id });
    const both = { ...campaign, campaign_name: 'Initech nudge', target_tier: undefined, target_client_ids: ['initech'], channels: ['intercom_email', 'intercom_inapp'] };
    const preview = await h.call('send_personalized_email', both);
    expect(preview.structuredContent.audience.per_channel).toEqual({ intercom_inapp: 1 });
    expect(preview.structuredContent.audience.excluded.by_reason).toEqual({ email_suppressed: 1 });

    // Intercom's resubscribe lifts Intercom's unsubscribe, not SendGrid's.
    await postIntercom(intercomNotification('contact.subscribed', icContact));
    await postIntercom(intercomNotification('contact.subscribed', { type: 'contact', id: 'ic-tom', email: 'tom@acme.example' }));
    await postIntercom(intercomNotification('contact.user.tag.created', { type: 'contact_tag', tag: { type: 'tag', id: '5', name: 'champion' }, contact: icContact }));
    await processed();
    expect(await contact('initech', 'peter@initech.example')).toMatchObject({ email_status: null });
    expect(await contact('acme', 'tom@acme.example')).toMatchObject({ email_status: 'unsubscribed', email_status_source: 'sendgrid' });

    const again = await h.call('send_personalized_email', both);
    expect(again.structuredContent.audience.per_channel).toEqual({ intercom_email: 1, intercom_inapp: 1 });
    const confirmed = await h.call('send_personalized_email', { ...both, confirmation_token: again.structuredContent.confirmation_token });
    const id = confirmed.structuredContent.campaign_id;
    await h.call('get_campaign_status', { campaign_id: id, wait_seconds: 20 });
    const row = await h.services.store.db.selectFrom('outbox').selectAll().where('source_id', '=', id).where('channel', '=', 'intercom_email').executeTakeFirstOrThrow();
    expect(row.state).toBe('sent');
    await postIntercom(
      intercomNotification('conversation.user.replied', {
        type: 'conversation',
        id: 'conv-991',
        source: { type: 'email', id: row.provider_message_id, author: { type: 'admin', id: 'a1' } },
        contacts: { type: 'contact.list', contacts: [{ type: 'contact', id: peter.id, external_id: 'u-peter' }] },
      }),
    );
    await processed();
    const status = (await h.call('get_campaign_status', { campaign_id: id })).structuredContent.campaign;
    expect(status.engagement.per_channel.intercom_email).toMatchObject({ replied: 1, rates: { replied: 100 } });
    expect(status.engagement.per_channel.intercom_inapp).toMatchObject({ replied: 0 });
    const replied = await h.services.store.events.list({ client_id: 'initech', names: ['replied', 'tag_added', 'email_unsubscribed'] }, 10);
    expect(replied.events.map((e) => [e.name, e.source])).toEqual(
      expect.arrayContaining([
        ['replied', 'webhook:intercom'],
        ['tag_added', 'webhook:intercom'],
        ['email_unsubscribed', 'webhook:intercom'],
      ]),
    );
    expect(replied.events.find((e) => e.name === 'replied')).toMatchObject({ properties: { conversation_id: 'conv-991', campaign_id: id, channel: 'intercom_email', outbox_key: row.idempotency_key }, source_ref: row.idempotency_key });
  });

  it('keeps events about people who are not in the roster, visible as unmatched', async () => {
    await postSendGrid([sgEvent('bounce', 'stranger@elsewhere.example', { type: 'bounce', reason: 'no such user' })]);
    await processed();
    const r = await h.call('list_inbound_events', { states: ['unmatched'], email: 'stranger@elsewhere.example' });
    expect(r.structuredContent.events).toHaveLength(1);
    expect(r.structuredContent.events[0]).toMatchObject({ provider: 'sendgrid', event_type: 'bounce', state: 'unmatched', note: expect.stringMatching(/no roster contact/) });
    const status = await h.call('integrations_status');
    expect(status.structuredContent.webhooks.find((w: { endpoint: string }) => w.endpoint === 'sendgrid')).toMatchObject({ unmatched: expect.any(Number), pending: 0, failed: 0 });
  });
});
