import { createHash, randomUUID } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { Logger } from '../log.js';
import type { Database } from '../store/schema.js';

/** A process counts as sharing a budget while it has sent within this long. */
const ACTIVE_MS = 2_000;
/** How often a sending process notes itself and counts the others. */
const BEAT_MS = 500;
/** How often a process clears the rows of processes long gone. */
const PRUNE_EVERY_MS = 60_000;

/**
 * How many processes are sending with one provider account right now, learned through the database
 * they already share (no new service). A process notes itself while it sends; the pacer divides what
 * the provider reports as left by the count. One that stops sending drops out within ACTIVE_MS, and
 * the others take up its share.
 */
export class BudgetPeers {
  private readonly instanceId = randomUUID();
  private peers = 1;
  private lastActiveMs = 0;
  private lastBeatMs = 0;
  private lastPruneMs = 0;
  private beating?: Promise<void>;
  private closed = false;

  constructor(
    private readonly db: Kysely<Database>,
    /** The provider and a digest of the credential: different accounts have different budgets. */
    private readonly budgetKey: string,
    private readonly log: Logger,
  ) {}

  static key(provider: string, credential: string): string {
    return `${provider}:${createHash('sha256').update(credential).digest('hex').slice(0, 16)}`;
  }

  /** Processes sharing the budget, this one included (≥ 1). */
  count(): number {
    return this.peers;
  }

  /** Called on every request: keeps this process counted while it sends. */
  touch(): void {
    const now = Date.now();
    this.lastActiveMs = now;
    if (this.closed || this.beating || now - this.lastBeatMs < BEAT_MS) return;
    this.lastBeatMs = now;
    this.beating = this.beat(now).finally(() => (this.beating = undefined));
  }

  private async beat(now: number): Promise<void> {
    try {
      const seen = new Date(now).toISOString();
      await this.db
        .insertInto('rate_budget_peers')
        .values({ budget_key: this.budgetKey, instance_id: this.instanceId, seen_at: seen })
        .onConflict((oc) => oc.columns(['budget_key', 'instance_id']).doUpdateSet({ seen_at: seen }))
        .execute();
      const since = new Date(now - ACTIVE_MS).toISOString();
      const row = await this.db
        .selectFrom('rate_budget_peers')
        .select((eb) => eb.fn.countAll<number | string>().as('n'))
        .where('budget_key', '=', this.budgetKey)
        .where('seen_at', '>', since)
        .executeTakeFirst();
      this.peers = Math.max(1, Number(row?.n ?? 1));
      // Rows of processes long gone: keep the table to the living (now and then, not on every beat).
      if (now - this.lastPruneMs >= PRUNE_EVERY_MS) {
        this.lastPruneMs = now;
        await this.db.deleteFrom('rate_budget_peers').where('budget_key', '=', this.budgetKey).where('seen_at', '<', new Date(now - 60 * ACTIVE_MS).toISOString()).execute();
      }
    } catch (err) {
      // Sharing is an optimisation of pacing: alone, the pacer still follows the provider's counts.
      this.log.debug({ err }, 'could not count the processes sharing a rate budget');
    }
  }

  /** Leaves the count at once (a clean stop), so the others need not wait for this one to go stale. */
  async close(): Promise<void> {
    this.closed = true;
    await this.beating;
    await this.db
      .deleteFrom('rate_budget_peers')
      .where('budget_key', '=', this.budgetKey)
      .where('instance_id', '=', this.instanceId)
      .execute()
      .catch(() => undefined);
  }
}
