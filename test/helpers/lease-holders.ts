import { sql, type Kysely } from 'kysely';
import { APPLICATION_NAME } from '../../src/store/index.js';
import type { Database } from '../../src/store/schema.js';
import { until } from './until.js';

/**
 * For the kill drills: the process id of the dispatcher holding the most unsettled rows of a campaign
 * (a lease owner is named `dispatcher-<pid>-<uuid>`), or undefined when nobody holds any.
 */
export async function busiestHolderPid(db: Kysely<Database>, campaignId: string): Promise<number | undefined> {
  const owners = await db
    .selectFrom('outbox')
    .select(['lease_owner', (eb) => eb.fn.countAll<number>().as('n')])
    .where('source_id', '=', campaignId)
    .where('state', 'in', ['queued', 'sending'])
    .where('lease_owner', 'is not', null)
    .groupBy('lease_owner')
    .execute();
  const busiest = owners.sort((a, b) => Number(b.n) - Number(a.n))[0];
  const pid = busiest && /^dispatcher-(\d+)-/.exec(busiest.lease_owner!)?.[1];
  return pid ? Number(pid) : undefined;
}

/** The rows of a campaign a process holds (leased, not yet settled). */
export function heldBy(db: Kysely<Database>, campaignId: string, pid: number) {
  return db.selectFrom('outbox').select(['outbox_id', 'state']).where('source_id', '=', campaignId).where('lease_owner', 'like', `dispatcher-${pid}-%`).where('state', 'in', ['queued', 'sending']).execute();
}

/**
 * For the kill drills, right after a SIGKILL: what the dead process held of a campaign. Read at once,
 * and again once its database sessions are gone: a commit it sent just before dying lands by then,
 * and may have marked a queued row `sending`, or settled a `sending` row whose answer it had (that
 * row is recorded, not in doubt). What is `sending` once the sessions are gone stays so until its
 * lease runs out and it becomes `unknown`.
 */
export async function heldAtDeath(db: Kysely<Database>, campaignId: string, pid: number): Promise<{ queued: number[]; midSend: number[] }> {
  const read = () => heldBy(db, campaignId, pid);
  const atDeath = await read();
  const sessions = sql<{ n: number }>`select count(*)::int as n from pg_stat_activity where application_name = ${`${APPLICATION_NAME}/${pid}`}`;
  await until(() => sessions.execute(db), (r) => r.rows[0]!.n === 0, { message: "the dead process's database sessions closed" });
  const after = await read();
  const seenSending = [...new Set([...atDeath, ...after].filter((r) => r.state === 'sending').map((r) => Number(r.outbox_id)))];
  // Their state now, whoever holds them: a row its last commit settled is neither sending nor unknown.
  const now = seenSending.length ? await db.selectFrom('outbox').select(['outbox_id', 'state']).where('outbox_id', 'in', seenSending).execute() : [];
  const midSend = now.filter((r) => r.state === 'sending' || r.state === 'unknown').map((r) => Number(r.outbox_id)).sort((a, b) => a - b);
  return { queued: atDeath.filter((r) => r.state === 'queued').map((r) => Number(r.outbox_id)), midSend };
}
