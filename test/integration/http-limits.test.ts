import http from 'node:http';
import v8 from 'node:v8';
import vm from 'node:vm';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import pino from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { createServices, type Services } from '../../src/services.js';
import { serveHttp, type RunningHttpServer } from '../../src/transports/http.js';
import { tempDataDir, testEnv } from '../helpers/mcp.js';

/**
 * The Streamable HTTP transport's bounds, in process (so the session pool and the heap can be observed):
 * sessions, idle expiry, stateless mode, request size and JSON-only answers.
 */

v8.setFlagsFromString('--expose_gc');
const gc = vm.runInNewContext('gc') as () => void;

interface Harness {
  services: Services;
  running: RunningHttpServer;
  url: string;
  close(): Promise<void>;
}

const open: Harness[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((h) => h.close()));
});

async function start(extra: Record<string, string> = {}): Promise<Harness> {
  const data = tempDataDir();
  const services = await createServices(loadConfig(testEnv({ MCP_HTTP_PORT: '0', ...extra }, data.dir) as NodeJS.ProcessEnv), pino({ level: 'silent' }));
  const running = await serveHttp(services);
  const h: Harness = {
    services,
    running,
    url: running.url,
    close: async () => {
      await running.close();
      await services.close();
      data.cleanup();
    },
  };
  open.push(h);
  return h;
}

const HEADERS = { 'Content-Type': 'application/json', Accept: 'application/json, text/event-stream' };
const INITIALIZE = JSON.stringify({
  jsonrpc: '2.0',
  id: 1,
  method: 'initialize',
  params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'flood', version: '1' } },
});

/** One initialize without DELETE (what a forgetful or hostile client does); returns the status and session id. */
async function initialize(url: string): Promise<{ status: number; session?: string; body: string }> {
  const res = await fetch(url, { method: 'POST', headers: HEADERS, body: INITIALIZE });
  return { status: res.status, session: res.headers.get('mcp-session-id') ?? undefined, body: await res.text() };
}

async function toolsList(url: string, session: string): Promise<Response> {
  return fetch(url, {
    method: 'POST',
    headers: { ...HEADERS, 'Mcp-Session-Id': session, 'Mcp-Protocol-Version': '2025-06-18' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'tools/list' }),
  });
}

/** A raw request, so Host and other headers fetch would not let us set can be sent. */
function rawRequest(url: string, opts: { method?: string; headers?: Record<string, string>; body?: string }): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: u.hostname, port: u.port, path: u.pathname, method: opts.method ?? 'POST', headers: opts.headers }, (res) => {
      let body = '';
      res.on('data', (d) => (body += String(d)));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}

function expectJsonRpcError(r: { headers: http.IncomingHttpHeaders | Headers; body: string }, code: number): { message: string } {
  const type = r.headers instanceof Headers ? r.headers.get('content-type') : r.headers['content-type'];
  expect(type).toMatch(/^application\/json/);
  expect(r.body).not.toMatch(/<html|<pre|node_modules|at .*\(.*:\d+:\d+\)/i);
  const parsed = JSON.parse(r.body) as { jsonrpc: string; error: { code: number; message: string } };
  expect(parsed.jsonrpc).toBe('2.0');
  expect(parsed.error.code).toBe(code);
  return parsed.error;
}

describe('HTTP sessions are bounded', () => {
  it('a flood of initialize requests without DELETE keeps at most MCP_HTTP_MAX_SESSIONS sessions, and memory stops growing', async () => {
    const h = await start({ MCP_HTTP_MAX_SESSIONS: '20' });
    const flood = async (n: number) => {
      const sessions: string[] = [];
      for (let i = 0; i < n; i += 10) {
        const batch = await Promise.all(Array.from({ length: Math.min(10, n - i) }, () => initialize(h.url)));
        for (const r of batch) {
          expect(r.status).toBe(200);
          sessions.push(r.session!);
        }
        expect(h.running.sessionCount()).toBeLessThanOrEqual(20);
      }
      return sessions;
    };
    const first = await flood(100);
    gc();
    const heapAtLimit = process.memoryUsage().heapUsed;
    await flood(400);
    gc();
    const growth = process.memoryUsage().heapUsed - heapAtLimit;
    expect(h.running.sessionCount()).toBe(20);
    // Kept, 400 more sessions grow the heap by ~12 MB (measured; ~200 MB before the tool schemas were
    // shared between servers); bounded, it stays within 1 MB of where it was at the limit.
    expect(growth).toBeLessThan(4 * 1024 * 1024);
    // The longest-idle sessions made room: their client is told to start again (404), in JSON.
    const evicted = await toolsList(h.url, first[0]!);
    expect(evicted.status).toBe(404);
    expect(expectJsonRpcError({ headers: evicted.headers, body: await evicted.text() }, -32001).message).toMatch(/Start a new session/);
  });

  it('sessions idle for MCP_HTTP_SESSION_IDLE_MS are closed', async () => {
    const h = await start({ MCP_HTTP_SESSION_IDLE_MS: '100' });
    const sessions = await Promise.all([1, 2, 3, 4, 5].map(() => initialize(h.url)));
    expect(h.running.sessionCount()).toBeGreaterThan(0);
    await vi.waitFor(() => expect(h.running.sessionCount()).toBe(0), { timeout: 5000, interval: 20 });
    expect((await toolsList(h.url, sessions[0]!.session!)).status).toBe(404);
  });

  it('a session in use is never evicted: when every session has a request open, a new one is refused with 503 and what to do', async () => {
    const h = await start({ MCP_HTTP_MAX_SESSIONS: '2' });
    const streams: AbortController[] = [];
    for (let i = 0; i < 2; i += 1) {
      const { session } = await initialize(h.url);
      const ctl = new AbortController();
      // An open GET stream (server→client messages) is a request in progress.
      const res = await fetch(h.url, { headers: { Accept: 'text/event-stream', 'Mcp-Session-Id': session!, 'Mcp-Protocol-Version': '2025-06-18' }, signal: ctl.signal });
      expect(res.status).toBe(200);
      streams.push(ctl);
    }
    const refused = await initialize(h.url);
    expect(refused.status).toBe(503);
    expect(expectJsonRpcError({ headers: new Headers({ 'content-type': 'application/json' }), body: refused.body }, -32000).message).toMatch(
      /all 2 \(MCP_HTTP_MAX_SESSIONS\) have a request in progress.*raise MCP_HTTP_MAX_SESSIONS/,
    );
    expect(h.running.sessionCount()).toBe(2);
    streams[0]!.abort();
    await vi.waitFor(async () => expect((await initialize(h.url)).status).toBe(200), { timeout: 5000, interval: 20 });
    expect(h.running.sessionCount()).toBe(2);
    streams[1]!.abort();
  });

  it('stateless mode (MCP_HTTP_STATELESS=true) serves a client with no session kept', async () => {
    const h = await start({ MCP_HTTP_STATELESS: 'true' });
    const client = new Client({ name: 'stateless', version: '1' });
    await client.connect(new StreamableHTTPClientTransport(new URL(h.url)));
    expect((await client.listTools()).tools.length).toBeGreaterThan(20);
    const r = (await client.callTool({ name: 'integrations_status', arguments: {} })) as unknown as { structuredContent: { success: boolean } };
    expect(r.structuredContent.success).toBe(true);
    await client.close();
    expect(h.running.sessionCount()).toBe(0);
    const get = await rawRequest(h.url, { method: 'GET', headers: { Accept: 'text/event-stream' } });
    expect(get.status).toBe(405);
    expectJsonRpcError(get, -32000);
  });
});

describe('HTTP answers every request in JSON-RPC, and accepts what the schemas allow', () => {
  it('accepts a body_html at the schema maximum (500,000 characters, multi-byte)', async () => {
    const h = await start();
    const client = new Client({ name: 'big', version: '1' });
    await client.connect(new StreamableHTTPClientTransport(new URL(h.url)));
    for (const body_html of ['x'.repeat(150_000), '€'.repeat(500_000)]) {
      const r = (await client.callTool({
        name: 'send_personalized_email',
        arguments: { campaign_name: 'Big', template_type: 'custom', subject_line: 'Hi', body_text: 'Hi', body_html, target_tier: 'enterprise' },
      })) as unknown as { structuredContent: { success: boolean; error?: { code: string } } };
      // Answered by the tool (here: nothing to send to), not refused by the transport.
      expect(r.structuredContent).toHaveProperty('success');
    }
    await client.close();
  });

  it('a request over MCP_MAX_REQUEST_BYTES gets 413 with a JSON-RPC error naming the limit', async () => {
    const h = await start({ MCP_MAX_REQUEST_BYTES: String(1024 * 1024) });
    const { session } = await initialize(h.url);
    const body = JSON.stringify({ jsonrpc: '2.0', id: 3, method: 'tools/call', params: { name: 'intercom_create_note', arguments: { body: 'x'.repeat(1_100_000) } } });
    const r = await rawRequest(h.url, { headers: { ...HEADERS, 'Mcp-Session-Id': session! }, body });
    expect(r.status).toBe(413);
    expect(expectJsonRpcError(r, -32600).message).toMatch(/over 1048576 bytes \(MCP_MAX_REQUEST_BYTES\)/);
  });

  it('invalid JSON gets -32700 without stack or paths; unknown paths and bad charsets get JSON too', async () => {
    const h = await start();
    const bad = await rawRequest(h.url, { headers: HEADERS, body: '{"jsonrpc": "2.0", "id": 1, "method": ' });
    expect(bad.status).toBe(400);
    expectJsonRpcError(bad, -32700);
    const notFound = await rawRequest(h.url.replace('/mcp', '/nope'), { method: 'GET' });
    expect(notFound.status).toBe(404);
    expectJsonRpcError(notFound, -32000);
    const put = await rawRequest(h.url, { method: 'PUT', headers: HEADERS, body: '{}' });
    expect(put.status).toBe(404);
    expectJsonRpcError(put, -32000);
    const charset = await rawRequest(h.url, { headers: { ...HEADERS, 'Content-Type': 'application/json; charset=klingon' }, body: '{}' });
    expect(charset.status).toBe(415);
    expectJsonRpcError(charset, -32600);
  });
});

describe('Host and Origin checks on every bind address', () => {
  it('on 127.0.0.2 without a token: a foreign Host is refused; look-alike Origins are refused; loopback Origins pass', async () => {
    const h = await start({ MCP_HTTP_HOST: '127.0.0.2' });
    const port = new URL(h.url).port;
    const evilHost = await rawRequest(h.url, { headers: { ...HEADERS, Host: `evil.com:${port}` }, body: INITIALIZE });
    expect(evilHost.status).toBe(403);
    expectJsonRpcError(evilHost, -32000);
    expect((await rawRequest(h.url, { headers: { ...HEADERS, Host: `127.0.0.2:${port}` }, body: INITIALIZE })).status).toBe(200);
    expect((await rawRequest(h.url, { headers: { ...HEADERS, Host: `localhost:${port}` }, body: INITIALIZE })).status).toBe(200);
    for (const origin of ['http://127.evil.com', 'http://127.0.0.1.evil.example', 'https://localhost.evil.example', 'null', 'file://', 'http://evil.com']) {
      const r = await rawRequest(h.url, { headers: { ...HEADERS, Origin: origin }, body: INITIALIZE });
      expect(r.status, origin).toBe(403);
    }
    for (const origin of ['http://127.0.0.1:6274', 'http://127.0.0.9', 'http://localhost:3000', 'http://[::1]:8080']) {
      const r = await rawRequest(h.url, { headers: { ...HEADERS, Origin: origin }, body: INITIALIZE });
      expect(r.status, origin).toBe(200);
    }
  });

  it('on every interface with a token: only MCP_HTTP_ALLOWED_HOSTS (and loopback names) are accepted as Host', async () => {
    const token = 'a'.repeat(40);
    const h = await start({ MCP_HTTP_HOST: '0.0.0.0', MCP_HTTP_TOKEN: token, MCP_HTTP_ALLOWED_HOSTS: 'mcp.example.test' });
    const url = h.url.replace('0.0.0.0', '127.0.0.1');
    const port = new URL(url).port;
    const auth = { ...HEADERS, Authorization: `Bearer ${token}` };
    expect((await rawRequest(url, { headers: { ...auth, Host: `evil.com:${port}` }, body: INITIALIZE })).status).toBe(403);
    expect((await rawRequest(url, { headers: { ...auth, Host: `mcp.example.test:${port}` }, body: INITIALIZE })).status).toBe(200);
    expect((await rawRequest(url, { headers: { ...auth, Host: `mcp.example.test:${port}`, Origin: 'https://mcp.example.test' }, body: INITIALIZE })).status).toBe(200);
    expect((await rawRequest(url, { headers: { ...HEADERS, Host: `mcp.example.test:${port}` }, body: INITIALIZE })).status).toBe(401);
  });
});
