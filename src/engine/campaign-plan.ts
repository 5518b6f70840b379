import { createHash } from 'node:crypto';
import type { Config } from '../config.js';
import { invalidInput, notConfigured, ToolError, type ProviderName } from '../result.js';
import type { Audience, AudienceMember, Exclusion } from './audience.js';
import type { CampaignRequest, Channel } from './campaign-request.js';
import { compileTemplates, renderForRecipient } from './templating.js';

/**
 * Everything a campaign would do, computed without side effects: the channels, the rendered message
 * for every recipient, who is held back and why, and a fingerprint of it all. A preview shows it; a
 * confirmation token is bound to the fingerprint; confirming recomputes it and must match.
 */

export const PROVIDER_OF_CHANNEL: Record<Channel, ProviderName> = {
  email: 'sendgrid',
  intercom_email: 'intercom',
  intercom_inapp: 'intercom',
};

export interface RecipientPayload {
  subject: string;
  text: string;
  html?: string;
  to_email: string;
  to_name?: string;
  external_user_id?: string;
  intercom_contact_id?: string;
  from_email?: string;
  from_name?: string;
}

export interface PlannedDelivery {
  contact_id: string;
  client_id: string;
  channel: Channel;
  payload: RecipientPayload;
}

export interface HeldBack {
  contact_id: string;
  client_id: string;
  email: string;
  reason: string;
  detail: string;
}

export interface CampaignDefinition {
  campaign_name: string;
  template_type: string;
  subject_line: string;
  body_text: string;
  body_html?: string;
  sender: { email?: string; name?: string };
  targeting: { client_ids?: string[]; segment?: string; tier?: string; contact_roles?: string[] };
  personalization_tokens: Record<string, string | number | boolean>;
  channels: Channel[];
  track_opens: boolean;
  track_clicks: boolean;
  created_by?: string;
  /** ISO time, or null for "as soon as confirmed". */
  scheduled_send_time: string | null;
}

export interface CampaignPlan {
  definition: CampaignDefinition;
  deliveries: PlannedDelivery[];
  held_back: HeldBack[];
  excluded: Exclusion[];
  unknown_client_ids: string[];
  contacts_considered: number;
  fingerprint: { content: string; audience: string; schedule: string };
}

export function resolveChannels(req: CampaignRequest, configured: Record<ProviderName, boolean>): Channel[] {
  if (!req.channels && !configured.sendgrid && !configured.intercom) {
    throw new ToolError(
      'not_configured',
      'No channel can deliver this campaign: set SENDGRID_API_KEY and SENDGRID_FROM_EMAIL (email through SendGrid) or INTERCOM_ACCESS_TOKEN ' +
        "(Intercom email and in-app) in the server's environment (or .env) and restart the server. Nothing was sent.",
    );
  }
  const channels: Channel[] = req.channels ? [...new Set(req.channels)] : [configured.sendgrid ? 'email' : 'intercom_email'];
  for (const ch of channels) {
    const provider = PROVIDER_OF_CHANNEL[ch];
    if (!configured[provider]) {
      throw notConfigured(provider, [provider === 'sendgrid' ? 'SENDGRID_API_KEY' : 'INTERCOM_ACCESS_TOKEN']);
    }
  }
  return channels;
}

export function buildDefinition(req: CampaignRequest, config: Config, channels: Channel[], now = Date.now()): CampaignDefinition {
  let scheduled: string | null = null;
  if (req.scheduled_send_time) {
    const at = Date.parse(req.scheduled_send_time);
    if (!(at > now)) {
      throw invalidInput(`scheduled_send_time ${req.scheduled_send_time} is not in the future. Give a later time, or leave it out to send immediately.`, {
        field: 'scheduled_send_time',
      });
    }
    scheduled = new Date(at).toISOString();
  }
  const senderEmail = req.sender_email ?? config.sendgrid.fromEmail;
  if (channels.includes('email') && !senderEmail) {
    throw invalidInput('The email channel needs a sender: pass sender_email, or set SENDGRID_FROM_EMAIL in the server environment.', {
      field: 'sender_email',
    });
  }
  return {
    campaign_name: req.campaign_name,
    template_type: req.template_type,
    subject_line: req.subject_line,
    body_text: req.body_text,
    body_html: req.body_html,
    sender: { email: senderEmail, name: config.sendgrid.fromName ?? req.created_by },
    targeting: {
      client_ids: req.target_client_ids ? [...new Set(req.target_client_ids)].sort() : undefined,
      segment: req.target_segment,
      tier: req.target_tier,
      contact_roles: req.contact_roles ? [...new Set(req.contact_roles.map((r) => r.toLowerCase()))].sort() : undefined,
    },
    personalization_tokens: req.personalization_tokens ?? {},
    channels,
    track_opens: req.track_opens,
    track_clicks: req.track_clicks,
    created_by: req.created_by,
    scheduled_send_time: scheduled,
  };
}

export function buildPlan(def: CampaignDefinition, audience: Audience): CampaignPlan {
  const tokens = def.personalization_tokens;
  const compiled = compileTemplates({ subject: def.subject_line, text: def.body_text, html: def.body_html }, Object.keys(tokens));
  const deliveries: PlannedDelivery[] = [];
  const held_back: HeldBack[] = [];
  const audienceHash = createHash('sha256');
  for (const member of audience.members) {
    const outcome = renderForRecipient(compiled, {
      contact: contactScope(member),
      client: clientScope(member),
      sender: { email: def.sender.email, name: def.sender.name },
      campaign: { name: def.campaign_name, template_type: def.template_type },
      tokens,
    });
    const { contact, client } = member;
    if (!outcome.ok) {
      held_back.push({ contact_id: contact.contact_id, client_id: client.client_id, email: contact.email, reason: outcome.reason, detail: outcome.detail });
      audienceHash.update(`held:${contact.contact_id}:${outcome.reason}\n`);
      continue;
    }
    for (const channel of def.channels) {
      const payload: RecipientPayload = {
        subject: outcome.subject,
        text: outcome.text,
        html: outcome.html,
        to_email: contact.email,
        to_name: contact.name ?? undefined,
        external_user_id: contact.external_user_id ?? undefined,
        intercom_contact_id: contact.intercom_contact_id ?? undefined,
        from_email: channel === 'email' ? def.sender.email : undefined,
        from_name: channel === 'email' ? def.sender.name : undefined,
      };
      deliveries.push({ contact_id: contact.contact_id, client_id: client.client_id, channel, payload });
      // The audience part covers who receives what: a changed address or rendered text changes it.
      audienceHash.update(`${contact.contact_id}:${channel}:${hash(JSON.stringify(payload))}\n`);
    }
  }
  for (const e of audience.excluded) audienceHash.update(`excluded:${e.contact_id}:${e.reason}\n`);
  const { scheduled_send_time, ...content } = def;
  return {
    definition: def,
    deliveries,
    held_back,
    excluded: audience.excluded,
    unknown_client_ids: audience.unknown_client_ids,
    contacts_considered: audience.contacts_considered,
    fingerprint: {
      content: hash(canonicalJson(content)),
      audience: audienceHash.digest('hex'),
      schedule: hash(scheduled_send_time ?? 'immediate'),
    },
  };
}

function contactScope({ contact }: AudienceMember): Record<string, unknown> {
  return {
    id: contact.contact_id,
    email: contact.email,
    name: contact.name,
    first_name: contact.first_name ?? firstNameOf(contact.name),
    role: contact.role,
    phone: contact.phone,
    user_id: contact.external_user_id,
  };
}

function clientScope({ client }: AudienceMember): Record<string, unknown> {
  return {
    id: client.client_id,
    name: client.name,
    tier: client.tier,
    lifecycle_stage: client.lifecycle_stage,
    health_score: client.health_score,
    mrr: client.mrr,
    renewal_date: client.renewal_date,
    owner: client.owner_email,
    segments: client.segments,
    custom: client.custom,
  };
}

/** Only a clear first word of a full name counts as a first name; otherwise it stays missing. */
function firstNameOf(name: string | null): string | undefined {
  const first = name?.trim().split(/\s+/)[0];
  return first && /^[\p{L}][\p{L}'-]*$/u.test(first) ? first : undefined;
}

export function hash(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_k, v) =>
    v && typeof v === 'object' && !Array.isArray(v) ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, (v as Record<string, unknown>)[k]])) : v,
  );
}

export function fingerprintString(fp: CampaignPlan['fingerprint']): string {
  return `${fp.content}:${fp.audience}:${fp.schedule}`;
}
