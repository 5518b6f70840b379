import type { Kysely } from 'kysely';
import type { Database } from '../../store/schema.js';

/**
 * Action budgets: how many actions (messages queued, provider calls: notes, tags, events, tickets, Slack,
 * webhooks) one workflow, and all automations together, may take in a clock hour (UTC). Counted in the
 * database, one row per scope and hour, each taken with one conditional upsert inside the transaction that
 * records the step: several processes sharing the database count against the same budget, and a step that
 * does not happen (rolled back) takes nothing.
 */

export const ALL_AUTOMATIONS = '*';

export interface BudgetLimits {
  maxActionsPerWorkflowPerHour: number;
  maxActionsPerHour: number;
}

export type Taken = { ok: true } | { ok: false; scope: 'workflow' | 'all'; limit: number; hour: string };

export const hourOf = (now: number) => new Date(now).toISOString().slice(0, 13);

/** Thrown inside the step's transaction when the budget is spent: the transaction rolls back, nothing was taken. */
export class OverBudget extends Error {
  constructor(readonly taken: Extract<Taken, { ok: false }>) {
    super(`over the ${taken.scope === 'workflow' ? 'workflow' : 'all-automations'} action budget (${taken.limit} an hour)`);
  }
}

/** Takes `n` actions for the workflow in this hour; throws OverBudget (so the caller's transaction rolls back) when either budget would be exceeded. */
export async function takeActions(trx: Kysely<Database>, limits: BudgetLimits, workflowId: string, n: number, now = Date.now()): Promise<void> {
  if (n <= 0) return;
  const hour = hourOf(now);
  const scopes: Array<[string, number, 'workflow' | 'all']> = [
    [workflowId, limits.maxActionsPerWorkflowPerHour, 'workflow'],
    [ALL_AUTOMATIONS, limits.maxActionsPerHour, 'all'],
  ];
  for (const [scope, limit, kind] of scopes) {
    if (n > limit) throw new OverBudget({ ok: false, scope: kind, limit, hour });
    const row = await trx
      .insertInto('automation_budget')
      .values({ scope, hour, used: n })
      .onConflict((oc) =>
        oc
          .columns(['scope', 'hour'])
          .doUpdateSet((eb) => ({ used: eb('automation_budget.used', '+', n) }))
          .where('automation_budget.used', '<=', limit - n),
      )
      .returning('used')
      .executeTakeFirst();
    if (!row) throw new OverBudget({ ok: false, scope: kind, limit, hour });
  }
}

/** Actions used this hour: by all automations, and by each workflow that took any. */
export async function budgetUse(db: Kysely<Database>, now = Date.now()): Promise<{ hour: string; all: number; by_workflow: Record<string, number> }> {
  const hour = hourOf(now);
  const rows = await db.selectFrom('automation_budget').select(['scope', 'used']).where('hour', '=', hour).execute();
  const by = Object.fromEntries(rows.filter((r) => r.scope !== ALL_AUTOMATIONS).map((r) => [r.scope, Number(r.used)]));
  return { hour, all: Number(rows.find((r) => r.scope === ALL_AUTOMATIONS)?.used ?? 0), by_workflow: by };
}

/** Forgets hours long past (called now and then). */
export async function pruneBudget(db: Kysely<Database>, now = Date.now()): Promise<void> {
  await db.deleteFrom('automation_budget').where('hour', '<', hourOf(now - 2 * 3_600_000)).execute();
}
