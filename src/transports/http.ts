import { randomUUID, timingSafeEqual } from 'node:crypto';
import { createServer, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createMcpExpressApp } from '@modelcontextprotocol/sdk/server/express.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';
import type { NextFunction, Request, Response } from 'express';
import { ConfigError, type Config } from '../config.js';
import { createWebhookHandler } from '../inbox/http.js';
import { createMcpServer } from '../server.js';
import type { Services } from '../services.js';

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '::1', '[::1]']);

export function isLoopbackHost(host: string): boolean {
  return LOOPBACK.has(host) || host.startsWith('127.');
}

/** Refuses, before anything listens, a reachable-from-the-network server that anyone could use. */
export function assertSafeHttpConfig(http: Config['http']): void {
  if (!isLoopbackHost(http.host) && !http.token) {
    throw new ConfigError(
      `Refusing to serve MCP on ${http.host} without a token: anyone who can reach this address could message your customers. ` +
        'Set MCP_HTTP_TOKEN to a long random value (clients send it as "Authorization: Bearer <token>"), or bind to 127.0.0.1.',
    );
  }
}

function bearerAuth(token: string) {
  const expected = Buffer.from(token);
  return (req: Request, res: Response, next: NextFunction) => {
    const given = /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? '')?.[1]?.trim() ?? '';
    const buf = Buffer.from(given);
    if (buf.length !== expected.length || !timingSafeEqual(buf, expected)) {
      res.status(401).set('WWW-Authenticate', 'Bearer').json({
        jsonrpc: '2.0',
        error: { code: -32001, message: 'Unauthorized: send "Authorization: Bearer <MCP_HTTP_TOKEN>".' },
        id: null,
      });
      return;
    }
    next();
  };
}

/** A browser page on another site must not drive this server (DNS rebinding / CSRF): check Origin too. */
function originCheck(allowedHosts: string[] | undefined) {
  return (req: Request, res: Response, next: NextFunction) => {
    const origin = req.headers.origin;
    if (!origin) return next();
    let host: string;
    try {
      host = new URL(origin).hostname;
    } catch {
      host = '';
    }
    const allowed = isLoopbackHost(host) || (allowedHosts ?? []).includes(host);
    if (!allowed) {
      res.status(403).json({ jsonrpc: '2.0', error: { code: -32000, message: `Origin ${origin} is not allowed.` }, id: null });
      return;
    }
    next();
  };
}

export interface RunningHttpServer {
  url: string;
  close(): Promise<void>;
}

/** MCP over Streamable HTTP at /mcp, one MCP session per client session id. */
export async function serveHttp(services: Services): Promise<RunningHttpServer> {
  const { http } = services.config;
  assertSafeHttpConfig(http);
  const log = services.log.child({ transport: 'http' });
  // Extra allowed names come on top of loopback, so local clients keep working.
  const allowedHosts = http.allowedHosts?.length ? ['localhost', '127.0.0.1', '[::1]', ...http.allowedHosts] : undefined;
  const app = createMcpExpressApp({ host: http.host, allowedHosts });
  app.use(originCheck(http.allowedHosts));
  app.get('/healthz', (_req, res) => {
    res.json({ ok: true });
  });
  if (http.token) app.use('/mcp', bearerAuth(http.token));

  const sessions = new Map<string, StreamableHTTPServerTransport>();

  app.post('/mcp', async (req, res) => {
    const sessionId = req.headers['mcp-session-id'];
    let transport = typeof sessionId === 'string' ? sessions.get(sessionId) : undefined;
    if (!transport) {
      if (sessionId !== undefined || !isInitializeRequest(req.body)) {
        res.status(400).json({
          jsonrpc: '2.0',
          error: { code: -32000, message: 'No valid session: start with an initialize request (without Mcp-Session-Id).' },
          id: null,
        });
        return;
      }
      const created = new StreamableHTTPServerTransport({
        sessionIdGenerator: () => randomUUID(),
        onsessioninitialized: (id) => {
          sessions.set(id, created);
        },
      });
      created.onclose = () => {
        if (created.sessionId) sessions.delete(created.sessionId);
      };
      await createMcpServer(services).connect(created);
      transport = created;
    }
    await transport.handleRequest(req, res, req.body);
  });

  const sessionRequest = async (req: Request, res: Response) => {
    const sessionId = req.headers['mcp-session-id'];
    const transport = typeof sessionId === 'string' ? sessions.get(sessionId) : undefined;
    if (!transport) {
      res.status(400).json({ jsonrpc: '2.0', error: { code: -32000, message: 'Unknown or missing Mcp-Session-Id.' }, id: null });
      return;
    }
    await transport.handleRequest(req, res);
  };
  app.get('/mcp', sessionRequest);
  app.delete('/mcp', sessionRequest);

  // Provider webhooks go first, before Express parses anything: they are signed over the raw body.
  const webhooks = createWebhookHandler(services);
  const server: HttpServer = await new Promise((resolve, reject) => {
    const s = createServer((req, res) => void webhooks(req, res).then((handled) => handled || app(req, res)));
    s.listen(http.port, http.host, () => resolve(s));
    s.once('error', reject);
  });
  const address = server.address() as AddressInfo;
  const shownHost = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const url = `http://${shownHost}:${address.port}/mcp`;
  log.info({ url }, 'serving MCP over Streamable HTTP');
  return {
    url,
    close: async () => {
      await Promise.all([...sessions.values()].map((t) => t.close().catch(() => undefined)));
      sessions.clear();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections?.();
    },
  };
}
