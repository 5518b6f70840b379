import type { Kysely } from 'kysely';
import { invalidInput } from '../result.js';
import type { Database } from './schema.js';

/** One thing that happened to a contact or client. */
export interface CustomerEventInput {
  name: string;
  client_id?: string | null;
  contact_id?: string | null;
  properties?: Record<string, unknown>;
  /** ISO time; default now. */
  occurred_at?: string;
  source: string;
  source_ref?: string | null;
  depth?: number;
  /** Stored once per key (inbound provider events carry their own id). */
  dedup_key?: string | null;
}

export interface CustomerEvent {
  event_id: number;
  occurred_at: string;
  recorded_at: string;
  client_id: string | null;
  contact_id: string | null;
  name: string;
  properties: Record<string, unknown>;
  source: string;
  source_ref: string | null;
  depth: number;
  dedup_key: string | null;
}

const CHUNK = 400;

/**
 * The roster's own events: recorded only by the roster when a client's field changes (update_client_info,
 * the CSV import, an automation's update_health_score step). Health, lifecycle and renewal triggers and
 * goals read them as the client's state, so no tool, webhook or automation step may record them by name.
 */
export const ROSTER_EVENT_NAMES: ReadonlySet<string> = new Set(['health_score_changed', 'lifecycle_stage_changed', 'renewal_date_changed']);

/** Why a roster event name cannot be recorded by hand, in words a person can act on. */
export function rosterEventRefusal(name: string): string {
  return `"${name}" is reserved: it is recorded by the roster itself when a client's ${name.replace(/_changed$/, '').replace(/_/g, ' ')} changes, and automations read it as the client's state. Change the client with update_client_info, or record this under another name (e.g. "external_${name}").`;
}

/**
 * The ordered log of what happened to customers. Producers append (in their own transaction when the
 * event belongs with a change); consumers (automation triggers and goals) read by event_id.
 */
export class CustomerEventLog {
  constructor(private readonly db: Kysely<Database>) {}

  /**
   * Appends events; one whose dedup_key is already stored is skipped. Returns how many were stored.
   * The roster's own events (ROSTER_EVENT_NAMES) are refused unless the roster records them (`fromRoster`).
   */
  async record(db: Kysely<Database>, events: CustomerEventInput[], now = Date.now(), opts: { fromRoster?: boolean } = {}): Promise<number> {
    if (!opts.fromRoster) {
      const forged = events.find((e) => ROSTER_EVENT_NAMES.has(e.name));
      if (forged) throw invalidInput(rosterEventRefusal(forged.name), { field: 'event' });
    }
    let stored = 0;
    const recorded = new Date(now).toISOString();
    for (let i = 0; i < events.length; i += CHUNK) {
      const rows = events.slice(i, i + CHUNK).map((e) => ({
        occurred_at: e.occurred_at ?? recorded,
        recorded_at: recorded,
        client_id: e.client_id ?? null,
        contact_id: e.contact_id ?? null,
        name: e.name,
        properties: JSON.stringify(e.properties ?? {}),
        source: e.source,
        source_ref: e.source_ref ?? null,
        depth: e.depth ?? 0,
        dedup_key: e.dedup_key ?? null,
      }));
      const r = await db.insertInto('customer_events').values(rows).onConflict((oc) => oc.column('dedup_key').doNothing()).executeTakeFirst();
      stored += Number(r.numInsertedOrUpdatedRows ?? 0);
    }
    return stored;
  }

  /** Events after `afterId`, oldest first (a consumer's cursor); optionally of one client only. */
  async after(afterId: number, limit: number, names?: string[], clientId?: string): Promise<CustomerEvent[]> {
    let q = this.db.selectFrom('customer_events').selectAll().where('event_id', '>', afterId);
    if (names?.length) q = q.where('name', 'in', names);
    if (clientId) q = q.where('client_id', '=', clientId);
    const rows = await q.orderBy('event_id').limit(limit).execute();
    return rows.map(toEvent);
  }

  /** A contact's or client's events, newest first. */
  async list(f: { client_id?: string; contact_id?: string; names?: string[]; since?: string }, limit: number, cursor?: string): Promise<{ events: CustomerEvent[]; next_cursor?: string }> {
    let q = this.db.selectFrom('customer_events').selectAll();
    if (f.client_id) q = q.where('client_id', '=', f.client_id);
    if (f.contact_id) q = q.where('contact_id', '=', f.contact_id);
    if (f.names?.length) q = q.where('name', 'in', f.names);
    if (f.since) q = q.where('occurred_at', '>=', f.since);
    if (cursor !== undefined) {
      if (!/^\d{1,15}$/.test(cursor)) throw invalidInput('cursor is not one this server returned; call again without it.', { field: 'cursor' });
      q = q.where('event_id', '<', Number(cursor));
    }
    const rows = await q.orderBy('event_id', 'desc').limit(limit + 1).execute();
    const events = rows.slice(0, limit).map(toEvent);
    const last = events[events.length - 1];
    return { events, next_cursor: rows.length > limit && last ? String(last.event_id) : undefined };
  }
}

function toEvent(r: Record<string, unknown>): CustomerEvent {
  return {
    event_id: Number(r.event_id),
    occurred_at: String(r.occurred_at),
    recorded_at: String(r.recorded_at),
    client_id: (r.client_id as string | null) ?? null,
    contact_id: (r.contact_id as string | null) ?? null,
    name: String(r.name),
    properties: JSON.parse(String(r.properties)) as Record<string, unknown>,
    source: String(r.source),
    source_ref: (r.source_ref as string | null) ?? null,
    depth: Number(r.depth),
    dedup_key: (r.dedup_key as string | null) ?? null,
  };
}
