import { sql, type Kysely } from 'kysely';
import { prepared } from '../store/prepared.js';
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

/** The day's row created with `n`, or raised by `n` while that stays within `limit`: run for every group of messages admitted. */
const takePlaces = prepared(['day', 'n', 'limit'] as const, (db, p) =>
  db
    .insertInto('send_counters')
    .values({ day: p.day, sent: p.n as unknown as number })
    .onConflict((oc) => oc.column('day').doUpdateSet({ sent: sql`send_counters.sent + ${p.n}` }).where(sql<boolean>`send_counters.sent + ${p.n} <= ${p.limit}`)),
);

export type Reservation = { ok: true; day: string } | { ok: false; day: string; remaining: number; resetsAt: number };

export class DailySendLimit {
  /** `limit` 0: no limit (nothing is counted, nothing refused). */
  constructor(readonly limit: number) {}

  get enabled(): boolean {
    return this.limit > 0;
  }

  /**
   * Takes `n` places today, all or none. Run it inside the transaction that commits the send. One
   * statement: the day's row is created with `n` or raised by `n`, only while that stays within the limit.
   */
  async reserve(db: Kysely<Database>, n: number, now = Date.now()): Promise<Reservation> {
    const day = utcDay(now);
    if (!this.enabled || n <= 0) return { ok: true, day };
    if (n <= this.limit) {
      const r = await takePlaces(db, { day, n, limit: this.limit });
      if (Number(r.numAffectedRows ?? 0) === 1) return { ok: true, day };
    }
    const used = await this.used(db, now);
    return { ok: false, day, remaining: Math.max(0, this.limit - used), resetsAt: nextUtcDay(now) };
  }

  /**
   * Takes as many of `n` places as are left today (a batch: the rest of it waits). One conditional
   * UPDATE per try; a concurrent taker between the read and the update only makes it try again.
   */
  async reserveUpTo(db: Kysely<Database>, n: number, now = Date.now()): Promise<{ day: string; granted: number; resetsAt: number }> {
    const day = utcDay(now);
    const resetsAt = nextUtcDay(now);
    if (!this.enabled || n <= 0) return { day, granted: n, resetsAt };
    const whole = await this.reserve(db, n, now);
    if (whole.ok) return { day, granted: n, resetsAt };
    for (let tries = 0; tries < 5; tries++) {
      const left = Math.min(n, this.limit - (await this.used(db, now)));
      if (left <= 0) return { day, granted: 0, resetsAt };
      if ((await this.reserve(db, left, now)).ok) return { day, granted: left, resetsAt };
    }
    return { day, granted: 0, resetsAt };
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
