import type { Kysely } from 'kysely';
import type { RetentionConfig } from '../config.js';
import type { Logger } from '../log.js';
import type { Database } from '../store/schema.js';
import { STAGED } from './delivery/outbox.js';
import { WorkLoop } from './work-loop.js';

/**
 * Deletes what is old, kind by kind, a batch (RetentionConfig.batch rows) per statement, in a
 * background WorkLoop that yields between passes, so a backlog of years never holds the database
 * for long (SQLite has one connection) and other work runs between batches. Never deleted while
 * exactly-once still needs it:
 * - outbox rows: only finished ones (sent, failed, cancelled, unknown, skipped), and only when their
 *   source is finished too (a campaign with no row queued, staged or sending; an enrolment no longer
 *   active), so no producer can write the same idempotency key again; a campaign whose last row is
 *   gone is deleted with it (its engagement counts, message_events, go with its rows);
 * - customer events: only once both when they happened and when they were recorded are past the
 *   horizon, so a `dedup_key` is remembered at least that long after it was recorded;
 * - confirmation tokens: only used or expired ones;
 * - idempotency records (their own window), audit entries and settled inbox events are pruned by
 *   their owners (IdempotencyStore, AuditLog, InboxProcessor), which this loop calls for the first two.
 */

export const RETENTION_KINDS = ['outbox', 'timeline', 'customer_events', 'confirmation_tokens', 'audit', 'idempotency'] as const;
export type RetentionKind = (typeof RETENTION_KINDS)[number];

const DAY = 86_400_000;
const FINISHED = ['sent', 'failed', 'cancelled', 'unknown', 'skipped'];
const LIVE = ['queued', 'sending', STAGED];
/** The pause between passes while a backlog is being worked off: other work gets the database. */
const YIELD_MS = 50;

export interface RetentionDeps {
  db: Kysely<Database>;
  config: RetentionConfig;
  log: Logger;
  /** The other owners' pruning, each deleting at most `limit` rows, answering how many it deleted. */
  prune: { audit: (now: number, limit: number) => Promise<number>; idempotency: (now: number, limit: number) => Promise<number> };
  /** The clock (tests age rows by moving it). */
  now?: () => number;
}

export class Retention {
  private readonly loop: WorkLoop;
  private readonly now: () => number;
  /** Where the outbox sweep goes on: rows passed over (their source still live) are not looked at again this sweep. */
  private outboxCursor?: { updated_at: string; outbox_id: number };
  /** Rows deleted since start, per kind. */
  readonly deleted: Record<RetentionKind, number> = { outbox: 0, timeline: 0, customer_events: 0, confirmation_tokens: 0, audit: 0, idempotency: 0 };

  constructor(private readonly deps: RetentionDeps) {
    this.now = deps.now ?? Date.now;
    this.loop = new WorkLoop({
      pass: async () => ((await this.pass()).more ? YIELD_MS : deps.config.intervalMs),
      retryMs: () => Math.min(60_000, deps.config.intervalMs),
      onPassError: (err) => deps.log.warn({ err }, 'retention pass failed; retrying later'),
    });
  }

  start(): void {
    this.loop.start();
  }

  stop(): Promise<void> {
    return this.loop.stop();
  }

  /** One batch of each kind; `more`: some kind filled its batch (the loop comes back soon). */
  async pass(): Promise<{ deleted: Record<RetentionKind, number>; more: boolean }> {
    const now = this.now();
    const limit = this.deps.config.batch;
    const deleted: Record<RetentionKind, number> = {
      outbox: await this.outbox(now, limit),
      timeline: await this.timeline(now, limit),
      customer_events: await this.customerEvents(now, limit),
      confirmation_tokens: await this.tokens(now, limit),
      audit: await this.deps.prune.audit(now, limit),
      idempotency: await this.deps.prune.idempotency(now, limit),
    };
    let more = false;
    for (const k of RETENTION_KINDS) {
      this.deleted[k] += deleted[k];
      if (deleted[k] >= limit) more = true;
    }
    if (this.outboxCursor) more = true;
    if (RETENTION_KINDS.some((k) => deleted[k] > 0)) this.deps.log.info({ deleted }, 'retention: deleted old records');
    return { deleted, more };
  }

  /** Works off everything due now (tests). */
  async drain(): Promise<Record<RetentionKind, number>> {
    const total: Record<RetentionKind, number> = { outbox: 0, timeline: 0, customer_events: 0, confirmation_tokens: 0, audit: 0, idempotency: 0 };
    for (;;) {
      const { deleted, more } = await this.pass();
      for (const k of RETENTION_KINDS) total[k] += deleted[k];
      if (!more) return total;
    }
  }

  private cutoff(now: number, days: number): string {
    return new Date(now - days * DAY).toISOString();
  }

  private async timeline(now: number, limit: number): Promise<number> {
    const { db } = this.deps;
    const before = this.cutoff(now, this.deps.config.timelineDays);
    const ids = db.selectFrom('timeline').select('entry_id').where('occurred_at', '<', before).orderBy('occurred_at').limit(limit);
    const r = await db.deleteFrom('timeline').where('entry_id', 'in', ids).executeTakeFirst();
    return Number(r.numDeletedRows);
  }

  private async customerEvents(now: number, limit: number): Promise<number> {
    const { db } = this.deps;
    const before = this.cutoff(now, this.deps.config.customerEventsDays);
    const ids = db
      .selectFrom('customer_events')
      .select('event_id')
      .where('occurred_at', '<', before)
      .where('recorded_at', '<', before)
      .orderBy('occurred_at')
      .limit(limit);
    const r = await db.deleteFrom('customer_events').where('event_id', 'in', ids).executeTakeFirst();
    return Number(r.numDeletedRows);
  }

  private async tokens(now: number, limit: number): Promise<number> {
    const { db } = this.deps;
    const before = this.cutoff(now, this.deps.config.confirmationDays);
    const ids = db
      .selectFrom('confirmation_tokens')
      .select('token')
      .where((eb) => eb.or([eb('expires_at', '<', before), eb.and([eb('used_at', 'is not', null), eb('used_at', '<', before)])]))
      .limit(limit);
    const r = await db.deleteFrom('confirmation_tokens').where('token', 'in', ids).executeTakeFirst();
    return Number(r.numDeletedRows);
  }

  /** One batch of old finished rows, oldest first; those whose source is still live are passed over. */
  private async outbox(now: number, limit: number): Promise<number> {
    const { db } = this.deps;
    const before = this.cutoff(now, this.deps.config.outboxDays);
    let q = db
      .selectFrom('outbox')
      .select(['outbox_id', 'source_kind', 'source_id', 'source_ref', 'idempotency_key', 'updated_at'])
      .where('updated_at', '<', before)
      .where('state', 'in', FINISHED);
    const c = this.outboxCursor;
    if (c) q = q.where((eb) => eb.or([eb('updated_at', '>', c.updated_at), eb.and([eb('updated_at', '=', c.updated_at), eb('outbox_id', '>', c.outbox_id)])]));
    const rows = (await q.orderBy('updated_at').orderBy('outbox_id').limit(limit).execute()).map((r) => ({ ...r, outbox_id: Number(r.outbox_id) }));
    const last = rows.at(-1);
    this.outboxCursor = rows.length >= limit && last ? { updated_at: last.updated_at, outbox_id: last.outbox_id } : undefined;
    if (!rows.length) return 0;

    const campaigns = [...new Set(rows.filter((r) => r.source_kind === 'campaign').map((r) => r.source_id))];
    const enrolments = [...new Set(rows.filter((r) => r.source_kind === 'automation').map((r) => enrolmentOf(r.source_ref)).filter((e): e is string => !!e))];
    const liveCampaigns = new Set(
      campaigns.length
        ? (await db.selectFrom('outbox').select('source_id').distinct().where('source_kind', '=', 'campaign').where('source_id', 'in', campaigns).where('state', 'in', LIVE).execute()).map((r) => r.source_id)
        : [],
    );
    const liveEnrolments = new Set(
      enrolments.length
        ? (await db.selectFrom('workflow_enrollments').select('enrollment_id').where('enrollment_id', 'in', enrolments).where('state', '=', 'active').execute()).map((r) => r.enrollment_id)
        : [],
    );
    const done = rows.filter((r) => {
      if (r.source_kind === 'campaign') return !liveCampaigns.has(r.source_id);
      if (r.source_kind === 'automation') {
        const e = enrolmentOf(r.source_ref);
        return !!e && !liveEnrolments.has(e);
      }
      return false; // a producer this code does not know: kept
    });
    if (!done.length) return 0;
    const deleted = await db.transaction().execute(async (trx) => {
      await trx.deleteFrom('message_events').where('outbox_key', 'in', done.map((r) => r.idempotency_key)).execute();
      const r = await trx.deleteFrom('outbox').where('outbox_id', 'in', done.map((r) => r.outbox_id)).executeTakeFirst();
      const emptied = [...new Set(done.filter((r) => r.source_kind === 'campaign').map((r) => r.source_id))];
      if (emptied.length) {
        await trx
          .deleteFrom('campaigns')
          .where('campaign_id', 'in', emptied)
          .where('created_at', '<', before)
          .where(({ not, exists, selectFrom }) => not(exists(selectFrom('outbox').select('outbox_id').where('source_kind', '=', 'campaign').whereRef('source_id', '=', 'campaigns.campaign_id'))))
          .execute();
      }
      return Number(r.numDeletedRows);
    });
    return deleted;
  }
}

/** An automation row's source_ref is `<enrollment_id>:<step index>`. */
function enrolmentOf(ref: string | null): string | undefined {
  if (!ref) return undefined;
  const i = ref.lastIndexOf(':');
  return i > 0 ? ref.slice(0, i) : undefined;
}
