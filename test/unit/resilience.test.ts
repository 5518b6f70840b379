import { Writable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { ResilienceConfig } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { httpStatusError, networkError, retryAfterMs } from '../../src/resilience/http-errors.js';
import { ProviderPolicy } from '../../src/resilience/policy.js';
import { ProviderRuntime } from '../../src/resilience/provider-runtime.js';
import { RateBudget } from '../../src/resilience/rate-budget.js';
import { ToolError } from '../../src/result.js';

const cfg: ResilienceConfig = { maxRetries: 3, baseDelayMs: 1000, maxDelayMs: 60_000, breakerThreshold: 5, breakerResetMs: 60_000, timeoutMs: 10_000 };

function captureLogs() {
  const lines: string[] = [];
  const log = createLogger(
    'debug',
    new Writable({
      write(chunk, _e, cb) {
        lines.push(String(chunk));
        cb();
      },
    }),
  );
  return { log, lines };
}

const fail503 = () => httpStatusError('intercom', 503, {});
const fail500 = () => httpStatusError('intercom', 500, {});

describe('ProviderPolicy: retries and backoff', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it('retries up to RETRY_MAX_RETRIES after the first attempt, backing off base × 1, 2, 4 (jitter 0 here)', async () => {
    const policy = new ProviderPolicy('intercom', cfg, captureLogs().log, { random: () => 0 });
    const calls: number[] = [];
    const p = policy.execute({ operation: 'read', idempotent: true }, async () => {
      calls.push(Date.now());
      throw fail503();
    });
    const settled = p.catch((e) => e);
    await vi.advanceTimersByTimeAsync(10_000);
    const err = await settled;
    expect(err).toBeInstanceOf(ToolError);
    expect(calls).toHaveLength(4); // 1 + 3 retries
    const gaps = calls.slice(1).map((t, i) => t - calls[i]!);
    expect(gaps).toEqual([1000, 2000, 4000]);
  });

  it('adds at most 25 % jitter to each backoff', () => {
    const policy = new ProviderPolicy('intercom', cfg, captureLogs().log, { random: () => 0.999 });
    expect(policy.delayFor(1, fail503())).toBeCloseTo(1249.75, 1);
    expect(policy.delayFor(3, fail503())).toBeLessThan(5000);
    expect(policy.delayFor(3, fail503())).toBeGreaterThanOrEqual(4000);
  });

  it('waits exactly as long as Retry-After / X-RateLimit-Reset say on a 429, capped by RETRY_MAX_DELAY_MS', async () => {
    const policy = new ProviderPolicy('intercom', cfg, captureLogs().log, { random: () => 0 });
    const now = Date.now();
    const resetIn7s = String(Math.floor(now / 1000) + 7);
    const calls: number[] = [];
    const p = policy.execute({ operation: 'read', idempotent: true }, async () => {
      calls.push(Date.now());
      if (calls.length === 1) throw httpStatusError('intercom', 429, { 'x-ratelimit-reset': resetIn7s }, undefined, now);
      if (calls.length === 2) throw httpStatusError('intercom', 429, { 'retry-after': '3' });
      return 'ok';
    });
    await vi.advanceTimersByTimeAsync(20_000);
    expect(await p).toBe('ok');
    expect(calls[1]! - calls[0]!).toBe(Number(resetIn7s) * 1000 - now);
    expect(calls[2]! - calls[1]!).toBe(3000);
  });

  it('does not retry when the provider asks for a wait beyond the cap: reports rate_limited with retry_after_ms', async () => {
    const policy = new ProviderPolicy('intercom', { ...cfg, maxDelayMs: 5000 }, captureLogs().log);
    let calls = 0;
    const err = await policy
      .execute({ operation: 'read', idempotent: true }, async () => {
        calls += 1;
        throw httpStatusError('intercom', 429, { 'retry-after': '120' });
      })
      .catch((e) => e);
    expect(calls).toBe(1);
    expect(err).toMatchObject({ code: 'rate_limited', retryAfterMs: 120_000, retryable: true });
  });

  it.each([400, 401, 403, 404, 409, 422])('never retries %i', async (status) => {
    const policy = new ProviderPolicy('intercom', cfg, captureLogs().log);
    let calls = 0;
    await policy.execute({ operation: 'x', idempotent: true }, async () => {
      calls += 1;
      throw httpStatusError('intercom', status, {});
    }).catch(() => undefined);
    expect(calls).toBe(1);
  });

  it('a send with an unknown outcome (timeout, reset, 500) is not retried and is reported retryable: false', async () => {
    for (const make of [() => networkError('intercom', new Error('x'), 10_000), () => networkError('intercom', Object.assign(new Error('reset'), { code: 'ECONNRESET' })), fail500]) {
      const policy = new ProviderPolicy('intercom', cfg, captureLogs().log);
      let calls = 0;
      const err = await policy.execute({ operation: 'send', idempotent: false }, async () => {
        calls += 1;
        throw make();
      }).catch((e) => e);
      expect(calls).toBe(1);
      expect(err).toMatchObject({ outcomeUnknown: true, retryable: false });
    }
  });

  it('a send the provider provably did not act on (refused connection, 503, 429) is retried', async () => {
    const policy = new ProviderPolicy('intercom', { ...cfg, baseDelayMs: 1 }, captureLogs().log);
    let calls = 0;
    const p = policy.execute({ operation: 'send', idempotent: false }, async () => {
      calls += 1;
      if (calls === 1) throw networkError('intercom', Object.assign(new Error('refused'), { code: 'ECONNREFUSED' }));
      if (calls === 2) throw fail503();
      return 'sent';
    });
    await vi.advanceTimersByTimeAsync(100);
    expect(await p).toBe('sent');
    expect(calls).toBe(3);
  });

  it('the same timeout on a read is retried', async () => {
    const policy = new ProviderPolicy('intercom', { ...cfg, baseDelayMs: 1 }, captureLogs().log);
    let calls = 0;
    const p = policy.execute({ operation: 'read', idempotent: true }, async () => {
      calls += 1;
      if (calls < 3) throw networkError('intercom', new Error('x'), 10_000);
      return 'ok';
    });
    await vi.advanceTimersByTimeAsync(100);
    expect(await p).toBe('ok');
  });
});

describe('ProviderPolicy: circuit breaker', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  const noRetry = { ...cfg, maxRetries: 0, breakerThreshold: 3, breakerResetMs: 30_000 };

  it('opens after N consecutive failed attempts, fails fast, half-opens after the reset time, closes on success', async () => {
    const { log, lines } = captureLogs();
    const policy = new ProviderPolicy('sendgrid', noRetry, log);
    let calls = 0;
    const failing = () => policy.execute({ operation: 'x', idempotent: true }, async () => {
      calls += 1;
      throw fail503();
    }).catch((e) => e);
    for (let i = 0; i < 3; i++) await failing();
    expect(policy.state).toBe('open');
    const fast = await failing();
    expect(fast).toMatchObject({ code: 'circuit_open', retryable: true });
    expect(fast.retryAfterMs).toBeGreaterThan(29_000);
    expect(calls).toBe(3); // the 4th never reached the provider

    await vi.advanceTimersByTimeAsync(30_001);
    expect(await policy.execute({ operation: 'x', idempotent: true }, async () => 'ok')).toBe('ok');
    expect(policy.state).toBe('closed');
    const text = lines.join('');
    expect(text).toMatch(/circuit opened/);
    expect(text).toMatch(/circuit closed/);
  });

  it('half-open lets exactly one trial through (others wait for its verdict); a failed trial reopens it', async () => {
    const policy = new ProviderPolicy('sendgrid', noRetry, captureLogs().log);
    for (let i = 0; i < 3; i++) await policy.execute({ operation: 'x', idempotent: true }, async () => { throw fail503(); }).catch(() => undefined);
    await vi.advanceTimersByTimeAsync(30_001);
    let release!: () => void;
    let reached = 0;
    const trial = policy.execute({ operation: 'x', idempotent: true }, () => {
      reached += 1;
      return new Promise<string>((_, reject) => { release = () => reject(fail503()); });
    });
    await vi.advanceTimersByTimeAsync(0);
    expect(policy.state).toBe('half_open');
    const concurrent = policy.execute({ operation: 'x', idempotent: true }, async () => { reached += 1; return 'sneaked in'; }).catch((e) => e);
    await vi.advanceTimersByTimeAsync(0);
    expect(reached).toBe(1); // only the trial reached the provider
    release();
    await trial.catch(() => undefined);
    expect(policy.state).toBe('open');
    expect(await concurrent).toMatchObject({ code: 'circuit_open' });
    expect(reached).toBe(1);
  });

  it('4xx and 429 answers do not count, and a healthy answer resets the consecutive count', async () => {
    const policy = new ProviderPolicy('sendgrid', noRetry, captureLogs().log);
    const run = (err?: () => ToolError) => policy.execute({ operation: 'x', idempotent: true }, async () => { if (err) throw err(); return 1; }).catch(() => undefined);
    await run(fail503);
    await run(fail503);
    await run(() => httpStatusError('sendgrid', 404, {}));
    await run(() => httpStatusError('sendgrid', 429, { 'retry-after': '0' }));
    await run(fail503);
    await run(fail503);
    expect(policy.state).toBe('closed'); // the 404 broke the run of failures
    await run(fail503);
    expect(policy.state).toBe('open');
  });
});

describe('RateBudget: pacing by the reported budget', () => {
  it('spends the remaining budget, then waits for the reset instead of exceeding it', async () => {
    let now = 1_800_000_000_000;
    const slept: number[] = [];
    const budget = new RateBudget({
      now: () => now,
      resetMarginMs: 0,
      sleep: async (ms) => {
        slept.push(ms);
        now += ms;
      },
    });
    budget.observe({ 'x-ratelimit-limit': '100', 'x-ratelimit-remaining': '3', 'x-ratelimit-reset': String(now / 1000 + 10) });
    for (let i = 0; i < 3; i++) {
      await budget.acquire();
      budget.release();
    }
    expect(slept).toEqual([]);
    await budget.acquire(); // the 4th waits for the window to reset
    expect(slept).toEqual([10_000]);
    expect(budget.snapshot()).toMatchObject({ limit: 100, remaining: 99 });
  });

  it('counts requests still in flight, which the header does not know yet', async () => {
    const now = 1_800_000_000_000;
    const budget = new RateBudget({ now: () => now, sleep: async () => { throw new Error('should not sleep'); } });
    budget.observe({ 'x-ratelimit-remaining': '10', 'x-ratelimit-reset': String(now / 1000 + 10) });
    for (let i = 0; i < 5; i++) await budget.acquire(); // 5 in flight
    // The first answer comes back counting only itself: remaining 9 → 9 − 4 still in flight = 5 left, not 9.
    budget.observe({ 'x-ratelimit-remaining': '9', 'x-ratelimit-reset': String(now / 1000 + 10) });
    budget.release();
    expect(budget.snapshot().remaining).toBe(5);
  });

  it('does not pace providers that report nothing; a bare 429 with Retry-After pauses until then', async () => {
    let now = 0;
    const slept: number[] = [];
    const budget = new RateBudget({ now: () => now, resetMarginMs: 0, sleep: async (ms) => { slept.push(ms); now += ms; } });
    budget.observe({});
    await budget.acquire();
    expect(slept).toEqual([]);
    budget.exhaustFor(2000);
    await budget.acquire();
    expect(slept).toEqual([2000]);
  });

  it('a new window restores the full limit until the provider says otherwise', async () => {
    let now = 1_800_000_000_000;
    const budget = new RateBudget({ now: () => now, resetMarginMs: 0, sleep: async (ms) => { now += ms; } });
    budget.observe({ 'x-ratelimit-limit': '50', 'x-ratelimit-remaining': '0', 'x-ratelimit-reset': String(now / 1000 + 1) });
    now += 1001;
    expect(budget.waitNeeded()).toBe(0);
    expect(budget.snapshot().remaining).toBe(50);
  });
});

describe('classification', () => {
  it('reads Retry-After in seconds and as an HTTP date, and X-RateLimit-Reset in epoch seconds', () => {
    const now = Date.parse('2026-11-24T10:00:00Z');
    expect(retryAfterMs({ 'retry-after': '5' }, now)).toBe(5000);
    expect(retryAfterMs({ 'retry-after': 'Tue, 24 Nov 2026 10:00:30 GMT' }, now)).toBe(30_000);
    expect(retryAfterMs({ 'x-ratelimit-reset': String(now / 1000 + 8) }, now)).toBe(8000);
  });

  it('only errors before anything was sent count as "not sent"', () => {
    expect(networkError('sendgrid', Object.assign(new Error('x'), { code: 'ECONNREFUSED' })).outcomeUnknown).toBe(false);
    expect(networkError('sendgrid', { cause: { code: 'UND_ERR_SOCKET' } }).outcomeUnknown).toBe(true);
    expect(networkError('sendgrid', new Error('x'), 100)).toMatchObject({ code: 'timeout', outcomeUnknown: true, breakerFailure: true });
    expect(httpStatusError('sendgrid', 503, {})).toMatchObject({ outcomeUnknown: false, breakerFailure: true });
    expect(httpStatusError('sendgrid', 502, {})).toMatchObject({ outcomeUnknown: true, breakerFailure: true });
    expect(httpStatusError('sendgrid', 429, {})).toMatchObject({ breakerFailure: false, retryable: true });
  });
});

describe('ProviderRuntime with the observed fetch', () => {
  it('times out a hung attempt and never retries a send', async () => {
    const { log } = captureLogs();
    let calls = 0;
    const runtime = new ProviderRuntime({
      provider: 'intercom',
      resilience: { ...cfg, timeoutMs: 50, baseDelayMs: 1 },
      log,
      missing: [],
      baseFetch: (_input, init) => {
        calls += 1;
        return new Promise((_, reject) => init?.signal?.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError'))));
      },
    });
    const err = await runtime.call({ operation: 'send', idempotent: false }, ({ signal }) => runtime.fetch('http://127.0.0.1:9/messages', { method: 'POST', signal })).catch((e) => e);
    expect(err).toMatchObject({ code: 'timeout', retryable: false, outcomeUnknown: true });
    expect(calls).toBe(1);
  });

  it('not_configured names the variable', async () => {
    const runtime = new ProviderRuntime({ provider: 'sendgrid', resilience: cfg, log: captureLogs().log, missing: ['SENDGRID_API_KEY'] });
    const err = await runtime.call({ operation: 'x', idempotent: true }, async () => 1).catch((e) => e);
    expect(err).toMatchObject({ code: 'not_configured' });
    expect(err.message).toMatch(/SENDGRID_API_KEY/);
  });
});
