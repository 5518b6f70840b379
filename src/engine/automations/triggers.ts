import type { CustomerEvent } from '../../store/customer-events.js';
import { LIFECYCLE_STAGES } from '../../store/roster-model.js';
import type { Goal, PropertyConditions, Trigger } from './definition.js';

/**
 * What a trigger or a goal means, as pure functions over customer events and roster state: which
 * subject an event enrols, whether a score crossed a threshold, whether an event reaches a goal.
 */

export interface Subject {
  kind: 'contact' | 'client';
  client_id: string;
  contact_id: string | null;
}

export function subjectKey(s: Subject): string {
  return s.kind === 'contact' ? `contact:${s.contact_id}` : `client:${s.client_id}`;
}

/** The enrolment key of one occurrence for one subject: unique, so an occurrence enrols a subject once. */
export function occurrenceKey(workflowId: string, occurrence: string, s: Subject): string {
  return `${workflowId}|${occurrence}|${subjectKey(s)}`;
}

/**
 * The workflow that caused an event, if any: its own steps' events (source `automation`), and provider
 * events about its messages (a webhook event whose source_ref is the message's outbox key, which begins
 * with the workflow id). A workflow is never triggered by an event it caused.
 */
export function causedBy(ev: Pick<CustomerEvent, 'source' | 'source_ref'>): string | undefined {
  if (!ev.source_ref) return undefined;
  if (ev.source === 'automation') return ev.source_ref;
  if (ev.source.startsWith('webhook:')) return /^(wf_[0-9a-f]+):en_/.exec(ev.source_ref)?.[1];
  return undefined;
}

/** The outbox key of a workflow message; events about it (opened, clicked) carry it back as outbox_key. */
export function messageKey(workflowId: string, enrollmentId: string, step: number, contactId: string, channel: string): string {
  return `${workflowId}:${enrollmentId}:${step}:${contactId}:${channel}`;
}

/**
 * Events that are not the customer doing something: what our own sends produce, and roster changes.
 * Every other recorded event (but automation steps' own) counts as activity for inactivity triggers.
 */
export const NON_ACTIVITY_EVENTS = [
  'email_delivered',
  'email_bounced',
  'email_dropped',
  'health_score_changed',
  'lifecycle_stage_changed',
  'renewal_date_changed',
] as const;

/**
 * A milestone named like a lifecycle stage ("churned", "renewal") is the roster's state: only the stage
 * changing reaches it, never an event that merely carries the name (any tool or webhook could record one).
 */
export function isStageMilestone(name: string): boolean {
  return (LIFECYCLE_STAGES as readonly string[]).includes(name);
}

export function matchesProperties(props: Record<string, unknown>, conds: PropertyConditions | undefined): boolean {
  if (!conds) return true;
  for (const [key, cond] of Object.entries(conds)) {
    const v = props[key];
    if (cond === null || typeof cond !== 'object') {
      if (!same(v, cond)) return false;
      continue;
    }
    if (cond.exists !== undefined && (v !== undefined && v !== null) !== cond.exists) return false;
    if (cond.eq !== undefined && !same(v, cond.eq)) return false;
    if (cond.ne !== undefined && same(v, cond.ne)) return false;
    if (cond.in !== undefined && !cond.in.some((x) => same(v, x))) return false;
    const n = typeof v === 'number' ? v : typeof v === 'string' && v.trim() !== '' ? Number(v) : NaN;
    if (cond.gt !== undefined && !(n > cond.gt)) return false;
    if (cond.gte !== undefined && !(n >= cond.gte)) return false;
    if (cond.lt !== undefined && !(n < cond.lt)) return false;
    if (cond.lte !== undefined && !(n <= cond.lte)) return false;
  }
  return true;
}

/** Equal, comparing numbers and their text alike (event properties arrive as either). */
function same(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a === 'number' || typeof b === 'number') return a !== null && a !== undefined && a !== '' && Number(a) === Number(b);
  return typeof a === 'string' && typeof b === 'string' && a.toLowerCase() === b.toLowerCase();
}

/**
 * An edge, not a level: below = from not below (or unknown) to below; above likewise. A score that
 * keeps falling under the threshold does not cross it again until it has come back.
 */
export function crosses(from: unknown, to: unknown, threshold: number, direction: 'below' | 'above'): boolean {
  if (typeof to !== 'number') return false;
  const past = (v: number) => (direction === 'below' ? v < threshold : v > threshold);
  return past(to) && !(typeof from === 'number' && past(from));
}

function eventSubject(ev: CustomerEvent): Subject | undefined {
  if (!ev.client_id) return undefined;
  return ev.contact_id ? { kind: 'contact', client_id: ev.client_id, contact_id: ev.contact_id } : { kind: 'client', client_id: ev.client_id, contact_id: null };
}

/** The subject this event enrols in a workflow with this trigger, if any. */
export function triggerSubject(t: Trigger, ev: CustomerEvent): Subject | undefined {
  switch (t.type) {
    case 'event_based':
      return ev.name === t.event && matchesProperties(ev.properties, t.properties) ? eventSubject(ev) : undefined;
    case 'health_score':
      return ev.name === 'health_score_changed' && ev.client_id && crosses(ev.properties.from, ev.properties.to, t.threshold, t.direction)
        ? { kind: 'client', client_id: ev.client_id, contact_id: null }
        : undefined;
    case 'milestone':
      if (ev.name === 'lifecycle_stage_changed') return ev.client_id && ev.properties.to === t.milestone_name ? { kind: 'client', client_id: ev.client_id, contact_id: null } : undefined;
      return ev.name === t.milestone_name && !isStageMilestone(t.milestone_name) ? eventSubject(ev) : undefined;
    default:
      return undefined; // time, renewals, usage and inactivity are evaluated by the scheduler's sweeps
  }
}

/** Event names a trigger (null: goals only) and its goals listen to; the sweep-based triggers listen to none. */
export function eventNamesOf(t: Trigger | null, goals: Goal[]): string[] {
  const names = new Set<string>();
  if (t?.type === 'event_based') names.add(t.event);
  if (t?.type === 'health_score') names.add('health_score_changed');
  if (t?.type === 'milestone') {
    names.add('lifecycle_stage_changed');
    if (!isStageMilestone(t.milestone_name)) names.add(t.milestone_name);
  }
  for (const g of goals) {
    if ('event' in g) names.add(g.event);
    else if ('health_above' in g) names.add('health_score_changed');
    else names.add('lifecycle_stage_changed');
  }
  return [...names];
}

export interface EnrolmentRef {
  workflow_id: string;
  enrollment_id: string;
  subject_kind: string;
  client_id: string;
  contact_id: string | null;
}

/** Whether this event, recorded after the enrolment began, reaches one of its goals; returns the goal's description. */
export function goalReachedBy(goals: Goal[], ev: CustomerEvent, e: EnrolmentRef): string | undefined {
  if (ev.client_id !== e.client_id) return undefined;
  // A contact's enrolment counts its own events and the account's; a client's counts any of its contacts'.
  if (e.subject_kind === 'contact' && ev.contact_id && ev.contact_id !== e.contact_id) return undefined;
  for (const g of goals) {
    if ('event' in g) {
      if (ev.name !== g.event || !matchesProperties(ev.properties, g.properties)) continue;
      if (g.of_this_workflow && !String(ev.properties.outbox_key ?? '').startsWith(`${e.workflow_id}:${e.enrollment_id}:`)) continue;
      return `${g.event} recorded`;
    }
    if ('health_above' in g) {
      if (ev.name === 'health_score_changed' && typeof ev.properties.to === 'number' && ev.properties.to > g.health_above) return `health score above ${g.health_above}`;
      continue;
    }
    if (ev.name === 'lifecycle_stage_changed' && ev.properties.to === g.lifecycle_stage) return `lifecycle stage ${g.lifecycle_stage}`;
  }
  return undefined;
}

/** Goals that are a state of the client now (health, lifecycle), checked before each step. */
export function stateGoalReached(goals: Goal[], client: { health_score: number | null; lifecycle_stage: string }): string | undefined {
  for (const g of goals) {
    if ('health_above' in g && client.health_score !== null && client.health_score > g.health_above) return `health score above ${g.health_above}`;
    if ('lifecycle_stage' in g && client.lifecycle_stage === g.lifecycle_stage) return `lifecycle stage ${g.lifecycle_stage}`;
  }
  return undefined;
}
