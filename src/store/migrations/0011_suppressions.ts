import type { Kysely } from 'kysely';

/**
 * The suppression list: consent belongs to the address, not to a roster row. One row per (address,
 * scope, source, kind); a lift keeps the row (lifted_at, by whom, why) so the history stays readable.
 * Existing per-contact consent is carried over, so an upgrade forgets no opt-out.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('suppressions')
    .addColumn('address', 'text', (c) => c.notNull())
    .addColumn('scope', 'text', (c) => c.notNull())
    .addColumn('source', 'text', (c) => c.notNull())
    .addColumn('kind', 'text', (c) => c.notNull())
    .addColumn('reason', 'text')
    .addColumn('set_at', 'text', (c) => c.notNull())
    .addColumn('set_by', 'text')
    .addColumn('data', 'text', (c) => c.notNull().defaultTo('{}'))
    .addColumn('lifted_at', 'text')
    .addColumn('lifted_by', 'text')
    .addColumn('lift_reason', 'text')
    .addPrimaryKeyConstraint('suppressions_pk', ['address', 'scope', 'source', 'kind'])
    .execute();
  await db.schema.createIndex('suppressions_set_at_idx').on('suppressions').columns(['set_at', 'address']).execute();

  const now = new Date().toISOString();
  const contacts = await db
    .selectFrom('contacts')
    .select(['email', 'unsubscribed', 'unsubscribed_at', 'unsubscribe_source', 'unsubscribe_reason', 'email_status', 'email_status_at', 'email_status_source', 'email_status_reason'])
    .where((eb) => eb.or([eb('unsubscribed', '=', 1), eb('email_status', 'is not', null)]))
    .execute();
  const rows = new Map<string, Record<string, unknown>>();
  for (const c of contacts as Array<Record<string, any>>) {
    const address = String(c.email).trim().toLowerCase();
    if (c.unsubscribed) {
      const r = { address, scope: 'all', source: c.unsubscribe_source ?? 'roster', kind: 'unsubscribed', reason: c.unsubscribe_reason, set_at: c.unsubscribed_at ?? now, set_by: 'migration', data: '{}' };
      rows.set(`${r.address}\u0000${r.scope}\u0000${r.source}\u0000${r.kind}`, r);
    }
    if (c.email_status) {
      const scope = c.email_status === 'group_unsubscribed' ? `sendgrid_group:${/group (\S+)/.exec(c.email_status_reason ?? '')?.[1] ?? 'unknown'}` : c.email_status_source === 'intercom' ? 'intercom' : 'email';
      const r = { address, scope, source: c.email_status_source ?? 'unknown', kind: c.email_status, reason: c.email_status_reason, set_at: c.email_status_at ?? now, set_by: 'migration', data: '{}' };
      rows.set(`${r.address}\u0000${r.scope}\u0000${r.source}\u0000${r.kind}`, r);
    }
  }
  const values = [...rows.values()];
  for (let i = 0; i < values.length; i += 200) await db.insertInto('suppressions').values(values.slice(i, i + 200)).execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('suppressions').ifExists().execute();
}
