import { httpStatusError } from '../../resilience/http-errors.js';
import type { ProviderDeps } from '../deps.js';

/**
 * Slack through an incoming webhook: the URL comes from configuration (SLACK_WEBHOOK_URL) and names
 * the channel; nothing a tool or a workflow supplies can redirect it. Slack accepts no idempotency key,
 * so a post is never retried once it may have arrived (the automation step's durable record is the
 * guarantee against a second post).
 */
export class SlackService {
  constructor(readonly deps: ProviderDeps) {}

  async postMessage(text: string): Promise<void> {
    const url = this.deps.config.automations.slackWebhookUrl;
    await this.deps.runtime.call({ operation: 'post_message', idempotent: false }, async ({ signal, fetch }) => {
      const res = await fetch(url!, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ text }),
        signal,
      });
      const body = await res.text();
      // Slack answers in plain words: invalid_payload, no_service, channel_is_archived, action_prohibited…
      if (!res.ok) throw httpStatusError('slack', res.status, res.headers, body.slice(0, 200) || undefined);
    });
  }
}
