import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startInMemory, tempDataDir, testEnv, type InMemoryHarness } from '../helpers/mcp.js';
import { until } from '../helpers/until.js';
import { startSendGridStandIn, type SendGridStandIn } from '../stand-ins/sendgrid.js';

/** Delivery through the real provider runtimes: circuits, consent at the moment of sending, refused requests. */

const KEY = 'SG.deliverykey_abcdefghij.klmnopqrstuvwxyz01';


describe('delivery through the provider runtimes', () => {
  const data = tempDataDir();
  let sg: SendGridStandIn;
  let h: InMemoryHarness;
  const campaign = (name: string, clientId: string) => ({
    campaign_name: name,
    template_type: 'custom',
    subject_line: 'Hello {{ contact.first_name | fallback: "there" }}',
    body_text: 'Body',
    target_client_ids: [clientId],
  });
  const confirm = async (args: Record<string, unknown>) => {
    const preview = await h.call('send_personalized_email', args);
    const r = await h.call('send_personalized_email', { ...args, confirmation_token: preview.structuredContent.confirmation_token });
    expect(r.structuredContent.success).toBe(true);
    return r.structuredContent.campaign_id as string;
  };
  const status = async (id: string) => (await h.call('get_campaign_status', { campaign_id: id })).structuredContent.campaign;

  beforeAll(async () => {
    sg = await startSendGridStandIn({ apiKey: KEY });
    h = await startInMemory(
      testEnv(
        {
          SENDGRID_API_KEY: KEY,
          SENDGRID_BASE_URL: sg.url,
          SENDGRID_FROM_EMAIL: 'success@ourco.test',
          CIRCUIT_BREAKER_FAILURE_THRESHOLD: '2',
          CIRCUIT_BREAKER_RESET_MS: '500',
          CAMPAIGN_DISPATCH_POLL_MS: '30000', // nothing but the circuit's own reset may wake the dispatcher
          CS_MCP_DUPLICATE_WINDOW_S: '0',
        },
        data.dir,
      ),
    );
    for (const id of ['circuit', 'consent', 'refused']) {
      await h.call('register_client', { client_id: id, name: id });
      for (let i = 0; i < 3; i++) await h.call('upsert_contact', { client_id: id, email: `${id}${i}@example.test`, first_name: `P${i}` });
    }
  });
  afterAll(async () => {
    await h.close();
    await sg.stop();
    data.cleanup();
  });

  it('a campaign waiting on an open circuit brings about the trial call itself once the reset time passes, and finishes', async () => {
    // Open SendGrid's circuit with failures nobody else follows up.
    sg.inject({ match: /^POST \/v3\/mail\/send/, times: 2, status: 503, body: { errors: [{ message: 'down' }] } });
    const down = await h.call('sendgrid_send_email', { to: 'probe@example.test', subject: 'probe', text: 'x' });
    expect(down.structuredContent.error.code).toMatch(/provider_unavailable|circuit_open/);
    expect(h.services.runtimes.sendgrid.policy.state).toBe('open');
    const id = await confirm(campaign('Circuit', 'circuit'));
    const done = await until(() => status(id), (s) => s.status === 'completed', { timeoutMs: 10_000 });
    expect(done.totals).toMatchObject({ sent: 3, failed: 0, unknown: 0 });
    expect(h.services.runtimes.sendgrid.policy.state).toBe('closed');
  });

  it('an unsubscribe after confirmation stops the message: skipped at the moment of sending, counted as such', async () => {
    // Hold delivery with a campaign scheduled an hour ahead, unsubscribe one recipient, then make it due
    // (no race with the clock, however slow the machine).
    const at = new Date(Date.now() + 3_600_000).toISOString();
    const id = await confirm({ ...campaign('Consent', 'consent'), scheduled_send_time: at });
    await h.call('set_contact_subscription', { email: 'consent1@example.test', subscribed: false, reason: 'replied STOP' });
    expect(sg.delivered.filter((d) => d.to.startsWith('consent'))).toHaveLength(0);
    await h.services.store.db.updateTable('outbox').set({ not_before: new Date().toISOString() }).where('source_id', '=', id).where('state', '=', 'queued').execute();
    h.services.delivery.wake();
    const done = await until(() => status(id), (s) => s.status === 'completed', { timeoutMs: 10_000 });
    expect(done.totals).toMatchObject({ sent: 2, skipped: 1 });
    expect(done.skipped_by_reason).toEqual({ unsubscribed: 1 });
    expect(sg.delivered.filter((d) => d.to === 'consent1@example.test')).toHaveLength(0);
  });

  it('a refused request (429) puts the message straight back in the queue: never "sending" while it waits', async () => {
    sg.inject({ match: /^POST \/v3\/mail\/send/, times: 3, status: 429, headers: { 'Retry-After': '2' }, body: { errors: [{ message: 'too many requests' }] } });
    const id = await confirm(campaign('Refused', 'refused'));
    // While the retry waits, the refused messages are queued (a crash now would resend them, rightly).
    const waiting = await until(() => status(id), (s) => s.waiting_by_reason.rate_limited > 0);
    expect(waiting.totals.sending).toBe(0);
    const done = await until(() => status(id), (s) => s.status === 'completed', { timeoutMs: 15_000 });
    expect(done.totals).toMatchObject({ sent: 3, unknown: 0 });
  });
});
