import { describe, expect, it } from 'vitest';
import type { Audience } from '../../src/engine/audience.js';
import { buildDefinition, buildPlan, resolveChannels } from '../../src/engine/campaign-plan.js';
import { campaignRequestSchema } from '../../src/engine/campaign-request.js';
import { loadConfig } from '../../src/config.js';

const config = loadConfig({ SENDGRID_FROM_EMAIL: 'success@ourco.test', SENDGRID_FROM_NAME: 'Our Success Team' } as NodeJS.ProcessEnv);
const now = new Date().toISOString();

function member(id: string, email: string, first: string | null, clientId = 'acme') {
  return {
    contact: {
      contact_id: id, client_id: clientId, email, name: first ? `${first} Doe` : null, first_name: first, role: 'champion', phone: null,
      external_user_id: null, intercom_contact_id: null, unsubscribed: 0, unsubscribed_at: null, unsubscribe_source: null, unsubscribe_reason: null,
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

describe('campaign plan', () => {
  it('renders each recipient and holds back those missing a value', () => {
    const def = buildDefinition(request(), config, ['email']);
    const plan = buildPlan(def, audience());
    expect(plan.deliveries).toHaveLength(1);
    expect(plan.deliveries[0]!.payload).toMatchObject({ subject: 'Acme Corp check-in', text: 'Hi Ann', to_email: 'ann@acme.test', from_email: 'success@ourco.test' });
    expect(plan.held_back).toEqual([expect.objectContaining({ contact_id: 'c2', reason: 'missing_value' })]);
  });

  it('one delivery per recipient and channel', () => {
    const def = buildDefinition(request({ body_text: 'Hi {{ contact.first_name | fallback: "there" }}' }), config, ['email', 'intercom_inapp']);
    const plan = buildPlan(def, audience());
    expect(plan.deliveries.map((d) => `${d.contact_id}/${d.channel}`)).toEqual(['c1/email', 'c1/intercom_inapp', 'c2/email', 'c2/intercom_inapp']);
  });

  it('fingerprint: same inputs agree; content, audience and schedule changes are each detected', () => {
    const def = buildDefinition(request(), config, ['email']);
    const base = buildPlan(def, audience()).fingerprint;
    expect(buildPlan(buildDefinition(request(), config, ['email']), audience()).fingerprint).toEqual(base);

    const content = buildPlan(buildDefinition(request({ subject_line: 'Other' }), config, ['email']), audience()).fingerprint;
    expect(content.content).not.toBe(base.content);

    const changedContact = buildPlan(def, audience([member('c1', 'ann.new@acme.test', 'Ann'), member('c2', 'bo@acme.test', null)])).fingerprint;
    expect(changedContact.audience).not.toBe(base.audience);
    expect(changedContact.content).toBe(base.content);

    const later = new Date(Date.now() + 3_600_000).toISOString();
    const scheduled = buildPlan(buildDefinition(request({ scheduled_send_time: later }), config, ['email']), audience()).fingerprint;
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
