import { z } from 'zod';
import { campaignRequestSchema } from '../engine/campaigns/request.js';
import type { CampaignStatus } from '../engine/campaigns/service.js';
import { defineTool, PREVIEW_OR_SEND } from '../mcp/tool.js';

const totals = z.object({
  queued: z.number(),
  sending: z.number(),
  sent: z.number(),
  failed: z.number(),
  cancelled: z.number(),
  unknown: z.number().describe('in doubt: the request may have reached the provider; never resent'),
  skipped: z.number().describe('not sent on purpose: the contact unsubscribed or was removed since confirmation, or a value put a link the approved content lacks into their message (unapproved_link); see skipped_by_reason'),
  total: z.number(),
});

const engagementCounts = {
  delivered: z.number(),
  bounced: z.number().describe('hard bounces and temporary blocks'),
  dropped: z.number().describe('refused by SendGrid before sending (suppressed or invalid address)'),
  opened: z.number(),
  clicked: z.number(),
  replied: z.number().describe('Intercom conversation replies to the message'),
  unsubscribed: z.number().describe('global or group unsubscribes from the message'),
  spam_reported: z.number(),
};
const engagement = z
  .object({ ...engagementCounts, rates: z.object(engagementCounts).describe('each count as a percentage of the messages sent (one decimal)') })
  .describe('distinct messages, from verified provider webhooks');

const campaignStatus = z.object({
  campaign_id: z.string(),
  campaign_name: z.string(),
  template_type: z.string(),
  status: z.enum(['scheduled', 'sending', 'completed', 'completed_with_problems', 'cancelled']),
  channels: z.array(z.string()),
  created_by: z.string().nullable(),
  created_at: z.string(),
  confirmed_at: z.string().nullable(),
  scheduled_send_time: z.string().nullable(),
  cancelled_at: z.string().nullable(),
  completed_at: z.string().nullable(),
  totals,
  per_channel: z.record(z.string(), totals),
  skipped_by_reason: z.record(z.string(), z.number()),
  waiting_by_reason: z.record(z.string(), z.number()).describe('why queued messages wait: daily_limit, rate_limited, send_window, circuit_open…'),
  progress: z.object({ settled: z.number(), total: z.number(), percent: z.number() }),
  engagement: z
    .object({ totals: engagement, per_channel: z.record(z.string(), engagement) })
    .describe('what happened after sending (needs the provider webhooks, see README "Webhooks"): delivered, bounced, opened, clicked, replied, unsubscribed, spam reports'),
  problems: z.array(
    z.object({
      email: z.string(),
      client_id: z.string(),
      channel: z.string(),
      state: z.string(),
      error_code: z.string().nullable(),
      error_message: z.string().nullable(),
    }),
  ).describe('the first 20 failed / in-doubt messages'),
  problems_total: z.number(),
});

const audience = z.object({
  recipients: z.number().describe('distinct contacts who will receive the campaign'),
  messages: z.number().describe('recipients × channels'),
  per_channel: z.record(z.string(), z.number()),
  contacts_considered: z.number(),
  excluded: z.object({
    total: z.number(),
    by_reason: z.record(z.string(), z.number()),
    examples: z.array(z.object({ email: z.string(), client_id: z.string(), reason: z.string(), channel: z.string().optional() })),
  }),
  held_back: z.object({
    total: z.number(),
    examples: z.array(z.object({ email: z.string(), client_id: z.string(), reason: z.string(), detail: z.string() })),
  }),
  unknown_client_ids: z.array(z.string()).describe('the first 100 target_client_ids not in the roster'),
  unknown_client_ids_total: z.number(),
});

/** One recipient's rendered message as a preview shows it (the review view's copy has the same fields). */
export const sample = z.object({
  to: z.string(),
  client_id: z.string(),
  channel: z.string(),
  subject: z.string().optional(),
  text: z.string(),
  html: z.string().optional(),
  truncated: z.boolean().optional().describe('the sample is cut to 4,000 characters per part'),
});

/** What send_personalized_email answers (and the review view's Send, which confirms the same way). */
export const campaignCallOutput = {
  phase: z.enum(['preview', 'confirmed']).describe('preview: nothing was sent; confirmed: messages are queued'),
  campaign_name: z.string(),
  template_type: z.string(),
  channels: z.array(z.string()),
  schedule: z.object({ send_immediately: z.boolean(), scheduled_send_time: z.string().nullable() }),
  audience,
  samples: z.array(sample),
  confirmation_token: z.string().optional(),
  token_expires_at: z.string().optional(),
  campaign_id: z.string().optional(),
  queued: z.number().optional(),
  already_confirmed: z.boolean().optional(),
  delivery: campaignStatus.optional().describe('delivery status, when the call waited (progress requested) or was a repeat'),
  next_step: z.string(),
};

/** Waits this long for delivery when the client asked for progress notifications. */
const PROGRESS_WAIT_MS = 120_000;

async function reportProgress(s: CampaignStatus, progress: (p: number, t?: number, m?: string) => Promise<void>) {
  await progress(s.progress.settled, s.progress.total, `${s.totals.sent} sent, ${s.totals.failed} failed, ${s.totals.unknown} in doubt, ${s.totals.queued} queued`);
}

export const campaignTools = [
  defineTool({
    name: 'send_personalized_email',
    title: 'Send a personalized campaign',
    description:
      'Sends a personalized message to contacts from the customer roster, through SendGrid email and/or Intercom (email or in-app). ' +
      'Two steps, always: called WITHOUT confirmation_token it sends nothing and returns a preview — audience size per channel, who is excluded ' +
      '(unsubscribed, no email, duplicate address, role not targeted) or held back (a template value they lack), three fully rendered samples, the ' +
      'schedule — and a confirmation_token. Show the preview to the user. Called again with the SAME parameters plus that token, it queues the ' +
      'messages durably and delivers them at the pace the providers allow, each recipient exactly once. If anything changed since the preview ' +
      '(content, audience, schedule) the token is refused with a fresh preview. Templates are Liquid over contact.*, client.*, sender.*, campaign.* ' +
      'and personalization_tokens, e.g. {{ contact.first_name | fallback: "there" }}. COST: the confirmed call messages real customers.',
    kind: 'send',
    scope: PREVIEW_OR_SEND,
    toolset: 'campaigns',
    openWorld: true,
    input: campaignRequestSchema,
    output: campaignCallOutput,
    async handle(input, { services, progress, progressRequested, signal, approve }) {
      const { confirmation_token, ...request } = input;
      if (!confirmation_token) return (await services.campaigns.preview(request)) as never;
      const confirmed = await services.campaigns.confirm({ ...request, confirmation_token }, approve);
      // A client that asked for progress gets the delivery followed here, with notifications.
      if (progressRequested && typeof confirmed.campaign_id === 'string' && !confirmed.already_confirmed && !request.scheduled_send_time) {
        const delivery = await services.campaigns.waitForCompletion(confirmed.campaign_id, PROGRESS_WAIT_MS, (s) => reportProgress(s, progress), signal);
        return { ...confirmed, delivery } as never;
      }
      return confirmed as never;
    },
  }),
  defineTool({
    name: 'get_campaign_status',
    title: 'Campaign status',
    description:
      'Shows where a campaign stands: overall status, counts per state (queued, sending, sent, failed, cancelled, unknown = in doubt) overall and ' +
      'per channel, progress, the failed / in-doubt recipients with reasons, and what happened after sending (delivered, bounced, opened, ' +
      'clicked, replied, unsubscribed, spam reports, with rates of sent; from the provider webhooks). With wait_seconds it waits for delivery to finish (sending MCP ' +
      'progress notifications if the client asked). Read-only.',
    kind: 'read',
    toolset: 'campaigns',
    openWorld: false,
    input: z.strictObject({
      campaign_id: z.string().min(1).describe('The id send_personalized_email returned, e.g. "cmp_…"'),
      wait_seconds: z.number().int().min(0).max(600).default(0).describe('Wait up to this long for the campaign to finish.'),
    }),
    output: { campaign: campaignStatus },
    async handle({ campaign_id, wait_seconds }, { services, progress, signal }) {
      const campaign =
        wait_seconds > 0
          ? await services.campaigns.waitForCompletion(campaign_id, wait_seconds * 1000, (s) => reportProgress(s, progress), signal)
          : await services.campaigns.status(campaign_id);
      return { campaign };
    },
  }),
  defineTool({
    name: 'list_campaigns',
    title: 'List campaigns',
    description: 'Lists campaigns, newest first, with status and counts. Use the returned next_cursor for more. Read-only.',
    kind: 'read',
    toolset: 'campaigns',
    openWorld: false,
    input: z.strictObject({
      limit: z.number().int().min(1).max(100).default(20),
      cursor: z.string().optional().describe('next_cursor from a previous call'),
      status: z.enum(['scheduled', 'sending', 'completed', 'completed_with_problems', 'cancelled']).optional().describe('only campaigns in this status (within the page)'),
    }),
    output: { campaigns: z.array(campaignStatus), next_cursor: z.string().optional() },
    async handle(input, { services }) {
      return services.campaigns.list(input);
    },
  }),
  defineTool({
    name: 'cancel_campaign',
    title: 'Cancel a campaign',
    description:
      'Stops every message of a campaign that has not been sent yet (queued or scheduled). Messages already sent cannot be recalled: the result ' +
      'says how many went, and how many were mid-send (those may still arrive). Safe to call twice.',
    kind: 'destructive',
    scope: 'cs:send',
    toolset: 'campaigns',
    idempotent: true,
    openWorld: false,
    input: z.strictObject({ campaign_id: z.string().min(1) }),
    output: { campaign_id: z.string(), cancelled_messages: z.number(), already_sent: z.number(), in_flight: z.number(), campaign: campaignStatus },
    async handle({ campaign_id }, { services }) {
      const { cancelled_messages, status } = await services.campaigns.cancel(campaign_id);
      return { campaign_id, cancelled_messages, already_sent: status.totals.sent, in_flight: status.totals.sending, campaign: status };
    },
  }),
];
