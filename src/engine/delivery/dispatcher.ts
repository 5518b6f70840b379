import { randomUUID } from 'node:crypto';
import type { Logger } from '../../log.js';
import type { RequestHook } from '../../resilience/request-hooks.js';
import { retryLater, ToolError } from '../../result.js';
import { WorkLoop } from '../work-loop.js';
import type { Admission, SendAdmission } from './admission.js';
import type { MessageContent } from './message.js';
import { parseContent, type OutboxRepository, type OutboxRow } from './outbox.js';
import type { SettlementWriter } from './settlement.js';

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
   * Does the lookups a delivery needs (recipient, sender) and returns the send itself. The send hands
   * `beforeSend` to its one provider request (request-hooks.ts), so a failed lookup never leaves a row
   * in doubt. Throws ToolError.
   */
  prepare(row: OutboxRow, content: MessageContent): Promise<(beforeSend: RequestHook) => Promise<DeliveryReceipt>>;
  /** Whether this row needs a lookup before its send (then the cheap checks run first, to spare it). */
  needsLookup(row: OutboxRow): boolean;
  /** Rows with the same key may go out in one request (prepareBatch); undefined: alone. */
  batchKey(row: OutboxRow): string | undefined;
  prepareBatch(rows: OutboxRow[]): Promise<(beforeSend: RequestHook) => Promise<DeliveryReceipt>>;
  /** Rows just claimed: lookups they will need may start now, together (Intercom contacts a page at a time). */
  prefetch?(rows: OutboxRow[]): void;
}

/** Most messages in one provider request (SendGrid's personalizations). */
export const MAX_BATCH = 1000;

/** Channels whose provider's circuit is open, and when the first of them allows a trial request. */
export interface ChannelGate {
  blocked: string[];
  /** Milliseconds until a blocked channel's circuit lets a trial through (wake then, or nothing would try). */
  reopensInMs?: number;
  /** Some provider is making deliveries wait for its rate budget: more in flight would not go faster. */
  paced?: boolean;
}

export interface DispatcherOptions {
  repo: OutboxRepository;
  admission: SendAdmission;
  port: DeliveryPort;
  settlements: SettlementWriter;
  log: Logger;
  /** Most deliveries in flight at once; the dispatcher adapts below it (see `adapt`). */
  concurrency: number;
  pollMs: number;
  /** How long a lease lives without renewal; a vanished holder's rows are recovered after this. */
  leaseMs: number;
  channelGate: () => ChannelGate;
  retryBaseMs?: number;
  /** Longest retry wait for a refused request; a longer Retry-After is honoured up to this. */
  retryMaxMs?: number;
  /** Told how many messages of a channel go back to the queue after a failure, and its code (metrics). */
  observer?: { deliveryPostponed(channel: string, code: string, messages: number): void };
  /** Deliveries in flight at the start, before the dispatcher has measured anything. */
  initialConcurrency?: number;
}

const ADAPT_EVERY_MS = 250;
/**
 * Deliveries in flight when a run of sending starts (and again after the dispatcher has had nothing to
 * do). At 1,000 a second with answers in 20–40 ms, thirty-odd are needed: starting at 8 took the first
 * second of such a campaign to about 450 messages (bench:campaign), while the pacer, not this number,
 * keeps a slower provider within its budget. Slots that sit idle while there is work are given back
 * within a second or two (`adapt`), and the first claim is FIRST_CLAIM rows whatever this is.
 */
const INITIAL_CONCURRENCY = 32;
/**
 * While a budget paces the sends, deliveries beyond what this long of the recent pace needs only wait
 * for the budget, holding claimed rows that a process which dies leaves to its lease (the kill drill's
 * bound). Ten times a usual answer's time, so a pace the budget allows is never starved.
 */
const PACED_HEADROOM_MS = 400;
/** Rows leased ahead: what this dispatcher can start in the next few seconds at the pace it is allowed. */
const CLAIM_HORIZON_MS = 2_000;
/** The first claim, before any pace is measured (enough to fill a batched request of a small campaign). */
const FIRST_CLAIM = 100;
/** The pace is measured over the last few seconds of starts. */
const PACE_WINDOW_MS = 3_000;

class NotAdmitted extends Error {
  constructor(readonly decision: Exclude<Admission, { kind: 'send' }>) {
    super('not admitted');
  }
}

/**
 * Delivers outbox rows. Pacing comes from the provider runtimes (each request waits for the budget the
 * provider reports); a row is marked `sending` only after that wait, right before its request is
 * written, so nothing waiting for budget is ever in doubt.
 *
 * Rows are claimed a batch at a time into a small local queue (their leases renewed with the rest),
 * and settled in groups (settlement.ts). How many deliveries are in flight adapts: it grows while every
 * slot is busy and no provider is pacing (latency, not the budget, is the limit), and shrinks back
 * when slots sit idle, or, while a budget paces the sends, to what PACED_HEADROOM_MS of that pace needs;
 * between 1 and `concurrency`.
 */
export class OutboxDispatcher {
  /** Names the process, so an operator (or a kill drill) can tell whose leases rows carry. */
  readonly owner = `dispatcher-${process.pid}-${randomUUID()}`;
  /** Rows whose outcome could not be recorded: no longer renewed (they become unknown), forgotten after two leases. */
  private readonly abandoned = new Map<number, number>();
  /** Rows started so far, sampled over the last seconds: the pace this dispatcher sends at. */
  private started = 0;
  /** Rows whose delivery has finished: unlike starts, not inflated by deliveries parked on a budget. */
  private finished = 0;
  private readonly paceSamples: Array<{ at: number; started: number; finished: number }> = [];
  private readonly loop: WorkLoop;
  private limit: number;
  private readonly initialLimit: number;
  private lastRenewal = 0;
  private lastAdapt = 0;
  /**
   * Rows delivered a millisecond over the last seconds, counted from when this run of sending began (not
   * over the idle time before it, which would make a campaign's first second look slow); measured by
   * claimSize once a run has lasted a second, undefined before and while nothing has started for a few seconds.
   */
  private pacePerMs?: number;
  private sendingSince?: number;
  private busySince = 0;
  /**
   * When a claim last found fewer due rows than it asked for, and the channels then blocked. Until news
   * comes (`wake`, rows requeued to go at once, a recovered lease, a circuit closing) or a poll interval
   * passes, the passes that follow each finished delivery ask no more: at a campaign's tail each such
   * claim found nothing, after reading the leased rows ahead of it in the due index (about 130 claims of
   * 0.5 ms each, at 100 messages a second).
   */
  private drained?: { at: number; blocked: string };
  private readonly ready: OutboxRow[] = [];
  /** Claimed rows that passed `precheck`: their delivery skips the same read. */
  private readonly prechecked = new WeakSet<OutboxRow>();
  private readonly activeByChannel = new Map<string, number>();
  private readonly retryBaseMs: number;
  private readonly retryMaxMs: number;

  constructor(private readonly opts: DispatcherOptions) {
    this.retryBaseMs = opts.retryBaseMs ?? 2_000;
    this.retryMaxMs = opts.retryMaxMs ?? 60_000;
    this.limit = this.initialLimit = Math.min(opts.concurrency, opts.initialConcurrency ?? INITIAL_CONCURRENCY);
    // Settled rows ride in the next admission's transaction: one commit records both.
    opts.admission.riders = () => opts.settlements.board();
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

  /** Deliveries (single or batched requests) in flight. */
  private get active(): number {
    return this.loop.active;
  }

  /** Deliveries allowed in flight right now (adapted). */
  get concurrency(): number {
    return this.limit;
  }

  /** Something became due (a confirmation, an automation's message): look now rather than at the next poll. */
  wake(): void {
    this.drained = undefined;
    this.loop.wake();
  }

  /** Stops claiming, waits (bounded) for deliveries in flight, records what settled, and gives back unstarted rows. */
  async stop(graceMs = 10_000): Promise<void> {
    if (!this.loop.running) return;
    await this.loop.stop(graceMs);
    await this.opts.settlements.close();
    const unstarted = this.ready.splice(0);
    if (unstarted.length) await this.opts.repo.release(this.owner, unstarted.map((r) => r.outbox_id)).catch((err: unknown) => this.opts.log.warn({ err }, 'releasing unstarted deliveries failed'));
  }

  get activeDeliveries(): number {
    return this.active;
  }

  /** Whether any message of these channels is in flight or claimed and about to go. */
  busy(channels: readonly string[]): boolean {
    return channels.some((c) => (this.activeByChannel.get(c) ?? 0) > 0) || this.ready.some((r) => channels.includes(r.channel));
  }

  /** One pass: keep leases alive, recover abandoned rows, fill the free slots. Returns how long to sleep. */
  private async fill(): Promise<number> {
    const { repo, leaseMs } = this.opts;
    const now = Date.now();
    if (now - this.lastRenewal >= leaseMs / 3) {
      this.lastRenewal = now;
      for (const id of this.opts.settlements.takeAbandoned()) this.abandoned.set(id, now);
      for (const [id, at] of this.abandoned) if (now - at > 2 * leaseMs) this.abandoned.delete(id);
      await repo.renewLeases(this.owner, leaseMs, now, [...this.abandoned.keys()]);
      const { unknown, released } = await repo.recoverExpired(now);
      if (released) this.drained = undefined;
      for (const row of unknown) {
        this.opts.log.warn({ outbox_id: row.outbox_id, source: row.source_id }, 'delivery in doubt after a stop: marked unknown, not resent');
        this.opts.settlements.settle(row, { state: 'unknown', error: { code: 'timeout', message: row.error_message ?? 'in doubt' } });
      }
    }
    const gate = this.opts.channelGate();
    // Rows of a channel that became blocked while they waited here go back to the queue.
    if (gate.blocked.length && this.ready.some((r) => gate.blocked.includes(r.channel))) {
      const back = this.ready.filter((r) => gate.blocked.includes(r.channel));
      this.ready.splice(0, this.ready.length, ...this.ready.filter((r) => !gate.blocked.includes(r.channel)));
      await repo.release(this.owner, back.map((r) => r.outbox_id));
    }
    const want = this.claimSize(now);
    const blocked = gate.blocked.join(',');
    const d = this.drained;
    const drained = d !== undefined && now - d.at < this.opts.pollMs && d.blocked === blocked && (this.active > 0 || this.ready.length > 0);
    if (!drained && this.ready.length < Math.max(this.limit, want / 2)) {
      // A batch at a time: one claim serves many deliveries (and fills a batched request), but never more
      // than can start in the next few seconds, so a process that dies leaves few rows for the others.
      // Topped up at half, about once a second: rows a dead peer held are taken soon after its lease ends.
      const asked = want - this.ready.length;
      const claimed = await repo.claim(this.owner, asked, gate.blocked, leaseMs, now);
      this.drained = claimed.length < asked ? { at: now, blocked } : undefined;
      const rows = await this.precheck(claimed);
      this.ready.push(...rows);
      if (rows.length) this.opts.port.prefetch?.(rows);
    }
    while (this.active < this.limit && this.ready.length) this.launch(this.takeNext());
    // Judged after filling: a pass runs when a delivery has just finished, so before filling one slot
    // is always free and the dispatcher would never look saturated.
    this.adapt(gate, now);
    let sleep = this.opts.pollMs;
    if (gate.reopensInMs !== undefined) sleep = Math.min(sleep, gate.reopensInMs + 1);
    if (this.active === 0 && !this.ready.length) {
      // Rows of a blocked channel are due but wait for the circuit's trial time (above), not the clock.
      const next = await repo.nextClaimableAt(gate.blocked);
      if (next !== undefined) sleep = Math.min(sleep, next - Date.now());
    }
    // Renewals must keep pace with the lease even while nothing else happens.
    return Math.max(10, Math.min(sleep, leaseMs / 3));
  }

  /**
   * How many rows to hold: what this dispatcher delivered in the last seconds, projected over
   * CLAIM_HORIZON_MS (the pace the providers allow it, batching included), at least two per delivery
   * slot, at most MAX_BATCH. Before anything has been delivered, FIRST_CLAIM. Deliveries, not starts:
   * a run's first deliveries all start at once and may wait on a budget, which is no pace.
   */
  private claimSize(now: number): number {
    const samples = this.paceSamples;
    if (!samples.length || now - samples[samples.length - 1]!.at >= ADAPT_EVERY_MS) samples.push({ at: now, started: this.started, finished: this.finished });
    while (samples.length > 1 && now - samples[0]!.at > PACE_WINDOW_MS) samples.shift();
    const first = samples[0]!;
    const startedLately = this.started - first.started;
    if (startedLately === 0) {
      this.pacePerMs = this.sendingSince = undefined;
      return Math.max(2 * this.limit, FIRST_CLAIM);
    }
    const finishedLately = this.finished - first.finished;
    const since = Math.max(first.at, this.sendingSince ?? first.at);
    this.pacePerMs = now - since >= 1_000 ? finishedLately / (now - since) : undefined;
    if (finishedLately === 0) return Math.max(2 * this.limit, FIRST_CLAIM);
    const perMs = finishedLately / Math.max(1_000, now - first.at);
    return Math.min(MAX_BATCH, Math.max(2 * this.limit, Math.ceil(perMs * CLAIM_HORIZON_MS)));
  }

  /** More in flight while latency is the limit; fewer when slots idle, or than a pacing budget needs. */
  private adapt(gate: ChannelGate, now: number): void {
    const saturated = this.active >= this.limit && this.ready.length > 0;
    if (!saturated) this.busySince = 0;
    else if (!this.busySince) this.busySince = now;
    if (now - this.lastAdapt < ADAPT_EVERY_MS) return;
    this.lastAdapt = now;
    if (this.active === 0 && !this.ready.length) {
      // Nothing to do: no slot is idle for want of work the dispatcher has. The next run starts afresh
      // (shrunk here, a campaign confirmed after a quiet minute began with 8).
      this.limit = this.initialLimit;
    } else if (saturated && !gate.paced && now - this.busySince >= ADAPT_EVERY_MS) {
      this.limit = Math.min(this.opts.concurrency, Math.ceil(this.limit * 1.5));
    } else if (!saturated && this.active < this.limit / 2 && this.limit > 1) {
      this.limit = Math.max(Math.min(this.opts.concurrency, 8), Math.floor(this.limit * 0.8));
    } else if (gate.paced && this.pacePerMs !== undefined) {
      const needed = Math.max(Math.min(this.opts.concurrency, 8), Math.ceil(this.pacePerMs * PACED_HEADROOM_MS));
      if (this.limit > needed) this.limit = Math.max(needed, Math.floor(this.limit * 0.8));
    }
  }

  /** The next row, with the ready rows that can share its request. */
  private takeNext(): OutboxRow[] {
    const head = this.ready.shift()!;
    const key = this.opts.port.batchKey(head);
    if (key === undefined) return [head];
    const batch = [head];
    for (let i = 0; i < this.ready.length && batch.length < MAX_BATCH; ) {
      if (this.opts.port.batchKey(this.ready[i]!) === key) batch.push(...this.ready.splice(i, 1));
      else i += 1;
    }
    return batch;
  }

  private launch(rows: OutboxRow[]): void {
    const row = rows[0]!;
    this.started += rows.length;
    this.sendingSince ??= Date.now();
    this.activeByChannel.set(row.channel, (this.activeByChannel.get(row.channel) ?? 0) + 1);
    this.loop.launch(() =>
      (rows.length === 1 ? this.deliver(row) : this.deliverBatch(rows))
        .catch((err) => this.opts.log.error({ err, outbox_id: row.outbox_id }, 'settling an outbox row failed'))
        .finally(() => {
          this.finished += rows.length;
          this.activeByChannel.set(row.channel, this.activeByChannel.get(row.channel)! - 1);
        }),
    );
  }

  /**
   * Cheap checks first, for a whole claim in one read: a row outside its send window or for a contact who
   * unsubscribed costs no provider lookup (nor a place in the lookups prefetched for the claim). Each
   * row is checked as if alone; the authoritative check is still the one right before it is sent.
   */
  private async precheck(rows: OutboxRow[]): Promise<OutboxRow[]> {
    const checked = rows.filter((r) => this.worthPrechecking(r));
    if (!checked.length) return rows;
    const decisions = await this.opts.admission.checkMany(checked, Date.now(), false);
    const refused = new Set<OutboxRow>();
    for (let i = 0; i < checked.length; i++) {
      const d = decisions[i]!;
      if (d.kind === 'send') this.prechecked.add(checked[i]!);
      else {
        refused.add(checked[i]!);
        await this.notAdmitted(checked[i]!, d);
      }
    }
    return refused.size ? rows.filter((r) => !refused.has(r)) : rows;
  }

  /** A row whose delivery costs a provider lookup, or that carries a send policy (window, cap). */
  private worthPrechecking(row: OutboxRow): boolean {
    return this.opts.port.needsLookup(row) || Boolean(row.policy);
  }

  private async deliver(row: OutboxRow): Promise<void> {
    const { repo, port, admission, leaseMs, log, settlements } = this.opts;
    let placeDay: string | undefined;
    // Set by the hook when the row may not be sent after all: provider code wraps whatever the hook throws.
    let refused: Exclude<Admission, { kind: 'send' }> | undefined;
    try {
      if (this.worthPrechecking(row) && !this.prechecked.delete(row)) {
        // Cheap checks first: a row outside its window or for an unsubscribed contact costs no provider lookup.
        const pre = await admission.check(row);
        if (pre.kind !== 'send') throw new NotAdmitted(pre);
      }
      const send = await port.prepare(row, parseContent(row));
      const receipt = await send(async () => {
        if (placeDay !== undefined) throw new ToolError('provider_error', 'internal: a delivery attempted a second request');
        const decision = await admission.admit(row, this.owner, leaseMs);
        if (decision.kind !== 'send') {
          refused = decision;
          throw new NotAdmitted(decision);
        }
        placeDay = decision.day;
      });
      if (placeDay === undefined) throw new ToolError('provider_error', 'internal: the delivery sent no request');
      settlements.settle(row, { state: 'sent', receipt });
    } catch (e) {
      const decision = refused ?? (e instanceof NotAdmitted ? e.decision : undefined);
      if (decision) return this.notAdmitted(row, decision);
      const err = e instanceof ToolError ? e : new ToolError('provider_error', `Delivery failed unexpectedly: ${e instanceof Error ? e.message : String(e)}`);
      const error = { code: err.code, message: err.message };
      const marked = placeDay !== undefined;
      if (marked && err.outcomeUnknown) {
        settlements.settle(row, { state: 'unknown', error });
        return;
      }
      // From here on nothing went out: the daily place is given back.
      if (marked) await admission.giveBack(placeDay!);
      await this.settleUnsent([row], err, marked);
    }
  }

  /**
   * Rows that go out in one request. The cheap checks drop, before the request is built, whoever may not
   * be sent now; right before it leaves, the rest are admitted together (each by its own rules) and
   * marked `sending`. Should any of them be refused at that last moment (an unsubscribe committed in
   * between), the request does not leave: the admitted rows go back to the queue, provably unsent, and
   * go again without it. One outcome settles them all.
   */
  private async deliverBatch(rows: OutboxRow[]): Promise<void> {
    const { port, admission, leaseMs, log, settlements } = this.opts;
    const pre = await admission.checkMany(rows);
    const go: OutboxRow[] = [];
    for (let i = 0; i < rows.length; i++) {
      if (pre[i]!.kind === 'send') go.push(rows[i]!);
      else await this.notAdmitted(rows[i]!, pre[i] as Exclude<Admission, { kind: 'send' }>);
    }
    if (go.length <= 1) {
      if (go.length) await this.deliver(go[0]!);
      return;
    }
    let marked: OutboxRow[] = [];
    let day = '';
    let shrank = false;
    try {
      const send = await port.prepareBatch(go);
      const receipt = await send(async () => {
        if (marked.length || shrank) throw new ToolError('provider_error', 'internal: a delivery attempted a second request');
        const decisions = await admission.admitMany(go, this.owner, leaseMs);
        for (let i = 0; i < go.length; i++) {
          const d = decisions[i]!;
          if (d.kind === 'send') {
            marked.push(go[i]!);
            day = d.day;
          } else {
            shrank = true;
            await this.notAdmitted(go[i]!, d);
          }
        }
        if (shrank) throw new ToolError('provider_error', 'internal: the batch shrank at the last moment; its request was not sent');
      });
      for (const row of marked) settlements.settle(row, { state: 'sent', receipt });
    } catch (e) {
      const err = e instanceof ToolError ? e : new ToolError('provider_error', `Delivery failed unexpectedly: ${e instanceof Error ? e.message : String(e)}`);
      if (marked.length && err.outcomeUnknown && !shrank) {
        for (const row of marked) settlements.settle(row, { state: 'unknown', error: { code: err.code, message: err.message } });
        return;
      }
      // Nothing went out.
      if (marked.length) await admission.giveBack(day, marked.length);
      if (shrank) {
        await this.opts.repo.requeueMany(marked, Date.now(), { code: 'rebatched', message: 'another message of its batch was held back at the last moment; it goes with the next one' });
        this.drained = undefined;
        return;
      }
      log.info({ rows: go.length, code: err.code }, 'batched delivery not sent');
      await this.settleUnsent(go, err, marked.length > 0);
    }
  }

  /**
   * A row provably not sent: retried later when the failure is transient (a refusal, an outage, an
   * "outcome unknown" error before the request left), else failed. Transient failures never fail a
   * message by count: it waits, backing off up to RETRY_MAX_DELAY_MS, while the provider refuses or is
   * down (its circuit then holds the rows without costing attempts); status shows why it waits, and
   * cancel_campaign stops it.
   */
  private async settleUnsent(rows: OutboxRow[], err: ToolError, marked: boolean): Promise<void> {
    const attempts = rows[0]!.attempts + (marked ? 1 : 0);
    const error = { code: err.code, message: err.message };
    if (retryLater(err) || (!marked && err.outcomeUnknown)) {
      const wait = Math.min(this.retryMaxMs, err.retryAfterMs ?? this.retryBaseMs * 2 ** Math.max(0, attempts - 1));
      this.opts.log.info({ outbox_ids: rows.slice(0, 20).map((r) => r.outbox_id), rows: rows.length, code: err.code, wait_ms: Math.round(wait) }, 'delivery postponed');
      await this.opts.repo.requeueMany(rows, Date.now() + wait, error);
      this.opts.observer?.deliveryPostponed(rows[0]!.channel, err.code, rows.length);
      return;
    }
    for (const row of rows) this.opts.settlements.settle(row, { state: 'failed', error });
  }

  private async notAdmitted(row: OutboxRow, d: Exclude<Admission, { kind: 'send' }>): Promise<void> {
    const { repo, log, settlements } = this.opts;
    if (d.kind === 'withdrawn') return;
    if (d.kind === 'defer') {
      log.debug({ outbox_id: row.outbox_id, code: d.code, until: new Date(d.until).toISOString() }, 'delivery deferred');
      await repo.requeue(row, d.until, { code: d.code, message: d.message });
      return;
    }
    log.info({ outbox_id: row.outbox_id, code: d.code }, 'delivery skipped');
    settlements.settle(row, { state: 'skipped', error: { code: d.code, message: d.message } });
  }
}
