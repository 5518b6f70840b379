import type { Kysely } from 'kysely';

/** Retention deletes the oldest rows first, a batch at a time: these find them without reading the table. */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.createIndex('timeline_occurred_idx').on('timeline').columns(['occurred_at', 'entry_id']).execute();
  await db.schema.createIndex('outbox_updated_idx').on('outbox').columns(['updated_at', 'outbox_id']).execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex('outbox_updated_idx').execute();
  await db.schema.dropIndex('timeline_occurred_idx').execute();
}
