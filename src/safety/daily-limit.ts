import { sql, type Kysely } from 'kysely';
import type { Database } from '../store/schema.js';

/**
 * CS_MCP_DAILY_SEND_LIMIT: messages per UTC day across campaigns, automations and direct sends, shared
 * by every instance on the database. A message takes its place with one conditional UPDATE, so two
 * instances can never both take the last place. A send that provably did not go out gives it back.
 */

export const utcDay = (ms: number) => new Date(ms).toISOString().slice(0, 10);

/** Start of the next UTC day, in epoch ms. */
export function nextUtcDay(ms: number): number {
  const d = new Date(ms);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate() + 1);
}

export type Reservation = { ok: true; day: string } | { ok: false; day: string; remaining: number; resetsAt: number };

export class DailySendLimit {
  /** `limit` 0: no limit (nothing is counted, nothing refused). */
  constructor(readonly limit: number) {}

  get enabled(): boolean {
    return this.limit > 0;
  }

  /** Takes `n` places today, all or none. Run it inside the transaction that commits the send. */
  async reserve(db: Kysely<Database>, n: number, now = Date.now()): Promise<Reservation> {
    const day = utcDay(now);
    if (!this.enabled || n <= 0) return { ok: true, day };
    await db.insertInto('send_counters').values({ day, sent: 0 }).onConflict((oc) => oc.column('day').doNothing()).execute();
    const r = await db
      .updateTable('send_counters')
      .set({ sent: sql`sent + ${n}` })
      .where('day', '=', day)
      .where(sql<boolean>`sent + ${n} <= ${this.limit}`)
      .executeTakeFirst();
    if (Number(r.numUpdatedRows) === 1) return { ok: true, day };
    const used = await this.used(db, now);
    return { ok: false, day, remaining: Math.max(0, this.limit - used), resetsAt: nextUtcDay(now) };
  }

  /** Gives back places a send did not use (it provably did not go out). */
  async release(db: Kysely<Database>, n: number, day: string): Promise<void> {
    if (!this.enabled || n <= 0) return;
    await db.updateTable('send_counters').set({ sent: sql`case when sent >= ${n} then sent - ${n} else 0 end` }).where('day', '=', day).execute();
  }

  async used(db: Kysely<Database>, now = Date.now()): Promise<number> {
    const row = await db.selectFrom('send_counters').select('sent').where('day', '=', utcDay(now)).executeTakeFirst();
    return Number(row?.sent ?? 0);
  }
}
