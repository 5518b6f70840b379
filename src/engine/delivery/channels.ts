import type { Kysely } from 'kysely';
import type { Logger } from '../../log.js';
import type { ProviderRuntime } from '../../resilience/provider-runtime.js';
import type { RequestHook, SendCall } from '../../resilience/request-hooks.js';
import { BATCH_BODY_BYTES } from '../../providers/sendgrid/service.js';
import type { ProviderName } from '../../result.js';
import type { Store } from '../../store/index.js';
import { linkIntercomContactsIn } from '../../store/roster.js';
import type { Database } from '../../store/schema.js';
import type { TimelineInput } from '../../store/timeline.js';
import type { DeliveryOutcome, DeliveryPort, DeliveryReceipt } from './dispatcher.js';
import type { FollowUpQueue } from './follow-ups.js';
import { PROVIDER_OF_CHANNEL, type Channel, type MessageContent } from './message.js';
import { parseContent, parseMeta, type OutboxRow } from './outbox.js';
import type { SettlementPort } from './settlement.js';
import { IntercomContactLookup, type ResolveEmails } from './contact-lookup.js';

/** What delivery needs from each provider module (the services implement these). */
export interface EmailSender {
  sendMessage(msg: {
    to: { email: string; name?: string };
    subject: string;
    text?: string;
    html?: string;
    from?: { email: string; name?: string };
    categories?: string[];
    custom_args?: Record<string, string>;
    track_opens?: boolean;
    track_clicks?: boolean;
    marketing?: boolean;
  }, call?: SendCall): Promise<{ message_id?: string }>;
  sendBatch(
    messages: Array<{ to: { email: string; name?: string }; subject: string; text: string; html?: string; custom_args?: Record<string, string> }>,
    opts: { from?: { email: string; name?: string }; categories?: string[]; track_opens?: boolean; track_clicks?: boolean; marketing?: boolean },
    call?: SendCall,
  ): Promise<{ message_id: string }>;
}

export interface IntercomMessenger {
  /** Intercom's contact (id and role) for an id or email; throws not_found when there is none. */
  resolveContact(spec: { contact_id?: string; user_email?: string }): Promise<{ id: string; role: 'user' | 'lead' }>;
  /** Many emails in as few searches as Intercom allows (see contact-lookup.ts). */
  resolveEmails: ResolveEmails;
  /** The admin who sends (INTERCOM_ADMIN_ID, else GET /me, cached). */
  defaultAdminId(): Promise<string>;
  sendMessage(msg: {
    to: { id: string; type: 'user' | 'lead' };
    message_type: 'email' | 'inapp';
    subject?: string;
    body: string;
    from_admin_id: string;
  }, call?: SendCall): Promise<{ message_id: string }>;
  trackEvent(ev: { contact_id: string; event_name: string; created_at?: number; metadata?: Record<string, unknown> }): Promise<void>;
}

export interface EventTracker {
  /** Stores an event for delivery (by the tracker's own batching); resolves once it is stored. */
  track(ev: { event: string; distinct_id: string; properties: Record<string, unknown> }): Promise<unknown>;
}

export interface ChannelDeps {
  store: Store;
  log: Logger;
  runtimes: Record<ProviderName, ProviderRuntime>;
  email: EmailSender;
  intercom: IntercomMessenger;
  analytics: EventTracker;
  /** Tracking events wait here until Intercom has no message to send. */
  intercomFollowUps: FollowUpQueue;
  /** Email messages that fit go out up to 1,000 per SendGrid request (CAMPAIGN_EMAIL_BATCHING). */
  batchEmail: boolean;
}

const SOURCE_LABEL: Record<string, string> = { campaign: 'Campaign', automation: 'Automation' };

/** Delivers outbox rows through SendGrid or Intercom, and records what happened. Knows messages, not their producers. */
export class ChannelDelivery implements DeliveryPort, SettlementPort {
  private readonly contacts: IntercomContactLookup;

  constructor(private readonly deps: ChannelDeps) {
    this.contacts = new IntercomContactLookup((emails) => deps.intercom.resolveEmails(emails));
  }

  /** Claimed rows, before their turn: the Intercom contacts they need are searched a page at a time. */
  prefetch(rows: OutboxRow[]): void {
    const emails: string[] = [];
    for (const row of rows) {
      if (row.channel === 'email') continue;
      const p = parseContent(row);
      if (!p.intercom_contact_id) emails.push(p.to_email);
    }
    if (emails.length) this.contacts.prefetch(emails);
  }

  async prepare(row: OutboxRow, p: MessageContent): Promise<(beforeSend: RequestHook) => Promise<DeliveryReceipt>> {
    const meta = parseMeta(row);
    const channel = row.channel as Channel;
    if (channel === 'email') {
      return async (beforeSend) => {
        const r = await this.deps.email.sendMessage({
          to: { email: p.to_email, name: p.to_name },
          subject: p.subject,
          text: p.text,
          html: p.html,
          from: p.from_email ? { email: p.from_email, name: p.from_name } : undefined,
          categories: meta.category ? [meta.category] : undefined,
          custom_args: meta.custom_args,
          track_opens: meta.track_opens,
          track_clicks: meta.track_clicks,
          marketing: true,
        }, { beforeSend });
        return { provider_message_id: r.message_id };
      };
    }
    // Intercom: an id and role remembered from an earlier delivery need no lookup; otherwise look the
    // contact up first, outside the point of no return.
    const contact =
      p.intercom_contact_id && p.intercom_role
        ? { id: p.intercom_contact_id, role: p.intercom_role }
        : p.intercom_contact_id
          ? await this.deps.intercom.resolveContact({ contact_id: p.intercom_contact_id })
          : await this.contacts.lookup(p.to_email);
    const adminId = await this.deps.intercom.defaultAdminId();
    return async (beforeSend) => {
      const r = await this.deps.intercom.sendMessage({
        to: { id: contact.id, type: contact.role },
        message_type: channel === 'intercom_inapp' ? 'inapp' : 'email',
        subject: channel === 'intercom_inapp' ? undefined : p.subject,
        body: p.html ?? textToHtml(p.text),
        from_admin_id: adminId,
      }, { beforeSend });
      return { provider_message_id: r.message_id, intercom_contact: contact };
    };
  }

  /**
   * Email rows that may share one SendGrid request: same source and sender, same tracking and category,
   * same parts (text, or text and html), and a body small enough to travel as substitutions. Undefined:
   * this row goes alone.
   */
  batchKey(row: OutboxRow): string | undefined {
    if (row.channel !== 'email' || !this.deps.batchEmail) return undefined;
    const p = parseContent(row);
    if (Buffer.byteLength(p.text) + Buffer.byteLength(p.html ?? '') > BATCH_BODY_BYTES) return undefined;
    const m = parseMeta(row);
    return JSON.stringify([row.source_kind, row.source_id, p.from_email ?? '', p.from_name ?? '', p.html !== undefined, m.category ?? '', m.track_opens, m.track_clicks]);
  }

  /** One request for the rows of one batch key: every recipient gets their own personalization. */
  async prepareBatch(rows: OutboxRow[]): Promise<(beforeSend: RequestHook) => Promise<DeliveryReceipt>> {
    const first = parseContent(rows[0]!);
    const meta = parseMeta(rows[0]!);
    const messages = rows.map((r) => {
      const p = parseContent(r);
      return { to: { email: p.to_email, ...(p.to_name ? { name: p.to_name } : {}) }, subject: p.subject, text: p.text, html: p.html, custom_args: parseMeta(r).custom_args };
    });
    return async (beforeSend) => {
      const r = await this.deps.email.sendBatch(messages, {
        from: first.from_email ? { email: first.from_email, name: first.from_name } : undefined,
        categories: meta.category ? [meta.category] : undefined,
        track_opens: meta.track_opens,
        track_clicks: meta.track_clicks,
        marketing: true,
      }, { beforeSend });
      return { provider_message_id: r.message_id };
    };
  }

  /** An Intercom message needs a contact lookup unless the roster remembered the contact's id and role. */
  needsLookup(row: OutboxRow): boolean {
    if (row.channel === 'email') return false;
    const p = parseContent(row);
    return !(p.intercom_contact_id && p.intercom_role);
  }

  timelineEntry(row: OutboxRow, outcome: DeliveryOutcome): TimelineInput {
    const channel = row.channel as Channel;
    const provider = PROVIDER_OF_CHANNEL[channel] ?? 'sendgrid';
    const meta = parseMeta(row);
    const what = `${SOURCE_LABEL[row.source_kind] ?? 'Message'} "${meta.label}"`;
    return {
      client_id: row.client_id,
      contact_id: row.contact_id,
      type: channel === 'email' ? 'email' : 'message',
      channel: provider,
      actor: meta.actor ?? undefined,
      summary:
        outcome.state === 'sent'
          ? `${what} delivered via ${channel}`
          : outcome.state === 'unknown'
            ? `${what} via ${channel}: delivery in doubt (not resent)`
            : outcome.state === 'skipped'
              ? `${what} via ${channel} skipped: ${outcome.error.message}`
              : `${what} via ${channel} failed: ${outcome.error.message}`,
      outcome: outcome.state === 'sent' ? 'success' : outcome.state,
      provider_ids: outcome.state === 'sent' && outcome.receipt.provider_message_id ? { message_id: outcome.receipt.provider_message_id } : {},
      data: {
        [row.source_kind === 'campaign' ? 'campaign_id' : 'workflow_id']: row.source_id,
        ...(row.source_ref ? { source_ref: row.source_ref } : {}),
        channel,
        ...(meta.category ? { template_type: meta.category } : {}),
        ...(outcome.state !== 'sent' ? { error: outcome.error } : {}),
      },
    };
  }

  /** With the rows' final state: Intercom ids learned while sending go on the roster, so the next message needs no lookup. */
  async settledWrites(trx: Kysely<Database>, settled: ReadonlyArray<{ row: OutboxRow; outcome: DeliveryOutcome }>): Promise<void> {
    const links: Array<{ email: string; id: string; role: 'user' | 'lead' }> = [];
    for (const { row, outcome } of settled) {
      const learned = outcome.state === 'sent' ? outcome.receipt.intercom_contact : undefined;
      if (!learned) continue;
      const content = parseContent(row);
      if (learned.id !== content.intercom_contact_id || learned.role !== content.intercom_role) links.push({ email: content.to_email, ...learned });
    }
    if (links.length) await linkIntercomContactsIn(trx, links);
  }

  /** After a row is recorded: queue the tracking events (never ahead of messages). */
  followUp(row: OutboxRow, outcome: DeliveryOutcome): void {
    if (outcome.state !== 'sent') return;
    const { log } = this.deps;
    const content = parseContent(row);
    const meta = parseMeta(row);
    const learned = outcome.receipt.intercom_contact;
    const intercomId = learned?.id ?? content.intercom_contact_id;
    const event = meta.intercom_event;
    if (event && intercomId && this.deps.runtimes.intercom.configured) {
      const createdAt = Math.floor(Date.now() / 1000);
      this.deps.intercomFollowUps.push(() =>
        this.deps.intercom.trackEvent({ contact_id: intercomId, event_name: event.name, created_at: createdAt, metadata: event.metadata }).catch((err: unknown) => {
          log.warn({ err, outbox_id: row.outbox_id }, `tracking ${event.name} in Intercom failed`);
        }),
      );
    }
    if (meta.mixpanel_event && this.deps.runtimes.mixpanel.configured) {
      const name = meta.mixpanel_event.name;
      this.deps.analytics
        .track({ event: name, distinct_id: content.external_user_id ?? content.to_email, properties: meta.mixpanel_event.properties })
        .catch((err: unknown) => log.warn({ err, outbox_id: row.outbox_id }, `queueing ${name} for Mixpanel failed`));
    }
  }
}

export function textToHtml(text: string): string {
  const esc = text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  return esc
    .split(/\n{2,}/)
    .map((para) => `<p>${para.replace(/\n/g, '<br>')}</p>`)
    .join('');
}
