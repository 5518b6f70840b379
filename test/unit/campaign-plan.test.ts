import { describe, expect, it } from 'vitest';
import type { Audience } from '../../src/engine/audience.js';
import { buildDefinition, renderPlan, resolveChannels, type CampaignDefinition, type PlannedDelivery } from '../../src/engine/campaigns/plan.js';
import { campaignRequestSchema } from '../../src/engine/campaigns/request.js';
import { loadConfig } from '../../src/config.js';

const config = loadConfig({ SENDGRID_FROM_EMAIL: 'success@ourco.test', SENDGRID_FROM_NAME: 'Our Success Team' } as NodeJS.ProcessEnv);
const now = new Date().toISOString();

function member(id: string, email: string, first: string | null, clientId = 'acme') {
  return {
    contact: {
      contact_id: id, client_id: clientId, email, name: first ? `${first} Doe` : null, first_name: first, role: 'champion', phone: null,
      external_user_id: null, intercom_contact_id: null, intercom_role: null, unsubscribed: 0, unsubscribed_at: null, unsubscribe_source: null, unsubscribe_reason: null,
      email_status: null as string | null, email_status_at: null, email_status_source: null, email_status_reason: null, timezone: null,
      created_at: now, updated_at: now,
    },
    client: {
      client_id: clientId, name: 'Acme Corp', tier: 'enterprise' as const, lifecycle_stage: 'mature' as const, health_score: 40, mrr: 1000,
      renewal_date: null, owner_email: null, custom_attributes: '{}', created_at: now, updated_at: now, segments: ['at_risk'], custom: {},
    },
  };
}

const request = (over: Record<string, unknown> = {}) =>
  campaignRequestSchema.parse({
    campaign_name: 'Check-in',
    template_type: 'health_check',
    subject_line: '{{ client.name }} check-in',
    body_text: 'Hi {{ contact.first_name }}',
    target_tier: 'enterprise',
    ...over,
  });

const audience = (members = [member('c1', 'ann@acme.test', 'Ann'), member('c2', 'bo@acme.test', null)]): Audience => ({
  members,
  excluded: [],
  unknown_client_ids: [],
  contacts_considered: members.length,
});

const budget = { totalMs: 5_000, perRecipient: { timeMs: 250, maxChars: 1_000_000 } };

/** The plan and every message it produced. */
async function buildPlan(def: CampaignDefinition, aud: Audience) {
  const deliveries: PlannedDelivery[] = [];
  const plan = await renderPlan(def, aud, budget, async (chunk) => void deliveries.push(...chunk));
  return { ...plan, deliveries };
}

describe('campaign plan', () => {
  it('renders each recipient and holds back those missing a value', async () => {
    const def = buildDefinition(request(), config, ['email']);
    const plan = await buildPlan(def, audience());
    expect(plan.deliveries).toHaveLength(1);
    expect(plan.deliveries[0]!.content).toMatchObject({ subject: 'Acme Corp check-in', text: 'Hi Ann', to_email: 'ann@acme.test', from_email: 'success@ourco.test' });
    expect(plan.held_back).toEqual({ total: 1, examples: [expect.objectContaining({ contact_id: 'c2', reason: 'missing_value' })] });
  });

  it('one delivery per recipient and channel; an email suppression drops only the email channels', async () => {
    const def = buildDefinition(request({ body_text: 'Hi {{ contact.first_name | fallback: "there" }}' }), config, ['email', 'intercom_inapp']);
    const plan = await buildPlan(def, audience());
    expect(plan.deliveries.map((d) => `${d.contact_id}/${d.channel}`)).toEqual(['c1/email', 'c1/intercom_inapp', 'c2/email', 'c2/intercom_inapp']);
    const bounced = member('c2', 'bo@acme.test', null);
    bounced.contact.email_status = 'bounced';
    const partial = await buildPlan(def, audience([member('c1', 'ann@acme.test', 'Ann'), bounced]));
    expect(partial.deliveries.map((d) => `${d.contact_id}/${d.channel}`)).toEqual(['c1/email', 'c1/intercom_inapp', 'c2/intercom_inapp']);
    expect(partial.excluded).toMatchObject({ total: 1, by_reason: { email_suppressed: 1 }, examples: [{ contact_id: 'c2', channel: 'email' }] });
  });

  it('bounds the whole render pass, not each recipient: a slow template over a large audience stops at the budget', async () => {
    const def = buildDefinition(
      request({ body_text: '{% for a in (1..300) %}{% for b in (1..300) %}{{ contact.first_name | fallback: "x" }}{% endfor %}{% endfor %}' }),
      config,
      ['email'],
    );
    const many = Array.from({ length: 300 }, (_, i) => member(`c${i}`, `p${i}@acme.test`, 'P'));
    const started = performance.now();
    await expect(renderPlan(def, audience(many), { totalMs: 300, perRecipient: { timeMs: 250, maxChars: 1_000_000 } })).rejects.toMatchObject({
      code: 'invalid_input',
      message: expect.stringMatching(/render budget \(300 ms/),
    });
    expect(performance.now() - started).toBeLessThan(2_000);
  });

  it('keeps the event loop answering while it renders a large audience', async () => {
    const def = buildDefinition(request({ body_text: '{% for a in (1..100) %}{{ contact.first_name | fallback: "x" }}{% endfor %}' }), config, ['email']);
    const many = Array.from({ length: 1_500 }, (_, i) => member(`c${i}`, `p${i}@acme.test`, 'P'));
    // Counts turns of the event loop (not time, which a loaded machine stretches): a chain of callbacks
    // that each run once per turn, and the CPU time the render spent between two of them.
    let ticks = 0;
    let running = true;
    let last = process.cpuUsage();
    let longest = 0;
    const turn = () => {
      const now = process.cpuUsage();
      longest = Math.max(longest, now.user + now.system - last.user - last.system);
      last = now;
      ticks += 1;
      if (running) setImmediate(turn);
    };
    const cpuStart = process.cpuUsage();
    setImmediate(turn);
    const plan = await renderPlan(def, audience(many), { ...budget, totalMs: 60_000 });
    running = false;
    const cpu = process.cpuUsage(cpuStart);
    expect(plan.messages).toBe(1_500);
    // Other work ran all along, not once at the end: the loop turned many times, and no stretch of
    // rendering between two turns took more than a fifth of the render's CPU time.
    expect(ticks).toBeGreaterThanOrEqual(5);
    expect(longest).toBeLessThan((cpu.user + cpu.system) / 5);
  });

  it('keeps samples small whatever the body size, and only a few examples', async () => {
    const def = buildDefinition(request({ body_text: `Hi {{ contact.first_name | fallback: "x" }} ${'lorem ipsum '.repeat(5_000)}` }), config, ['email']);
    const many = Array.from({ length: 50 }, (_, i) => member(`c${i}`, `p${i}@acme.test`, 'P'));
    const plan = await renderPlan(def, audience(many), budget);
    expect(plan.samples).toHaveLength(3);
    for (const s of plan.samples) expect(s.text.length).toBeLessThan(4_100);
    expect(plan.samples[0]!.truncated).toBe(true);
  });

  it('a line break from a contact value never reaches the subject', async () => {
    const m = member('c1', 'ann@acme.test', 'Ann');
    m.client.name = 'Acme\r\nX-Injected: yes';
    const plan = await buildPlan(buildDefinition(request(), config, ['email']), audience([m]));
    expect(plan.deliveries[0]!.content.subject).toBe('Acme X-Injected: yes check-in');
  });

  it('fingerprint: same inputs agree; content, audience and schedule changes are each detected', async () => {
    const def = buildDefinition(request(), config, ['email']);
    const base = (await buildPlan(def, audience())).fingerprint;
    expect((await buildPlan(buildDefinition(request(), config, ['email']), audience())).fingerprint).toEqual(base);

    const content = (await buildPlan(buildDefinition(request({ subject_line: 'Other' }), config, ['email']), audience())).fingerprint;
    expect(content.content).not.toBe(base.content);

    const changedContact = (await buildPlan(def, audience([member('c1', 'ann.new@acme.test', 'Ann'), member('c2', 'bo@acme.test', null)]))).fingerprint;
    expect(changedContact.audience).not.toBe(base.audience);
    expect(changedContact.content).toBe(base.content);

    const later = new Date(Date.now() + 3_600_000).toISOString();
    const scheduled = (await buildPlan(buildDefinition(request({ scheduled_send_time: later }), config, ['email']), audience())).fingerprint;
    expect(scheduled.schedule).not.toBe(base.schedule);
  });

  it('refuses a schedule in the past, and the email channel without any sender', () => {
    expect(() => buildDefinition(request({ scheduled_send_time: '2020-01-01T00:00:00Z' }), config, ['email'])).toThrow(/not in the future/);
    const noSender = loadConfig({} as NodeJS.ProcessEnv);
    expect(() => buildDefinition(request(), noSender, ['email'])).toThrow(/sender_email/);
  });

  it('default channel: email with SendGrid configured, else intercom_email; an unconfigured channel is not_configured', () => {
    expect(resolveChannels(request(), { sendgrid: true, intercom: true, mixpanel: false })).toEqual(['email']);
    expect(resolveChannels(request(), { sendgrid: false, intercom: true, mixpanel: false })).toEqual(['intercom_email']);
    expect(() => resolveChannels(request({ channels: ['email'] }), { sendgrid: false, intercom: true, mixpanel: false })).toThrow(/SENDGRID_API_KEY/);
  });

  it('with no delivery provider configured, names both ways to enable sending', () => {
    const none = { sendgrid: false, intercom: false, mixpanel: true };
    expect(() => resolveChannels(request(), none)).toThrow(expect.objectContaining({ code: 'not_configured', message: expect.stringMatching(/SENDGRID_API_KEY.*INTERCOM_ACCESS_TOKEN/) }));
  });

  it('request validation names the field: targeting, schedule conflicts', () => {
    const r = campaignRequestSchema.safeParse({ campaign_name: 'x', template_type: 'custom', subject_line: 's', body_text: 'b' });
    expect(r.success).toBe(false);
    expect(r.error!.issues[0]!.path).toEqual(['target_client_ids']);
    const both = campaignRequestSchema.safeParse({ ...request(), send_immediately: true, scheduled_send_time: '2030-01-01T00:00:00Z' });
    expect(both.error!.issues[0]!.path).toEqual(['scheduled_send_time']);
  });
});
