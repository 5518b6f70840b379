import type { Insertable, Kysely } from 'kysely';
import { invalidInput } from '../result.js';
import { prepared } from './prepared.js';
import type { Database, TimelineTable } from './schema.js';

/** One timeline entry, minus the roster ids. */
export interface ActivityInput {
  type: string;
  channel: string;
  actor?: string;
  summary: string;
  outcome: 'success' | 'failed' | 'unknown' | 'skipped';
  provider_ids?: Record<string, string>;
  data?: Record<string, unknown>;
}

export type TimelineInput = ActivityInput & {
  client_id: string;
  contact_id?: string | null;
  /** When it happened, if not now (an inbound provider event carries its own time). */
  occurred_at?: string;
};

/** 10 columns a row: 10,000 parameters, under SQLite's 32,766 and PostgreSQL's 65,535. */
const CHUNK = 1000;

const COLUMNS = ['client_id', 'contact_id', 'occurred_at', 'type', 'channel', 'actor', 'summary', 'outcome', 'provider_ids', 'data'] as const;

/** One insert of several entries, given column by column (every settled group of messages writes one). */
const insertEntries = prepared(
  [] as const,
  (db, p) => db.insertInto('timeline').values(p.client_id.map((_, j) => Object.fromEntries(COLUMNS.map((c) => [c, p[c][j]])) as unknown as Insertable<TimelineTable>)),
  COLUMNS,
);

export interface TimelineEntry {
  entry_id: number;
  client_id: string;
  contact_id: string | null;
  occurred_at: string;
  type: string;
  channel: string;
  actor: string | null;
  summary: string;
  outcome: string;
  provider_ids: Record<string, string>;
  data: Record<string, unknown>;
}

export interface TimelineFilter {
  client_id: string;
  types?: string[];
  channels?: string[];
  since?: string;
  until?: string;
  contact_id?: string;
}

/** The append-only record of everything that happened to a client or contact through this server. */
export class TimelineRepository {
  constructor(private readonly db: Kysely<Database>) {}

  async append(db: Kysely<Database>, e: TimelineInput): Promise<void> {
    await this.appendMany(db, [e]);
  }

  /** Many entries in few statements (settled deliveries, inbound webhook batches). */
  async appendMany(db: Kysely<Database>, entries: TimelineInput[], now = new Date().toISOString()): Promise<void> {
    for (let i = 0; i < entries.length; i += CHUNK) {
      const part = entries.slice(i, i + CHUNK);
      await insertEntries(db, {
        client_id: part.map((e) => e.client_id),
        contact_id: part.map((e) => e.contact_id ?? null),
        occurred_at: part.map((e) => e.occurred_at ?? now),
        type: part.map((e) => e.type),
        channel: part.map((e) => e.channel),
        actor: part.map((e) => e.actor ?? null),
        summary: part.map((e) => e.summary),
        outcome: part.map((e) => e.outcome),
        provider_ids: part.map((e) => JSON.stringify(e.provider_ids ?? {})),
        data: part.map((e) => JSON.stringify(e.data ?? {})),
      });
    }
  }

  /** Newest first; `cursor` is the entry_id to continue below. */
  async list(f: TimelineFilter, limit: number, cursor?: string): Promise<{ entries: TimelineEntry[]; next_cursor?: string }> {
    let q = this.db.selectFrom('timeline').selectAll().where('client_id', '=', f.client_id);
    if (f.types?.length) q = q.where('type', 'in', f.types);
    if (f.channels?.length) q = q.where('channel', 'in', f.channels);
    if (f.contact_id) q = q.where('contact_id', '=', f.contact_id);
    if (f.since) q = q.where('occurred_at', '>=', f.since);
    if (f.until) q = q.where('occurred_at', '<=', f.until);
    if (cursor) {
      // An entry id as this server writes it: digits only, within the safe integer range of both databases.
      const id = /^\d{1,15}$/.test(cursor) ? Number(cursor) : NaN;
      if (!Number.isSafeInteger(id)) throw invalidInput('cursor is not one this server returned; call again without it.', { field: 'cursor' });
      q = q.where('entry_id', '<', id);
    }
    const rows = await q.orderBy('entry_id', 'desc').limit(limit + 1).execute();
    const entries = rows.slice(0, limit).map((r) => ({
      ...r,
      entry_id: Number(r.entry_id),
      provider_ids: JSON.parse(r.provider_ids) as Record<string, string>,
      data: JSON.parse(r.data) as Record<string, unknown>,
    }));
    const last = entries[entries.length - 1];
    return { entries, next_cursor: rows.length > limit && last ? String(last.entry_id) : undefined };
  }
}
