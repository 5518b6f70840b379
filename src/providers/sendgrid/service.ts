import { httpStatusError } from '../../resilience/http-errors.js';
import { discardBody } from '../../resilience/lean-fetch.js';
import { invalidInput, ToolError } from '../../result.js';
import { emailProblem } from '../../validation.js';
import type { SendCall } from '../../resilience/request-hooks.js';
import type { ProviderDeps } from '../deps.js';

/**
 * SendGrid v3 Mail Send and Stats, called with the runtime's observed fetch rather than
 * @sendgrid/client: that client sends through axios, which would bypass our pacing, per-attempt timeout
 * and the distinction between "never sent" and "sent, outcome unknown" that decides whether a send
 * may be retried.
 */

export interface Address {
  email: string;
  name?: string;
}

export interface MailContent {
  subject?: string;
  text?: string;
  html?: string;
  template_id?: string;
}

export interface MailOptions {
  from?: Address;
  reply_to?: Address;
  categories?: string[];
  custom_args?: Record<string, string>;
  /** Epoch seconds, at most 72 h ahead. */
  send_at?: number;
  track_opens?: boolean;
  track_clicks?: boolean;
  /** Marketing mail carries the unsubscribe group (SENDGRID_UNSUBSCRIBE_GROUP_ID). */
  marketing?: boolean;
}

export interface BulkRecipient extends Address {
  /** For a dynamic template: its data. */
  dynamic_template_data?: Record<string, unknown>;
  /** For plain content: text substituted for each key (e.g. "-first_name-"). */
  substitutions?: Record<string, string>;
}

export interface BulkOutcome {
  email: string;
  status: 'accepted' | 'failed' | 'skipped_duplicate' | 'unknown';
  message_id?: string;
  error?: { code: string; message: string };
}

/** SendGrid caps one request at 1,000 personalizations and 1,000 addresses across to/cc/bcc. */
export const MAX_PER_REQUEST = 1000;
/** Substitution tags of a batched send: the shared content is just these, each recipient's body is their value. */
const BODY_TAG = '-cs-body-';
const HTML_TAG = '-cs-html-';
/** A message joins a batch when its body (text + html) fits SendGrid's 10,000 bytes of substitutions, with a margin. */
export const BATCH_BODY_BYTES = 9_500;
const MAX_SEND_AHEAD_S = 72 * 3600;
export function invalidEmails(addresses: string[]): string[] {
  return addresses.filter((a) => emailProblem(a) !== undefined);
}

/** SendGrid's own explanation: errors[] of {field, message, help}. */
export function describeSendGridError(body: unknown): string | undefined {
  const errors = (body as { errors?: Array<{ field?: string | null; message?: string; help?: string | null }> } | undefined)?.errors;
  if (!Array.isArray(errors) || !errors.length) return undefined;
  return errors.map((e) => `${e.field ? `${e.field}: ` : ''}${e.message ?? ''}${e.help ? ` (see ${e.help})` : ''}`).join('; ');
}

export class SendGridService {
  constructor(readonly deps: ProviderDeps) {}

  private get cfg() {
    return this.deps.config.sendgrid;
  }

  private async request(
    operation: string,
    idempotent: boolean,
    path: string,
    init: { method: string; body?: unknown; query?: Record<string, string | string[]> },
    call: SendCall = {},
  ): Promise<Response> {
    const url = new URL(`${this.cfg.baseUrl}${path}`);
    for (const [k, v] of Object.entries(init.query ?? {})) for (const item of Array.isArray(v) ? v : [v]) url.searchParams.append(k, item);
    return this.deps.runtime.call({ operation, idempotent, beforeSend: call.beforeSend }, async ({ signal, fetch }) => {
      const res = await fetch(url, {
        method: init.method,
        headers: { Authorization: `Bearer ${this.cfg.apiKey}`, 'Content-Type': 'application/json', Accept: 'application/json' },
        body: init.body === undefined ? undefined : JSON.stringify(init.body),
        signal,
      });
      if (!res.ok) {
        const text = await res.text().catch(() => '');
        let body: unknown;
        try {
          body = JSON.parse(text);
        } catch {
          body = undefined;
        }
        throw httpStatusError('sendgrid', res.status, res.headers, describeSendGridError(body) ?? (text.slice(0, 300) || undefined));
      }
      return res;
    });
  }

  private fromAddress(from?: Address): Address {
    if (from) return from;
    if (!this.cfg.fromEmail) {
      throw invalidInput('No sender: pass from, or set SENDGRID_FROM_EMAIL (a verified sender) in the server environment.', {
        fields: [{ field: 'from', problem: 'required when SENDGRID_FROM_EMAIL is not set' }],
      });
    }
    return { email: this.cfg.fromEmail, ...(this.cfg.fromName ? { name: this.cfg.fromName } : {}) };
  }

  /** The request body shared by every send: sender, content, settings. */
  private envelope(content: MailContent, opts: MailOptions, now = Date.now()) {
    const from = this.fromAddress(opts.from);
    const bad = invalidEmails([from.email, ...(opts.reply_to ? [opts.reply_to.email] : [])]);
    if (bad.length) throw invalidInput(`Not valid email address(es): ${bad.join(', ')}.`, { fields: bad.map((b) => ({ field: 'from/reply_to', problem: b })) });
    if (opts.send_at !== undefined && (opts.send_at * 1000 < now - 60_000 || opts.send_at - now / 1000 > MAX_SEND_AHEAD_S)) {
      throw invalidInput('send_at must be now or within the next 72 hours (SendGrid refuses later times).', { fields: [{ field: 'send_at', problem: 'within 72 h' }] });
    }
    if (opts.custom_args && Buffer.byteLength(JSON.stringify(opts.custom_args)) > 10_000) {
      throw invalidInput('custom_args is over SendGrid\'s 10,000-byte limit.', { fields: [{ field: 'custom_args', problem: 'at most 10,000 bytes' }] });
    }
    if (!content.template_id && !content.text && !content.html) {
      throw invalidInput('Give text and/or html (or a template_id).', { fields: [{ field: 'text', problem: 'text or html required' }] });
    }
    const contentParts = [
      ...(content.text ? [{ type: 'text/plain', value: content.text }] : []),
      ...(content.html ? [{ type: 'text/html', value: content.html }] : []),
    ];
    const tracking: Record<string, unknown> = {};
    if (opts.track_opens !== undefined) tracking.open_tracking = { enable: opts.track_opens };
    if (opts.track_clicks !== undefined) tracking.click_tracking = { enable: opts.track_clicks, enable_text: opts.track_clicks };
    return {
      from,
      ...(opts.reply_to ? { reply_to: opts.reply_to } : {}),
      ...(content.subject ? { subject: content.subject } : {}),
      ...(contentParts.length && !content.template_id ? { content: contentParts } : {}),
      ...(content.template_id ? { template_id: content.template_id } : {}),
      ...(opts.categories?.length ? { categories: opts.categories.slice(0, 10) } : {}),
      ...(opts.custom_args ? { custom_args: opts.custom_args } : {}),
      ...(opts.send_at !== undefined ? { send_at: opts.send_at } : {}),
      ...(opts.marketing && this.cfg.unsubscribeGroupId ? { asm: { group_id: this.cfg.unsubscribeGroupId } } : {}),
      ...(Object.keys(tracking).length ? { tracking_settings: tracking } : {}),
      ...(this.cfg.sandbox ? { mail_settings: { sandbox_mode: { enable: true } } } : {}),
    };
  }

  private async postMail(body: Record<string, unknown>, call?: SendCall): Promise<string> {
    const res = await this.request('mail_send', false, '/v3/mail/send', { method: 'POST', body }, call);
    await discardBody(res); // 202 with an empty body
    return res.headers.get('x-message-id') ?? '';
  }

  /**
   * One email, the same content to every address in `to`. Each address is its own personalization, so
   * no recipient sees another's address, unless `shared` asks for one message with everyone in To.
   */
  async sendEmail(to: Address[], content: MailContent, opts: MailOptions = {}, shared = false, call?: SendCall): Promise<{ message_id: string; accepted: number }> {
    this.deps.runtime.requireConfigured();
    const { unique, envelope } = this.checked(to, content, opts);
    const personalizations = shared ? [{ to: unique }] : unique.map((a) => ({ to: [a] }));
    const body = { personalizations, ...envelope };
    return { message_id: await this.postMail(body, call), accepted: unique.length };
  }

  /** Validates the addresses, content and options of a send before anything leaves; returns the distinct addresses. */
  checkRecipients(to: Address[], content: MailContent, opts: MailOptions = {}): Address[] {
    return this.checked(to, content, opts).unique;
  }

  /** checkRecipients, keeping the envelope it built for the send. */
  private checked(to: Address[], content: MailContent, opts: MailOptions) {
    const envelope = this.envelope(content, opts);
    const unique = dedupe(to);
    const bad = invalidEmails(unique.map((a) => a.email));
    if (bad.length) throw invalidInput(`Not valid email address(es): ${bad.join(', ')}. Fix them and call again.`, { fields: bad.map((b) => ({ field: 'to', problem: b })) });
    if (!unique.length || unique.length > MAX_PER_REQUEST) {
      throw invalidInput(`to needs 1 to ${MAX_PER_REQUEST} addresses; use sendgrid_send_bulk_emails for more.`, { fields: [{ field: 'to', problem: 'count' }] });
    }
    if (!content.subject && !content.template_id) throw invalidInput('subject is required.', { fields: [{ field: 'subject', problem: 'required' }] });
    return { unique, envelope };
  }

  /**
   * Many personalized messages in one request: each recipient is a personalization with their own
   * subject, custom_args and the rendered body carried in substitutions (the shared content is only
   * the substitution tags). SendGrid caps substitutions at 10,000 bytes per personalization: the
   * caller batches only messages that fit (BATCH_BODY_BYTES).
   */
  async sendBatch(
    messages: Array<{ to: Address; subject: string; text: string; html?: string; custom_args?: Record<string, string> }>,
    opts: MailOptions & { from?: Address },
    call?: SendCall,
  ): Promise<{ message_id: string }> {
    this.deps.runtime.requireConfigured();
    const withHtml = messages.some((m) => m.html !== undefined);
    const envelope = this.envelope({ subject: messages[0]!.subject, text: BODY_TAG, ...(withHtml ? { html: HTML_TAG } : {}) }, opts);
    const personalizations = messages.map((m) => ({
      to: [m.to],
      subject: m.subject,
      substitutions: { [BODY_TAG]: m.text, ...(withHtml ? { [HTML_TAG]: m.html ?? m.text } : {}) },
      ...(m.custom_args ? { custom_args: m.custom_args } : {}),
    }));
    const { subject: _shared, ...rest } = envelope as Record<string, unknown>;
    return { message_id: await this.postMail({ personalizations, ...rest }, call) };
  }

  /** One personalized message to one person: what the campaign engine sends. */
  async sendMessage(msg: { to: Address; subject: string; text?: string; html?: string; from?: Address } & MailOptions, call?: SendCall): Promise<{ message_id: string }> {
    const { to, subject, text, html, ...opts } = msg;
    const r = await this.sendEmail([to], { subject, text, html }, opts, false, call);
    return { message_id: r.message_id };
  }

  /** Validates a bulk send before anything leaves; returns the distinct recipients and the duplicates skipped. */
  planBulk(recipients: BulkRecipient[], content: MailContent, opts: MailOptions = {}): { queue: BulkRecipient[]; duplicates: BulkOutcome[] } {
    this.envelope(content, { ...opts, marketing: opts.marketing ?? true });
    const bad = invalidEmails(recipients.map((r) => r.email));
    if (bad.length) {
      throw invalidInput(`Not valid email address(es): ${bad.slice(0, 20).join(', ')}${bad.length > 20 ? ` and ${bad.length - 20} more` : ''}. Nothing was sent.`, {
        fields: bad.slice(0, 50).map((b) => ({ field: 'recipients', problem: b })),
      });
    }
    if (!content.subject && !content.template_id) throw invalidInput('subject is required without a template_id.', { fields: [{ field: 'subject', problem: 'required' }] });
    const seen = new Set<string>();
    const duplicates: BulkOutcome[] = [];
    const queue: BulkRecipient[] = [];
    for (const r of recipients) {
      const key = r.email.trim().toLowerCase();
      if (seen.has(key)) duplicates.push({ email: r.email, status: 'skipped_duplicate' });
      else {
        seen.add(key);
        queue.push(r);
      }
    }
    return { queue, duplicates };
  }

  /**
   * Many recipients, each with their own data, packed up to 1,000 personalizations a request. Each
   * address gets at most one message per call; per-recipient outcomes are returned. A request whose
   * outcome is unknown is not repeated: its recipients are reported `unknown`. When SendGrid refuses
   * every request, nothing was accepted: that is an error with SendGrid's reason, not a result.
   */
  async sendBulk(recipients: BulkRecipient[], content: MailContent, opts: MailOptions = {}): Promise<{ requests: number; outcomes: BulkOutcome[] }> {
    this.deps.runtime.requireConfigured();
    const { queue, duplicates } = this.planBulk(recipients, content, opts);
    const envelope = this.envelope(content, { ...opts, marketing: opts.marketing ?? true });
    const outcomes: BulkOutcome[] = [...duplicates];
    let firstError: ToolError | undefined;
    let anyAccepted = false;
    let anyUnknown = false;
    let requests = 0;
    for (let i = 0; i < queue.length; i += MAX_PER_REQUEST) {
      const batch = queue.slice(i, i + MAX_PER_REQUEST);
      const personalizations = batch.map((r) => ({
        to: [{ email: r.email, ...(r.name ? { name: r.name } : {}) }],
        ...(r.dynamic_template_data ? { dynamic_template_data: r.dynamic_template_data } : {}),
        ...(r.substitutions ? { substitutions: r.substitutions } : {}),
      }));
      requests += 1;
      try {
        const message_id = await this.postMail({ personalizations, ...envelope });
        anyAccepted = true;
        for (const r of batch) outcomes.push({ email: r.email, status: 'accepted', message_id });
      } catch (err) {
        const e = err instanceof ToolError ? err : new ToolError('provider_error', String(err));
        firstError ??= e;
        anyUnknown ||= e.outcomeUnknown;
        for (const r of batch) outcomes.push({ email: r.email, status: e.outcomeUnknown ? 'unknown' : 'failed', error: { code: e.code, message: e.message } });
        // Stop on what will fail again for every batch (credentials, permissions, an open circuit).
        if (['auth_failed', 'forbidden', 'circuit_open', 'not_configured'].includes(e.code)) {
          for (const r of queue.slice(i + MAX_PER_REQUEST)) outcomes.push({ email: r.email, status: 'failed', error: { code: e.code, message: `Not attempted: ${e.message}` } });
          break;
        }
      }
    }
    if (firstError && !anyAccepted && !anyUnknown) throw firstError; // nothing went out: the call failed, say why
    return { requests, outcomes };
  }

  async getStats(q: { start_date: string; end_date?: string; aggregated_by?: 'day' | 'week' | 'month'; categories?: string[] }): Promise<unknown[]> {
    this.deps.runtime.requireConfigured();
    const query: Record<string, string | string[]> = { start_date: q.start_date };
    if (q.end_date) query.end_date = q.end_date;
    if (q.aggregated_by) query.aggregated_by = q.aggregated_by;
    if (q.categories?.length) query.categories = q.categories;
    const path = q.categories?.length ? '/v3/categories/stats' : '/v3/stats';
    const res = await this.request('get_stats', true, path, { method: 'GET', query });
    return (await res.json()) as unknown[];
  }

  /**
   * A dynamic template's name and its active version's subject (GET /v3/templates/{template_id}), for
   * the person approving a template send. A template SendGrid cannot show is said, not hidden.
   */
  async templateSummary(templateId: string): Promise<{ name?: string; subject?: string; unavailable?: string }> {
    try {
      const res = await this.request('get_template', true, `/v3/templates/${encodeURIComponent(templateId)}`, { method: 'GET' });
      const t = (await res.json()) as { name?: string; versions?: Array<{ active?: number; subject?: string; name?: string }> };
      const active = t.versions?.find((v) => v.active === 1);
      return active ? { name: t.name, subject: active.subject } : { name: t.name, unavailable: 'the template has no active version' };
    } catch (err) {
      return { unavailable: (err as Error).message.slice(0, 300) };
    }
  }
}

function dedupe(to: Address[]): Address[] {
  const seen = new Set<string>();
  return to.filter((a) => {
    const k = a.email.trim().toLowerCase();
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}
