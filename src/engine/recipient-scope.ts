import type { ClientsTable, ContactsTable } from '../store/schema.js';

/**
 * The `contact` and `client` template variables, built one way for every producer (campaigns,
 * automations), so a template means the same thing wherever it is used.
 */

export function contactScope(contact: ContactsTable): Record<string, unknown> {
  return {
    id: contact.contact_id,
    email: contact.email,
    name: contact.name,
    first_name: contact.first_name ?? firstNameOf(contact.name),
    role: contact.role,
    phone: contact.phone,
    user_id: contact.external_user_id,
  };
}

export function clientScope(client: ClientsTable & { segments: string[]; custom: Record<string, unknown> }): Record<string, unknown> {
  return {
    id: client.client_id,
    name: client.name,
    tier: client.tier,
    lifecycle_stage: client.lifecycle_stage,
    health_score: client.health_score,
    mrr: client.mrr,
    renewal_date: client.renewal_date,
    owner: client.owner_email,
    segments: client.segments,
    custom: client.custom,
  };
}

/** Only a clear first word of a full name counts as a first name; otherwise it stays missing. */
export function firstNameOf(name: string | null): string | undefined {
  const first = name?.trim().split(/\s+/)[0];
  return first && /^[\p{L}][\p{L}'-]*$/u.test(first) ? first : undefined;
}
