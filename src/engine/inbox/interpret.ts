import type { EmailStatus } from '../../store/consent.js';
import { str, type Endpoint } from './parse.js';

/**
 * What one stored event means, provider by provider: the customer event it becomes, whom it is
 * about (how to find the message and the contact), what it does to consent and to the message's
 * counts, and the line it adds to the timeline. Pure: the processor resolves and applies it.
 */

export type EngagementKind = 'delivered' | 'bounced' | 'dropped' | 'opened' | 'clicked' | 'replied' | 'unsubscribed' | 'spam_reported';
export const ENGAGEMENT_KINDS: EngagementKind[] = ['delivered', 'bounced', 'dropped', 'opened', 'clicked', 'replied', 'unsubscribed', 'spam_reported'];

export interface Identity {
  /** Our outbox key, echoed by SendGrid from custom_args. */
  outbox_key?: string;
  /** The provider's message id, as we may have stored it (SendGrid's X-Message-Id, Intercom's message id). */
  message_ids?: string[];
  email?: string;
  intercom_contact_id?: string;
  external_user_id?: string;
  client_id?: string;
}

/**
 * A change to the suppression list. `scope` is what it covers (`email`, `sendgrid_group:<id>`,
 * `intercom`); `source` who reported it (`sendgrid`, `intercom:<contact id>`): a resubscribe lifts only
 * what the same source set on the same scope.
 */
export type ConsentChange =
  | { kind: 'suppress'; status: EmailStatus; reason: string; scope: string; source: string }
  | { kind: 'resubscribe'; statuses: Array<'unsubscribed' | 'group_unsubscribed'>; scope: string; source: string };

export interface Interpretation {
  identity: Identity;
  /** The customer event's name; absent: nothing to record for the customer. */
  name?: string;
  properties: Record<string, unknown>;
  /** Counted once per message for campaign / workflow reports. */
  engagement?: EngagementKind;
  consent?: ConsentChange;
  timeline?: { summary: string; outcome: 'success' | 'failed' | 'unknown' };
  /** Intercom's id and role for the matched roster contacts. */
  intercom?: { id: string; role?: 'user' | 'lead' };
  /** Set when the event needs nothing at all: state `ignored`, with this note. */
  ignored?: string;
  /** Set when the event needs nothing beyond being kept: state `processed`, with this note. */
  noAction?: string;
}

/** The names SendGrid's events about one email we sent are recorded under. */
export const EMAIL_MESSAGE_EVENT_NAMES = [
  'email_delivered',
  'email_opened',
  'email_clicked',
  'email_bounced',
  'email_deferred',
  'email_dropped',
  'email_unsubscribed',
  'email_group_unsubscribed',
  'email_group_resubscribed',
  'email_spam_reported',
] as const;

/** The names inbound provider events are recorded under; product events may not use them. */
export const PROVIDER_EVENT_NAMES = new Set<string>([
  ...EMAIL_MESSAGE_EVENT_NAMES,
  'email_resubscribed',
  'intercom_contact_created',
  'intercom_contact_updated',
  'tag_added',
  'tag_removed',
  'conversation_started',
  'replied',
]);

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);
const cut = (v: string | undefined, n = 500) => (v && v.length > n ? `${v.slice(0, n)}…` : v);

export function interpret(provider: Endpoint, eventType: string, payload: string): Interpretation {
  const data = JSON.parse(payload) as unknown;
  if (!isObject(data)) return { identity: {}, properties: {}, ignored: 'not an event object' };
  if (provider === 'sendgrid') return sendgrid(data);
  if (provider === 'intercom') return intercom(eventType, data);
  return product(data);
}

/** "Bounced Address", "Unsubscribed Address", "Spam Reporting Address", "Invalid": the address itself is refused. */
const ADDRESS_DROP = /bounced address|unsubscribed address|spam reporting address|^invalid$|invalid (e-?mail|address)/i;

/** SendGrid's X-Message-Id is the part of sg_message_id before ".filter…" (older ids: before the first dot). */
export function sendgridMessageIds(sgMessageId: string | undefined): string[] {
  if (!sgMessageId) return [];
  return [...new Set([sgMessageId.split('.filter')[0]!, sgMessageId.split('.')[0]!, sgMessageId].filter(Boolean))];
}

function sendgrid(e: Json): Interpretation {
  const email = str(e.email)?.toLowerCase();
  const identity: Identity = { outbox_key: str(e.outbox_key), message_ids: sendgridMessageIds(str(e.sg_message_id)), email };
  const base = { identity, properties: {} as Json };
  switch (str(e.event)) {
    case 'processed':
      return { ...base, noAction: 'accepted by SendGrid; nothing to record' };
    case 'delivered':
      return { ...base, name: 'email_delivered', engagement: 'delivered', timeline: { summary: 'Email delivered to the mailbox', outcome: 'success' } };
    case 'deferred': {
      const response = cut(str(e.response), 300);
      return {
        ...base,
        name: 'email_deferred',
        properties: { response, attempt: str(e.attempt) },
        timeline: { summary: `Email delivery deferred by the receiving server${response ? `: ${response}` : ''} (SendGrid keeps trying)`, outcome: 'unknown' },
      };
    }
    case 'bounce': {
      // `blocked` is a temporary refusal; `bounce` (or no type, SendGrid's classic event) is permanent.
      const type = str(e.type) ?? 'bounce';
      const reason = cut(str(e.reason) ?? str(e.response) ?? 'no reason given');
      const hard = type === 'bounce';
      return {
        ...base,
        name: 'email_bounced',
        properties: { type, reason, status: str(e.status), classification: str(e.bounce_classification) },
        engagement: 'bounced',
        consent: hard ? { kind: 'suppress', status: 'bounced', reason: reason ?? 'hard bounce', scope: 'email', source: 'sendgrid' } : undefined,
        timeline: { summary: `Email ${hard ? 'bounced' : 'blocked (temporary)'}: ${reason}`, outcome: 'failed' },
      };
    }
    case 'dropped': {
      const reason = cut(str(e.reason) ?? 'no reason given')!;
      return {
        ...base,
        name: 'email_dropped',
        properties: { reason },
        engagement: 'dropped',
        consent: ADDRESS_DROP.test(reason) ? { kind: 'suppress', status: 'dropped', reason, scope: 'email', source: 'sendgrid' } : undefined,
        timeline: { summary: `Email dropped by SendGrid (not sent): ${reason}`, outcome: 'failed' },
      };
    }
    case 'open': {
      const machine = e.sg_machine_open === true || e.sg_machine_open === 'true';
      return {
        ...base,
        name: 'email_opened',
        properties: machine ? { machine_open: true } : {},
        engagement: 'opened',
        timeline: { summary: machine ? 'Email opened (by a mail client prefetching images)' : 'Email opened', outcome: 'success' },
      };
    }
    case 'click': {
      const url = cut(str(e.url), 2000);
      return { ...base, name: 'email_clicked', properties: { url }, engagement: 'clicked', timeline: { summary: `Link clicked: ${cut(url, 200) ?? '(no url)'}`, outcome: 'success' } };
    }
    case 'spamreport':
      return {
        ...base,
        name: 'email_spam_reported',
        engagement: 'spam_reported',
        consent: { kind: 'suppress', status: 'spam_report', reason: 'marked an email as spam', scope: 'email', source: 'sendgrid' },
        timeline: { summary: 'Email marked as spam by the recipient', outcome: 'success' },
      };
    case 'unsubscribe':
      return {
        ...base,
        name: 'email_unsubscribed',
        engagement: 'unsubscribed',
        consent: { kind: 'suppress', status: 'unsubscribed', reason: 'unsubscribed through the email\'s unsubscribe link', scope: 'email', source: 'sendgrid' },
        timeline: { summary: 'Unsubscribed from all email (SendGrid unsubscribe link)', outcome: 'success' },
      };
    case 'group_unsubscribe':
    case 'group_resubscribe': {
      const group = str(e.asm_group_id);
      const reason = `unsubscribe group ${group ?? 'unknown'}`;
      if (e.event === 'group_unsubscribe') {
        return {
          ...base,
          name: 'email_group_unsubscribed',
          properties: { group_id: group },
          engagement: 'unsubscribed',
          // Any group stops every email (this server's marketing email all goes out under one group, so be
          // safe); only the same group's resubscribe lifts it.
          consent: { kind: 'suppress', status: 'group_unsubscribed', reason, scope: `sendgrid_group:${group ?? 'unknown'}`, source: 'sendgrid' },
          timeline: { summary: `Unsubscribed from SendGrid ${reason}`, outcome: 'success' },
        };
      }
      return {
        ...base,
        name: 'email_group_resubscribed',
        properties: { group_id: group },
        consent: { kind: 'resubscribe', statuses: ['group_unsubscribed'], scope: `sendgrid_group:${group ?? 'unknown'}`, source: 'sendgrid' },
        timeline: { summary: `Resubscribed to SendGrid ${reason}`, outcome: 'success' },
      };
    }
    default:
      return { ...base, ignored: `SendGrid event "${str(e.event) ?? '?'}" is not one this server acts on` };
  }
}

/** The Intercom contact a notification is about: the item itself, its `contact`, or a conversation's first contact / author. */
function intercomContact(item: Json): { id?: string; external_id?: string; email?: string; role?: 'user' | 'lead' } {
  const roleOf = (v: unknown) => (v === 'user' || v === 'lead' ? v : undefined);
  if (item.type === 'contact') return { id: str(item.id), external_id: str(item.external_id), email: str(item.email)?.toLowerCase(), role: roleOf(item.role) };
  if (isObject(item.contact)) return intercomContact({ ...item.contact, type: 'contact' });
  const listed = isObject(item.contacts) && Array.isArray(item.contacts.contacts) ? item.contacts.contacts.find(isObject) : undefined;
  const author = isObject(item.source) && isObject(item.source.author) ? item.source.author : undefined;
  return {
    id: str(listed?.id) ?? (author && roleOf(author.type) ? str(author.id) : undefined),
    external_id: str(listed?.external_id),
    email: str(author?.email)?.toLowerCase(),
    role: roleOf(author?.type),
  };
}

function intercom(topic: string, n: Json): Interpretation {
  const item = isObject(n.data) && isObject(n.data.item) ? n.data.item : {};
  const c = intercomContact(item);
  const identity: Identity = { intercom_contact_id: c.id, external_user_id: c.external_id, email: c.email };
  const link = c.id ? { id: c.id, role: c.role } : undefined;
  const tag = isObject(item.tag) ? str(item.tag.name) : undefined;
  const base = { identity, properties: { intercom_contact_id: c.id } as Json, intercom: link };
  const intercomSource = c.id ? `intercom:${c.id}` : 'intercom';
  if (/^contact\.(user|lead)\.created$/.test(topic)) {
    return { ...base, name: 'intercom_contact_created', timeline: { summary: `Intercom contact created (${c.role ?? topic.split('.')[1]})`, outcome: 'success' } };
  }
  if (/^contact\.(user|lead)\.updated$/.test(topic)) {
    return { ...base, name: 'intercom_contact_updated', timeline: { summary: 'Intercom contact updated', outcome: 'success' } };
  }
  if (topic === 'contact.unsubscribed') {
    return {
      ...base,
      name: 'email_unsubscribed',
      consent: { kind: 'suppress', status: 'unsubscribed', reason: 'unsubscribed from emails in Intercom', scope: 'intercom', source: intercomSource },
      timeline: { summary: 'Unsubscribed from emails (Intercom)', outcome: 'success' },
    };
  }
  if (topic === 'contact.subscribed') {
    return {
      ...base,
      name: 'email_resubscribed',
      // Intercom undoes only what this Intercom contact reported: a SendGrid unsubscribe, a bounce, or
      // another Intercom contact's unsubscribe (a lead and a user sharing the address) stays.
      consent: { kind: 'resubscribe', statuses: ['unsubscribed'], scope: 'intercom', source: intercomSource },
      timeline: { summary: 'Resubscribed to emails (Intercom)', outcome: 'success' },
    };
  }
  if (/^contact\.(user|lead)\.tag\.(created|deleted)$/.test(topic)) {
    const added = topic.endsWith('created');
    return { ...base, name: added ? 'tag_added' : 'tag_removed', properties: { ...base.properties, tag }, timeline: { summary: `Tag "${tag ?? '?'}" ${added ? 'added' : 'removed'} in Intercom`, outcome: 'success' } };
  }
  if (topic === 'conversation.user.created' || topic === 'conversation.user.replied') {
    const conversationId = str(item.id);
    const started = topic === 'conversation.user.created';
    // A reply to a message we sent: the conversation's source is that message.
    const sourceId = isObject(item.source) ? str(item.source.id) : undefined;
    return {
      ...base,
      identity: { ...identity, message_ids: started || !sourceId ? undefined : [sourceId] },
      name: started ? 'conversation_started' : 'replied',
      properties: { ...base.properties, conversation_id: conversationId },
      engagement: started ? undefined : 'replied',
      timeline: { summary: started ? 'Started a conversation in Intercom' : 'Replied in an Intercom conversation', outcome: 'success' },
    };
  }
  return { ...base, intercom: undefined, ignored: `Intercom topic "${topic}" is not one this server acts on` };
}

function product(e: Json): Interpretation {
  const name = str(e.name)!;
  return {
    identity: { email: str(e.email)?.toLowerCase(), external_user_id: str(e.user_id), client_id: str(e.client_id) },
    name,
    properties: { ...(isObject(e.properties) ? e.properties : {}), event_id: str(e.id) },
    timeline: { summary: `Product event "${name}"`, outcome: 'success' },
  };
}
