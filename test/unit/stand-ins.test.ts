import { afterEach, describe, expect, it } from 'vitest';
import { failOnViolations } from '../helpers/stand-in-guard.js';
import { startIntercomStandIn, type IntercomStandIn } from '../stand-ins/intercom.js';
import { startMixpanelStandIn } from '../stand-ins/mixpanel.js';
import { startSendGridStandIn, type SendGridStandIn } from '../stand-ins/sendgrid.js';
import type { HttpStandIn } from '../stand-ins/http-stand-in.js';
import { RateWindow } from '../stand-ins/rate-window.js';

/** The stand-ins are the tests' measure of the providers: these check that they can fail a test. */

const SG = 'SG.stand-in-test';
const IC = 'ic-stand-in-test';
const started: HttpStandIn[] = [];
afterEach(async () => {
  for (const s of started.splice(0)) {
    s.acknowledgeViolations();
    await s.stop();
  }
});

async function sendgrid(opts: Parameters<typeof startSendGridStandIn>[0] = {}): Promise<SendGridStandIn> {
  const s = await startSendGridStandIn({ apiKey: SG, ...opts });
  started.push(s);
  return s;
}

async function intercom(): Promise<IntercomStandIn> {
  const s = await startIntercomStandIn({ token: IC });
  started.push(s);
  return s;
}

const mail = (to = 'ada@example.org') => ({
  personalizations: [{ to: [{ email: to }] }],
  from: { email: 'success@ourco.test' },
  subject: 'Hi',
  content: [{ type: 'text/plain', value: 'Hello' }],
});

function post(url: string, body: unknown, auth: string, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(url, { method: 'POST', headers: { Authorization: auth, 'Content-Type': 'application/json', ...headers }, body: JSON.stringify(body) });
}

/** As intercom-client sends it: the version our code speaks. */
const icPost = (url: string, body: unknown, headers: Record<string, string> = { 'Intercom-Version': '2.14' }) => post(url, body, `Bearer ${IC}`, headers);

describe('contract violations fail the request that caused them', () => {
  it('a body that breaks the description is answered 422 in the provider’s error shape, and recorded', async () => {
    const sg = await sendgrid();
    const res = await post(`${sg.url}/v3/mail/send`, { ...mail(), personalizations: [{ to: [{ email: 'not-an-address' }] }] }, `Bearer ${SG}`);
    expect(res.status).toBe(422);
    const body = (await res.json()) as { errors: Array<{ message: string }> };
    expect(body.errors[0]!.message).toMatch(/Contract violation.*personalizations\/0\/to\/0\/email must match format "email"/);
    expect(sg.delivered).toHaveLength(0);
    expect(sg.violations).toEqual([expect.objectContaining({ kind: 'request', request: 'POST /v3/mail/send' })]);
  });

  it('is checked before any injected fault, which stays armed for the next valid request', async () => {
    const sg = await sendgrid();
    sg.inject({ match: /^POST \/v3\/mail\/send/, times: 1, status: 503 });
    expect((await post(`${sg.url}/v3/mail/send`, { ...mail(), subject: 42 }, `Bearer ${SG}`)).status).toBe(422);
    expect((await post(`${sg.url}/v3/mail/send`, mail(), `Bearer ${SG}`)).status).toBe(503);
    expect((await post(`${sg.url}/v3/mail/send`, mail(), `Bearer ${SG}`)).status).toBe(202);
    expect(sg.violations).toHaveLength(1);
  });

  it('checks query parameters: required, typed, enumerated, and no undeclared names (SendGrid Stats)', async () => {
    const sg = await sendgrid();
    const get = (q: string) => fetch(`${sg.url}/v3/stats?${q}`, { headers: { Authorization: `Bearer ${SG}` } });
    expect((await get('start_date=2026-01-01&aggregated_by=week')).status).toBe(200);
    expect((await get('aggregated_by=day')).status).toBe(422);
    expect((await get('start_date=2026-01-01&aggregated_by=year')).status).toBe(422);
    expect((await get('start_date=2026-01-01&limit=ten')).status).toBe(422);
    expect((await get('start_date=2026-01-01&category=x')).status).toBe(422);
    expect(sg.violations.map((v) => v.errors.join(' '))).toEqual([
      expect.stringMatching(/start_date is required/),
      expect.stringMatching(/aggregated_by="year".*allowed values/),
      expect.stringMatching(/limit="ten".*must be integer/),
      expect.stringMatching(/query parameter category is not declared/),
    ]);
  });

  it('an operation the description does not have is a violation too', async () => {
    const mp = await startMixpanelStandIn();
    started.push(mp);
    const res = await post(`${mp.url}/track`, [{ event: 'x', properties: { token: 't' } }], `Basic ${Buffer.from('mp-secret:').toString('base64')}`);
    expect(res.status).not.toBe(422); // /track is in the description (the stand-in just has no route for it)
    const engage = await post(`${mp.url}/engage?verbose=1`, [{ $token: 'mp-token', $distinct_id: 'u', $bogus: {} }], 'Basic x');
    expect(engage.status).toBe(422);
    expect(mp.violations.at(-1)!.errors[0]).toMatch(/no operation POST/);
  });

  it('an answer the description does not allow is recorded as a stand-in bug', async () => {
    const ic = await intercom();
    ic.inject({ match: /^POST \/contacts\/search/, times: 1, status: 401, body: { errors: [{ message: 'no type, no code' }] } });
    expect((await icPost(`${ic.url}/contacts/search`, { query: { field: 'email', operator: '=', value: 'x' } })).status).toBe(401);
    expect(ic.violations).toEqual([
      expect.objectContaining({ kind: 'response', request: 'POST /contacts/search → 401', errors: expect.arrayContaining([expect.stringMatching(/required property 'type'/)]) }),
    ]);
  });

  it('an unreported violation fails the test (guard) and stop(); acknowledging it accepts it', async () => {
    const sg = await startSendGridStandIn({ apiKey: SG });
    await post(`${sg.url}/v3/mail/send`, { personalizations: [] }, `Bearer ${SG}`);
    expect(() => failOnViolations()).toThrow(/1 contract violation\(s\) recorded by the sendgrid stand-in:\n {2}our request POST \/v3\/mail\/send broke/);
    expect(() => failOnViolations()).not.toThrow(); // reported once
    await post(`${sg.url}/v3/mail/send`, { personalizations: [] }, `Bearer ${SG}`);
    await expect(sg.stop()).rejects.toThrow(/contract violation/);

    const again = await sendgrid();
    await post(`${again.url}/v3/mail/send`, { personalizations: [] }, `Bearer ${SG}`);
    expect(again.acknowledgeViolations()).toHaveLength(1);
    expect(() => failOnViolations()).not.toThrow();
  });
});

describe("limits the server relies on, enforced as the providers do", () => {
  const withSubs = (subs: Record<string, string>, custom_args?: Record<string, string>, top?: Record<string, string>) => ({
    ...mail(),
    personalizations: [{ to: [{ email: 'ada@example.org' }], substitutions: subs, ...(custom_args ? { custom_args } : {}) }],
    ...(top ? { custom_args: top } : {}),
  });
  const sized = (key: string, total: number) => ({ [key]: 'é'.repeat(Math.floor((total - key.length) / 2)) + 'x'.repeat((total - key.length) % 2) });

  it('SendGrid: a personalization\'s substitutions total at most 10,000 bytes (UTF-8, keys and values)', async () => {
    const sg = await sendgrid();
    expect((await post(`${sg.url}/v3/mail/send`, withSubs(sized('-cs-body-', 10_000)), `Bearer ${SG}`)).status).toBe(202);
    const over = await post(`${sg.url}/v3/mail/send`, withSubs({ ...sized('-cs-body-', 9_990), '-cs-html-': 'xx' }), `Bearer ${SG}`);
    expect(over.status).toBe(400);
    expect(await over.json()).toEqual({ errors: [{ field: 'personalizations.0.substitutions', message: expect.stringMatching(/10,000 bytes \(this one: 10001\)/), help: null }] });
    expect(sg.delivered).toHaveLength(1);
    expect(sg.violations).toEqual([]); // a refusal SendGrid makes, not a contract violation
  });

  it('SendGrid: custom_args (the message\'s with the personalization\'s) total at most 10,000 bytes', async () => {
    const sg = await sendgrid();
    const send = (b: unknown) => post(`${sg.url}/v3/mail/send`, b, `Bearer ${SG}`);
    expect((await send(withSubs({}, sized('k', 10_000)))).status).toBe(202);
    expect((await send(withSubs({}, sized('k', 10_001)))).status).toBe(400);
    // Each half fits; together, on one message, they do not.
    const split = await send(withSubs({}, sized('a', 6_000), sized('b', 6_000)));
    expect(split.status).toBe(400);
    expect(((await split.json()) as any).errors[0].field).toBe('personalizations.0.custom_args');
    // The personalization's value overrides the message's for the same key: counted once.
    expect((await send(withSubs({}, sized('a', 6_000), sized('a', 6_000)))).status).toBe(202);
    expect(sg.delivered).toHaveLength(2);
  });

  it('Intercom: an unknown Intercom-Version is refused as Intercom refuses it (400 intercom_version_invalid)', async () => {
    const ic = await intercom();
    const res = await icPost(`${ic.url}/contacts`, { role: 'user', email: 'v@acme.example' }, { 'Intercom-Version': '2.99' });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ type: 'error.list', errors: [{ code: 'intercom_version_invalid' }] });
    expect(ic.contacts.size).toBe(0);
    expect(ic.violations).toEqual([]);
    expect((await icPost(`${ic.url}/contacts`, { role: 'user', email: 'v@acme.example' })).status).toBe(200);
  });

  it('Intercom: no Intercom-Version means the app\'s default version, which the 2.14 stand-in cannot answer in: recorded', async () => {
    const ic = await intercom();
    const res = await icPost(`${ic.url}/contacts`, { role: 'user', email: 'v@acme.example' }, {});
    expect(res.status).toBe(422);
    expect(ic.contacts.size).toBe(0);
    expect(ic.acknowledgeViolations()).toEqual([
      expect.objectContaining({ kind: 'request', request: 'POST /contacts', errors: [expect.stringMatching(/no Intercom-Version header: Intercom answers in the app's default version 2\.11/)] }),
    ]);
    // Another version Intercom knows is answered in that version's shapes: not the described ones either.
    expect((await icPost(`${ic.url}/contacts`, { role: 'user', email: 'v@acme.example' }, { 'Intercom-Version': '2.9' })).status).toBe(422);
    expect(ic.acknowledgeViolations()).toHaveLength(1);
    // An app whose default is 2.14 answers a request without the header in 2.14.
    const current = await startIntercomStandIn({ token: IC, appVersion: '2.14' });
    started.push(current);
    expect((await icPost(`${current.url}/contacts`, { role: 'user', email: 'v@acme.example' }, {})).status).toBe(200);
  });
});

describe('rate windows as providers run them', () => {
  it('clock windows start on multiples of the length; the reset header is whole epoch seconds', () => {
    const w = new RateWindow({ limit: 2, windowMs: 1000 });
    expect([w.take(10_300), w.take(10_400), w.take(10_900)]).toEqual([true, true, false]);
    expect(w.headers(10_900)).toMatchObject({ 'X-RateLimit-Remaining': '0', 'X-RateLimit-Reset': '11' });
    expect(w.take(11_000)).toBe(true);
  });

  it('anchored windows start at the first request after the last one ended, and the reset is rounded up', () => {
    const w = new RateWindow({ limit: 2, windowMs: 1000, style: 'anchored' });
    expect([w.take(10_300), w.take(10_400)]).toEqual([true, true]);
    // The window really ends at 11.3 s, the header says 12 s: up to a second late.
    expect(w.headers(10_400)).toMatchObject({ 'X-RateLimit-Remaining': '0', 'X-RateLimit-Reset': '12' });
    expect(w.take(11_100)).toBe(false); // a clock-aligned window would have rolled at 11.0 s
    expect(w.take(11_300)).toBe(true);
    expect(w.windows).toBe(2);
  });
});

describe("providers' irregularities", () => {
  it('bare 429s at a seeded probability: no rate-limit headers, the same sequence for the same seed', async () => {
    const runs: number[][] = [];
    for (let i = 0; i < 2; i++) {
      const sg = await sendgrid({ bare429Probability: 0.3, seed: 42 });
      const statuses: number[] = [];
      for (let n = 0; n < 20; n++) {
        const res = await post(`${sg.url}/v3/mail/send`, mail(`p${n}@example.org`), `Bearer ${SG}`);
        statuses.push(res.status);
        if (res.status === 429) {
          expect([...res.headers.keys()].filter((h) => /ratelimit|retry-after/i.test(h))).toEqual([]);
          expect(await res.json()).toEqual({ errors: [{ field: null, message: 'too many requests' }] });
        }
      }
      runs.push(statuses);
    }
    expect(runs[0]).toEqual(runs[1]);
    expect(runs[0]!.filter((s) => s === 429).length).toBeGreaterThan(1);
    expect(runs[0]!.filter((s) => s === 202).length).toBeGreaterThan(10);
  });

  it('an injected fault can leave the rate-limit headers out', async () => {
    const sg = await sendgrid();
    sg.inject({ match: /^POST \/v3\/mail\/send/, times: 1, status: 429, withoutRateHeaders: true, body: { errors: [{ field: null, message: 'too many requests' }] } });
    const bare = await post(`${sg.url}/v3/mail/send`, mail(), `Bearer ${SG}`);
    expect(bare.status).toBe(429);
    expect(bare.headers.get('x-ratelimit-limit')).toBeNull();
    const normal = await post(`${sg.url}/v3/mail/send`, mail(), `Bearer ${SG}`);
    expect(normal.headers.get('x-ratelimit-limit')).not.toBeNull();
  });

  it('latency with jitter: every answer takes at least the base, and they vary', async () => {
    const sg = await sendgrid({ latencyMs: 20, jitterMs: 40, seed: 7 });
    const took: number[] = [];
    for (let n = 0; n < 8; n++) {
      const t = performance.now();
      await (await post(`${sg.url}/v3/mail/send`, mail(), `Bearer ${SG}`)).arrayBuffer();
      took.push(performance.now() - t);
    }
    expect(Math.min(...took)).toBeGreaterThanOrEqual(19);
    expect(Math.max(...took) - Math.min(...took)).toBeGreaterThan(5);
  });

  it('refuses connections until told to accept them again, on the same address', async () => {
    const sg = await sendgrid();
    expect((await post(`${sg.url}/v3/mail/send`, mail(), `Bearer ${SG}`)).status).toBe(202);
    sg.refuseConnections();
    const refused = await post(`${sg.url}/v3/mail/send`, mail(), `Bearer ${SG}`).catch((e: Error) => e);
    expect((refused as Error & { cause?: { code?: string } }).cause?.code).toBe('ECONNREFUSED');
    await sg.acceptConnections();
    expect((await post(`${sg.url}/v3/mail/send`, mail(), `Bearer ${SG}`)).status).toBe(202);
    expect(sg.requests).toHaveLength(2); // the refused one never reached it
  });

  it('records how each request was answered, and signals arrivals', async () => {
    const sg = await sendgrid();
    sg.inject({ match: /^POST \/v3\/mail\/send/, times: 1, drop: true });
    const arrived: string[] = [];
    sg.on('request', (r) => arrived.push(r.path));
    await post(`${sg.url}/v3/mail/send`, mail(), `Bearer ${SG}`).catch(() => undefined);
    await post(`${sg.url}/v3/mail/send`, mail(), `Bearer ${SG}`);
    await sg.waitForRequests(/^POST \/v3\/mail\/send/, 2);
    expect(sg.requests.map((r) => r.answer)).toEqual(['drop', 202]);
    expect(arrived).toEqual(['/v3/mail/send', '/v3/mail/send']);
  });
});

describe('Intercom contact search as the description documents it', () => {
  const search = async (ic: IntercomStandIn, body: unknown) => {
    const res = await icPost(`${ic.url}/contacts/search`, body);
    return { status: res.status, body: (await res.json()) as any };
  };
  const emails = (r: { body: any }) => r.body.data.map((c: any) => `${c.role}:${c.email}`);

  async function seeded(): Promise<IntercomStandIn> {
    const ic = await intercom();
    ic.seedContact({ email: 'sam@acme.example', role: 'lead' });
    ic.seedContact({ email: 'sam@acme.example', external_id: 'u-sam', name: 'Sam Acme' });
    ic.seedContact({ email: 'kim@acme.example', external_id: 'u-kim', name: 'Kim Acme' });
    ic.seedContact({ email: 'lee@globex.example', external_id: 'u-lee', name: 'Lee Globex' });
    return ic;
  }

  it('= returns every match (a lead and a user may share an email), with total_count', async () => {
    const ic = await seeded();
    const r = await search(ic, { query: { field: 'email', operator: '=', value: 'SAM@acme.example' } });
    expect(emails(r)).toEqual(['lead:sam@acme.example', 'user:sam@acme.example']);
    expect(r.body).toMatchObject({ type: 'list', total_count: 2, pages: { type: 'pages', page: 1, total_pages: 1 } });
  });

  it('string operators: != ~ !~ ^ $ IN NIN', async () => {
    const ic = await seeded();
    const q = async (operator: string, value: unknown, field = 'email') => emails(await search(ic, { query: { field, operator, value } }));
    expect(await q('!=', 'sam@acme.example')).toEqual(['user:kim@acme.example', 'user:lee@globex.example']);
    expect(await q('~', 'acme')).toHaveLength(3);
    expect(await q('!~', 'acme')).toEqual(['user:lee@globex.example']);
    expect(await q('^', 'kim@')).toEqual(['user:kim@acme.example']);
    expect(await q('$', 'globex.example')).toEqual(['user:lee@globex.example']);
    expect(await q('IN', ['u-kim', 'u-lee'], 'external_id')).toEqual(['user:kim@acme.example', 'user:lee@globex.example']);
    expect(await q('NIN', ['u-kim', 'u-lee'], 'external_id')).toEqual(['lead:sam@acme.example', 'user:sam@acme.example']);
  });

  it('date operators = < > by calendar day; AND/OR groups of groups', async () => {
    const ic = await seeded();
    const today = Math.floor(Date.now() / 1000);
    expect((await search(ic, { query: { field: 'created_at', operator: '>', value: today - 86_400 } })).body.total_count).toBe(4);
    expect((await search(ic, { query: { field: 'created_at', operator: '<', value: today } })).body.total_count).toBe(0);
    const nested = await search(ic, {
      query: {
        operator: 'AND',
        // A group holds filters or groups, not both (the description's oneOf).
        value: [
          { operator: 'OR', value: [{ field: 'email', operator: '=', value: 'sam@acme.example' }] },
          { operator: 'OR', value: [{ field: 'role', operator: '=', value: 'user' }, { field: 'external_id', operator: '=', value: 'nobody' }] },
        ],
      },
    });
    expect(emails(nested)).toEqual(['user:sam@acme.example']);
  });

  it('refuses what Intercom refuses: 3 levels of nesting, 16 filters in a group, != on a date, IN without an array', async () => {
    const ic = await seeded();
    const leaf = { field: 'email', operator: '=', value: 'x' };
    const deep = { operator: 'AND', value: [{ operator: 'OR', value: [{ operator: 'AND', value: [leaf] }] }] };
    expect((await search(ic, { query: deep })).status).toBe(400);
    expect((await search(ic, { query: { operator: 'OR', value: Array(16).fill(leaf) } })).status).toBe(400);
    expect((await search(ic, { query: { field: 'created_at', operator: '!=', value: 1 } })).status).toBe(400);
    expect((await search(ic, { query: { field: 'email', operator: 'IN', value: 'x' } })).status).toBe(400);
  });

  it('pages with per_page and the starting_after cursor it returns', async () => {
    const ic = await seeded();
    const first = await search(ic, { query: { field: 'email', operator: '~', value: '@' }, pagination: { per_page: 3 } });
    expect(first.body).toMatchObject({ total_count: 4, pages: { page: 1, per_page: 3, total_pages: 2, next: { per_page: 3 } } });
    const second = await search(ic, { query: { field: 'email', operator: '~', value: '@' }, pagination: { per_page: 3, starting_after: first.body.pages.next.starting_after } });
    expect(second.body.data).toHaveLength(1);
    expect(second.body.pages.page).toBe(2);
    expect(second.body.pages.next).toBeUndefined();
  });

  it('a contact created through the API is not searchable until the lag has passed', async () => {
    const ic = await intercom();
    ic.searchLagMs = 60_000;
    expect((await icPost(`${ic.url}/contacts`, { role: 'user', email: 'new@acme.example' })).status).toBe(200);
    expect((await search(ic, { query: { field: 'email', operator: '=', value: 'new@acme.example' } })).body.total_count).toBe(0);
    const lead = await icPost(`${ic.url}/contacts`, { role: 'lead', email: 'new@acme.example' });
    expect(lead.status).toBe(200); // a lead may share a user's email
    expect((await icPost(`${ic.url}/contacts`, { role: 'user', email: 'new@acme.example' })).status).toBe(409);
  });
});
