import { z } from 'zod';
import { CHANNELS } from '../delivery/message.js';
import { MAX_TEMPLATE_CHARS, MAX_TEXT_TEMPLATE_CHARS, templateString } from '../templating.js';

export const TEMPLATE_TYPES = [
  'onboarding',
  'product_update',
  'feature_announcement',
  'health_check',
  'renewal_reminder',
  'upsell_opportunity',
  'event_invitation',
  'training_invitation',
  'feedback_request',
  'success_story',
  'newsletter',
  'custom',
] as const;

export { CHANNELS, type Channel } from '../delivery/message.js';

export const TIERS = ['starter', 'standard', 'professional', 'enterprise'] as const;

const tokenValue = z.union([z.string().max(10_000), z.number(), z.boolean()]);

/** The parameters of send_personalized_email (the seed's, kept, plus channels, contact_roles, confirmation_token). */
export const campaignRequestSchema = z
  .strictObject({
    campaign_name: z.string().trim().min(1).max(200).describe('A name people will recognise in reports, e.g. "Q3 health check – enterprise".'),
    template_type: z.enum(TEMPLATE_TYPES).describe('What kind of message this is; recorded with the campaign and in tracking events.'),
    subject_line: z.string().min(1).max(998).describe('Liquid template, e.g. "{{ client.name }}: your quarterly check-in". Not shown for intercom_inapp.'),
    body_text: templateString(MAX_TEXT_TEMPLATE_CHARS).min(1).describe('Plain-text body (Liquid). Use {{ contact.first_name | fallback: "there" }} for values some contacts lack.'),
    body_html: templateString(MAX_TEMPLATE_CHARS).optional().describe('Optional HTML body (Liquid; values are HTML-escaped; at most 500,000 characters). Used by email and intercom_email when given.'),
    sender_email: z.string().email().optional().describe('From address for the email channel; defaults to SENDGRID_FROM_EMAIL.'),
    target_client_ids: z.array(z.string().min(1).max(64)).min(1).max(50_000).optional().describe('Roster client ids to target.'),
    target_segment: z.string().min(1).max(100).optional().describe('Only clients carrying this segment label, e.g. "at_risk".'),
    target_tier: z.enum(TIERS).optional().describe('Only clients of this tier.'),
    personalization_tokens: z
      .record(z.string().regex(/^[a-z_][a-z0-9_]*$/i, 'token names are letters, digits and _'), tokenValue)
      .optional()
      .describe('Extra values for the templates, used as {{ name }} or {{ tokens.name }}.'),
    send_immediately: z.boolean().optional().describe('Send as soon as confirmed (the default when no scheduled_send_time is given).'),
    scheduled_send_time: z
      .string()
      .datetime({ offset: true })
      .optional()
      .describe('ISO-8601 time with zone, in the future and at most CAMPAIGN_MAX_SCHEDULE_DAYS (default 365) days ahead, e.g. "2026-12-01T09:00:00Z". The campaign waits durably until then.'),
    track_opens: z.boolean().default(true),
    track_clicks: z.boolean().default(true),
    created_by: z.string().max(200).optional().describe('Who asked for this campaign (a CSM email or name); recorded as the actor.'),
    channels: z
      .array(z.enum(CHANNELS))
      .min(1)
      .optional()
      .describe('email (SendGrid), intercom_email, intercom_inapp. Default: email when SendGrid is configured, else intercom_email.'),
    contact_roles: z.array(z.string().min(1).max(50)).min(1).optional().describe('Only contacts with these roles (e.g. ["champion","decision_maker"]); default all.'),
    confirmation_token: z
      .string()
      .min(10)
      .max(200)
      .optional()
      .describe('Leave out to get a preview (nothing is sent). Pass the token from that preview, with the same parameters, to send.'),
  })
  .superRefine((v, ctx) => {
    if (!v.target_client_ids && !v.target_segment && !v.target_tier) {
      ctx.addIssue({
        code: 'custom',
        path: ['target_client_ids'],
        message: 'give at least one of target_client_ids, target_segment, target_tier (they combine with AND)',
      });
    }
    if (v.send_immediately === true && v.scheduled_send_time) {
      ctx.addIssue({ code: 'custom', path: ['scheduled_send_time'], message: 'choose send_immediately or scheduled_send_time, not both' });
    }
    if (v.send_immediately === false && !v.scheduled_send_time) {
      ctx.addIssue({ code: 'custom', path: ['scheduled_send_time'], message: 'send_immediately is false: give a scheduled_send_time' });
    }
  });

export type CampaignRequest = z.output<typeof campaignRequestSchema>;
