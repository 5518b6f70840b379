import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startInMemory, tempDataDir, testEnv, type InMemoryHarness } from '../helpers/mcp.js';
import { startSendGridStandIn, type SendGridStandIn } from '../stand-ins/sendgrid.js';

const KEY = 'SG.testkey_abcdefghij.klmnopqrstuvwxyz0123';

describe('SendGrid tools against the v3 stand-in', () => {
  const data = tempDataDir();
  let sg: SendGridStandIn;
  let h: InMemoryHarness;
  beforeAll(async () => {
    sg = await startSendGridStandIn({ apiKey: KEY });
    h = await startInMemory(
      testEnv(
        {
          SENDGRID_API_KEY: KEY,
          SENDGRID_BASE_URL: sg.url,
          SENDGRID_FROM_EMAIL: 'success@ourco.test',
          SENDGRID_FROM_NAME: 'Success Team',
          SENDGRID_UNSUBSCRIBE_GROUP_ID: '4242',
          CS_MCP_MAX_RECIPIENTS_PER_SEND: '5000',
          CS_MCP_DUPLICATE_WINDOW_S: '0',
        },
        data.dir,
      ),
    );
  });
  afterAll(async () => {
    await h.close();
    await sg.stop();
    data.cleanup();
  });
  afterEach(() => sg.clearFaults());

  it('sends one email and returns X-Message-Id; 202 with an empty body is success; each recipient sees only their own address', async () => {
    const r = await h.call('sendgrid_send_email', {
      to: ['ada@example.org', { email: 'grace@example.org', name: 'Grace' }, 'ADA@example.org'],
      subject: 'Hello',
      text: 'Plain',
      html: '<p>Rich</p>',
      categories: ['health_check'],
      custom_args: { campaign: 'q3' },
      track_opens: true,
      track_clicks: false,
    });
    expect(r.structuredContent).toMatchObject({ success: true, accepted: 2 });
    expect(r.structuredContent.message_id).toBe(sg.delivered.at(-1)!.message_id);
    const body = sg.delivered.at(-1)!.body;
    expect(body).toMatchObject({
      from: { email: 'success@ourco.test', name: 'Success Team' },
      custom_args: { campaign: 'q3' },
      tracking_settings: { open_tracking: { enable: true }, click_tracking: { enable: false } },
    });
    expect(body.asm).toBeUndefined(); // a one-off email is not marketing
    expect(body.personalizations).toEqual([{ to: [{ email: 'ada@example.org' }] }, { to: [{ email: 'grace@example.org', name: 'Grace' }] }]);
  });

  it('puts everyone in one To: line only when asked to (shared_recipients)', async () => {
    const r = await h.call('sendgrid_send_email', { to: ['ada@example.org', 'grace@example.org'], subject: 'Team thread', text: 'Hi both', shared_recipients: true });
    expect(r.structuredContent).toMatchObject({ success: true, accepted: 2 });
    expect(sg.delivered.at(-1)!.body.personalizations).toEqual([{ to: [{ email: 'ada@example.org' }, { email: 'grace@example.org' }] }]);
  });

  it('validates addresses before any request, naming the bad ones', async () => {
    const before = sg.requests.length;
    const r = await h.call('sendgrid_send_email', { to: ['ok@example.org', 'not-an-email', 'bad@'], subject: 's', text: 't' });
    expect(r.structuredContent.error).toMatchObject({ code: 'invalid_input', retryable: false });
    expect(r.structuredContent.error.message).toContain('not-an-email');
    expect(r.structuredContent.error.message).toContain('bad@');
    expect(sg.requests.length).toBe(before);
  });

  it("turns SendGrid's errors[] into the message, and a 401 into auth_failed", async () => {
    sg.inject({ match: /^POST \/v3\/mail\/send/, times: 1, status: 400, body: { errors: [{ field: 'from.email', message: 'The from address does not match a verified Sender Identity.', help: 'https://sendgrid.com/docs/for-developers/sending-email/sender-identity/' }] } });
    const r = await h.call('sendgrid_send_email', { to: 'ada@example.org', subject: 's', text: 't' });
    expect(r.structuredContent.error).toMatchObject({ code: 'invalid_input', status: 400, provider: 'sendgrid' });
    expect(r.structuredContent.error.message).toMatch(/from\.email: The from address does not match a verified Sender Identity/);
    sg.inject({ match: /^POST \/v3\/mail\/send/, times: 1, status: 401, body: { errors: [{ field: null, message: 'bad key' }] } });
    expect((await h.call('sendgrid_send_email', { to: 'ada@example.org', subject: 's', text: 't' })).structuredContent.error.code).toBe('auth_failed');
    sg.inject({ match: /^POST \/v3\/mail\/send/, times: 1, status: 413, body: { errors: [{ field: null, message: 'too large' }] } });
    expect((await h.call('sendgrid_send_email', { to: 'ada@example.org', subject: 's', text: 't' })).structuredContent.error).toMatchObject({ code: 'invalid_input', status: 413 });
  });

  it('backs off a bare 429 (no rate-limit headers) and a 429 with reset headers, then sends once', async () => {
    const before = sg.delivered.length;
    // As SendGrid answers it: no Retry-After, no X-RateLimit-* headers at all.
    sg.inject({ match: /^POST \/v3\/mail\/send/, times: 1, status: 429, body: { errors: [{ field: null, message: 'too many requests' }] }, withoutRateHeaders: true });
    const r = await h.call('sendgrid_send_email', { to: 'ada@example.org', subject: 's', text: 't' });
    expect(r.structuredContent.success).toBe(true);
    const refused = sg.matching(/^POST \/v3\/mail\/send/).at(-2)!;
    expect(refused.answer).toBe(429);
    const reset = String(Math.ceil(Date.now() / 1000) + 1);
    sg.inject({ match: /^POST \/v3\/mail\/send/, times: 1, status: 429, headers: { 'X-RateLimit-Limit': '600', 'X-RateLimit-Remaining': '0', 'X-RateLimit-Reset': reset } });
    const r2 = await h.call('sendgrid_send_email', { to: 'ada@example.org', subject: 's', text: 't' });
    expect(r2.structuredContent.success).toBe(true);
    expect(sg.delivered.length - before).toBe(2);
  });

  it('bulk: packs 1,000 personalizations per request, skips duplicates, marks marketing mail with the unsubscribe group', async () => {
    const before = sg.matching(/^POST \/v3\/mail\/send/).length;
    const recipients = Array.from({ length: 2500 }, (_, i) => ({ email: `person${i}@example.org`, substitutions: { '-first_name-': `P${i}` } }));
    recipients.push({ email: 'PERSON7@example.org', substitutions: { '-first_name-': 'dup' } });
    const r = await h.call('sendgrid_send_bulk_emails', { recipients, subject: 'Hi -first_name-', text: 'Hello -first_name-' });
    expect(r.structuredContent).toMatchObject({ success: true, requests: 3, accepted: 2500, failed: 0, skipped_duplicate: 1, problems_total: 1 });
    expect(r.structuredContent.problems).toEqual([{ email: 'PERSON7@example.org', status: 'skipped_duplicate' }]);
    const reqs = sg.matching(/^POST \/v3\/mail\/send/).slice(before);
    expect(reqs.map((q) => (q.body as any).personalizations.length)).toEqual([1000, 1000, 500]);
    expect((reqs[0]!.body as any).asm).toEqual({ group_id: 4242 });
    expect([...sg.countsByAddress()].filter(([a]) => a.startsWith('person')).every(([, n]) => n === 1)).toBe(true);
  });

  it('bulk: a batch whose outcome is unknown is reported unknown and not repeated; other batches still go', async () => {
    const before = sg.matching(/^POST \/v3\/mail\/send/).length;
    sg.inject({ match: /^POST \/v3\/mail\/send/, times: 1, status: 500, body: { errors: [{ field: null, message: 'internal' }] } });
    const recipients = Array.from({ length: 1200 }, (_, i) => ({ email: `bulk${i}@example.org` }));
    const r = await h.call('sendgrid_send_bulk_emails', { recipients, subject: 'S', text: 'T' });
    expect(r.structuredContent).toMatchObject({ success: true, unknown: 1000, accepted: 200, problems_total: 1000 });
    expect(r.structuredContent.problems).toHaveLength(100); // counts, then only the first problems: the result stays small
    expect(sg.matching(/^POST \/v3\/mail\/send/).length - before).toBe(2);
  });

  it('a bulk send SendGrid refuses as a whole is an error with its reason, not a success with nothing accepted', async () => {
    sg.inject({ match: /^POST \/v3\/mail\/send/, times: 1, status: 400, body: { errors: [{ field: 'template_id', message: 'The template_id is not a valid template.' }] } });
    const r = await h.call('sendgrid_send_template_email', { template_id: 'd-0123456789abcdef0123456789abcdef', to: [{ email: 'whole@example.org' }], idempotency_key: 'whole-1' });
    expect(r.isError).toBe(true);
    expect(r.structuredContent.error).toMatchObject({ code: 'invalid_input', provider: 'sendgrid' });
    expect(r.structuredContent.error.message).toMatch(/template_id: The template_id is not a valid template/);
  });

  it('template email and stats', async () => {
    const t = await h.call('sendgrid_send_template_email', {
      template_id: 'd-0123456789abcdef0123456789abcdef',
      to: [{ email: 'ada@example.org', dynamic_template_data: { first_name: 'Ada' } }],
    });
    expect(t.structuredContent).toMatchObject({ success: true, accepted: 1 });
    expect(sg.delivered.at(-1)!.personalization).toMatchObject({ dynamic_template_data: { first_name: 'Ada' } });
    const bad = await h.call('sendgrid_send_template_email', { template_id: 'welcome', to: [{ email: 'ada@example.org' }] });
    expect(bad.structuredContent.error.message).toMatch(/template_id/);
    const s = await h.call('sendgrid_get_stats', { start_date: '2026-11-01', aggregated_by: 'day', categories: ['health_check'] });
    expect(s.structuredContent.stats[0].stats[0]).toMatchObject({ type: 'category', name: 'health_check' });
  });

  it('the API key never appears in logs', () => {
    expect(h.logs.join('\n')).not.toContain(KEY);
  });
});
