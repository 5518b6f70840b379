import { randomUUID } from 'node:crypto';
import type { Logger } from '../log.js';
import { withRequestHook } from '../resilience/request-hooks.js';
import { ToolError } from '../result.js';
import type { RecipientPayload } from './campaign-plan.js';
import { parsePayload, type OutboxRepository, type OutboxRow } from './outbox.js';

export interface DeliveryReceipt {
  provider_message_id?: string;
  /** Intercom's contact id, when the delivery learned it. */
  intercom_contact_id?: string;
}

export type DeliveryOutcome =
  | { state: 'sent'; receipt: DeliveryReceipt }
  | { state: 'failed' | 'unknown'; error: { code: string; message: string } };

/** What the dispatcher needs from the providers; implemented in channels.ts. */
export interface DeliveryPort {
  /**
   * Does the lookups a delivery needs (recipient, sender) and returns the send itself. Only the send
   * runs under the request hook, so a failed lookup never leaves a row in doubt. Throws ToolError.
   */
  prepare(row: OutboxRow, payload: RecipientPayload): Promise<() => Promise<DeliveryReceipt>>;
  /** Follow-ups once a row is settled (timeline, tracking events). Must not throw. */
  settled(row: OutboxRow, outcome: DeliveryOutcome): Promise<void>;
}

export interface DispatcherOptions {
  repo: OutboxRepository;
  port: DeliveryPort;
  log: Logger;
  concurrency: number;
  pollMs: number;
  /** How long a lease lives without renewal; a vanished holder's rows are recovered after this. */
  leaseMs: number;
  /** Channels not to claim now (their provider's circuit is open): their rows wait. */
  blockedChannels: () => string[];
  /** Attempts for a row that was provably not delivered (429, 503, refused connection) before it fails. */
  maxAttempts?: number;
  retryBaseMs?: number;
}

const TRANSIENT = new Set(['circuit_open', 'rate_limited', 'provider_unavailable', 'timeout']);

/**
 * Delivers outbox rows at bounded concurrency. Pacing comes from the provider runtimes (each request
 * waits for the budget the provider reports); a row is marked `sending` only after that wait, right
 * before its request is written, so nothing waiting for budget is ever in doubt.
 */
export class OutboxDispatcher {
  readonly owner = `dispatcher-${randomUUID()}`;
  private active = 0;
  private stopped = true;
  private loop?: Promise<void>;
  private wakeUp?: () => void;
  private lastRenewal = 0;
  private readonly inFlight = new Set<Promise<void>>();
  private readonly maxAttempts: number;
  private readonly retryBaseMs: number;

  constructor(private readonly opts: DispatcherOptions) {
    this.maxAttempts = opts.maxAttempts ?? 5;
    this.retryBaseMs = opts.retryBaseMs ?? 2_000;
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.loop = this.run();
  }

  /** Something became due (a confirmation, a finished delivery): look now rather than at the next poll. */
  wake(): void {
    this.wakeUp?.();
  }

  /** Stops claiming and waits (bounded) for deliveries in flight to settle. */
  async stop(graceMs = 10_000): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.wake();
    await this.loop;
    const settled = Promise.allSettled([...this.inFlight]);
    await Promise.race([settled, new Promise((r) => setTimeout(r, graceMs).unref())]);
  }

  get activeDeliveries(): number {
    return this.active;
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      let sleepMs = this.opts.pollMs;
      try {
        sleepMs = await this.fill();
      } catch (err) {
        this.opts.log.error({ err }, 'outbox dispatch pass failed; retrying at the next poll');
      }
      if (this.stopped) break;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, sleepMs);
        timer.unref();
        this.wakeUp = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wakeUp = undefined;
    }
  }

  /** One pass: keep leases alive, recover abandoned rows, claim as many rows as there are free slots. */
  private async fill(): Promise<number> {
    const { repo, leaseMs } = this.opts;
    const now = Date.now();
    if (now - this.lastRenewal >= leaseMs / 3) {
      this.lastRenewal = now;
      await repo.renewLeases(this.owner, leaseMs, now);
      const { unknown } = await repo.recoverExpired(now);
      for (const row of unknown) {
        this.opts.log.warn({ outbox_id: row.outbox_id, campaign_id: row.campaign_id }, 'delivery in doubt after a stop: marked unknown, not resent');
        await this.opts.port.settled(row, { state: 'unknown', error: { code: 'timeout', message: row.error_message ?? 'in doubt' } });
      }
    }
    const free = this.opts.concurrency - this.active;
    if (free > 0) {
      const rows = await repo.claim(this.owner, free, this.opts.blockedChannels(), leaseMs, now);
      for (const row of rows) this.launch(row);
    }
    if (this.active > 0) return this.opts.pollMs;
    const next = await repo.nextDueAt();
    return next === undefined ? this.opts.pollMs : Math.max(10, Math.min(this.opts.pollMs, next - Date.now()));
  }

  private launch(row: OutboxRow): void {
    this.active += 1;
    const p = this.deliver(row)
      .catch((err) => this.opts.log.error({ err, outbox_id: row.outbox_id }, 'settling an outbox row failed'))
      .finally(() => {
        this.active -= 1;
        this.inFlight.delete(p);
        this.wake();
      });
    this.inFlight.add(p);
  }

  private async deliver(row: OutboxRow): Promise<void> {
    const { repo, port, leaseMs, log } = this.opts;
    let marked = false;
    let withdrawn = false;
    try {
      const send = await port.prepare(row, parsePayload(row));
      const receipt = await withRequestHook(async () => {
        if (marked) return; // a safe retry of the same send
        if (!(await repo.markSending(row, this.owner, leaseMs))) {
          withdrawn = true;
          throw new Error('outbox row withdrawn (cancelled or taken) before sending');
        }
        marked = true;
      }, send);
      if (!marked && !(await repo.markSending(row, this.owner, leaseMs))) return;
      await repo.finish(row, 'sent', { provider_message_id: receipt.provider_message_id });
      await port.settled(row, { state: 'sent', receipt });
    } catch (e) {
      if (withdrawn) return;
      const err =
        e instanceof ToolError ? e : new ToolError('provider_error', `Delivery failed unexpectedly: ${e instanceof Error ? e.message : String(e)}`);
      const error = { code: err.code, message: err.message };
      if (marked && err.outcomeUnknown) {
        await repo.finish(row, 'unknown', { error_code: error.code, error_message: error.message });
        await port.settled(row, { state: 'unknown', error });
        return;
      }
      const attempts = row.attempts + (marked ? 1 : 0);
      // Not delivered, provably: wait and try again (a waiting circuit or budget costs no attempt).
      if (TRANSIENT.has(err.code) && !err.outcomeUnknown && attempts < this.maxAttempts) {
        const wait = err.retryAfterMs ?? this.retryBaseMs * 2 ** Math.max(0, attempts - 1);
        log.info({ outbox_id: row.outbox_id, code: err.code, wait_ms: wait }, 'delivery postponed');
        await repo.requeue(row, Date.now() + wait, error);
        return;
      }
      if (!marked && err.outcomeUnknown) {
        // The request never left (the hook runs before writing): nothing was sent, so requeue is safe.
        await repo.requeue(row, Date.now() + this.retryBaseMs, error);
        return;
      }
      await repo.finish(row, 'failed', { error_code: error.code, error_message: error.message });
      await port.settled(row, { state: 'failed', error });
    }
  }
}
