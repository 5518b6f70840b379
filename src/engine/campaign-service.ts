import { randomBytes } from 'node:crypto';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import type { ProviderRuntime } from '../resilience/provider-runtime.js';
import { invalidInput, ToolError, type ProviderName } from '../result.js';
import type { Store } from '../store/index.js';
import { resolveAudience } from './audience.js';
import {
  buildDefinition,
  buildPlan,
  fingerprintString,
  PROVIDER_OF_CHANNEL,
  resolveChannels,
  type CampaignDefinition,
  type CampaignPlan,
} from './campaign-plan.js';
import type { CampaignRequest, Channel } from './campaign-request.js';
import { insertOutboxRows, OutboxRepository } from './outbox.js';
import { OutboxDispatcher, type DeliveryPort } from './outbox-dispatcher.js';

export interface CampaignDeps {
  config: Config;
  log: Logger;
  store: Store;
  runtimes: Record<ProviderName, ProviderRuntime>;
  /** Built from the provider services (channels.ts). */
  port: DeliveryPort;
  /** Overrides for tests. */
  leaseMs?: number;
}

const EXAMPLES = 20;
const STATES = ['queued', 'sending', 'sent', 'failed', 'cancelled', 'unknown'] as const;
type Totals = Record<(typeof STATES)[number], number> & { total: number };

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
  progress: { settled: number; total: number; percent: number };
  problems: Array<{ email: string; client_id: string; channel: string; state: string; error_code: string | null; error_message: string | null }>;
}

function emptyTotals(): Totals {
  return { queued: 0, sending: 0, sent: 0, failed: 0, cancelled: 0, unknown: 0, total: 0 };
}

/**
 * Campaigns: preview → confirm (durable outbox, one transaction) → dispatch, plus status, list and
 * cancel. The dispatcher runs for the life of the server process.
 */
export class CampaignService {
  readonly outbox: OutboxRepository;
  readonly dispatcher: OutboxDispatcher;

  constructor(private readonly deps: CampaignDeps) {
    this.outbox = new OutboxRepository(deps.store.db, deps.store.dialect);
    this.dispatcher = new OutboxDispatcher({
      repo: this.outbox,
      port: deps.port,
      log: deps.log,
      concurrency: deps.config.campaigns.dispatchConcurrency,
      pollMs: deps.config.campaigns.dispatchPollMs,
      leaseMs: deps.leaseMs ?? deps.config.campaigns.leaseMs,
      blockedChannels: () => this.blockedChannels(),
    });
  }

  start(): void {
    this.dispatcher.start();
  }

  async close(): Promise<void> {
    await this.dispatcher.stop();
  }

  /** Rows of a provider whose circuit is open wait in the queue instead of failing. */
  private blockedChannels(): string[] {
    return (Object.keys(PROVIDER_OF_CHANNEL) as Channel[]).filter((ch) => this.deps.runtimes[PROVIDER_OF_CHANNEL[ch]].policy.state === 'open');
  }

  private configured(): Record<ProviderName, boolean> {
    const r = this.deps.runtimes;
    return { intercom: r.intercom.configured, sendgrid: r.sendgrid.configured, mixpanel: r.mixpanel.configured };
  }

  /** Computes the plan from the roster as it is now. Sends nothing. */
  async plan(req: CampaignRequest): Promise<CampaignPlan> {
    const channels = resolveChannels(req, this.configured());
    const definition = buildDefinition(req, this.deps.config, channels);
    const audience = await resolveAudience(this.deps.store.db, {
      client_ids: definition.targeting.client_ids,
      segment: definition.targeting.segment,
      tier: definition.targeting.tier as CampaignRequest['target_tier'],
      contact_roles: definition.targeting.contact_roles,
    });
    return buildPlan(definition, audience);
  }

  /** The first call: a preview and a token bound to exactly this content, audience and schedule. */
  async preview(req: CampaignRequest): Promise<Record<string, unknown>> {
    const plan = await this.plan(req);
    return this.issuePreview(plan);
  }

  private async issuePreview(plan: CampaignPlan): Promise<Record<string, unknown>> {
    const summary = summarize(plan);
    // Unused previews are kept a day past expiry (to explain "expired"), then dropped.
    await this.deps.store.db
      .deleteFrom('campaign_previews')
      .where('used_at', 'is', null)
      .where('expires_at', '<', new Date(Date.now() - 86_400_000).toISOString())
      .execute();
    if (plan.deliveries.length === 0) {
      return { phase: 'preview', ...summary, next_step: 'Nobody in this audience can receive the campaign (see excluded and held_back). Nothing to confirm.' };
    }
    const token = `cst_${randomBytes(24).toString('base64url')}`;
    const now = Date.now();
    const expires = new Date(now + this.deps.config.campaigns.confirmationTtlS * 1000).toISOString();
    await this.deps.store.db
      .insertInto('campaign_previews')
      .values({
        token,
        fingerprint: fingerprintString(plan.fingerprint),
        campaign_name: plan.definition.campaign_name,
        expires_at: expires,
        used_at: null,
        campaign_id: null,
        created_at: new Date(now).toISOString(),
      })
      .execute();
    return {
      phase: 'preview',
      ...summary,
      confirmation_token: token,
      token_expires_at: expires,
      next_step:
        `Nothing has been sent. Show this preview to the user. To send, call send_personalized_email again with exactly the same parameters ` +
        `plus confirmation_token "${token}" before ${expires}.`,
    };
  }

  /** The second call: checks the token against a fresh plan, then writes the campaign and its outbox in one transaction. */
  async confirm(req: CampaignRequest & { confirmation_token: string }): Promise<Record<string, unknown>> {
    const plan = await this.plan(req);
    const db = this.deps.store.db;
    const token = await db.selectFrom('campaign_previews').selectAll().where('token', '=', req.confirmation_token).executeTakeFirst();
    const fp = fingerprintString(plan.fingerprint);
    const refuse = async (why: string) => {
      const fresh = await this.issuePreview(plan);
      return invalidInput(`${why} Nothing was sent. Review the fresh preview in error.details.fresh_preview and confirm with its token.`, {
        field: 'confirmation_token',
        fresh_preview: fresh,
      });
    };
    if (!token) throw await refuse('That confirmation_token is not one this server issued.');
    if (token.used_at && token.campaign_id) {
      if (token.fingerprint === fp) {
        // The same confirmation again (a retried call): report the campaign it created, send nothing more.
        const status = await this.status(token.campaign_id);
        return { phase: 'confirmed', already_confirmed: true, ...summarize(plan), campaign_id: token.campaign_id, queued: status.totals.total, delivery: status, next_step: 'This campaign was already confirmed; nothing new was queued. Use get_campaign_status to follow it.' };
      }
      throw await refuse(`That confirmation_token was already used for campaign ${token.campaign_id}.`);
    }
    if (Date.parse(token.expires_at) <= Date.now()) throw await refuse(`That confirmation_token expired at ${token.expires_at}.`);
    if (token.fingerprint !== fp) {
      const [c, a, s] = token.fingerprint.split(':');
      const changed = [c !== plan.fingerprint.content && 'content', a !== plan.fingerprint.audience && 'audience', s !== plan.fingerprint.schedule && 'schedule'].filter(Boolean);
      throw await refuse(`The campaign changed since the preview (${changed.join(', ')}).`);
    }
    if (plan.deliveries.length === 0) throw await refuse('Nobody in this audience can receive the campaign any more.');

    const campaignId = `cmp_${randomBytes(8).toString('hex')}`;
    const now = new Date().toISOString();
    const def = plan.definition;
    const claimed = await db.transaction().execute(async (trx) => {
      const used = await trx
        .updateTable('campaign_previews')
        .set({ used_at: now, campaign_id: campaignId })
        .where('token', '=', req.confirmation_token)
        .where('used_at', 'is', null)
        .executeTakeFirst();
      if (Number(used.numUpdatedRows) !== 1) return false; // a concurrent confirmation won
      await trx
        .insertInto('campaigns')
        .values({
          campaign_id: campaignId,
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
      await insertOutboxRows(trx, campaignId, plan.deliveries, def.scheduled_send_time ?? now, now);
      return true;
    });
    if (!claimed) return this.confirm(req); // report what the winning confirmation created
    this.deps.log.info({ campaign_id: campaignId, messages: plan.deliveries.length, scheduled: def.scheduled_send_time }, 'campaign confirmed');
    this.dispatcher.wake();
    return {
      phase: 'confirmed',
      ...summarize(plan),
      campaign_id: campaignId,
      queued: plan.deliveries.length,
      next_step: def.scheduled_send_time
        ? `Scheduled: ${plan.deliveries.length} message(s) will go out at ${def.scheduled_send_time}, even across restarts. Use get_campaign_status or cancel_campaign with campaign_id "${campaignId}".`
        : `Sending ${plan.deliveries.length} message(s) now at the pace the providers allow. Use get_campaign_status with campaign_id "${campaignId}" to follow it.`,
    };
  }

  async status(campaignId: string): Promise<CampaignStatus> {
    const db = this.deps.store.db;
    const c = await db.selectFrom('campaigns').selectAll().where('campaign_id', '=', campaignId).executeTakeFirst();
    if (!c) throw new ToolError('not_found', `No campaign ${campaignId}. Use list_campaigns to find its id.`);
    const def = JSON.parse(c.definition) as CampaignDefinition;
    const totals = emptyTotals();
    const perChannel: Record<string, Totals> = {};
    for (const { state, channel, n } of await this.outbox.countsByStateAndChannel(campaignId)) {
      const key = state as keyof Totals;
      totals[key] += n;
      totals.total += n;
      const ch = (perChannel[channel] ??= emptyTotals());
      ch[key] += n;
      ch.total += n;
    }
    const problems = (await this.outbox.problems(campaignId, 50)).map((r) => ({
      email: r.recipient_email,
      client_id: r.client_id,
      channel: r.channel,
      state: r.state,
      error_code: r.error_code,
      error_message: r.error_message,
    }));
    const open = totals.queued + totals.sending;
    let status: CampaignStatus['status'];
    if (c.cancelled_at) status = 'cancelled';
    else if (open === 0) status = totals.failed + totals.unknown > 0 ? 'completed_with_problems' : 'completed';
    else if (c.scheduled_at && Date.parse(c.scheduled_at) > Date.now() && totals.sent === 0) status = 'scheduled';
    else status = 'sending';
    // Derived, not stored: a status read never writes. Done = when the last row settled.
    const completedAt = open === 0 && !c.cancelled_at ? ((await this.outbox.lastSettledAt(campaignId)) ?? c.confirmed_at) : null;
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
      progress: { settled, total: totals.total, percent: totals.total ? Math.round((settled / totals.total) * 1000) / 10 : 100 },
      problems,
    };
  }

  async list(opts: { limit: number; cursor?: string; status?: string }): Promise<{ campaigns: CampaignStatus[]; next_cursor?: string }> {
    let q = this.deps.store.db.selectFrom('campaigns').select(['campaign_id', 'created_at']).orderBy('created_at', 'desc').orderBy('campaign_id', 'desc');
    if (opts.cursor) {
      const [at, id] = decodeCursor(opts.cursor);
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
      const n = await new OutboxRepository(trx, this.deps.store.dialect).cancelQueued(campaignId);
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
  const perChannel: Record<string, number> = {};
  for (const d of plan.deliveries) perChannel[d.channel] = (perChannel[d.channel] ?? 0) + 1;
  const byReason: Record<string, number> = {};
  for (const e of plan.excluded) byReason[e.reason] = (byReason[e.reason] ?? 0) + 1;
  const recipients = new Set(plan.deliveries.map((d) => d.contact_id)).size;
  const firstChannel = plan.definition.channels[0];
  const samples = plan.deliveries
    .filter((d) => d.channel === firstChannel)
    .slice(0, 3)
    .map((d) => ({
      to: d.payload.to_email,
      client_id: d.client_id,
      channel: d.channel,
      subject: d.channel === 'intercom_inapp' ? undefined : d.payload.subject,
      text: d.payload.text,
      html: d.payload.html,
    }));
  const def = plan.definition;
  return {
    campaign_name: def.campaign_name,
    template_type: def.template_type,
    channels: def.channels,
    schedule: { send_immediately: def.scheduled_send_time === null, scheduled_send_time: def.scheduled_send_time },
    audience: {
      recipients,
      messages: plan.deliveries.length,
      per_channel: perChannel,
      contacts_considered: plan.contacts_considered,
      excluded: {
        total: plan.excluded.length,
        by_reason: byReason,
        examples: plan.excluded.slice(0, EXAMPLES).map((e) => ({ email: e.email, client_id: e.client_id, reason: e.reason })),
      },
      held_back: {
        total: plan.held_back.length,
        examples: plan.held_back.slice(0, EXAMPLES).map((h) => ({ email: h.email, client_id: h.client_id, reason: h.reason, detail: h.detail })),
      },
      unknown_client_ids: plan.unknown_client_ids,
    },
    samples,
  };
}

function encodeCursor(at: string, id: string): string {
  return Buffer.from(JSON.stringify([at, id])).toString('base64url');
}

function decodeCursor(cursor: string): [string, string] {
  try {
    const v = JSON.parse(Buffer.from(cursor, 'base64url').toString()) as unknown;
    if (Array.isArray(v) && v.length === 2 && typeof v[0] === 'string' && typeof v[1] === 'string') return [v[0], v[1]];
  } catch {
    // fall through
  }
  throw invalidInput('cursor is not one this server returned. Call list_campaigns without a cursor to start again.', { field: 'cursor' });
}
