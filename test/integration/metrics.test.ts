import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serveHttp, type RunningHttpServer } from '../../src/transports/http.js';
import { availableDialects, createTarget, type DatabaseTarget } from '../helpers/databases.js';
import { startInMemory, standInEnv, testEnv, type InMemoryHarness } from '../helpers/mcp.js';
import { get, Scrape } from '../helpers/metrics.js';
import { until } from '../helpers/until.js';
import { post, sendgridSigner, sgEvent } from '../helpers/webhooks.js';
import { startIntercomStandIn, type IntercomStandIn } from '../stand-ins/intercom.js';
import { startSendGridStandIn, type SendGridStandIn } from '../stand-ins/sendgrid.js';

/**
 * GET /metrics scraped while a campaign goes out and a webhook batch comes in: every count the server
 * reports equals what the stand-ins saw (sent per channel = recipients the providers accepted, 429s =
 * 429s served, events stored = events posted), and a second server on the same database reports the
 * same messages (the gauges come from the database, not from the process).
 */

const dialects = await availableDialects();
const SG_KEY = 'SG.metricskey_abcdef.0123456789abcdef';
const IC_TOKEN = 'intercom-metrics-token';
const MCP_TOKEN = 'mcp-token-metrics-test-0123456789abcdef';
const METRICS_TOKEN = 'metrics-token-0123456789abcdef-0123456789';
const CONTACTS = 12;

describe.each(dialects)('/metrics on %s', (dialect) => {
  const signer = sendgridSigner();
  let target: DatabaseTarget;
  let sg: SendGridStandIn;
  let ic: IntercomStandIn;
  let h: InMemoryHarness;
  let server: RunningHttpServer;
  let base = '';
  const calls = new Map<string, number>();

  const scrape = async (token = METRICS_TOKEN) => {
    const r = await get(`${base}/metrics`, { Authorization: `Bearer ${token}` });
    expect(r.status, r.text).toBe(200);
    expect(r.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
    return Scrape.parse(r.text);
  };
  const call = async (name: string, args: Record<string, unknown>) => {
    calls.set(name, (calls.get(name) ?? 0) + 1);
    return h.call(name, args);
  };
  const env = (extra: Record<string, string> = {}) =>
    testEnv({
      ...standInEnv({ sendgrid: { url: sg.url, apiKey: SG_KEY }, intercom: { url: ic.url, token: IC_TOKEN } }),
      ...target.env,
      MCP_HTTP_PORT: '0',
      MCP_HTTP_TOKEN: MCP_TOKEN,
      MCP_METRICS_TOKEN: METRICS_TOKEN,
      SENDGRID_WEBHOOK_PUBLIC_KEY: signer.publicKey,
      WEBHOOK_PROCESS_POLL_MS: '50',
      CAMPAIGN_DISPATCH_POLL_MS: '50',
      ...extra,
    });

  beforeAll(async () => {
    target = await createTarget(dialect);
    sg = await startSendGridStandIn({ apiKey: SG_KEY });
    ic = await startIntercomStandIn({ token: IC_TOKEN });
    h = await startInMemory(env());
    server = await serveHttp(h.services);
    base = server.url.replace(/\/mcp$/, '');
    for (const c of ['acme', 'globex', 'initech']) await call('register_client', { client_id: c, name: c.toUpperCase(), tier: 'enterprise' });
    for (let i = 0; i < CONTACTS; i++) {
      const email = `person${i}@${['acme', 'globex', 'initech'][i % 3]}.example`;
      await call('upsert_contact', { client_id: ['acme', 'globex', 'initech'][i % 3], email, first_name: `P${i}` });
      ic.seedContact({ email, name: `P${i}` });
    }
  });
  afterAll(async () => {
    await server?.close();
    await h?.close();
    await sg?.stop();
    await ic?.stop();
    await target?.cleanup();
  });

  it('refuses /metrics without its own token (the MCP token is not it)', async () => {
    expect((await get(`${base}/metrics`)).status).toBe(401);
    expect((await get(`${base}/metrics`, { Authorization: 'Bearer nope' })).status).toBe(401);
    const withMcpToken = await get(`${base}/metrics`, { Authorization: `Bearer ${MCP_TOKEN}` });
    expect(withMcpToken.status).toBe(401);
    expect(withMcpToken.text).toMatch(/MCP_METRICS_TOKEN/);
    expect(withMcpToken.text).not.toContain(METRICS_TOKEN);
  });

  it('counts a campaign as the stand-ins saw it, scraped while it goes out: messages per channel, 429s, delivery retries, approvals', async () => {
    // Two 429s on the email batch, one on an in-app message: the outbox puts them back and tries again.
    sg.inject({ match: /^POST \/v3\/mail\/send$/, times: 2, status: 429, headers: { 'Retry-After': '1' }, body: { errors: [{ field: null, message: 'too many requests' }] } });
    ic.inject({ match: /^POST \/messages$/, times: 1, status: 429, headers: { 'Retry-After': '1' }, body: { type: 'error.list', errors: [{ code: 'rate_limit_exceeded', message: 'Rate limit exceeded' }] } });
    const campaign = { campaign_name: 'Metrics check', template_type: 'health_check', subject_line: 'Hello {{ client.name }}', body_text: 'Hi {{ contact.first_name }}', target_tier: 'enterprise', channels: ['email', 'intercom_inapp'] };
    const preview = await call('send_personalized_email', campaign);
    expect(preview.structuredContent.audience.per_channel).toEqual({ email: CONTACTS, intercom_inapp: CONTACTS });
    const confirmed = await call('send_personalized_email', { ...campaign, confirmation_token: preview.structuredContent.confirmation_token });
    expect(confirmed.structuredContent.success).toBe(true);

    // Scrape while it goes out: the database never reports more sent than the providers accepted so far.
    let sawQueued = false;
    let last: Scrape;
    const deadline = Date.now() + 20_000; // then the counts below fail, saying what they saw
    while (Date.now() < deadline) {
      last = await scrape();
      const accepted = { email: sg.delivered.length, intercom_inapp: ic.messages.length };
      expect(last.sum('csmcp_messages', { channel: 'email', state: 'sent' })).toBeLessThanOrEqual(accepted.email);
      expect(last.sum('csmcp_messages', { channel: 'intercom_inapp', state: 'sent' })).toBeLessThanOrEqual(accepted.intercom_inapp);
      if (last.sum('csmcp_outbox_queued_messages') > 0) sawQueued = true;
      if (last.sum('csmcp_messages', { state: 'sent' }) === 2 * CONTACTS) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(sawQueued).toBe(true);

    const served429 = (s: { requests: Array<{ answer?: number | string }> }) => s.requests.filter((r) => r.answer === 429).length;
    const answered = (s: { requests: Array<{ answer?: number | string }> }) => s.requests.filter((r) => typeof r.answer === 'number').length;
    await until(() => ic.requests.every((r) => r.answer !== undefined) && sg.requests.every((r) => r.answer !== undefined));
    const m = await scrape();
    expect(m.sum('csmcp_messages', { channel: 'email', state: 'sent' })).toBe(sg.delivered.length);
    expect(m.sum('csmcp_messages', { channel: 'intercom_inapp', state: 'sent' })).toBe(ic.messages.length);
    expect(sg.delivered.length).toBe(CONTACTS);
    expect(ic.messages.length).toBe(CONTACTS);
    expect(m.sum('csmcp_messages', { state: 'queued' })).toBe(0);
    expect(m.sum('csmcp_outbox_queued_messages')).toBe(0);
    expect(m.sum('csmcp_outbox_oldest_queued_age_seconds')).toBe(0);
    expect(m.sum('csmcp_provider_rate_limited_total', { provider: 'sendgrid' })).toBe(served429(sg));
    expect(m.sum('csmcp_provider_rate_limited_total', { provider: 'intercom' })).toBe(served429(ic));
    expect(served429(sg)).toBe(2);
    expect(served429(ic)).toBe(1);
    expect(m.sum('csmcp_provider_requests_total', { provider: 'sendgrid' })).toBe(answered(sg));
    expect(m.sum('csmcp_provider_requests_total', { provider: 'intercom' })).toBe(answered(ic));
    expect(m.sum('csmcp_provider_requests_total', { provider: 'sendgrid', result: '429' })).toBe(2);
    // The outbox owns a send's retries: each 429 put its messages back in the queue.
    expect(m.sum('csmcp_delivery_postponed_messages_total', { channel: 'email', code: 'rate_limited' })).toBe(2 * CONTACTS);
    expect(m.sum('csmcp_delivery_postponed_messages_total', { channel: 'intercom_inapp', code: 'rate_limited' })).toBe(1);
    // The in-memory client cannot be asked (no elicitation): the token and limits approve.
    expect(m.sum('csmcp_approval_requests_total', { action: 'campaign_confirm', outcome: 'approved_by_policy' })).toBe(1);
    expect(m.sum('csmcp_provider_circuit_state', { provider: 'sendgrid', state: 'closed' })).toBe(1);
    expect(m.sum('csmcp_provider_circuit_state', { provider: 'sendgrid' })).toBe(1);
    expect(m.sum('csmcp_provider_configured', { provider: 'sendgrid' })).toBe(1);
    expect(m.sum('csmcp_provider_configured', { provider: 'mixpanel' })).toBe(0);
    expect(m.sum('csmcp_db_snapshot_up')).toBe(1);
  });

  it('counts a retried read under the resilience policy, by provider and cause', async () => {
    const before = (await scrape()).sum('csmcp_provider_retries_total', { provider: 'sendgrid', code: 'rate_limited' });
    sg.inject({ match: /^GET \/v3\/stats$/, times: 1, status: 429, headers: { 'Retry-After': '0' }, body: { errors: [{ field: null, message: 'too many requests' }] } });
    const r = await call('sendgrid_get_stats', { start_date: '2026-01-01', end_date: '2026-01-02' });
    expect(r.structuredContent.success).toBe(true);
    const m = await scrape();
    expect(m.sum('csmcp_provider_retries_total', { provider: 'sendgrid', code: 'rate_limited' })).toBe(before + 1);
    expect(m.sum('csmcp_provider_rate_limited_total', { provider: 'sendgrid' })).toBe(sg.requests.filter((q) => q.answer === 429).length);
  });

  it('counts a webhook batch: stored = posted, duplicates apart, each processed with its lag', async () => {
    const events = Array.from({ length: 7 }, (_, i) => sgEvent(i % 2 ? 'open' : 'delivered', `person${i}@acme.example`));
    const body = JSON.stringify(events);
    expect((await post(`${base}/webhooks/sendgrid`, body, signer.headers(body))).body).toMatchObject({ stored: 7 });
    const fresh = JSON.stringify(events);
    expect((await post(`${base}/webhooks/sendgrid`, fresh, signer.headers(fresh))).body).toMatchObject({ stored: 0, duplicates: 7 });
    expect((await post(`${base}/webhooks/sendgrid`, body, { ...signer.headers(body), 'X-Twilio-Email-Event-Webhook-Signature': 'forged' })).status).toBe(401);
    const m = await until(
      async () => scrape(),
      (s) => s.sum('csmcp_webhook_events_processed_total', { provider: 'sendgrid' }) === 7,
    );
    expect(m.sum('csmcp_webhook_events_stored_total', { provider: 'sendgrid' })).toBe(7);
    expect(m.sum('csmcp_webhook_events_duplicate_total', { provider: 'sendgrid' })).toBe(7);
    expect(m.sum('csmcp_webhook_requests_refused_total', { provider: 'sendgrid', status: '401' })).toBe(1);
    expect(m.sum('csmcp_webhook_processing_lag_seconds_count', { provider: 'sendgrid' })).toBe(7);
    expect(m.sum('csmcp_webhook_processing_lag_seconds_sum', { provider: 'sendgrid' })).toBeGreaterThan(0);
    const { events: stored } = await h.services.inbox.repo.list({ provider: 'sendgrid' }, 50);
    const byState = (s: string) => stored.filter((e) => e.state === s).length;
    for (const state of ['processed', 'unmatched', 'ignored', 'failed']) {
      expect(m.sum('csmcp_webhook_events_processed_total', { provider: 'sendgrid', state }), state).toBe(byState(state));
    }
    await until(async () => (await scrape()).sum('csmcp_webhook_events_pending'), (n) => n === 0);
  });

  it('counts tool calls by name and outcome with a latency histogram', async () => {
    const dup = await call('register_client', { client_id: 'acme', name: 'again' });
    expect(dup.structuredContent.error.code).toBe('conflict');
    const m = await scrape();
    expect(m.sum('csmcp_tool_calls_total', { tool: 'register_client', outcome: 'success' })).toBe(3);
    expect(m.sum('csmcp_tool_calls_total', { tool: 'register_client', outcome: 'conflict' })).toBe(1);
    for (const [tool, n] of calls) {
      expect(m.sum('csmcp_tool_calls_total', { tool }), tool).toBe(n);
      expect(m.sum('csmcp_tool_call_duration_seconds_count', { tool }), tool).toBe(n);
      expect(m.sum('csmcp_tool_call_duration_seconds_bucket', { tool, le: '+Inf' }), tool).toBe(n);
    }
    // Labels come from fixed sets only: no client id, address or campaign id anywhere.
    const text = m.samples.map((s) => JSON.stringify(s.labels)).join('\n');
    expect(text).not.toMatch(/acme|@|cmp_|person\d/);
  });

  it('another server on the same database reports the same messages (the gauges are the database)', async () => {
    const other = await startInMemory(env());
    const otherServer = await serveHttp(other.services);
    try {
      const r = await get(`${otherServer.url.replace(/\/mcp$/, '')}/metrics`, { Authorization: `Bearer ${METRICS_TOKEN}` });
      const theirs = Scrape.parse(r.text);
      const ours = await scrape();
      const messages = (s: Scrape) => s.samples.filter((x) => x.name === 'csmcp_messages').map((x) => `${x.labels.channel}/${x.labels.state}=${x.value}`).sort();
      expect(messages(theirs)).toEqual(messages(ours));
      expect(theirs.sum('csmcp_messages', { state: 'sent' })).toBe(2 * CONTACTS);
      // Its own counters start from nothing: it sent nothing itself.
      expect(theirs.sum('csmcp_provider_requests_total')).toBe(0);
    } finally {
      await otherServer.close();
      await other.close();
    }
  });
});
