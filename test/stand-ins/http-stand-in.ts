import { EventEmitter } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { OpenApiContract } from '../helpers/openapi.js';
import { seededRandom } from '../helpers/random.js';
import { until } from '../helpers/until.js';
import { RateWindow, type RateWindowOptions } from './rate-window.js';

/**
 * What every provider stand-in shares: a node:http server on 127.0.0.1, request recording, contract
 * validation of every request (path, query, JSON body) and of every JSON answer, per-path fault
 * injection, the providers' irregularities (bare 429s at a seeded rate, latency with jitter), an
 * optional fixed-window rate limit. Each provider file adds its routes and its own error shapes.
 *
 * A request that breaks the provider's published description is answered 422 naming the violation
 * (never a success, never a status our clients retry) and recorded; a recorded violation fails the
 * test that caused it (test/helpers/stand-in-guard.ts) and `stop()` throws while any is unreported.
 */

export interface RecordedRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  headers: http.IncomingHttpHeaders;
  body: unknown;
  rawBody: string;
  at: number;
  /** How the stand-in answered: a status, or `drop` / `hang` for an injected fault; unset while pending. */
  answer?: number | 'drop' | 'hang';
  answeredAt?: number;
}

export interface Fault {
  /** Matches `METHOD /path` (e.g. /^POST \/messages/). */
  match: RegExp;
  /** How many matching requests it applies to. */
  times: number;
  status?: number;
  headers?: Record<string, string>;
  body?: unknown;
  /** Answer without the X-RateLimit-* headers (SendGrid's bare 429). */
  withoutRateHeaders?: boolean;
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

export interface Violation {
  /** `request`: our client broke the description; `response`: the stand-in did (a stand-in bug). */
  kind: 'request' | 'response';
  request: string;
  errors: string[];
}

export type Route = (req: RecordedRequest) => Reply | undefined | Promise<Reply | undefined>;

export interface StandInOptions {
  name: string;
  /** The provider's published descriptions; every request must be an operation of one of them. */
  contracts?: OpenApiContract[];
  /** The description's key for a request's path where it is not the path itself (Mixpanel's `/engage#profile-set`). */
  contractPath?: (req: RecordedRequest) => string | undefined;
  /** The provider's error body carrying `message`, for the 422 that answers a contract violation. */
  violationBody?: (message: string) => unknown;
  /** Checks credentials; returns a reply to refuse the request. */
  authorize?: (req: RecordedRequest) => Reply | undefined;
  /** The provider's rate window (default: 100,000 per 10 s, clock-aligned). */
  rateLimit?: RateWindowOptions;
  /** The provider's 429 body. */
  rateLimitedBody?: unknown;
  /** Added to every answer; plus up to `jitterMs` more, drawn from the seeded random source. */
  latencyMs?: number;
  jitterMs?: number;
  /** Probability (0..1) that a request is refused with a 429 carrying no rate-limit headers, as SendGrid does. */
  bare429Probability?: number;
  /** Seed for jitter and random 429s, so a failing run can be replayed. */
  seed?: number;
  /** Whether to send X-RateLimit-* headers (Mixpanel sends none). */
  rateHeaders?: boolean;
}

/** Every stand-in started in this process (the guard checks them after each test). */
export const liveStandIns = new Set<HttpStandIn>();

export class HttpStandIn extends EventEmitter<{ request: [RecordedRequest]; answered: [RecordedRequest] }> {
  readonly requests: RecordedRequest[] = [];
  readonly violations: Violation[] = [];
  readonly rate: RateWindow;
  private reported = 0;
  private readonly random: () => number;
  private readonly faults: Fault[] = [];
  private readonly hanging = new Set<http.ServerResponse>();
  private server?: http.Server;
  /** Servers stopped by refuseConnections() whose last connections may still be open. */
  private readonly closing: http.Server[] = [];
  url = '';

  constructor(
    private readonly opts: StandInOptions,
    private readonly route: Route,
  ) {
    super();
    this.rate = new RateWindow(opts.rateLimit ?? { limit: 100_000, windowMs: 10_000 });
    this.random = seededRandom(opts.seed ?? 1);
  }

  get name(): string {
    return this.opts.name;
  }

  /**
   * Listens on a free port below the usual ephemeral ranges (Linux 32768–60999, BSD/macOS 49152+), so
   * while connections are refused no outgoing connection can take the port and block listening again.
   */
  async start(): Promise<this> {
    for (let attempt = 0; ; attempt++) {
      const port = 20_000 + Math.floor(Math.random() * 12_000);
      try {
        await this.listen(port);
        break;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || attempt >= 50) throw err;
      }
    }
    this.url = `http://127.0.0.1:${(this.server!.address() as AddressInfo).port}`;
    liveStandIns.add(this);
    return this;
  }

  private async listen(port: number): Promise<void> {
    const server = http.createServer((req, res) => void this.handle(req, res).catch((err: unknown) => this.failed(res, err)));
    server.keepAliveTimeout = 5000;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.server = server;
  }

  /**
   * Stops listening, so new connections are refused before any byte is sent (ECONNREFUSED: provably
   * not delivered). Requests already being answered finish; idle kept-alive connections are closed.
   */
  refuseConnections(): void {
    const server = this.server!;
    this.server = undefined;
    server.close();
    server.closeIdleConnections();
    this.closing.push(server);
  }

  /** Listens again on the same port. */
  async acceptConnections(): Promise<void> {
    if (!this.server) await this.listen(Number(new URL(this.url).port));
  }

  /** Stops serving. Throws if contract violations were recorded that no test has reported or acknowledged. */
  async stop(): Promise<void> {
    liveStandIns.delete(this);
    for (const res of this.hanging) res.destroy();
    for (const server of [...this.closing, ...(this.server ? [this.server] : [])]) {
      server.closeAllConnections();
      await new Promise<void>((resolve) => (server.listening ? server.close(() => resolve()) : resolve()));
    }
    const unreported = this.takeUnreportedViolations();
    if (unreported.length) throw new Error(describeViolations(this.name, unreported));
  }

  /** Violations recorded since the last report or acknowledgement; marks them reported. */
  takeUnreportedViolations(): Violation[] {
    const fresh = this.violations.slice(this.reported);
    this.reported = this.violations.length;
    return fresh;
  }

  /** For a test that provokes a violation on purpose: returns the unreported ones and accepts them. */
  acknowledgeViolations(): Violation[] {
    return this.takeUnreportedViolations();
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

  /** Resolves once `count` requests matching `METHOD /path` have arrived (or throws after `timeoutMs`). */
  async waitForRequests(re: RegExp, count = 1, timeoutMs = 20_000): Promise<RecordedRequest[]> {
    await until(() => this.matching(re).length >= count, { timeoutMs, message: `${this.name}: ${count} × ${re} not received` });
    return this.matching(re);
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
    this.emit('request', rec);

    // Before any fault: a request that breaks the description fails, whatever would have happened to it.
    const broken = this.checkRequest(rec, key);
    if (broken) return this.send(res, rec, broken, false, false);

    const delay = (this.opts.latencyMs ?? 0) + (this.opts.jitterMs ? this.random() * this.opts.jitterMs : 0);
    if (delay > 0) await new Promise((r) => setTimeout(r, delay));
    const fault = this.faults.find((f) => f.times > 0 && f.match.test(key));
    if (fault) {
      fault.times -= 1;
      if (fault.hang) {
        this.hanging.add(res);
        return this.settle(rec, 'hang');
      }
      if (fault.drop) {
        req.socket.destroy();
        return this.settle(rec, 'drop');
      }
    }
    const denied = this.opts.authorize?.(rec);
    if (denied) return this.send(res, rec, denied, false);
    if (fault) return this.send(res, rec, { status: fault.status ?? 500, body: fault.body, headers: fault.headers }, !fault.withoutRateHeaders);
    if (this.opts.bare429Probability && this.random() < this.opts.bare429Probability) {
      return this.send(res, rec, { status: 429, body: this.opts.rateLimitedBody ?? { errors: [{ message: 'too many requests' }] } }, false);
    }
    if (!this.rate.take()) {
      return this.send(res, rec, { status: 429, body: this.opts.rateLimitedBody ?? { errors: [{ message: 'too many requests' }] } });
    }
    const reply = (await this.route(rec)) ?? { status: 404, body: { errors: [{ code: 'not_found', message: `stand-in has no route ${key}` }] } };
    this.send(res, rec, reply);
  }

  /** The description (and its key for the path) that has this request's operation, if any. */
  private operationOf(rec: RecordedRequest): { contract: OpenApiContract; path: string } | undefined {
    const path = this.opts.contractPath ? this.opts.contractPath(rec) : rec.path;
    const contract = path === undefined ? undefined : this.opts.contracts?.find((c) => c.has(rec.method, path));
    return contract && { contract, path: path! };
  }

  /** The 422 answering a request that breaks the description, or undefined when it conforms. */
  private checkRequest(rec: RecordedRequest, key: string): Reply | undefined {
    const contracts = this.opts.contracts ?? [];
    if (!contracts.length) return undefined;
    const op = this.operationOf(rec);
    let errors: string[];
    if (!op) errors = [`no operation ${rec.method} ${this.opts.contractPath?.(rec) ?? rec.path} in ${contracts.map((c) => c.name).join(', ')}`];
    else {
      try {
        const contentType = String(rec.headers['content-type'] ?? 'application/json').split(';')[0]!;
        errors = op.contract.validateRequest({ method: rec.method, path: op.path, query: rec.query, body: rec.rawBody === '' ? undefined : rec.body, contentType }).errors;
      } catch (err) {
        errors = [`could not validate: ${(err as Error).message}`];
      }
    }
    if (!errors.length) return undefined;
    this.violations.push({ kind: 'request', request: key, errors });
    const message = `Contract violation (stand-in ${this.name}): ${key} breaks the published description: ${errors.join('; ')}`;
    return { status: 422, body: this.opts.violationBody?.(message) ?? { errors: [{ message }] } };
  }

  /** A stand-in answer the description does not allow is a bug in the stand-in: recorded, and said at once. */
  private checkResponse(rec: RecordedRequest, reply: Reply): void {
    const op = this.operationOf(rec);
    if (!op) return;
    const body = typeof reply.body === 'string' ? safeJson(reply.body) : reply.body;
    const v = op.contract.validateResponse(rec.method, op.path, reply.status, body);
    if (v.valid) return;
    const violation: Violation = { kind: 'response', request: `${rec.method} ${rec.path} → ${reply.status}`, errors: v.errors };
    this.violations.push(violation);
    process.stderr.write(`${describeViolations(this.name, [violation])}\n`);
  }

  /** The stand-in itself threw: a stand-in bug, recorded like a bad answer, and a 500 so nothing waits. */
  private failed(res: http.ServerResponse, err: unknown): void {
    const violation: Violation = { kind: 'response', request: 'handling a request', errors: [`the stand-in threw: ${(err as Error)?.stack ?? String(err)}`] };
    this.violations.push(violation);
    process.stderr.write(`${describeViolations(this.name, [violation])}\n`);
    if (!res.headersSent) res.writeHead(500).end();
  }

  private settle(rec: RecordedRequest, answer: NonNullable<RecordedRequest['answer']>): void {
    rec.answer = answer;
    rec.answeredAt = Date.now();
    this.emit('answered', rec);
  }

  private send(res: http.ServerResponse, rec: RecordedRequest, reply: Reply, withRate = true, validate = true): void {
    if (validate) this.checkResponse(rec, reply);
    const headers: Record<string, string> = { ...(withRate && this.opts.rateHeaders !== false ? this.rate.headers() : {}), ...reply.headers };
    if (reply.body !== undefined && !headers['Content-Type']) headers['Content-Type'] = 'application/json';
    res.writeHead(reply.status, headers);
    res.end(reply.body === undefined ? undefined : typeof reply.body === 'string' ? reply.body : JSON.stringify(reply.body));
    this.settle(rec, reply.status);
  }
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

export function describeViolations(name: string, violations: Violation[]): string {
  const lines = violations.map((v) =>
    v.kind === 'request'
      ? `  our request ${v.request} broke the published description: ${v.errors.join('; ')}`
      : `  STAND-IN BUG: the ${name} stand-in answered ${v.request} in a way the description does not allow: ${v.errors.join('; ')}`,
  );
  return `${violations.length} contract violation(s) recorded by the ${name} stand-in:\n${lines.join('\n')}`;
}
