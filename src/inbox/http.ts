import type { IncomingMessage, ServerResponse } from 'node:http';
import { ENDPOINTS, type Endpoint } from '../engine/inbox/index.js';
import type { Services } from '../services.js';

/**
 * The webhook endpoints as a plain node:http handler, mounted in front of anything else (the MCP
 * HTTP server, the headless worker): providers sign the raw body, so it must be read here, unparsed,
 * with its own size limit; and they cannot send the MCP bearer token, so none is asked — the
 * signature is the authentication. Resolves true when the request was a webhook and was answered.
 */

/** Requests read at once; more get 503 and are delivered again by the provider. */
const MAX_CONCURRENT = 32;
const PREFIX = '/webhooks/';

export type WebhookHandler = (req: IncomingMessage, res: ServerResponse) => Promise<boolean>;

export function createWebhookHandler(services: Pick<Services, 'inbox' | 'log'>): WebhookHandler {
  const { inbox } = services;
  const log = services.log.child({ component: 'webhooks' });
  let active = 0;

  const reply = (res: ServerResponse, status: number, body: Record<string, unknown>, headers: Record<string, string> = {}) => {
    if (res.headersSent) return;
    res.writeHead(status, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store', ...headers });
    res.end(JSON.stringify(body));
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
    if (active >= MAX_CONCURRENT) {
      reply(res, 503, { error: 'Busy; deliver again later.' }, { 'Retry-After': '5' });
      req.resume();
      return true;
    }
    active += 1;
    try {
      const body = await readBody(req, inbox.maxBodyBytes);
      if (body === undefined) {
        const r = inbox.reject(endpoint, 413, `body larger than WEBHOOK_MAX_BODY_BYTES (${inbox.maxBodyBytes} bytes)`);
        // Answer, then close: the rest of an oversized body is not read.
        reply(res, r.status, r.body, { Connection: 'close' });
        res.once('finish', () => req.destroy());
        return true;
      }
      const r = await inbox.receive(endpoint, req.headers, body);
      reply(res, r.status, r.body);
    } catch (err) {
      log.error({ err, endpoint }, 'webhook request failed');
      reply(res, 500, { error: 'Internal error; the server logs have details. Deliver again later.' });
    } finally {
      active -= 1;
    }
    return true;
  };
}

/** The raw body, or undefined once it exceeds `limit` (declared or streamed); the rest is discarded unread. */
function readBody(req: IncomingMessage, limit: number): Promise<Buffer | undefined> {
  return new Promise((resolve, reject) => {
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
    req.on('data', (chunk: Buffer) => {
      if (done) return;
      size += chunk.length;
      if (size > limit) finish(() => resolve(undefined));
      else chunks.push(chunk);
    });
    req.on('end', () => finish(() => resolve(Buffer.concat(chunks, size))));
    req.on('error', (err) => finish(() => reject(err)));
    req.on('close', () => finish(() => reject(new Error('the client closed the connection before sending the whole body'))));
  });
}
