import type { Kysely } from 'kysely';
import type { ClientsTable, ContactsTable, Database } from '../store/schema.js';

/**
 * Resolves a campaign's audience from the roster, never from anywhere else. Targeting filters combine
 * with AND; contacts that cannot or must not be messaged are excluded and counted with the reason.
 */

export interface Targeting {
  client_ids?: string[];
  segment?: string;
  tier?: ClientsTable['tier'];
  contact_roles?: string[];
}

export type ExclusionReason = 'unsubscribed' | 'email_suppressed' | 'missing_email' | 'duplicate_address' | 'role_not_targeted';

export interface AudienceMember {
  contact: ContactsTable;
  client: ClientsTable & { segments: string[]; custom: Record<string, unknown> };
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

export async function resolveAudience(db: Kysely<Database>, t: Targeting): Promise<Audience> {
  const idChunks = t.client_ids ? chunk([...new Set(t.client_ids)], ID_CHUNK) : [undefined];
  const clients: ClientsTable[] = [];
  for (const ids of idChunks) {
    let q = db.selectFrom('clients').selectAll();
    if (ids) q = q.where('client_id', 'in', ids);
    if (t.tier) q = q.where('tier', '=', t.tier);
    if (t.segment) {
      const segment = t.segment;
      q = q.where('client_id', 'in', (sub) => sub.selectFrom('client_segments').select('client_id').where('segment', '=', segment));
    }
    clients.push(...(await q.execute()));
  }
  clients.sort((a, b) => (a.client_id < b.client_id ? -1 : a.client_id > b.client_id ? 1 : 0));
  const known = new Set(clients.map((c) => c.client_id));
  let unknown_client_ids: string[] = [];
  if (t.client_ids) {
    const existing = new Set<string>();
    for (const ids of chunk([...new Set(t.client_ids)], ID_CHUNK)) {
      for (const r of await db.selectFrom('clients').select('client_id').where('client_id', 'in', ids).execute()) existing.add(r.client_id);
    }
    unknown_client_ids = t.client_ids.filter((id) => !existing.has(id));
  }

  const segments = new Map<string, string[]>();
  const contactsByClient = new Map<string, ContactsTable[]>();
  for (const ids of chunk([...known], ID_CHUNK)) {
    for (const s of await db.selectFrom('client_segments').selectAll().where('client_id', 'in', ids).execute()) {
      (segments.get(s.client_id) ?? segments.set(s.client_id, []).get(s.client_id)!).push(s.segment);
    }
    const rows = await db.selectFrom('contacts').selectAll().where('client_id', 'in', ids).orderBy('client_id').orderBy('email').orderBy('contact_id').execute();
    for (const c of rows) (contactsByClient.get(c.client_id) ?? contactsByClient.set(c.client_id, []).get(c.client_id)!).push(c);
  }

  const roles = t.contact_roles?.length ? new Set(t.contact_roles.map((r) => r.toLowerCase())) : undefined;
  const seen = new Set<string>();
  const members: AudienceMember[] = [];
  const excluded: Exclusion[] = [];
  let considered = 0;
  for (const client of clients) {
    const enriched = { ...client, segments: (segments.get(client.client_id) ?? []).sort(), custom: parseObject(client.custom_attributes) };
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
        members.push({ contact, client: enriched });
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
