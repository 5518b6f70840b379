import { createHash } from 'node:crypto';
import { jsonTextTooDeep, TOO_DEEP } from '../../validation.js';

/**
 * Verified request bodies → one inbox record per event. Parsing only checks what storage needs (an
 * id to deduplicate by, a type, a time): what an event means is decided later, by the processor, so a
 * signed batch is never refused for one odd event (the provider would retry it for a day).
 */

export const ENDPOINTS = ['sendgrid', 'intercom', 'events'] as const;
export type Endpoint = (typeof ENDPOINTS)[number];

export interface InboxRecord {
  provider: Endpoint;
  dedup_key: string;
  event_type: string;
  email: string | null;
  occurred_at: string;
  payload: string;
}

/** The body is not what the endpoint accepts: 400, nothing stored. */
export class BadPayload extends Error {
  constructor(
    message: string,
    readonly problems: string[] = [],
  ) {
    super(message);
  }
}

/** Most events a single request may carry (SendGrid posts at most about 768 kB a batch). */
export const MAX_EVENTS_PER_REQUEST = 10_000;

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
/**
 * A provider's string (or number) as text we can store: trimmed, and with NUL characters replaced —
 * neither database stores them in text the same way, and a signed event must never be refused for one.
 */
export function str(v: unknown): string | undefined {
  if (typeof v === 'number') return String(v);
  if (typeof v !== 'string') return undefined;
  const t = v.replace(/\u0000/g, '\uFFFD').trim();
  return t || undefined;
}
const lowerEmail = (v: unknown): string | null => str(v)?.toLowerCase().slice(0, 320) ?? null;

/** Unix seconds (or ms) or an ISO string → ISO; anything else: the fallback. */
export function toIso(v: unknown, fallback: string): string {
  if (typeof v === 'number' && Number.isFinite(v) && v > 0) return new Date(v < 1e12 ? v * 1000 : v).toISOString();
  if (typeof v === 'string' && v.trim()) {
    const n = Number(v);
    if (Number.isFinite(n) && /^\d+(\.\d+)?$/.test(v.trim())) return toIso(n, fallback);
    const t = Date.parse(v);
    if (Number.isFinite(t)) return new Date(t).toISOString();
  }
  return fallback;
}

const digest = (text: string) => createHash('sha256').update(text).digest('base64url').slice(0, 32);

function parseJson(body: Buffer): unknown {
  const text = body.toString('utf8');
  // Refused before parsing: code that walks an event (serializing it, reading it) recurses.
  if (jsonTextTooDeep(text)) throw new BadPayload(`The body is ${TOO_DEEP}.`);
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new BadPayload(`The body is not valid JSON (${(err as Error).message}).`);
  }
}

/** SendGrid posts a JSON array of events, each with sg_event_id (unique per event) and event. */
export function parseSendGrid(body: Buffer, now: string): InboxRecord[] {
  const events = parseJson(body);
  if (!Array.isArray(events)) throw new BadPayload('SendGrid posts a JSON array of events.');
  if (events.length > MAX_EVENTS_PER_REQUEST) throw new BadPayload(`At most ${MAX_EVENTS_PER_REQUEST} events per request.`);
  return events.map((e) => {
    const json = JSON.stringify(e);
    const ev = isObject(e) ? e : {};
    // Without an id (never seen from SendGrid) the event's own content is its identity.
    const id = str(ev.sg_event_id) ?? `sha256:${digest(json)}`;
    return {
      provider: 'sendgrid',
      dedup_key: `sendgrid:${id}`,
      event_type: str(ev.event)?.slice(0, 64) ?? 'unknown',
      email: lowerEmail(ev.email),
      occurred_at: toIso(ev.timestamp, now),
      payload: json,
    };
  });
}

/** Intercom posts one notification_event: {id, topic, created_at, data: {item}}. A `ping` has nothing to store. */
export function parseIntercom(body: Buffer, now: string): { ping: boolean; records: InboxRecord[]; sentAt?: number } {
  const n = parseJson(body);
  if (!isObject(n)) throw new BadPayload('Intercom posts a notification object.');
  const topic = str(n.topic);
  if (!topic) throw new BadPayload('The notification has no topic.');
  if (topic === 'ping') return { ping: true, records: [] };
  const json = JSON.stringify(n);
  const id = str(n.id) ?? `sha256:${digest(json)}`;
  const item = isObject(n.data) && isObject(n.data.item) ? n.data.item : {};
  const contact = isObject(item.contact) ? item.contact : item;
  return {
    ping: false,
    // When Intercom created it (epoch seconds), else when it first sent it: what dates a delivery.
    sentAt: epochSeconds(n.created_at) ?? epochSeconds(n.first_sent_at),
    records: [{ provider: 'intercom', dedup_key: `intercom:${id}`, event_type: topic.slice(0, 100), email: lowerEmail(contact.email), occurred_at: toIso(n.created_at, now), payload: json }],
  };
}

function epochSeconds(v: unknown): number | undefined {
  const n = typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : v;
  return typeof n === 'number' && Number.isFinite(n) && n > 0 ? n : undefined;
}

export const PRODUCT_EVENT_NAME = /^[A-Za-z][A-Za-z0-9_.:-]{0,99}$/;
const MAX_PROPERTIES_BYTES = 16 * 1024;

/**
 * Product events: {"events": [{id, name, occurred_at?, email? | user_id? | client_id?, properties?}]}.
 * Our own product is the sender, so a malformed event refuses the whole batch with every problem listed.
 */
export function parseProductEvents(body: Buffer, now: string, reservedNames: ReadonlySet<string>): InboxRecord[] {
  const doc = parseJson(body);
  const events = isObject(doc) ? doc.events : undefined;
  if (!Array.isArray(events)) throw new BadPayload('Send {"events": [ … ]}.');
  if (events.length > MAX_EVENTS_PER_REQUEST) throw new BadPayload(`At most ${MAX_EVENTS_PER_REQUEST} events per request.`);
  const problems: string[] = [];
  const records: InboxRecord[] = [];
  events.forEach((e, i) => {
    const at = `events[${i}]`;
    if (!isObject(e)) return void problems.push(`${at}: must be an object`);
    const id = str(e.id);
    const name = str(e.name);
    if (!id || id.length > 200) problems.push(`${at}.id: required, a string of at most 200 characters (your event id, used to deduplicate)`);
    if (!name || !PRODUCT_EVENT_NAME.test(name)) problems.push(`${at}.name: required, letters, digits, _ . : - (at most 100), starting with a letter`);
    else if (reservedNames.has(name)) problems.push(`${at}.name: "${name}" is reserved (the roster's own events and the provider events are recorded by this server only); choose another name`);
    if (!str(e.email) && !str(e.user_id) && !str(e.client_id)) problems.push(`${at}: name the customer with email, user_id or client_id`);
    if (e.properties !== undefined && !isObject(e.properties)) problems.push(`${at}.properties: must be an object`);
    else if (e.properties && JSON.stringify(e.properties).length > MAX_PROPERTIES_BYTES) problems.push(`${at}.properties: at most ${MAX_PROPERTIES_BYTES} bytes of JSON`);
    if (e.occurred_at !== undefined && toIso(e.occurred_at, '') === '') problems.push(`${at}.occurred_at: an ISO-8601 time or Unix seconds`);
    if (problems.length) return;
    records.push({ provider: 'events', dedup_key: `events:${id}`, event_type: name!, email: lowerEmail(e.email), occurred_at: toIso(e.occurred_at, now), payload: JSON.stringify(e) });
  });
  if (problems.length) throw new BadPayload(`${problems.length} problem(s) in the batch; nothing was stored.`, problems.slice(0, 50));
  return records;
}
