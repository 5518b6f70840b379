import { randomUUID } from 'node:crypto';
import type { Logger } from '../../log.js';
import { withRequestHook } from '../../resilience/request-hooks.js';
import { retryLater, ToolError } from '../../result.js';
import { WorkLoop } from '../work-loop.js';
import type { Admission, SendAdmission } from './admission.js';
import type { MessageContent } from './message.js';
import { parseContent, type OutboxRepository, type OutboxRow } from './outbox.js';

export interface DeliveryReceipt {
  provider_message_id?: string;
  /** Intercom's contact, when the delivery learned it. */
  intercom_contact?: { id: string; role: 'user' | 'lead' };
}

export type DeliveryOutcome =
  | { state: 'sent'; receipt: DeliveryReceipt }
  | { state: 'failed' | 'unknown' | 'skipped'; error: { code: string; message: string } };

/** What the dispatcher needs from the providers; implemented in channels.ts. */
export interface DeliveryPort {
  /**
   * Does the lookups a delivery needs (recipient, sender) and returns the send itself. Only the send
   * runs under the request hook, so a failed lookup never leaves a row in doubt. Throws ToolError.
   */
  prepare(row: OutboxRow, content: MessageContent): Promise<() => Promise<DeliveryReceipt>>;
  /** Follow-ups once a row is settled (timeline, tracking events). Must not throw. */
  settled(row: OutboxRow, outcome: DeliveryOutcome): Promise<void>;
}

/** Channels whose provider's circuit is open, and when the first of them allows a trial request. */
export interface ChannelGate {
  blocked: string[];
  /** Milliseconds until a blocked channel's circuit lets a trial through (wake then, or nothing would try). */
  reopensInMs?: number;
}

export interface DispatcherOptions {
  repo: OutboxRepository;
  admission: SendAdmission;
  port: DeliveryPort;
  log: Logger;
  concurrency: number;
  pollMs: number;
  /** How long a lease lives without renewal; a vanished holder's rows are recovered after this. */
  leaseMs: number;
  channelGate: () => ChannelGate;
  /** Attempts for a row that was provably not delivered (429, 503, refused connection) before it fails. */
  maxAttempts?: number;
  retryBaseMs?: number;
  /** Longest retry wait for a refused request; a longer Retry-After is honoured up to this. */
  retryMaxMs?: number;
}

class NotAdmitted extends Error {
  constructor(readonly decision: Exclude<Admission, { kind: 'send' }>) {
    super('not admitted');
  }
}

/**
 * Delivers outbox rows at bounded concurrency. Pacing comes from the provider runtimes (each request
 * waits for the budget the provider reports); a row is marked `sending` only after that wait, right
 * before its request is written, so nothing waiting for budget is ever in doubt.
 */
export class OutboxDispatcher {
  readonly owner = `dispatcher-${randomUUID()}`;
  private readonly loop: WorkLoop;
  private lastRenewal = 0;
  private readonly maxAttempts: number;
  private readonly retryBaseMs: number;
  private readonly retryMaxMs: number;

  constructor(private readonly opts: DispatcherOptions) {
    this.maxAttempts = opts.maxAttempts ?? 5;
    this.retryBaseMs = opts.retryBaseMs ?? 2_000;
    this.retryMaxMs = opts.retryMaxMs ?? 60_000;
    this.loop = new WorkLoop({
      pass: () => this.fill(),
      retryMs: () => opts.pollMs,
      onPassError: (err) => opts.log.error({ err }, 'outbox dispatch pass failed; retrying at the next poll'),
    });
  }

  start(): void {
    this.loop.start();
  }

  get running(): boolean {
    return this.loop.running;
  }

  /** Something became due (a confirmation, a finished delivery): look now rather than at the next poll. */
  wake(): void {
    this.loop.wake();
  }

  /** Stops claiming and waits (bounded) for deliveries in flight to settle. */
  async stop(graceMs = 10_000): Promise<void> {
    await this.loop.stop(graceMs);
  }

  get activeDeliveries(): number {
    return this.loop.active;
  }

  /** One pass: keep leases alive, recover abandoned rows, claim as many rows as there are free slots. Returns how long to sleep. */
  private async fill(): Promise<number> {
    const { repo, leaseMs } = this.opts;
    const now = Date.now();
    if (now - this.lastRenewal >= leaseMs / 3) {
      this.lastRenewal = now;
      await repo.renewLeases(this.owner, leaseMs, now);
      const { unknown } = await repo.recoverExpired(now);
      for (const row of unknown) {
        this.opts.log.warn({ outbox_id: row.outbox_id, source: row.source_id }, 'delivery in doubt after a stop: marked unknown, not resent');
        await this.opts.port.settled(row, { state: 'unknown', error: { code: 'timeout', message: row.error_message ?? 'in doubt' } });
      }
    }
    const gate = this.opts.channelGate();
    const free = this.opts.concurrency - this.loop.active;
    if (free > 0) {
      const rows = await repo.claim(this.owner, free, gate.blocked, leaseMs, now);
      for (const row of rows) this.launch(row);
    }
    let sleep = this.opts.pollMs;
    if (gate.reopensInMs !== undefined) sleep = Math.min(sleep, gate.reopensInMs + 1);
    if (this.loop.active === 0) {
      const next = await repo.nextClaimableAt();
      if (next !== undefined) sleep = Math.min(sleep, next - Date.now());
    }
    // Renewals must keep pace with the lease even while nothing else happens.
    return Math.max(10, Math.min(sleep, leaseMs / 3));
  }

  private launch(row: OutboxRow): void {
    this.loop.launch(() => this.deliver(row).catch((err) => this.opts.log.error({ err, outbox_id: row.outbox_id }, 'settling an outbox row failed')));
  }

  private async deliver(row: OutboxRow): Promise<void> {
    const { repo, port, admission, leaseMs, log } = this.opts;
    let placeDay: string | undefined;
    // Set by the hook when the row may not be sent after all: provider code wraps whatever the hook throws.
    let refused: Exclude<Admission, { kind: 'send' }> | undefined;
    try {
      // Cheap checks first: a row outside its window or for an unsubscribed contact costs no provider lookup.
      const pre = await admission.check(row);
      if (pre.kind !== 'send') throw new NotAdmitted(pre);
      const send = await port.prepare(row, parseContent(row));
      const receipt = await withRequestHook(async () => {
        if (placeDay !== undefined) throw new ToolError('provider_error', 'internal: a delivery attempted a second request');
        const decision = await admission.admit(row, this.owner, leaseMs);
        if (decision.kind !== 'send') {
          refused = decision;
          throw new NotAdmitted(decision);
        }
        placeDay = decision.day;
      }, send);
      if (placeDay === undefined) throw new ToolError('provider_error', 'internal: the delivery sent no request');
      await repo.finish(row, 'sent', { provider_message_id: receipt.provider_message_id });
      await port.settled(row, { state: 'sent', receipt });
    } catch (e) {
      const decision = refused ?? (e instanceof NotAdmitted ? e.decision : undefined);
      if (decision) return this.notAdmitted(row, decision);
      const err = e instanceof ToolError ? e : new ToolError('provider_error', `Delivery failed unexpectedly: ${e instanceof Error ? e.message : String(e)}`);
      const error = { code: err.code, message: err.message };
      const marked = placeDay !== undefined;
      if (marked && err.outcomeUnknown) {
        await repo.finish(row, 'unknown', { error_code: error.code, error_message: error.message });
        await port.settled(row, { state: 'unknown', error });
        return;
      }
      // From here on nothing went out: the daily place is given back.
      if (marked) await admission.giveBack(placeDay!);
      const attempts = row.attempts + (marked ? 1 : 0);
      if (retryLater(err) && attempts < this.maxAttempts) {
        const wait = Math.min(this.retryMaxMs, err.retryAfterMs ?? this.retryBaseMs * 2 ** Math.max(0, attempts - 1));
        log.info({ outbox_id: row.outbox_id, code: err.code, wait_ms: Math.round(wait) }, 'delivery postponed');
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

  private async notAdmitted(row: OutboxRow, d: Exclude<Admission, { kind: 'send' }>): Promise<void> {
    const { repo, port, log } = this.opts;
    if (d.kind === 'withdrawn') return;
    if (d.kind === 'defer') {
      log.debug({ outbox_id: row.outbox_id, code: d.code, until: new Date(d.until).toISOString() }, 'delivery deferred');
      await repo.requeue(row, d.until, { code: d.code, message: d.message });
      return;
    }
    log.info({ outbox_id: row.outbox_id, code: d.code }, 'delivery skipped');
    await repo.finish(row, 'skipped', { error_code: d.code, error_message: d.message });
    await port.settled(row, { state: 'skipped', error: { code: d.code, message: d.message } });
  }
}
