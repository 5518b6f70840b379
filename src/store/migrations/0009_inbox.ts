import type { Kysely } from 'kysely';
import { autoIdColumn } from './dialect.js';

/**
 * The inbox of verified provider webhooks (SendGrid, Intercom, the product's own events): every event
 * is stored once (dedup_key) before the request is answered, then processed by a leased loop. Also
 * per-endpoint facts for integrations_status, and the first time each sent message was delivered,
 * opened, clicked… (one row per message and kind: campaign reports count distinct messages).
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('inbox_events')
    .addColumn('inbox_id', 'integer', autoIdColumn(db))
    .addColumn('provider', 'text', (c) => c.notNull())
    .addColumn('dedup_key', 'text', (c) => c.notNull().unique())
    .addColumn('event_type', 'text', (c) => c.notNull())
    .addColumn('email', 'text')
    .addColumn('occurred_at', 'text', (c) => c.notNull())
    .addColumn('received_at', 'text', (c) => c.notNull())
    .addColumn('payload', 'text', (c) => c.notNull())
    .addColumn('state', 'text', (c) => c.notNull())
    .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('next_attempt_at', 'text', (c) => c.notNull())
    .addColumn('lease_owner', 'text')
    .addColumn('lease_until', 'text')
    .addColumn('processed_at', 'text')
    .addColumn('note', 'text')
    .addColumn('last_error', 'text')
    .execute();
  await db.schema.createIndex('inbox_events_due_idx').on('inbox_events').columns(['state', 'next_attempt_at', 'inbox_id']).execute();
  // No index on received_at: every index is written on each insert and each settle; retention deletes by
  // inbox_id, which grows with received_at.

  await db.schema
    .createTable('webhook_endpoints')
    .addColumn('endpoint', 'text', (c) => c.primaryKey())
    .addColumn('last_verified_at', 'text', (c) => c.notNull())
    .addColumn('verified_requests', 'integer', (c) => c.notNull().defaultTo(0))
    .execute();

  await db.schema
    .createTable('message_events')
    .addColumn('outbox_key', 'text', (c) => c.notNull())
    .addColumn('kind', 'text', (c) => c.notNull())
    .addColumn('source_kind', 'text', (c) => c.notNull())
    .addColumn('source_id', 'text', (c) => c.notNull())
    .addColumn('channel', 'text', (c) => c.notNull())
    .addColumn('first_at', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('message_events_pk', ['outbox_key', 'kind'])
    .execute();
  await db.schema.createIndex('message_events_source_idx').on('message_events').columns(['source_kind', 'source_id']).execute();

  // SendGrid events name the message by the X-Message-Id we stored; Intercom replies by the message id.
  await db.schema.createIndex('outbox_provider_message_idx').on('outbox').columns(['provider_message_id']).execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex('outbox_provider_message_idx').ifExists().execute();
  await db.schema.dropTable('message_events').ifExists().execute();
  await db.schema.dropTable('webhook_endpoints').ifExists().execute();
  await db.schema.dropTable('inbox_events').ifExists().execute();
}
