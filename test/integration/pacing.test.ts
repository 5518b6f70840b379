import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { ProviderRuntime } from '../../src/resilience/provider-runtime.js';
import { HttpStandIn } from '../stand-ins/http-stand-in.js';

describe('proactive pacing against a window-limited server', () => {
  it('60 concurrent calls under a 20-per-second window: no 429, every call succeeds, about 3 windows used', async () => {
    const server = await new HttpStandIn({ name: 'limited', rateLimit: { limit: 20, windowMs: 1000 } }, () => ({ status: 200, body: { ok: true } })).start();
    const runtime = new ProviderRuntime({
      provider: 'intercom',
      resilience: { maxRetries: 0, baseDelayMs: 10, maxDelayMs: 5000, breakerThreshold: 5, breakerResetMs: 1000, timeoutMs: 5000 },
      log: pino({ level: 'silent' }),
      missing: [],
    });
    try {
      // Nothing is known of the budget at first: one request goes ahead, its answer sets the pace.
      const started = Date.now();
      const results = await Promise.all(
        Array.from({ length: 60 }, () =>
          runtime.call({ operation: 'x', idempotent: false }, async ({ signal }) => {
            const r = await runtime.fetch(`${server.url}/x`, { method: 'POST', signal });
            await r.text();
            return r.status;
          }),
        ),
      );
      expect(results.every((s) => s === 200)).toBe(true);
      expect(server.rate.rejected).toBe(0);
      expect(Date.now() - started).toBeLessThan(5000);
      expect(runtime.status().rate_limit.paced_waits).toBeGreaterThan(0);
    } finally {
      await server.stop();
    }
  });
});
