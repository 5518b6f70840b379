import type { ContactsTable } from './schema.js';
import { sourceName, type SuppressionRow } from './suppressions.js';

/**
 * One rule for "may we message this contact on this channel?", used by every path that reaches a
 * customer: campaign previews, the outbox at the moment of sending, automations and the direct send
 * tools. `unsubscribed` stops every message; an email suppression (unsubscribed by email, hard bounce,
 * spam report) stops the channels that reach the mailbox, not in-app messages.
 */

export type ConsentField = Pick<
  ContactsTable,
  'email' | 'unsubscribed' | 'unsubscribed_at' | 'unsubscribe_source' | 'unsubscribe_reason' | 'email_status' | 'email_status_at' | 'email_status_source' | 'email_status_reason'
>;

export interface ConsentBlock {
  /** `unsubscribed` (every channel) or `email_suppressed` (email channels only). */
  reason: 'unsubscribed' | 'email_suppressed';
  /** For email_suppressed: unsubscribed, group_unsubscribed, bounced, spam_report, dropped. */
  kind: string;
  at: string | null;
  source: string | null;
  detail: string | null;
}

/** Email suppressions an inbound provider event can set, and what clears each. */
export const EMAIL_STATUSES = ['unsubscribed', 'group_unsubscribed', 'bounced', 'spam_report', 'dropped'] as const;
export type EmailStatus = (typeof EMAIL_STATUSES)[number];

export function consentBlock(contact: ConsentField, emailChannel: boolean): ConsentBlock | undefined {
  if (contact.unsubscribed) {
    return { reason: 'unsubscribed', kind: 'unsubscribed', at: contact.unsubscribed_at, source: contact.unsubscribe_source, detail: contact.unsubscribe_reason };
  }
  if (emailChannel && contact.email_status) {
    return { reason: 'email_suppressed', kind: contact.email_status, at: contact.email_status_at, source: contact.email_status_source, detail: contact.email_status_reason };
  }
  return undefined;
}

/** "maria@acme.example unsubscribed on 2026-11-20 (source sendgrid, reason: …)": what a refusal tells the person. */
export function describeBlock(email: string, b: ConsentBlock): string {
  const what =
    b.reason === 'unsubscribed'
      ? 'unsubscribed from all messages'
      : b.kind === 'bounced'
        ? 'has a hard-bounced email address'
        : b.kind === 'spam_report'
          ? 'reported an email as spam'
          : b.kind === 'dropped'
            ? 'has an address the email provider refuses to deliver to'
            : 'unsubscribed from emails';
  const when = b.at ? ` on ${b.at.slice(0, 10)}` : '';
  const extra = [b.source && `source: ${b.source}`, b.detail && `reason: ${b.detail}`].filter(Boolean).join(', ');
  return `${email} ${what}${when}${extra ? ` (${extra})` : ''}`;
}

/** A suppression-list row as the consent rule sees it: scope `all` stops every channel, the rest stop email. */
export function suppressionBlock(row: SuppressionRow): ConsentBlock {
  return row.scope === 'all'
    ? { reason: 'unsubscribed', kind: 'unsubscribed', at: row.set_at, source: row.source, detail: row.reason }
    : { reason: 'email_suppressed', kind: row.kind, at: row.set_at, source: sourceName(row.source), detail: row.reason };
}

/** "unsubscribed from all messages on 2026-11-20 (scope all, source: csm_request, reason: …)". */
export function describeSuppression(row: SuppressionRow): string {
  return `${describeBlock(row.address, suppressionBlock(row))} [scope ${row.scope}, set by ${row.source}]`;
}
