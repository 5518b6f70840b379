import { describe, expect, it } from 'vitest';
import { loadConfig, type Config } from '../../src/config.js';
import { CachedProbe } from '../../src/observability/cached-probe.js';
import { ageSeconds, Metrics } from '../../src/observability/metrics.js';
import { compareMigrations } from '../../src/observability/readiness.js';
import { resultOfStatus } from '../../src/resilience/observed-fetch.js';
import { ToolError } from '../../src/result.js';
import { createApprover, type ApprovalRequest } from '../../src/safety/approval.js';
import { migrations } from '../../src/store/migrations/index.js';
import { assertSafeMetricsConfig } from '../../src/transports/http-observability.js';
import { Scrape } from '../helpers/metrics.js';

/** A run the test settles by hand. */
function deferred<T>() {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => ((resolve = res), (reject = rej)));
  return { promise, resolve, reject };
}

describe('CachedProbe: a costly check at a bounded cost', () => {
  it('reuses an answer for its ttl, and runs again after it', async () => {
    let now = 1000;
    let runs = 0;
    const probe = new CachedProbe(async () => ++runs, { ttlMs: 1000, timeoutMs: 500, now: () => now });
    expect(await probe.get()).toMatchObject({ ok: true, value: 1 });
    now += 999;
    expect(await probe.get()).toMatchObject({ ok: true, value: 1 });
    now += 1;
    expect(await probe.get()).toMatchObject({ ok: true, value: 2 });
    expect(runs).toBe(2);
  });

  it('reuses a costly answer longer: the ttl can follow how long the run took', async () => {
    let now = 0;
    let runs = 0;
    const probe = new CachedProbe(
      async () => {
        now += 50; // the run takes 50 ms
        return ++runs;
      },
      { ttlMs: (runMs) => Math.max(100, 20 * runMs), timeoutMs: 5000, now: () => now },
    );
    await probe.get();
    await new Promise((r) => setImmediate(r));
    now = 50 + 999;
    expect(await probe.get()).toMatchObject({ value: 1 });
    now = 50 + 1000;
    expect(await probe.get()).toMatchObject({ value: 2 });
  });

  it('runs once for callers arriving together', async () => {
    const d = deferred<number>();
    let runs = 0;
    const probe = new CachedProbe(() => (runs++, d.promise), { ttlMs: 1000, timeoutMs: 5000 });
    const answers = Promise.all(Array.from({ length: 20 }, () => probe.get()));
    d.resolve(7);
    expect((await answers).every((a) => a.ok && a.value === 7)).toBe(true);
    expect(runs).toBe(1);
  });

  it('answers a failure by its deadline while the run hangs, and never starts a second run until the first settles', async () => {
    let now = 0;
    const d = deferred<number>();
    let runs = 0;
    const probe = new CachedProbe(() => (runs++, d.promise), { ttlMs: 100, timeoutMs: 30, now: () => now });
    const first = await probe.get(); // real timer: resolves after ~30 ms
    expect(first).toMatchObject({ ok: false, error: 'no answer within 30 ms' });
    now = 50;
    expect(await probe.get()).toMatchObject({ ok: false, error: 'no answer within 30 ms' }); // cached
    now = 500;
    expect(await probe.get()).toMatchObject({ ok: false, error: 'still running after 500 ms (limit 30 ms)' });
    expect(runs).toBe(1);
    d.resolve(1);
    await d.promise;
    await new Promise((r) => setImmediate(r));
    now = 501;
    expect(await probe.get()).toMatchObject({ ok: true, value: 1 });
    expect(runs).toBe(1);
  });

  it('reports a failed run with its message, and tries again after the ttl', async () => {
    let now = 0;
    let fail = true;
    const probe = new CachedProbe(
      async () => {
        if (fail) throw new Error('down');
        return 'up';
      },
      { ttlMs: 10, timeoutMs: 1000, now: () => now },
    );
    expect(await probe.get()).toMatchObject({ ok: false, error: 'down' });
    fail = false;
    expect(await probe.get()).toMatchObject({ ok: false, error: 'down' });
    now = 10;
    expect(await probe.get()).toMatchObject({ ok: true, value: 'up' });
  });
});

describe('readiness: migrations compared with the code', () => {
  const all = Object.keys(migrations);
  it('ready when the database has exactly the code list', () => {
    expect(compareMigrations(all)).toEqual({ ok: true, expected: all.length, applied: all.length });
  });
  it('names a missing one, and one the code does not know (a newer version migrated the database)', () => {
    expect(compareMigrations(all.slice(1))).toMatchObject({ ok: false, missing: [all[0]] });
    expect(compareMigrations([...all, '0099_future'])).toMatchObject({ ok: false, unknown: ['0099_future'] });
  });
});

describe('settings for /metrics and /readyz', () => {
  const http = (over: Partial<Config['http']> = {}): Config['http'] => ({ host: '127.0.0.1', port: 0, maxSessions: 1, sessionIdleMs: 1000, stateless: false, ...over });
  const obs = (over: Partial<Config['observability']> = {}): Config['observability'] => ({ metrics: true, readyTimeoutMs: 2000, readyProviders: [], ...over });
  const STRONG = 'm'.repeat(40);

  it('off by default; MCP_METRICS_TOKEN alone turns it on; the token is a secret', () => {
    const base = { CS_MCP_DATA_DIR: '/tmp/x' };
    expect(loadConfig(base).observability).toEqual({ metrics: false, metricsToken: undefined, readyTimeoutMs: 2000, readyProviders: [] });
    expect(loadConfig({ ...base, MCP_METRICS_TOKEN: STRONG }).observability).toMatchObject({ metrics: true, metricsToken: STRONG });
    expect(loadConfig({ ...base, MCP_METRICS: 'true' }).observability).toMatchObject({ metrics: true, metricsToken: undefined });
  });

  it('MCP_READY_PROVIDERS takes provider names only', () => {
    expect(loadConfig({ CS_MCP_DATA_DIR: '/tmp/x', MCP_READY_PROVIDERS: 'sendgrid, intercom' }).observability.readyProviders).toEqual(['sendgrid', 'intercom']);
    expect(() => loadConfig({ CS_MCP_DATA_DIR: '/tmp/x', MCP_READY_PROVIDERS: 'sendgrid,hubspot' })).toThrow(/MCP_READY_PROVIDERS: unknown provider hubspot/);
  });

  it('tokenless /metrics only on a loopback bind', () => {
    expect(() => assertSafeMetricsConfig(http(), obs())).not.toThrow();
    expect(() => assertSafeMetricsConfig(http({ host: '0.0.0.0', token: 't'.repeat(40) }), obs())).toThrow(/without a token: set MCP_METRICS_TOKEN/);
    expect(() => assertSafeMetricsConfig(http({ host: '0.0.0.0', token: 't'.repeat(40) }), obs({ metrics: false }))).not.toThrow();
  });

  it('a token of its own, long enough on a reachable address', () => {
    const token = 't'.repeat(40);
    expect(() => assertSafeMetricsConfig(http({ host: '10.0.0.5', token }), obs({ metricsToken: token }))).toThrow(/must differ from MCP_HTTP_TOKEN/);
    expect(() => assertSafeMetricsConfig(http({ host: '10.0.0.5', token }), obs({ metricsToken: 'short' }))).toThrow(/5-character MCP_METRICS_TOKEN/);
    expect(() => assertSafeMetricsConfig(http({ host: '10.0.0.5', token }), obs({ metricsToken: STRONG }))).not.toThrow();
    expect(() => assertSafeMetricsConfig(http(), obs({ metricsToken: 'short' }))).not.toThrow();
  });
});

describe('what the counters are fed', () => {
  it('a provider answer by status class, 429 apart', () => {
    expect([200, 202, 301, 400, 404, 429, 500, 503].map(resultOfStatus)).toEqual(['2xx', '2xx', '3xx', '4xx', '4xx', '429', '5xx', '5xx']);
  });

  it('an approval request by outcome', async () => {
    const seen: string[] = [];
    const req: ApprovalRequest = { action: 'direct_send', recipients: 1, messages: 1, examples: ['a@b.example'], channel: 'email', when: 'now' };
    const approver = (policy: 'auto' | 'elicitation' | 'token', answer?: () => Promise<{ action: 'accept' | 'decline' | 'cancel'; content?: Record<string, unknown> }>, elicitation = true) =>
      createApprover(
        { policy, threshold: 1, timeoutMs: 1000, onOutcome: (action, outcome) => seen.push(`${action}:${outcome}`) },
        { capabilities: () => (elicitation ? { elicitation: {} } : {}), elicit: answer ?? (async () => ({ action: 'accept', content: { decision: 'send' } })) },
      );
    await approver('auto')(req);
    await approver('token')(req);
    await approver('auto', undefined, false)(req);
    await expect(approver('elicitation', undefined, false)(req)).rejects.toBeInstanceOf(ToolError);
    await expect(approver('auto', async () => ({ action: 'decline' }))(req)).rejects.toMatchObject({ code: 'declined' });
    await expect(approver('auto', async () => ({ action: 'cancel' }))(req)).rejects.toMatchObject({ code: 'declined' });
    await expect(approver('auto', async () => ({ action: 'accept', content: { decision: 'cancel' } }))(req)).rejects.toMatchObject({ code: 'declined' });
    await expect(approver('auto', async () => Promise.reject(new Error('timed out')))(req)).rejects.toMatchObject({ code: 'declined' });
    expect(seen).toEqual([
      'direct_send:approved_by_person',
      'direct_send:approved_by_policy',
      'direct_send:approved_by_policy',
      'direct_send:refused_no_elicitation',
      'direct_send:declined',
      'direct_send:cancelled',
      'direct_send:declined',
      'direct_send:no_answer',
    ]);
  });

  it('ages: seconds since, never negative, 0 for none', () => {
    expect(ageSeconds(undefined, 5000)).toBe(0);
    expect(ageSeconds(new Date(2000).toISOString(), 5000)).toBe(3);
    expect(ageSeconds(new Date(9000).toISOString(), 5000)).toBe(0);
  });
});

describe('Metrics: one registry per process', () => {
  it('two instances count apart (never the global registry)', async () => {
    const a = new Metrics();
    const b = new Metrics();
    a.toolCall('list_clients', 'success', 0.01);
    expect(Scrape.parse(await a.render()).sum('csmcp_tool_calls_total')).toBe(1);
    expect(Scrape.parse(await b.render()).sum('csmcp_tool_calls_total')).toBe(0);
  });

  it('leaves the database gauges out, and says so, when the database fails', async () => {
    const m = new Metrics();
    const broken = {
      selectFrom() {
        throw new Error('connection refused');
      },
    };
    m.watchDatabase(broken as never);
    const s = Scrape.parse(await m.render());
    expect(s.sum('csmcp_db_snapshot_up')).toBe(0);
    expect(s.has('csmcp_messages')).toBe(false);
    expect(s.has('csmcp_outbox_queued_messages')).toBe(false);
  });
});
