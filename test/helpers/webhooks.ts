import http from 'node:http';
import { createHmac, generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import { signProductEvents } from '../../src/engine/inbox/verify.js';

/**
 * Signing as the providers do, for tests and benchmarks: SendGrid (ECDSA P-256 over timestamp + raw
 * body, base64 DER signature; a key pair generated here, the public half exported as SendGrid shows
 * it: base64 DER), Intercom (HMAC-SHA1 of the raw body, `sha1=<hex>`), and our own product events.
 */

export interface SendGridSigner {
  /** SENDGRID_WEBHOOK_PUBLIC_KEY: base64 of the DER (SPKI) public key. */
  publicKey: string;
  headers(body: string, timestamp?: number): Record<string, string>;
}

export function sendgridSigner(): SendGridSigner {
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  return {
    publicKey: publicKey.export({ format: 'der', type: 'spki' }).toString('base64'),
    headers(body, timestamp = Math.floor(Date.now() / 1000)) {
      const signature = sign('sha256', Buffer.concat([Buffer.from(String(timestamp)), Buffer.from(body)]), { key: privateKey, dsaEncoding: 'der' }).toString('base64');
      return {
        'Content-Type': 'application/json',
        'X-Twilio-Email-Event-Webhook-Signature': signature,
        'X-Twilio-Email-Event-Webhook-Timestamp': String(timestamp),
      };
    },
  };
}

export function intercomHeaders(secret: string, body: string): Record<string, string> {
  return { 'Content-Type': 'application/json', 'X-Hub-Signature': `sha1=${createHmac('sha1', secret).update(body).digest('hex')}` };
}

export function productHeaders(secret: string, body: string, t?: number): Record<string, string> {
  return { 'Content-Type': 'application/json', 'X-CS-MCP-Signature': signProductEvents(secret, body, t) };
}

export const eventId = () => randomBytes(16).toString('base64url');

/** One SendGrid event as the Event Webhook posts it; custom_args come flattened into the event. */
export function sgEvent(event: string, email: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    email,
    timestamp: Math.floor(Date.now() / 1000),
    'smtp-id': `<${eventId()}@ismtpd-1>`,
    event,
    sg_event_id: eventId(),
    sg_message_id: `${eventId()}.filterdrecv-1-2-3`,
    ...extra,
  };
}

export function intercomNotification(topic: string, item: Record<string, unknown>, id = `notif_${eventId()}`): Record<string, unknown> {
  return {
    type: 'notification_event',
    app_id: 'app123',
    data: { type: 'notification_event_data', item },
    links: {},
    id,
    topic,
    delivery_status: 'pending',
    delivery_attempts: 1,
    delivered_at: 0,
    first_sent_at: Math.floor(Date.now() / 1000),
    created_at: Math.floor(Date.now() / 1000),
  };
}

/**
 * A provider's delivery: one POST on a connection of its own. (A kept-alive connection that the server
 * closes for idleness just as the next request reuses it ends in ECONNRESET: a race of the client, not
 * of the server under test, and the providers retry such a delivery.)
 */
export async function post(url: string, body: string, headers: Record<string, string>): Promise<{ status: number; body: any }> {
  const { status, text } = await new Promise<{ status: number; text: string }>((resolve, reject) => {
    const req = http.request(url, { method: 'POST', agent: false, headers: { ...headers, 'Content-Length': String(Buffer.byteLength(body)) } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // not JSON
  }
  return { status, body: parsed };
}
