import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { OpenApiContract } from '../helpers/openapi.js';
import { RateWindow } from './rate-window.js';

/**
 * What every provider stand-in shares: a node:http server on 127.0.0.1, request recording, contract
 * validation of every JSON body, per-path fault injection, an optional fixed-window rate limit and
 * latency. Each provider file adds its routes and its own error shapes.
 */

export interface RecordedRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  headers: http.IncomingHttpHeaders;
  body: unknown;
  rawBody: string;
  at: number;
}

export interface Fault {
  /** Matches `METHOD /path` (e.g. /^POST \/messages/). */
  match: RegExp;
  /** How many matching requests it applies to. */
  times: number;
  status?: number;
  headers?: Record<string, string>;
  body?: unknown;
  /** Never answer (the client must time out). */
  hang?: boolean;
  /** Record the request, then drop the connection without answering. */
  drop?: boolean;
}

export interface Reply {
  status: number;
  body?: unknown;
  headers?: Record<string, string>;
}

export type Route = (req: RecordedRequest) => Reply | undefined | Promise<Reply | undefined>;

export interface StandInOptions {
  name: string;
  contract?: OpenApiContract;
  /** Which requests to validate against the contract, and how to name the path in it. */
  contractPath?: (req: RecordedRequest) => string | undefined;
  /** Checks credentials; returns a reply to refuse the request. */
  authorize?: (req: RecordedRequest) => Reply | undefined;
  rateLimit?: { limit: number; windowMs: number };
  /** The provider's 429 body. */
  rateLimitedBody?: unknown;
  latencyMs?: number;
  /** Whether to send X-RateLimit-* headers (Mixpanel sends none). */
  rateHeaders?: boolean;
}

export class HttpStandIn {
  readonly requests: RecordedRequest[] = [];
  readonly violations: Array<{ request: string; errors: string[] }> = [];
  readonly rate: RateWindow;
  private readonly faults: Fault[] = [];
  private readonly hanging = new Set<http.ServerResponse>();
  private server?: http.Server;
  url = '';

  constructor(
    private readonly opts: StandInOptions,
    private readonly route: Route,
  ) {
    this.rate = new RateWindow(opts.rateLimit ?? { limit: 100_000, windowMs: 10_000 });
  }

  async start(): Promise<this> {
    this.server = http.createServer((req, res) => void this.handle(req, res));
    this.server.keepAliveTimeout = 5000;
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  async stop(): Promise<void> {
    for (const res of this.hanging) res.destroy();
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => this.server?.close(() => resolve()) ?? resolve());
  }

  inject(fault: Fault): void {
    this.faults.push({ ...fault });
  }

  clearFaults(): void {
    this.faults.length = 0;
  }

  /** Requests matching `METHOD /path`. */
  matching(re: RegExp): RecordedRequest[] {
    return this.requests.filter((r) => re.test(`${r.method} ${r.path}`));
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const rawBody = Buffer.concat(chunks).toString('utf8');
    const url = new URL(req.url ?? '/', 'http://stand-in');
    let body: unknown = rawBody;
    if (rawBody && /json/.test(String(req.headers['content-type'] ?? ''))) {
      try {
        body = JSON.parse(rawBody);
      } catch {
        body = rawBody;
      }
    }
    const rec: RecordedRequest = { method: req.method ?? 'GET', path: url.pathname, query: url.searchParams, headers: req.headers, body, rawBody, at: Date.now() };
    this.requests.push(rec);
    const key = `${rec.method} ${rec.path}`;

    if (this.opts.latencyMs) await new Promise((r) => setTimeout(r, this.opts.latencyMs));
    const fault = this.faults.find((f) => f.times > 0 && f.match.test(key));
    if (fault) {
      fault.times -= 1;
      if (fault.hang) {
        this.hanging.add(res);
        return;
      }
      if (fault.drop) {
        req.socket.destroy();
        return;
      }
    }
    const denied = this.opts.authorize?.(rec);
    if (denied) return this.send(res, denied, false);
    if (fault) return this.send(res, { status: fault.status ?? 500, body: fault.body, headers: fault.headers });
    if (!this.rate.take()) {
      return this.send(res, { status: 429, body: this.opts.rateLimitedBody ?? { errors: [{ message: 'too many requests' }] } });
    }
    const contractPath = this.opts.contractPath?.(rec);
    if (this.opts.contract && contractPath && rec.method !== 'GET' && rec.method !== 'DELETE') {
      try {
        const v = this.opts.contract.validateRequestBody(rec.method, contractPath, rec.body);
        if (!v.valid) this.violations.push({ request: key, errors: v.errors });
      } catch (err) {
        this.violations.push({ request: key, errors: [`could not validate: ${(err as Error).message}`] });
      }
    }
    const reply = (await this.route(rec)) ?? { status: 404, body: { errors: [{ code: 'not_found', message: `stand-in has no route ${key}` }] } };
    this.send(res, reply);
  }

  private send(res: http.ServerResponse, reply: Reply, withRate = true): void {
    const headers: Record<string, string> = { ...(withRate && this.opts.rateHeaders !== false ? this.rate.headers() : {}), ...reply.headers };
    if (reply.body !== undefined && !headers['Content-Type']) headers['Content-Type'] = 'application/json';
    res.writeHead(reply.status, headers);
    res.end(reply.body === undefined ? undefined : typeof reply.body === 'string' ? reply.body : JSON.stringify(reply.body));
  }
}
