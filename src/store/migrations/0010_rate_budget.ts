import type { Kysely } from 'kysely';

/**
 * Processes that send with the same provider account meet here to share its rate budget: each one
 * sending notes itself (seen_at, UTC ISO text) and counts the others seen in the last moments.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('rate_budget_peers')
    .addColumn('budget_key', 'text', (c) => c.notNull())
    .addColumn('instance_id', 'text', (c) => c.notNull())
    .addColumn('seen_at', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('rate_budget_peers_pk', ['budget_key', 'instance_id'])
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('rate_budget_peers').execute();
}
