import type { Kysely } from 'kysely';
import { autoIdColumn } from './dialect.js';

/** Clients, their segments, their contacts, and the append-only timeline. */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('clients')
    .addColumn('client_id', 'text', (c) => c.primaryKey())
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('tier', 'text', (c) => c.notNull())
    .addColumn('lifecycle_stage', 'text', (c) => c.notNull())
    .addColumn('health_score', 'integer')
    .addColumn('mrr', 'double precision')
    .addColumn('renewal_date', 'text')
    .addColumn('owner_email', 'text')
    .addColumn('custom_attributes', 'text', (c) => c.notNull().defaultTo('{}'))
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('clients_tier_health_idx').on('clients').columns(['tier', 'health_score']).execute();
  await db.schema.createIndex('clients_health_idx').on('clients').column('health_score').execute();
  await db.schema.createIndex('clients_renewal_idx').on('clients').column('renewal_date').execute();
  await db.schema.createIndex('clients_name_idx').on('clients').columns(['name', 'client_id']).execute();

  await db.schema
    .createTable('client_segments')
    .addColumn('client_id', 'text', (c) => c.notNull().references('clients.client_id').onDelete('cascade'))
    .addColumn('segment', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('client_segments_pk', ['client_id', 'segment'])
    .execute();
  await db.schema.createIndex('client_segments_segment_idx').on('client_segments').columns(['segment', 'client_id']).execute();

  await db.schema
    .createTable('contacts')
    .addColumn('contact_id', 'text', (c) => c.primaryKey())
    .addColumn('client_id', 'text', (c) => c.notNull().references('clients.client_id').onDelete('cascade'))
    .addColumn('email', 'text', (c) => c.notNull())
    .addColumn('name', 'text')
    .addColumn('first_name', 'text')
    .addColumn('role', 'text')
    .addColumn('phone', 'text')
    .addColumn('external_user_id', 'text')
    .addColumn('intercom_contact_id', 'text')
    .addColumn('unsubscribed', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('unsubscribed_at', 'text')
    .addColumn('unsubscribe_source', 'text')
    .addColumn('unsubscribe_reason', 'text')
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .addUniqueConstraint('contacts_client_email_uq', ['client_id', 'email'])
    .execute();
  await db.schema.createIndex('contacts_email_idx').on('contacts').column('email').execute();
  await db.schema.createIndex('contacts_external_idx').on('contacts').column('external_user_id').execute();
  await db.schema.createIndex('contacts_intercom_idx').on('contacts').column('intercom_contact_id').execute();

  await db.schema
    .createTable('timeline')
    .addColumn('entry_id', 'integer', autoIdColumn(db))
    .addColumn('client_id', 'text', (c) => c.notNull())
    .addColumn('contact_id', 'text')
    .addColumn('occurred_at', 'text', (c) => c.notNull())
    .addColumn('type', 'text', (c) => c.notNull())
    .addColumn('channel', 'text', (c) => c.notNull())
    .addColumn('actor', 'text')
    .addColumn('summary', 'text', (c) => c.notNull())
    .addColumn('outcome', 'text', (c) => c.notNull())
    .addColumn('provider_ids', 'text', (c) => c.notNull().defaultTo('{}'))
    .addColumn('data', 'text', (c) => c.notNull().defaultTo('{}'))
    .execute();
  await db.schema.createIndex('timeline_client_idx').on('timeline').columns(['client_id', 'entry_id']).execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  for (const t of ['timeline', 'contacts', 'client_segments', 'clients']) await db.schema.dropTable(t).ifExists().execute();
}
