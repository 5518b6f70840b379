import { z } from 'zod';
import { defineTool } from '../mcp/tool.js';
import type { MailOptions } from '../providers/sendgrid/service.js';
import { invalidInput } from '../result.js';
import { EMAIL_MAX_LENGTH } from '../validation.js';

/** An address as published (format: email); the service checks it and names every bad one in its error. */
const emailString = z.string().min(3).max(EMAIL_MAX_LENGTH).meta({ format: 'email' });
const address = z.object({ email: emailString, name: z.string().max(200).optional() });
/** One address ("a@b.com") or a list of addresses / {email, name}. Validated by the service, naming the bad ones. */
const recipients = z
  .union([emailString, z.array(z.union([emailString, address])).min(1).max(1000)])
  .describe('one address, or a list of addresses or {email, name}');
const toAddresses = (to: z.output<typeof recipients>) => (Array.isArray(to) ? to : [to]).map((a) => (typeof a === 'string' ? { email: a.trim() } : a));

const sendAt = z
  .union([z.number().int().positive(), z.string().datetime({ offset: true })])
  .optional()
  .describe('schedule up to 72 h ahead: epoch seconds or ISO-8601');
const toEpoch = (v: number | string | undefined) => (typeof v === 'string' ? Math.floor(Date.parse(v) / 1000) : v);

const common = {
  from: address.optional().describe('default SENDGRID_FROM_EMAIL / SENDGRID_FROM_NAME'),
  reply_to: address.optional(),
  categories: z.array(z.string().min(1).max(255)).max(10).optional(),
  custom_args: z.record(z.string(), z.string()).optional().describe('string values echoed in SendGrid events (10,000 bytes max)'),
  send_at: sendAt,
  track_opens: z.boolean().optional(),
  track_clicks: z.boolean().optional(),
};

function options(i: { from?: { email: string; name?: string }; reply_to?: { email: string; name?: string }; categories?: string[]; custom_args?: Record<string, string>; send_at?: number | string; track_opens?: boolean; track_clicks?: boolean }, marketing: boolean): MailOptions {
  return {
    from: i.from,
    reply_to: i.reply_to,
    categories: i.categories,
    custom_args: i.custom_args,
    send_at: toEpoch(i.send_at),
    track_opens: i.track_opens,
    track_clicks: i.track_clicks,
    marketing,
  };
}

const outcome = z.object({
  email: z.string(),
  status: z.enum(['accepted', 'failed', 'skipped_duplicate', 'unknown']),
  message_id: z.string().optional(),
  error: z.object({ code: z.string(), message: z.string() }).optional(),
});

export const emailTools = [
  defineTool({
    name: 'sendgrid_send_email',
    title: 'Send an email (SendGrid)',
    description:
      'Sends one email through SendGrid to one address or a list (up to 1,000; the same content to each). Needs subject and text and/or html. ' +
      'Returns SendGrid\'s message id and how many addresses were accepted. COST: real people receive it; never re-sent automatically when the outcome is unknown.',
    kind: 'send',
    openWorld: true,
    input: z.object({ to: recipients, subject: z.string().min(1).max(998), text: z.string().optional(), html: z.string().optional(), ...common }),
    output: { message_id: z.string(), accepted: z.number() },
    async handle(i, { services }) {
      return services.sendgrid.sendEmail(toAddresses(i.to), { subject: i.subject, text: i.text, html: i.html }, options(i, false));
    },
  }),
  defineTool({
    name: 'sendgrid_send_template_email',
    title: 'Send a dynamic-template email (SendGrid)',
    description:
      'Sends a SendGrid dynamic template (template_id "d-…") to one or more recipients, each with their own dynamic_template_data. ' +
      'Carries the unsubscribe group when SENDGRID_UNSUBSCRIBE_GROUP_ID is set. Returns per-recipient outcomes. COST: real people receive it.',
    kind: 'send',
    openWorld: true,
    input: z.object({
      template_id: z.string().regex(/^d-[0-9a-f]{32}$/i, 'a dynamic template id looks like "d-" followed by 32 hex characters'),
      to: z
        .array(address.extend({ dynamic_template_data: z.record(z.string(), z.unknown()).optional() }))
        .min(1)
        .max(10_000)
        .describe('recipients, each with the data for their copy'),
      ...common,
    }),
    output: { requests: z.number(), accepted: z.number(), failed: z.number(), outcomes: z.array(outcome) },
    async handle(i, { services }) {
      const r = await services.sendgrid.sendBulk(i.to, { template_id: i.template_id }, options(i, true));
      return summarize(r);
    },
  }),
  defineTool({
    name: 'sendgrid_send_bulk_emails',
    title: 'Send personalized bulk email (SendGrid)',
    description:
      'Sends the same subject and body to many recipients (up to 50,000), each with their own substitutions (e.g. {"-first_name-": "Ada"}) ' +
      'or, with template_id, their own dynamic_template_data. Packs 1,000 recipients per SendGrid request, never emails the same address twice in ' +
      'one call (duplicates are reported as skipped), and returns each recipient\'s outcome. COST: real people receive it.',
    kind: 'send',
    openWorld: true,
    input: z.object({
      recipients: z
        .array(
          address.extend({
            substitutions: z.record(z.string(), z.string()).optional(),
            dynamic_template_data: z.record(z.string(), z.unknown()).optional(),
          }),
        )
        .min(1)
        .max(50_000),
      subject: z.string().min(1).max(998).optional().describe('required unless template_id is given'),
      text: z.string().optional(),
      html: z.string().optional(),
      template_id: z.string().regex(/^d-[0-9a-f]{32}$/i).optional(),
      ...common,
    }),
    output: { requests: z.number(), accepted: z.number(), failed: z.number(), outcomes: z.array(outcome) },
    async handle(i, { services }) {
      if (!i.template_id && !i.subject) throw invalidInput('subject is required unless template_id is given.', { fields: [{ field: 'subject', problem: 'required' }] });
      const r = await services.sendgrid.sendBulk(i.recipients, { subject: i.subject, text: i.text, html: i.html, template_id: i.template_id }, options(i, true));
      return summarize(r);
    },
  }),
  defineTool({
    name: 'sendgrid_get_stats',
    title: 'Email statistics (SendGrid)',
    description:
      'Reads SendGrid delivery statistics (requests, delivered, opens, clicks, bounces, spam reports, unsubscribes…) between two dates, by day, ' +
      'week or month, optionally for given categories (e.g. a campaign\'s template type). Read-only.',
    kind: 'read',
    openWorld: true,
    input: z.object({
      start_date: z.string().regex(/^\d{4}-\d{2}-\d{2}$/, 'YYYY-MM-DD'),
      end_date: z.string().regex(/^\d{4}-\d{2}-\d{2}$/, 'YYYY-MM-DD').optional(),
      aggregated_by: z.enum(['day', 'week', 'month']).optional(),
      categories: z.array(z.string().min(1)).max(10).optional(),
    }),
    output: { stats: z.array(z.unknown()) },
    async handle(i, { services }) {
      return { stats: await services.sendgrid.getStats(i) };
    },
  }),
];

function summarize(r: { requests: number; outcomes: z.output<typeof outcome>[] }) {
  return {
    requests: r.requests,
    accepted: r.outcomes.filter((o) => o.status === 'accepted').length,
    failed: r.outcomes.filter((o) => o.status === 'failed' || o.status === 'unknown').length,
    outcomes: r.outcomes,
  };
}
