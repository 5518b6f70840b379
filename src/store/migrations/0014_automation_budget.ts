import type { Kysely } from 'kysely';

/**
 * Automation budgets: actions (provider calls and messages) counted per workflow and for all automations
 * together (scope `*`), per clock hour, in one shared row each so every process on the database counts
 * against the same budget. A workflow that ran over it is paused with a reason (`runaway`).
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('automation_budget')
    .addColumn('scope', 'text', (c) => c.notNull())
    .addColumn('hour', 'text', (c) => c.notNull())
    .addColumn('used', 'integer', (c) => c.notNull())
    .addPrimaryKeyConstraint('automation_budget_pk', ['scope', 'hour'])
    .execute();
  await db.schema.alterTable('workflows').addColumn('pause_reason', 'text').execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('automation_budget').execute();
  await db.schema.alterTable('workflows').dropColumn('pause_reason').execute();
}
