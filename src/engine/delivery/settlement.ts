import type { Logger } from '../../log.js';
import type { TimelineInput } from '../../store/timeline.js';
import type { TimelineRepository } from '../../store/timeline.js';
import type { DeliveryOutcome } from './dispatcher.js';
import type { OutboxRepository, OutboxRow } from './outbox.js';

/** What settling a row needs from the channels: its timeline entry, and what follows (tracking, linking). */
export interface SettlementPort {
  timelineEntry(row: OutboxRow, outcome: DeliveryOutcome): TimelineInput;
  /** Work after the row is settled (tracking events, remembering an Intercom id). Never throws, never blocks. */
  followUp(row: OutboxRow, outcome: DeliveryOutcome): void;
}

interface Pending {
  row: OutboxRow;
  outcome: DeliveryOutcome;
}

/**
 * Settles delivered rows in groups: one transaction writes the final state of every row settled in
 * the last few milliseconds and their timeline entries. A message costs one short statement instead
 * of a transaction of its own, and the delivery slot is free as soon as the provider has answered.
 * A crash before the group commits leaves its rows `sending`: they become `unknown` (never resent),
 * which is what they were until the answer was recorded.
 */
export class SettlementWriter {
  private pending: Pending[] = [];
  private timer?: NodeJS.Timeout;
  private chain: Promise<void> = Promise.resolve();

  constructor(
    private readonly repo: OutboxRepository,
    private readonly timeline: TimelineRepository,
    private readonly port: SettlementPort,
    private readonly log: Logger,
    private readonly opts: { maxBatch: number; delayMs: number } = { maxBatch: 200, delayMs: 5 },
  ) {}

  settle(row: OutboxRow, outcome: DeliveryOutcome): void {
    this.pending.push({ row, outcome });
    if (this.pending.length >= this.opts.maxBatch) void this.flush();
    else this.timer ??= setTimeout(() => void this.flush(), this.opts.delayMs);
  }

  /** Writes everything settled so far; resolves when it is committed (or given up, logged). */
  flush(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const batch = this.pending;
    this.pending = [];
    if (batch.length) this.chain = this.chain.then(() => this.write(batch));
    return this.chain;
  }

  private async write(batch: Pending[]): Promise<void> {
    const now = Date.now();
    for (let attempt = 1; ; attempt++) {
      try {
        await this.repo.db.transaction().execute(async (trx) => {
          for (const { row, outcome } of batch) {
            await this.repo.finish(
              row,
              outcome.state,
              outcome.state === 'sent' ? { provider_message_id: outcome.receipt.provider_message_id } : { error_code: outcome.error.code, error_message: outcome.error.message },
              now,
              trx,
            );
          }
          await this.timeline.appendMany(trx, batch.map(({ row, outcome }) => this.port.timelineEntry(row, outcome)));
        });
        break;
      } catch (err) {
        if (attempt >= 3) {
          // The rows stay `sending` and become `unknown` after their lease: never resent.
          this.log.error({ err, rows: batch.length }, 'recording settled deliveries failed; they will show as in doubt');
          return;
        }
        await new Promise((r) => setTimeout(r, 50 * attempt));
      }
    }
    for (const { row, outcome } of batch) this.port.followUp(row, outcome);
  }
}
