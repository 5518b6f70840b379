import { z } from 'zod';
import { campaignRequestSchema, type CampaignRequest } from '../engine/campaigns/request.js';
import { fromZodError } from '../result.js';
import { defineTool } from '../mcp/tool.js';
import type { Approver } from '../safety/approval.js';
import { campaignCallOutput, sample } from './campaigns.js';

/**
 * Tools only this server's views call (MCP Apps visibility ["app"]; see mcp/views.ts): listed to and
 * callable by clients that declared the extension only, so the model never sees them.
 */

/**
 * The arguments send_personalized_email was called with (its confirmation_token, if any, is not used).
 * Published as a plain object and checked against that tool's schema here: repeating its full schema
 * in two more tools cost 13 KB of every listing to clients with views.
 */
const campaign = z.record(z.string(), z.unknown()).describe('the arguments of the send_personalized_email call the view belongs to');

function campaignRequest(value: Record<string, unknown>): CampaignRequest {
  const { confirmation_token: _unused, ...rest } = value;
  const parsed = campaignRequestSchema.safeParse(rest);
  if (!parsed.success) throw fromZodError(parsed.error, 'Invalid campaign arguments');
  return parsed.data;
}

const person = z.object({ email: z.string(), client_id: z.string() });

export const viewTools = [
  defineTool({
    name: 'review_campaign',
    title: 'Review a campaign (view)',
    description:
      'For the campaign review view: renders the copy one recipient of a previewed campaign would receive, with every link target, and lists ' +
      'the recipients, excluded and held-back contacts matching a search. Sends nothing.',
    kind: 'read',
    toolset: 'campaigns',
    openWorld: false,
    input: z.strictObject({
      campaign,
      recipient: z.string().max(320).optional().describe('an address of the audience; default: the first recipient'),
      search: z.string().max(200).optional().describe('part of an address, client id or reason'),
      limit: z.number().int().min(1).max(500).default(100),
    }),
    output: {
      campaign_name: z.string(),
      channels: z.array(z.string()),
      sender: z.object({ from: z.string().nullable(), from_name: z.string().nullable(), reply_to: z.null(), intercom_admin: z.string().nullable() }),
      schedule: z.object({ send_immediately: z.boolean(), scheduled_send_time: z.string().nullable() }),
      copy: sample.omit({ truncated: true }).extend({ links: z.array(z.string()), images: z.array(z.string()) }).nullable(),
      recipients: z.object({ total: z.number(), matched: z.number(), shown: z.array(person.extend({ channels: z.array(z.string()) })) }),
      excluded: z.object({ total: z.number(), matched: z.number(), complete: z.boolean(), shown: z.array(person.extend({ reason: z.string(), channel: z.string().optional() })) }),
      held_back: z.object({ total: z.number(), matched: z.number(), complete: z.boolean(), shown: z.array(person.extend({ reason: z.string(), detail: z.string() })) }),
    },
    async handle({ campaign, recipient, search, limit }, { services }) {
      return services.campaigns.review(campaignRequest(campaign), { recipient, search, limit });
    },
  }),
  defineTool({
    name: 'send_reviewed_campaign',
    title: 'Send the reviewed campaign (view)',
    description:
      'The Send button of the campaign review view: a person pressed it. Confirms the previewed campaign exactly as send_personalized_email ' +
      'with its confirmation_token would, and only if nothing changed since that preview.',
    kind: 'send',
    toolset: 'campaigns',
    openWorld: true,
    input: z.strictObject({
      campaign,
      confirmation_token: z.string().min(10).max(200).describe('the token of the preview the person reviewed'),
    }),
    output: campaignCallOutput,
    async handle({ campaign, confirmation_token }, { services, audit }) {
      const request = campaignRequest(campaign);
      // The press is the person's answer, given before the call: the same binding as the token, then recorded as theirs.
      const pressed: Approver = async () => {
        audit.approved_by = 'person';
        audit.approved_through = 'campaign review view (MCP Apps)';
        audit.approval_policy = services.config.safety.approval;
        return { by: 'person' };
      };
      return (await services.campaigns.confirm({ ...request, confirmation_token }, pressed)) as never;
    },
  }),
];
