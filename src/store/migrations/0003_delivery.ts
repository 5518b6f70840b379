import { sql, type Kysely } from 'kysely';
import { autoIdColumn, isPostgres } from './dialect.js';

/**
 * Delivery learns messages, not campaigns: every outbox row carries its source (campaign or
 * automation), its tracking metadata and its send-time policy, so any producer can write rows.
 * Contacts gain an email-only suppression (unsubscribe by email, bounce, spam report) and a time zone.
 */
export async function up(db: Kysely<any>): Promise<void> {
  // intercom_role: with the id cached, a message needs no lookup at all (the API addresses user or lead).
  for (const column of ['email_status', 'email_status_at', 'email_status_source', 'email_status_reason', 'timezone', 'intercom_role']) {
    await db.schema.alterTable('contacts').addColumn(column, 'text').execute();
  }

  await db.schema
    .createTable('outbox_v3')
    .addColumn('outbox_id', 'integer', autoIdColumn(db))
    .addColumn('source_kind', 'text', (c) => c.notNull())
    .addColumn('source_id', 'text', (c) => c.notNull())
    .addColumn('source_ref', 'text')
    .addColumn('contact_id', 'text', (c) => c.notNull())
    .addColumn('client_id', 'text', (c) => c.notNull())
    .addColumn('channel', 'text', (c) => c.notNull())
    .addColumn('idempotency_key', 'text', (c) => c.notNull().unique())
    .addColumn('recipient_email', 'text', (c) => c.notNull())
    .addColumn('payload', 'text', (c) => c.notNull())
    .addColumn('meta', 'text', (c) => c.notNull().defaultTo('{}'))
    .addColumn('policy', 'text')
    .addColumn('state', 'text', (c) => c.notNull())
    .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('not_before', 'text', (c) => c.notNull())
    .addColumn('provider_message_id', 'text')
    .addColumn('error_code', 'text')
    .addColumn('error_message', 'text')
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .addColumn('sent_at', 'text')
    .addColumn('lease_owner', 'text')
    .addColumn('lease_until', 'text')
    .execute();

  // Existing rows (campaigns only so far): their tracking metadata comes from the campaign definition.
  const definitions = new Map<string, Record<string, any>>();
  for (const c of await db.selectFrom('campaigns').select(['campaign_id', 'definition']).execute()) {
    try {
      definitions.set(c.campaign_id, JSON.parse(c.definition));
    } catch {
      definitions.set(c.campaign_id, {});
    }
  }
  let last = 0;
  for (;;) {
    const rows = await db.selectFrom('outbox').selectAll().where('outbox_id', '>', last).orderBy('outbox_id').limit(500).execute();
    if (!rows.length) break;
    last = Number(rows[rows.length - 1].outbox_id);
    await db
      .insertInto('outbox_v3')
      .values(
        rows.map((r: any) => {
          const def = definitions.get(r.campaign_id) ?? {};
          return {
            outbox_id: r.outbox_id,
            source_kind: 'campaign',
            source_id: r.campaign_id,
            source_ref: null,
            contact_id: r.contact_id,
            client_id: r.client_id,
            channel: r.channel,
            idempotency_key: r.idempotency_key,
            recipient_email: r.recipient_email,
            payload: r.payload,
            meta: JSON.stringify(campaignMeta(r, def)),
            policy: null,
            state: r.state,
            attempts: r.attempts,
            not_before: r.not_before,
            provider_message_id: r.provider_message_id,
            error_code: r.error_code,
            error_message: r.error_message,
            updated_at: r.updated_at,
            sent_at: r.sent_at,
            lease_owner: r.lease_owner,
            lease_until: r.lease_until,
          };
        }),
      )
      .execute();
  }
  await db.schema.dropTable('outbox').execute();
  await db.schema.alterTable('outbox_v3').renameTo('outbox').execute();
  if (isPostgres(db)) {
    // Rows were copied with their ids: the identity must continue after them.
    await sql`select setval(pg_get_serial_sequence('outbox', 'outbox_id'), coalesce((select max(outbox_id) from outbox), 0) + 1, false)`.execute(db);
  }
  await db.schema.createIndex('outbox_due_idx').on('outbox').columns(['state', 'not_before']).execute();
  await db.schema.createIndex('outbox_source_idx').on('outbox').columns(['source_kind', 'source_id', 'state']).execute();
  // The frequency cap counts a contact's recent messages.
  await db.schema.createIndex('outbox_contact_sent_idx').on('outbox').columns(['contact_id', 'sent_at']).execute();
}

function campaignMeta(row: Record<string, any>, def: Record<string, any>) {
  return {
    label: def.campaign_name ?? row.campaign_id,
    category: def.template_type,
    actor: def.created_by ?? null,
    track_opens: def.track_opens,
    track_clicks: def.track_clicks,
    custom_args: { campaign_id: row.campaign_id, contact_id: row.contact_id, client_id: row.client_id, outbox_key: row.idempotency_key },
    intercom_event: {
      name: 'email_campaign_received',
      metadata: { campaign_id: row.campaign_id, campaign_name: def.campaign_name ?? '', template_type: def.template_type ?? '' },
    },
    mixpanel_event: {
      name: 'campaign_message_sent',
      properties: { campaign_id: row.campaign_id, campaign_name: def.campaign_name, template_type: def.template_type, channel: row.channel, client_id: row.client_id },
    },
  };
}

export async function down(): Promise<void> {
  throw new Error('0003_delivery cannot be reverted');
}
