import type { Kysely } from 'kysely';
import { autoIdColumn } from './dialect.js';

/**
 * Mixpanel events accepted and not yet delivered: in the database, so a kill loses none. One row per
 * event, de-duplicated by `dedup_key` (its $insert_id, with the event name, time and distinct_id that
 * Mixpanel de-duplicates together); `seq` keeps the order they were tracked in.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('mixpanel_buffer')
    .addColumn('seq', 'integer', autoIdColumn(db))
    .addColumn('dedup_key', 'text', (c) => c.notNull().unique())
    .addColumn('insert_id', 'text', (c) => c.notNull())
    .addColumn('event', 'text', (c) => c.notNull())
    .addColumn('bytes', 'integer', (c) => c.notNull())
    .addColumn('created_at', 'text', (c) => c.notNull())
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('mixpanel_buffer').ifExists().execute();
}
