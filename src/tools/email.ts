import { z } from 'zod';
import { defineTool, type ToolContext } from '../mcp/tool.js';
import type { BulkOutcome, BulkRecipient, MailContent, MailOptions } from '../providers/sendgrid/service.js';
import { invalidInput } from '../result.js';
import { EMAIL_MAX_LENGTH } from '../validation.js';
import { idempotencyKey, overrideConsent, replayed } from './safety-fields.js';

const PROBLEMS = 100;
/** A subject is one header line. */
const subject = z.string().min(1).max(998).regex(/^[^\r\n]*$/, 'one line: no line breaks (CR/LF)');

/** An address as published (format: email); the service checks it and names every bad one in its error. */
const emailString = z.string().min(3).max(EMAIL_MAX_LENGTH).meta({ format: 'email' });
const address = z.strictObject({ email: emailString, name: z.string().max(200).optional() });
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

const problem = z.object({
  email: z.string(),
  status: z.enum(['failed', 'skipped_duplicate', 'unknown']),
  error: z.object({ code: z.string(), message: z.string() }).optional(),
});

/** Counts, then only the recipients that need attention: a result stays small whatever the audience. */
const bulkOutput = {
  requests: z.number(),
  accepted: z.number(),
  failed: z.number().describe('SendGrid refused them: nothing was sent to them'),
  unknown: z.number().describe('the request may have reached SendGrid: never re-sent automatically; check before sending again'),
  skipped_duplicate: z.number(),
  message_ids: z.array(z.string()).describe("SendGrid's X-Message-Id of each accepted request"),
  problems: z.array(problem).describe(`the first ${PROBLEMS} failed, in-doubt or skipped recipients`),
  problems_total: z.number(),
  replayed,
};

const PROBLEMS_SHOWN = PROBLEMS;

function summarize(r: { requests: number; outcomes: BulkOutcome[] }) {
  const count = (s: BulkOutcome['status']) => r.outcomes.filter((o) => o.status === s).length;
  const problems = r.outcomes.filter((o) => o.status !== 'accepted');
  return {
    requests: r.requests,
    accepted: count('accepted'),
    failed: count('failed'),
    unknown: count('unknown'),
    skipped_duplicate: count('skipped_duplicate'),
    message_ids: [...new Set(r.outcomes.map((o) => o.message_id).filter((id): id is string => Boolean(id)))],
    problems: problems.slice(0, PROBLEMS_SHOWN).map((o) => ({ email: o.email, status: o.status as 'failed' | 'skipped_duplicate' | 'unknown', ...(o.error ? { error: o.error } : {}) })),
    problems_total: problems.length,
  };
}

const safety = { idempotency_key: idempotencyKey, override_consent: overrideConsent };

/** A bulk or template send under the direct-send rules: validated, cleared, sent, summarized. */
async function bulkSend(
  tool: string,
  i: { idempotency_key?: string; override_consent?: { reason: string } },
  recipients: BulkRecipient[],
  content: MailContent,
  opts: MailOptions,
  ctx: ToolContext,
) {
  const { services } = ctx;
  services.runtimes.sendgrid.requireConfigured();
  const { idempotency_key, override_consent, ...request } = i;
  const label = content.template_id ? `template ${content.template_id}` : `"${content.subject}"`;
  return services.directSends.run(
    { tool, idempotencyKey: idempotency_key, request, summary: `email ${label} to ${recipients.length} recipient(s)`, override: override_consent, approve: ctx.approve, audit: ctx.audit },
    async (gate) => {
      const { queue } = services.sendgrid.planBulk(recipients, content, opts);
      await gate.clear({
        recipients: queue.map((r) => ({ email: r.email })),
        emailChannel: true,
        approval: { title: `Email ${label}`, channel: 'email (SendGrid)', when: whenOf(opts.send_at), subject: content.subject, sample: content.text ?? content.html },
      });
      const r = await services.sendgrid.sendBulk(recipients, content, opts);
      const out = summarize(r);
      gate.unsent(out.failed);
      ctx.audit.accepted = out.accepted;
      ctx.audit.message_ids = out.message_ids.slice(0, 20);
      return out;
    },
  );
}

const whenOf = (sendAt: number | undefined) => (sendAt ? new Date(sendAt * 1000).toISOString() : 'now');

export const emailTools = [
  defineTool({
    name: 'sendgrid_send_email',
    title: 'Send an email (SendGrid)',
    description:
      'Sends one email through SendGrid, the same content to one address or a short list (each recipient gets their own copy and sees only their own ' +
      'address, unless shared_recipients is true). Needs subject and text and/or html. Returns SendGrid\'s message id and how many addresses were accepted. ' +
      'COST: real people receive it. Refused for contacts who unsubscribed; more than CS_MCP_MAX_RECIPIENTS_PER_SEND recipients must be a campaign ' +
      '(send_personalized_email). Pass idempotency_key and reuse it on retries. Never re-sent automatically when the outcome is unknown.',
    kind: 'send',
    toolset: 'sendgrid',
    openWorld: true,
    input: z.strictObject({
      to: recipients,
      subject: subject,
      text: z.string().max(1_000_000).optional(),
      html: z.string().max(1_000_000).optional(),
      shared_recipients: z
        .boolean()
        .default(false)
        .describe('true: ONE email with every address in To, so all recipients see each other (only for people who already correspond together)'),
      ...common,
      ...safety,
    }),
    output: { message_id: z.string(), accepted: z.number(), replayed },
    async handle(i, ctx) {
      const { services } = ctx;
      services.runtimes.sendgrid.requireConfigured();
      const to = toAddresses(i.to);
      const content = { subject: i.subject, text: i.text, html: i.html };
      const opts = options(i, false);
      const { idempotency_key, override_consent, ...request } = i;
      return services.directSends.run(
        { tool: 'sendgrid_send_email', idempotencyKey: idempotency_key, request, summary: `email "${i.subject}" to ${to.map((a) => a.email).slice(0, 3).join(', ')}${to.length > 3 ? ', …' : ''}`, override: override_consent, approve: ctx.approve, audit: ctx.audit },
        async (gate) => {
          const unique = services.sendgrid.checkRecipients(to, content, opts);
          await gate.clear({
            recipients: unique.map((a) => ({ email: a.email })),
            emailChannel: true,
            approval: {
              title: `Email "${i.subject}"${i.shared_recipients ? ' (one message, every recipient in To)' : ''}`,
              channel: 'email (SendGrid)',
              when: whenOf(opts.send_at),
              subject: i.subject,
              sample: i.text ?? i.html,
            },
          });
          const r = await services.sendgrid.sendEmail(unique, content, opts, i.shared_recipients);
          ctx.audit.message_id = r.message_id;
          await recordEmails(ctx, unique.map((a) => a.email), `Email: ${i.subject}`, r.message_id);
          return r;
        },
      );
    },
  }),
  defineTool({
    name: 'sendgrid_send_template_email',
    title: 'Send a dynamic-template email (SendGrid)',
    description:
      'Sends a SendGrid dynamic template (template_id "d-…") to recipients, each with their own dynamic_template_data. ' +
      'Carries the unsubscribe group when SENDGRID_UNSUBSCRIBE_GROUP_ID is set. Returns counts and only the recipients that failed or are in doubt. ' +
      'COST: real people receive it. Same rules as sendgrid_send_email (consent, recipient limit, idempotency_key).',
    kind: 'send',
    toolset: 'sendgrid',
    openWorld: true,
    input: z.strictObject({
      template_id: z.string().regex(/^d-[0-9a-f]{32}$/i, 'a dynamic template id looks like "d-" followed by 32 hex characters'),
      to: z
        .array(address.extend({ dynamic_template_data: z.record(z.string(), z.unknown()).optional() }))
        .min(1)
        .max(10_000)
        .describe('recipients, each with the data for their copy'),
      ...common,
      ...safety,
    }),
    output: bulkOutput,
    async handle(i, ctx) {
      return bulkSend('sendgrid_send_template_email', i, i.to, { template_id: i.template_id }, options(i, true), ctx);
    },
  }),
  defineTool({
    name: 'sendgrid_send_bulk_emails',
    title: 'Send personalized bulk email (SendGrid)',
    description:
      'Sends the same subject and body to a list of recipients, each with their own substitutions (e.g. {"-first_name-": "Ada"}) ' +
      'or, with template_id, their own dynamic_template_data. Packs 1,000 recipients per SendGrid request, never emails the same address twice in ' +
      'one call (duplicates are reported as skipped), and returns counts and only the recipients that failed or are in doubt. At most ' +
      'CS_MCP_MAX_RECIPIENTS_PER_SEND recipients: a larger audience is a campaign (send_personalized_email). COST: real people receive it.',
    kind: 'send',
    toolset: 'sendgrid',
    openWorld: true,
    input: z.strictObject({
      recipients: z
        .array(
          address.extend({
            substitutions: z.record(z.string(), z.string()).optional(),
            dynamic_template_data: z.record(z.string(), z.unknown()).optional(),
          }),
        )
        .min(1)
        .max(50_000),
      subject: subject.optional().describe('required unless template_id is given'),
      text: z.string().max(1_000_000).optional(),
      html: z.string().max(1_000_000).optional(),
      template_id: z.string().regex(/^d-[0-9a-f]{32}$/i).optional(),
      ...common,
      ...safety,
    }),
    output: bulkOutput,
    async handle(i, ctx) {
      if (!i.template_id && !i.subject) throw invalidInput('subject is required unless template_id is given.', { fields: [{ field: 'subject', problem: 'required' }] });
      return bulkSend('sendgrid_send_bulk_emails', i, i.recipients, { subject: i.subject, text: i.text, html: i.html, template_id: i.template_id }, options(i, true), ctx);
    },
  }),
  defineTool({
    name: 'sendgrid_get_stats',
    title: 'Email statistics (SendGrid)',
    description:
      'Reads SendGrid delivery statistics (requests, delivered, opens, clicks, bounces, spam reports, unsubscribes…) between two dates, by day, ' +
      'week or month, optionally for given categories (e.g. a campaign\'s template type). Read-only.',
    kind: 'read',
    toolset: 'sendgrid',
    openWorld: true,
    input: z.strictObject({
      start_date: z.string().regex(/^\d{4}-\d{2}-\d{2}$/, 'YYYY-MM-DD'),
      end_date: z.string().regex(/^\d{4}-\d{2}-\d{2}$/, 'YYYY-MM-DD').optional(),
      aggregated_by: z.enum(['day', 'week', 'month']).optional(),
      categories: z.array(z.string().min(1)).max(10).optional(),
    }),
    output: { stats: z.array(z.unknown()).describe('at most 400 periods: narrow the dates or aggregate by week or month for more') },
    async handle(i, { services }) {
      return { stats: (await services.sendgrid.getStats(i)).slice(0, 400) };
    },
  }),
];

/** Direct emails to roster contacts show in their timeline, like every other send. Best effort. */
async function recordEmails(ctx: ToolContext, emails: string[], summary: string, messageId: string): Promise<void> {
  for (const email of emails) {
    await ctx.services.store
      .recordActivityForRecipient({ email }, { type: 'email', channel: 'sendgrid', summary, outcome: 'success', provider_ids: messageId ? { message_id: messageId } : {} })
      .catch((err: unknown) => ctx.log.warn({ err }, 'recording the email in the roster timeline failed'));
  }
}
