import { createPublicKey } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { interpret, sendgridMessageIds } from '../../src/engine/inbox/interpret.js';
import { BadPayload, parseIntercom, parseSendGrid } from '../../src/engine/inbox/parse.js';
import { signProductEvents, verifyIntercom, verifyProductEvents, verifySendGrid } from '../../src/engine/inbox/verify.js';
import { intercomHeaders, sendgridSigner } from '../helpers/webhooks.js';

/** The published test vector of SendGrid's own Node library (@sendgrid/eventwebhook, eventwebhook.spec.js). */
const SG_VECTOR = {
  publicKey: 'MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEDr2LjtURuePQzplybdC+u4CwrqDqBaWjcMMsTbhdbcwHBcepxo7yAQGhHPTnlvFYPAZFceEu/1FwCM/QmGUhA==',
  signature: 'MEUCIQCtIHJeH93Y+qpYeWrySphQgpNGNr/U+UyUlBkU6n7RAwIgJTz2C+8a8xonZGi6BpSzoQsbVRamr2nlxFDWYNH2j/0=',
  timestamp: '1588788367',
  payload: JSON.stringify({ category: 'example_payload', event: 'test_event', message_id: 'message_id' }),
};
const keyOf = (b64: string) => createPublicKey({ key: Buffer.from(b64, 'base64'), format: 'der', type: 'spki' });

describe('SendGrid signature', () => {
  const at = Number(SG_VECTOR.timestamp) * 1000;
  const body = Buffer.from(SG_VECTOR.payload);

  it('verifies SendGrid\'s published vector, and refuses it changed in any part', () => {
    const key = keyOf(SG_VECTOR.publicKey);
    expect(verifySendGrid(key, SG_VECTOR.signature, SG_VECTOR.timestamp, body, 300, at)).toEqual({ ok: true });
    expect(verifySendGrid(key, SG_VECTOR.signature, SG_VECTOR.timestamp, Buffer.from('payload'), 300, at).ok).toBe(false);
    expect(verifySendGrid(key, SG_VECTOR.signature.replace('H2j', 'H3j'), SG_VECTOR.timestamp, body, 300, at).ok).toBe(false);
    expect(verifySendGrid(key, SG_VECTOR.signature, '1588788368', body, 300, at).ok).toBe(false);
    expect(verifySendGrid(keyOf(sendgridSigner().publicKey), SG_VECTOR.signature, SG_VECTOR.timestamp, body, 300, at).ok).toBe(false);
  });

  it('refuses a timestamp outside the window either way, and malformed headers', () => {
    const key = keyOf(SG_VECTOR.publicKey);
    expect(verifySendGrid(key, SG_VECTOR.signature, SG_VECTOR.timestamp, body, 300, at + 301_000)).toMatchObject({ ok: false, reason: expect.stringMatching(/timestamp/) });
    expect(verifySendGrid(key, SG_VECTOR.signature, SG_VECTOR.timestamp, body, 300, at - 301_000).ok).toBe(false);
    expect(verifySendGrid(key, SG_VECTOR.signature, 'timestamp', body, 300, at).ok).toBe(false);
    expect(verifySendGrid(key, undefined, SG_VECTOR.timestamp, body, 300, at).ok).toBe(false);
    expect(verifySendGrid(key, '!!!', SG_VECTOR.timestamp, body, 300, at).ok).toBe(false);
  });

  it('accepts the key as SendGrid shows it (base64 DER) or as PEM; refuses anything else at start-up', () => {
    const pem = `-----BEGIN PUBLIC KEY-----\n${SG_VECTOR.publicKey}\n-----END PUBLIC KEY-----`;
    expect(loadConfig({ SENDGRID_WEBHOOK_PUBLIC_KEY: SG_VECTOR.publicKey }).webhooks.sendgridPublicKey).toBe(SG_VECTOR.publicKey);
    expect(loadConfig({ SENDGRID_WEBHOOK_PUBLIC_KEY: pem }).webhooks.sendgridPublicKey).toBe(pem);
    expect(() => loadConfig({ SENDGRID_WEBHOOK_PUBLIC_KEY: 'not-a-key' })).toThrow(/SENDGRID_WEBHOOK_PUBLIC_KEY=\(hidden\): must be the verification key/);
    expect(() => loadConfig({ CS_MCP_EVENTS_WEBHOOK_SECRET: 'short' })).toThrow(/at least 16/);
  });
});

describe('Intercom and product-event signatures', () => {
  it('Intercom: sha1=<hex HMAC-SHA1 of the raw body>', () => {
    const body = '{"topic":"ping"}';
    const header = intercomHeaders('s3cret', body)['X-Hub-Signature'];
    expect(verifyIntercom('s3cret', header, Buffer.from(body))).toEqual({ ok: true });
    expect(verifyIntercom('s3cret', header, Buffer.from(`${body} `)).ok).toBe(false);
    expect(verifyIntercom('other', header, Buffer.from(body)).ok).toBe(false);
    expect(verifyIntercom('s3cret', header.replace('sha1=', 'sha256='), Buffer.from(body)).ok).toBe(false);
    expect(verifyIntercom('s3cret', undefined, Buffer.from(body)).ok).toBe(false);
  });

  it('product events: t=…,v1=… over "<t>.<body>", any of several v1 (key rotation), within the window', () => {
    const secret = 'a-long-product-secret-0123';
    const body = Buffer.from('{"events":[]}');
    const now = 1_800_000_000_000;
    const t = now / 1000;
    const good = signProductEvents(secret, body, t);
    expect(verifyProductEvents(secret, good, body, 300, now)).toEqual({ ok: true });
    const old = signProductEvents('the-previous-secret-4567', body, t).split(',')[1];
    expect(verifyProductEvents(secret, `${old},${good.split(',')[1]},t=${t}`, body, 300, now)).toEqual({ ok: true });
    expect(verifyProductEvents(secret, good, Buffer.from('{"events":[1]}'), 300, now).ok).toBe(false);
    expect(verifyProductEvents(secret, good, body, 300, now + 400_000)).toMatchObject({ ok: false, reason: expect.stringMatching(/timestamp/) });
    expect(verifyProductEvents(secret, `t=${t}`, body, 300, now).ok).toBe(false);
    expect(verifyProductEvents(secret, undefined, body, 300, now).ok).toBe(false);
  });
});

describe('parsing and meaning', () => {
  const now = '2026-11-25T10:00:00.000Z';

  it('stores every element of a signed SendGrid batch, keyed by sg_event_id (content hash when absent)', () => {
    const records = parseSendGrid(Buffer.from(JSON.stringify([{ event: 'open', sg_event_id: 'abc', email: 'A@X.example', timestamp: 1764064800 }, 'odd', { event: 'click' }])), now);
    expect(records.map((r) => [r.dedup_key.slice(0, 16), r.event_type, r.email])).toEqual([
      ['sendgrid:abc', 'open', 'a@x.example'],
      ['sendgrid:sha256:', 'unknown', null],
      ['sendgrid:sha256:', 'click', null],
    ]);
    expect(records[0]!.occurred_at).toBe('2025-11-25T10:00:00.000Z');
    expect(() => parseSendGrid(Buffer.from('{"event":"open"}'), now)).toThrow(BadPayload);
    expect(() => parseSendGrid(Buffer.from('[{'), now)).toThrow(/not valid JSON/);
    expect(parseIntercom(Buffer.from('{"topic":"ping","id":"n1"}'), now)).toEqual({ ping: true, records: [] });
  });

  it('tells a hard bounce (suppresses) from a temporary block (does not), and address drops from others', () => {
    const sg = (e: Record<string, unknown>) => interpret('sendgrid', String(e.event), JSON.stringify({ email: 'a@x.example', ...e }));
    expect(sg({ event: 'bounce', type: 'bounce', reason: '550 no such user' }).consent).toEqual({ kind: 'suppress', status: 'bounced', reason: '550 no such user', scope: 'email', source: 'sendgrid' });
    expect(sg({ event: 'bounce', type: 'blocked', reason: '421 try later' }).consent).toBeUndefined();
    expect(sg({ event: 'dropped', reason: 'Bounced Address' }).consent).toMatchObject({ status: 'dropped' });
    expect(sg({ event: 'dropped', reason: 'Invalid SMTPAPI header' }).consent).toBeUndefined();
    // A group resubscribe lifts that group's entry only (scope), and only SendGrid's own (source).
    expect(sg({ event: 'group_resubscribe', asm_group_id: 42 }).consent).toEqual({ kind: 'resubscribe', statuses: ['group_unsubscribed'], scope: 'sendgrid_group:42', source: 'sendgrid' });
    expect(sg({ event: 'processed' }).noAction).toBeTruthy();
    expect(sg({ event: 'something_new' }).ignored).toMatch(/not one this server acts on/);
  });

  it('finds our X-Message-Id inside sg_message_id', () => {
    expect(sendgridMessageIds('W86EgYT6SQKk0lRflfLRsA.filterdrecv-5645d9c87f-2lz4x-1-5D4A-4.0')).toContain('W86EgYT6SQKk0lRflfLRsA');
    expect(sendgridMessageIds('14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0')).toContain('14c5d75ce93.dfd.64b469');
    expect(sendgridMessageIds(undefined)).toEqual([]);
  });
});
