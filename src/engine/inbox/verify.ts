import { createHmac, timingSafeEqual, verify as verifySignature, type KeyObject } from 'node:crypto';

/**
 * Signature checks, one per provider, over the raw body exactly as received (a re-serialized body
 * would not verify). Every comparison is constant-time; a refusal says why, for the log and the 401.
 */

export type Verification = { ok: true } | { ok: false; reason: string };

const fail = (reason: string): Verification => ({ ok: false, reason });

/** A signed Unix-seconds timestamp within `maxAgeS` of now, either way (a replayed request is refused). */
function checkTimestamp(value: string | undefined, maxAgeS: number, nowMs: number): Verification {
  if (!value || !/^\d{1,12}$/.test(value)) return fail('missing or malformed timestamp');
  const ageS = Math.abs(nowMs / 1000 - Number(value));
  if (ageS > maxAgeS) return fail(`timestamp is ${Math.round(ageS)} s away from now (allowed: ${maxAgeS} s, WEBHOOK_MAX_AGE_S): a replayed or delayed request`);
  return { ok: true };
}

/**
 * SendGrid's Signed Event Webhook: ECDSA P-256 / SHA-256 over the timestamp header followed by the
 * raw body; the signature header is the base64 of the DER-encoded signature.
 */
export function verifySendGrid(key: KeyObject, signature: string | undefined, timestamp: string | undefined, body: Buffer, maxAgeS: number, nowMs = Date.now()): Verification {
  if (!signature) return fail('missing X-Twilio-Email-Event-Webhook-Signature');
  const fresh = checkTimestamp(timestamp, maxAgeS, nowMs);
  if (!fresh.ok) return fresh;
  const sig = Buffer.from(signature, 'base64');
  if (!sig.length) return fail('malformed signature');
  let valid = false;
  try {
    valid = verifySignature('sha256', Buffer.concat([Buffer.from(timestamp!), body]), { key, dsaEncoding: 'der' }, sig);
  } catch {
    valid = false;
  }
  return valid ? { ok: true } : fail('signature does not verify with SENDGRID_WEBHOOK_PUBLIC_KEY');
}

function hexEquals(expectedHex: string, givenHex: string): boolean {
  if (!/^[0-9a-f]+$/i.test(givenHex) || givenHex.length !== expectedHex.length) return false;
  return timingSafeEqual(Buffer.from(expectedHex, 'hex'), Buffer.from(givenHex, 'hex'));
}

/** Intercom: `X-Hub-Signature: sha1=<hex HMAC-SHA1 of the raw body, keyed with the app's client secret>`. */
export function verifyIntercom(secret: string, header: string | undefined, body: Buffer): Verification {
  const given = /^sha1=([0-9a-f]{40})$/i.exec(header?.trim() ?? '')?.[1];
  if (!given) return fail('missing or malformed X-Hub-Signature');
  const expected = createHmac('sha1', secret).update(body).digest('hex');
  return hexEquals(expected, given) ? { ok: true } : fail('signature does not verify with INTERCOM_CLIENT_SECRET');
}

/** The product-events header: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">` (several v1 allowed, for key rotation). */
export const EVENTS_SIGNATURE_HEADER = 'x-cs-mcp-signature';

export function signProductEvents(secret: string, body: string | Buffer, t = Math.floor(Date.now() / 1000)): string {
  const mac = createHmac('sha256', secret).update(`${t}.`).update(body).digest('hex');
  return `t=${t},v1=${mac}`;
}

export function verifyProductEvents(secret: string, header: string | undefined, body: Buffer, maxAgeS: number, nowMs = Date.now()): Verification {
  if (!header) return fail(`missing ${EVENTS_SIGNATURE_HEADER}`);
  const parts = header.split(',').map((p) => p.trim().split('='));
  const t = parts.find(([k]) => k === 't')?.[1];
  const v1 = parts.filter(([k, v]) => k === 'v1' && v).map(([, v]) => v!);
  if (!t || !v1.length) return fail(`malformed ${EVENTS_SIGNATURE_HEADER} (expected t=<unix seconds>,v1=<hex>)`);
  const fresh = checkTimestamp(t, maxAgeS, nowMs);
  if (!fresh.ok) return fresh;
  const expected = createHmac('sha256', secret).update(`${t}.`).update(body).digest('hex');
  return v1.some((given) => hexEquals(expected, given)) ? { ok: true } : fail('signature does not verify with CS_MCP_EVENTS_WEBHOOK_SECRET');
}
