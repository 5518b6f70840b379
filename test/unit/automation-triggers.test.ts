import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { normalize, workflowInputShape, type WorkflowInput } from '../../src/engine/automations/definition.js';
import { crosses, goalReachedBy, matchesProperties, occurrenceKey, stateGoalReached, triggerSubject } from '../../src/engine/automations/triggers.js';
import type { CustomerEvent } from '../../src/store/customer-events.js';
import { z } from 'zod';

const ev = (over: Partial<CustomerEvent>): CustomerEvent => ({
  event_id: 10,
  occurred_at: '2026-11-25T10:00:00.000Z',
  recorded_at: '2026-11-25T10:00:00.000Z',
  client_id: 'acme',
  contact_id: null,
  name: 'x',
  properties: {},
  source: 'tool:record_customer_event',
  source_ref: null,
  depth: 0,
  dedup_key: null,
  ...over,
});

describe('health thresholds are edges, not levels', () => {
  it('crossing below fires from above (or unknown) to below, not while it keeps falling', () => {
    expect(crosses(60, 45, 50, 'below')).toBe(true);
    expect(crosses(50, 49, 50, 'below')).toBe(true);
    expect(crosses(null, 30, 50, 'below')).toBe(true);
    expect(crosses(45, 30, 50, 'below')).toBe(false);
    expect(crosses(45, 60, 50, 'below')).toBe(false);
    expect(crosses(45, null, 50, 'below')).toBe(false);
    expect(crosses(50, 51, 50, 'above')).toBe(true);
    expect(crosses(60, 70, 50, 'above')).toBe(false);
  });

  it('a health_score_changed event enrols the client only when it crosses', () => {
    const t = { type: 'health_score' as const, threshold: 50, direction: 'below' as const };
    expect(triggerSubject(t, ev({ name: 'health_score_changed', properties: { from: 70, to: 40 } }))).toEqual({ kind: 'client', client_id: 'acme', contact_id: null });
    expect(triggerSubject(t, ev({ name: 'health_score_changed', properties: { from: 40, to: 30 } }))).toBeUndefined();
    expect(triggerSubject(t, ev({ name: 'login', properties: { from: 70, to: 40 } }))).toBeUndefined();
  });
});

describe('event triggers', () => {
  it('an event by a contact enrols that contact; an account event enrols the client', () => {
    const t = { type: 'event_based' as const, event: 'login' };
    expect(triggerSubject(t, ev({ name: 'login', contact_id: 'ct_1' }))).toEqual({ kind: 'contact', client_id: 'acme', contact_id: 'ct_1' });
    expect(triggerSubject(t, ev({ name: 'login' }))).toEqual({ kind: 'client', client_id: 'acme', contact_id: null });
    expect(triggerSubject(t, ev({ name: 'login', client_id: null }))).toBeUndefined();
  });

  it('property conditions: equality (numbers and text alike, case-insensitive), comparisons, in, exists', () => {
    expect(matchesProperties({ plan: 'Pro', seats: '12' }, { plan: 'pro', seats: 12 })).toBe(true);
    expect(matchesProperties({ seats: 12 }, { seats: { gte: 10, lt: 20 } })).toBe(true);
    expect(matchesProperties({ seats: 9 }, { seats: { gte: 10 } })).toBe(false);
    expect(matchesProperties({ seats: 'many' }, { seats: { gt: 1 } })).toBe(false);
    expect(matchesProperties({ region: 'eu' }, { region: { in: ['us', 'eu'] } })).toBe(true);
    expect(matchesProperties({}, { region: { exists: false } })).toBe(true);
    expect(matchesProperties({ region: 'eu' }, { region: { ne: 'eu' } })).toBe(false);
    expect(matchesProperties({ flag: true }, { flag: true })).toBe(true);
  });

  it('a milestone is a lifecycle stage reached (only by the stage changing) or an event of that name', () => {
    const t = { type: 'milestone' as const, milestone_name: 'mature' };
    expect(triggerSubject(t, ev({ name: 'lifecycle_stage_changed', properties: { from: 'adopting', to: 'mature' } }))?.kind).toBe('client');
    expect(triggerSubject(t, ev({ name: 'lifecycle_stage_changed', properties: { from: 'mature', to: 'renewal' } }))).toBeUndefined();
    // A stage is the roster's state: an event merely named like it does not reach it.
    expect(triggerSubject(t, ev({ name: 'mature', contact_id: 'ct_1' }))).toBeUndefined();
    const named = { type: 'milestone' as const, milestone_name: 'first_report' };
    expect(triggerSubject(named, ev({ name: 'first_report', contact_id: 'ct_1' }))?.kind).toBe('contact');
  });

  it('one occurrence key per workflow, occurrence and subject', () => {
    const s = { kind: 'contact' as const, client_id: 'acme', contact_id: 'ct_1' };
    expect(occurrenceKey('wf_1', 'ev:10', s)).toBe('wf_1|ev:10|contact:ct_1');
    expect(occurrenceKey('wf_1', 'ev:10', { ...s, kind: 'client', contact_id: null })).toBe('wf_1|ev:10|client:acme');
  });
});

describe('goals', () => {
  const e = { workflow_id: 'wf_1', enrollment_id: 'en_1', subject_kind: 'contact', client_id: 'acme', contact_id: 'ct_1' };
  it('an event goal counts the contact\'s own events and the account\'s, not another contact\'s', () => {
    const goals = [{ event: 'meeting_booked', of_this_workflow: false }];
    expect(goalReachedBy(goals, ev({ name: 'meeting_booked', contact_id: 'ct_1' }), e)).toBe('meeting_booked recorded');
    expect(goalReachedBy(goals, ev({ name: 'meeting_booked' }), e)).toBe('meeting_booked recorded');
    expect(goalReachedBy(goals, ev({ name: 'meeting_booked', contact_id: 'ct_2' }), e)).toBeUndefined();
    expect(goalReachedBy(goals, ev({ name: 'meeting_booked', client_id: 'globex' }), e)).toBeUndefined();
    expect(goalReachedBy(goals, ev({ name: 'meeting_booked', contact_id: 'ct_2' }), { ...e, subject_kind: 'client', contact_id: null })).toBe('meeting_booked recorded');
  });

  it('of_this_workflow: only events about a message this enrolment sent', () => {
    const goals = [{ event: 'email_opened', of_this_workflow: true }];
    expect(goalReachedBy(goals, ev({ name: 'email_opened', properties: { outbox_key: 'wf_1:en_1:0:ct_1:email', workflow_id: 'wf_1' } }), e)).toBeDefined();
    expect(goalReachedBy(goals, ev({ name: 'email_opened', properties: { outbox_key: 'wf_1:en_2:0:ct_1:email' } }), e)).toBeUndefined();
    expect(goalReachedBy(goals, ev({ name: 'email_opened', properties: { outbox_key: 'cmp_1:ct_1:email' } }), e)).toBeUndefined();
  });

  it('state goals: health back above a value, a lifecycle stage', () => {
    const goals = [{ health_above: 60 }, { lifecycle_stage: 'churned' as const }];
    expect(stateGoalReached(goals, { health_score: 61, lifecycle_stage: 'mature' })).toBe('health score above 60');
    expect(stateGoalReached(goals, { health_score: 60, lifecycle_stage: 'mature' })).toBeUndefined();
    expect(stateGoalReached(goals, { health_score: null, lifecycle_stage: 'churned' })).toBe('lifecycle stage churned');
    expect(goalReachedBy(goals, ev({ name: 'health_score_changed', properties: { from: 40, to: 75 } }), e)).toBe('health score above 60');
  });
});

describe('normalised definitions', () => {
  const config = loadConfig({ SENDGRID_FROM_EMAIL: 'cs@ourco.test' } as NodeJS.ProcessEnv);
  const configured = { intercom: true, sendgrid: true, mixpanel: false, slack: false, webhook: false };
  const parse = (v: Record<string, unknown>) => z.object(workflowInputShape).parse(v) as WorkflowInput;
  const base = { workflow_name: 'W', trigger_type: 'time_based', trigger_conditions: { schedule: '0 9 * * 1-5' }, actions: [{ type: 'send_email', subject: 'Hi', body: 'Hi' }] };

  it('makes every default explicit: re-entry per trigger, time zone, send window days, sender', () => {
    const d = normalize(parse({ ...base, send_window: { start_hour: 9, end_hour: 17 }, audience: { tier: 'enterprise', contact_roles: ['Champion'] } }), config, configured);
    expect(d).toMatchObject({
      trigger: { type: 'time_based', schedule: '0 9 * * 1-5', timezone: 'UTC' },
      reentry: { mode: 'every_occurrence' },
      send_window: { days: [1, 2, 3, 4, 5], start_hour: 9, end_hour: 17, timezone: 'UTC' },
      audience: { tier: ['enterprise'], contact_roles: ['champion'] },
      sender: { email: 'cs@ourco.test' },
      enroll_existing: false,
      frequency_cap_action: 'wait',
    });
    const health = normalize(parse({ ...base, trigger_type: 'health_score', trigger_conditions: { threshold: 40 } }), config, configured);
    expect(health.trigger).toEqual({ type: 'health_score', threshold: 40, direction: 'below' });
    expect(health.reentry).toEqual({ mode: 'never' });
    expect(normalize(parse({ ...base, reentry: { after_days: 30 } }), config, configured).reentry).toEqual({ mode: 'after_days', days: 30 });
  });

  it('refuses what the schema cannot catch, naming the field', () => {
    expect(() => normalize(parse({ ...base, trigger_conditions: { schedule: '61 9 * * *' } }), config, configured)).toThrow(/trigger_conditions.schedule/);
    expect(() => normalize(parse({ ...base, actions: [{ type: 'wait', days: 1 }] }), config, configured)).toThrow(/only wait steps/);
    expect(() => normalize(parse({ ...base, audience: { health_min: 80, health_max: 20 } }), config, configured)).toThrow(/health_min is above/);
    expect(() => normalize(parse({ ...base, actions: [{ type: 'track_event', event_name: 'x', destinations: ['mixpanel'] }] }), config, configured)).toThrow(/Mixpanel is not configured/);
    expect(() => normalize(parse({ ...base, actions: [{ type: 'create_ticket', title: 'x' }] }), config, configured)).toThrow(/INTERCOM_TICKET_TYPE_ID/);
  });
});
