import net from 'node:net';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { createServices, type Services } from '../../src/services.js';
import { serveHttp, type RunningHttpServer } from '../../src/transports/http.js';
import { serveWebhooks, type RunningWebhookListener } from '../../src/transports/webhook-listener.js';
import { tempDataDir, testEnv } from '../helpers/mcp.js';
import { until } from '../helpers/until.js';
import { post, sendgridSigner, sgEvent } from '../helpers/webhooks.js';

/**
 * Slow unauthenticated clients against the webhook endpoints, with real sockets: they send headers, then
 * their body a byte at a time. They must never keep a signed delivery out (the in-progress cap counts only
 * requests whose body has arrived; readers are bounded apart, the slowest evicted first), and they are cut
 * after the header and body time limits and below the minimum body rate.
 */

const signer = sendgridSigner();
const open: Array<() => Promise<void>> = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((close) => close()));
});

async function start(kind: 'mcp' | 'worker', extra: Record<string, string>): Promise<{ services: Services; base: string; port: number }> {
  const data = tempDataDir();
  const env = testEnv({ MCP_HTTP_PORT: '0', SENDGRID_WEBHOOK_PUBLIC_KEY: signer.publicKey, ...extra }, data.dir);
  const services = await createServices(loadConfig(env as NodeJS.ProcessEnv), pino({ level: 'silent' }));
  let running: RunningHttpServer | RunningWebhookListener;
  let base: string;
  if (kind === 'mcp') {
    running = await serveHttp(services);
    base = running.url.replace(/\/mcp$/, '');
  } else {
    running = (await serveWebhooks(services))!;
    base = running.url.replace(/\/webhooks\/$/, '');
  }
  open.push(async () => {
    await running.close();
    await services.close();
    data.cleanup();
  });
  return { services, base, port: Number(new URL(base).port) };
}

interface SlowClient {
  /** The server has read the headers and handed the request to its handler (it answered 100 Continue). */
  continued: Promise<void>;
  /** Everything the server wrote, once it closed the connection. */
  closed: Promise<string>;
  isClosed(): boolean;
}

/** A client that declares a 100 kB body and sends one byte every 100 ms (10 bytes a second). */
function slowBody(port: number, path = '/webhooks/sendgrid'): SlowClient {
  const sock = net.connect(port, '127.0.0.1');
  let text = '';
  let closed = false;
  let drip: NodeJS.Timeout | undefined;
  const continued = new Promise<void>((resolve) => {
    sock.on('data', (d) => {
      text += d.toString();
      if (text.includes('100 Continue')) resolve();
    });
  });
  const done = new Promise<string>((resolve) => {
    sock.on('close', () => {
      closed = true;
      clearInterval(drip);
      resolve(text);
    });
  });
  sock.on('error', () => undefined);
  sock.write(`POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n`);
  drip = setInterval(() => sock.writable && sock.write('['), 100);
  open.push(async () => {
    clearInterval(drip);
    sock.destroy();
  });
  return { continued, closed: done, isClosed: () => closed };
}

/** A client that never finishes its headers (slowloris). */
function slowHeaders(port: number): SlowClient {
  const sock = net.connect(port, '127.0.0.1');
  let text = '';
  let closed = false;
  sock.on('data', (d) => (text += d.toString()));
  sock.on('error', () => undefined);
  const done = new Promise<string>((resolve) => sock.on('close', () => ((closed = true), resolve(text))));
  sock.write('POST /webhooks/sendgrid HTTP/1.1\r\nHost: x\r\n');
  const drip = setInterval(() => sock.writable && sock.write('X-Slow: 1\r\n'), 200);
  open.push(async () => {
    clearInterval(drip);
    sock.destroy();
  });
  return { continued: Promise.resolve(), closed: done.finally(() => clearInterval(drip)), isClosed: () => closed };
}

const signed = async (base: string) => {
  const body = JSON.stringify([sgEvent('delivered', 'maria@acme.example')]);
  return post(`${base}/webhooks/sendgrid`, body, signer.headers(body));
};

describe('webhooks under slow clients', () => {
  for (const kind of ['mcp', 'worker'] as const) {
    it(`${kind}: 40 slow bodies, then 100, never keep a signed delivery out`, async () => {
      // Limits loose enough that no slow client is cut during the test: only the slot design is tested.
      const { base, port } = await start(kind, { WEBHOOK_BODY_TIMEOUT_MS: '120000', WEBHOOK_MIN_BODY_BYTES_PER_S: '1' });
      const forty = Array.from({ length: 40 }, () => slowBody(port));
      await Promise.all(forty.map((c) => c.continued));
      expect(await signed(base)).toMatchObject({ status: 200, body: { ok: true, stored: 1 } });
      // More slow readers than may read at once: the slowest are evicted (503, closed), the delivery still gets in.
      const more = Array.from({ length: 60 }, () => slowBody(port));
      await Promise.all(more.map((c) => c.continued));
      expect(await signed(base)).toMatchObject({ status: 200, body: { ok: true, stored: 1 } });
      const all = [...forty, ...more];
      const evicted = await until(() => all.filter((c) => c.isClosed()).length, (n) => n >= all.length - 64, { message: 'slow readers evicted' });
      expect(evicted).toBeLessThanOrEqual(all.length - 64 + 2);
      const answers = await Promise.all(all.filter((c) => c.isClosed()).map((c) => c.closed));
      for (const a of answers) expect(a).toMatch(/HTTP\/1\.1 503/);
    }, 60_000);
  }

  it('cuts a body slower than the minimum rate or longer than the body time limit, and headers past theirs', async () => {
    const { base, port, services } = await start('mcp', { WEBHOOK_BODY_TIMEOUT_MS: '3000', WEBHOOK_MIN_BODY_BYTES_PER_S: '100', WEBHOOK_HEADERS_TIMEOUT_MS: '2000' });
    const started = Date.now();
    const bodies = Array.from({ length: 10 }, () => slowBody(port));
    const headers = Array.from({ length: 5 }, () => slowHeaders(port));
    await Promise.all(bodies.map((c) => c.continued));
    const bodyAnswers = await Promise.all(bodies.map((c) => c.closed));
    const headerAnswers = await Promise.all(headers.map((c) => c.closed));
    const took = Date.now() - started;
    // 10 bytes a second is under 100: cut soon after the first second, long before the 3 s body limit's end.
    for (const a of bodyAnswers) expect(a).toMatch(/HTTP\/1\.1 408[\s\S]*too slowly/);
    for (const a of headerAnswers) expect(a).toMatch(/HTTP\/1\.1 408|^$/);
    expect(took).toBeLessThan(15_000);
    expect((await services.inbox.status()).find((s) => s.endpoint === 'sendgrid')?.rejected_here).toBeGreaterThanOrEqual(10);
    expect(await signed(base)).toMatchObject({ status: 200 });
  }, 60_000);

  it('a body that keeps a fair rate but outlasts the body time limit is cut too', async () => {
    const { port } = await start('worker', { WEBHOOK_BODY_TIMEOUT_MS: '1500', WEBHOOK_MIN_BODY_BYTES_PER_S: '1' });
    const c = slowBody(port);
    await c.continued;
    expect(await c.closed).toMatch(/HTTP\/1\.1 408[\s\S]*WEBHOOK_BODY_TIMEOUT_MS/);
  }, 60_000);
});
