import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { availableDialects, createTarget, type DatabaseTarget } from '../helpers/databases.js';
import { startInMemory, startStdio, tempDataDir, testEnv, type InMemoryHarness, standInEnv } from '../helpers/mcp.js';
import { startIntercomStandIn, type IntercomStandIn } from '../stand-ins/intercom.js';
import { startMixpanelStandIn, type MixpanelStandIn } from '../stand-ins/mixpanel.js';
import { importEnterpriseRoster } from '../helpers/roster-seed.js';
import { startSendGridStandIn, type SendGridStandIn } from '../stand-ins/sendgrid.js';
import { until } from '../helpers/until.js';

const SG_KEY = 'SG.campaignkey_abcdef.0123456789abcdef';
const IC_TOKEN = 'intercom-campaign-token';

/** Mail-send requests the stand-in RECEIVED per address (a request that reached it may have been delivered). */
function receivedPerAddress(sg: SendGridStandIn): Map<string, number> {
  const m = new Map<string, number>();
  for (const r of sg.matching(/^POST \/v3\/mail\/send/)) {
    for (const p of (r.body as any).personalizations ?? []) for (const to of p.to ?? []) m.set(to.email, (m.get(to.email) ?? 0) + 1);
  }
  return m;
}

const baseCampaign = {
  campaign_name: 'Q4 health check',
  template_type: 'health_check',
  subject_line: '{{ client.name }}: quick check-in',
  body_text: 'Hi {{ contact.first_name | fallback: "there" }}, your health score is {{ client.health_score }}. {{ promo }}',
  personalization_tokens: { promo: 'Book a call: https://cal.example/dana' },
  target_tier: 'enterprise',
  created_by: 'dana@ourco.test',
};

const dialects = await availableDialects();

describe.each(dialects)('send_personalized_email on %s', (dialect) => {
  let target: DatabaseTarget;
  let sg: SendGridStandIn;
  let ic: IntercomStandIn;
  let mp: MixpanelStandIn;
  let h: InMemoryHarness;
  const env = () =>
    testEnv(
      {
        ...standInEnv({ sendgrid: { url: sg.url, apiKey: SG_KEY }, intercom: { url: ic.url, token: IC_TOKEN } }),
        MIXPANEL_API_SECRET: 'mp-secret',
        MIXPANEL_API_HOST: mp.url,
        CAMPAIGN_DISPATCH_POLL_MS: '50',
        CAMPAIGN_LEASE_MS: '1000',
        ...target.env,
      },
    );

  beforeAll(async () => {
    target = await createTarget(dialect);
    sg = await startSendGridStandIn({ apiKey: SG_KEY });
    ic = await startIntercomStandIn({ token: IC_TOKEN });
    mp = await startMixpanelStandIn();
    h = await startInMemory(env());
    const reg = (client_id: string, name: string, tier: string, health: number, segments: string[] = []) =>
      h.call('register_client', { client_id, name, tier, health_score: health, segments });
    await reg('acme', 'Acme Corp', 'enterprise', 42, ['at_risk']);
    await reg('globex', 'Globex', 'enterprise', 71);
    await reg('initech', 'Initech', 'standard', 30, ['at_risk']);
    const contact = (client_id: string, email: string, extra: Record<string, unknown> = {}) => h.call('upsert_contact', { client_id, email, ...extra });
    await contact('acme', 'maria@acme.example', { first_name: 'María', role: 'champion' });
    await contact('acme', 'tom@acme.example', { name: 'Tom Becker', role: 'decision_maker' });
    await contact('acme', 'ops@acme.example', { role: 'user' }); // no name: gets the fallback
    await contact('acme', 'gone@acme.example', { first_name: 'Gone', role: 'user' });
    await contact('globex', 'hank@globex.example', { first_name: 'Hank', role: 'decision_maker' });
    await contact('globex', 'maria@acme.example', { first_name: 'María', role: 'champion' }); // same person at two clients
    await contact('initech', 'peter@initech.example', { first_name: 'Peter' });
    await h.call('set_contact_subscription', { email: 'gone@acme.example', subscribed: false, reason: 'asked to stop' });
  });
  afterAll(async () => {
    await h.close();
    await sg.stop();
    await ic.stop();
    await mp.stop();
    await target.cleanup();
  });

  let previewToken = '';

  it('previews without sending: audience per channel, exclusions with reasons, rendered samples, a token', async () => {
    const r = await h.call('send_personalized_email', baseCampaign);
    expect(r.structuredContent).toMatchObject({ success: true, phase: 'preview', channels: ['email'], schedule: { send_immediately: true } });
    const a = r.structuredContent.audience;
    expect(a).toMatchObject({ recipients: 4, messages: 4, per_channel: { email: 4 }, contacts_considered: 6 });
    expect(a.excluded.by_reason).toEqual({ unsubscribed: 1, duplicate_address: 1 });
    expect(a.held_back.total).toBe(0);
    expect(r.structuredContent.samples).toHaveLength(3);
    expect(r.structuredContent.samples[0]).toMatchObject({ to: 'maria@acme.example', client_id: 'acme', channel: 'email', subject: 'Acme Corp: quick check-in' });
    const texts = r.structuredContent.samples.map((s: { text: string }) => s.text);
    expect(texts).toContain('Hi there, your health score is 42. Book a call: https://cal.example/dana');
    expect(texts.join('\n')).not.toMatch(/\{\{|\}\}/);
    expect(r.structuredContent.confirmation_token).toMatch(/^cst_/);
    expect(sg.matching(/^POST \/v3\/mail\/send/)).toHaveLength(0);
    previewToken = r.structuredContent.confirmation_token;
  });

  it('holds back recipients whose template uses a value they lack, naming it', async () => {
    const r = await h.call('send_personalized_email', { ...baseCampaign, body_text: 'Dear {{ contact.first_name }},' });
    expect(r.structuredContent.audience.held_back.total).toBe(1);
    expect(r.structuredContent.audience.held_back.examples[0]).toMatchObject({ email: 'ops@acme.example', reason: 'missing_value' });
    expect(r.structuredContent.audience.held_back.examples[0].detail).toMatch(/contact\.first_name/);
  });

  it('refuses a token when the audience changed since the preview, with a fresh preview', async () => {
    const preview = await h.call('send_personalized_email', { ...baseCampaign, campaign_name: 'Audience drift' });
    await h.call('upsert_contact', { client_id: 'globex', email: 'new.person@globex.example', first_name: 'Nia' });
    const r = await h.call('send_personalized_email', { ...baseCampaign, campaign_name: 'Audience drift', confirmation_token: preview.structuredContent.confirmation_token });
    expect(r.isError).toBe(true);
    expect(r.structuredContent.error).toMatchObject({ code: 'invalid_input', retryable: false });
    expect(r.structuredContent.error.message).toMatch(/changed since the preview \(audience\)/);
    expect(r.structuredContent.error.details.fresh_preview.audience.recipients).toBe(5);
    expect(sg.matching(/^POST \/v3\/mail\/send/)).toHaveLength(0);
    await h.call('remove_contact', { client_id: 'globex', email: 'new.person@globex.example' });
  });

  it('refuses a token when the content changed, or one it never issued', async () => {
    const r = await h.call('send_personalized_email', { ...baseCampaign, subject_line: 'Different', confirmation_token: previewToken });
    expect(r.structuredContent.error.message).toMatch(/changed since the preview \(content/);
    const forged = await h.call('send_personalized_email', { ...baseCampaign, confirmation_token: 'cst_made_up_token_value' });
    expect(forged.structuredContent.error.message).toMatch(/not one this server issued/);
    expect(sg.matching(/^POST \/v3\/mail\/send/)).toHaveLength(0);
  });

  let campaignId = '';

  it('confirms with the token and delivers each recipient exactly once, never the unsubscribed', async () => {
    const r = await h.call('send_personalized_email', { ...baseCampaign, confirmation_token: previewToken });
    expect(r.structuredContent).toMatchObject({ success: true, phase: 'confirmed', queued: 4 });
    campaignId = r.structuredContent.campaign_id;
    const status = await h.call('get_campaign_status', { campaign_id: campaignId, wait_seconds: 20 });
    expect(status.structuredContent.campaign).toMatchObject({ status: 'completed', totals: { sent: 4, total: 4, failed: 0, unknown: 0 }, progress: { percent: 100 } });
    const received = receivedPerAddress(sg);
    expect(Object.fromEntries(received)).toEqual({
      'maria@acme.example': 1,
      'tom@acme.example': 1,
      'ops@acme.example': 1,
      'hank@globex.example': 1,
    });
    const tom = sg.delivered.find((d) => d.to === 'tom@acme.example')!;
    expect(tom).toMatchObject({
      subject: 'Acme Corp: quick check-in',
      text: 'Hi Tom, your health score is 42. Book a call: https://cal.example/dana',
      custom_args: { campaign_id: campaignId, client_id: 'acme', outbox_key: `${campaignId}:${tom.custom_args.contact_id}:email` },
    });
    expect(tom.body).toMatchObject({ categories: ['health_check'], tracking_settings: { open_tracking: { enable: true }, click_tracking: { enable: true } } });
    // Short bodies share one request, each recipient with their own personalization: nobody sees another's address.
    expect(tom.personalization.to).toEqual([expect.objectContaining({ email: 'tom@acme.example' })]);
    expect(sg.matching(/^POST \/v3\/mail\/send/)).toHaveLength(1);
  });

  it('records campaign_message_sent in Mixpanel for every delivery', async () => {
    await h.call('mixpanel_flush');
    const sent = [...mp.events.values()].filter((e) => e.event === 'campaign_message_sent' && e.properties.campaign_id === campaignId);
    expect(sent.map((e) => e.properties.distinct_id).sort()).toEqual(['hank@globex.example', 'maria@acme.example', 'ops@acme.example', 'tom@acme.example']);
    expect(sent[0]!.properties).toMatchObject({ channel: 'email', template_type: 'health_check' });
  });

  it('a confirmation called with a progress token follows delivery with progress notifications', async () => {
    const args = { ...baseCampaign, campaign_name: 'With progress', target_tier: undefined, target_client_ids: ['globex'] };
    const preview = await h.call('send_personalized_email', args);
    const progress: Array<{ progress: number; total?: number }> = [];
    const r = (await h.client.callTool(
      { name: 'send_personalized_email', arguments: { ...args, confirmation_token: preview.structuredContent.confirmation_token } },
      undefined,
      { onprogress: (p) => progress.push(p) },
    )) as any;
    expect(r.structuredContent, JSON.stringify(r.structuredContent).slice(0, 1500)).toMatchObject({ phase: 'confirmed', delivery: { status: 'completed', totals: { sent: 2 } } });
    expect(progress.length).toBeGreaterThan(0);
    expect(progress.at(-1)).toMatchObject({ progress: 2, total: 2 });
  });

  it('confirming the same token again sends nothing more and reports the campaign', async () => {
    const before = sg.matching(/^POST \/v3\/mail\/send/).length;
    const campaigns = (await h.call('list_campaigns', {})).structuredContent.campaigns.length;
    const r = await h.call('send_personalized_email', { ...baseCampaign, confirmation_token: previewToken });
    expect(r.structuredContent).toMatchObject({ phase: 'confirmed', already_confirmed: true, campaign_id: campaignId });
    // Nothing new to deliver: no new campaign, no new row in this one, no request.
    expect((await h.call('list_campaigns', {})).structuredContent.campaigns.length).toBe(campaigns);
    expect((await h.call('get_campaign_status', { campaign_id: campaignId })).structuredContent.campaign.totals).toMatchObject({ total: 4, sent: 4 });
    expect(sg.matching(/^POST \/v3\/mail\/send/).length).toBe(before);
  });

  it('records every delivery in the contact timeline and lists the campaign', async () => {
    const t = await h.call('get_client_timeline', { client_id: 'acme', types: ['email'] });
    expect(t.structuredContent.entries.filter((e: any) => e.data.campaign_id === campaignId)).toHaveLength(3);
    expect(t.structuredContent.entries[0]).toMatchObject({ channel: 'sendgrid', outcome: 'success', actor: 'dana@ourco.test' });
    const list = await h.call('list_campaigns', {});
    expect(list.structuredContent.campaigns.map((c: any) => c.campaign_id)).toContain(campaignId);
  });

  it("bodies at the edge of SendGrid's 10,000 bytes of substitutions: those that fit share a request, a larger one goes alone, SendGrid accepts every request", async () => {
    const mails = () => sg.matching(/^POST \/v3\/mail\/send/).length;
    // Multi-byte text (2 bytes a character): what counts is bytes, not characters.
    const send = async (name: string, bodyBytes: number) => {
      const args = { ...baseCampaign, campaign_name: name, body_text: 'é'.repeat(bodyBytes / 2), personalization_tokens: {}, target_tier: undefined, target_client_ids: ['acme'] };
      const preview = await h.call('send_personalized_email', args);
      const before = mails();
      const r = await h.call('send_personalized_email', { ...args, confirmation_token: preview.structuredContent.confirmation_token });
      const s = await h.call('get_campaign_status', { campaign_id: r.structuredContent.campaign_id, wait_seconds: 20 });
      expect(s.structuredContent.campaign, JSON.stringify(s.structuredContent.campaign.problems)).toMatchObject({ status: 'completed', totals: { sent: 3, failed: 0, unknown: 0 } });
      return mails() - before;
    };
    expect(await send('Edge: fits', 9_400)).toBe(1); // three recipients, one request
    expect(await send('Edge: too large to batch', 10_200)).toBe(3); // one request each, the body as content
  });

  it('delivers through Intercom in-app, tracking email_campaign_received, and learns the Intercom id', async () => {
    ic.seedContact({ email: 'peter@initech.example', role: 'lead' }); // an earlier visitor with the same email
    const peter = ic.seedContact({ email: 'peter@initech.example', name: 'Peter Gibbons' });
    const args = { ...baseCampaign, campaign_name: 'Initech nudge', target_tier: undefined, target_client_ids: ['initech'], channels: ['intercom_inapp'] };
    const preview = await h.call('send_personalized_email', args);
    expect(preview.structuredContent.audience.per_channel).toEqual({ intercom_inapp: 1 });
    const r = await h.call('send_personalized_email', { ...args, confirmation_token: preview.structuredContent.confirmation_token });
    const s = await h.call('get_campaign_status', { campaign_id: r.structuredContent.campaign_id, wait_seconds: 20 });
    expect(s.structuredContent.campaign.totals.sent).toBe(1);
    expect(ic.messages).toHaveLength(1);
    expect(ic.messages[0]).toMatchObject({ message_type: 'inapp', from: { type: 'admin', id: '991' }, to: { type: 'user', id: peter.id } });
    await until(() => ic.events.length, (n) => n === 1);
    expect(ic.events[0]).toMatchObject({ event_name: 'email_campaign_received', metadata: { campaign_name: 'Initech nudge', template_type: 'health_check' } });
    const ov = await h.call('get_client_overview', { client_id: 'initech' });
    expect(ov.structuredContent.contacts[0].linked_to_intercom).toBe(true);
  });

  it('a contact unknown to Intercom fails with a reason instead of being guessed', async () => {
    const args = { ...baseCampaign, campaign_name: 'Globex in-app', target_tier: undefined, target_client_ids: ['globex'], channels: ['intercom_inapp'], contact_roles: ['decision_maker'] };
    const preview = await h.call('send_personalized_email', args);
    expect(preview.structuredContent.audience.excluded.by_reason).toEqual({ role_not_targeted: 1 });
    const r = await h.call('send_personalized_email', { ...args, confirmation_token: preview.structuredContent.confirmation_token });
    const s = await h.call('get_campaign_status', { campaign_id: r.structuredContent.campaign_id, wait_seconds: 20 });
    expect(s.structuredContent.campaign).toMatchObject({ status: 'completed_with_problems', totals: { failed: 1 } });
    expect(s.structuredContent.campaign.problems[0]).toMatchObject({ email: 'hank@globex.example', error_code: 'not_found' });
  });

  it('a scheduled campaign waits, and cancel stops it before anything is sent', async () => {
    const at = new Date(Date.now() + 60_000).toISOString();
    const args = { ...baseCampaign, campaign_name: 'Later', scheduled_send_time: at };
    const preview = await h.call('send_personalized_email', args);
    expect(preview.structuredContent.schedule).toEqual({ send_immediately: false, scheduled_send_time: at });
    const r = await h.call('send_personalized_email', { ...args, confirmation_token: preview.structuredContent.confirmation_token });
    const id = r.structuredContent.campaign_id;
    expect((await h.call('get_campaign_status', { campaign_id: id })).structuredContent.campaign.status).toBe('scheduled');
    const c = await h.call('cancel_campaign', { campaign_id: id });
    expect(c.structuredContent).toMatchObject({ cancelled_messages: 4, already_sent: 0, in_flight: 0, campaign: { status: 'cancelled' } });
    expect((await h.call('cancel_campaign', { campaign_id: id })).structuredContent.cancelled_messages).toBe(0);
  });

  it('validates the request, naming the field', async () => {
    const none = await h.call('send_personalized_email', { ...baseCampaign, target_tier: undefined });
    expect(none.structuredContent.error.details.fields[0].field).toBe('target_client_ids');
    const past = await h.call('send_personalized_email', { ...baseCampaign, scheduled_send_time: '2020-01-01T00:00:00Z' });
    expect(past.structuredContent.error.message).toMatch(/not in the future/);
    const typo = await h.call('send_personalized_email', { ...baseCampaign, body_text: 'Hi {{ contact.frist_name }}' });
    expect(typo.structuredContent.success).toBe(true); // contact.* is known; the missing value holds everyone back instead
    expect(typo.structuredContent.audience.held_back.total).toBe(4);
    expect(typo.structuredContent.confirmation_token).toBeUndefined();
    const unknownRoot = await h.call('send_personalized_email', { ...baseCampaign, body_text: 'Hi {{ first_name }}' });
    expect(unknownRoot.structuredContent.error).toMatchObject({ code: 'invalid_input' });
    expect(unknownRoot.structuredContent.error.message).toMatch(/body_text uses \{\{ first_name \}\}/);
  });
});

describe('confirmation tokens expire', () => {
  it('an expired token is refused with a fresh preview, and nothing is sent', async () => {
    const sg = await startSendGridStandIn({ apiKey: SG_KEY });
    const data = tempDataDir();
    const h = await startInMemory(testEnv({ SENDGRID_API_KEY: SG_KEY, SENDGRID_BASE_URL: sg.url, SENDGRID_FROM_EMAIL: 'success@ourco.test', CAMPAIGN_CONFIRMATION_TTL_S: '1' }, data.dir));
    try {
      await h.call('register_client', { client_id: 'hooli', name: 'Hooli', tier: 'enterprise', health_score: 60 });
      await h.call('upsert_contact', { client_id: 'hooli', email: 'gavin@hooli.example', first_name: 'Gavin' });
      const preview = await h.call('send_personalized_email', baseCampaign);
      const expiresAt = Date.parse(preview.structuredContent.token_expires_at);
      await until(() => Date.now() > expiresAt, { message: 'the token to expire' });
      const r = await h.call('send_personalized_email', { ...baseCampaign, confirmation_token: preview.structuredContent.confirmation_token });
      expect(r.structuredContent.error).toMatchObject({ code: 'invalid_input' });
      expect(r.structuredContent.error.message).toMatch(/expired/);
      expect(r.structuredContent.error.details.fresh_preview.confirmation_token).toMatch(/^cst_/);
      expect(sg.requests).toHaveLength(0);
    } finally {
      await h.close();
      await sg.stop();
      data.cleanup();
    }
  });
});

describe('a provider whose circuit opened mid-campaign', () => {
  // Found by the crash drills: cockatiel only moves an open circuit to half-open when a call is made, so
  // the waiting rows themselves must make that trial once the reset time has passed.
  it('recovers: once the provider is healthy again, the queued rows are delivered', async () => {
    const sg = await startSendGridStandIn({ apiKey: SG_KEY });
    const data = tempDataDir();
    const h = await startInMemory(
      testEnv({ SENDGRID_API_KEY: SG_KEY, SENDGRID_BASE_URL: sg.url, SENDGRID_FROM_EMAIL: 'success@ourco.test', CAMPAIGN_DISPATCH_POLL_MS: '50' }, data.dir),
    );
    try {
      await h.call('register_client', { client_id: 'hooli', name: 'Hooli', tier: 'enterprise', health_score: 60 });
      await h.call('upsert_contact', { client_id: 'hooli', email: 'gavin@hooli.example', first_name: 'Gavin' });
      await h.call('upsert_contact', { client_id: 'hooli', email: 'jared@hooli.example', first_name: 'Jared' });
      // Two rows × three attempts of 503 (refused, so retried): five consecutive failures open the circuit.
      sg.inject({ match: /^POST \/v3\/mail\/send/, times: 6, status: 503, body: { errors: [{ field: null, message: 'unavailable' }] } });
      const preview = await h.call('send_personalized_email', baseCampaign);
      const r = await h.call('send_personalized_email', { ...baseCampaign, confirmation_token: preview.structuredContent.confirmation_token });
      await until(async () => (await h.call('integrations_status')).structuredContent.providers.find((p: any) => p.provider === 'sendgrid').circuit === 'open', {
        message: 'the SendGrid circuit to open',
      });
      const done = await until(
        () => h.call('get_campaign_status', { campaign_id: r.structuredContent.campaign_id }),
        (s) => s.structuredContent.campaign.status === 'completed',
        { timeoutMs: 6_000, message: 'the campaign to complete after the circuit could close again' },
      );
      expect(done.structuredContent.campaign.totals).toMatchObject({ sent: 2, total: 2 });
    } finally {
      await h.close();
      await sg.stop();
      data.cleanup();
    }
  }, 30_000);
});

/** A SendGrid stand-in and a data folder whose roster holds `n` enterprise contacts (imported through the tools). */
async function killRig(n: number, extraEnv: Record<string, string>) {
  const sg = await startSendGridStandIn({ apiKey: SG_KEY, latencyMs: 5 });
  const data = tempDataDir();
  const env = testEnv(
    {
      SENDGRID_API_KEY: SG_KEY,
      SENDGRID_BASE_URL: sg.url,
      SENDGRID_FROM_EMAIL: 'success@ourco.test',
      CAMPAIGN_DISPATCH_POLL_MS: '50',
      CAMPAIGN_LEASE_MS: '1000',
      HTTP_TIMEOUT_MS: '30000', // the kill must come before any timeout
      ...extraEnv,
    },
    data.dir,
  );
  await importEnterpriseRoster(env, data.dir, n, { domain: 'example.org' });
  return { sg, env, cleanup: async () => (await sg.stop(), data.cleanup()) };
}

describe('campaign durability across restarts', () => {
  it('a scheduled campaign survives a restart and goes out once at its time', async () => {
    const sg = await startSendGridStandIn({ apiKey: SG_KEY });
    const data = tempDataDir();
    const env = testEnv({ SENDGRID_API_KEY: SG_KEY, SENDGRID_BASE_URL: sg.url, SENDGRID_FROM_EMAIL: 'success@ourco.test', CAMPAIGN_DISPATCH_POLL_MS: '50' }, data.dir);
    try {
      let h = await startInMemory(env);
      await h.call('register_client', { client_id: 'hooli', name: 'Hooli', tier: 'enterprise', health_score: 60 });
      await h.call('upsert_contact', { client_id: 'hooli', email: 'gavin@hooli.example', first_name: 'Gavin' });
      const args = { ...baseCampaign, scheduled_send_time: new Date(Date.now() + 1500).toISOString() };
      const preview = await h.call('send_personalized_email', args);
      const r = await h.call('send_personalized_email', { ...args, confirmation_token: preview.structuredContent.confirmation_token });
      expect(r.structuredContent.phase, JSON.stringify(r.structuredContent)).toBe('confirmed');
      await h.close(); // the server stops before the scheduled time
      expect(sg.matching(/^POST \/v3\/mail\/send/)).toHaveLength(0);
      h = await startInMemory(env);
      const s = await until(
        () => h.call('get_campaign_status', { campaign_id: r.structuredContent.campaign_id }),
        (x) => x.structuredContent.campaign?.status === 'completed',
      );
      expect(s.structuredContent.campaign.totals.sent).toBe(1);
      expect(Object.fromEntries(receivedPerAddress(sg))).toEqual({ 'gavin@hooli.example': 1 });
      await h.close();
    } finally {
      await sg.stop();
      data.cleanup();
    }
  });

  it('SIGKILL in the middle of a 500-recipient campaign: after a restart every recipient has exactly one message', async () => {
    const CONCURRENCY = 8;
    // One request per message (the batched case is the next test).
    const { sg, env, cleanup } = await killRig(500, { CAMPAIGN_DISPATCH_CONCURRENCY: String(CONCURRENCY), CAMPAIGN_EMAIL_BATCHING: 'false' });
    try {
      const first = await startStdio(env);
      const preview = await first.call('send_personalized_email', { ...baseCampaign, body_text: 'Hi {{ contact.first_name }}' });
      expect(preview.structuredContent.audience.recipients).toBe(500);
      const confirmed = await first.call('send_personalized_email', { ...baseCampaign, body_text: 'Hi {{ contact.first_name }}', confirmation_token: preview.structuredContent.confirmation_token });
      const campaignId = confirmed.structuredContent.campaign_id;

      // Mid-campaign: after ~200 deliveries the provider stops answering, so every dispatch slot is
      // blocked inside a request the provider has received. Then the server is killed outright.
      await until(() => sg.delivered.length, (n) => n >= 200);
      sg.inject({ match: /^POST \/v3\/mail\/send/, times: CONCURRENCY, hang: true });
      const deliveredAtHang = sg.delivered.length;
      await until(() => sg.matching(/^POST \/v3\/mail\/send/).length, (n) => n >= deliveredAtHang + CONCURRENCY);
      process.kill(first.pid!, 'SIGKILL');
      await first.close().catch(() => undefined);
      sg.clearFaults();

      const second = await startStdio(env);
      const s = await until(
        () => second.call('get_campaign_status', { campaign_id: campaignId }),
        (x) => x.structuredContent.campaign.totals.queued + x.structuredContent.campaign.totals.sending === 0,
        { timeoutMs: 30_000 },
      );
      await second.close();

      const received = receivedPerAddress(sg);
      expect(received.size).toBe(500);
      expect([...received.values()].every((n) => n === 1)).toBe(true);
      // The requests caught mid-flight are reported as in doubt, and were not resent. So is any answered
      // request whose "sent" the kill caught before it was written (results are written in groups).
      const totals = s.structuredContent.campaign.totals;
      expect(totals).toMatchObject({ failed: 0, total: 500 });
      expect(totals.unknown).toBeGreaterThanOrEqual(CONCURRENCY);
      expect(totals.sent + totals.unknown).toBe(500);
      expect(s.structuredContent.campaign.problems.every((p: any) => p.state === 'unknown')).toBe(true);
    } finally {
      await cleanup();
    }
  }, 90_000);

  it('SIGKILL while a batched request (many recipients in one request) is in flight: after a restart those rows are in doubt, none resent, the rest sent once', async () => {
    const { sg, env, cleanup } = await killRig(1500, {});
    try {
      // The first request (up to 1,000 recipients) hangs at the provider; the server is killed while it does.
      sg.inject({ match: /^POST \/v3\/mail\/send/, times: 1, hang: true });
      const first = await startStdio(env);
      const args = { ...baseCampaign, body_text: 'Hi {{ contact.first_name }}' };
      const preview = await first.call('send_personalized_email', args);
      const confirmed = await first.call('send_personalized_email', { ...args, confirmation_token: preview.structuredContent.confirmation_token });
      const campaignId = confirmed.structuredContent.campaign_id;
      await until(() => sg.matching(/^POST \/v3\/mail\/send/).length, (n) => n >= 1);
      const hung = (sg.matching(/^POST \/v3\/mail\/send/)[0]!.body as any).personalizations.length as number;
      expect(hung).toBeGreaterThan(1);
      process.kill(first.pid!, 'SIGKILL');
      await first.close().catch(() => undefined);
      sg.clearFaults();

      const second = await startStdio(env);
      const s = await until(
        () => second.call('get_campaign_status', { campaign_id: campaignId }),
        (x) => x.structuredContent.campaign.totals.queued + x.structuredContent.campaign.totals.sending === 0,
        { timeoutMs: 30_000 },
      );
      await second.close();
      const received = receivedPerAddress(sg);
      expect(received.size).toBe(1500);
      expect([...received.values()].every((n) => n === 1)).toBe(true);
      expect(s.structuredContent.campaign.totals).toMatchObject({ unknown: hung, sent: 1500 - hung, failed: 0, total: 1500 });
    } finally {
      await cleanup();
    }
  }, 90_000);
});
