import { createHash } from 'node:crypto';
import type { Config } from '../../config.js';
import { invalidInput, notConfigured, ToolError, type ProviderName } from '../../result.js';
import { consentBlock } from '../../store/consent.js';
import type { Audience, Exclusion } from '../audience.js';
import { isEmailChannel, PROVIDER_OF_CHANNEL, type Channel, type MessageContent } from '../delivery/message.js';
import { singleLine } from '../../safety/content-view.js';
import { linkGuard, UNAPPROVED_LINK } from '../link-guard.js';
import { clientScope, contactScope, messageContent } from '../recipient-scope.js';
import { compileTemplates, renderForRecipient, type RenderLimits } from '../templating.js';
import type { CampaignRequest } from './request.js';

/**
 * Everything a campaign would do, computed without side effects: the channels, the rendered message
 * for every recipient, who is held back or excluded and why, and a fingerprint of it all. A preview
 * shows it; a confirmation token is bound to the fingerprint; confirming renders again, writing the
 * messages as it goes, and the fingerprint must match.
 *
 * The render pass is bounded as a whole, not per recipient: one time budget for the whole audience,
 * each recipient's render limited to what is left of it, the event loop released between slices so the
 * server keeps answering other calls, and only counts, a few examples and size-capped samples kept in
 * memory (the messages themselves stream to the caller in chunks).
 */

export { PROVIDER_OF_CHANNEL };

export interface PlannedDelivery {
  contact_id: string;
  client_id: string;
  channel: Channel;
  content: MessageContent;
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

export interface RenderBudget {
  /** Milliseconds the whole pass may take, whatever the audience size. */
  totalMs: number;
  /** Limits of one recipient's render (its time is also capped by what is left of the total). */
  perRecipient: RenderLimits;
}

export interface Sample {
  to: string;
  client_id: string;
  channel: string;
  subject?: string;
  text: string;
  html?: string;
  truncated?: boolean;
}

export interface CampaignPlan {
  definition: CampaignDefinition;
  /** Distinct contacts with at least one message. */
  recipients: number;
  messages: number;
  per_channel: Record<string, number>;
  held_back: { total: number; examples: HeldBack[] };
  /** Contacts (or one channel of a contact) that must not or cannot be messaged. */
  excluded: { total: number; by_reason: Record<string, number>; examples: Array<Exclusion & { channel?: string }> };
  unknown_client_ids: string[];
  contacts_considered: number;
  samples: Sample[];
  /** The first two messages of the first channel, whole: what the person approving reads (never cut to a sample's size). */
  approval_copies: Array<{ to: string; subject?: string; text: string; html?: string }>;
  /** Recipients held back because a value put a link target the template lacks into their message (written as skipped on confirmation). */
  unapproved: Array<{ contact_id: string; client_id: string; email: string; channels: Channel[]; detail: string }>;
  fingerprint: { content: string; audience: string; schedule: string };
}

const EXAMPLES = 20;
const SAMPLES = 3;
/** Characters of each sample part shown in a preview. */
const SAMPLE_CHARS = 4_000;
/** Messages handed to the caller at a time, and the longest the pass runs before letting other work in. */
const CHUNK = 250;
const SLICE_MS = 8;

export function resolveChannels(req: CampaignRequest, configured: Partial<Record<ProviderName, boolean>>): Channel[] {
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
    // A schedule years ahead (the year 9999) would sit in the outbox for ever, with its token's approval long forgotten.
    const maxDays = config.campaigns.maxScheduleDays;
    if (at > now + maxDays * 86_400_000) {
      throw invalidInput(
        `scheduled_send_time ${req.scheduled_send_time} is too far ahead: a campaign may be scheduled at most ${maxDays} days ahead ` +
          `(until ${new Date(now + maxDays * 86_400_000).toISOString()}; the server's CAMPAIGN_MAX_SCHEDULE_DAYS). Give an earlier time.`,
        { field: 'scheduled_send_time' },
      );
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
    campaign_name: singleLine(req.campaign_name),
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

/**
 * Renders every recipient on every channel, in audience order, handing the messages to `onChunk` as it
 * goes. Throws invalid_input when the whole pass would exceed its budget.
 */
export async function renderPlan(
  def: CampaignDefinition,
  audience: Audience,
  budget: RenderBudget,
  onChunk: (deliveries: PlannedDelivery[], def: CampaignDefinition) => Promise<unknown> = async () => undefined,
  /** Excluded and held-back contacts kept by name (the review view keeps more, to search them). */
  examples = EXAMPLES,
): Promise<CampaignPlan> {
  const tokens = def.personalization_tokens;
  const compiled = compileTemplates({ subject: def.subject_line, text: def.body_text, html: def.body_html }, Object.keys(tokens));
  const started = performance.now();
  let sliceStart = started;
  const audienceHash = createHash('sha256');
  const plan: CampaignPlan = {
    definition: def,
    recipients: 0,
    messages: 0,
    per_channel: {},
    held_back: { total: 0, examples: [] },
    excluded: { total: 0, by_reason: {}, examples: [] },
    unknown_client_ids: audience.unknown_client_ids,
    contacts_considered: audience.contacts_considered,
    samples: [],
    approval_copies: [],
    unapproved: [],
    fingerprint: { content: '', audience: '', schedule: '' },
  };
  // The approved content: the templates and the assistant's own personalization_tokens (shown in the preview).
  const links = linkGuard([
    { subject: def.subject_line, text: def.body_text, html: def.body_html },
    ...Object.values(tokens).map((v) => ({ text: String(v) })),
  ]);
  const exclude = (e: Exclusion & { channel?: string }) => {
    plan.excluded.total += 1;
    plan.excluded.by_reason[e.reason] = (plan.excluded.by_reason[e.reason] ?? 0) + 1;
    if (plan.excluded.examples.length < examples) plan.excluded.examples.push(e);
  };
  let chunk: PlannedDelivery[] = [];
  let rendered = 0;
  for (const member of audience.members) {
    const spent = performance.now() - started;
    if (spent > budget.totalMs) throw overBudget(def, budget, rendered, audience.members.length);
    const { contact, client } = member;
    const channels = def.channels.filter((channel) => {
      const block = consentBlock(contact, isEmailChannel(channel));
      if (!block) return true;
      exclude({ contact_id: contact.contact_id, client_id: client.client_id, email: contact.email, reason: block.reason, channel });
      audienceHash.update(`excluded:${contact.contact_id}:${channel}:${block.reason}\n`);
      return false;
    });
    if (!channels.length) continue;
    const outcome = renderForRecipient(
      compiled,
      {
        contact: contactScope(member.contact),
        client: clientScope(member.client),
        sender: { email: def.sender.email, name: def.sender.name },
        campaign: { name: def.campaign_name, template_type: def.template_type },
        tokens,
      },
      { ...budget.perRecipient, timeMs: Math.min(budget.perRecipient.timeMs, Math.max(1, budget.totalMs - spent)) },
    );
    rendered += 1;
    const added = outcome.ok ? links.unapproved(outcome, { recipient: contact.email, senders: [def.sender.email] }) : [];
    if (outcome.ok && added.length) {
      // A value (a name, a custom field) carries a link the person never approved: this recipient is held back.
      const detail = `a value put link target(s) the approved content does not carry into the message: ${added.slice(0, 3).join(', ')}${added.length > 3 ? ', …' : ''}`;
      plan.held_back.total += 1;
      if (plan.held_back.examples.length < examples) plan.held_back.examples.push({ contact_id: contact.contact_id, client_id: client.client_id, email: contact.email, reason: UNAPPROVED_LINK, detail });
      plan.unapproved.push({ contact_id: contact.contact_id, client_id: client.client_id, email: contact.email, channels, detail });
      audienceHash.update(`held:${contact.contact_id}:${UNAPPROVED_LINK}:${hash(added.join('\n'))}\n`);
    } else if (!outcome.ok) {
      if (outcome.reason === 'render_error' && performance.now() - started > budget.totalMs) throw overBudget(def, budget, rendered, audience.members.length);
      plan.held_back.total += 1;
      if (plan.held_back.examples.length < examples) {
        plan.held_back.examples.push({ contact_id: contact.contact_id, client_id: client.client_id, email: contact.email, reason: outcome.reason, detail: outcome.detail });
      }
      audienceHash.update(`held:${contact.contact_id}:${outcome.reason}\n`);
    } else {
      plan.recipients += 1;
      for (const channel of channels) {
        const content = messageContent(contact, outcome, channel, def.sender);
        // The audience part covers who receives what: a changed address or rendered text changes it.
        // (Intercom ids learned by earlier sends are not part of it: they change how, not what.)
        const { intercom_contact_id: _id, intercom_role: _role, ...fingerprinted } = content;
        audienceHash.update(`${contact.contact_id}:${channel}:${hash(JSON.stringify(fingerprinted))}\n`);
        plan.messages += 1;
        plan.per_channel[channel] = (plan.per_channel[channel] ?? 0) + 1;
        if (channel === def.channels[0] && plan.samples.length < SAMPLES) plan.samples.push(sampleOf(client.client_id, channel, content));
        if (channel === def.channels[0] && plan.approval_copies.length < 2) {
          plan.approval_copies.push({ to: content.to_email, subject: channel === 'intercom_inapp' ? undefined : content.subject, text: content.text, html: content.html });
        }
        chunk.push({ contact_id: contact.contact_id, client_id: client.client_id, channel, content });
      }
    }
    if (chunk.length >= CHUNK) {
      await onChunk(chunk, def);
      chunk = [];
    }
    if (performance.now() - sliceStart > SLICE_MS) {
      await new Promise((r) => setImmediate(r)); // let other calls run between slices of a large audience
      sliceStart = performance.now();
    }
  }
  if (chunk.length) await onChunk(chunk, def);
  for (const e of audience.excluded) {
    exclude(e);
    audienceHash.update(`excluded:${e.contact_id}:${e.reason}\n`);
  }
  const { scheduled_send_time, ...content } = def;
  plan.fingerprint = { content: hash(canonicalJson(content)), audience: audienceHash.digest('hex'), schedule: hash(scheduled_send_time ?? 'immediate') };
  return plan;
}

function overBudget(def: CampaignDefinition, budget: RenderBudget, done: number, total: number): ToolError {
  return invalidInput(
    `Rendering "${def.campaign_name}" for ${total} recipients would take longer than the render budget (${budget.totalMs} ms, CAMPAIGN_RENDER_BUDGET_MS): ` +
      `it stopped after ${done}. Nothing was sent. Simplify the template (loops over large ranges, long repeated output) or target fewer recipients per campaign.`,
    { field: 'body_text', rendered: done, recipients: total, budget_ms: budget.totalMs },
  );
}

function sampleOf(clientId: string, channel: Channel, c: MessageContent): Sample {
  const cut = (v: string | undefined) => (v !== undefined && v.length > SAMPLE_CHARS ? `${v.slice(0, SAMPLE_CHARS)}… [${v.length} characters in all]` : v);
  const truncated = c.text.length > SAMPLE_CHARS || (c.html?.length ?? 0) > SAMPLE_CHARS;
  return {
    to: c.to_email,
    client_id: clientId,
    channel,
    subject: channel === 'intercom_inapp' ? undefined : c.subject,
    text: cut(c.text)!,
    html: cut(c.html),
    ...(truncated ? { truncated } : {}),
  };
}

export function hash(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_k, v) =>
    v && typeof v === 'object' && !Array.isArray(v) ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, (v as Record<string, unknown>)[k]])) : v,
  );
}
