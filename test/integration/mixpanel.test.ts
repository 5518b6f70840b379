import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startInMemory, startStdio, tempDataDir, testEnv, type InMemoryHarness } from '../helpers/mcp.js';
import { until } from '../helpers/until.js';
import { startMixpanelStandIn, type MixpanelStandIn } from '../stand-ins/mixpanel.js';

describe('Mixpanel tools against the ingestion stand-in', () => {
  const data = tempDataDir();
  let mp: MixpanelStandIn;
  let h: InMemoryHarness;
  const env = () =>
    testEnv({ MIXPANEL_API_SECRET: 'mp-secret', MIXPANEL_PROJECT_TOKEN: 'mp-token', MIXPANEL_PROJECT_ID: '12345', MIXPANEL_API_HOST: mp.url, MIXPANEL_FLUSH_INTERVAL_MS: '60000' }, data.dir);
  beforeAll(async () => {
    mp = await startMixpanelStandIn();
    h = await startInMemory(env());
  });
  afterAll(async () => {
    await h.close();
    await mp.stop();
    data.cleanup();
  });
  afterEach(() => mp.clearFaults());

  it('queues events, and flush: true delivers them through /import?strict=1 with a deterministic insert_id', async () => {
    const q = await h.call('mixpanel_track_event', { distinct_id: 'u-1', event: 'Report Viewed', properties: { report: 'health' }, time: 1_790_000_000 });
    expect(q.structuredContent).toMatchObject({ success: true, queued: true });
    const again = await h.call('mixpanel_track_event', { distinct_id: 'u-1', event: 'Report Viewed', properties: { report: 'health' }, time: 1_790_000_000, flush: true });
    expect(again.structuredContent.insert_id).toBe(q.structuredContent.insert_id);
    expect(again.structuredContent).toMatchObject({ imported: true, delivery: { requests: 1, imported: 1, pending: 0 } });
    expect(mp.events.size).toBe(1); // the same event twice is buffered once, and counts once
    const req = mp.matching(/^POST \/import/)[0]!;
    expect(req.query.get('strict')).toBe('1');
    expect(req.query.get('project_id')).toBe('12345');
  });

  it('reports strict-mode rejections per event, and imports the rest', async () => {
    await h.call('mixpanel_track_event', { distinct_id: 'u-2', event: 'ok-event' });
    await h.call('mixpanel_track_event', { distinct_id: 'u-2', event: '__invalid__' });
    const r = await h.call('mixpanel_flush');
    expect(r.structuredContent).toMatchObject({ success: true, imported: 1, pending: 0 });
    expect(r.structuredContent.rejected).toEqual([expect.objectContaining({ event: '__invalid__', message: expect.stringMatching(/not a valid event/) })]);
  });

  it('an /import whose every event is rejected is an error with Mixpanel\'s reason, not a success', async () => {
    await h.call('mixpanel_flush');
    const before = mp.events.size;
    await h.call('mixpanel_track_event', { distinct_id: 'u-all', event: '__invalid__' });
    await h.call('mixpanel_track_event', { distinct_id: 'u-all', event: '__invalid__', properties: { n: 2 } });
    const r = await h.call('mixpanel_flush');
    expect(r.isError).toBe(true);
    expect(r.structuredContent.error).toMatchObject({ code: 'invalid_input', provider: 'mixpanel', retryable: false, details: { rejected_total: 2 } });
    expect(r.structuredContent.error.message).toMatch(/Mixpanel rejected all 2 event\(s\); none was imported\. Mixpanel said: '__invalid__' is not a valid event/);
    expect(mp.events.size).toBe(before);
    // Dropped, not kept to fail again: the next flush has nothing to send.
    expect((await h.call('mixpanel_flush')).structuredContent).toMatchObject({ success: true, requests: 0, imported: 0, pending: 0 });
  });

  it('an /import refused as a whole (400 without failed_records) is an error with Mixpanel\'s reason', async () => {
    await h.call('mixpanel_flush');
    mp.inject({ match: /^POST \/import/, times: 1, status: 400, body: { code: 400, error: 'project_id 12345 does not match the credentials', status: 'Bad Request' } });
    await h.call('mixpanel_track_event', { distinct_id: 'u-whole', event: 'refused-whole' });
    const r = await h.call('mixpanel_flush');
    expect(r.isError).toBe(true);
    expect(r.structuredContent.error).toMatchObject({ code: 'invalid_input', provider: 'mixpanel' });
    expect(r.structuredContent.error.message).toMatch(/Mixpanel rejected all 1 event\(s\); none was imported\. Mixpanel said: .*project_id 12345 does not match the credentials/);
    // flush: true on the call itself says the same for its own event.
    mp.inject({ match: /^POST \/import/, times: 1, status: 400, body: { code: 400, error: 'project_id 12345 does not match the credentials', status: 'Bad Request' } });
    const own = await h.call('mixpanel_track_event', { distinct_id: 'u-whole', event: 'refused-own', flush: true });
    expect(own.structuredContent.error).toMatchObject({ code: 'invalid_input', provider: 'mixpanel' });
    expect(own.structuredContent.error.message).toMatch(/Mixpanel rejected the event "refused-own": .*project_id 12345 does not match/);
  });

  it('keeps events buffered when Mixpanel is down, and delivers them on the next flush', async () => {
    mp.inject({ match: /^POST \/import/, times: 3, status: 503 });
    await h.call('mixpanel_track_event', { distinct_id: 'u-3', event: 'kept' });
    const failed = await h.call('mixpanel_flush');
    expect(failed.structuredContent).toMatchObject({ pending: 1, error: { code: 'provider_unavailable', retryable: true } });
    const ok = await h.call('mixpanel_flush');
    expect(ok.structuredContent).toMatchObject({ imported: 1, pending: 0 });
  });

  it('profile $set, $set_once and $add through /engage (verbose), and usage engagement', async () => {
    await h.call('mixpanel_set_profile', { distinct_id: 'u-4', properties: { plan: 'pro' } });
    await h.call('mixpanel_set_profile', { distinct_id: 'u-4', properties: { plan: 'free', first_seen: '2026-01-01' }, once: true });
    await h.call('mixpanel_increment', { distinct_id: 'u-4', increments: { logins: 2 } });
    const u = await h.call('mixpanel_track_usage_engagement', { distinct_id: 'u-4', feature: 'dashboards', duration_seconds: 90, client_id: 'acme' });
    expect(u.structuredContent).toMatchObject({ event: 'feature_used', profile_incremented: true });
    expect(mp.profiles.get('u-4')).toEqual({ plan: 'pro', first_seen: '2026-01-01', logins: 2, feature_uses: 1, usage_seconds: 90, 'uses:dashboards': 1 });
    for (const r of mp.matching(/^POST \/engage/)) expect([r.query.get('verbose'), r.query.get('ip')]).toEqual(['1', '0']);
  });

  it('a rejected profile update (200 with status 0) is an error, not a success', async () => {
    mp.inject({ match: /^POST \/engage/, times: 1, status: 200, body: { status: 0, error: '$set must be an object' } });
    const r = await h.call('mixpanel_set_profile', { distinct_id: 'u-5', properties: { a: 1 } });
    expect(r.structuredContent.error).toMatchObject({ code: 'invalid_input' });
    expect(r.structuredContent.error.message).toMatch(/\$set must be an object/);
  });

  it('nothing accepted is lost on a clean stop: close() delivers the buffer', async () => {
    await h.call('mixpanel_flush');
    for (let i = 0; i < 25; i++) await h.call('mixpanel_track_event', { distinct_id: `u-close-${i}`, event: 'queued-before-stop' });
    const before = mp.events.size;
    await h.services.mixpanel.close();
    expect(mp.events.size - before).toBe(25);
  });

});

describe('Mixpanel on a clean stop of the real binary', () => {
  it('closing stdin (how MCP clients stop a stdio server) delivers every buffered event first', async () => {
    const mp = await startMixpanelStandIn();
    const d = tempDataDir();
    try {
      const h = await startStdio(testEnv({ MIXPANEL_API_SECRET: 'mp-secret', MIXPANEL_API_HOST: mp.url, MIXPANEL_FLUSH_INTERVAL_MS: '600000' }, d.dir));
      for (let i = 0; i < 10; i++) expect((await h.call('mixpanel_track_event', { distinct_id: `u${i}`, event: 'before-stop' })).structuredContent.queued).toBe(true);
      expect(mp.events.size).toBe(0);
      await h.close();
      await until(() => mp.events.size, (n) => n >= 10, { message: 'the 10 buffered events at Mixpanel' });
      expect(mp.events.size).toBe(10);
    } finally {
      await mp.stop();
      d.cleanup();
    }
  });
});
