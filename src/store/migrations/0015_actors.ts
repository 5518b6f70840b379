import type { Kysely } from 'kysely';

/**
 * Who did it, with sign-in: the signed-in person of each audited call (the token's subject, with name
 * or email when the token carries them), and who activated a workflow (its author is `created_by`).
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('audit_log').addColumn('actor', 'text').execute();
  await db.schema.alterTable('workflows').addColumn('activated_by', 'text').execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('audit_log').dropColumn('actor').execute();
  await db.schema.alterTable('workflows').dropColumn('activated_by').execute();
}
