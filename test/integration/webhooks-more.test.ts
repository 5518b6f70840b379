import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serveHttp, type RunningHttpServer } from '../../src/transports/http.js';
import { startInMemory, tempDataDir, testEnv, type InMemoryHarness } from '../helpers/mcp.js';
import { settled as schedulerSettled } from '../helpers/automations.js';
import { until } from '../helpers/until.js';
import { eventId, intercomHeaders, intercomNotification, post, productHeaders, sendgridSigner, sgEvent } from '../helpers/webhooks.js';
import { HttpStandIn } from '../stand-ins/http-stand-in.js';

/**
 * Webhook behaviour the issue requires beyond webhooks.test.ts and webhooks-e2e.test.ts: a 503 (and
 * nothing stored) when the events cannot be stored, then the redelivery stored once; the Intercom topics
 * for contacts created / updated, a tag removed, a conversation started and a reply; and inbound events
 * firing an event_based automation and counting as activity for behavior_based inactivity. SQLite.
 */

const INTERCOM_SECRET = 'intercom-client-secret-for-more-tests';
const EVENTS_SECRET = 'product-events-secret-more-0123456789';
const DAY = 86_400_000;

describe('webhooks: storage failures, Intercom topics, automations', () => {
  const data = tempDataDir();
  const signer = sendgridSigner();
  let h: InMemoryHarness;
  let server: RunningHttpServer;
  let hooks: HttpStandIn;
  let base = '';

  const db = () => h.services.store.db;
  const settled = () => until(() => h.services.inbox.repo.backlog(), (b) => !b.some((x) => x.state === 'pending'));
  const sendgrid = (events: unknown[]) => {
    const body = JSON.stringify(events);
    return post(`${base}/webhooks/sendgrid`, body, signer.headers(body));
  };
  const intercom = async (n: unknown) => {
    const body = JSON.stringify(n);
    const r = await post(`${base}/webhooks/intercom`, body, intercomHeaders(INTERCOM_SECRET, body));
    expect(r.status).toBe(200);
    return r;
  };
  const product = async (events: unknown[]) => {
    const body = JSON.stringify({ events });
    const r = await post(`${base}/webhooks/events`, body, productHeaders(EVENTS_SECRET, body));
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    return r;
  };
  const contact = async (clientId: string, email: string) => {
    const o = await h.call('get_client_overview', { client_id: clientId });
    return o.structuredContent.contacts.find((c: { email: string }) => c.email === email);
  };
  const activate = async (args: Record<string, unknown>) => {
    const preview = await h.call('automate_communications', args);
    expect(preview.structuredContent, JSON.stringify(preview.structuredContent).slice(0, 2000)).toMatchObject({ success: true, phase: 'preview' });
    const confirmed = await h.call('automate_communications', { ...args, confirmation_token: preview.structuredContent.confirmation_token });
    expect(confirmed.structuredContent).toMatchObject({ success: true, phase: 'confirmed' });
    return { workflowId: confirmed.structuredContent.result_id as string, preview: preview.structuredContent };
  };
  const enrolledContacts = async (workflowId: string) => {
    const rows = await db()
      .selectFrom('workflow_enrollments as e')
      .innerJoin('contacts as c', 'c.contact_id', 'e.contact_id')
      .select('c.email')
      .where('e.workflow_id', '=', workflowId)
      .execute();
    return rows.map((r) => r.email).sort();
  };

  beforeAll(async () => {
    hooks = await new HttpStandIn({ name: 'receiver' }, () => ({ status: 200, body: {} })).start();
    h = await startInMemory(
      testEnv(
        {
          MCP_HTTP_PORT: '0',
          MCP_HTTP_TOKEN: 'mcp-token-webhooks-more-0123456789abcdef',
          SENDGRID_WEBHOOK_PUBLIC_KEY: signer.publicKey,
          INTERCOM_CLIENT_SECRET: INTERCOM_SECRET,
          CS_MCP_EVENTS_WEBHOOK_SECRET: EVENTS_SECRET,
          WEBHOOK_PROCESS_POLL_MS: '50',
          AUTOMATION_WEBHOOK_ALLOWED_HOSTS: new URL(hooks.url).origin,
        AUTOMATION_WEBHOOK_PRIVATE_ORIGINS: new URL(hooks.url).origin, // the stand-in is on 127.0.0.1
          AUTOMATION_WEBHOOK_SECRET: 'whsec_webhooks_more_secret',
          AUTOMATION_TICK_MS: '50',
          AUTOMATION_SWEEP_MS: '100',
          AUTOMATION_LEASE_MS: '3000',
        },
        data.dir,
      ),
    );
    server = await serveHttp(h.services);
    base = server.url.replace(/\/mcp$/, '');
    await h.call('register_client', { client_id: 'acme', name: 'Acme' });
    await h.call('upsert_contact', { client_id: 'acme', email: 'maria@acme.example' });
  });
  afterAll(async () => {
    await server?.close();
    await h?.close();
    await hooks?.stop();
    data.cleanup();
  });

  it('answers 503 and stores nothing when the events cannot be stored; the redelivery after recovery is stored once', async () => {
    const events = [sgEvent('delivered', 'maria@acme.example'), sgEvent('open', 'maria@acme.example')];
    const ids = events.map((e) => `sendgrid:${String(e.sg_event_id)}`);
    const stored = async (table: 'inbox_events' | 'inbox_events_away') =>
      Number((await sql<{ n: number }>`select count(*) as n from ${sql.table(table)} where dedup_key in (${sql.join(ids)})`.execute(db())).rows[0]!.n);
    // The inbox table becomes unavailable (as a database that refuses writes would be).
    await sql`alter table inbox_events rename to inbox_events_away`.execute(db());
    try {
      const r = await sendgrid(events);
      expect(r.status).toBe(503);
      expect(r.body.error).toMatch(/could not be stored.*deliver them again later/);
      expect(await stored('inbox_events_away')).toBe(0);
      expect(h.logs.some((l) => l.includes('storing webhook events failed'))).toBe(true);
    } finally {
      await sql`alter table inbox_events_away rename to inbox_events`.execute(db());
    }
    // SendGrid delivers the same batch again: stored once, processed; a further repeat is a duplicate.
    expect(await sendgrid(events)).toMatchObject({ status: 200, body: { received: 2, stored: 2, duplicates: 0 } });
    expect(await sendgrid(events)).toMatchObject({ status: 200, body: { received: 2, stored: 0, duplicates: 2 } });
    expect(await stored('inbox_events')).toBe(2);
    await settled();
    const recorded = await h.services.store.events.list({ client_id: 'acme', names: ['email_delivered', 'email_opened'] }, 10);
    expect(recorded.events.filter((e) => ids.includes(String(e.dedup_key))).map((e) => e.name).sort()).toEqual(['email_delivered', 'email_opened']);
  });

  it('a signed body nested thousands of levels deep is refused with 400 (never 500 "deliver again later"), on every endpoint', async () => {
    for (const depth of [65, 5_000, 200_000]) {
      const deep = `${'['.repeat(depth)}1${']'.repeat(depth)}`;
      const sg = `[{"email":"maria@acme.example","event":"open","sg_event_id":"${eventId()}","timestamp":${Math.floor(Date.now() / 1000)},"x":${deep}}]`;
      const ic = JSON.stringify(intercomNotification('contact.user.created', { type: 'contact', id: 'ic-deep' })).replace(/\}$/, `,"x":${deep}}`);
      const ev = `{"events":[{"event":"login","email":"maria@acme.example","properties":{"x":${deep}}}]}`;
      for (const [name, r] of [
        ['sendgrid', await post(`${base}/webhooks/sendgrid`, sg, signer.headers(sg))],
        ['intercom', await post(`${base}/webhooks/intercom`, ic, intercomHeaders(INTERCOM_SECRET, ic))],
        ['events', await post(`${base}/webhooks/events`, ev, productHeaders(EVENTS_SECRET, ev))],
      ] as const) {
        expect(r.status, `${name} at ${depth}: ${JSON.stringify(r.body)}`).toBe(400);
        expect(r.body.error).toMatch(/nested more than 64 levels deep/);
      }
    }
    // The endpoints still work.
    expect((await sendgrid([sgEvent('delivered', 'maria@acme.example')])).status).toBe(200);
  });

  it('Intercom: contact created (links the roster contact) and updated, tag deleted, conversation started and replied', async () => {
    await h.call('register_client', { client_id: 'ivyco', name: 'Ivy Co' });
    await h.call('upsert_contact', { client_id: 'ivyco', email: 'ivy@ivyco.example' });
    expect(await contact('ivyco', 'ivy@ivyco.example')).toMatchObject({ intercom_contact_id: null });
    const ivy = { type: 'contact', id: 'ic-ivy-1', email: 'ivy@ivyco.example', role: 'user' };
    await intercom(intercomNotification('contact.user.created', ivy));
    await settled();
    // Created: the roster contact (found by email) is linked to its Intercom id.
    expect(await contact('ivyco', 'ivy@ivyco.example')).toMatchObject({ intercom_contact_id: 'ic-ivy-1' });
    // Later topics name only the Intercom id: found through that link.
    await intercom(intercomNotification('contact.lead.updated', { type: 'contact', id: 'ic-ivy-1', role: 'lead' }));
    await intercom(intercomNotification('contact.user.tag.deleted', { type: 'contact_tag', tag: { type: 'tag', id: '11', name: 'vip' }, contact: { type: 'contact', id: 'ic-ivy-1' } }));
    await intercom(
      intercomNotification('conversation.user.created', {
        type: 'conversation',
        id: 'conv-ivy-1',
        source: { type: 'conversation', id: 'src-1', author: { type: 'user', id: 'ic-ivy-1', email: 'ivy@ivyco.example' } },
        contacts: { type: 'contact.list', contacts: [{ type: 'contact', id: 'ic-ivy-1' }] },
      }),
    );
    await intercom(
      intercomNotification('conversation.user.replied', {
        type: 'conversation',
        id: 'conv-ivy-1',
        source: { type: 'conversation', id: 'src-1', author: { type: 'user', id: 'ic-ivy-1' } },
        contacts: { type: 'contact.list', contacts: [{ type: 'contact', id: 'ic-ivy-1' }] },
      }),
    );
    await settled();
    const { events: inbox } = await h.services.inbox.repo.list({ provider: 'intercom' }, 20);
    // (the only Intercom notifications this file posts)
    expect(inbox.map((e) => [e.event_type, e.state]).sort()).toEqual(
      [
        ['contact.lead.updated', 'processed'],
        ['contact.user.created', 'processed'],
        ['contact.user.tag.deleted', 'processed'],
        ['conversation.user.created', 'processed'],
        ['conversation.user.replied', 'processed'],
      ].sort(),
    );
    const names = ['intercom_contact_created', 'intercom_contact_updated', 'tag_removed', 'conversation_started', 'replied'];
    const { events } = await h.services.store.events.list({ client_id: 'ivyco', names }, 20);
    const byName = new Map(events.map((e) => [e.name, e]));
    expect([...byName.keys()].sort()).toEqual([...names].sort());
    for (const e of events) expect(e).toMatchObject({ source: 'webhook:intercom', properties: { intercom_contact_id: 'ic-ivy-1' } });
    expect(events.every((e) => e.contact_id === events[0]!.contact_id && e.contact_id !== null)).toBe(true);
    expect(byName.get('tag_removed')!.properties).toMatchObject({ tag: 'vip' });
    expect(byName.get('conversation_started')!.properties).toMatchObject({ conversation_id: 'conv-ivy-1' });
    expect(byName.get('replied')!.properties).toMatchObject({ conversation_id: 'conv-ivy-1' });
    // Each is in the client's timeline.
    const timeline = await h.call('get_client_timeline', { client_id: 'ivyco' });
    const summaries = JSON.stringify(timeline.structuredContent);
    for (const s of ['Intercom contact created', 'Intercom contact updated', 'Tag \\"vip\\" removed in Intercom', 'Started a conversation in Intercom', 'Replied in an Intercom conversation']) {
      expect(summaries).toContain(s);
    }
  });

  it('inbound events fire event_based automations: a product event and a SendGrid open, for that contact only', async () => {
    await h.call('register_client', { client_id: 'evco', name: 'Ev Co' });
    await h.call('upsert_contact', { client_id: 'evco', email: 'eve@evco.example', external_user_id: 'u-eve' });
    await h.call('upsert_contact', { client_id: 'evco', email: 'ed@evco.example', external_user_id: 'u-ed' });
    const used = await activate({
      workflow_name: 'Exports used',
      trigger_type: 'event_based',
      trigger_conditions: { event: 'feature_used', properties: { feature: 'exports' } },
      actions: [{ type: 'trigger_webhook', url: `${hooks.url}/feature` }],
    });
    const opened = await activate({
      workflow_name: 'Opened',
      trigger_type: 'event_based',
      trigger_conditions: { event: 'email_opened' },
      actions: [{ type: 'trigger_webhook', url: `${hooks.url}/opened` }],
    });
    await product([
      { id: `pe_${eventId()}`, name: 'feature_used', user_id: 'u-eve', client_id: 'evco', properties: { feature: 'exports' } },
      { id: `pe_${eventId()}`, name: 'feature_used', user_id: 'u-ed', client_id: 'evco', properties: { feature: 'billing' } }, // conditions do not match
    ]);
    expect((await sendgrid([sgEvent('open', 'ed@evco.example')])).status).toBe(200);
    await until(() => enrolledContacts(used.workflowId), (e) => e.length === 1);
    await until(() => enrolledContacts(opened.workflowId), (e) => e.length === 1);
    await until(() => hooks.matching(/^POST \/(feature|opened)/), (r) => r.length === 2);
    await schedulerSettled(h);
    expect(await enrolledContacts(used.workflowId)).toEqual(['eve@evco.example']);
    expect(await enrolledContacts(opened.workflowId)).toEqual(['ed@evco.example']);
    expect((hooks.matching(/^POST \/feature/)[0]!.body as any).event).toMatchObject({ name: 'feature_used', properties: { feature: 'exports' } });
    for (const id of [used.workflowId, opened.workflowId]) await h.call('archive_workflow', { workflow_id: id });
  });

  it('inbound events count as activity for behavior_based inactivity: the contact who opened an email is not enrolled', async () => {
    await h.call('register_client', { client_id: 'quietco', name: 'Quiet Co', segments: ['wh-behavior'] });
    for (const email of ['opener@quietco.example', 'silent@quietco.example', 'user@quietco.example']) await h.call('upsert_contact', { client_id: 'quietco', email, external_user_id: email.split('@')[0] });
    await db().updateTable('contacts').set({ created_at: new Date(Date.now() - 30 * DAY).toISOString() }).where('client_id', '=', 'quietco').execute();
    // Each last logged in almost a day ago: in about 3 seconds they have been inactive for a day.
    for (const email of ['opener@quietco.example', 'silent@quietco.example', 'user@quietco.example']) {
      await h.call('record_customer_event', { event: 'login', contact_email: email, occurred_at: new Date(Date.now() - DAY + 3_000).toISOString() });
    }
    const { workflowId, preview } = await activate({
      workflow_name: 'Quiet for a day',
      trigger_type: 'behavior_based',
      trigger_conditions: { behavior: 'inactive', days: 1 },
      audience: { segment: 'wh-behavior' },
      actions: [{ type: 'trigger_webhook', url: `${hooks.url}/quiet` }],
    });
    expect(preview.entering_now).toMatchObject({ count: 0 });
    // Before they go quiet: one opens an email (SendGrid), another uses the product (our product events).
    expect((await sendgrid([sgEvent('open', 'opener@quietco.example')])).status).toBe(200);
    await product([{ id: `pe_${eventId()}`, name: 'report_viewed', user_id: 'user', client_id: 'quietco' }]);
    await settled();
    await until(() => enrolledContacts(workflowId), (e) => e.length >= 1, { timeoutMs: 10_000 });
    await schedulerSettled(h); // several sweeps later
    expect(await enrolledContacts(workflowId)).toEqual(['silent@quietco.example']);
    await h.call('archive_workflow', { workflow_id: workflowId });
  });
});
