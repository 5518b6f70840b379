import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serveHttp, type RunningHttpServer } from '../../src/transports/http.js';
import { createWebhookHandler } from '../../src/inbox/http.js';
import type { AddressInfo } from 'node:net';
import pino from 'pino';
import { availableDialects, createTarget, type DatabaseTarget } from '../helpers/databases.js';
import { startInMemory, tempDataDir, testEnv, type InMemoryHarness } from '../helpers/mcp.js';
import { intercomHeaders, intercomNotification, post, productHeaders, sendgridSigner, sgEvent } from '../helpers/webhooks.js';
import { until } from '../helpers/until.js';

/**
 * The endpoints over real HTTP (the server's own listener, so routing before Express is covered),
 * with requests signed exactly as the providers sign them: what is accepted is stored once and
 * processed; whatever does not verify, is stale, replayed, oversized or malformed is refused (or
 * deduplicated) with nothing stored twice, and the server keeps serving.
 */

const dialects = await availableDialects();
const INTERCOM_SECRET = 'intercom-client-secret-for-tests';
const EVENTS_SECRET = 'product-events-secret-0123456789';
const MCP_TOKEN = 'mcp-token-webhooks-test-0123456789abcdef';


describe.each(dialects)('webhook endpoints on %s', (dialect) => {
  const signer = sendgridSigner();
  let target: DatabaseTarget;
  let h: InMemoryHarness;
  let server: RunningHttpServer;
  let base = '';

  const db = () => h.services.store.db;
  const inboxCount = async () => Number((await db().selectFrom('inbox_events').select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow()).n);
  const eventCount = async (name?: string) => {
    let q = db().selectFrom('customer_events').select((eb) => eb.fn.countAll().as('n'));
    if (name) q = q.where('name', '=', name);
    return Number((await q.executeTakeFirstOrThrow()).n);
  };
  const settled = () => until(() => h.services.inbox.repo.backlog(), (b) => !b.some((x) => x.state === 'pending'));
  const sendgrid = (events: unknown[], opts: { timestamp?: number; headers?: Record<string, string> } = {}) => {
    const body = JSON.stringify(events);
    return post(`${base}/webhooks/sendgrid`, body, { ...signer.headers(body, opts.timestamp), ...opts.headers });
  };

  beforeAll(async () => {
    target = await createTarget(dialect);
    h = await startInMemory(
      testEnv({
        ...target.env,
        MCP_HTTP_PORT: '0',
        MCP_HTTP_TOKEN: MCP_TOKEN,
        SENDGRID_WEBHOOK_PUBLIC_KEY: signer.publicKey,
        INTERCOM_CLIENT_SECRET: INTERCOM_SECRET,
        CS_MCP_EVENTS_WEBHOOK_SECRET: EVENTS_SECRET,
        WEBHOOK_MAX_AGE_S: '300',
        WEBHOOK_MAX_BODY_BYTES: '65536',
        WEBHOOK_PROCESS_POLL_MS: '50',
      }),
    );
    server = await serveHttp(h.services);
    base = server.url.replace(/\/mcp$/, '');
    await h.call('register_client', { client_id: 'acme', name: 'Acme' });
    await h.call('upsert_contact', { client_id: 'acme', email: 'maria@acme.example', external_user_id: 'u-maria' });
  });
  afterAll(async () => {
    await server?.close();
    await h?.close();
    await target?.cleanup();
  });

  it('accepts a signed SendGrid batch without the MCP token, stores each event once and processes it', async () => {
    const events = [sgEvent('delivered', 'maria@acme.example'), sgEvent('open', 'maria@acme.example'), sgEvent('open', 'nobody@else.example')];
    const r = await sendgrid(events);
    expect(r).toMatchObject({ status: 200, body: { ok: true, received: 3, stored: 3, duplicates: 0 } });
    await settled();
    const { events: listed } = await h.services.inbox.repo.list({ provider: 'sendgrid' }, 10);
    expect(listed.map((e) => e.state).sort()).toEqual(['processed', 'processed', 'unmatched']);
    expect(await eventCount('email_delivered')).toBe(1);
    expect(await eventCount('email_opened')).toBe(1);
    // The MCP endpoint itself still wants its token.
    const mcp = await fetch(`${base}/mcp`, { method: 'POST', headers: { 'Content-Type': 'application/json', Accept: 'application/json, text/event-stream' }, body: '{}' });
    expect(mcp.status).toBe(401);
  });

  it('deduplicates a replayed batch (freshly signed, same sg_event_ids): 200, nothing stored twice', async () => {
    const events = [sgEvent('click', 'maria@acme.example', { url: 'https://acme.example/a' }), sgEvent('click', 'maria@acme.example', { url: 'https://acme.example/b' })];
    expect((await sendgrid(events)).body).toMatchObject({ stored: 2, duplicates: 0 });
    await settled();
    const before = { inbox: await inboxCount(), events: await eventCount() };
    expect((await sendgrid(events)).body).toMatchObject({ received: 2, stored: 0, duplicates: 2 });
    // And the same event twice inside one batch.
    const twice = sgEvent('open', 'maria@acme.example');
    expect((await sendgrid([twice, twice])).body).toMatchObject({ received: 2, stored: 1, duplicates: 1 });
    await settled();
    expect(await inboxCount()).toBe(before.inbox + 1);
    expect(await eventCount()).toBe(before.events + 1);
  });

  it('refuses what does not verify — wrong key, tampered body, missing headers, stale or future timestamp — storing nothing', async () => {
    // integrations_status, per endpoint, from this test alone: one verified SendGrid request, then refusals.
    const statusOf = async () => {
      const ws = (await h.call('integrations_status')).structuredContent.webhooks as Array<{ endpoint: string; rejected_here: number; last_verified_at: string | null; verified_requests?: number }>;
      return Object.fromEntries(ws.map((w) => [w.endpoint, w]));
    };
    const initially = await statusOf();
    const verifiedAt = Date.now();
    expect((await sendgrid([sgEvent('processed', 'maria@acme.example')])).status).toBe(200);
    const before = await inboxCount();
    const events = [sgEvent('delivered', 'maria@acme.example')];
    const body = JSON.stringify(events);
    const other = sendgridSigner();
    const now = Math.floor(Date.now() / 1000);
    const attempts = [
      post(`${base}/webhooks/sendgrid`, body, other.headers(body)), // signed with another key
      post(`${base}/webhooks/sendgrid`, body.replace('delivered', 'bounce'), signer.headers(body)), // body changed after signing
      post(`${base}/webhooks/sendgrid`, body, { 'Content-Type': 'application/json' }), // unsigned
      post(`${base}/webhooks/sendgrid`, body, { ...signer.headers(body), 'X-Twilio-Email-Event-Webhook-Signature': 'bm90IGEgc2lnbmF0dXJl' }),
      sendgrid(events, { timestamp: now - 3600 }), // a valid signature, captured an hour ago: replay
      sendgrid(events, { timestamp: now + 3600 }),
      post(`${base}/webhooks/sendgrid`, body, { ...signer.headers(body, now), 'X-Twilio-Email-Event-Webhook-Timestamp': String(now - 1) }), // timestamp swapped
    ];
    for (const r of await Promise.all(attempts)) expect(r.status).toBe(401);
    expect((await sendgrid(events, { timestamp: now - 3600 })).body.error).toMatch(/timestamp/);
    expect(await inboxCount()).toBe(before);
    const status = await h.call('integrations_status');
    const sg = status.structuredContent.webhooks.find((w: { endpoint: string }) => w.endpoint === 'sendgrid');
    expect(sg).toMatchObject({ enabled: true, path: '/webhooks/sendgrid', last_rejection: { status: 401 } });
    expect(sg.rejected_here - initially.sendgrid!.rejected_here).toBe(8);
    expect(Date.parse(sg.last_verified_at)).toBeGreaterThanOrEqual(Math.floor(verifiedAt / 1000) * 1000);
    // The other endpoints saw none of it.
    const after = await statusOf();
    for (const e of ['intercom', 'events']) {
      expect(after[e]!.rejected_here, e).toBe(initially[e]!.rejected_here);
      expect(after[e]!.last_verified_at, e).toBe(initially[e]!.last_verified_at);
    }
  });

  it('refuses malformed JSON (signed), a body that is not a list, an oversized body, and other methods; the server keeps serving', async () => {
    const before = await inboxCount();
    const bad = '[{"event": "open", ';
    expect(await post(`${base}/webhooks/sendgrid`, bad, signer.headers(bad))).toMatchObject({ status: 400, body: { error: expect.stringMatching(/not valid JSON/) } });
    const obj = '{"event": "open"}';
    expect((await post(`${base}/webhooks/sendgrid`, obj, signer.headers(obj))).status).toBe(400);
    const huge = JSON.stringify(Array.from({ length: 800 }, () => sgEvent('open', 'maria@acme.example')));
    expect(huge.length).toBeGreaterThan(65536);
    expect((await post(`${base}/webhooks/sendgrid`, huge, signer.headers(huge))).status).toBe(413);
    // Streamed without a length: cut off at the limit too.
    const streamed = await new Promise<number>((resolve, reject) => {
      const req = http.request(`${base}/webhooks/sendgrid`, { method: 'POST', headers: { ...signer.headers(huge), 'Transfer-Encoding': 'chunked' } }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      for (let i = 0; i < huge.length; i += 8192) req.write(huge.slice(i, i + 8192));
      req.end();
    });
    expect(streamed).toBe(413);
    expect((await fetch(`${base}/webhooks/sendgrid`)).status).toBe(405);
    expect((await fetch(`${base}/webhooks/nope`, { method: 'POST' })).status).toBe(404);
    expect(await inboxCount()).toBe(before);
    // Still serving: a good batch goes through.
    expect((await sendgrid([sgEvent('delivered', 'maria@acme.example')])).status).toBe(200);
  });

  it('stores and applies a signed event whose strings carry NUL characters (neither refused nor retried forever)', async () => {
    await h.call('upsert_contact', { client_id: 'acme', email: 'nul@acme.example' });
    const odd = sgEvent('bounce', 'nul@acme.example', { type: 'bounce', reason: '550 no\u0000such user', sg_event_id: 'id-with-\u0000-nul' });
    const r = await sendgrid([odd, sgEvent('open\u0000', 'maria@acme.example')]);
    expect(r).toMatchObject({ status: 200, body: { stored: 2 } });
    await settled();
    const [bounced] = (await h.services.store.events.list({ names: ['email_bounced'] }, 1)).events;
    expect(bounced?.properties).toMatchObject({ reason: '550 no\uFFFDsuch user', email: 'nul@acme.example' });
    const [contact] = await h.services.store.roster.findContacts({ email: 'nul@acme.example' });
    expect(contact).toMatchObject({ email_status: 'bounced', email_status_reason: '550 no\uFFFDsuch user' });
    expect((await h.services.inbox.repo.list({ states: ['failed'] }, 5)).events).toEqual([]);
  });

  it('Intercom: HMAC-SHA1 verified, ping answered, notifications deduplicated by id, wrong signatures refused', async () => {
    const url = `${base}/webhooks/intercom`;
    const ping = JSON.stringify(intercomNotification('ping', { type: 'ping', message: 'something' }));
    expect(await post(url, ping, intercomHeaders(INTERCOM_SECRET, ping))).toMatchObject({ status: 200, body: { ping: true } });
    const before = await inboxCount();
    const tag = JSON.stringify(
      intercomNotification('contact.user.tag.created', { type: 'contact_tag', tag: { type: 'tag', id: '17', name: 'vip' }, contact: { type: 'contact', id: 'ic-maria', external_id: 'u-maria', email: 'maria@acme.example' } }),
    );
    expect((await post(url, tag, intercomHeaders('wrong-secret', tag))).status).toBe(401);
    expect((await post(url, tag, { 'Content-Type': 'application/json', 'X-Hub-Signature': 'sha1=abc' })).status).toBe(401);
    expect((await post(url, tag, intercomHeaders(INTERCOM_SECRET, tag))).body).toMatchObject({ stored: 1 });
    expect((await post(url, tag, intercomHeaders(INTERCOM_SECRET, tag))).body).toMatchObject({ stored: 0, duplicates: 1 });
    expect(await inboxCount()).toBe(before + 1);
    await settled();
    const tagged = await h.services.store.events.list({ names: ['tag_added'] }, 5);
    expect(tagged.events).toHaveLength(1);
    expect(tagged.events[0]).toMatchObject({ properties: { tag: 'vip', intercom_contact_id: 'ic-maria' }, source: 'webhook:intercom' });
    // The event named the contact by external id: Intercom's id is now remembered on the roster contact.
    const [contact] = await h.services.store.roster.findContacts({ email: 'maria@acme.example' });
    expect(contact?.intercom_contact_id).toBe('ic-maria');
  });

  it('product events: Stripe-style signature, batch validated as a whole, deduplicated by id', async () => {
    const url = `${base}/webhooks/events`;
    const batch = JSON.stringify({
      events: [
        { id: 'evt-1', name: 'login', email: 'maria@acme.example', properties: { plan: 'pro' } },
        { id: 'evt-2', name: 'feature_used', user_id: 'u-maria', occurred_at: '2026-11-20T10:00:00Z', properties: { feature: 'reports' } },
        { id: 'evt-3', name: 'milestone_reached', client_id: 'acme', properties: { milestone: 'first_report' } },
        { id: 'evt-4', name: 'login', email: 'stranger@nowhere.example' },
      ],
    });
    expect((await post(url, batch, productHeaders('not-the-secret-at-all-0000', batch))).status).toBe(401);
    expect((await post(url, batch, productHeaders(EVENTS_SECRET, batch, Math.floor(Date.now() / 1000) - 3600))).status).toBe(401);
    expect((await post(url, batch, productHeaders(EVENTS_SECRET, batch))).body).toMatchObject({ stored: 4 });
    expect((await post(url, batch, productHeaders(EVENTS_SECRET, batch))).body).toMatchObject({ stored: 0, duplicates: 4 });
    const invalid = JSON.stringify({ events: [{ id: 'evt-9', name: 'email_opened', email: 'maria@acme.example' }, { name: '9bad' }] });
    const refused = await post(url, invalid, productHeaders(EVENTS_SECRET, invalid));
    expect(refused.status).toBe(400);
    expect(refused.body.problems.join('\n')).toMatch(/reserved[\s\S]*events\[1\]\.id[\s\S]*events\[1\]\.name[\s\S]*events\[1\]: name the customer/);
    await settled();
    const recorded = await h.services.store.events.list({ client_id: 'acme', names: ['login', 'feature_used', 'milestone_reached'] }, 10);
    expect(recorded.events.map((e) => [e.name, e.contact_id !== null, e.source, e.source_ref])).toEqual(
      expect.arrayContaining([
        ['login', true, 'webhook:events', null],
        ['feature_used', true, 'webhook:events', null],
        ['milestone_reached', false, 'webhook:events', null],
      ]),
    );
    const feature = recorded.events.find((e) => e.name === 'feature_used')!;
    expect(feature).toMatchObject({ occurred_at: '2026-11-20T10:00:00.000Z', properties: { feature: 'reports', event_id: 'evt-2' } });
    const unmatched = await h.call('list_inbound_events', { provider: 'events', states: ['unmatched'] });
    expect(unmatched.structuredContent.events).toHaveLength(1);
    expect(unmatched.structuredContent.events[0]).toMatchObject({ event_type: 'login', email: 'stranger@nowhere.example', payload: { id: 'evt-4' } });
  });
});

describe('webhook requests in progress', () => {
  it('with 32 requests being handled, the next is answered 503 with Retry-After and not read; once they finish, requests are taken again', async () => {
    // An inbox whose storing waits until the test lets it go: 32 complete, signed-looking requests stay in progress.
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let received = 0;
    const inbox = {
      enabled: () => true,
      maxBodyBytes: 65_536,
      bodyLimits: { maxBytes: 65_536, timeoutMs: 30_000, minBytesPerS: 0 },
      reject: (_e: string, status: number, reason: string) => ({ status, body: { error: reason } }),
      receive: async () => {
        received += 1;
        await held;
        return { status: 200, body: { ok: true } };
      },
    };
    const handle = createWebhookHandler({ inbox: inbox as never, log: pino({ level: 'silent' }) });
    const server = http.createServer((req, res) => void handle(req, res));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/webhooks/sendgrid`;
    // One connection each: no pooling may queue a request behind another on the client side.
    const agent = new http.Agent({ keepAlive: false, maxSockets: 100 });
    const send = (n: number) =>
      new Promise<{ status: number; retryAfter?: string; body: string }>((resolve, reject) => {
        const req = http.request(url, { method: 'POST', agent, headers: { 'Content-Type': 'application/json' } }, (res) => {
          let body = '';
          res.on('data', (d) => (body += String(d)));
          res.on('end', () => resolve({ status: res.statusCode!, retryAfter: res.headers['retry-after'] as string | undefined, body }));
        });
        req.on('error', reject);
        req.end(JSON.stringify([{ n }]));
      });
    try {
      const first = Array.from({ length: 32 }, (_, i) => send(i));
      await until(() => received, (n) => n === 32, { message: '32 requests in progress' });
      const busy = await send(32);
      expect(busy).toMatchObject({ status: 503, retryAfter: '5' });
      expect(JSON.parse(busy.body).error).toMatch(/deliver again later/i);
      expect(received).toBe(32); // the 33rd never reached the inbox
      release();
      expect((await Promise.all(first)).map((r) => r.status)).toEqual(Array(32).fill(200));
      expect((await send(33)).status).toBe(200);
      expect(received).toBe(33);
    } finally {
      release();
      agent.destroy();
      await new Promise((r) => server.close(r));
    }
  });
});

describe('webhook endpoints without their secrets', () => {
  it('answer 404 and leave the rest of the server alone', async () => {
    const data = tempDataDir();
    const h = await startInMemory(testEnv({ MCP_HTTP_PORT: '0' }, data.dir));
    const server = await serveHttp(h.services);
    const base = server.url.replace(/\/mcp$/, '');
    try {
      for (const e of ['sendgrid', 'intercom', 'events']) expect((await fetch(`${base}/webhooks/${e}`, { method: 'POST', body: '[]' })).status).toBe(404);
      expect((await fetch(`${base}/healthz`)).status).toBe(200);
      const status = await h.call('integrations_status');
      expect(status.structuredContent.webhooks).toEqual([
        expect.objectContaining({ endpoint: 'sendgrid', enabled: false, missing: 'SENDGRID_WEBHOOK_PUBLIC_KEY', last_verified_at: null }),
        expect.objectContaining({ endpoint: 'intercom', enabled: false, missing: 'INTERCOM_CLIENT_SECRET' }),
        expect.objectContaining({ endpoint: 'events', enabled: false, missing: 'CS_MCP_EVENTS_WEBHOOK_SECRET' }),
      ]);
    } finally {
      await server.close();
      await h.close();
      data.cleanup();
    }
  });
});
