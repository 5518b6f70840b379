import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startInMemory, startStdio, tempDataDir, testEnv, type InMemoryHarness } from '../helpers/mcp.js';
import { exited, until } from '../helpers/until.js';
import { startMixpanelStandIn, type MixpanelStandIn } from '../stand-ins/mixpanel.js';

/**
 * The Mixpanel buffer is durable (issue 17 item 7): events accepted are in the database before the call
 * answers, so a kill loses none; each is sent once ($insert_id), in batches, by the flush loop.
 */

/** How many times each $insert_id reached /import (raw requests, before the stand-in's own de-duplication). */
function receipts(mp: MixpanelStandIn): Map<string, number> {
  const seen = new Map<string, number>();
  for (const r of mp.matching(/^POST \/import/)) {
    for (const e of r.body as Array<{ properties: { $insert_id: string } }>) seen.set(e.properties.$insert_id, (seen.get(e.properties.$insert_id) ?? 0) + 1);
  }
  return seen;
}

const mixpanelEnv = (mp: MixpanelStandIn, extra: Record<string, string> = {}) => ({
  MIXPANEL_API_SECRET: 'mp-secret',
  MIXPANEL_PROJECT_TOKEN: 'mp-token',
  MIXPANEL_API_HOST: mp.url,
  ...extra,
});

describe('Mixpanel events survive a SIGKILL of the real binary', () => {
  it('events tracked before a kill (tool events and usage events) are all delivered once after a restart', async () => {
    const mp = await startMixpanelStandIn();
    const d = tempDataDir();
    try {
      const a = await startStdio(testEnv(mixpanelEnv(mp, { MIXPANEL_FLUSH_INTERVAL_MS: '600000' }), d.dir));
      const ids = new Set<string>();
      for (let i = 0; i < 12; i++) {
        const r = await a.call('mixpanel_track_event', { distinct_id: `killed-${i}`, event: 'before-kill', properties: { n: i }, time: 1_790_000_000 + i });
        expect(r.structuredContent).toMatchObject({ success: true, queued: true });
        ids.add(r.structuredContent.insert_id);
      }
      // A repeat of the same event is kept once.
      await a.call('mixpanel_track_event', { distinct_id: 'killed-0', event: 'before-kill', properties: { n: 0 }, time: 1_790_000_000 });
      const u = await a.call('mixpanel_track_usage_engagement', { distinct_id: 'killed-usage', feature: 'reports', duration_seconds: 30 });
      expect(u.structuredContent.success).toBe(true);
      ids.add(u.structuredContent.insert_id);
      expect(mp.matching(/^POST \/import/)).toHaveLength(0);

      const proc = { pid: a.pid! };
      process.kill(proc.pid, 'SIGKILL');
      await until(() => {
        try {
          process.kill(proc.pid, 0);
          return false;
        } catch {
          return true;
        }
      }, { message: 'the killed server gone' });
      await a.close().catch(() => undefined);
      expect(mp.matching(/^POST \/import/)).toHaveLength(0);

      const b = await startStdio(testEnv(mixpanelEnv(mp, { MIXPANEL_FLUSH_INTERVAL_MS: '50' }), d.dir));
      try {
        await until(() => receipts(mp).size, (n) => n >= ids.size, { timeoutMs: 45_000, message: `all ${ids.size} events at Mixpanel` });
        const seen = receipts(mp);
        expect([...seen.keys()].sort()).toEqual([...ids].sort());
        expect([...seen.values()].every((n) => n === 1)).toBe(true);
        // The restarted server keeps flushing: nothing is left in its buffer to send twice.
        await until(async () => (await b.call('integrations_status')).structuredContent.pending_writes?.mixpanel_buffered, (n) => n === 0);
        expect([...receipts(mp).values()].every((n) => n === 1)).toBe(true);
      } finally {
        await b.close();
      }
    } finally {
      await mp.stop();
      d.cleanup();
    }
  }, 90_000);
});

describe('the durable Mixpanel buffer (in memory)', () => {
  const data = tempDataDir();
  let mp: MixpanelStandIn;
  const open: InMemoryHarness[] = [];
  const start = async (extra: Record<string, string> = {}) => {
    const h = await startInMemory(testEnv(mixpanelEnv(mp, { MIXPANEL_FLUSH_INTERVAL_MS: '600000', ...extra }), data.dir));
    open.push(h);
    return h;
  };
  beforeAll(async () => {
    mp = await startMixpanelStandIn();
  });
  afterEach(async () => {
    mp.clearFaults();
    while (open.length) await open.pop()!.close();
  });
  afterAll(async () => {
    await mp.stop();
    data.cleanup();
  });

  it('de-duplicates by $insert_id in the buffer: the same event tracked twice is sent once', async () => {
    const h = await start();
    const args = { distinct_id: 'dup-1', event: 'Twice', properties: { a: 1 }, time: 1_790_000_000 };
    const one = await h.call('mixpanel_track_event', args);
    const two = await h.call('mixpanel_track_event', { ...args, insert_id: undefined });
    expect(two.structuredContent.insert_id).toBe(one.structuredContent.insert_id);
    const f = await h.call('mixpanel_flush');
    expect(f.structuredContent).toMatchObject({ success: true, imported: 1, pending: 0 });
    expect(receipts(mp).get(one.structuredContent.insert_id)).toBe(1);
  });

  it('is bounded: past MIXPANEL_MAX_BUFFERED_EVENTS a new event is refused, retryable and saying why; delivered ones make room', async () => {
    const h = await start({ MIXPANEL_MAX_BUFFERED_EVENTS: '10' });
    mp.inject({ match: /^POST \/import/, times: 1000, status: 503 });
    for (let i = 0; i < 10; i++) expect((await h.call('mixpanel_track_event', { distinct_id: `cap-${i}`, event: 'capped' })).structuredContent.success).toBe(true);
    const full = await h.call('mixpanel_track_event', { distinct_id: 'cap-10', event: 'capped' });
    expect(full.isError).toBe(true);
    expect(full.structuredContent.error).toMatchObject({ code: 'provider_unavailable', retryable: true, provider: 'mixpanel', details: { buffered: 10, limit: 10 } });
    expect(full.structuredContent.error.message).toMatch(/MIXPANEL_MAX_BUFFERED_EVENTS/);
    const status = await h.call('integrations_status');
    expect(status.structuredContent.pending_writes).toMatchObject({ mixpanel_buffered: 10, mixpanel_buffer_limit: 10 });
    mp.clearFaults();
    expect((await h.call('mixpanel_flush')).structuredContent).toMatchObject({ imported: 10, pending: 0 });
    expect((await h.call('mixpanel_track_event', { distinct_id: 'cap-10', event: 'capped' })).structuredContent.success).toBe(true);
  });
});
