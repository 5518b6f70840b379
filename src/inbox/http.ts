import type { IncomingMessage, ServerOptions, ServerResponse } from 'node:http';
import { ENDPOINTS, type Endpoint } from '../engine/inbox/index.js';
import type { Services } from '../services.js';

/**
 * The webhook endpoints as a plain node:http handler, mounted in front of anything else (the MCP
 * HTTP server, the headless worker): providers sign the raw body, so it must be read here, unparsed,
 * with its own size limit; and they cannot send the MCP bearer token, so none is asked — the
 * signature is the authentication. Resolves true when the request was a webhook and was answered.
 */

/**
 * Requests being verified and stored at once; more get 503 and are delivered again by the provider. Only a
 * request whose whole body has arrived takes one of these places: a client still sending its body never does.
 */
const MAX_CONCURRENT = 32;
/**
 * Bodies being received at once. When all places are taken, a new request still gets one: the reader with the
 * lowest rate so far is cut (503, Retry-After), so slow clients make room for real deliveries, never the reverse.
 */
export const MAX_READING = 64;
/** How often bodies being received are checked against the time limit and the minimum rate. */
const CHECK_MS = 250;
/** A body may start slowly: the minimum rate is asked of it after this first second. */
const RATE_GRACE_MS = 1000;
const PREFIX = '/webhooks/';

export type WebhookHandler = (req: IncomingMessage, res: ServerResponse) => Promise<boolean>;

/**
 * Options for the node:http server that mounts the webhooks: headers must arrive within
 * WEBHOOK_HEADERS_TIMEOUT_MS (Node answers 408 and closes; checked every second, not Node's default 30 s).
 */
export function webhookServerOptions(config: Pick<Services, 'config'>['config']): ServerOptions {
  return { headersTimeout: config.webhooks.headersTimeoutMs, connectionsCheckingInterval: 1000 };
}

interface Reader {
  started: number;
  bytes: number;
  /** Ends this request now with `status`: answered, the connection closed, the rest of the body unread. */
  cut(status: number, reason: string): void;
}

export function createWebhookHandler(services: Pick<Services, 'inbox' | 'log'>): WebhookHandler {
  const { inbox } = services;
  const log = services.log.child({ component: 'webhooks' });
  let processing = 0;
  const readers = new Set<Reader>();
  let ticker: NodeJS.Timeout | undefined;

  const reply = (res: ServerResponse, status: number, body: Record<string, unknown>, headers: Record<string, string> = {}) => {
    if (res.headersSent) return;
    res.writeHead(status, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store', ...headers });
    res.end(JSON.stringify(body));
  };

  const check = () => {
    const now = Date.now();
    const { timeoutMs, minBytesPerS } = inbox.bodyLimits;
    for (const r of readers) {
      const elapsed = now - r.started;
      if (elapsed > timeoutMs) r.cut(408, `the body did not arrive within WEBHOOK_BODY_TIMEOUT_MS (${timeoutMs} ms)`);
      else if (minBytesPerS > 0 && elapsed > RATE_GRACE_MS && r.bytes < (minBytesPerS * (elapsed - RATE_GRACE_MS)) / 1000) {
        r.cut(408, `the body arrived too slowly (under WEBHOOK_MIN_BODY_BYTES_PER_S, ${minBytesPerS} bytes a second)`);
      }
    }
    if (!readers.size && ticker) {
      clearInterval(ticker);
      ticker = undefined;
    }
  };

  /** Room for one more reader: the slowest one so far is cut. */
  const makeRoom = () => {
    const now = Date.now();
    let slowest: Reader | undefined;
    let slowestRate = Infinity;
    for (const r of readers) {
      const rate = r.bytes / Math.max(1, now - r.started);
      if (rate < slowestRate) [slowest, slowestRate] = [r, rate];
    }
    slowest?.cut(503, `too many request bodies arriving at once (${MAX_READING}); this one was the slowest. Deliver again later.`);
  };

  return async (req, res) => {
    const path = (req.url ?? '').split('?')[0]!;
    if (!path.startsWith(PREFIX)) return false;
    const endpoint = path.slice(PREFIX.length).replace(/\/+$/, '') as Endpoint;
    if (!ENDPOINTS.includes(endpoint) || !inbox.enabled(endpoint)) {
      reply(res, 404, { error: ENDPOINTS.includes(endpoint) ? 'This webhook endpoint is not enabled on this server.' : 'No such webhook endpoint.' });
      req.resume();
      return true;
    }
    if (req.method !== 'POST') {
      reply(res, 405, { error: 'Use POST.' }, { Allow: 'POST' });
      req.resume();
      return true;
    }
    const limits = inbox.bodyLimits;
    if (readers.size >= MAX_READING) makeRoom();
    let body: Buffer | undefined | 'cut';
    const reading = readBody(req, limits.maxBytes);
    const reader: Reader = {
      started: Date.now(),
      bytes: 0,
      cut: (status, reason) => {
        if (!readers.delete(reader)) return;
        const r = inbox.reject(endpoint, status, reason);
        reply(res, r.status, r.body, { Connection: 'close', ...(status === 503 ? { 'Retry-After': '5' } : {}) });
        res.once('finish', () => req.destroy());
        reading.stop();
      },
    };
    reading.onData = (n) => (reader.bytes += n);
    readers.add(reader);
    ticker ??= setInterval(check, CHECK_MS).unref();
    try {
      body = await reading.body;
    } catch (err) {
      log.warn({ err: { message: (err as Error).message }, endpoint }, 'webhook request ended while its body was being received');
      return true;
    } finally {
      readers.delete(reader);
    }
    if (body === 'cut') return true;
    if (body === undefined) {
      const r = inbox.reject(endpoint, 413, `body larger than WEBHOOK_MAX_BODY_BYTES (${limits.maxBytes} bytes)`);
      // Answer, then close: the rest of an oversized body is not read.
      reply(res, r.status, r.body, { Connection: 'close' });
      res.once('finish', () => req.destroy());
      return true;
    }
    if (processing >= MAX_CONCURRENT) {
      reply(res, 503, { error: 'Busy; deliver again later.' }, { 'Retry-After': '5' });
      return true;
    }
    processing += 1;
    try {
      const r = await inbox.receive(endpoint, req.headers, body);
      reply(res, r.status, r.body);
    } catch (err) {
      log.error({ err, endpoint }, 'webhook request failed');
      reply(res, 500, { error: 'Internal error; the server logs have details. Deliver again later.' });
    } finally {
      processing -= 1;
    }
    return true;
  };
}

interface BodyReading {
  /** The raw body; undefined once it exceeds the limit (declared or streamed); 'cut' when stopped. */
  body: Promise<Buffer | undefined | 'cut'>;
  /** Called with the size of each chunk as it arrives. */
  onData?: (bytes: number) => void;
  /** Stops reading: the body resolves 'cut', the rest is discarded unread. */
  stop(): void;
}

function readBody(req: IncomingMessage, limit: number): BodyReading {
  let stop = () => undefined as void;
  const reading: BodyReading = { body: undefined as never, stop: () => stop() };
  reading.body = new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > limit) return resolve(undefined);
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const finish = (fn: () => void) => {
      if (done) return;
      done = true;
      fn();
    };
    stop = () => finish(() => resolve('cut'));
    req.on('data', (chunk: Buffer) => {
      if (done) return;
      size += chunk.length;
      reading.onData?.(chunk.length);
      if (size > limit) finish(() => resolve(undefined));
      else chunks.push(chunk);
    });
    req.on('end', () => finish(() => resolve(Buffer.concat(chunks, size))));
    req.on('error', (err) => finish(() => reject(err)));
    req.on('close', () => finish(() => reject(new Error('the client closed the connection before sending the whole body'))));
  });
  return reading;
}
