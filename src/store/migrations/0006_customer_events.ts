import type { Kysely } from 'kysely';
import { autoIdColumn } from './dialect.js';

/**
 * What happened to a customer, as one ordered log: events recorded by tools (record_customer_event,
 * intercom_track_event, mixpanel_*), changes of the roster that matter (health score, lifecycle stage,
 * renewal date), and verified provider webhooks. Automations read it for triggers and goals.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('customer_events')
    .addColumn('event_id', 'integer', autoIdColumn(db))
    .addColumn('occurred_at', 'text', (c) => c.notNull())
    .addColumn('recorded_at', 'text', (c) => c.notNull())
    .addColumn('client_id', 'text')
    .addColumn('contact_id', 'text')
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('properties', 'text', (c) => c.notNull().defaultTo('{}'))
    .addColumn('source', 'text', (c) => c.notNull())
    .addColumn('source_ref', 'text')
    .addColumn('depth', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('dedup_key', 'text', (c) => c.unique())
    .execute();
  await db.schema.createIndex('customer_events_name_idx').on('customer_events').columns(['name', 'event_id']).execute();
  await db.schema.createIndex('customer_events_contact_idx').on('customer_events').columns(['contact_id', 'occurred_at']).execute();
  await db.schema.createIndex('customer_events_client_idx').on('customer_events').columns(['client_id', 'occurred_at']).execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('customer_events').ifExists().execute();
}
