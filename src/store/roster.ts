import { randomUUID } from 'node:crypto';
import { sql, type Expression, type Kysely, type Selectable, type SqlBool } from 'kysely';
import { invalidInput, ToolError } from '../result.js';
import type { EmailStatus } from './consent.js';
import type { CustomerEventInput, CustomerEventLog } from './customer-events.js';
import type { ClientPatch, ContactInput, NewClient } from './roster-model.js';
import type { ClientsTable, ContactsTable, Database } from './schema.js';
import { addSuppressions, liftSuppressions, normalizeAddress, sourceName, syncContactConsent, type NewSuppression, type SuppressionRow } from './suppressions.js';
import { prepared } from './prepared.js';
import type { TimelineRepository } from './timeline.js';

export type ContactRow = Selectable<ContactsTable>;

export interface ClientView {
  client_id: string;
  name: string;
  tier: ClientsTable['tier'];
  segments: string[];
  lifecycle_stage: ClientsTable['lifecycle_stage'];
  health_score: number | null;
  mrr: number | null;
  renewal_date: string | null;
  owner_email: string | null;
  custom_attributes: Record<string, unknown>;
  created_at: string;
  updated_at: string;
}

export interface ContactView {
  contact_id: string;
  client_id: string;
  email: string;
  name: string | null;
  first_name: string | null;
  role: string | null;
  phone: string | null;
  external_user_id: string | null;
  intercom_contact_id: string | null;
  linked_to_intercom: boolean;
  unsubscribed: boolean;
  unsubscribed_at: string | null;
  unsubscribe_source: string | null;
  unsubscribe_reason: string | null;
  /** Email-only suppression (unsubscribed by email, bounced, spam report): email channels skip the contact. */
  email_status: string | null;
  email_status_at: string | null;
  email_status_source: string | null;
  timezone: string | null;
}

export const SORT_FIELDS = ['name', 'health_score', 'mrr', 'renewal_date', 'created_at'] as const;
export type SortField = (typeof SORT_FIELDS)[number];

export interface ClientFilter {
  tier?: string[];
  segment?: string;
  lifecycle_stage?: string[];
  health_min?: number;
  health_max?: number;
  renewal_within_days?: number;
  owner_email?: string;
  search?: string;
}

const nowIso = () => new Date().toISOString();

/** A verified provider event that suppresses an address (unsubscribe, bounce, spam report…). */
export interface EmailSuppression {
  status: EmailStatus;
  /** What it covers: `email`, `sendgrid_group:<id>`, `intercom`. */
  scope: string;
  /** When it happened (the provider's time). */
  at: string;
  /** Who reported it: `sendgrid`, `intercom:<contact id>`. */
  source: string;
  reason: string;
  /** Facts for the timeline entry (event id, the message it concerned). */
  data?: Record<string, unknown>;
}

/** A verified resubscribe: lifts only what the same source set on the same scope, never a bounce or spam report. */
export interface EmailResubscribe {
  statuses: Array<Extract<EmailStatus, 'unsubscribed' | 'group_unsubscribed'>>;
  scope: string;
  at: string;
  source: string;
  data?: Record<string, unknown>;
}

/** Who caused a change, for the customer events it records (an automation step carries its chain depth). */
export interface ChangeOrigin {
  source: string;
  source_ref?: string;
  depth?: number;
}

/** Client fields whose changes are customer events (automations trigger on them), and the events' names. */
const TRACKED_CHANGES = { health_score: 'health_score_changed', lifecycle_stage: 'lifecycle_stage_changed', renewal_date: 'renewal_date_changed' } as const;

/** The customer events a change of a client records: {from, to} of its health score, lifecycle stage and renewal date. */
export function clientChangeEvents(
  clientId: string,
  before: Partial<Record<keyof typeof TRACKED_CHANGES, unknown>>,
  after: Partial<Record<keyof typeof TRACKED_CHANGES, unknown>>,
  origin: ChangeOrigin,
): CustomerEventInput[] {
  const events: CustomerEventInput[] = [];
  for (const [field, name] of Object.entries(TRACKED_CHANGES) as Array<[keyof typeof TRACKED_CHANGES, string]>) {
    const from = before[field] ?? null;
    const to = after[field] === undefined ? from : after[field];
    if (from === to) continue;
    events.push({ name, client_id: clientId, properties: { from, to }, source: origin.source, source_ref: origin.source_ref ?? null, depth: origin.depth ?? 0 });
  }
  return events;
}

/** A fresh, subscribed contact row (shared by upsert_contact and the CSV import). */
export function newContactRow(clientId: string, input: ContactInput, now: string): ContactRow {
  return {
    contact_id: `ct_${randomUUID()}`,
    client_id: clientId,
    email: input.email,
    name: input.name ?? null,
    first_name: input.first_name ?? null,
    role: input.role ?? null,
    phone: input.phone ?? null,
    external_user_id: input.external_user_id ?? null,
    intercom_contact_id: null,
    intercom_role: null,
    unsubscribed: 0,
    unsubscribed_at: null,
    unsubscribe_source: null,
    unsubscribe_reason: null,
    email_status: null,
    email_status_at: null,
    email_status_source: null,
    email_status_reason: null,
    timezone: input.timezone ?? null,
    created_at: now,
    updated_at: now,
  };
}

type ContactRef = { email?: string; external_user_id?: string; intercom_contact_id?: string };

/** The roster contacts a reference names: by email (normalized), external user id or Intercom id, any of them. */
function refConditions(ref: ContactRef): Array<['email' | 'external_user_id' | 'intercom_contact_id', string]> {
  const conds: Array<['email' | 'external_user_id' | 'intercom_contact_id', string]> = [];
  if (ref.email) conds.push(['email', ref.email.trim().toLowerCase()]);
  if (ref.external_user_id) conds.push(['external_user_id', ref.external_user_id]);
  if (ref.intercom_contact_id) conds.push(['intercom_contact_id', ref.intercom_contact_id]);
  return conds;
}

type LinkValue = 'id' | 'at' | 'email' | 'external_user_id' | 'role';

/**
 * The statement for one shape of link (which of email, external user id and role it has), built once
 * (prepared.ts): a first Intercom campaign's settlement writes one per message.
 */
const linkStatements = new Map<string, ReturnType<typeof prepared<LinkValue>>>();
function linkStatement(byEmail: boolean, byExternalId: boolean, withRole: boolean) {
  const shape = `${+byEmail}${+byExternalId}${+withRole}`;
  let statement = linkStatements.get(shape);
  if (!statement) {
    const names: LinkValue[] = ['id', 'at', ...(byEmail ? ['email' as const] : []), ...(byExternalId ? ['external_user_id' as const] : []), ...(withRole ? ['role' as const] : [])];
    statement = prepared(names, (db, p) => {
      const role = p.role as 'user' | 'lead';
      return db
        .updateTable('contacts')
        .set({ intercom_contact_id: p.id, ...(withRole ? { intercom_role: role } : {}), updated_at: p.at })
        .where((eb) => eb.or([...(byEmail ? [eb('email', '=', p.email)] : []), ...(byExternalId ? [eb('external_user_id', '=', p.external_user_id)] : [])]))
        .where((eb) =>
          eb.or([
            eb('intercom_contact_id', 'is', null),
            eb('intercom_contact_id', '!=', p.id),
            ...(withRole ? [eb('intercom_role', 'is', null), eb('intercom_role', '!=', role)] : []),
          ]),
        );
    });
    linkStatements.set(shape, statement);
  }
  return statement;
}

/**
 * Remembers Intercom ids (one statement per link, in the caller's transaction when given one): every
 * roster contact the link's email or external user id names takes the id and role, unless it has them
 * already.
 */
export async function linkIntercomContactsIn(
  db: Kysely<Database>,
  links: Array<{ email?: string; external_user_id?: string; id: string; role?: 'user' | 'lead' }>,
  now = nowIso(),
): Promise<void> {
  for (const link of links) {
    const ref = Object.fromEntries(refConditions({ email: link.email, external_user_id: link.external_user_id })) as { email?: string; external_user_id?: string };
    if (ref.email === undefined && ref.external_user_id === undefined) continue;
    await linkStatement(ref.email !== undefined, ref.external_user_id !== undefined, Boolean(link.role))(db, {
      id: link.id,
      at: now,
      email: ref.email,
      external_user_id: ref.external_user_id,
      role: link.role,
    });
  }
}

export function toContactView(c: ContactRow): ContactView {
  return {
    contact_id: c.contact_id,
    client_id: c.client_id,
    email: c.email,
    name: c.name,
    first_name: c.first_name,
    role: c.role,
    phone: c.phone,
    external_user_id: c.external_user_id,
    intercom_contact_id: c.intercom_contact_id,
    linked_to_intercom: Boolean(c.intercom_contact_id),
    unsubscribed: Boolean(c.unsubscribed),
    unsubscribed_at: c.unsubscribed_at,
    unsubscribe_source: c.unsubscribe_source,
    unsubscribe_reason: c.unsubscribe_reason,
    email_status: c.email_status,
    email_status_at: c.email_status_at,
    email_status_source: c.email_status_source,
    timezone: c.timezone,
  };
}

/** Clients and contacts; every change that belongs together is one transaction with its timeline entry. */
export class RosterRepository {
  constructor(
    private readonly db: Kysely<Database>,
    readonly dialect: 'sqlite' | 'postgres',
    private readonly timeline: TimelineRepository,
    private readonly events: CustomerEventLog,
  ) {}

  async getClient(clientId: string, db: Kysely<Database> = this.db): Promise<ClientView | undefined> {
    const row = await db.selectFrom('clients').selectAll().where('client_id', '=', clientId).executeTakeFirst();
    if (!row) return undefined;
    const segments = await db.selectFrom('client_segments').select('segment').where('client_id', '=', clientId).orderBy('segment').execute();
    return toClientView(row, segments.map((s) => s.segment));
  }

  async requireClient(clientId: string, db: Kysely<Database> = this.db): Promise<ClientView> {
    const c = await this.getClient(clientId, db);
    if (!c) throw new ToolError('not_found', `No client "${clientId}" in the roster. Use list_clients to find it, or register_client to add it.`);
    return c;
  }

  async createClient(input: NewClient, actor?: string): Promise<ClientView> {
    return this.db.transaction().execute(async (trx) => {
      if (await trx.selectFrom('clients').select('client_id').where('client_id', '=', input.client_id).executeTakeFirst()) {
        throw new ToolError('conflict', `A client "${input.client_id}" already exists. Use update_client_info to change it.`);
      }
      await this.writeClient(trx, input, true);
      await this.timeline.append(trx, { client_id: input.client_id, type: 'profile_change', channel: 'roster', actor, summary: `Client registered: ${input.name}`, outcome: 'success', data: { client: input } });
      return (await this.getClient(input.client_id, trx))!;
    });
  }

  /** Insert or update one client row and its segment set (no timeline). */
  async writeClient(db: Kysely<Database>, input: NewClient, insert: boolean): Promise<void> {
    const now = nowIso();
    const values = {
      name: input.name,
      tier: input.tier,
      lifecycle_stage: input.lifecycle_stage,
      health_score: input.health_score ?? null,
      mrr: input.mrr ?? null,
      renewal_date: input.renewal_date ?? null,
      owner_email: input.owner_email ?? null,
      custom_attributes: JSON.stringify(input.custom_attributes ?? {}),
      updated_at: now,
    };
    if (insert) await db.insertInto('clients').values({ client_id: input.client_id, ...values, created_at: now }).execute();
    else await db.updateTable('clients').set(values).where('client_id', '=', input.client_id).execute();
    if (input.segments) await this.replaceSegments(db, input.client_id, input.segments);
  }

  private async replaceSegments(db: Kysely<Database>, clientId: string, segments: string[]): Promise<void> {
    await db.deleteFrom('client_segments').where('client_id', '=', clientId).execute();
    const unique = [...new Set(segments)];
    if (unique.length) await db.insertInto('client_segments').values(unique.map((segment) => ({ client_id: clientId, segment }))).execute();
  }

  async updateClient(clientId: string, patch: ClientPatch, actor?: string, origin?: ChangeOrigin): Promise<{ client: ClientView; changes: Record<string, { from: unknown; to: unknown }> }> {
    return this.db.transaction().execute((trx) => this.applyClientPatch(trx, clientId, patch, actor, origin));
  }

  /** The update inside the caller's transaction: row, timeline entry and customer events commit together. */
  async applyClientPatch(
    trx: Kysely<Database>,
    clientId: string,
    patch: ClientPatch,
    actor?: string,
    origin: ChangeOrigin = { source: 'roster' },
  ): Promise<{ client: ClientView; changes: Record<string, { from: unknown; to: unknown }> }> {
    const before = await this.requireClient(clientId, trx);
    const changes: Record<string, { from: unknown; to: unknown }> = {};
    for (const [k, v] of Object.entries(patch)) {
      if (v === undefined) continue;
      const old = (before as unknown as Record<string, unknown>)[k];
      const next = k === 'segments' ? [...new Set(v as string[])].sort() : v;
      if (JSON.stringify(old) !== JSON.stringify(next)) changes[k] = { from: old, to: next };
    }
    if (Object.keys(changes).length) {
      const merged = { ...before, ...Object.fromEntries(Object.entries(patch).filter(([, v]) => v !== undefined)) } as NewClient;
      await this.writeClient(trx, { ...merged, segments: patch.segments ?? undefined }, false);
      await this.timeline.append(trx, {
        client_id: clientId,
        type: 'profile_change',
        channel: 'roster',
        actor,
        summary: `Updated ${Object.keys(changes).join(', ')}`,
        outcome: 'success',
        data: { changes },
      });
      await this.events.record(trx, clientChangeEvents(clientId, before, patch, origin), Date.now(), { fromRoster: true });
    }
    return { client: (await this.getClient(clientId, trx))!, changes };
  }

  async contactsOf(clientId: string): Promise<ContactView[]> {
    const rows = await this.db.selectFrom('contacts').selectAll().where('client_id', '=', clientId).orderBy('email').execute();
    return rows.map(toContactView);
  }

  /** Creates or updates the contact with this email at this client. */
  async upsertContact(clientId: string, input: ContactInput, actor?: string, db?: Kysely<Database>): Promise<{ created: boolean; contact: ContactView }> {
    const run = async (trx: Kysely<Database>) => {
      const result = await this.writeContact(trx, clientId, input);
      await this.timeline.append(trx, {
        client_id: clientId,
        contact_id: result.contact.contact_id,
        type: 'contact_change',
        channel: 'roster',
        actor,
        summary: `${result.created ? 'Added' : 'Updated'} contact ${input.email}`,
        outcome: 'success',
        data: { contact: input },
      });
      return result;
    };
    return db ? run(db) : this.db.transaction().execute(run);
  }

  /** The row write alone (also used by the import, which records its own timeline entry). */
  async writeContact(db: Kysely<Database>, clientId: string, input: ContactInput): Promise<{ created: boolean; contact: ContactView }> {
    await this.requireClient(clientId, db);
    const now = nowIso();
    const existing = await db.selectFrom('contacts').selectAll().where('client_id', '=', clientId).where('email', '=', input.email).executeTakeFirst();
    const fields: Partial<ContactRow> = {};
    for (const k of ['name', 'first_name', 'role', 'phone', 'external_user_id', 'timezone'] as const) if (input[k] !== undefined) fields[k] = input[k];
    if (existing) {
      await db.updateTable('contacts').set({ ...fields, updated_at: now }).where('contact_id', '=', existing.contact_id).execute();
      return { created: false, contact: toContactView({ ...existing, ...fields, updated_at: now }) };
    }
    const row = newContactRow(clientId, input, now);
    await db.insertInto('contacts').values(row).execute();
    // The address may have opted out before (removed and added again, or another client's contact): it stays out.
    await syncContactConsent(db, [row.email]);
    const synced = await db.selectFrom('contacts').selectAll().where('contact_id', '=', row.contact_id).executeTakeFirstOrThrow();
    return { created: true, contact: toContactView(synced) };
  }

  async removeContact(clientId: string, email: string, actor?: string): Promise<ContactView> {
    return this.db.transaction().execute(async (trx) => {
      const c = await trx.selectFrom('contacts').selectAll().where('client_id', '=', clientId).where('email', '=', email).executeTakeFirst();
      if (!c) throw new ToolError('not_found', `No contact ${email} at client "${clientId}". get_client_overview lists its contacts.`);
      await trx.deleteFrom('contacts').where('contact_id', '=', c.contact_id).execute();
      await this.timeline.append(trx, { client_id: clientId, contact_id: c.contact_id, type: 'contact_change', channel: 'roster', actor, summary: `Removed contact ${email}`, outcome: 'success' });
      return toContactView(c);
    });
  }

  /**
   * Unsubscribes an address (the suppression list, scope `all`: every channel, every client's contact
   * with it, and any contact added later), or lifts the suppressions a resubscribe may lift (never a
   * bounce, spam report or drop: the caller refuses those, and asks a person for the rest).
   */
  async setSubscription(email: string, opts: { client_id?: string; subscribed: boolean; reason?: string; source: string; actor?: string; liftNotAfter?: string }): Promise<{ contacts: ContactView[]; changed: SuppressionRow[] | NewSuppression[] }> {
    const address = normalizeAddress(email);
    return this.db.transaction().execute(async (trx) => {
      if (opts.client_id) {
        const here = await trx.selectFrom('contacts').select('contact_id').where('client_id', '=', opts.client_id).where('email', '=', address).executeTakeFirst();
        if (!here) throw new ToolError('not_found', `No contact ${address} at client "${opts.client_id}". Leave client_id out to record it for the address alone.`);
      }
      const now = nowIso();
      const changed = opts.subscribed
        ? await liftSuppressions(trx, { addresses: [address], kinds: ['unsubscribed', 'group_unsubscribed'], notAfter: opts.liftNotAfter, by: opts.actor ? `${opts.source} (${opts.actor})` : opts.source, reason: opts.reason ?? null, at: now })
        : await addSuppressions(trx, [{ address, scope: 'all', source: opts.source, kind: 'unsubscribed', reason: opts.reason ?? null, at: now, by: opts.actor ?? null, data: { tool: 'set_contact_subscription' } }]);
      const rows = await trx.selectFrom('contacts').selectAll().where('email', '=', address).orderBy('client_id').execute();
      if (changed.length) {
        await this.timeline.appendMany(
          trx,
          rows.map((r) => ({
            client_id: r.client_id,
            contact_id: r.contact_id,
            type: 'subscription',
            channel: 'roster',
            actor: opts.actor,
            summary: `${opts.subscribed ? 'Resubscribed' : 'Unsubscribed'} ${address}${opts.reason ? `: ${opts.reason}` : ''}`,
            outcome: 'success' as const,
            data: { source: opts.source, reason: opts.reason, ...(opts.subscribed ? { lifted: changed.map((c) => `${c.kind} (${c.scope}, ${c.source})`) } : {}) },
          })),
        );
      }
      return { contacts: rows.map(toContactView), changed };
    });
  }

  /**
   * Puts these addresses on the suppression list (roster contact or not); an address already suppressed
   * the same way keeps its first report. One timeline entry per roster contact newly suppressed, in the
   * caller's transaction. Returns the contacts changed.
   */
  async suppressEmail(db: Kysely<Database>, emails: string[], s: EmailSuppression): Promise<ContactRow[]> {
    const fresh = await addSuppressions(
      db,
      emails.map((address) => ({ address, scope: s.scope, source: s.source, kind: s.status, reason: s.reason, at: s.at, by: `webhook:${sourceName(s.source)}`, data: s.data })),
    );
    if (!fresh.length) return [];
    const rows = await this.contactsWithEmails(db, fresh.map((f) => f.address));
    const channel = sourceName(s.source);
    await this.timeline.appendMany(
      db,
      rows.map((r) => ({
        client_id: r.client_id,
        contact_id: r.contact_id,
        type: 'subscription',
        channel,
        actor: `webhook:${channel}`,
        summary: `Email to ${r.email} suppressed (${s.status.replace('_', ' ')}): ${s.reason}`,
        outcome: 'success' as const,
        data: { email_status: s.status, scope: s.scope, source: s.source, reason: s.reason, at: s.at, ...s.data },
      })),
    );
    return rows;
  }

  /** Lifts what the same source set on the same scope, no later than the resubscribe; same shape of record as suppressEmail. */
  async resubscribeEmail(db: Kysely<Database>, emails: string[], r: EmailResubscribe): Promise<ContactRow[]> {
    const channel = sourceName(r.source);
    const lifted = await liftSuppressions(db, { addresses: emails, kinds: r.statuses, scope: r.scope, source: r.source, notAfter: r.at, by: `webhook:${channel}`, at: r.at });
    if (!lifted.length) return [];
    const rows = await this.contactsWithEmails(db, lifted.map((l) => l.address));
    await this.timeline.appendMany(
      db,
      rows.map((c) => {
        const l = lifted.find((x) => x.address === c.email)!;
        return {
          client_id: c.client_id,
          contact_id: c.contact_id,
          type: 'subscription',
          channel,
          actor: `webhook:${channel}`,
          summary: `Email to ${c.email} resubscribed (lifts ${l.kind.replace('_', ' ')} from ${l.set_at.slice(0, 10)})`,
          outcome: 'success' as const,
          data: { email_status: c.email_status, lifted: l.kind, scope: l.scope, previous_reason: l.reason, source: r.source, at: r.at, ...r.data },
        };
      }),
    );
    return rows;
  }

  private async contactsWithEmails(db: Kysely<Database>, emails: string[]): Promise<ContactRow[]> {
    const unique = [...new Set(emails.map((e) => e.trim().toLowerCase()).filter(Boolean))];
    if (!unique.length) return [];
    return db.selectFrom('contacts').selectAll().where('email', 'in', unique).orderBy('contact_id').execute();
  }

  async findContacts(ref: ContactRef): Promise<ContactRow[]> {
    const conds = refConditions(ref);
    if (!conds.length) return [];
    return this.db
      .selectFrom('contacts')
      .selectAll()
      .where((eb) => eb.or(conds.map(([col, v]) => eb(col, '=', v))))
      .execute();
  }

  /** Remembers Intercom's id (and role) for the roster contact(s) with this email / external id. */
  async linkIntercomContact(ref: { email?: string; external_user_id?: string }, intercomContactId: string, role?: 'user' | 'lead'): Promise<void> {
    await linkIntercomContactsIn(this.db, [{ email: ref.email, external_user_id: ref.external_user_id, id: intercomContactId, role }]);
  }

  async listClients(
    filter: ClientFilter,
    sort: { field: SortField; direction: 'asc' | 'desc' },
    limit: number,
    cursor?: string,
  ): Promise<{ clients: Array<ClientView & { contact_count: number }>; total: number; next_cursor?: string }> {
    const where = (eb: any): Expression<SqlBool> => {
      const parts: Expression<SqlBool>[] = [];
      if (filter.tier?.length) parts.push(eb('clients.tier', 'in', filter.tier));
      if (filter.lifecycle_stage?.length) parts.push(eb('clients.lifecycle_stage', 'in', filter.lifecycle_stage));
      if (filter.health_min !== undefined) parts.push(eb('clients.health_score', '>=', filter.health_min));
      if (filter.health_max !== undefined) parts.push(eb('clients.health_score', '<=', filter.health_max));
      if (filter.owner_email) parts.push(eb('clients.owner_email', '=', filter.owner_email.toLowerCase()));
      if (filter.segment) {
        parts.push(eb('clients.client_id', 'in', eb.selectFrom('client_segments').select('client_id').where('segment', '=', filter.segment.toLowerCase())));
      }
      if (filter.renewal_within_days !== undefined) {
        const today = new Date().toISOString().slice(0, 10);
        const until = new Date(Date.now() + filter.renewal_within_days * 86_400_000).toISOString().slice(0, 10);
        parts.push(eb.and([eb('clients.renewal_date', '>=', today), eb('clients.renewal_date', '<=', until)]));
      }
      if (filter.search) {
        const like = `%${filter.search.toLowerCase().replace(/[%_\\]/g, (m) => `\\${m}`)}%`;
        parts.push(
          eb.or([
            eb(sql`lower(clients.name)`, 'like', sql`${like} escape '\\'`),
            eb('clients.client_id', 'in', eb.selectFrom('contacts').select('client_id').where('email', 'like', sql`${like} escape '\\'`)),
          ]),
        );
      }
      return parts.length ? eb.and(parts) : sql<SqlBool>`1 = 1`;
    };
    const countQuery = this.db.selectFrom('clients').select((eb) => eb.fn.countAll<number>().as('n')).where(where);

    // Keyset pagination on (sort key, client_id); NULLs sort as the lowest value so the order is total.
    const numeric = sort.field === 'health_score' || sort.field === 'mrr';
    const key = numeric
      ? sql<string | number>`coalesce(${sql.ref(`clients.${sort.field}`)}, -1)`
      : sql<string | number>`coalesce(${sql.ref(`clients.${sort.field}`)}, '')`;
    const dir = sort.direction;
    let q = this.db.selectFrom('clients').selectAll('clients').select(key.as('sort_key')).where(where);
    if (cursor) {
      const [k, id] = decodeCursor(cursor, sort);
      const op = dir === 'asc' ? '>' : '<';
      q = q.where((eb) => eb.or([eb(key, op, k as never), eb.and([eb(key, '=', k as never), eb('clients.client_id', op, id)])]));
    }
    // Independent reads run side by side: on PostgreSQL each is a round trip on its own pooled connection.
    const [rows, totalRow] = await Promise.all([q.orderBy(key, dir).orderBy('clients.client_id', dir).limit(limit + 1).execute(), countQuery.executeTakeFirst()]);
    const total = Number(totalRow?.n ?? 0);
    const page = rows.slice(0, limit);
    const ids = page.map((r) => r.client_id);
    const [segs, counts] = ids.length
      ? await Promise.all([
          this.db.selectFrom('client_segments').selectAll().where('client_id', 'in', ids).execute(),
          this.db.selectFrom('contacts').select(['client_id', (eb) => eb.fn.countAll<number>().as('n')]).where('client_id', 'in', ids).groupBy('client_id').execute(),
        ])
      : [[], []];
    const clients = page.map((r) => ({
      ...toClientView(r, segs.filter((s) => s.client_id === r.client_id).map((s) => s.segment).sort()),
      contact_count: Number(counts.find((c) => c.client_id === r.client_id)?.n ?? 0),
    }));
    const last = page[page.length - 1];
    return {
      clients,
      total,
      next_cursor: rows.length > limit && last ? Buffer.from(JSON.stringify([sort.field, dir, (last as { sort_key: unknown }).sort_key, last.client_id])).toString('base64url') : undefined,
    };
  }
}

/**
 * A cursor is [sort field, direction, sort key, client_id], as listClients wrote it. Every part is checked,
 * types included: a crafted key (an object, a string where a number belongs) must be invalid_input, not
 * a database error.
 */
function decodeCursor(cursor: string, sort: { field: SortField; direction: string }): [string | number, string] {
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(cursor, 'base64url').toString());
  } catch {
    v = undefined;
  }
  if (Array.isArray(v) && v.length === 4) {
    const [field, dir, k, id] = v as unknown[];
    const numeric = sort.field === 'health_score' || sort.field === 'mrr';
    const keyOk = numeric ? typeof k === 'number' && Number.isFinite(k) : typeof k === 'string' && k.length <= 1000;
    if (field === sort.field && dir === sort.direction && keyOk && typeof id === 'string' && id.length <= 200) return [k as string | number, id];
  }
  throw invalidInput('cursor does not belong to this sort order (or was not returned by this server). Call list_clients again without a cursor.', { field: 'cursor' });
}

export function toClientView(row: Selectable<ClientsTable>, segments: string[]): ClientView {
  let custom: Record<string, unknown> = {};
  try {
    custom = JSON.parse(row.custom_attributes) as Record<string, unknown>;
  } catch {
    // stored by us as JSON; an unreadable value shows as empty rather than failing the read
  }
  return {
    client_id: row.client_id,
    name: row.name,
    tier: row.tier,
    segments,
    lifecycle_stage: row.lifecycle_stage,
    health_score: row.health_score === null ? null : Number(row.health_score),
    mrr: row.mrr === null ? null : Number(row.mrr),
    renewal_date: row.renewal_date,
    owner_email: row.owner_email,
    custom_attributes: custom,
    created_at: row.created_at,
    updated_at: row.updated_at,
  };
}
