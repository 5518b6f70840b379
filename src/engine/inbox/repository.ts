import { sql, type Kysely, type Selectable } from 'kysely';
import { invalidInput } from '../../result.js';
import type { Database, InboxEventsTable } from '../../store/schema.js';
import type { Endpoint, InboxRecord } from './parse.js';

/**
 * The inbox table: verified events stored once (dedup_key) before the request is answered, then
 * claimed under a lease by a processor, settled in the processor's transaction. States:
 * pending → processed | unmatched | ignored, or → failed after the last retry (kept, visible).
 */

export type InboxRow = Selectable<InboxEventsTable>;
export const INBOX_STATES = ['pending', 'processed', 'unmatched', 'ignored', 'failed'] as const;
export type InboxState = (typeof INBOX_STATES)[number];

const iso = (ms: number) => new Date(ms).toISOString();
/** 10 columns a row: 10,000 parameters, under SQLite's 32,766 and PostgreSQL's 65,535. */
const INSERT_CHUNK = 1000;

export class LeaseLost extends Error {
  constructor() {
    super('another processor took these inbox events (lease expired)');
  }
}

export class InboxRepository {
  constructor(
    readonly db: Kysely<Database>,
    readonly dialect: 'sqlite' | 'postgres',
  ) {}

  /**
   * Stores a verified request's events and notes the endpoint as verified, in one transaction: when it
   * returns, the events survive a crash. An event already stored (a provider's retry, a replay) is skipped.
   */
  async store(endpoint: Endpoint, records: InboxRecord[], now = Date.now()): Promise<{ stored: number; duplicates: number }> {
    const at = iso(now);
    return this.db.transaction().execute(async (trx) => {
      let stored = 0;
      const unique = [...new Map(records.map((r) => [r.dedup_key, r])).values()];
      for (let i = 0; i < unique.length; i += INSERT_CHUNK) {
        const rows = unique.slice(i, i + INSERT_CHUNK).map((r) => ({ ...r, received_at: at, state: 'pending', attempts: 0, next_attempt_at: at }));
        const res = await trx.insertInto('inbox_events').values(rows).onConflict((oc) => oc.column('dedup_key').doNothing()).executeTakeFirst();
        stored += Number(res.numInsertedOrUpdatedRows ?? 0);
      }
      await this.noteVerified(trx, endpoint, at);
      return { stored, duplicates: records.length - stored };
    });
  }

  /** A verified request (also one with nothing to store, like Intercom's ping). */
  async noteVerified(db: Kysely<Database>, endpoint: Endpoint, at: string): Promise<void> {
    await db
      .insertInto('webhook_endpoints')
      .values({ endpoint, last_verified_at: at, verified_requests: 1 })
      .onConflict((oc) => oc.column('endpoint').doUpdateSet({ last_verified_at: at, verified_requests: sql`webhook_endpoints.verified_requests + 1` }))
      .execute();
  }

  /** Leases up to `limit` due events, oldest first; several processes take different ones. */
  async claim(owner: string, limit: number, leaseMs: number, now = Date.now()): Promise<InboxRow[]> {
    const at = iso(now);
    let due = this.db
      .selectFrom('inbox_events')
      .select('inbox_id')
      .where('state', '=', 'pending')
      .where('next_attempt_at', '<=', at)
      .where((eb) => eb.or([eb('lease_until', 'is', null), eb('lease_until', '<', at)]))
      .orderBy('next_attempt_at')
      .orderBy('inbox_id')
      .limit(limit);
    if (this.dialect === 'postgres') due = due.forUpdate().skipLocked();
    const rows = await this.db
      .updateTable('inbox_events')
      .set({ lease_owner: owner, lease_until: iso(now + leaseMs) })
      .where('inbox_id', 'in', due)
      .returningAll()
      .execute();
    return rows.sort((a, b) => (a.next_attempt_at < b.next_attempt_at ? -1 : a.next_attempt_at > b.next_attempt_at ? 1 : a.inbox_id - b.inbox_id));
  }

  /**
   * Settles claimed events inside the processor's transaction; throws LeaseLost (rolling the whole
   * transaction back) if any of them is no longer this owner's, so no event's effects apply twice.
   */
  async settle(db: Kysely<Database>, owner: string, outcomes: Array<{ ids: number[]; state: InboxState; note: string }>, now = Date.now()): Promise<void> {
    for (const o of outcomes) {
      for (let i = 0; i < o.ids.length; i += INSERT_CHUNK) {
        const ids = o.ids.slice(i, i + INSERT_CHUNK);
        const r = await db
          .updateTable('inbox_events')
          .set({ state: o.state, note: o.note, processed_at: iso(now), lease_owner: null, lease_until: null, last_error: null })
          .where('inbox_id', 'in', ids)
          .where('lease_owner', '=', owner)
          .where('state', '=', 'pending')
          .executeTakeFirst();
        if (Number(r.numUpdatedRows) !== ids.length) throw new LeaseLost();
      }
    }
  }

  /** Processing failed: try again at `retryAt`, or give up (`failed`, kept and listed) after the last attempt. */
  async retryLater(row: InboxRow, owner: string, error: string, retryAt: number | undefined, now = Date.now()): Promise<void> {
    await this.db
      .updateTable('inbox_events')
      .set({
        attempts: row.attempts + 1,
        last_error: error.slice(0, 2000),
        lease_owner: null,
        lease_until: null,
        ...(retryAt === undefined ? { state: 'failed', processed_at: iso(now), note: 'processing failed on every attempt; see last_error' } : { next_attempt_at: iso(retryAt) }),
      })
      .where('inbox_id', '=', row.inbox_id)
      .where('lease_owner', '=', owner)
      .where('state', '=', 'pending')
      .execute();
  }

  /** When the next pending event is due (undefined: none). */
  async nextDueAt(): Promise<number | undefined> {
    const r = await this.db.selectFrom('inbox_events').select((eb) => eb.fn.min('next_attempt_at').as('next')).where('state', '=', 'pending').executeTakeFirst();
    return r?.next ? Date.parse(String(r.next)) : undefined;
  }

  async list(
    f: { provider?: Endpoint; states?: InboxState[]; event_type?: string; email?: string; since?: string },
    limit: number,
    cursor?: string,
  ): Promise<{ events: InboxRow[]; next_cursor?: string }> {
    let q = this.db.selectFrom('inbox_events').selectAll();
    if (f.provider) q = q.where('provider', '=', f.provider);
    if (f.states?.length) q = q.where('state', 'in', f.states);
    if (f.event_type) q = q.where('event_type', '=', f.event_type);
    if (f.email) q = q.where('email', '=', f.email.trim().toLowerCase());
    if (f.since) q = q.where('received_at', '>=', f.since);
    if (cursor !== undefined) {
      if (!/^\d{1,15}$/.test(cursor)) throw invalidInput('cursor is not one this server returned; call again without it.', { field: 'cursor' });
      q = q.where('inbox_id', '<', Number(cursor));
    }
    const rows = await q.orderBy('inbox_id', 'desc').limit(limit + 1).execute();
    const events = rows.slice(0, limit).map((r) => ({ ...r, inbox_id: Number(r.inbox_id), attempts: Number(r.attempts) }));
    const last = events[events.length - 1];
    return { events, next_cursor: rows.length > limit && last ? String(last.inbox_id) : undefined };
  }

  /** Events per endpoint and state, for states that need attention (settled ones accumulate until pruned). */
  async backlog(): Promise<Array<{ provider: string; state: string; n: number }>> {
    const rows = await this.db
      .selectFrom('inbox_events')
      .select(['provider', 'state', (eb) => eb.fn.countAll<number | string>().as('n')])
      .where('state', 'in', ['pending', 'unmatched', 'failed'])
      .groupBy(['provider', 'state'])
      .execute();
    return rows.map((r) => ({ provider: r.provider, state: r.state, n: Number(r.n) }));
  }

  async endpoints(): Promise<Map<string, { last_verified_at: string; verified_requests: number }>> {
    const rows = await this.db.selectFrom('webhook_endpoints').selectAll().execute();
    return new Map(rows.map((r) => [r.endpoint, { last_verified_at: r.last_verified_at, verified_requests: Number(r.verified_requests) }]));
  }

  /**
   * Deletes settled events received before `before` (pending ones always stay). Ids grow with arrival,
   * so the first id received since `before` bounds the deletion; finding it reads from the oldest row on.
   */
  async prune(before: number): Promise<number> {
    const first = await this.db.selectFrom('inbox_events').select('inbox_id').where('received_at', '>=', iso(before)).orderBy('inbox_id').limit(1).executeTakeFirst();
    let q = this.db.deleteFrom('inbox_events').where('state', '!=', 'pending').where('received_at', '<', iso(before));
    if (first) q = q.where('inbox_id', '<', first.inbox_id);
    const r = await q.executeTakeFirst();
    return Number(r.numDeletedRows);
  }

}
