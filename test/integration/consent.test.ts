import fs from 'node:fs';
import path from 'node:path';
import SQLite from 'better-sqlite3';
import { Kysely, Migrator, PostgresDialect } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { migrations } from '../../src/store/migrations/index.js';
import { ImmediateSqliteDialect } from '../../src/store/sqlite-dialect.js';
import { serveHttp, type RunningHttpServer } from '../../src/transports/http.js';
import { person } from '../helpers/approval.js';
import { activate } from '../helpers/automations.js';
import { availableDialects, createTarget, type DatabaseTarget } from '../helpers/databases.js';
import { startInMemory, standInEnv, testEnv, type InMemoryHarness } from '../helpers/mcp.js';
import { until } from '../helpers/until.js';
import { intercomHeaders, intercomNotification, post, sendgridSigner, sgEvent } from '../helpers/webhooks.js';
import { startIntercomStandIn, type IntercomStandIn } from '../stand-ins/intercom.js';
import { startSendGridStandIn, type SendGridStandIn } from '../stand-ins/sendgrid.js';

/**
 * Issue 15, items 7–11: an opt-out belongs to the address, everywhere, for good; nothing is sent twice by
 * varying an address. Played the way a manipulated model would act, over the real server and MCP client:
 * re-added contacts, an address at another client, a spam report before the contact exists, a resubscribe
 * without a person, a poisoned outbox_key, an Intercom lead and user sharing an address, case-varied
 * addresses and a reused idempotency_key.
 */

const dialects = await availableDialects();
const SG_KEY = 'SG.consent-suite-key.0123456789abcdef';
const IC_TOKEN = 'intercom-consent-suite-token';
const IC_SECRET = 'intercom-client-secret-consent';

describe.each(dialects)('consent belongs to the address, on %s', (dialect) => {
  const signer = sendgridSigner();
  let target: DatabaseTarget;
  let sg: SendGridStandIn;
  let ic: IntercomStandIn;
  let h: InMemoryHarness;
  let server: RunningHttpServer;
  let base = '';
  const open: InMemoryHarness[] = [];

  const env = (extra: Record<string, string> = {}) =>
    testEnv({
      ...target.env,
      ...standInEnv({ sendgrid: { url: sg.url, apiKey: SG_KEY }, intercom: { url: ic.url, token: IC_TOKEN } }),
      CAMPAIGN_DISPATCH_POLL_MS: '50',
      AUTOMATION_TICK_MS: '50',
      MCP_HTTP_PORT: '0',
      SENDGRID_WEBHOOK_PUBLIC_KEY: signer.publicKey,
      INTERCOM_CLIENT_SECRET: IC_SECRET,
      WEBHOOK_PROCESS_POLL_MS: '50',
      // A loaded machine: a send timing out would be in doubt (never retried), which is not what these tests are about.
      HTTP_TIMEOUT_MS: '15000',
      ...extra,
    });
  /** Another server on the same database: another approval policy, or a person at the client. */
  const start = async (extra: Record<string, string> = {}, p?: ReturnType<typeof person>) => {
    const x = await startInMemory(env(extra), {}, { onElicit: p?.onElicit });
    open.push(x);
    return x;
  };
  const sendsTo = (email: string) => sg.delivered.filter((d) => d.to === email).length;
  const postSendGrid = async (events: unknown[]) => {
    const body = JSON.stringify(events);
    const r = await post(`${base}/webhooks/sendgrid`, body, signer.headers(body));
    expect(r.status).toBe(200);
  };
  const postIntercom = async (n: unknown) => {
    const body = JSON.stringify(n);
    const r = await post(`${base}/webhooks/intercom`, body, intercomHeaders(IC_SECRET, body));
    expect(r.status).toBe(200);
  };
  const processed = () => until(() => h.call('list_inbound_events', { states: ['pending'] }), (r) => r.structuredContent.events.length === 0);
  const contact = async (clientId: string, email: string) => {
    const o = await h.call('get_client_overview', { client_id: clientId });
    return o.structuredContent.contacts.find((c: { email: string }) => c.email === email);
  };
  const refusedForConsent = (r: { structuredContent: Record<string, any> }) =>
    expect(r.structuredContent, JSON.stringify(r.structuredContent)).toMatchObject({ success: false, error: { code: 'forbidden', details: { policy: 'consent' } } });

  beforeAll(async () => {
    target = await createTarget(dialect);
    sg = await startSendGridStandIn({ apiKey: SG_KEY });
    ic = await startIntercomStandIn({ token: IC_TOKEN });
    h = await startInMemory(env());
    server = await serveHttp(h.services);
    base = server.url.replace(/\/mcp$/, '');
    await h.call('register_client', { client_id: 'acme', name: 'Acme Corp', tier: 'enterprise' });
    await h.call('register_client', { client_id: 'globex', name: 'Globex', tier: 'enterprise' });
    await h.call('register_client', { client_id: 'initech', name: 'Initech', tier: 'standard' });
  });
  afterAll(async () => {
    while (open.length) await open.pop()!.close();
    await server?.close();
    await h?.close();
    await sg?.stop();
    await ic?.stop();
    await target?.cleanup();
  });

  describe('7. a suppression list keyed by the address', () => {
    it('an unsubscribe survives remove_contact + upsert_contact, covers the address at another client, and is listed', async () => {
      await h.call('upsert_contact', { client_id: 'acme', email: 'ann@acme.test', first_name: 'Ann' });
      await h.call('upsert_contact', { client_id: 'globex', email: 'bob@globex.test', first_name: 'Bob' });
      await h.call('set_contact_subscription', { email: 'ann@acme.test', subscribed: false, reason: 'asked to stop', source: 'customer_email' });
      // The manipulated model tries to wash the opt-out away: remove the contact, add it again (case varied), and at another client.
      await h.call('remove_contact', { client_id: 'acme', email: 'ann@acme.test' });
      const again = await h.call('upsert_contact', { client_id: 'acme', email: 'Ann@Acme.test', first_name: 'Ann' });
      expect(again.structuredContent).toMatchObject({ created: true, contact: { email: 'ann@acme.test', unsubscribed: true, unsubscribe_source: 'customer_email' } });
      const elsewhere = await h.call('upsert_contact', { client_id: 'globex', email: 'ann@acme.test', first_name: 'Ann' });
      expect(elsewhere.structuredContent.contact).toMatchObject({ unsubscribed: true });

      const before = sg.requests.length;
      refusedForConsent(await h.call('sendgrid_send_email', { to: 'ann@acme.test', subject: 'Back again', text: 'Hi Ann' }));
      refusedForConsent(await h.call('sendgrid_send_bulk_emails', { recipients: [{ email: 'bob@globex.test' }, { email: 'ANN@acme.test' }], subject: 'News', text: 'Hello' }));
      expect(sg.requests.length).toBe(before);

      const preview = await h.call('send_personalized_email', {
        campaign_name: 'Re-added check',
        template_type: 'health_check',
        subject_line: 'Hello {{ client.name }}',
        body_text: 'Hi there',
        target_client_ids: ['acme', 'globex'],
      });
      expect(preview.structuredContent, JSON.stringify(preview.structuredContent).slice(0, 600)).toMatchObject({ success: true });
      expect(preview.structuredContent.audience.recipients).toBe(1);
      expect(preview.structuredContent.audience.excluded.by_reason).toMatchObject({ unsubscribed: 2 });

      const listed = await h.call('list_suppressions', { email: ' ANN@acme.test ' });
      expect(listed.structuredContent).toMatchObject({ total: 1, suppressions: [{ address: 'ann@acme.test', scope: 'all', source: 'customer_email', kind: 'unsubscribed', reason: 'asked to stop', liftable_by_tool: true, lifted_at: null }] });
    });

    it('a spam report for an address not yet in the roster lands in the list and holds on every path once the contact is added', async () => {
      await postSendGrid([sgEvent('spamreport', 'Spam@Later.test')]);
      await processed();
      const listed = await h.call('list_suppressions', { email: 'spam@later.test' });
      expect(listed.structuredContent.suppressions).toEqual([expect.objectContaining({ address: 'spam@later.test', scope: 'email', source: 'sendgrid', kind: 'spam_report', liftable_by_tool: false })]);

      const before = sg.requests.length;
      // Direct tools, even before the address is a roster contact.
      refusedForConsent(await h.call('sendgrid_send_email', { to: ['spam@later.test'], subject: 'Hi', text: 'Hello' }));
      refusedForConsent(await h.call('sendgrid_send_template_email', { template_id: `d-${'a'.repeat(32)}`, to: [{ email: 'spam@later.test' }] }));
      ic.seedContact({ email: 'spam@later.test', name: 'Later Person' });
      refusedForConsent(await h.call('intercom_send_message', { user_email: 'spam@later.test', message_type: 'email', subject: 'Hi', body: 'Hello' }));
      expect(sg.requests.length).toBe(before);

      // Added to the roster afterwards: suppressed there too.
      const added = await h.call('upsert_contact', { client_id: 'initech', email: 'spam@later.test', first_name: 'Lee' });
      expect(added.structuredContent.contact).toMatchObject({ email_status: 'spam_report', email_status_source: 'sendgrid' });
      const preview = await h.call('send_personalized_email', {
        campaign_name: 'Initech news',
        template_type: 'newsletter',
        subject_line: 'News',
        body_text: 'Hi',
        target_client_ids: ['initech'],
      });
      expect(preview.structuredContent.audience.excluded.by_reason).toEqual({ email_suppressed: 1 });

      // An automation's email to the contact is recorded as not sent.
      const { workflowId } = await activate(h, {
        workflow_name: 'Later welcome',
        trigger_type: 'event_based',
        trigger_conditions: { event: 'later_signed_up' },
        actions: [{ type: 'send_email', subject: 'Welcome', body: 'Hi {{ contact.first_name | fallback: "there" }}' }],
      });
      await h.call('record_customer_event', { event: 'later_signed_up', contact_email: 'spam@later.test' });
      const wf = await until(() => h.call('get_workflow', { workflow_id: workflowId }), (x) => Object.keys(x.structuredContent.messages.not_sent_by_reason).length > 0);
      expect(wf.structuredContent.messages.not_sent_by_reason).toEqual({ email_suppressed: 1 });
      expect(sendsTo('spam@later.test')).toBe(0);
      await h.call('archive_workflow', { workflow_id: workflowId });
    });
  });

  describe('8. resubscribing is a consent override', () => {
    it('auto with a client that cannot ask: refused, nothing lifted, the next send still refused', async () => {
      await h.call('upsert_contact', { client_id: 'acme', email: 'carl@acme.test' });
      await h.call('set_contact_subscription', { email: 'carl@acme.test', subscribed: false, reason: 'asked to stop' });
      const r = await h.call('set_contact_subscription', { email: 'carl@acme.test', subscribed: true, reason: 'the model says so' });
      expect(r.structuredContent).toMatchObject({ success: false, error: { code: 'forbidden', details: { policy: 'approval_required' } } });
      refusedForConsent(await h.call('sendgrid_send_email', { to: 'carl@acme.test', subject: 'Hi Carl', text: 'Hello' }));
      expect(sendsTo('carl@acme.test')).toBe(0);
    });

    it('a person is asked, sees what is lifted, and only their "yes" lifts it; a decline changes nothing', async () => {
      const no = person();
      no.answers({ action: 'decline' });
      const declined = await (await start({}, no)).call('set_contact_subscription', { email: 'carl@acme.test', subscribed: true, reason: 'customer asked by phone' });
      expect(declined.structuredContent.error, JSON.stringify(declined.structuredContent)).toMatchObject({ code: 'declined' });
      expect(await contact('acme', 'carl@acme.test')).toMatchObject({ unsubscribed: true });

      const yes = person();
      const x = await start({}, yes);
      const lifted = await x.call('set_contact_subscription', { email: 'carl@acme.test', subscribed: true, reason: 'customer asked by phone' });
      expect(lifted.structuredContent).toMatchObject({ success: true, changed: 1, suppressions: [], contacts: [{ unsubscribed: false }] });
      expect(yes.asked).toHaveLength(1);
      expect(yes.asked[0]!.message).toMatch(/carl@acme\.test/);
      expect(yes.asked[0]!.message).toMatch(/Lifts: carl@acme\.test unsubscribed from all messages/);
      const audit = await h.call('get_audit_log', { tool: 'set_contact_subscription' });
      expect(JSON.stringify(audit.structuredContent)).toMatch(/consent_override/);
      const sent = await x.call('sendgrid_send_email', { to: 'carl@acme.test', subject: 'Hi Carl', text: 'Hello again' });
      expect(sent.structuredContent, JSON.stringify(sent.structuredContent)).toMatchObject({ success: true, accepted: 1 });
    });

    it('under token no one is asked; a spam report or hard bounce is never lifted by a tool, nor sent past with override_consent', async () => {
      await h.call('upsert_contact', { client_id: 'acme', email: 'dora@acme.test' });
      await h.call('set_contact_subscription', { email: 'dora@acme.test', subscribed: false });
      const tokenServer = await start({ CS_MCP_APPROVAL: 'token' });
      const lifted = await tokenServer.call('set_contact_subscription', { email: 'dora@acme.test', subscribed: true });
      expect(lifted.structuredContent).toMatchObject({ success: true, changed: 1, suppressions: [] });

      await h.call('upsert_contact', { client_id: 'acme', email: 'eve@acme.test' });
      await postSendGrid([sgEvent('spamreport', 'eve@acme.test'), sgEvent('bounce', 'fay@acme.test', { type: 'bounce', reason: '550 no such user' })]);
      await processed();
      const yes = person();
      const withPerson = await start({}, yes);
      for (const server of [tokenServer, withPerson, h]) {
        for (const email of ['eve@acme.test', 'fay@acme.test']) {
          const r = await server.call('set_contact_subscription', { email, subscribed: true, reason: 'please' });
          expect(r.structuredContent).toMatchObject({ success: false, error: { code: 'forbidden', details: { policy: 'consent' } } });
          expect(r.structuredContent.error.message).toMatch(/cannot be resubscribed by any tool.*only the recipient/i);
        }
      }
      expect(yes.asked).toHaveLength(0);
      const override = await withPerson.call('sendgrid_send_email', { to: 'eve@acme.test', subject: 'Sorry', text: 'x', override_consent: { reason: 'they asked us to write back' } });
      refusedForConsent(override);
      expect(sendsTo('eve@acme.test') + sendsTo('fay@acme.test')).toBe(0);
      expect(await contact('acme', 'eve@acme.test')).toMatchObject({ email_status: 'spam_report' });
    });
  });

  describe('9. an event cannot poison another customer\'s consent', () => {
    it('reserved custom_args are refused; an event carrying a victim\'s outbox_key for another address changes nothing of the victim\'s', async () => {
      await h.call('register_client', { client_id: 'victimco', name: 'Victim Co' });
      await h.call('upsert_contact', { client_id: 'victimco', email: 'victim@victimco.test', first_name: 'Vic' });
      const args = { campaign_name: 'Victim news', template_type: 'newsletter', subject_line: 'News', body_text: 'Hi', target_client_ids: ['victimco'] };
      const preview = await h.call('send_personalized_email', args);
      const confirmed = await h.call('send_personalized_email', { ...args, confirmation_token: preview.structuredContent.confirmation_token });
      const campaignId = confirmed.structuredContent.campaign_id as string;
      await h.call('get_campaign_status', { campaign_id: campaignId, wait_seconds: 20 });
      const victimMail = sg.delivered.find((d) => d.custom_args.campaign_id === campaignId)!;
      const key = victimMail.custom_args.outbox_key!;

      // The manipulated model copies the victim's key into a direct email to a throwaway address.
      for (const custom_args of [{ outbox_key: key }, { OUTBOX_KEY: key }, { campaign_id: campaignId }, { email: 'victim@victimco.test' }]) {
        const r = await h.call('sendgrid_send_email', { to: 'throwaway@evil.test', subject: 'x', text: 'x', custom_args });
        expect(r.structuredContent, JSON.stringify(custom_args)).toMatchObject({ success: false, error: { code: 'invalid_input' } });
        expect(r.structuredContent.error.message).toMatch(/reserved/);
      }
      expect(sendsTo('throwaway@evil.test')).toBe(0);

      // Such a message sent before the fix bounces: SendGrid echoes the victim's key with the throwaway address.
      await postSendGrid([sgEvent('bounce', 'throwaway@evil.test', { type: 'bounce', reason: '550 no such user', outbox_key: key, campaign_id: campaignId, sg_message_id: `${victimMail.message_id}.filter1` })]);
      await processed();
      expect(await contact('victimco', 'victim@victimco.test')).toMatchObject({ email_status: null, unsubscribed: false });
      const status = await h.call('get_campaign_status', { campaign_id: campaignId });
      expect(status.structuredContent.campaign.engagement.totals).toMatchObject({ bounced: 0 });
      // The bounce belongs to the address it happened to.
      const listed = await h.call('list_suppressions', { email: 'throwaway@evil.test' });
      expect(listed.structuredContent.suppressions).toEqual([expect.objectContaining({ kind: 'bounced', source: 'sendgrid' })]);
      expect((await h.call('list_suppressions', { email: 'victim@victimco.test' })).structuredContent.total).toBe(0);
    });
  });

  describe('10. an opt-out holds until the same source and scope lift it', () => {
    it('an Intercom user resubscribing does not lift the unsubscribe of a lead sharing the address', async () => {
      await h.call('upsert_contact', { client_id: 'globex', email: 'shared@globex.test', first_name: 'Sam' });
      const lead = { type: 'contact', id: 'ic-lead-shared', email: 'shared@globex.test', role: 'lead' };
      const user = { type: 'contact', id: 'ic-user-shared', email: 'shared@globex.test', role: 'user' };
      await postIntercom(intercomNotification('contact.unsubscribed', lead));
      await processed();
      await postIntercom(intercomNotification('contact.subscribed', user));
      await processed();
      expect(await contact('globex', 'shared@globex.test')).toMatchObject({ email_status: 'unsubscribed', email_status_source: 'intercom' });
      refusedForConsent(await h.call('sendgrid_send_email', { to: 'shared@globex.test', subject: 'Hi Sam', text: 'Hello' }));
      expect((await h.call('list_suppressions', { email: 'shared@globex.test' })).structuredContent.suppressions).toEqual([
        expect.objectContaining({ scope: 'intercom', source: 'intercom:ic-lead-shared', kind: 'unsubscribed' }),
      ]);
      // The lead's own resubscribe lifts it.
      await postIntercom(intercomNotification('contact.subscribed', lead));
      await processed();
      expect(await contact('globex', 'shared@globex.test')).toMatchObject({ email_status: null });
    });

    it('a SendGrid group resubscribe does not lift a SendGrid unsubscribe from all email, nor another group', async () => {
      await h.call('upsert_contact', { client_id: 'globex', email: 'gus@globex.test' });
      await postSendGrid([sgEvent('unsubscribe', 'gus@globex.test'), sgEvent('group_unsubscribe', 'gus@globex.test', { asm_group_id: 7 })]);
      await processed();
      await postSendGrid([sgEvent('group_resubscribe', 'gus@globex.test', { asm_group_id: 7 })]);
      await processed();
      expect(await contact('globex', 'gus@globex.test')).toMatchObject({ email_status: 'unsubscribed' });
      refusedForConsent(await h.call('sendgrid_send_email', { to: 'gus@globex.test', subject: 'Hi Gus', text: 'Hello' }));
    });
  });

  describe('11. repeats', () => {
    it('varying the case, spaces, or string vs list of an address does not deliver the same email again', async () => {
      const email = { subject: 'One renewal note', text: 'Your renewal is due.' };
      const first = await h.call('sendgrid_send_email', { to: 'Hal@Hooli.test', ...email });
      expect(first.structuredContent).toMatchObject({ success: true, accepted: 1 });
      for (const to of [' hal@hooli.test', ['hal@hooli.test'], 'HAL@HOOLI.TEST ', [{ email: 'hal@hooli.TEST ' }]]) {
        const r = await h.call('sendgrid_send_email', { to, ...email });
        expect(r.structuredContent, JSON.stringify(to)).toMatchObject({ success: false, error: { code: 'conflict' } });
      }
      ic.seedContact({ email: 'ivan@hooli.test', name: 'Ivan' });
      const im = { message_type: 'inapp', body: 'One in-app note' };
      expect((await h.call('intercom_send_message', { user_email: 'ivan@hooli.test', ...im })).structuredContent).toMatchObject({ success: true });
      const again = await h.call('intercom_send_message', { user_email: ' IVAN@hooli.test', ...im });
      expect(again.structuredContent).toMatchObject({ success: false, error: { code: 'conflict' } });
      expect(sendsTo('hal@hooli.test')).toBe(1);
      expect(ic.messages.filter((m) => m.body === 'One in-app note')).toHaveLength(1);
    });

    it('an idempotency_key reused on another tool or with other content is conflict, never a send', async () => {
      const key = 'renewal-jan-2027';
      const first = await h.call('sendgrid_send_email', { to: 'jan@hooli.test', subject: 'Renewal', text: 'Due soon', idempotency_key: key });
      expect(first.structuredContent).toMatchObject({ success: true });
      // Same key, same recipient in another case: the first result again, nothing sent.
      const replay = await h.call('sendgrid_send_email', { to: ['JAN@hooli.test'], subject: 'Renewal', text: 'Due soon', idempotency_key: key });
      expect(replay.structuredContent).toMatchObject({ success: true, replayed: true });
      const bulk = await h.call('sendgrid_send_bulk_emails', { recipients: [{ email: 'jan@hooli.test' }], subject: 'Renewal', text: 'Due soon', idempotency_key: key });
      expect(bulk.structuredContent).toMatchObject({ success: false, error: { code: 'conflict' } });
      const tpl = await h.call('sendgrid_send_template_email', { template_id: `d-${'b'.repeat(32)}`, to: [{ email: 'jan@hooli.test' }], idempotency_key: key });
      expect(tpl.structuredContent).toMatchObject({ success: false, error: { code: 'conflict' } });
      ic.seedContact({ email: 'jan@hooli.test', name: 'Jan' });
      const inapp = await h.call('intercom_send_message', { user_email: 'jan@hooli.test', message_type: 'inapp', body: 'Due soon', idempotency_key: key });
      expect(inapp.structuredContent).toMatchObject({ success: false, error: { code: 'conflict' } });
      const other = await h.call('sendgrid_send_email', { to: 'jan@hooli.test', subject: 'Renewal', text: 'Different text', idempotency_key: key });
      expect(other.structuredContent).toMatchObject({ success: false, error: { code: 'conflict' } });
      expect(sendsTo('jan@hooli.test')).toBe(1);
      expect(ic.messages.filter((m) => m.body === 'Due soon')).toHaveLength(0);
    });
  });
});

describe.each(dialects)('the suppression list migration on %s', (dialect) => {
  it('0011 carries every opt-out of an existing roster over: a contact removed and added again after the upgrade stays suppressed', async () => {
    const target = await createTarget(dialect);
    try {
      // A database as the previous version left it: every migration before 0011, with consent on roster rows.
      const config = loadConfig(testEnv(target.env) as NodeJS.ProcessEnv);
      if (config.database.kind === 'sqlite') fs.mkdirSync(path.dirname(config.database.file), { recursive: true });
      const db: Kysely<any> =
        config.database.kind === 'postgres'
          ? new Kysely({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: config.database.url }) }) })
          : new Kysely({ dialect: new ImmediateSqliteDialect({ database: new SQLite(config.database.file) }) });
      const before = Object.fromEntries(Object.entries(migrations).filter(([name]) => name < '0011'));
      const { error } = await new Migrator({ db, provider: { getMigrations: async () => before } }).migrateToLatest();
      expect(error).toBeUndefined();
      const now = new Date().toISOString();
      await db.insertInto('clients').values({ client_id: 'oldco', name: 'Old Co', tier: 'standard', lifecycle_stage: 'onboarding', custom_attributes: '{}', created_at: now, updated_at: now }).execute();
      const row = (id: string, email: string, extra: Record<string, unknown>) => ({
        contact_id: id, client_id: 'oldco', email, unsubscribed: 0, created_at: now, updated_at: now, ...extra,
      });
      await db.insertInto('contacts').values([
        row('ct_a', 'gone@oldco.test', { unsubscribed: 1, unsubscribed_at: now, unsubscribe_source: 'csm_request', unsubscribe_reason: 'asked' }),
        row('ct_b', 'spam@oldco.test', { email_status: 'spam_report', email_status_at: now, email_status_source: 'sendgrid', email_status_reason: 'marked an email as spam' }),
        row('ct_c', 'fine@oldco.test', {}),
      ]).execute();
      await db.destroy();

      const h = await startInMemory(testEnv(target.env));
      try {
        const listed = await h.call('list_suppressions', {});
        expect(listed.structuredContent.suppressions.map((x: { address: string; scope: string; kind: string }) => [x.address, x.scope, x.kind]).sort()).toEqual([
          ['gone@oldco.test', 'all', 'unsubscribed'],
          ['spam@oldco.test', 'email', 'spam_report'],
        ]);
        await h.call('remove_contact', { client_id: 'oldco', email: 'spam@oldco.test' });
        const again = await h.call('upsert_contact', { client_id: 'oldco', email: 'spam@oldco.test' });
        expect(again.structuredContent.contact).toMatchObject({ email_status: 'spam_report' });
      } finally {
        await h.close();
      }
    } finally {
      await target.cleanup();
    }
  });
});
