import type { Kysely } from 'kysely';
import type { Database } from '../../src/store/schema.js';

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
