import type { Kysely } from 'kysely';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { CHANNELS } from '../engine/delivery/message.js';
import { OUTBOX_STATES } from '../engine/delivery/outbox.js';
import { ENDPOINTS } from '../engine/inbox/parse.js';
import type { ProviderRuntime, RequestResult } from '../resilience/provider-runtime.js';
import type { ProviderName } from '../result.js';
import type { Database } from '../store/schema.js';
import { CachedProbe } from './cached-probe.js';
import { readDbSnapshot, type DbSnapshot } from './db-snapshot.js';

/** Every metric's name starts with this. */
export const METRIC_PREFIX = 'csmcp_';

/**
 * How long one database snapshot serves scrapes: 1.5 s, or 20 times what the last read took when that is
 * longer, so reading it never takes more than 5% of the time (on SQLite a read holds the event loop: about
 * 0.25 s for a 500,000-row outbox). And the longest a scrape waits for a fresh one.
 */
export const SNAPSHOT_TTL_MS = 1500;
export const SNAPSHOT_TTL_FACTOR = 20;
export const SNAPSHOT_TIMEOUT_MS = 2000;

const CIRCUIT_STATES = ['closed', 'half_open', 'open', 'isolated'] as const;

/** Seconds from a few milliseconds (a read) to minutes (a send waiting for a person's approval). */
const TOOL_SECONDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900];
/** Seconds from receipt to processed: the processor polls every WEBHOOK_PROCESS_POLL_MS and retries with backoff. */
const LAG_SECONDS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600];

const n = (name: string) => `${METRIC_PREFIX}${name}`;

/**
 * One Prometheus registry per server process (never prom-client's global one: tests run several servers
 * in one process). Counters are fed by the parts that see the events (tool pipeline, provider runtimes,
 * approvals, inbox, automations); database-wide gauges are read at scrape time (db-snapshot.ts).
 * Every label takes values from a fixed set: tool names, providers, channels, states, error codes.
 */
export class Metrics {
  readonly registry = new Registry();
  /** The database gauges apart: left out of a scrape whole when the database does not answer (a gauge without labels cannot be). */
  private readonly dbRegistry = new Registry();
  private readonly toolCalls: Counter<'tool' | 'outcome'>;
  private readonly toolSeconds: Histogram<'tool'>;
  private readonly providerRequests: Counter<'provider' | 'result'>;
  private readonly rateLimited: Counter<'provider'>;
  private readonly retries: Counter<'provider' | 'code'>;
  private readonly approvals: Counter<'action' | 'outcome'>;
  private readonly webhookStored: Counter<'provider'>;
  private readonly webhookDuplicates: Counter<'provider'>;
  private readonly webhookRefused: Counter<'provider' | 'status'>;
  private readonly webhookProcessed: Counter<'provider' | 'state'>;
  private readonly webhookLag: Histogram<'provider'>;
  private readonly runawayPauses: Counter;
  private readonly postponed: Counter<'channel' | 'code'>;
  private readonly db = new Map<string, Gauge<string>>();
  private readonly snapshotOk: Gauge;
  private readonly snapshotSeconds: Gauge;
  private snapshot?: CachedProbe<{ data: DbSnapshot; seconds: number }>;

  constructor(opts: { processMetrics?: boolean } = {}) {
    const registers = [this.registry];
    this.toolCalls = new Counter({ name: n('tool_calls_total'), help: 'MCP tool calls by tool and outcome (success, or the error code).', labelNames: ['tool', 'outcome'], registers });
    this.toolSeconds = new Histogram({ name: n('tool_call_duration_seconds'), help: 'Time from a tool call arriving to its answer, by tool.', labelNames: ['tool'], buckets: TOOL_SECONDS, registers });
    this.providerRequests = new Counter({
      name: n('provider_requests_total'),
      help: 'HTTP requests to providers by result: the status class (2xx, 3xx, 4xx, 429, 5xx), timeout, network or aborted.',
      labelNames: ['provider', 'result'],
      registers,
    });
    this.rateLimited = new Counter({ name: n('provider_rate_limited_total'), help: 'Provider answers with HTTP 429 (rate limited).', labelNames: ['provider'], registers });
    this.retries = new Counter({ name: n('provider_retries_total'), help: 'Provider calls retried by the resilience policy, by the error that caused the retry.', labelNames: ['provider', 'code'], registers });
    this.approvals = new Counter({
      name: n('approval_requests_total'),
      help: 'Sends that needed approval, by action and outcome (approved_by_person, approved_by_policy, declined, cancelled, no_answer, refused_no_elicitation).',
      labelNames: ['action', 'outcome'],
      registers,
    });
    this.webhookStored = new Counter({ name: n('webhook_events_stored_total'), help: 'Verified provider webhook events stored (new ones; duplicates not counted).', labelNames: ['provider'], registers });
    this.webhookDuplicates = new Counter({ name: n('webhook_events_duplicate_total'), help: 'Verified webhook events already stored (provider retries and replays).', labelNames: ['provider'], registers });
    this.webhookRefused = new Counter({ name: n('webhook_requests_refused_total'), help: 'Webhook requests refused (bad signature, stale, malformed), by HTTP status.', labelNames: ['provider', 'status'], registers });
    this.webhookProcessed = new Counter({
      name: n('webhook_events_processed_total'),
      help: 'Webhook events settled by the processor, by final state (processed, unmatched, ignored, failed).',
      labelNames: ['provider', 'state'],
      registers,
    });
    this.webhookLag = new Histogram({ name: n('webhook_processing_lag_seconds'), help: 'Time from a webhook event being stored to it being settled.', labelNames: ['provider'], buckets: LAG_SECONDS, registers });
    this.postponed = new Counter({
      name: n('delivery_postponed_messages_total'),
      help: 'Outbox messages put back in the queue to be tried again after a provider refused or failed (the delivery retries), by channel and error code.',
      labelNames: ['channel', 'code'],
      registers,
    });
    this.runawayPauses = new Counter({ name: n('automation_runaway_pauses_total'), help: 'Workflows this process paused for exceeding their action budget (runaway).', registers });
    const gauge = (name: string, help: string, labelNames: string[] = []) => {
      const g = new Gauge({ name: n(name), help, labelNames, registers: [this.dbRegistry] });
      this.db.set(name, g);
      return g;
    };
    gauge('messages', 'Outbox messages in the database (all replicas) by channel and state; settled rows leave with retention.', ['channel', 'state']);
    gauge('outbox_queued_messages', 'Messages queued in the outbox (all replicas), due now or later.');
    gauge('outbox_oldest_queued_age_seconds', 'How long the oldest due queued message has been due (0 when none waits).');
    gauge('webhook_events_pending', 'Webhook events stored and not yet processed (all replicas), by provider.', ['provider']);
    gauge('webhook_oldest_pending_age_seconds', 'Age of the oldest webhook event not yet processed (0 when none).');
    gauge('automation_enrollments', 'Automation enrolments in the database by state (active, completed, exited, cancelled).', ['state']);
    gauge('automation_workflows', 'Workflows by status; runaway="true" for those the server paused over their action budget.', ['status', 'runaway']);
    this.snapshotOk = new Gauge({ name: n('db_snapshot_up'), help: '1 when the database gauges above were read for this scrape, 0 when the database did not answer in time (they are left out).', registers });
    this.snapshotSeconds = new Gauge({ name: n('db_snapshot_duration_seconds'), help: 'How long the last read of the database gauges took.', registers });
    if (opts.processMetrics) collectDefaultMetrics({ register: this.registry, prefix: METRIC_PREFIX });
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  // --- fed by the parts that see the events ---

  toolCall(tool: string, outcome: string, seconds: number): void {
    this.toolCalls.inc({ tool, outcome });
    this.toolSeconds.observe({ tool }, seconds);
  }

  approval(action: string, outcome: string): void {
    this.approvals.inc({ action, outcome });
  }

  webhooksStored(provider: string, stored: number, duplicates: number): void {
    if (stored) this.webhookStored.inc({ provider }, stored);
    if (duplicates) this.webhookDuplicates.inc({ provider }, duplicates);
  }

  webhookRequestRefused(provider: string, status: number): void {
    this.webhookRefused.inc({ provider, status: String(status) });
  }

  webhookSettled(provider: string, state: string, lagSeconds: number): void {
    this.webhookProcessed.inc({ provider, state });
    this.webhookLag.observe({ provider }, Math.max(0, lagSeconds));
  }

  deliveryPostponed(channel: string, code: string, messages: number): void {
    this.postponed.inc({ channel, code }, messages);
  }

  runawayPause(): void {
    this.runawayPauses.inc();
  }

  /** Requests, 429s and retries from each provider's runtime; circuit state and configuration read at scrape. */
  watchProviders(runtimes: Record<ProviderName, ProviderRuntime>): void {
    for (const rt of Object.values(runtimes)) {
      const provider = rt.provider;
      rt.onRequest((result: RequestResult) => {
        this.providerRequests.inc({ provider, result });
        if (result === '429') this.rateLimited.inc({ provider });
      });
      rt.policy.onRetry((code) => this.retries.inc({ provider, code: code ?? 'unknown' }));
      // Zero from the start, so a rate of 429s has a base to compare against.
      this.rateLimited.inc({ provider }, 0);
    }
    const all = Object.values(runtimes);
    new Gauge({
      name: n('provider_circuit_state'),
      help: 'Circuit breaker state of each provider in this process: 1 for the current state, 0 for the others.',
      labelNames: ['provider', 'state'],
      registers: [this.registry],
      collect() {
        for (const rt of all) for (const state of CIRCUIT_STATES) this.set({ provider: rt.provider, state }, rt.policy.state === state ? 1 : 0);
      },
    });
    new Gauge({
      name: n('provider_configured'),
      help: '1 when the provider has the credentials it needs, 0 when not.',
      labelNames: ['provider'],
      registers: [this.registry],
      collect() {
        for (const rt of all) this.set({ provider: rt.provider }, rt.configured ? 1 : 0);
      },
    });
  }

  /** Database-wide gauges, read at most once per SNAPSHOT_TTL_MS whatever the scrape rate. */
  watchDatabase(db: Kysely<Database>): void {
    this.snapshot = new CachedProbe(
      async () => {
        const started = performance.now();
        const data = await readDbSnapshot(db);
        return { data, seconds: (performance.now() - started) / 1000 };
      },
      { ttlMs: (runMs) => Math.max(SNAPSHOT_TTL_MS, SNAPSHOT_TTL_FACTOR * runMs), timeoutMs: SNAPSHOT_TIMEOUT_MS },
    );
  }

  /** The exposition text: the database gauges refreshed (or left out when the database does not answer in time). */
  async render(now = Date.now()): Promise<string> {
    if (!this.snapshot) return this.registry.metrics();
    const r = await this.snapshot.get();
    this.snapshotOk.set(r.ok ? 1 : 0);
    if (!r.ok) return this.registry.metrics();
    this.snapshotSeconds.set(r.value.seconds);
    for (const g of this.db.values()) g.reset();
    this.setDbGauges(r.value.data, now);
    return (await this.registry.metrics()) + (await this.dbRegistry.metrics());
  }

  private setDbGauges(s: DbSnapshot, now: number): void {
    const g = (name: string) => this.db.get(name)!;
    let queued = 0;
    // Every channel × state and every endpoint from zero: a series that vanished would read as "no data".
    for (const channel of CHANNELS) for (const state of OUTBOX_STATES) g('messages').set({ channel, state }, 0);
    for (const provider of ENDPOINTS) g('webhook_events_pending').set({ provider }, 0);
    for (const m of s.messages) {
      g('messages').set({ channel: m.channel, state: m.state }, m.n);
      if (m.state === 'queued') queued += m.n;
    }
    g('outbox_queued_messages').set(queued);
    g('outbox_oldest_queued_age_seconds').set(ageSeconds(s.oldestDueQueuedAt, now));
    for (const w of s.webhooksPending) g('webhook_events_pending').set({ provider: w.provider }, w.n);
    g('webhook_oldest_pending_age_seconds').set(ageSeconds(s.oldestPendingWebhookAt, now));
    for (const e of s.enrollments) g('automation_enrollments').set({ state: e.state }, e.n);
    for (const w of s.workflows) g('automation_workflows').inc({ status: w.status, runaway: String(w.runaway) }, w.n);
  }
}

/** Seconds since an ISO time, 0 when there is none (or it lies ahead). */
export function ageSeconds(iso: string | undefined, now: number): number {
  if (!iso) return 0;
  const t = Date.parse(iso);
  return Number.isFinite(t) ? Math.max(0, (now - t) / 1000) : 0;
}
