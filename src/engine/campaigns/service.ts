import { randomBytes } from 'node:crypto';
import type { Config } from '../../config.js';
import type { Logger } from '../../log.js';
import type { ProviderRuntime } from '../../resilience/provider-runtime.js';
import { PROVIDERS, ToolError, type ProviderName } from '../../result.js';
import type { Approver } from '../../safety/approval.js';
import type { Store } from '../../store/index.js';
import { resolveAudience } from '../audience.js';
import { twoPhase, type ConfirmationTokens, type TwoPhaseSpec } from '../confirmations.js';
import { decodeCursor, encodeCursor } from '../cursor.js';
import type { OutboundMessage } from '../delivery/message.js';
import { insertMessages, OUTBOX_STATES, type OutboxRepository, type OutboxState } from '../delivery/outbox.js';
import { engagementBySource, summarizeEngagement, type Engagement } from '../inbox/engagement.js';
import { UNAPPROVED_LINK } from '../link-guard.js';
import { linkTargetsIn, viewHtml } from '../../safety/content-view.js';
import type { RenderGate } from '../render-gate.js';
import { buildDefinition, renderPlan, resolveChannels, type CampaignDefinition, type CampaignPlan, type PlannedDelivery } from './plan.js';
import type { CampaignRequest } from './request.js';
import { currentActor } from '../../safety/actor.js';

export interface CampaignDeps {
  config: Config;
  log: Logger;
  store: Store;
  runtimes: Record<ProviderName, ProviderRuntime>;
  outbox: OutboxRepository;
  /** Tells delivery that messages became due. */
  wakeDelivery: () => void;
  renderGate: RenderGate;
  tokens: ConfirmationTokens;
}

const EXAMPLES = 20;
/** Excluded and held-back contacts a review keeps to search (beyond it, `complete: false` says so). */
const REVIEW_KEPT = 5_000;

export interface CampaignReview {
  campaign_name: string;
  channels: string[];
  sender: { from: string | null; from_name: string | null; reply_to: null; intercom_admin: string | null };
  schedule: { send_immediately: boolean; scheduled_send_time: string | null };
  copy: { to: string; client_id: string; channel: string; subject?: string; text: string; html?: string; links: string[]; images: string[] } | null;
  recipients: { total: number; matched: number; shown: Array<{ email: string; client_id: string; channels: string[] }> };
  excluded: { total: number; matched: number; complete: boolean; shown: Array<{ email: string; client_id: string; reason: string; channel?: string }> };
  held_back: { total: number; matched: number; complete: boolean; shown: Array<{ email: string; client_id: string; reason: string; detail: string }> };
}
/** A staged confirmation older than this was abandoned (its server stopped mid-confirmation). */
const STAGED_TTL_MS = 3_600_000;

type Totals = Record<OutboxState, number> & { total: number };

export interface CampaignStatus {
  campaign_id: string;
  campaign_name: string;
  template_type: string;
  status: 'scheduled' | 'sending' | 'completed' | 'completed_with_problems' | 'cancelled';
  channels: string[];
  created_by: string | null;
  created_at: string;
  confirmed_at: string | null;
  scheduled_send_time: string | null;
  cancelled_at: string | null;
  completed_at: string | null;
  totals: Totals;
  per_channel: Record<string, Totals>;
  /** Why messages were skipped (unsubscribed since confirmation, contact removed…), by reason. */
  skipped_by_reason: Record<string, number>;
  /** Why queued messages are waiting (daily limit, rate limit, send window…), by reason. */
  waiting_by_reason: Record<string, number>;
  progress: { settled: number; total: number; percent: number };
  /** From verified provider webhooks: distinct messages delivered, bounced, opened… and rates (percent of sent). */
  engagement: { totals: Engagement; per_channel: Record<string, Engagement> };
  problems: Array<{ email: string; client_id: string; channel: string; state: string; error_code: string | null; error_message: string | null }>;
  problems_total: number;
}

function emptyTotals(): Totals {
  return Object.fromEntries([...OUTBOX_STATES.map((s) => [s, 0]), ['total', 0]]) as Totals;
}

/**
 * Campaigns: preview → confirm (render once more, writing the messages to the outbox as staged rows,
 * then commit them with the campaign in one transaction) → delivery, plus status, list and cancel.
 */
export class CampaignService {
  constructor(private readonly deps: CampaignDeps) {}

  /** Removes what a crash mid-confirmation left behind. */
  async start(): Promise<void> {
    await this.deps.outbox.dropStaged({ olderThan: Date.now() - STAGED_TTL_MS }).catch((err: unknown) => this.deps.log.warn({ err }, 'removing abandoned staged messages failed'));
  }

  private configured(): Record<ProviderName, boolean> {
    return Object.fromEntries(PROVIDERS.map((p) => [p, this.deps.runtimes[p].configured])) as Record<ProviderName, boolean>;
  }

  private async definitionAndAudience(req: CampaignRequest) {
    const channels = resolveChannels(req, this.configured());
    const definition = buildDefinition(req, this.deps.config, channels);
    const audience = await resolveAudience(this.deps.store.db, {
      client_ids: definition.targeting.client_ids,
      segment: definition.targeting.segment,
      tier: definition.targeting.tier as CampaignRequest['target_tier'],
      contact_roles: definition.targeting.contact_roles,
    });
    return { definition, audience };
  }

  /** Renders the whole audience (bounded), handing messages to `onChunk`. Sends nothing. */
  private async plan(req: CampaignRequest, onChunk?: (d: PlannedDelivery[], def: CampaignDefinition) => Promise<unknown>): Promise<CampaignPlan> {
    return this.deps.renderGate.run(async () => {
      const { definition, audience } = await this.definitionAndAudience(req);
      return renderPlan(definition, audience, this.deps.config.campaigns.renderBudget, onChunk);
    });
  }

  /**
   * What the review view shows beyond the preview (sends nothing, issues no token): the copy one
   * recipient would receive (the first one by default) with every link target and image source it
   * carries, and the recipients, excluded and held-back contacts matching `search`, up to `limit` each.
   */
  async review(req: CampaignRequest, opts: { recipient?: string; search?: string; limit: number }): Promise<CampaignReview> {
    const want = opts.recipient?.trim().toLowerCase();
    const q = opts.search?.trim().toLowerCase();
    const matches = (...fields: Array<string | undefined>) => !q || fields.some((f) => f?.toLowerCase().includes(q));
    const recipients: CampaignReview['recipients'] = { total: 0, matched: 0, shown: [] };
    let copy: PlannedDelivery | undefined;
    let last: { contact_id: string; row?: CampaignReview['recipients']['shown'][number] } | undefined;
    const plan = await this.deps.renderGate.run(async () => {
      const { definition, audience } = await this.definitionAndAudience(req);
      const first = definition.channels[0];
      const onChunk = async (chunk: PlannedDelivery[]) => {
        for (const d of chunk) {
          if (d.channel === first && !copy && (!want || d.content.to_email.toLowerCase() === want)) copy = d;
          // A recipient's messages come one channel after the other.
          if (last?.contact_id === d.contact_id) {
            last.row?.channels.push(d.channel);
            continue;
          }
          recipients.total += 1;
          last = { contact_id: d.contact_id };
          if (!matches(d.content.to_email, d.client_id)) continue;
          recipients.matched += 1;
          if (recipients.shown.length < opts.limit) {
            last.row = { email: d.content.to_email, client_id: d.client_id, channels: [d.channel] };
            recipients.shown.push(last.row);
          }
        }
      };
      return renderPlan(definition, audience, this.deps.config.campaigns.renderBudget, onChunk, REVIEW_KEPT);
    });
    const def = plan.definition;
    const excluded = plan.excluded.examples.filter((e) => matches(e.email, e.client_id, e.reason, e.channel));
    const held = plan.held_back.examples.filter((h) => matches(h.email, h.client_id, h.reason, h.detail));
    const c = copy?.content;
    const view = c?.html ? viewHtml(c.html) : undefined;
    const links = [...(view?.links ?? [])];
    for (const t of linkTargetsIn([c?.subject ?? '', c?.text ?? ''].join('\n'))) if (!links.includes(t)) links.push(t);
    return {
      campaign_name: def.campaign_name,
      channels: def.channels,
      sender: {
        from: def.channels.includes('email') ? (def.sender.email ?? null) : null,
        from_name: def.sender.name ?? null,
        reply_to: null,
        intercom_admin: def.channels.some((ch) => ch !== 'email') ? (this.deps.config.intercom.adminId ?? 'the Intercom token owner') : null,
      },
      schedule: { send_immediately: def.scheduled_send_time === null, scheduled_send_time: def.scheduled_send_time },
      copy:
        c && copy
          ? { to: c.to_email, client_id: copy.client_id, channel: copy.channel, subject: copy.channel === 'intercom_inapp' ? undefined : c.subject, text: c.text, html: c.html, links, images: view?.images ?? [] }
          : null,
      recipients,
      excluded: {
        total: plan.excluded.total,
        matched: excluded.length,
        complete: plan.excluded.total <= REVIEW_KEPT,
        shown: excluded.slice(0, opts.limit).map((e) => ({ email: e.email, client_id: e.client_id, reason: e.reason, ...(e.channel ? { channel: e.channel } : {}) })),
      },
      held_back: {
        total: plan.held_back.total,
        matched: held.length,
        complete: plan.held_back.total <= REVIEW_KEPT,
        shown: held.slice(0, opts.limit).map((h) => ({ email: h.email, client_id: h.client_id, reason: h.reason, detail: h.detail })),
      },
    };
  }

  /** The first call: a preview and a token bound to exactly this content, audience and schedule. */
  async preview(req: CampaignRequest): Promise<Record<string, unknown>> {
    return twoPhase(this.deps.tokens, this.confirmation(req), undefined);
  }

  /**
   * The second call: renders again, writing each message to the outbox as a staged row, checks the
   * result against the token, asks for approval, then commits the campaign and its messages in one
   * transaction. A crash at any point before that commit leaves nothing to send.
   */
  async confirm(req: CampaignRequest & { confirmation_token: string }, approve: Approver): Promise<Record<string, unknown>> {
    return twoPhase(this.deps.tokens, this.confirmation(req, approve), req.confirmation_token);
  }

  private confirmation(req: CampaignRequest, approve?: Approver): TwoPhaseSpec<{ plan: CampaignPlan; campaignId?: string }> {
    const db = this.deps.store.db;
    return {
      kind: 'campaign',
      tool: 'send_personalized_email',
      nothingDone: 'Nothing was sent.',
      compute: async (confirming) => {
        if (!confirming) return { plan: await this.plan(req) };
        const campaignId = `cmp_${randomBytes(8).toString('hex')}`;
        const plan = await this.plan(req, (chunk, d) => insertMessages(db, chunk.map((x) => this.message(campaignId, d, x)), Date.now(), 'staged'));
        return { plan, campaignId };
      },
      label: ({ plan }) => plan.definition.campaign_name,
      parts: ({ plan }) => plan.fingerprint,
      preview: ({ plan }) => summarize(plan),
      nothingToConfirm: ({ plan }) => (plan.messages === 0 ? 'Nobody in this audience can receive the campaign (see excluded and held_back). Nothing to confirm.' : undefined),
      abandon: async ({ campaignId }) => {
        if (campaignId) await this.deps.outbox.dropStaged({ kind: 'campaign', sourceId: campaignId });
      },
      replay: async (campaignId, { plan }) => {
        const status = await this.status(campaignId);
        return {
          phase: 'confirmed',
          already_confirmed: true,
          ...summarize(plan),
          campaign_id: campaignId,
          queued: status.totals.total,
          delivery: status,
          next_step: 'This campaign was already confirmed; nothing new was queued. Use get_campaign_status to follow it.',
        };
      },
      confirm: async ({ plan, campaignId }, consume) => {
        const def = plan.definition;
        const sample = plan.samples[0];
        const fmt = (a: { email?: string; name?: string }) => (a.email ? `${a.name ? `"${a.name}" ` : ''}<${a.email}>` : undefined);
        await approve!({
          action: 'campaign_confirm',
          recipients: plan.recipients,
          messages: plan.messages,
          examples: plan.samples.map((s) => s.to),
          channel: def.channels.join(' + '),
          sender: {
            ...(def.channels.includes('email') ? { from: fmt(def.sender) } : {}),
            ...(def.channels.some((c) => c !== 'email') ? { intercom_admin: this.deps.config.intercom.adminId ?? 'the Intercom token owner' } : {}),
          },
          when: def.scheduled_send_time ?? 'now',
          // The token is bound to the audience as previewed: a contact added since refuses it before this point.
          added_since_preview: 0,
          written: [
            { label: 'Campaign name', value: def.campaign_name },
            { label: 'Template type', value: def.template_type },
            // With sign-in created_by is the signed-in person: the dialog shows it among the facts.
            ...(currentActor() ? [] : [{ label: 'Created by', value: def.created_by }]),
          ],
          copies: plan.approval_copies,
          full_at: 'the preview (send_personalized_email without confirmation_token: its samples, 4,000 characters per part)',
          notes: [
            ...(plan.excluded.total ? [`${plan.excluded.total} excluded (${Object.entries(plan.excluded.by_reason).map(([r, n]) => `${r}: ${n}`).join(', ')})`] : []),
            ...(plan.held_back.total ? [`${plan.held_back.total} held back (a value they lack, or a link the template does not carry)`] : []),
          ],
        });
        const id = campaignId!;
        const now = new Date().toISOString();
        const committed = await db.transaction().execute(async (trx) => {
          if (!(await consume(trx, id))) return false; // a concurrent confirmation won
          await trx
            .insertInto('campaigns')
            .values({
              campaign_id: id,
              name: def.campaign_name,
              template_type: def.template_type,
              definition: JSON.stringify(def),
              content_hash: plan.fingerprint.content,
              created_by: def.created_by ?? null,
              scheduled_at: def.scheduled_send_time,
              created_at: now,
              confirmed_at: now,
              cancelled_at: null,
            })
            .execute();
          await this.deps.outbox.commitStaged(trx, 'campaign', id);
          // Held back for an unapproved link: recorded as skipped with the reason, so the status counts them.
          const held = plan.unapproved.flatMap((u) =>
            u.channels.map((channel) => ({
              ...this.message(id, def, { contact_id: u.contact_id, client_id: u.client_id, channel, content: { subject: '', text: '', to_email: u.email } }),
              skip: { code: UNAPPROVED_LINK, message: `Not sent: ${u.detail}.` },
            })),
          );
          if (held.length) await insertMessages(trx, held);
          return true;
        });
        if (!committed) return undefined;
        this.deps.log.info({ campaign_id: id, messages: plan.messages, scheduled: def.scheduled_send_time }, 'campaign confirmed');
        this.deps.wakeDelivery();
        return {
          id,
          result: {
            phase: 'confirmed',
            ...summarize(plan),
            campaign_id: id,
            queued: plan.messages,
            next_step: def.scheduled_send_time
              ? `Scheduled: ${plan.messages} message(s) will go out at ${def.scheduled_send_time}, even across restarts. Use get_campaign_status or cancel_campaign with campaign_id "${id}".`
              : `Sending ${plan.messages} message(s) now at the pace the providers allow. Use get_campaign_status with campaign_id "${id}" to follow it.`,
          },
        };
      },
    };
  }

  /** One campaign message as delivery receives it: rendered content plus how to label and track it. */
  private message(campaignId: string, def: CampaignDefinition, d: PlannedDelivery): OutboundMessage {
    const key = `${campaignId}:${d.contact_id}:${d.channel}`;
    return {
      source_kind: 'campaign',
      source_id: campaignId,
      contact_id: d.contact_id,
      client_id: d.client_id,
      channel: d.channel,
      idempotency_key: key,
      content: d.content,
      meta: {
        label: def.campaign_name,
        category: def.template_type,
        actor: def.created_by ?? null,
        track_opens: def.track_opens,
        track_clicks: def.track_clicks,
        // Lets SendGrid's event webhook and activity feed tie every event back to this exact message.
        custom_args: { campaign_id: campaignId, contact_id: d.contact_id, client_id: d.client_id, outbox_key: key },
        intercom_event: {
          name: 'email_campaign_received',
          metadata: { campaign_id: campaignId, campaign_name: def.campaign_name, template_type: def.template_type },
        },
        mixpanel_event: {
          name: 'campaign_message_sent',
          properties: { campaign_id: campaignId, campaign_name: def.campaign_name, template_type: def.template_type, channel: d.channel, client_id: d.client_id },
        },
      },
      policy: this.deps.config.campaigns.frequencyCap ? { frequency_cap: true, cap_action: 'wait' } : undefined,
      not_before: def.scheduled_send_time ?? new Date().toISOString(),
    };
  }

  async status(campaignId: string): Promise<CampaignStatus> {
    const db = this.deps.store.db;
    const c = await db.selectFrom('campaigns').selectAll().where('campaign_id', '=', campaignId).executeTakeFirst();
    if (!c) throw new ToolError('not_found', `No campaign ${campaignId}. Use list_campaigns to find its id.`);
    const def = JSON.parse(c.definition) as CampaignDefinition;
    const outbox = this.deps.outbox;
    // One after the other, counts first: a row only moves forward (queued → failed…), so the problems
    // read after the counts lists every failure they counted. Side by side (separate PostgreSQL
    // connections) a row settling in between was counted failed yet missing from the list.
    const counts = await outbox.countsByStateAndChannel('campaign', campaignId);
    const reasons = await outbox.reasons('campaign', campaignId, ['skipped', 'queued']);
    const problems = await outbox.problems('campaign', campaignId, EXAMPLES);
    const engagement = await engagementBySource(db, 'campaign', campaignId);
    const totals = emptyTotals();
    const perChannel: Record<string, Totals> = {};
    for (const { state, channel, n } of counts) {
      if (!(state in totals)) continue; // staged rows of a confirmation still in progress
      const key = state as OutboxState;
      totals[key] += n;
      totals.total += n;
      const ch = (perChannel[channel] ??= emptyTotals());
      ch[key] += n;
      ch.total += n;
    }
    const skipped_by_reason: Record<string, number> = {};
    const waiting_by_reason: Record<string, number> = {};
    for (const r of reasons) (r.state === 'skipped' ? skipped_by_reason : waiting_by_reason)[r.code] = r.n;
    const open = totals.queued + totals.sending;
    let status: CampaignStatus['status'];
    if (c.cancelled_at) status = 'cancelled';
    else if (open === 0) status = totals.failed + totals.unknown > 0 ? 'completed_with_problems' : 'completed';
    else if (c.scheduled_at && Date.parse(c.scheduled_at) > Date.now() && totals.sent === 0) status = 'scheduled';
    else status = 'sending';
    // Derived, not stored: a status read never writes. Done = when the last row settled.
    const completedAt = open === 0 && !c.cancelled_at ? ((await outbox.lastSettledAt('campaign', campaignId)) ?? c.confirmed_at) : null;
    const settled = totals.total - open;
    return {
      campaign_id: c.campaign_id,
      campaign_name: c.name,
      template_type: c.template_type,
      status,
      channels: def.channels,
      created_by: c.created_by,
      created_at: c.created_at,
      confirmed_at: c.confirmed_at,
      scheduled_send_time: c.scheduled_at,
      cancelled_at: c.cancelled_at,
      completed_at: completedAt,
      totals,
      per_channel: perChannel,
      skipped_by_reason,
      waiting_by_reason,
      progress: { settled, total: totals.total, percent: totals.total ? Math.round((settled / totals.total) * 1000) / 10 : 100 },
      engagement: summarizeEngagement(engagement, { total: totals.sent, per_channel: Object.fromEntries(Object.entries(perChannel).map(([ch, t]) => [ch, t.sent])) }),
      problems: problems.map((r) => ({
        email: r.recipient_email,
        client_id: r.client_id,
        channel: r.channel,
        state: r.state,
        error_code: r.error_code,
        error_message: r.error_message,
      })),
      problems_total: totals.failed + totals.unknown,
    };
  }

  async list(opts: { limit: number; cursor?: string; status?: string }): Promise<{ campaigns: CampaignStatus[]; next_cursor?: string }> {
    let q = this.deps.store.db.selectFrom('campaigns').select(['campaign_id', 'created_at']).orderBy('created_at', 'desc').orderBy('campaign_id', 'desc');
    if (opts.cursor) {
      const [at, id] = decodeCursor(opts.cursor, 'list_campaigns');
      q = q.where((eb) => eb.or([eb('created_at', '<', at), eb.and([eb('created_at', '=', at), eb('campaign_id', '<', id)])]));
    }
    const rows = await q.limit(opts.limit + 1).execute();
    const page = rows.slice(0, opts.limit);
    let campaigns = await Promise.all(page.map((r) => this.status(r.campaign_id)));
    if (opts.status) campaigns = campaigns.filter((c) => c.status === opts.status);
    const last = page[page.length - 1];
    return { campaigns, next_cursor: rows.length > opts.limit && last ? encodeCursor(last.created_at, last.campaign_id) : undefined };
  }

  /** Stops every message not yet sent; reports what already went (and what is mid-flight). */
  async cancel(campaignId: string): Promise<{ cancelled_messages: number; status: CampaignStatus }> {
    const db = this.deps.store.db;
    const c = await db.selectFrom('campaigns').select(['campaign_id', 'cancelled_at']).where('campaign_id', '=', campaignId).executeTakeFirst();
    if (!c) throw new ToolError('not_found', `No campaign ${campaignId}. Use list_campaigns to find its id.`);
    const now = new Date().toISOString();
    const cancelled = await db.transaction().execute(async (trx) => {
      const n = await this.deps.outbox.cancelQueued('campaign', campaignId, Date.now(), trx);
      if (!c.cancelled_at) await trx.updateTable('campaigns').set({ cancelled_at: now }).where('campaign_id', '=', campaignId).execute();
      return n;
    });
    this.deps.log.info({ campaign_id: campaignId, cancelled }, 'campaign cancelled');
    return { cancelled_messages: cancelled, status: await this.status(campaignId) };
  }

  /** Waits until nothing is queued or in flight (or the time is up), reporting progress as it goes. */
  async waitForCompletion(
    campaignId: string,
    timeoutMs: number,
    onProgress: (s: CampaignStatus) => Promise<void>,
    signal?: AbortSignal,
  ): Promise<CampaignStatus> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const s = await this.status(campaignId);
      await onProgress(s);
      const open = s.totals.queued + s.totals.sending;
      const waitingForSchedule = s.status === 'scheduled';
      if (open === 0 || waitingForSchedule || Date.now() >= deadline || signal?.aborted) return s;
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}

function summarize(plan: CampaignPlan) {
  const def = plan.definition;
  return {
    campaign_name: def.campaign_name,
    template_type: def.template_type,
    channels: def.channels,
    schedule: { send_immediately: def.scheduled_send_time === null, scheduled_send_time: def.scheduled_send_time },
    audience: {
      recipients: plan.recipients,
      messages: plan.messages,
      per_channel: plan.per_channel,
      contacts_considered: plan.contacts_considered,
      excluded: {
        total: plan.excluded.total,
        by_reason: plan.excluded.by_reason,
        examples: plan.excluded.examples.map((e) => ({ email: e.email, client_id: e.client_id, reason: e.reason, ...(e.channel ? { channel: e.channel } : {}) })),
      },
      held_back: {
        total: plan.held_back.total,
        examples: plan.held_back.examples.map((h) => ({ email: h.email, client_id: h.client_id, reason: h.reason, detail: h.detail })),
      },
      unknown_client_ids: plan.unknown_client_ids.slice(0, 100),
      unknown_client_ids_total: plan.unknown_client_ids.length,
    },
    samples: plan.samples,
  };
}
