import { randomUUID } from 'node:crypto';
import { createServer, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';
import express, { type NextFunction, type Request, type Response } from 'express';
import { createWebhookHandler, webhookServerOptions } from '../inbox/http.js';
import { createMcpServer } from '../server.js';
import type { Services } from '../services.js';
import { createSignIn } from './http-auth.js';
import { observabilityRoutes } from './http-observability.js';
import { assertSafeHttpConfig, bearerAuth, hostCheck, originCheck } from './http-security.js';
import { SessionPool } from './http-sessions.js';

/** Every answer that is not MCP's own is still JSON-RPC: clients parse it, and never see an HTML page. */
function rpcError(res: Response, status: number, code: number, message: string, headers: Record<string, string> = {}): void {
  res.status(status).set(headers).json({ jsonrpc: '2.0', error: { code, message }, id: null });
}

export interface RunningHttpServer {
  url: string;
  /** Open MCP sessions (0 in stateless mode). */
  sessionCount(): number;
  close(): Promise<void>;
}

/**
 * MCP over Streamable HTTP at /mcp.
 * - Stateful (default): one MCP session per client, bounded (MCP_HTTP_MAX_SESSIONS, MCP_HTTP_SESSION_IDLE_MS).
 *   Needed for server→client requests (elicitation) and server-initiated notifications.
 * - Stateless (MCP_HTTP_STATELESS=true): a fresh MCP server per POST, no session map, so any instance
 *   behind a load balancer can answer any request.
 */
export async function serveHttp(services: Services): Promise<RunningHttpServer> {
  const { http, maxRequestBytes } = services.config;
  assertSafeHttpConfig(http);
  const log = services.log.child({ transport: 'http' });

  const app = express();
  app.disable('x-powered-by');
  const inProgress = new Set<Response>();
  app.use((_req, res, next) => {
    inProgress.add(res);
    res.once('close', () => inProgress.delete(res));
    next();
  });
  // /healthz, /readyz, /metrics: polled by address, without the MCP token (see http-observability.ts).
  app.use(observabilityRoutes(services));
  // Host first, applied to every bind address (the SDK's createMcpExpressApp only does it for some).
  app.use(hostCheck(http));
  const signIn = http.oauth ? createSignIn(services, http.oauth) : undefined;
  if (signIn) app.use(signIn.metadata);
  app.use(originCheck(http));
  if (http.token) app.use('/mcp', bearerAuth(http.token));
  if (signIn) app.use('/mcp', signIn.authenticate);
  // The body is read only after the checks above, and never beyond the limit.
  app.use('/mcp', express.json({ limit: maxRequestBytes }));
  if (signIn) app.post('/mcp', signIn.stepUp);

  const pool = http.stateless ? undefined : new SessionPool({ max: http.maxSessions, idleMs: http.sessionIdleMs, log });

  if (pool) {
    app.post('/mcp', async (req, res) => {
      const sessionId = req.headers['mcp-session-id'];
      if (sessionId !== undefined) {
        const session = typeof sessionId === 'string' ? pool.get(sessionId) : undefined;
        if (!session) return unknownSession(res);
        pool.track(session, res);
        await session.transport.handleRequest(req, res, req.body);
        return;
      }
      if (!isInitializeRequest(req.body)) {
        rpcError(res, 400, -32000, 'No session: start with an initialize request (without Mcp-Session-Id).');
        return;
      }
      if (!pool.makeRoom()) {
        rpcError(
          res,
          503,
          -32000,
          `Too many MCP sessions: all ${http.maxSessions} (MCP_HTTP_MAX_SESSIONS) have a request in progress. Retry in a minute, ` +
            'close clients you no longer use, or raise MCP_HTTP_MAX_SESSIONS.',
          { 'Retry-After': '60' },
        );
        return;
      }
      const id = randomUUID();
      const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: () => id });
      const server = createMcpServer(services);
      const session = pool.add(id, transport, server);
      transport.onclose = () => pool.remove(session);
      await server.connect(transport);
      pool.track(session, res);
      await transport.handleRequest(req, res, req.body);
      // An initialize the transport refused (bad version, batch…) leaves no session behind.
      if (transport.sessionId === undefined) pool.remove(session);
    });
    const sessionRequest = async (req: Request, res: Response) => {
      const sessionId = req.headers['mcp-session-id'];
      const session = typeof sessionId === 'string' ? pool.get(sessionId) : undefined;
      if (!session) return unknownSession(res);
      pool.track(session, res);
      await session.transport.handleRequest(req, res);
    };
    app.get('/mcp', sessionRequest);
    app.delete('/mcp', sessionRequest);
  } else {
    app.post('/mcp', async (req, res) => {
      const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined });
      const server = createMcpServer(services);
      res.once('close', () => {
        void transport.close().catch(() => undefined);
        void server.close().catch(() => undefined);
      });
      await server.connect(transport);
      await transport.handleRequest(req, res, req.body);
    });
    const noSessions = (_req: Request, res: Response) =>
      rpcError(res, 405, -32000, 'This server runs stateless (MCP_HTTP_STATELESS=true): there are no sessions to stream from or end; send requests with POST.', {
        Allow: 'POST',
      });
    app.get('/mcp', noSessions);
    app.delete('/mcp', noSessions);
  }

  app.use((req, res) => {
    rpcError(res, 404, -32000, `Not found: ${req.method} ${req.path}. The MCP endpoint is POST/GET/DELETE /mcp.`);
  });
  // Express's default error page is HTML with a stack trace; every error here is answered in JSON-RPC.
  app.use((err: unknown, req: Request, res: Response, _next: NextFunction) => {
    const e = err as { type?: string; status?: number; statusCode?: number };
    if (res.headersSent) {
      log.warn({ err }, 'error after the response started; closing the connection');
      res.destroy();
      return;
    }
    if (e.type === 'entity.too.large') {
      rpcError(
        res,
        413,
        -32600,
        `Request too large: over ${maxRequestBytes} bytes (MCP_MAX_REQUEST_BYTES). Send less in one call (e.g. split the recipients), or raise MCP_MAX_REQUEST_BYTES.`,
      );
      return;
    }
    if (e.type === 'entity.parse.failed') {
      rpcError(res, 400, -32700, 'Parse error: the request body is not valid JSON.');
      return;
    }
    const status = e.status ?? e.statusCode ?? 500;
    if (status >= 400 && status < 500) {
      rpcError(res, status, -32600, `Invalid request (${e.type ?? `HTTP ${status}`}): send a JSON-RPC message as UTF-8 JSON with Content-Type: application/json.`);
      return;
    }
    log.error({ err, path: req.path }, 'HTTP request failed');
    rpcError(res, 500, -32603, 'Internal error; the server logs have details.');
  });

  // Provider webhooks go first, before Express parses anything: they are signed over the raw body.
  const webhooks = createWebhookHandler(services);
  const server: HttpServer = await new Promise((resolve, reject) => {
    const s = createServer(webhookServerOptions(services.config), (req, res) => void webhooks(req, res).then((handled) => handled || app(req, res)));
    s.listen(http.port, http.host, () => resolve(s));
    s.once('error', reject);
  });
  const address = server.address() as AddressInfo;
  const shownHost = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const url = `http://${shownHost}:${address.port}/mcp`;
  log.info({ url, stateless: http.stateless, max_sessions: http.maxSessions, session_idle_ms: http.sessionIdleMs }, 'serving MCP over Streamable HTTP');
  return {
    url,
    sessionCount: () => pool?.size ?? 0,
    close: async () => {
      await pool?.closeAll();
      // Stop accepting, give requests in progress a moment to finish, then cut every connection.
      server.close();
      const grace = new Promise<void>((resolve) => setTimeout(resolve, 3000).unref());
      await Promise.race([Promise.all([...inProgress].map((res) => new Promise((resolve) => res.once('close', resolve)))), grace]);
      server.closeAllConnections();
    },
  };
}

/** The protocol's answer to a session id we do not know (expired, evicted, ended): 404, start over. */
function unknownSession(res: Response): void {
  rpcError(
    res,
    404,
    -32001,
    'Session not found: it ended, was idle too long (MCP_HTTP_SESSION_IDLE_MS) or made room for another client. Start a new session with an initialize request without Mcp-Session-Id.',
  );
}
