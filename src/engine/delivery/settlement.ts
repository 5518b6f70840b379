import type { Kysely } from 'kysely';
import type { Logger } from '../../log.js';
import { underSavepoint } from '../../store/savepoint.js';
import type { Database } from '../../store/schema.js';
import type { TimelineInput } from '../../store/timeline.js';
import type { TimelineRepository } from '../../store/timeline.js';
import type { DeliveryOutcome } from './dispatcher.js';
import type { OutboxRepository, OutboxRow } from './outbox.js';

/** What settling a row needs from the channels: its timeline entry, and what follows (tracking, linking). */
export interface SettlementPort {
  timelineEntry(row: OutboxRow, outcome: DeliveryOutcome): TimelineInput;
  /** Work after the row is settled (tracking events). Never throws, never blocks. */
  followUp(row: OutboxRow, outcome: DeliveryOutcome): void;
  /**
   * Writes that belong with the rows' final state (an Intercom id learned while sending), made in the
   * same transaction under a savepoint: if they fail they are left out and logged, the rows still settle.
   */
  settledWrites?(trx: Kysely<Database>, settled: ReadonlyArray<{ row: OutboxRow; outcome: DeliveryOutcome }>): Promise<void>;
}

interface Pending {
  row: OutboxRow;
  outcome: DeliveryOutcome;
}

export interface SettlementOptions {
  maxBatch: number;
  delayMs: number;
  /** How long a group that cannot be written is retried (backing off) before its outcome is given up as lost. */
  retryForMs?: number;
}

/**
 * Settlements that ride in a transaction being committed anyway (the next admission's): written inside
 * it, under a savepoint of their own, so a failure of theirs never fails the host's work.
 */
export interface RidingSettlements {
  write(trx: Kysely<Database>): Promise<void>;
  /** The host transaction committed with them in it. */
  committed(): void;
  /** It did not (or their part was rolled back): they wait for a write of their own again. */
  missed(): void;
}

const RETRY_FOR_MS = 30_000;
const FIRST_RETRY_MS = 50;
const LONGEST_RETRY_MS = 2_000;
/** How long settled rows wait for a transaction to ride in before they are written on their own (see below). */
export const SETTLE_DELAY_MS = 100;

/**
 * Settles delivered rows in groups: one transaction writes the final state of every row settled in
 * the last 100 ms (or 200 rows) and their timeline entries. A message costs one short statement
 * instead of a transaction of its own, and the delivery slot is free as soon as the provider has answered.
 *
 * Settlements may also ride in the next admission's transaction (`board`), so most groups cost no
 * commit of their own, and the rows they touch (the campaign's index pages) are written once for both.
 * That is why the wait is 100 ms: at 100 messages a second the pacer lets a group go about every 100 ms
 * (rate-budget.ts), its answers come some 20 ms later, and the next group's admission comes before the
 * wait is over (with 50 ms nearly every group of answers was committed alone). A row sent but not yet
 * recorded is `sending` for that long: after a crash it is `unknown`, never resent.
 *
 * A group that cannot be written (the database failed) is retried, backing off from 50 ms to 2 s, for
 * up to `retryForMs` (30 s); meanwhile its rows stay `sending` under this holder's renewed lease. If it
 * still cannot be written, its rows are given up (`abandoned`): the dispatcher stops renewing their
 * leases, so they become `unknown` when the lease runs out (never resent) — as after a crash before the
 * group committed, which is what they were until the answer was recorded.
 */
export class SettlementWriter {
  private pending: Pending[] = [];
  private timer?: NodeJS.Timeout;
  private chain: Promise<void> = Promise.resolve();
  private closing = false;
  private lost: number[] = [];

  constructor(
    private readonly repo: OutboxRepository,
    private readonly timeline: TimelineRepository,
    private readonly port: SettlementPort,
    private readonly log: Logger,
    private readonly opts: SettlementOptions = { maxBatch: 200, delayMs: SETTLE_DELAY_MS },
  ) {}

  settle(row: OutboxRow, outcome: DeliveryOutcome): void {
    this.pending.push({ row, outcome });
    if (this.pending.length >= this.opts.maxBatch) void this.flush();
    else this.timer ??= setTimeout(() => void this.flush(), this.opts.delayMs);
  }

  /** Writes everything settled so far; resolves when it is committed (or given up, logged). */
  flush(): Promise<void> {
    const batch = this.takePending();
    if (batch.length) this.chain = this.chain.then(() => this.write(batch));
    return this.chain;
  }

  /**
   * Hands what is pending to a transaction about to be committed anyway; undefined when nothing waits
   * (or the writer is stopping: then every group goes through `flush`, which reports what it lost).
   */
  board(): RidingSettlements | undefined {
    if (!this.pending.length || this.closing) return undefined;
    const batch = this.takePending();
    return {
      write: (trx) => this.writeRows(trx, batch, Date.now()),
      committed: () => this.followUps(batch),
      missed: () => {
        this.pending.unshift(...batch);
        if (this.closing || this.pending.length >= this.opts.maxBatch) void this.flush();
        else this.timer ??= setTimeout(() => void this.flush(), this.opts.delayMs);
      },
    };
  }

  /** Everything settled so far, taken out of the queue, and the timer that would have written it stopped. */
  private takePending(): Pending[] {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const batch = this.pending;
    this.pending = [];
    return batch;
  }

  /** Stopping: writes what is pending, retrying only briefly (a stopping process must not wait out the database). */
  close(): Promise<void> {
    this.closing = true;
    return this.flush();
  }

  /** Rows whose outcome could not be recorded since the last call: their leases must not be renewed. */
  takeAbandoned(): number[] {
    const ids = this.lost;
    this.lost = [];
    return ids;
  }

  private async write(batch: Pending[]): Promise<void> {
    const started = Date.now();
    const retryFor = this.opts.retryForMs ?? RETRY_FOR_MS;
    for (let attempt = 1; ; attempt++) {
      try {
        const now = Date.now();
        await this.repo.db.transaction().execute((trx) => this.writeRows(trx, batch, now));
        if (attempt > 1) this.log.warn({ rows: batch.length, attempts: attempt }, 'settled deliveries recorded after the database recovered');
        break;
      } catch (err) {
        const wait = Math.min(LONGEST_RETRY_MS, FIRST_RETRY_MS * 2 ** (attempt - 1));
        if ((this.closing && attempt >= 3) || Date.now() + wait - started > retryFor) {
          // The rows stay `sending` and become `unknown` after their lease (no longer renewed): never resent.
          this.log.error({ err, rows: batch.length, attempts: attempt }, 'recording settled deliveries failed; they will show as in doubt');
          for (const { row } of batch) this.lost.push(row.outbox_id);
          return;
        }
        if (attempt === 1) this.log.warn({ err, rows: batch.length }, 'recording settled deliveries failed; retrying');
        await new Promise((r) => setTimeout(r, wait));
      }
    }
    this.followUps(batch);
  }

  /** The final state of each row, and their timeline entries. */
  private async writeRows(trx: Kysely<Database>, batch: Pending[], now: number): Promise<void> {
    await this.repo.finishMany(
      batch.map(({ row, outcome }) =>
        outcome.state === 'sent'
          ? { row, state: 'sent', provider_message_id: outcome.receipt.provider_message_id }
          : { row, state: outcome.state, error_code: outcome.error.code, error_message: outcome.error.message },
      ),
      now,
      trx,
    );
    await this.timeline.appendMany(trx, batch.map(({ row, outcome }) => this.port.timelineEntry(row, outcome)));
    const extras = this.port.settledWrites;
    if (extras) {
      const r = await underSavepoint(trx, 'settled_extras', () => extras.call(this.port, trx, batch));
      if (!r.ok) this.log.warn({ err: r.err, rows: batch.length }, 'writes that follow settled deliveries failed; the deliveries are recorded without them');
    }
  }

  private followUps(batch: Pending[]): void {
    for (const { row, outcome } of batch) this.port.followUp(row, outcome);
  }
}
