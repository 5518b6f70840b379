import type { Kysely } from 'kysely';
import { autoIdColumn } from './dialect.js';

/** Outbound safety: the audit log, idempotency records of direct sends, and the daily send counter. */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('audit_log')
    .addColumn('audit_id', 'integer', autoIdColumn(db))
    .addColumn('at', 'text', (c) => c.notNull())
    .addColumn('tool', 'text', (c) => c.notNull())
    .addColumn('kind', 'text', (c) => c.notNull())
    .addColumn('client_name', 'text')
    .addColumn('client_version', 'text')
    .addColumn('session_id', 'text')
    .addColumn('arguments', 'text', (c) => c.notNull().defaultTo('{}'))
    .addColumn('outcome', 'text', (c) => c.notNull())
    .addColumn('message', 'text')
    .addColumn('policy', 'text')
    .addColumn('details', 'text', (c) => c.notNull().defaultTo('{}'))
    .addColumn('duration_ms', 'integer', (c) => c.notNull().defaultTo(0))
    .execute();
  await db.schema.createIndex('audit_log_at_idx').on('audit_log').columns(['at', 'audit_id']).execute();
  await db.schema.createIndex('audit_log_tool_idx').on('audit_log').columns(['tool', 'audit_id']).execute();

  await db.schema
    .createTable('idempotency_records')
    .addColumn('scope', 'text', (c) => c.notNull())
    .addColumn('key', 'text', (c) => c.notNull())
    .addColumn('request_hash', 'text', (c) => c.notNull())
    .addColumn('state', 'text', (c) => c.notNull())
    .addColumn('result', 'text')
    .addColumn('summary', 'text')
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .addColumn('expires_at', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('idempotency_records_pk', ['scope', 'key'])
    .execute();
  await db.schema.createIndex('idempotency_records_expires_idx').on('idempotency_records').column('expires_at').execute();

  await db.schema
    .createTable('send_counters')
    .addColumn('day', 'text', (c) => c.primaryKey())
    .addColumn('sent', 'integer', (c) => c.notNull().defaultTo(0))
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  for (const t of ['send_counters', 'idempotency_records', 'audit_log']) await db.schema.dropTable(t).ifExists().execute();
}
