import { sql, type Kysely } from 'kysely';
import { isPostgres } from '../../store/migrations/dialect.js';
import type { Database } from '../../store/schema.js';
import { matchingClients, type AudienceClient, type Targeting } from '../audience.js';
import type { AudienceSpec, WorkflowDefinition } from './definition.js';
import type { Candidate } from './repository.js';
import { crosses, NON_ACTIVITY_EVENTS, type Subject } from './triggers.js';

/**
 * The state-based triggers, evaluated against the roster and the event log at one moment: who is
 * past a health threshold or at a lifecycle stage, whose renewal falls in the window, who has been
 * inactive for long enough, whose usage is past a threshold. The scheduler's sweeps turn changes into
 * occurrences; activation uses the same answers to enrol (enroll_existing) or to remember them as
 * already seen; previews show them as "who would enter now".
 */

const DAY = 86_400_000;
const CHUNK = 500;
/** A renewal reached while nothing was running still fires if it is at most this many days old. */
export const RENEWAL_REACHED_GRACE_DAYS = 7;

export function targetingOf(a: AudienceSpec): Targeting {
  return { tier: a.tier, segment: a.segment, lifecycle_stages: a.lifecycle_stage, health_min: a.health_min, health_max: a.health_max };
}

const clientSubject = (c: { client_id: string }): Subject => ({ kind: 'client', client_id: c.client_id, contact_id: null });
const utcDate = (ms: number) => new Date(ms).toISOString().slice(0, 10);

export interface StateOccurrence {
  subject: Subject;
  /** Identifies the occurrence: the same state seen twice is the same occurrence. */
  occurrence: string;
  /** Shown in previews: who it is. */
  label: string;
}

/** Who is past the trigger's condition right now (health, milestone, renewals, inactivity). Empty for the others. */
export async function currentOccurrences(db: Kysely<Database>, def: WorkflowDefinition, now = Date.now()): Promise<StateOccurrence[]> {
  const t = def.trigger;
  switch (t.type) {
    case 'health_score':
    case 'milestone': {
      const { clients } = await matchingClients(db, targetingOf(def.audience));
      const past =
        t.type === 'health_score'
          ? clients.filter((c) => crosses(null, c.health_score === null ? null : Number(c.health_score), t.threshold, t.direction))
          : clients.filter((c) => c.lifecycle_stage === t.milestone_name);
      return past.map((c) => ({ subject: clientSubject(c), occurrence: 'existing', label: c.name }));
    }
    case 'contract_event':
      return renewals(db, def, now);
    case 'behavior_based':
      return inactivity(db, def, now);
    default: // usage (the evaluator also needs every client's side), time, event and custom triggers
      return [];
  }
}

/** Clients whose renewal date is in the trigger's window today; one occurrence per renewal date. */
export async function renewals(db: Kysely<Database>, def: WorkflowDefinition, now = Date.now()): Promise<StateOccurrence[]> {
  const t = def.trigger;
  if (t.type !== 'contract_event') return [];
  const today = utcDate(now);
  const [from, to] =
    t.event_type === 'renewal_upcoming' ? [today, utcDate(now + (t.days_before ?? 0) * DAY)] : [utcDate(now - RENEWAL_REACHED_GRACE_DAYS * DAY), today];
  const { clients } = await matchingClients(db, targetingOf(def.audience));
  return clients
    .filter((c) => c.renewal_date !== null && c.renewal_date >= from && c.renewal_date <= to)
    .map((c) => ({ subject: clientSubject(c), occurrence: `renewal:${c.renewal_date}`, label: `${c.name} (renews ${c.renewal_date})` }));
}

/**
 * Subjects with no activity (any recorded customer event but our own sends' receipts, roster changes
 * and automations' own events) for the trigger's days. One occurrence per quiet stretch: it is named
 * by the last activity, so new activity and a new stretch fire again.
 */
export async function inactivity(db: Kysely<Database>, def: WorkflowDefinition, now = Date.now()): Promise<StateOccurrence[]> {
  const t = def.trigger;
  if (t.type !== 'behavior_based') return [];
  const cutoff = new Date(now - t.days * DAY).toISOString();
  const { clients } = await matchingClients(db, targetingOf(def.audience));
  const column = t.level === 'contact' ? 'contact_id' : 'client_id';
  const activity = (q: ReturnType<typeof base>) => q.where('name', 'not in', [...NON_ACTIVITY_EVENTS]).where('source', '!=', 'automation');
  const base = () => db.selectFrom('customer_events');
  const recent = new Set(
    (await activity(base()).select(column).distinct().where('occurred_at', '>=', cutoff).where(column, 'is not', null).execute()).map((r) => String((r as Record<string, unknown>)[column])),
  );
  // The quiet ones, with when they became known (a subject never active counts from its creation).
  const quiet: Array<{ id: string; client: AudienceClient; since: string; label: string; subject: Subject }> = [];
  if (t.level === 'client') {
    for (const c of clients) if (!recent.has(c.client_id) && c.created_at <= cutoff) quiet.push({ id: c.client_id, client: c, since: c.created_at, label: c.name, subject: clientSubject(c) });
  } else {
    const byId = new Map(clients.map((c) => [c.client_id, c]));
    const roles = def.audience.contact_roles ? new Set(def.audience.contact_roles) : undefined;
    for (let i = 0; i < clients.length; i += CHUNK) {
      const ids = clients.slice(i, i + CHUNK).map((c) => c.client_id);
      const contacts = await db.selectFrom('contacts').select(['contact_id', 'client_id', 'email', 'role', 'created_at']).where('client_id', 'in', ids).execute();
      for (const c of contacts) {
        if (recent.has(c.contact_id) || c.created_at > cutoff || (roles && !roles.has((c.role ?? '').toLowerCase()))) continue;
        quiet.push({ id: c.contact_id, client: byId.get(c.client_id)!, since: c.created_at, label: c.email, subject: { kind: 'contact', client_id: c.client_id, contact_id: c.contact_id } });
      }
    }
  }
  const last = new Map<string, string>();
  for (let i = 0; i < quiet.length; i += CHUNK) {
    const ids = quiet.slice(i, i + CHUNK).map((q) => q.id);
    const rows = await activity(base())
      .select([column, (eb) => eb.fn.max('occurred_at').as('at')])
      .where(column, 'in', ids)
      .groupBy(column)
      .execute();
    for (const r of rows) last.set(String((r as Record<string, unknown>)[column]), String(r.at));
  }
  return quiet.map((q) => {
    const at = last.get(q.id);
    return { subject: q.subject, occurrence: at ? `inactive:${at}` : `inactive:since:${q.since}`, label: q.label };
  });
}

/** Each audience client's usage in the rolling window (events counted, or a property summed) and whether it is past the threshold. */
export async function usage(db: Kysely<Database>, def: WorkflowDefinition, now = Date.now()): Promise<Array<{ subject: Subject; value: number; past: boolean; label: string }>> {
  const t = def.trigger;
  if (t.type !== 'usage_pattern') return [];
  const since = new Date(now - t.window_days * DAY).toISOString();
  const { clients } = await matchingClients(db, targetingOf(def.audience));
  const measure = t.property
    ? isPostgres(db)
      ? sql<number>`sum(case when (properties::json ->> ${t.property}) ~ '^-?[0-9]+(\\.[0-9]+)?$' then (properties::json ->> ${t.property})::numeric else 0 end)`
      : sql<number>`sum(coalesce(json_extract(properties, ${`$.${t.property}`}), 0))`
    : sql<number>`count(*)`;
  const rows = await db
    .selectFrom('customer_events')
    .select(['client_id', measure.as('v')])
    .where('name', '=', t.metric)
    .where('occurred_at', '>=', since)
    .where('client_id', 'is not', null)
    .groupBy('client_id')
    .execute();
  const values = new Map(rows.map((r) => [String(r.client_id), Number(r.v) || 0]));
  return clients.map((c) => {
    const value = values.get(c.client_id) ?? 0;
    return { subject: clientSubject(c), value, past: t.direction === 'below' ? value < t.threshold : value > t.threshold, label: `${c.name} (${value})` };
  });
}

/** A state occurrence as an enrolment candidate. */
export function candidateOf(o: StateOccurrence, occurrencePrefix: string, firedAt: string, startEventId: number): Candidate {
  return { ...o.subject, occurrence: `${occurrencePrefix}${o.occurrence}`, context: { fired_at: firedAt }, depth: 0, start_event_id: startEventId };
}
