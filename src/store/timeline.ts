import type { Kysely } from 'kysely';
import { invalidInput } from '../result.js';
import type { Database } from './schema.js';

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

  async append(db: Kysely<Database>, e: ActivityInput & { client_id: string; contact_id?: string | null }): Promise<void> {
    await db
      .insertInto('timeline')
      .values({
        client_id: e.client_id,
        contact_id: e.contact_id ?? null,
        occurred_at: new Date().toISOString(),
        type: e.type,
        channel: e.channel,
        actor: e.actor ?? null,
        summary: e.summary,
        outcome: e.outcome,
        provider_ids: JSON.stringify(e.provider_ids ?? {}),
        data: JSON.stringify(e.data ?? {}),
      })
      .execute();
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
