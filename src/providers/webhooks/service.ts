import { createHmac } from 'node:crypto';
import { httpStatusError } from '../../resilience/http-errors.js';
import { invalidInput } from '../../result.js';
import type { ProviderDeps } from '../deps.js';

/**
 * Outgoing webhooks of automation steps: a JSON POST to a host on AUTOMATION_WEBHOOK_ALLOWED_HOSTS,
 * signed with HMAC-SHA256 (AUTOMATION_WEBHOOK_SECRET) over `<timestamp>.<body>`, carrying an
 * Idempotency-Key the receiver can use to drop a repeat. Because of that key a request that failed in
 * transit may be retried.
 */

export const SIGNATURE_HEADER = 'X-CS-MCP-Signature';
export const TIMESTAMP_HEADER = 'X-CS-MCP-Timestamp';

/** The allowlisted URL, or invalid_input naming `field` and the hosts that are allowed. */
export function allowedWebhookUrl(raw: string, allowedHosts: string[], field = 'url'): URL {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw invalidInput(`${field} is not a URL: give an https:// URL on an allowed host.`, { field });
  }
  const host = url.host.toLowerCase();
  const loopback = ['localhost', '127.0.0.1', '[::1]'].includes(url.hostname.toLowerCase());
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && loopback)) {
    throw invalidInput(`${field} must be an https:// URL (plain http is allowed only to localhost).`, { field });
  }
  if (url.username || url.password) throw invalidInput(`${field} must not carry credentials; the request is signed instead.`, { field });
  if (!allowedHosts.includes(host) && !allowedHosts.includes(url.hostname.toLowerCase())) {
    throw invalidInput(
      allowedHosts.length
        ? `${field}: ${url.host} is not an allowed webhook host. Allowed (AUTOMATION_WEBHOOK_ALLOWED_HOSTS): ${allowedHosts.join(', ')}.`
        : `${field}: no webhook host is allowed. The server operator lists the hosts in AUTOMATION_WEBHOOK_ALLOWED_HOSTS.`,
      { field, allowed_hosts: allowedHosts },
    );
  }
  return url;
}

/** `sha256=<hex>` of HMAC-SHA256(secret, `<timestamp>.<body>`): what a receiver recomputes to verify. */
export function webhookSignature(secret: string, timestamp: string, body: string): string {
  return `sha256=${createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex')}`;
}

export class WebhookService {
  constructor(readonly deps: ProviderDeps) {}

  async post(rawUrl: string, payload: Record<string, unknown>, idempotencyKey: string): Promise<{ status: number }> {
    const { webhookAllowedHosts, webhookSecret } = this.deps.config.automations;
    this.deps.runtime.requireConfigured();
    const url = allowedWebhookUrl(rawUrl, webhookAllowedHosts);
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
      });
      const text = await res.text();
      if (res.status >= 300) throw httpStatusError('webhook', res.status, res.headers, text.slice(0, 200) || undefined);
      return { status: res.status };
    });
  }
}
