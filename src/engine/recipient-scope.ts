import type { ClientsTable, ContactsTable } from '../store/schema.js';
import type { Channel, MessageContent } from './delivery/message.js';

/**
 * What every producer (campaigns, automations) builds the same way for a roster contact: the
 * `contact` and `client` template variables (so a template means the same thing wherever it is used),
 * and the message delivery receives.
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

/** The rendered message for a contact on a channel; the sender applies to SendGrid email only. */
export function messageContent(contact: ContactsTable, rendered: { subject: string; text: string; html?: string }, channel: Channel, sender: { email?: string; name?: string }): MessageContent {
  return {
    subject: rendered.subject,
    text: rendered.text,
    html: rendered.html,
    to_email: contact.email,
    to_name: contact.name ?? undefined,
    external_user_id: contact.external_user_id ?? undefined,
    intercom_contact_id: contact.intercom_contact_id ?? undefined,
    intercom_role: contact.intercom_role === 'user' || contact.intercom_role === 'lead' ? contact.intercom_role : undefined,
    from_email: channel === 'email' ? sender.email : undefined,
    from_name: channel === 'email' ? sender.name : undefined,
  };
}
