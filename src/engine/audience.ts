import type { Kysely } from 'kysely';
import type { ClientsTable, ContactsTable, Database } from '../store/schema.js';

/**
 * Resolves an audience (a campaign's, a workflow's) from the roster, never from anywhere else.
 * Targeting filters combine with AND; contacts that cannot or must not be messaged are excluded and
 * counted with the reason.
 */

export interface Targeting {
  client_ids?: string[];
  segment?: string;
  tier?: ClientsTable['tier'] | Array<ClientsTable['tier']>;
  lifecycle_stages?: Array<ClientsTable['lifecycle_stage']>;
  /** Inclusive health score range; a client without a score matches no range. */
  health_min?: number;
  health_max?: number;
  contact_roles?: string[];
}

export type AudienceClient = ClientsTable & { segments: string[]; custom: Record<string, unknown> };

export type ExclusionReason = 'unsubscribed' | 'email_suppressed' | 'missing_email' | 'duplicate_address' | 'role_not_targeted';

export interface AudienceMember {
  contact: ContactsTable;
  client: AudienceClient;
}

export interface Exclusion {
  contact_id: string;
  client_id: string;
  email: string;
  reason: ExclusionReason;
}

export interface Audience {
  members: AudienceMember[];
  excluded: Exclusion[];
  /** target_client_ids that are not in the roster. */
  unknown_client_ids: string[];
  contacts_considered: number;
}

const ID_CHUNK = 500;

/** The clients matching the client-level filters (not contact roles), ordered by id, with their segments. */
export async function matchingClients(db: Kysely<Database>, t: Targeting): Promise<{ clients: AudienceClient[]; unknown_client_ids: string[] }> {
  const idChunks = t.client_ids ? chunk([...new Set(t.client_ids)], ID_CHUNK) : [undefined];
  const tiers = t.tier === undefined ? undefined : Array.isArray(t.tier) ? t.tier : [t.tier];
  const rows: ClientsTable[] = [];
  for (const ids of idChunks) {
    let q = db.selectFrom('clients').selectAll();
    if (ids) q = q.where('client_id', 'in', ids);
    if (tiers?.length) q = q.where('tier', 'in', tiers);
    if (t.lifecycle_stages?.length) q = q.where('lifecycle_stage', 'in', t.lifecycle_stages);
    if (t.health_min !== undefined) q = q.where('health_score', '>=', t.health_min);
    if (t.health_max !== undefined) q = q.where('health_score', '<=', t.health_max);
    if (t.segment) {
      const segment = t.segment;
      q = q.where('client_id', 'in', (sub) => sub.selectFrom('client_segments').select('client_id').where('segment', '=', segment));
    }
    rows.push(...(await q.execute()));
  }
  rows.sort((a, b) => (a.client_id < b.client_id ? -1 : a.client_id > b.client_id ? 1 : 0));
  let unknown_client_ids: string[] = [];
  const onlyIds = !tiers?.length && !t.lifecycle_stages?.length && t.health_min === undefined && t.health_max === undefined && !t.segment;
  if (t.client_ids && onlyIds) {
    const found = new Set(rows.map((r) => r.client_id));
    unknown_client_ids = t.client_ids.filter((id) => !found.has(id));
  } else if (t.client_ids) {
    const existing = new Set<string>();
    for (const ids of chunk([...new Set(t.client_ids)], ID_CHUNK)) {
      for (const r of await db.selectFrom('clients').select('client_id').where('client_id', 'in', ids).execute()) existing.add(r.client_id);
    }
    unknown_client_ids = t.client_ids.filter((id) => !existing.has(id));
  }
  const segments = new Map<string, string[]>();
  for (const ids of chunk(rows.map((c) => c.client_id), ID_CHUNK)) {
    for (const s of await db.selectFrom('client_segments').selectAll().where('client_id', 'in', ids).execute()) {
      (segments.get(s.client_id) ?? segments.set(s.client_id, []).get(s.client_id)!).push(s.segment);
    }
  }
  const clients = rows.map((c) => ({ ...c, segments: (segments.get(c.client_id) ?? []).sort(), custom: parseObject(c.custom_attributes) }));
  return { clients, unknown_client_ids };
}

export async function resolveAudience(db: Kysely<Database>, t: Targeting): Promise<Audience> {
  const { clients, unknown_client_ids } = await matchingClients(db, t);
  return audienceOf(db, clients, t.contact_roles, unknown_client_ids);
}

/** The contacts of these clients who may be messaged, and who is excluded and why. */
export async function audienceOf(db: Kysely<Database>, clients: AudienceClient[], contactRoles?: string[], unknown_client_ids: string[] = []): Promise<Audience> {
  const contactsByClient = new Map<string, ContactsTable[]>();
  for (const ids of chunk(clients.map((c) => c.client_id), ID_CHUNK)) {
    const rows = await db.selectFrom('contacts').selectAll().where('client_id', 'in', ids).orderBy('client_id').orderBy('email').orderBy('contact_id').execute();
    for (const c of rows) (contactsByClient.get(c.client_id) ?? contactsByClient.set(c.client_id, []).get(c.client_id)!).push(c);
  }

  const roles = contactRoles?.length ? new Set(contactRoles.map((r) => r.toLowerCase())) : undefined;
  const seen = new Set<string>();
  const members: AudienceMember[] = [];
  const excluded: Exclusion[] = [];
  let considered = 0;
  for (const client of clients) {
    for (const contact of contactsByClient.get(client.client_id) ?? []) {
      considered += 1;
      const email = (contact.email ?? '').trim().toLowerCase();
      const ex = (reason: ExclusionReason) => excluded.push({ contact_id: contact.contact_id, client_id: client.client_id, email, reason });
      if (roles && !roles.has((contact.role ?? '').toLowerCase())) ex('role_not_targeted');
      else if (!email) ex('missing_email');
      else if (contact.unsubscribed) ex('unsubscribed');
      else if (seen.has(email)) ex('duplicate_address');
      else {
        seen.add(email);
        members.push({ contact, client });
      }
    }
  }
  return { members, excluded, unknown_client_ids, contacts_considered: considered };
}

function chunk<T>(items: T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out.length ? out : [];
}

export function parseObject(text: string | null | undefined): Record<string, unknown> {
  if (!text) return {};
  try {
    const v = JSON.parse(text) as unknown;
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}
