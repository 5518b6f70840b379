import { randomUUID } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { Logger } from '../../log.js';
import type { Store } from '../../store/index.js';
import type { Database } from '../../store/schema.js';
import { chunks, lookup, planEffects, type Plan } from './effects.js';
import { interpret } from './interpret.js';
import type { Endpoint } from './parse.js';
import { LeaseLost, type InboxRepository, type InboxRow } from './repository.js';

/**
 * Turns stored inbox events into their effects — customer events, timeline entries, consent changes,
 * per-message counts — a batch at a time, in one transaction per batch that also settles the batch's
 * inbox rows. Rows are leased (several processes may share a database; a stopped one's rows are taken
 * over when the lease runs out), and a batch whose lease was lost rolls back whole, so an event's
 * effects apply exactly once. A failing batch is retried event by event, so one bad event never holds
 * up the others; a failing event is retried with backoff, then kept as `failed`.
 */

export interface InboxProcessorOptions {
  repo: InboxRepository;
  store: Store;
  log: Logger;
  pollMs: number;
  leaseMs?: number;
  batchSize?: number;
  /** Batches in flight at once (PostgreSQL: one computes while another's statements run; SQLite has one connection). */
  concurrency?: number;
  maxAttempts?: number;
  retryBaseMs?: number;
  retryMaxMs?: number;
  retentionDays: number;
  /** Told each event's final state and how long after its receipt it was settled (metrics). */
  observer?: { webhookSettled(provider: string, state: string, lagSeconds: number): void };
}

const HOUR = 3_600_000;

export class InboxProcessor {
  readonly owner = `inbox-${randomUUID()}`;
  private stopped = true;
  private loops: Array<Promise<void>> = [];
  private readonly sleepers = new Set<() => void>();
  private woken = false;
  private lastPrune = 0;
  private readonly leaseMs: number;
  private readonly batchSize: number;
  private readonly maxAttempts: number;
  private readonly retryBaseMs: number;
  private readonly retryMaxMs: number;

  constructor(private readonly opts: InboxProcessorOptions) {
    this.leaseMs = opts.leaseMs ?? 60_000;
    this.batchSize = opts.batchSize ?? 1000;
    this.maxAttempts = opts.maxAttempts ?? 10;
    this.retryBaseMs = opts.retryBaseMs ?? 1_000;
    this.retryMaxMs = opts.retryMaxMs ?? HOUR;
  }

  get running(): boolean {
    return !this.stopped;
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.loops = Array.from({ length: Math.max(1, this.opts.concurrency ?? 1) }, () => this.run());
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.wake();
    await Promise.all(this.loops);
  }

  /** New events were stored: look now rather than at the next poll. */
  wake(): void {
    this.woken = true;
    for (const wake of this.sleepers) wake();
  }

  /** Processes everything due now (tests, benchmarks); returns how many events were handled. */
  async drain(): Promise<number> {
    let total = 0;
    for (;;) {
      const n = await this.pass();
      total += n;
      if (n === 0) return total;
    }
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      let sleepMs = this.opts.pollMs;
      try {
        this.woken = false;
        const n = await this.pass();
        if (n >= this.batchSize) sleepMs = 0; // more is waiting
        else if (n === 0) {
          const next = await this.opts.repo.nextDueAt();
          if (next !== undefined) sleepMs = Math.max(10, Math.min(sleepMs, next - Date.now()));
        }
        await this.pruneNow();
      } catch (err) {
        this.opts.log.error({ err }, 'inbox processing pass failed; retrying at the next poll');
      }
      if (this.stopped) break;
      if (this.woken || sleepMs === 0) {
        await new Promise((r) => setImmediate(r));
        continue;
      }
      await new Promise<void>((resolve) => {
        const wake = () => {
          clearTimeout(timer);
          this.sleepers.delete(wake);
          resolve();
        };
        const timer = setTimeout(wake, sleepMs);
        timer.unref();
        this.sleepers.add(wake);
      });
    }
  }

  private async pruneNow(): Promise<void> {
    const now = Date.now();
    if (now - this.lastPrune < HOUR) return;
    this.lastPrune = now;
    const n = await this.opts.repo.prune(now - this.opts.retentionDays * 86_400_000);
    if (n) this.opts.log.info({ deleted: n, retention_days: this.opts.retentionDays }, 'pruned settled inbox events');
  }

  /** One claim and its processing; returns how many events it claimed. */
  private async pass(): Promise<number> {
    const rows = await this.opts.repo.claim(this.owner, this.batchSize, this.leaseMs);
    if (rows.length) await this.processBatch(rows);
    return rows.length;
  }

  private async processBatch(rows: InboxRow[]): Promise<void> {
    try {
      await this.apply(rows);
    } catch (err) {
      if (err instanceof LeaseLost) {
        this.opts.log.warn({ events: rows.length }, 'inbox batch rolled back: its lease was taken over by another processor');
        return;
      }
      if (rows.length > 1) {
        this.opts.log.warn({ err, events: rows.length }, 'inbox batch failed; processing its events one by one');
        for (const row of rows) await this.processBatch([row]);
        return;
      }
      await this.failed(rows[0]!, err);
    }
  }

  private async failed(row: InboxRow, err: unknown): Promise<void> {
    const attempts = row.attempts + 1;
    const message = err instanceof Error ? err.message : String(err);
    const retryAt = attempts < this.maxAttempts ? Date.now() + Math.min(this.retryMaxMs, this.retryBaseMs * 2 ** (attempts - 1)) : undefined;
    this.opts.log.error({ err, inbox_id: row.inbox_id, event_type: row.event_type, attempts, gave_up: retryAt === undefined }, 'processing an inbox event failed');
    await this.opts.repo
      .retryLater(row, this.owner, message, retryAt)
      .then(() => retryAt === undefined && this.reportSettled(row, 'failed', Date.now()))
      .catch((e: unknown) => this.opts.log.error({ err: e, inbox_id: row.inbox_id }, 'recording an inbox failure failed; the lease will expire and it is retried'));
  }

  private async apply(rows: InboxRow[]): Promise<void> {
    const { store, repo } = this.opts;
    const items = rows.map((row) => ({ row, meaning: interpret(row.provider as Endpoint, row.event_type, row.payload) }));
    const lookups = await lookup(store.db, items.filter((i) => !i.meaning.ignored && !i.meaning.noAction).map((i) => i.meaning));
    const plan = planEffects(items, lookups);
    await store.db.transaction().execute(async (trx) => {
      for (const c of plan.consent) {
        const base = { at: c.at, source: c.source, data: c.data };
        if (c.change.kind === 'suppress') await store.roster.suppressEmail(trx, c.emails, { ...base, source: c.change.source, scope: c.change.scope, status: c.change.status, reason: c.change.reason });
        else await store.roster.resubscribeEmail(trx, c.emails, { ...base, source: c.change.source, scope: c.change.scope, statuses: c.change.statuses });
      }
      await store.events.record(trx, plan.events);
      await store.timeline.appendMany(trx, plan.timeline);
      for (const part of chunks(plan.engagement)) {
        await trx.insertInto('message_events').values(part).onConflict((oc) => oc.columns(['outbox_key', 'kind']).doNothing()).execute();
      }
      await this.link(trx, plan.links);
      await repo.settle(trx, this.owner, [...plan.outcomes.values()]);
    });
    if (this.opts.observer) {
      const now = Date.now();
      const byId = new Map(rows.map((r) => [r.inbox_id, r]));
      for (const o of plan.outcomes.values()) for (const id of o.ids) this.reportSettled(byId.get(id), o.state, now);
    }
  }

  private reportSettled(row: InboxRow | undefined, state: string, now: number): void {
    if (row) this.opts.observer?.webhookSettled(row.provider, state, (now - Date.parse(row.received_at)) / 1000);
  }

  /** Remembers Intercom's id on roster contacts an Intercom event named by email or user id. */
  private async link(trx: Kysely<Database>, links: Plan['links']): Promise<void> {
    for (const l of links) {
      await trx
        .updateTable('contacts')
        .set({ intercom_contact_id: l.intercom_contact_id, ...(l.role ? { intercom_role: l.role } : {}), updated_at: new Date().toISOString() })
        .where('contact_id', '=', l.contact_id)
        .where('intercom_contact_id', 'is', null)
        .execute();
    }
  }
}
