import { createHmac } from 'node:crypto';
import type { Agent } from 'undici';
import type { Config } from '../../config.js';
import { httpStatusError } from '../../resilience/http-errors.js';
import { invalidInput, ToolError } from '../../result.js';
import type { ProviderDeps } from '../deps.js';
import { addressRefusal, literalAddress, pinnedLookup, systemLookup, type ResolvedAddress, type WebhookLookup } from './address.js';

/**
 * Outgoing webhooks of automation steps: a JSON POST to an origin on AUTOMATION_WEBHOOK_ALLOWED_HOSTS,
 * signed with HMAC-SHA256 (AUTOMATION_WEBHOOK_SECRET) over `<timestamp>.<body>`, carrying an
 * Idempotency-Key the receiver can use to drop a repeat. Because of that key a request that failed in
 * transit may be retried.
 *
 * Only public addresses are reached, unless the origin is on AUTOMATION_WEBHOOK_PRIVATE_ORIGINS (see
 * address.ts); the address checked is the address connected to. The receiver's reply is never passed
 * on (it could be a local service's banner or error page): only its status and size.
 */

export const SIGNATURE_HEADER = 'X-CS-MCP-Signature';
export const TIMESTAMP_HEADER = 'X-CS-MCP-Timestamp';

type Origins = Pick<Config['automations'], 'webhookAllowedOrigins' | 'webhookPrivateOrigins'>;

/**
 * The allowlisted URL, or invalid_input naming `field` and the origins that are allowed. A URL naming
 * an address literally is checked here already; a name is checked when it is resolved, at sending.
 */
export function allowedWebhookUrl(raw: string, origins: Origins, field = 'url'): URL {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw invalidInput(`${field} is not a URL: give an https:// URL on an allowed origin.`, { field });
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw invalidInput(`${field} must be an https:// URL.`, { field });
  if (url.username || url.password) throw invalidInput(`${field} must not carry credentials; the request is signed instead.`, { field });
  const allowed = origins.webhookAllowedOrigins;
  if (!allowed.includes(url.origin)) {
    throw invalidInput(
      allowed.length
        ? `${field}: ${url.origin} is not an allowed webhook origin (scheme, host and port must all match). Allowed (AUTOMATION_WEBHOOK_ALLOWED_HOSTS): ${allowed.join(', ')}.`
        : `${field}: no webhook origin is allowed. The server operator lists them in AUTOMATION_WEBHOOK_ALLOWED_HOSTS.`,
      { field, allowed_origins: allowed },
    );
  }
  const literal = literalAddress(url.hostname);
  const refusal = literal && addressRefusal(literal, origins.webhookPrivateOrigins.includes(url.origin));
  if (refusal) throw invalidInput(`${field}: ${url.hostname} is ${refusal}. ${privateHint(url)}`, { field });
  return url;
}

function privateHint(url: URL): string {
  return `Webhooks reach only public addresses, unless the server operator lists ${url.origin} in AUTOMATION_WEBHOOK_PRIVATE_ORIGINS (a service on their own network; metadata addresses never).`;
}

/** `sha256=<hex>` of HMAC-SHA256(secret, `<timestamp>.<body>`): what a receiver recomputes to verify. */
export function webhookSignature(secret: string, timestamp: string, body: string): string {
  return `sha256=${createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex')}`;
}

/** Connection pools kept, one per origin and set of checked addresses (keep-alive between posts). */
const MAX_AGENTS = 32;

export class WebhookService {
  private readonly agents = new Map<string, Agent>();

  constructor(
    readonly deps: ProviderDeps,
    private readonly lookup: WebhookLookup = systemLookup,
  ) {}

  /** The addresses the request may go to: the literal one, or every address the name resolves to, each checked. */
  private async addresses(url: URL): Promise<ResolvedAddress[]> {
    const privateAllowed = this.deps.config.automations.webhookPrivateOrigins.includes(url.origin);
    const literal = literalAddress(url.hostname);
    let found: ResolvedAddress[];
    if (literal) found = [{ address: literal, family: literal.includes(':') ? 6 : 4 }];
    else {
      try {
        found = await this.lookup(url.hostname);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code ?? 'lookup failed';
        throw new ToolError('provider_unavailable', `Could not resolve ${url.hostname} (${code}). Nothing was sent.`, { provider: 'webhook', retryable: true });
      }
      if (!found.length) throw new ToolError('provider_unavailable', `${url.hostname} resolves to no address. Nothing was sent.`, { provider: 'webhook', retryable: true });
    }
    for (const a of found) {
      const refusal = addressRefusal(a.address, privateAllowed);
      if (refusal) {
        const what = literal ? `${url.hostname} is` : `${url.hostname} resolves to ${a.address},`;
        throw new ToolError('forbidden', `${what} ${refusal}. Nothing was sent. ${privateHint(url)}`, {
          provider: 'webhook',
          details: { policy: 'webhook_address' },
        });
      }
    }
    return found;
  }

  async post(rawUrl: string, payload: Record<string, unknown>, idempotencyKey: string): Promise<{ status: number; bytes: number }> {
    const { webhookSecret } = this.deps.config.automations;
    this.deps.runtime.requireConfigured();
    const url = allowedWebhookUrl(rawUrl, this.deps.config.automations);
    // Resolved once; the connection may only use these checked addresses (no second lookup, no rebinding).
    const dispatcher = await this.agentFor(url, await this.addresses(url));
    const body = JSON.stringify(payload);
    return this.deps.runtime.call({ operation: 'post_webhook', idempotent: true }, async ({ signal, fetch }) => {
        const timestamp = String(Math.floor(Date.now() / 1000));
        const res = await fetch(url, {
          method: 'POST',
          headers: {
            'Content-Type': 'application/json',
            'Idempotency-Key': idempotencyKey,
            [TIMESTAMP_HEADER]: timestamp,
            [SIGNATURE_HEADER]: webhookSignature(webhookSecret!, timestamp, body),
          },
          body,
          signal,
          redirect: 'manual', // a redirect could leave the allowlist
          dispatcher,
        } as RequestInit);
        const bytes = (await res.arrayBuffer()).byteLength;
        if (res.status >= 300) throw replyError(res.status, res.headers, bytes);
        return { status: res.status, bytes };
      });
  }

  /**
   * A pool whose connections go only to these checked addresses. Kept per origin and address set, so
   * posts to one receiver reuse a connection; a name that now resolves elsewhere gets a new pool.
   */
  private async agentFor(url: URL, addresses: ResolvedAddress[]): Promise<Agent> {
    // Loaded on the first webhook: most processes never send one, and start-up stays as fast as before.
    const { Agent } = await import('undici');
    const key = `${url.origin} ${addresses.map((a) => a.address).join(',')}`;
    let agent = this.agents.get(key);
    if (agent) {
      this.agents.delete(key); // most recently used last
      this.agents.set(key, agent);
      return agent;
    }
    agent = new Agent({ connect: { lookup: pinnedLookup(addresses) } });
    this.agents.set(key, agent);
    if (this.agents.size > MAX_AGENTS) {
      const [oldestKey, oldest] = this.agents.entries().next().value as [string, Agent];
      this.agents.delete(oldestKey);
      void oldest.close().catch(() => undefined); // lets requests in flight finish
    }
    return agent;
  }

  /** Closes the kept connections. */
  async close(): Promise<void> {
    const agents = [...this.agents.values()];
    this.agents.clear();
    await Promise.all(agents.map((a) => a.destroy().catch(() => undefined)));
  }
}

/** The error for a refusing reply: its status and size, never its text. */
function replyError(status: number, headers: Headers, bytes: number): ToolError {
  const e = httpStatusError('webhook', status, headers);
  return new ToolError(e.code, `${e.message} (Its reply, ${bytes} bytes, is not shown.)`, {
    provider: e.provider,
    status: e.status,
    retryAfterMs: e.retryAfterMs,
    retryable: e.retryable,
    outcomeUnknown: e.outcomeUnknown,
    breakerFailure: e.breakerFailure,
    details: { ...e.details, reply_bytes: bytes },
  });
}
