import type { Kysely } from 'kysely';
import type { Logger } from '../log.js';
import type { ProviderRuntime } from '../resilience/provider-runtime.js';
import type { ProviderName } from '../result.js';
import type { Database } from '../store/schema.js';
import type { Store } from '../store/index.js';
import type { CampaignDefinition, RecipientPayload } from './campaign-plan.js';
import type { Channel } from './campaign-request.js';
import type { OutboxRow } from './outbox.js';
import type { DeliveryOutcome, DeliveryPort, DeliveryReceipt } from './outbox-dispatcher.js';

/** What the campaign engine needs from each provider module (the services implement these). */
export interface CampaignEmailSender {
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
  }): Promise<{ message_id?: string }>;
}

export interface CampaignIntercomMessenger {
  /** Intercom's contact (id and role) for an id or email; throws not_found when there is none. */
  resolveContact(spec: { contact_id?: string; user_email?: string }): Promise<{ id: string; role: 'user' | 'lead' }>;
  /** The admin who sends (INTERCOM_ADMIN_ID, else GET /me, cached). */
  defaultAdminId(): Promise<string>;
  sendMessage(msg: {
    to: { id: string; type: 'user' | 'lead' };
    message_type: 'email' | 'inapp';
    subject?: string;
    body: string;
    from_admin_id: string;
  }): Promise<{ message_id: string }>;
  trackEvent(ev: { contact_id: string; event_name: string; metadata?: Record<string, unknown> }): Promise<void>;
}

export interface CampaignEventTracker {
  /** Queues an event (delivered by the tracker's own batching). */
  track(ev: { event: string; distinct_id: string; properties: Record<string, unknown> }): unknown;
}

export interface ChannelDeps {
  store: Store;
  log: Logger;
  runtimes: Record<ProviderName, ProviderRuntime>;
  email: CampaignEmailSender;
  intercom: CampaignIntercomMessenger;
  analytics: CampaignEventTracker;
}

const CHANNEL_PROVIDER: Record<Channel, ProviderName> = { email: 'sendgrid', intercom_email: 'intercom', intercom_inapp: 'intercom' };

/** Delivers outbox rows through SendGrid or Intercom, and records what happened. */
export class ChannelDelivery implements DeliveryPort {
  private readonly definitions = new Map<string, CampaignDefinition>();

  constructor(private readonly deps: ChannelDeps) {}

  private get db(): Kysely<Database> {
    return this.deps.store.db;
  }

  private async definition(campaignId: string): Promise<CampaignDefinition> {
    let def = this.definitions.get(campaignId);
    if (!def) {
      const row = await this.db.selectFrom('campaigns').select('definition').where('campaign_id', '=', campaignId).executeTakeFirstOrThrow();
      def = JSON.parse(row.definition) as CampaignDefinition;
      this.definitions.set(campaignId, def);
    }
    return def;
  }

  async prepare(row: OutboxRow, p: RecipientPayload): Promise<() => Promise<DeliveryReceipt>> {
    const def = await this.definition(row.campaign_id);
    const channel = row.channel as Channel;
    if (channel === 'email') {
      return async () => {
        const r = await this.deps.email.sendMessage({
          to: { email: p.to_email, name: p.to_name },
          subject: p.subject,
          text: p.text,
          html: p.html,
          from: p.from_email ? { email: p.from_email, name: p.from_name } : undefined,
          categories: [def.template_type],
          // Lets SendGrid's event webhook and activity feed tie every event back to this exact row.
          custom_args: { campaign_id: row.campaign_id, contact_id: row.contact_id, client_id: row.client_id, outbox_key: row.idempotency_key },
          track_opens: def.track_opens,
          track_clicks: def.track_clicks,
          marketing: true,
        });
        return { provider_message_id: r.message_id };
      };
    }
    // Intercom: look the contact and sender up first, outside the point of no return.
    const contact = await this.deps.intercom.resolveContact(p.intercom_contact_id ? { contact_id: p.intercom_contact_id } : { user_email: p.to_email });
    const adminId = await this.deps.intercom.defaultAdminId();
    return async () => {
      const r = await this.deps.intercom.sendMessage({
        to: { id: contact.id, type: contact.role },
        message_type: channel === 'intercom_inapp' ? 'inapp' : 'email',
        subject: channel === 'intercom_inapp' ? undefined : p.subject,
        body: p.html ?? textToHtml(p.text),
        from_admin_id: adminId,
      });
      return { provider_message_id: r.message_id, intercom_contact_id: contact.id };
    };
  }

  async settled(row: OutboxRow, outcome: DeliveryOutcome): Promise<void> {
    const { log } = this.deps;
    const channel = row.channel as Channel;
    const provider = CHANNEL_PROVIDER[channel] ?? 'sendgrid';
    let def: CampaignDefinition | undefined;
    try {
      def = await this.definition(row.campaign_id);
      await this.db
        .insertInto('timeline')
        .values({
          client_id: row.client_id,
          contact_id: row.contact_id,
          occurred_at: new Date().toISOString(),
          type: channel === 'email' ? 'email' : 'message',
          channel: provider,
          actor: def.created_by ?? null,
          summary:
            outcome.state === 'sent'
              ? `Campaign "${def.campaign_name}" delivered via ${channel}`
              : outcome.state === 'unknown'
                ? `Campaign "${def.campaign_name}" via ${channel}: delivery in doubt (not resent)`
                : `Campaign "${def.campaign_name}" via ${channel} failed: ${outcome.error.message}`,
          outcome: outcome.state === 'sent' ? 'success' : outcome.state,
          provider_ids: JSON.stringify(outcome.state === 'sent' && outcome.receipt.provider_message_id ? { message_id: outcome.receipt.provider_message_id } : {}),
          data: JSON.stringify({ campaign_id: row.campaign_id, channel, template_type: def.template_type, ...(outcome.state !== 'sent' ? { error: outcome.error } : {}) }),
        })
        .execute();
    } catch (err) {
      log.error({ err, outbox_id: row.outbox_id }, 'recording the delivery in the timeline failed');
    }
    if (outcome.state !== 'sent' || !def) return;
    const payload = JSON.parse(row.payload) as RecipientPayload;
    const contactId = outcome.receipt.intercom_contact_id;
    if (contactId && !payload.intercom_contact_id) {
      await this.deps.store.linkIntercomContact({ email: payload.to_email }, contactId).catch((err) => log.warn({ err }, 'linking the Intercom contact failed'));
    }
    if (provider === 'intercom' && contactId) {
      await this.deps.intercom
        .trackEvent({
          contact_id: contactId,
          event_name: 'email_campaign_received',
          metadata: { campaign_id: row.campaign_id, campaign_name: def.campaign_name, template_type: def.template_type },
        })
        .catch((err: unknown) => log.warn({ err, outbox_id: row.outbox_id }, 'tracking email_campaign_received in Intercom failed'));
    }
    if (this.deps.runtimes.mixpanel.configured) {
      try {
        await this.deps.analytics.track({
          event: 'campaign_message_sent',
          distinct_id: payload.external_user_id ?? payload.to_email,
          properties: { campaign_id: row.campaign_id, campaign_name: def.campaign_name, template_type: def.template_type, channel, client_id: row.client_id },
        });
      } catch (err) {
        log.warn({ err, outbox_id: row.outbox_id }, 'queueing campaign_message_sent for Mixpanel failed');
      }
    }
  }
}

function textToHtml(text: string): string {
  const esc = text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  return esc
    .split(/\n{2,}/)
    .map((para) => `<p>${para.replace(/\n/g, '<br>')}</p>`)
    .join('');
}
