import { createHash } from 'node:crypto';
import type { Kysely } from 'kysely';
import { httpStatusError } from '../../resilience/http-errors.js';
import { invalidInput, ToolError } from '../../result.js';
import { writeWithRetry } from '../../safety/durable-write.js';
import type { Database } from '../../store/schema.js';
import type { ProviderDeps } from '../deps.js';

/**
 * Mixpanel ingestion, called directly rather than through the `mixpanel` npm package: that package
 * batches at most 50 events, has no strict mode (so no per-event errors), no retries and no 429
 * handling. Here events are buffered and sent to /import?strict=1 in batches of up to 2,000 (and
 * under 10 MB), each with a deterministic $insert_id so a retried batch never double-counts.
 *
 * The buffer is a table (`mixpanel_buffer`), written before track() returns: a kill loses nothing
 * accepted, and the next start (or another instance on the database) sends it. The same event
 * ($insert_id with its name, time and distinct_id) is kept once. A batch is deleted once Mixpanel
 * answered it; a kill between the answer and the delete sends that batch again, which Mixpanel counts
 * once by $insert_id. At most MIXPANEL_MAX_BUFFERED_EVENTS wait: past it, track() refuses new events
 * (retryable, saying why) rather than dropping any.
 */

export interface TrackInput {
  event: string;
  distinct_id: string;
  properties?: Record<string, unknown>;
  /** Epoch ms or seconds; default now. */
  time?: number;
  /** A caller's own idempotency key; default: derived from the event's content. */
  insert_id?: string;
}

export interface QueuedEvent {
  event: string;
  properties: Record<string, unknown> & { time: number; distinct_id: string; $insert_id: string };
}

export interface EventFailure {
  insert_id: string;
  event: string;
  field?: string;
  message: string;
}

export interface FlushResult {
  requests: number;
  imported: number;
  /** Rejected by Mixpanel for this event's content: reported and dropped (they will never succeed). */
  rejected: EventFailure[];
  /** Not delivered this time (provider down, rate limited): still buffered and sent on a later flush. */
  pending: number;
  error?: { code: string; message: string; retryable: boolean };
}

export const MAX_BATCH_EVENTS = 2000;
/** Mixpanel's limit is 10 MB uncompressed per request; keep a margin for the array framing. */
export const MAX_BATCH_BYTES = 9_500_000;

/** ≤ 36 bytes of [A-Za-z0-9-], as Mixpanel requires: a hash of what identifies the event. */
export function deriveInsertId(e: { event: string; distinct_id: string; time: number; properties?: Record<string, unknown> }): string {
  const props = e.properties ? JSON.stringify(Object.keys(e.properties).sort().map((k) => [k, e.properties![k]])) : '';
  return createHash('sha256').update(`${e.event}\u0000${e.distinct_id}\u0000${e.time}\u0000${props}`).digest('hex').slice(0, 32);
}

/** Packs events into batches within Mixpanel's count and size limits. */
export function packBatches(events: QueuedEvent[], maxEvents = MAX_BATCH_EVENTS, maxBytes = MAX_BATCH_BYTES): QueuedEvent[][] {
  const batches: QueuedEvent[][] = [];
  let current: QueuedEvent[] = [];
  let bytes = 2;
  for (const e of events) {
    const size = Buffer.byteLength(JSON.stringify(e)) + 1;
    if (current.length && (current.length >= maxEvents || bytes + size > maxBytes)) {
      batches.push(current);
      current = [];
      bytes = 2;
    }
    current.push(e);
    bytes += size;
  }
  if (current.length) batches.push(current);
  return batches;
}

export class MixpanelService {
  private timer?: NodeJS.Timeout;
  private flushing: Promise<FlushResult> | undefined;
  private closed = false;
  /** Rows in the buffer table, as last counted (plus what this process added since). */
  private count = 0;
  private counted: Promise<void> | undefined;

  constructor(
    readonly deps: ProviderDeps,
    private readonly db: Kysely<Database>,
  ) {}

  private get cfg() {
    return this.deps.config.mixpanel;
  }

  /** Events waiting in the database for delivery (as last counted). */
  get buffered(): number {
    return this.count;
  }

  get bufferLimit(): number {
    return this.cfg.maxBufferedEvents;
  }

  private async refreshCount(): Promise<number> {
    const row = await this.db.selectFrom('mixpanel_buffer').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirst();
    this.count = Number(row?.n ?? 0);
    return this.count;
  }

  /** Starts the interval flush (only when Mixpanel is configured); events left by an earlier run go out on its first beat. */
  start(): void {
    if (!this.deps.runtime.configured || this.timer) return;
    this.counted = this.refreshCount().then(
      () => undefined,
      (err: unknown) => this.deps.log.warn({ err }, 'counting buffered Mixpanel events failed'),
    );
    this.timer = setInterval(() => {
      if (!this.flushing) void this.flush().catch((err) => this.deps.log.error({ err }, 'background Mixpanel flush failed'));
    }, this.cfg.flushIntervalMs);
    this.timer.unref();
  }

  /** Stops the timer and delivers what is buffered (called on SIGINT/SIGTERM/stdin close); what Mixpanel does not take stays in the database. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    if (!this.deps.runtime.configured) return;
    const r = await this.flush();
    if (r.error) this.deps.log.warn({ pending: r.pending, error: r.error }, 'Mixpanel events could not be delivered before shutdown: they stay in the database and are sent after the next start');
  }

  /**
   * Validates one event and stores it for delivery; returns its $insert_id. Resolves only once the
   * event is in the database. Sends at once when a full batch is waiting.
   */
  async track(input: TrackInput): Promise<{ insert_id: string; event: QueuedEvent }> {
    this.deps.runtime.requireConfigured();
    if (this.closed) throw new ToolError('provider_unavailable', 'The server is shutting down; the event was not accepted. Send it again after restart.', { provider: 'mixpanel' });
    const time = normalizeTime(input.time ?? Date.now());
    const insert_id = input.insert_id ?? deriveInsertId({ event: input.event, distinct_id: input.distinct_id, time, properties: input.properties });
    if (!/^[A-Za-z0-9-]{1,36}$/.test(insert_id)) {
      throw invalidInput('insert_id must be 1–36 letters, digits or "-" (Mixpanel\'s rule).', { fields: [{ field: 'insert_id', problem: 'format' }] });
    }
    const event: QueuedEvent = { event: input.event, properties: { ...input.properties, time, distinct_id: input.distinct_id, $insert_id: insert_id } };
    if (Object.keys(event.properties).length > 255) throw invalidInput('An event may carry at most 255 properties.', { fields: [{ field: 'properties', problem: 'too many' }] });
    const json = JSON.stringify(event);
    const bytes = Buffer.byteLength(json);
    if (bytes > 1_000_000) throw invalidInput('An event must be under 1 MB.', { fields: [{ field: 'properties', problem: 'too large' }] });
    await this.counted;
    const limit = this.cfg.maxBufferedEvents;
    if (this.count >= limit && (await this.refreshCount().catch(() => this.count)) >= limit) {
      throw new ToolError(
        'provider_unavailable',
        `Mixpanel has ${this.count} undelivered events waiting, the most MIXPANEL_MAX_BUFFERED_EVENTS (${limit}) allows: this event was not accepted (nothing buffered was dropped). ` +
          'They are sent as soon as Mixpanel takes them; check integrations_status (Mixpanel\'s circuit and last error), then track it again — the same insert_id counts once.',
        { provider: 'mixpanel', retryable: true, details: { policy: 'mixpanel_buffer', buffered: this.count, limit } },
      );
    }
    let inserted = 0;
    const dedupKey = createHash('sha256').update(`${insert_id}\u0000${input.event}\u0000${time}\u0000${input.distinct_id}`).digest('hex');
    const stored = await writeWithRetry(async () => {
      const r = await this.db
        .insertInto('mixpanel_buffer')
        .values({ dedup_key: dedupKey, insert_id, event: json, bytes, created_at: new Date().toISOString() })
        .onConflict((oc) => oc.column('dedup_key').doNothing())
        .executeTakeFirst();
      inserted = Number(r.numInsertedOrUpdatedRows ?? 0);
    });
    if (!stored) {
      throw new ToolError('provider_error', 'The event could not be stored for delivery to Mixpanel: this server\'s database failed. It was not accepted; track it again (the same insert_id counts once).', {
        provider: 'mixpanel',
        retryable: true,
      });
    }
    this.count += inserted;
    if (this.count >= MAX_BATCH_EVENTS && !this.flushing) {
      void this.flush({ fullBatchesOnly: true }).catch((err) => this.deps.log.error({ err }, 'Mixpanel flush failed'));
    }
    return { insert_id, event };
  }

  /**
   * Sends what is buffered (one flush at a time; a second caller waits for the running one, then its
   * own). A flush triggered by size sends only full batches, so a steady stream goes out 2,000 at a time.
   */
  async flush(opts: { fullBatchesOnly?: boolean } = {}): Promise<FlushResult> {
    while (this.flushing) await this.flushing.catch(() => undefined);
    this.flushing = this.flushOnce(opts.fullBatchesOnly ?? false);
    try {
      return await this.flushing;
    } finally {
      this.flushing = undefined;
    }
  }

  private async flushOnce(fullBatchesOnly: boolean): Promise<FlushResult> {
    const result: FlushResult = { requests: 0, imported: 0, rejected: [], pending: 0 };
    let after = 0;
    let failed = false;
    while (!failed) {
      // Oldest first, a page of at most one full batch at a time.
      const rows = await this.db.selectFrom('mixpanel_buffer').select(['seq', 'event']).where('seq', '>', after).orderBy('seq').limit(MAX_BATCH_EVENTS).execute();
      if (!rows.length || (fullBatchesOnly && rows.length < MAX_BATCH_EVENTS)) break;
      after = Number(rows[rows.length - 1]!.seq);
      const seqOf = new Map<QueuedEvent, number>();
      const events = rows.map((r) => {
        const e = JSON.parse(r.event) as QueuedEvent;
        seqOf.set(e, Number(r.seq));
        return e;
      });
      for (const batch of packBatches(events)) {
        result.requests += 1;
        try {
          const r = await this.importBatch(batch);
          result.imported += r.imported;
          result.rejected.push(...r.rejected);
        } catch (err) {
          const e = err instanceof ToolError ? err : new ToolError('provider_error', String(err), { provider: 'mixpanel' });
          if (e.code !== 'invalid_input') {
            // Not delivered: it stays buffered, in order, and goes out on a later flush.
            result.error = { code: e.code, message: e.message, retryable: e.retryable };
            failed = true;
            break;
          }
          // Mixpanel refused the whole request (400/413): these events will never succeed. Report and drop them.
          for (const ev of batch) result.rejected.push({ insert_id: ev.properties.$insert_id, event: ev.event, message: e.message });
        }
        // Answered: delivered or refused for good. A failed delete only means Mixpanel sees them again (and counts them once).
        const seqs = batch.map((e) => seqOf.get(e)!);
        await writeWithRetry(
          () => this.db.deleteFrom('mixpanel_buffer').where('seq', 'in', seqs).execute(),
          (err) => this.deps.log.warn({ err, events: seqs.length }, 'removing delivered Mixpanel events from the buffer failed: they will be sent again (Mixpanel counts them once)'),
        );
      }
    }
    await this.refreshCount().catch(() => undefined);
    if (failed) result.pending = this.count;
    if (result.rejected.length) this.deps.log.warn({ rejected: result.rejected.length }, 'Mixpanel rejected some events');
    return result;
  }

  private authHeader(): string {
    const c = this.cfg;
    const [user, pass] =
      c.serviceAccountUsername && c.serviceAccountSecret ? [c.serviceAccountUsername, c.serviceAccountSecret] : [c.apiSecret ?? c.projectToken ?? '', ''];
    return `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`;
  }

  private async importBatch(batch: QueuedEvent[]): Promise<{ imported: number; rejected: EventFailure[] }> {
    const url = new URL(`${this.cfg.apiHost}/import`);
    url.searchParams.set('strict', '1');
    if (this.cfg.projectId) url.searchParams.set('project_id', this.cfg.projectId);
    return this.deps.runtime.call({ operation: 'import', idempotent: true }, async ({ signal, fetch }) => {
      const res = await fetch(url, {
        method: 'POST',
        headers: { Authorization: this.authHeader(), 'Content-Type': 'application/json', Accept: 'application/json' },
        body: JSON.stringify(batch),
        signal,
      });
      const text = await res.text();
      let body: Record<string, any> = {};
      try {
        body = JSON.parse(text) as Record<string, any>;
      } catch {
        // non-JSON error pages are described by their status
      }
      if (res.status === 400 && Array.isArray(body.failed_records)) {
        // strict mode: a partial success; the failed events will never succeed, so report and drop them.
        const rejected = (body.failed_records as Array<Record<string, any>>).map((f) => {
          const e = batch[Number(f.index)];
          return {
            insert_id: String(f.$insert_id ?? f.insert_id ?? e?.properties.$insert_id ?? ''),
            event: e?.event ?? '',
            field: f.field,
            message: String(f.message ?? 'rejected'),
          };
        });
        return { imported: Number(body.num_records_imported ?? batch.length - rejected.length), rejected };
      }
      if (!res.ok) throw httpStatusError('mixpanel', res.status, res.headers, body.error ?? (text.slice(0, 300) || undefined));
      return { imported: Number(body.num_records_imported ?? batch.length), rejected: [] };
    });
  }

  /** Profile updates ($set, $set_once, $add). /engage answers 200 even when it rejects: verbose=1 says which. */
  async engage(distinct_id: string, operation: '$set' | '$set_once' | '$add', values: Record<string, unknown>): Promise<void> {
    this.deps.runtime.requireConfigured();
    if (!this.cfg.projectToken) {
      throw new ToolError('not_configured', 'Profile updates need MIXPANEL_PROJECT_TOKEN: set it in the server environment and restart.', { provider: 'mixpanel' });
    }
    const url = new URL(`${this.cfg.apiHost}/engage`);
    url.searchParams.set('verbose', '1');
    url.searchParams.set('ip', '0');
    await this.deps.runtime.call({ operation: `engage ${operation}`, idempotent: operation !== '$add' }, async ({ signal, fetch }) => {
      const res = await fetch(url, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
        body: JSON.stringify([{ $token: this.cfg.projectToken, $distinct_id: distinct_id, [operation]: values }]),
        signal,
      });
      const text = await res.text();
      let body: { status?: number; error?: string } = {};
      try {
        body = JSON.parse(text) as typeof body;
      } catch {
        // handled below
      }
      if (!res.ok) throw httpStatusError('mixpanel', res.status, res.headers, body.error ?? (text.slice(0, 300) || undefined));
      if (body.status !== 1) throw new ToolError('invalid_input', `Mixpanel rejected the profile update: ${body.error ?? text.slice(0, 300)}`, { provider: 'mixpanel', status: res.status });
    });
  }
}

/** Seconds or milliseconds → milliseconds (Mixpanel takes either; ms keeps precision). */
function normalizeTime(t: number): number {
  return t < 1e11 ? Math.round(t * 1000) : Math.round(t);
}
