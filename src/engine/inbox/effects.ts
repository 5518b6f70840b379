import type { Kysely } from 'kysely';
import type { CustomerEventInput } from '../../store/customer-events.js';
import type { Database } from '../../store/schema.js';
import { normalizeAddress } from '../../store/suppressions.js';
import type { TimelineInput } from '../../store/timeline.js';
import type { ConsentChange, EngagementKind, Interpretation } from './interpret.js';
import type { Endpoint } from './parse.js';
import type { InboxRow, InboxState } from './repository.js';

/**
 * Whom a batch of events concerns and what each does: the messages and contacts they name (found in a
 * few queries), then the rows to write — customer events, timeline entries, consent changes, per-message
 * counts, Intercom links — and each event's outcome. Reads only; the processor writes the plan.
 */

interface OutboxRef {
  idempotency_key: string;
  source_kind: string;
  source_id: string;
  channel: string;
  contact_id: string;
  client_id: string;
  recipient_email: string;
  provider_message_id: string | null;
  /** An automation message: `<enrollment_id>:<step>`. */
  source_ref: string | null;
}

interface ContactRef {
  contact_id: string;
  client_id: string;
  email: string;
  external_user_id: string | null;
  intercom_contact_id: string | null;
}

/** Whom an event is recorded for: a roster contact, or a client alone (a product event for an unknown user). */
interface Target {
  client_id: string;
  contact_id: string | null;
  intercom_contact_id?: string | null;
}

export interface Lookups {
  byKey: Map<string, OutboxRef>;
  byProviderId: Map<string, OutboxRef[]>;
  contactsById: Map<string, ContactRef>;
  byEmail: Map<string, ContactRef[]>;
  byIntercom: Map<string, ContactRef[]>;
  byExternal: Map<string, ContactRef[]>;
  clients: Set<string>;
  /** The chain depth of each automation enrolment whose message an event is about. */
  enrolmentDepth: Map<string, number>;
}

export interface Plan {
  consent: Array<{ change: ConsentChange; emails: string[]; source: string; at: string; data: Record<string, unknown> }>;
  events: CustomerEventInput[];
  timeline: TimelineInput[];
  engagement: Array<{ outbox_key: string; kind: EngagementKind; source_kind: string; source_id: string; channel: string; first_at: string }>;
  links: Array<{ contact_id: string; intercom_contact_id: string; role?: string }>;
  outcomes: Map<string, { ids: number[]; state: InboxState; note: string }>;
}

const ID_CHUNK = 500;
const TIMELINE_CHANNEL: Record<Endpoint, string> = { sendgrid: 'sendgrid', intercom: 'intercom', events: 'product' };
const UNMATCHED: Record<Endpoint, string> = {
  sendgrid: 'no message of ours and no roster contact with this address (kept)',
  intercom: 'no roster contact with this Intercom id, user id or email (kept)',
  events: 'no roster client or contact matches (kept)',
};

export function chunks<T>(items: T[], size = ID_CHUNK): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

function push<K, V>(m: Map<K, V[]>, k: K, v: V) {
  const list = m.get(k);
  if (list) list.push(v);
  else m.set(k, [v]);
}

/**
 * Every message and contact the batch names, in a few queries: messages by our key first; only the
 * events that key does not settle are looked up by the provider's message id and by whom they name.
 */
export async function lookup(db: Kysely<Database>, meanings: Interpretation[]): Promise<Lookups> {
  const distinct = (values: Array<string | undefined>) => [...new Set(values.filter((v): v is string => !!v))];
  const outboxCols = ['idempotency_key', 'source_kind', 'source_id', 'channel', 'contact_id', 'client_id', 'recipient_email', 'provider_message_id', 'source_ref'] as const;
  const l: Lookups = { byKey: new Map(), byProviderId: new Map(), contactsById: new Map(), byEmail: new Map(), byIntercom: new Map(), byExternal: new Map(), clients: new Set(), enrolmentDepth: new Map() };
  for (const part of chunks(distinct(meanings.map((m) => m.identity.outbox_key)))) {
    for (const r of await db.selectFrom('outbox').select(outboxCols).where('idempotency_key', 'in', part).execute()) l.byKey.set(r.idempotency_key, r);
  }
  // (Only SendGrid events carry our key, always with the recipient's address: a key whose message went to
  // another address settles nothing.)
  const rest = meanings.filter((m) => {
    const byKey = m.identity.outbox_key ? l.byKey.get(m.identity.outbox_key) : undefined;
    return !byKey || !sameAddress(byKey.recipient_email, m.identity.email);
  });
  for (const part of chunks(distinct(rest.flatMap((m) => m.identity.message_ids ?? [])))) {
    for (const r of await db.selectFrom('outbox').select(outboxCols).where('provider_message_id', 'in', part).execute()) push(l.byProviderId, r.provider_message_id!, r);
  }
  const messages = [...l.byKey.values(), ...[...l.byProviderId.values()].flat()];
  // An automation's message carries its enrolment's cause: events about it continue that chain.
  for (const part of chunks(distinct(messages.map(enrolmentOf)))) {
    for (const r of await db.selectFrom('workflow_enrollments').select(['enrollment_id', 'depth']).where('enrollment_id', 'in', part).execute()) l.enrolmentDepth.set(r.enrollment_id, Number(r.depth));
  }
  const contactCols = ['contact_id', 'client_id', 'email', 'external_user_id', 'intercom_contact_id'] as const;
  const add = (c: ContactRef) => {
    if (l.contactsById.has(c.contact_id)) return;
    l.contactsById.set(c.contact_id, c);
    push(l.byEmail, c.email, c);
    if (c.intercom_contact_id) push(l.byIntercom, c.intercom_contact_id, c);
    if (c.external_user_id) push(l.byExternal, c.external_user_id, c);
  };
  const by = async (col: 'contact_id' | 'email' | 'intercom_contact_id' | 'external_user_id', values: string[]) => {
    for (const part of chunks(values)) for (const c of await db.selectFrom('contacts').select(contactCols).where(col, 'in', part).execute()) add(c);
  };
  await by('contact_id', distinct(messages.map((m) => m.contact_id)));
  // Events not tied to a message by our key are found by whom they name, in case no message matches.
  await by('email', distinct(rest.map((m) => m.identity.email)));
  await by('intercom_contact_id', distinct(rest.map((m) => m.identity.intercom_contact_id)));
  await by('external_user_id', distinct(rest.map((m) => m.identity.external_user_id)));
  for (const part of chunks(distinct(rest.map((m) => m.identity.client_id)))) {
    for (const c of await db.selectFrom('clients').select('client_id').where('client_id', 'in', part).execute()) l.clients.add(c.client_id);
  }
  return l;
}

const sameAddress = (a: string | undefined, b: string | undefined) => !!a && !!b && normalizeAddress(a) === normalizeAddress(b);

/** The enrolment that sent an automation message. */
function enrolmentOf(m: OutboxRef): string | undefined {
  return m.source_kind === 'automation' && m.source_ref ? m.source_ref.slice(0, m.source_ref.lastIndexOf(':')) : undefined;
}

/**
 * The chain depth of an event about this message: an automation's message passes its enrolment's depth
 * on, one deeper (a workflow's email delivered is one more link of the chain that sent it); anything else
 * starts a chain (0). An enrolment no longer stored counts as deeper than any chain may go.
 */
const BEYOND_ANY_CHAIN = 100; // AUTOMATION_MAX_CHAIN_DEPTH is at most 10
export function causeDepth(message: OutboxRef | undefined, l: Lookups): number {
  const en = message && enrolmentOf(message);
  if (!en) return 0;
  const d = l.enrolmentDepth.get(en);
  return d === undefined ? BEYOND_ANY_CHAIN : d + 1;
}

/** The message an event is about, if it is one of ours. */
function findMessage(provider: Endpoint, m: Interpretation, l: Lookups): OutboxRef | undefined {
  const byKey = m.identity.outbox_key ? l.byKey.get(m.identity.outbox_key) : undefined;
  // Our key ties an event to a message only when the event is about that message's recipient: a key
  // copied into another message (to another address) must not touch the first one's counts or consent.
  if (byKey && (provider !== 'sendgrid' || sameAddress(byKey.recipient_email, m.identity.email))) return byKey;
  for (const id of m.identity.message_ids ?? []) {
    // One SendGrid request may carry several recipients under one X-Message-Id: the address decides.
    const found = (l.byProviderId.get(id) ?? []).find((r) =>
      provider === 'sendgrid' ? r.channel === 'email' && sameAddress(r.recipient_email, m.identity.email) : r.channel !== 'email',
    );
    if (found) return found;
  }
  return undefined;
}

function findTargets(provider: Endpoint, m: Interpretation, message: OutboxRef | undefined, l: Lookups): { targets: Target[]; note?: string } {
  const asTarget = (c: ContactRef): Target => ({ client_id: c.client_id, contact_id: c.contact_id, intercom_contact_id: c.intercom_contact_id });
  if (message) return { targets: [asTarget(l.contactsById.get(message.contact_id) ?? { ...message, email: message.recipient_email, external_user_id: null, intercom_contact_id: null })] };
  const { email, intercom_contact_id: icId, external_user_id: ext, client_id } = m.identity;
  if (provider === 'events' && client_id) {
    if (!l.clients.has(client_id)) return { targets: [] };
    const atClient = (list?: ContactRef[]) => list?.filter((c) => c.client_id === client_id) ?? [];
    const contacts = ext ? atClient(l.byExternal.get(ext)) : email ? atClient(l.byEmail.get(email)) : [];
    if (contacts.length) return { targets: contacts.map(asTarget) };
    return { targets: [{ client_id, contact_id: null }], note: ext || email ? 'recorded for the client (the named person is not a roster contact)' : undefined };
  }
  const candidates = [icId && l.byIntercom.get(icId), ext && l.byExternal.get(ext), email && l.byEmail.get(email)];
  const found = candidates.find((c): c is ContactRef[] => Array.isArray(c) && c.length > 0) ?? [];
  return { targets: found.map(asTarget) };
}

export function planEffects(items: Array<{ row: InboxRow; meaning: Interpretation }>, l: Lookups): Plan {
  const plan: Plan = { consent: [], events: [], timeline: [], engagement: [], links: [], outcomes: new Map() };
  const settle = (id: number, state: InboxState, note: string) => {
    const k = `${state}\u0000${note}`;
    const o = plan.outcomes.get(k);
    if (o) o.ids.push(id);
    else plan.outcomes.set(k, { ids: [id], state, note });
  };
  for (const { row, meaning: m } of items) {
    const provider = row.provider as Endpoint;
    if (m.ignored) {
      settle(row.inbox_id, 'ignored', m.ignored);
      continue;
    }
    if (m.noAction) {
      settle(row.inbox_id, 'processed', m.noAction);
      continue;
    }
    const source = `webhook:${provider}`;
    const providerEventId = row.dedup_key.slice(row.dedup_key.indexOf(':') + 1);
    const message = findMessage(provider, m, l);
    const { targets, note } = findTargets(provider, m, message, l);
    const origin = message
      ? { outbox_key: message.idempotency_key, channel: message.channel, [message.source_kind === 'campaign' ? 'campaign_id' : 'workflow_id']: message.source_id }
      : {};
    const properties = { ...m.properties, ...(provider === 'sendgrid' && m.identity.email ? { email: m.identity.email } : {}), ...origin };

    if (m.consent) {
      // Consent is about the address the event names (SendGrid: always the recipient's; whatever roster
      // row, if any, carries it). An Intercom event may name only its contact: then the roster contacts
      // linked to that Intercom contact give the address.
      const named = provider === 'sendgrid' ? [m.identity.email] : [m.identity.email, ...targets.map((t) => (t.contact_id ? l.contactsById.get(t.contact_id)?.email : undefined))];
      const emails = [...new Set(named.filter((e): e is string => !!e).map(normalizeAddress))];
      if (emails.length) plan.consent.push({ change: m.consent, emails, source: provider, at: row.occurred_at, data: { event: row.event_type, event_id: providerEventId, ...origin } });
    }
    if (!targets.length) {
      settle(row.inbox_id, 'unmatched', UNMATCHED[provider]);
      continue;
    }
    targets.forEach((t) => {
      if (m.name) {
        plan.events.push({
          name: m.name,
          client_id: t.client_id,
          contact_id: t.contact_id,
          properties,
          occurred_at: row.occurred_at,
          source,
          // An automation message's key begins with its workflow id: the workflow that caused this event (see causedBy).
          source_ref: message?.idempotency_key ?? null,
          depth: causeDepth(message, l),
          // One event per contact: a second contact sharing the address gets its own key.
          dedup_key: targets.length > 1 ? `${row.dedup_key}:${t.contact_id ?? t.client_id}` : row.dedup_key,
        });
      }
      if (m.timeline) {
        plan.timeline.push({
          client_id: t.client_id,
          contact_id: t.contact_id,
          occurred_at: row.occurred_at,
          type: 'inbound_event',
          channel: TIMELINE_CHANNEL[provider],
          actor: source,
          summary: message ? `${m.timeline.summary} (${message.source_kind} ${message.source_id}, ${message.channel})` : m.timeline.summary,
          outcome: m.timeline.outcome,
          provider_ids: { event_id: providerEventId },
          data: { event: row.event_type, name: m.name, received_at: row.received_at, ...properties },
        });
      }
      if (m.intercom && t.contact_id && !t.intercom_contact_id) {
        plan.links.push({ contact_id: t.contact_id, intercom_contact_id: m.intercom.id, role: m.intercom.role });
      }
    });
    if (message && m.engagement) {
      plan.engagement.push({ outbox_key: message.idempotency_key, kind: m.engagement, source_kind: message.source_kind, source_id: message.source_id, channel: message.channel, first_at: row.occurred_at });
    }
    settle(row.inbox_id, 'processed', note ?? 'recorded');
  }
  // The same message and kind twice in one batch (an open and its repeat): one row.
  const seen = new Set<string>();
  plan.engagement = plan.engagement.filter((e) => {
    const k = `${e.outbox_key}\u0000${e.kind}`;
    return !seen.has(k) && (seen.add(k), true);
  });
  return plan;
}
