import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startInMemory, startStdio, tempDataDir, testEnv, type InMemoryHarness } from '../helpers/mcp.js';
import { startIntercomStandIn, type IntercomStandIn } from '../stand-ins/intercom.js';
import { until } from '../helpers/until.js';

const TOKEN = 'tok_intercom_SECRET_1234567890';

describe('Intercom tools against the 2.14 stand-in', () => {
  const data = tempDataDir();
  let intercom: IntercomStandIn;
  let h: InMemoryHarness;
  const env = () => testEnv({ INTERCOM_ACCESS_TOKEN: TOKEN, INTERCOM_BASE_URL: intercom.url, CIRCUIT_BREAKER_FAILURE_THRESHOLD: '4', CIRCUIT_BREAKER_RESET_MS: '300' }, data.dir);

  beforeAll(async () => {
    intercom = await startIntercomStandIn({ token: TOKEN });
    h = await startInMemory(env());
  });
  afterAll(async () => {
    await h.close();
    await intercom.stop();
    data.cleanup();
  });
  afterEach(() => intercom.clearFaults());

  it('creates a user, then updates it instead of duplicating', async () => {
    const first = await h.call('intercom_create_user', { email: 'Ada@Example.org', user_id: 'u-1', name: 'Ada Lovelace' });
    expect(first.structuredContent).toMatchObject({ success: true, created: true, user: { email: 'ada@example.org', user_id: 'u-1', name: 'Ada Lovelace' } });
    const again = await h.call('intercom_create_user', { email: 'ada@example.org', name: 'Ada King' });
    expect(again.structuredContent).toMatchObject({ created: false, user: { id: first.structuredContent.user.id, name: 'Ada King' } });
    expect(intercom.contacts.size).toBe(1);
  });

  it('a 409 race (search has not caught up) ends in an update, not a duplicate', async () => {
    intercom.searchLagMs = 60_000;
    const creates = intercom.matching(/^POST \/contacts$/).length;
    try {
      const a = await h.call('intercom_create_user', { email: 'lag@example.org' });
      const b = await h.call('intercom_create_user', { email: 'lag@example.org', name: 'Second Call' });
      expect(a.structuredContent.created).toBe(true);
      expect(b.structuredContent).toMatchObject({ created: false, user: { id: a.structuredContent.user.id, name: 'Second Call' } });
      expect(intercom.matching(/^POST \/contacts$/).length - creates).toBe(2);
      expect([...intercom.contacts.values()].filter((c) => c.email === 'lag@example.org')).toHaveLength(1);
    } finally {
      intercom.searchLagMs = 0;
    }
  });

  it('sends in-app and email messages from the default admin (GET /me once)', async () => {
    const inapp = await h.call('intercom_send_message', { user_email: 'ada@example.org', message_type: 'inapp', body: 'Hi Ada' });
    expect(inapp.structuredContent).toMatchObject({ success: true, message_type: 'inapp', recipient: { email: 'ada@example.org', role: 'user' } });
    const email = await h.call('intercom_send_message', { user_id: 'u-1', message_type: 'email', subject: 'Check-in', body: '<p>Hello</p>' });
    expect(email.structuredContent.message_id).toMatch(/^\d+$/);
    const sent = intercom.messages.at(-1)!;
    expect(sent).toMatchObject({ message_type: 'email', subject: 'Check-in', from: { type: 'admin', id: '991' } });
    expect(intercom.matching(/^GET \/me$/)).toHaveLength(1);
  });

  it('a lead sharing the email of a user (Intercom allows it): the message goes to the user, not the lead', async () => {
    const lead = intercom.seedContact({ email: 'shared@example.org', role: 'lead' }); // the visitor who chatted first
    const user = intercom.seedContact({ email: 'shared@example.org', external_id: 'u-shared', name: 'Signed Up' });
    const r = await h.call('intercom_send_message', { user_email: 'shared@example.org', message_type: 'inapp', body: 'Welcome aboard' });
    expect(r.structuredContent).toMatchObject({ success: true, recipient: { contact_id: user.id, role: 'user' } });
    expect(intercom.messages.at(-1)!.to).toEqual({ type: 'user', id: user.id });
    expect(intercom.messages.some((m) => m.to.id === lead.id)).toBe(false);
  });

  it('two users with the same email: no guess, a conflict naming both contact ids, nothing sent', async () => {
    const a = intercom.seedContact({ email: 'twins@example.org', name: 'One' });
    const b = intercom.seedContact({ email: 'twins@example.org', name: 'Two' });
    const before = intercom.messages.length;
    const r = await h.call('intercom_send_message', { user_email: 'twins@example.org', message_type: 'inapp', body: 'Which one?' });
    expect(r.structuredContent.error).toMatchObject({ code: 'conflict', details: { contact_ids: [a.id, b.id] } });
    expect(r.structuredContent.error.message).toMatch(/contact_id/);
    expect(intercom.messages.length).toBe(before);
  });

  it('refuses bad input before any request, naming the field', async () => {
    const before = intercom.requests.length;
    const noSubject = await h.call('intercom_send_message', { user_email: 'ada@example.org', message_type: 'email', body: 'x' });
    expect(noSubject.structuredContent.error).toMatchObject({ code: 'invalid_input', retryable: false });
    expect(noSubject.structuredContent.error.message).toMatch(/subject/);
    const two = await h.call('intercom_get_user', { user_email: 'ada@example.org', user_id: 'u-1' });
    expect(two.structuredContent.error.code).toBe('invalid_input');
    const none = await h.call('intercom_get_user', {});
    expect(none.structuredContent.error.message).toMatch(/exactly one of user_email, user_id/);
    const meta = Object.fromEntries(Array.from({ length: 11 }, (_, i) => [`k${i}`, i]));
    const tooMany = await h.call('intercom_track_event', { user_email: 'ada@example.org', event_name: 'x', metadata: meta });
    expect(tooMany.structuredContent.error).toMatchObject({ code: 'invalid_input' });
    expect(tooMany.structuredContent.error.message).toMatch(/at most 10 metadata keys/);
    expect(intercom.requests.length).toBe(before);
  });

  it('notes, events and tags', async () => {
    const note = await h.call('intercom_create_note', { user_email: 'ada@example.org', body: 'Renewal call went well' });
    expect(note.structuredContent).toMatchObject({ success: true, body: 'Renewal call went well' });
    expect(intercom.notes.at(-1)).toMatchObject({ admin_id: '991' });
    const ev = await h.call('intercom_track_event', { user_email: 'ada@example.org', event_name: 'renewal-call-held', metadata: { seats: 40, plan: 'pro', annual: true } });
    expect(ev.structuredContent).toMatchObject({ event_name: 'renewal-call-held', metadata: { seats: 40 } });
    expect(intercom.events.at(-1)).toMatchObject({ event_name: 'renewal-call-held', metadata: { seats: 40 } });
    const add = await h.call('intercom_add_tag', { user_email: 'ada@example.org', tag_name: 'at-risk-outreach' });
    expect(add.structuredContent).toMatchObject({ changed: true, tag_name: 'at-risk-outreach' });
    expect((await h.call('intercom_add_tag', { user_email: 'ada@example.org', tag_name: 'at-risk-outreach' })).structuredContent.changed).toBe(false);
    const user = await h.call('intercom_get_user', { user_email: 'ada@example.org' });
    expect(user.structuredContent.user).toMatchObject({ email: 'ada@example.org', user_id: 'u-1', tags: ['at-risk-outreach'], role: 'user' });
    expect((await h.call('intercom_remove_tag', { user_email: 'ada@example.org', tag_name: 'at-risk-outreach' })).structuredContent.changed).toBe(true);
    expect((await h.call('intercom_remove_tag', { user_email: 'ada@example.org', tag_name: 'at-risk-outreach' })).structuredContent).toMatchObject({ success: true, changed: false });
  });

  it('maps 401 and 404 to auth_failed and not_found, without retrying', async () => {
    intercom.inject({ match: /^POST \/contacts\/search/, times: 1, status: 401, body: { type: 'error.list', errors: [{ code: 'unauthorized', message: 'Access Token Invalid' }] } });
    const r401 = await h.call('intercom_get_user', { user_email: 'ada@example.org' });
    expect(r401.structuredContent.error).toMatchObject({ code: 'auth_failed', provider: 'intercom', status: 401, retryable: false });
    expect(r401.structuredContent.error.message).toMatch(/Access Token Invalid/);
    const r404 = await h.call('intercom_get_user', { contact_id: 'does-not-exist' });
    expect(r404.structuredContent.error).toMatchObject({ code: 'not_found', status: 404 });
    const nobody = await h.call('intercom_get_user', { user_email: 'nobody@example.org' });
    expect(nobody.structuredContent.error.code).toBe('not_found');
  });

  it('waits out a 429 until X-RateLimit-Reset, then succeeds', async () => {
    const reset = String(Math.ceil(Date.now() / 1000) + 1);
    intercom.inject({ match: /^POST \/contacts\/search/, times: 1, status: 429, headers: { 'X-RateLimit-Limit': '10000', 'X-RateLimit-Remaining': '0', 'X-RateLimit-Reset': reset } });
    const started = Date.now();
    const r = await h.call('intercom_get_user', { user_email: 'ada@example.org' });
    expect(r.structuredContent.success).toBe(true);
    expect(Date.now() - started).toBeGreaterThanOrEqual(Number(reset) * 1000 - started - 50);
  });

  it('retries a burst of 5xx on a read and succeeds', async () => {
    intercom.inject({ match: /^POST \/contacts\/search/, times: 2, status: 503 });
    const r = await h.call('intercom_get_user', { user_email: 'ada@example.org' });
    expect(r.structuredContent.success).toBe(true);
  });

  it('never resends a message whose outcome is unknown (hang → timeout, retryable false)', async () => {
    const before = intercom.matching(/^POST \/messages$/).length;
    intercom.inject({ match: /^POST \/messages$/, times: 1, hang: true });
    const r = await h.call('intercom_send_message', { user_email: 'ada@example.org', message_type: 'inapp', body: 'Are you there?' });
    expect(r.structuredContent.error).toMatchObject({ code: 'timeout', retryable: false, outcome_unknown: true });
    expect(r.structuredContent.error.message).toMatch(/may have been delivered/);
    expect(intercom.matching(/^POST \/messages$/).length - before).toBe(1);
  });

  it('a 500 on a send is not retried either', async () => {
    const before = intercom.matching(/^POST \/messages$/).length;
    intercom.inject({ match: /^POST \/messages$/, times: 1, status: 500 });
    const r = await h.call('intercom_send_message', { user_email: 'ada@example.org', message_type: 'inapp', body: 'Hello?' });
    expect(r.structuredContent.error).toMatchObject({ code: 'provider_unavailable', retryable: false, outcome_unknown: true });
    expect(intercom.matching(/^POST \/messages$/).length - before).toBe(1);
  });

  it("a 400 on a send carries Intercom's words; a 429 on a send waits for the reset and the message goes once", async () => {
    // POST /messages goes over the SDK's lean transport (jsonPostFetcher): its answers must read as the SDK's own.
    let before = intercom.matching(/^POST \/messages$/).length;
    intercom.inject({ match: /^POST \/messages$/, times: 1, status: 400, body: { type: 'error.list', errors: [{ code: 'parameter_invalid', message: 'Body is too long' }] } });
    const bad = await h.call('intercom_send_message', { user_email: 'ada@example.org', message_type: 'inapp', body: 'Too long?' });
    expect(bad.structuredContent.error).toMatchObject({ code: 'invalid_input', provider: 'intercom', status: 400, retryable: false });
    expect(bad.structuredContent.error.message).toMatch(/Body is too long \(parameter_invalid\)/);
    expect(intercom.matching(/^POST \/messages$/).length - before).toBe(1);

    before = intercom.matching(/^POST \/messages$/).length;
    const reset = String(Math.ceil(Date.now() / 1000) + 1);
    intercom.inject({ match: /^POST \/messages$/, times: 1, status: 429, headers: { 'X-RateLimit-Limit': '10000', 'X-RateLimit-Remaining': '0', 'X-RateLimit-Reset': reset } });
    const ok = await h.call('intercom_send_message', { user_email: 'ada@example.org', message_type: 'inapp', body: 'After the wait' });
    expect(ok.structuredContent).toMatchObject({ success: true });
    expect(ok.structuredContent.message_id).toEqual(expect.any(String));
    expect(ok.structuredContent.message_id).not.toBe('');
    // The refused request and the one that went: a 429 means Intercom did not take it.
    expect(intercom.matching(/^POST \/messages$/).length - before).toBe(2);
  });

  it('opens the circuit after consecutive 5xx, fails fast, then half-opens and closes', async () => {
    // A success first: the breaker counts consecutive failures, so earlier tests' failures no longer count.
    expect((await h.call('intercom_get_user', { user_email: 'ada@example.org' })).structuredContent.success).toBe(true);
    intercom.inject({ match: /^POST \/contacts\/search/, times: 4, status: 502 });
    const failed = await h.call('intercom_get_user', { user_email: 'ada@example.org' }); // 1 + 2 retries = 3 failures
    expect(failed.structuredContent.error.code).toBe('provider_unavailable');
    const opened = await h.call('intercom_get_user', { user_email: 'ada@example.org' }); // 4th failure opens it
    expect(['provider_unavailable', 'circuit_open']).toContain(opened.structuredContent.error.code);
    const before = intercom.requests.length;
    const fast = await h.call('intercom_get_user', { user_email: 'ada@example.org' });
    expect(fast.structuredContent.error).toMatchObject({ code: 'circuit_open', retryable: true });
    expect(intercom.requests.length).toBe(before); // nothing reached Intercom
    const status = await h.call('integrations_status');
    expect(status.structuredContent.providers.find((p: any) => p.provider === 'intercom')).toMatchObject({ circuit: 'open', last_error: { code: 'circuit_open' } });
    const intercomStatus = async () => (await h.call('integrations_status')).structuredContent.providers.find((p: any) => p.provider === 'intercom');
    await until(intercomStatus, (p) => p.circuit_retry_in_ms === 0, { message: 'the circuit to allow a trial' });
    const trial = await h.call('intercom_get_user', { user_email: 'ada@example.org' });
    expect(trial.structuredContent.success).toBe(true);
    const after = await h.call('integrations_status');
    const s = after.structuredContent.providers.find((p: any) => p.provider === 'intercom');
    expect(s.circuit).toBe('closed');
    expect(s.rate_limit.limit).toBeGreaterThan(0);
  });

  it('records activity in the roster timeline when the contact is a known customer', async () => {
    await h.call('register_client', { client_id: 'analytical', name: 'Analytical Engines', tier: 'enterprise' });
    await h.call('upsert_contact', { client_id: 'analytical', email: 'ada@example.org', first_name: 'Ada' });
    await h.call('intercom_create_note', { user_email: 'ada@example.org', body: 'Follow up next week' });
    const ov = await h.call('get_client_overview', { client_id: 'analytical' });
    expect(ov.structuredContent.contacts[0].linked_to_intercom).toBe(true);
    expect(ov.structuredContent.recent_timeline[0]).toMatchObject({ type: 'note', channel: 'intercom', outcome: 'success' });
  });

  it('answers not_configured naming the variable when no token is set', async () => {
    const d = tempDataDir();
    const bare = await startInMemory(testEnv({}, d.dir));
    try {
      const r = await bare.call('intercom_get_user', { user_email: 'ada@example.org' });
      expect(r.structuredContent.error).toMatchObject({ code: 'not_configured', provider: 'intercom' });
      expect(r.structuredContent.error.message).toMatch(/INTERCOM_ACCESS_TOKEN/);
    } finally {
      await bare.close();
      d.cleanup();
    }
  });

  it('the token never appears in tool results or logs', () => {
    expect(h.logs.join('\n')).not.toContain(TOKEN);
    expect(h.logs.length).toBeGreaterThan(5);
  });
});

describe('the built binary over stdio', () => {
  it('keeps the token out of stderr and tool results, and stdout for protocol messages only', async () => {
    const intercom = await startIntercomStandIn({ token: TOKEN });
    const d = tempDataDir();
    const h = await startStdio(testEnv({ INTERCOM_ACCESS_TOKEN: TOKEN, INTERCOM_BASE_URL: intercom.url, LOG_LEVEL: 'debug' }, d.dir));
    const results: unknown[] = [];
    try {
      intercom.seedContact({ email: 'grace@example.org' });
      results.push(await h.call('intercom_get_user', { user_email: 'grace@example.org' }));
      intercom.inject({ match: /^POST \/contacts\/search/, times: 1, status: 401, body: { type: 'error.list', errors: [{ code: 'unauthorized', message: `Access Token Invalid: ${TOKEN}` }] } });
      results.push(await h.call('intercom_get_user', { user_email: 'grace@example.org' }));
      results.push(await h.call('integrations_status'));
    } finally {
      await h.close();
      await intercom.stop();
      d.cleanup();
    }
    expect((results[0] as any).structuredContent.success).toBe(true);
    expect((results[1] as any).structuredContent.error.code).toBe('auth_failed');
    expect(JSON.stringify(results)).not.toContain(TOKEN);
    const stderr = h.stderr();
    expect(stderr).not.toContain(TOKEN);
    expect(stderr.length).toBeGreaterThan(0);
    for (const line of stderr.split('\n').filter(Boolean)) expect(() => JSON.parse(line)).not.toThrow();
  });
});
