import { z } from 'zod';
import { defineTool, type ToolContext, SEND_OR_OVERRIDE } from '../mcp/tool.js';
import type { BulkOutcome, BulkRecipient, MailContent, MailOptions } from '../providers/sendgrid/service.js';
import { targetsOf } from '../engine/link-guard.js';
import { invalidInput } from '../result.js';
import type { ClearRequest } from '../safety/direct-send.js';
import { EMAIL_MAX_LENGTH } from '../validation.js';
import { normalizedRecipients } from '../safety/direct-send.js';
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
const toAddresses = (to: z.output<typeof recipients>) => (Array.isArray(to) ? to : [to]).map((a) => (typeof a === 'string' ? { email: a.trim() } : { ...a, email: a.email.trim() }));

const sendAt = z
  .union([z.number().int().positive(), z.string().datetime({ offset: true })])
  .optional()
  .describe('schedule up to 72 h ahead: epoch seconds or ISO-8601');
const toEpoch = (v: number | string | undefined) => (typeof v === 'string' ? Math.floor(Date.parse(v) / 1000) : v);

const common = {
  from: address.optional().describe('default SENDGRID_FROM_EMAIL / SENDGRID_FROM_NAME'),
  reply_to: address.optional(),
  categories: z.array(z.string().min(1).max(255)).max(10).optional(),
  custom_args: z.record(z.string(), z.string()).optional().describe('string values echoed in SendGrid events (10,000 bytes max); reserved keys such as outbox_key, campaign_id, contact_id, email or event are refused'),
  send_at: sendAt,
  track_opens: z.boolean().optional(),
  track_clicks: z.boolean().optional(),
};

/**
 * custom_args keys a caller may not set: the ones webhook events are tied to our messages and contacts by,
 * and the fields of SendGrid's own events (SendGrid flattens custom_args into each event, so a key named
 * like one of them would stand in for it). Compared without regard to case.
 */
export const RESERVED_CUSTOM_ARGS = new Set([
  'outbox_key', 'campaign_id', 'workflow_id', 'enrollment_id', 'contact_id', 'client_id',
  'email', 'event', 'timestamp', 'sg_event_id', 'sg_message_id', 'smtp-id', 'category', 'asm_group_id', 'type', 'reason', 'status',
  'response', 'attempt', 'url', 'url_offset', 'ip', 'useragent', 'tls', 'cert_err', 'sg_machine_open', 'bounce_classification',
  'marketing_campaign_id', 'marketing_campaign_name', 'pool', 'send_at', 'sg_template_id', 'sg_template_name',
]);

function checkCustomArgs(args: Record<string, string> | undefined): void {
  const bad = Object.keys(args ?? {}).filter((k) => RESERVED_CUSTOM_ARGS.has(k.trim().toLowerCase()));
  if (bad.length) {
    throw invalidInput(
      `custom_args may not use the reserved key(s) ${bad.map((k) => `"${k}"`).join(', ')}: provider events are tied to messages and contacts by them. ` +
        'Nothing was sent. Use other names (e.g. "my_ref").',
      { fields: bad.map((k) => ({ field: `custom_args.${k}`, problem: 'reserved' })) },
    );
  }
}

function options(i: { from?: { email: string; name?: string }; reply_to?: { email: string; name?: string }; categories?: string[]; custom_args?: Record<string, string>; send_at?: number | string; track_opens?: boolean; track_clicks?: boolean }, marketing: boolean): MailOptions {
  checkCustomArgs(i.custom_args);
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
  const { idempotency_key, override_consent, ...rest } = i;
  // Compared as the provider sees them: "Ann@X" and " ann@x" are one recipient.
  const request = { ...rest, recipients: normalizedRecipients(recipients) };
  delete (request as { to?: unknown }).to;
  const label = content.template_id ? `template ${content.template_id}` : `"${content.subject}"`;
  return services.directSends.run(
    { tool, idempotencyKey: idempotency_key, request, summary: `email ${label} to ${recipients.length} recipient(s)`, override: override_consent, approve: ctx.approve, audit: ctx.audit },
    async (gate) => {
      const { queue } = services.sendgrid.planBulk(recipients, content, opts);
      await gate.clear({
        recipients: queue.map((r) => ({ email: r.email })),
        emailChannel: true,
        approval: bulkApproval(ctx, queue, content, opts),
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

const FULL_AT = "this tool call's arguments (your client shows them)";
const fmt = (a?: { email: string; name?: string }) => (a ? `${a.name ? `"${a.name}" ` : ''}<${a.email}>` : undefined);

/** From and reply-to as SendGrid will use them (the configured defaults when the call gives none). */
function senderOf(ctx: ToolContext, opts: MailOptions) {
  const sg = ctx.services.config.sendgrid;
  return { from: fmt(opts.from ?? (sg.fromEmail ? { email: sg.fromEmail, name: sg.fromName } : undefined)), reply_to: fmt(opts.reply_to) };
}

/** SendGrid replaces each substitution key with its value, in subject and bodies: what that recipient reads. */
function substituted(content: MailContent, subs: Record<string, string> | undefined) {
  const apply = (v?: string) => {
    if (v === undefined || !subs) return v;
    let out = v;
    for (const [k, val] of Object.entries(subs)) out = out.split(k).join(val);
    return out;
  };
  return { subject: apply(content.subject), text: apply(content.text), html: apply(content.html) };
}

/**
 * What the person approving a bulk or template send reads: the first and one more recipient's copy
 * (substitutions applied, or their dynamic data), the template's name and active subject, and every
 * link target any recipient's copy carries.
 */
function bulkApproval(ctx: ToolContext, queue: BulkRecipient[], content: MailContent, opts: MailOptions): ClearRequest['approval'] {
  const shown = queue.length > 1 ? [queue[0]!, queue[queue.length - 1]!] : queue.slice(0, 1);
  const base = { channel: 'email (SendGrid)', sender: senderOf(ctx, opts), when: whenOf(opts.send_at), full_at: FULL_AT };
  if (content.template_id) {
    const id = content.template_id;
    return {
      ...base,
      template: { id },
      more: async () => ({ template: { id, ...(await ctx.services.sendgrid.templateSummary(id)) } }),
      copies: shown.map((r) => ({ to: r.email, data: r.dynamic_template_data ?? {} })),
    };
  }
  const links = new Set<string>();
  for (const r of queue.slice(0, LINK_SCAN)) for (const t of targetsOf(substituted(content, r.substitutions))) links.add(t);
  return {
    ...base,
    copies: shown.map((r) => ({ to: r.email, ...substituted(content, r.substitutions) })),
    notes: [
      `Link targets in any recipient's copy${queue.length > LINK_SCAN ? ` (first ${LINK_SCAN} recipients)` : ''}: ${links.size ? [...links].slice(0, 40).join(' , ') : 'none'}${links.size > 40 ? ` and ${links.size - 40} more` : ''}`,
    ],
  };
}

const LINK_SCAN = 2_000;

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
    scope: SEND_OR_OVERRIDE,
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
      const { idempotency_key, override_consent, ...rest } = i;
      // One address, a list, any case or spaces: the same recipients make the same call.
      const request = { ...rest, to: normalizedRecipients(to) };
      return services.directSends.run(
        { tool: 'sendgrid_send_email', idempotencyKey: idempotency_key, request, summary: `email "${i.subject}" to ${to.map((a) => a.email).slice(0, 3).join(', ')}${to.length > 3 ? ', …' : ''}`, override: override_consent, approve: ctx.approve, audit: ctx.audit },
        async (gate) => {
          const unique = services.sendgrid.checkRecipients(to, content, opts);
          await gate.clear({
            recipients: unique.map((a) => ({ email: a.email })),
            emailChannel: true,
            approval: {
              channel: `email (SendGrid)${i.shared_recipients ? ', one message with every recipient in To' : ''}`,
              ...(i.shared_recipients ? { messages: 1 } : {}),
              sender: senderOf(ctx, opts),
              when: whenOf(opts.send_at),
              copies: [{ to: unique[0]?.email, subject: i.subject, text: i.text, html: i.html }],
              full_at: FULL_AT,
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
    scope: SEND_OR_OVERRIDE,
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
    scope: SEND_OR_OVERRIDE,
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
