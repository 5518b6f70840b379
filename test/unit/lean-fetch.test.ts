import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Agent } from 'undici';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { discardBody, isBuffered, leanFetch } from '../../src/resilience/lean-fetch.js';
import { createObservedFetch } from '../../src/resilience/observed-fetch.js';
import { RateBudget } from '../../src/resilience/rate-budget.js';
import pino from 'pino';

/** What the server saw of the last request. */
let seen: { method?: string; headers: IncomingMessage['headers']; body: string } = { headers: {}, body: '' };
let server: Server;
let base: string;

beforeAll(async () => {
  server = createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += String(d)));
    req.on('end', () => {
      seen = { method: req.method, headers: req.headers, body };
      if (req.url === '/empty') {
        res.writeHead(204, { 'x-message-id': 'm-1' }).end();
      } else if (req.url === '/slow') {
        setTimeout(() => res.end('late'), 5_000).unref();
      } else {
        res.setHeader('set-cookie', ['a=1', 'b=2']);
        res.writeHead(429, { 'content-type': 'application/json', 'retry-after': '3' }).end(JSON.stringify({ errors: [{ message: 'slow down' }] }));
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise<void>((r) => server.close(() => r())));

describe('leanFetch (provider calls over undici request)', () => {
  it('sends method, headers and a string body as fetch would, and answers a standard Response', async () => {
    const res = await leanFetch(`${base}/mail`, { method: 'post', headers: { Authorization: 'Bearer k', 'Content-Type': 'application/json' }, body: '{"a":1}' });
    expect(seen).toMatchObject({ method: 'POST', body: '{"a":1}' });
    expect(seen.headers).toMatchObject({ authorization: 'Bearer k', 'content-type': 'application/json' });
    expect(res).toBeInstanceOf(Response);
    expect(res.status).toBe(429);
    expect(res.ok).toBe(false);
    expect(res.headers.get('retry-after')).toBe('3');
    expect(res.headers.getSetCookie()).toEqual(['a=1', 'b=2']);
    expect(await res.json()).toEqual({ errors: [{ message: 'slow down' }] });
  });

  it('answers from the bytes it read: each reader once, a stream or a clone on request, as a Response would', async () => {
    const text = await (await leanFetch(`${base}/mail`, { method: 'POST', body: '{}' })).text();
    expect(JSON.parse(text)).toEqual({ errors: [{ message: 'slow down' }] });
    const once = await leanFetch(`${base}/mail`, { method: 'POST', body: '{}' });
    expect(isBuffered(once)).toBe(true);
    expect(once.bodyUsed).toBe(false);
    const copy = once.clone();
    expect(copy).toBeInstanceOf(Response);
    expect(await once.json()).toEqual({ errors: [{ message: 'slow down' }] });
    expect(once.bodyUsed).toBe(true);
    await expect(once.text()).rejects.toThrow(TypeError);
    expect(() => once.clone()).toThrow(TypeError);
    expect(new TextDecoder().decode(await copy.arrayBuffer())).toBe(text);
    const streamed = await leanFetch(`${base}/mail`, { method: 'POST', body: '{}' });
    expect(streamed.body).toBe(streamed.body);
    expect(await new Response(streamed.body).text()).toBe(text);
    expect(streamed.bodyUsed).toBe(true);
    const blob = await (await leanFetch(`${base}/mail`, { method: 'POST', body: '{}' })).blob();
    expect(blob.type).toBe('application/json');
    expect(await blob.text()).toBe(text);
    // A response without a body reads as empty, as fetch's does.
    expect(await (await leanFetch(`${base}/empty`, { method: 'POST', body: 'x' })).text()).toBe('');
  });

  it('discards an unread body: nothing to do for one read whole (no stream built for it), cancelled for a streamed one', async () => {
    const buffered = await leanFetch(`${base}/mail`, { method: 'POST', body: '{}' });
    await discardBody(buffered);
    expect(buffered.bodyUsed).toBe(false);
    const streamed = await globalThis.fetch(`${base}/mail`, { method: 'POST', body: '{}' });
    await discardBody(streamed);
    expect(streamed.bodyUsed).toBe(true);
  });

  it('takes Headers and header lists, and answers a bodiless status with a null body', async () => {
    const res = await leanFetch(new URL(`${base}/empty`), { method: 'POST', headers: new Headers({ 'X-One': '1' }), body: new TextEncoder().encode('bytes') });
    expect(seen.headers['x-one']).toBe('1');
    expect(seen.body).toBe('bytes');
    expect(res.status).toBe(204);
    expect(res.body).toBeNull();
    expect(res.headers.get('x-message-id')).toBe('m-1');
    await leanFetch(`${base}/empty`, { headers: [['X-Two', '2']] });
    expect(seen).toMatchObject({ method: 'GET' });
    expect(seen.headers['x-two']).toBe('2');
  });

  it("goes through a caller's own dispatcher (the webhooks' pool pinned to checked addresses)", async () => {
    const pinned = new Agent();
    const dispatch = vi.spyOn(pinned, 'dispatch');
    const res = await leanFetch(`${base}/empty`, { method: 'POST', body: 'x', dispatcher: pinned } as RequestInit);
    expect(res.status).toBe(204);
    expect(dispatch).toHaveBeenCalledTimes(1);
    await pinned.close();
  });

  it('stops when its signal aborts', async () => {
    const controller = new AbortController();
    const pending = leanFetch(`${base}/slow`, { signal: controller.signal });
    setTimeout(() => controller.abort(new Error('timed out')), 20);
    await expect(pending).rejects.toThrow();
  });

  it('hands bodies it does not send itself (forms, streams) to the global fetch', async () => {
    await leanFetch(`${base}/mail`, { method: 'POST', body: new URLSearchParams({ q: 'x y' }) });
    expect(seen.body).toBe('q=x+y');
    expect(seen.headers['content-type']).toContain('application/x-www-form-urlencoded');
  });

  it("clears each attempt's timeout once the answer is in, however its body is used (none left to wake the process later)", async () => {
    const TIMEOUT_MS = 7_777; // a delay no other timer here uses
    const observed = createObservedFetch({ provider: 'sendgrid', budget: new RateBudget(), timeoutMs: TIMEOUT_MS, log: pino({ level: 'silent' }) });
    const streamed = createObservedFetch({ provider: 'sendgrid', budget: new RateBudget(), timeoutMs: TIMEOUT_MS, log: pino({ level: 'silent' }), baseFetch: globalThis.fetch });
    const set = vi.spyOn(globalThis, 'setTimeout');
    const cleared = vi.spyOn(globalThis, 'clearTimeout');
    const attemptTimers = () => set.mock.results.filter((_, i) => set.mock.calls[i]![1] === TIMEOUT_MS).map((r) => r.value as NodeJS.Timeout);
    const stillRunning = () => attemptTimers().filter((t) => !cleared.mock.calls.some(([c]) => c === t));
    try {
      // leanFetch's answer is read whole already: its body is left alone, cancelled unread (as a 202 is), or read.
      await observed(`${base}/mail`, { method: 'POST', body: '{}' });
      await (await observed(`${base}/mail`, { method: 'POST', body: '{}' })).body?.cancel();
      await (await observed(`${base}/mail`, { method: 'POST', body: '{}' })).json();
      // A streamed body stays under the timer until it is read or cancelled.
      const res = await streamed(`${base}/mail`, { method: 'POST', body: '{}' });
      expect(stillRunning()).toHaveLength(1);
      await res.body?.cancel();
      expect(attemptTimers()).toHaveLength(4);
      expect(stillRunning()).toEqual([]);
    } finally {
      set.mockRestore();
      cleared.mockRestore();
    }
  });
});
