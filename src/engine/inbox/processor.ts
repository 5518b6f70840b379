import { randomUUID } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { Logger } from '../../log.js';
import type { CustomerEventInput } from '../../store/customer-events.js';
import type { Store } from '../../store/index.js';
import type { Database } from '../../store/schema.js';
import type { TimelineInput } from '../../store/timeline.js';
import { interpret, type ConsentChange, type EngagementKind, type Interpretation } from './interpret.js';
import type { Endpoint } from './parse.js';
import { LeaseLost, type InboxRepository, type InboxRow, type InboxState } from './repository.js';

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
}

interface OutboxRef {
  idempotency_key: string;
  source_kind: string;
  source_id: string;
  channel: string;
  contact_id: string;
  client_id: string;
  recipient_email: string;
  provider_message_id: string | null;
}

interface ContactRef {
  contact_id: string;
  client_id: string;
  email: string;
  external_user_id: string | null;
  intercom_contact_id: string | null;
}

/** Whom an event is recorded for: a roster contact, or a client alone (a product event for an unknown user). */
interface Target {
  client_id: string;
  contact_id: string | null;
  intercom_contact_id?: string | null;
}

interface Lookups {
  byKey: Map<string, OutboxRef>;
  byProviderId: Map<string, OutboxRef[]>;
  contactsById: Map<string, ContactRef>;
  byEmail: Map<string, ContactRef[]>;
  byIntercom: Map<string, ContactRef[]>;
  byExternal: Map<string, ContactRef[]>;
  clients: Set<string>;
}

interface Plan {
  consent: Array<{ change: ConsentChange; emails: string[]; source: string; at: string; data: Record<string, unknown> }>;
  events: CustomerEventInput[];
  timeline: TimelineInput[];
  engagement: Array<{ outbox_key: string; kind: EngagementKind; source_kind: string; source_id: string; channel: string; first_at: string }>;
  links: Array<{ contact_id: string; intercom_contact_id: string; role?: string }>;
  outcomes: Map<string, { ids: number[]; state: InboxState; note: string }>;
}

const ID_CHUNK = 500;
const HOUR = 3_600_000;
const TIMELINE_CHANNEL: Record<Endpoint, string> = { sendgrid: 'sendgrid', intercom: 'intercom', events: 'product' };
const UNMATCHED: Record<Endpoint, string> = {
  sendgrid: 'no message of ours and no roster contact with this address (kept)',
  intercom: 'no roster contact with this Intercom id, user id or email (kept)',
  events: 'no roster client or contact matches (kept)',
};

function chunks<T>(items: T[], size = ID_CHUNK): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

function push<K, V>(m: Map<K, V[]>, k: K, v: V) {
  const list = m.get(k);
  if (list) list.push(v);
  else m.set(k, [v]);
}

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
    await this.opts.repo.retryLater(row, this.owner, message, retryAt).catch((e: unknown) => this.opts.log.error({ err: e, inbox_id: row.inbox_id }, 'recording an inbox failure failed; the lease will expire and it is retried'));
  }

  private async apply(rows: InboxRow[]): Promise<void> {
    const items = rows.map((row) => ({ row, meaning: interpret(row.provider as Endpoint, row.event_type, row.payload) }));
    const lookups = await this.lookup(items.filter((i) => !i.meaning.ignored && !i.meaning.noAction).map((i) => i.meaning));
    const plan = this.plan(items, lookups);
    const { store, repo } = this.opts;
    await store.db.transaction().execute(async (trx) => {
      for (const c of plan.consent) {
        const base = { at: c.at, source: c.source, data: c.data };
        if (c.change.kind === 'suppress') await store.roster.suppressEmail(trx, c.emails, { ...base, status: c.change.status, reason: c.change.reason });
        else await store.roster.resubscribeEmail(trx, c.emails, { ...base, statuses: c.change.statuses, reason: c.change.reason, sameSourceOnly: c.change.sameSourceOnly });
      }
      await store.events.record(trx, plan.events);
      await store.timeline.appendMany(trx, plan.timeline);
      for (const part of chunks(plan.engagement)) {
        await trx.insertInto('message_events').values(part).onConflict((oc) => oc.columns(['outbox_key', 'kind']).doNothing()).execute();
      }
      await this.link(trx, plan.links);
      await repo.settle(trx, this.owner, [...plan.outcomes.values()]);
    });
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

  /**
   * Every message and contact the batch names, in a few queries: messages by our key first; only
   * events still unmatched are looked up by the provider's message id, and by address or id.
   */
  private async lookup(meanings: Interpretation[]): Promise<Lookups> {
    const db = this.opts.store.db;
    const distinct = (values: Array<string | undefined>) => [...new Set(values.filter((v): v is string => !!v))];
    const outboxCols = ['idempotency_key', 'source_kind', 'source_id', 'channel', 'contact_id', 'client_id', 'recipient_email', 'provider_message_id'] as const;
    const l: Lookups = { byKey: new Map(), byProviderId: new Map(), contactsById: new Map(), byEmail: new Map(), byIntercom: new Map(), byExternal: new Map(), clients: new Set() };
    for (const part of chunks(distinct(meanings.map((m) => m.identity.outbox_key)))) {
      for (const r of await db.selectFrom('outbox').select(outboxCols).where('idempotency_key', 'in', part).execute()) l.byKey.set(r.idempotency_key, r);
    }
    const rest = meanings.filter((m) => !m.identity.outbox_key || !l.byKey.has(m.identity.outbox_key));
    for (const part of chunks(distinct(rest.flatMap((m) => m.identity.message_ids ?? [])))) {
      for (const r of await db.selectFrom('outbox').select(outboxCols).where('provider_message_id', 'in', part).execute()) push(l.byProviderId, r.provider_message_id!, r);
    }
    const messages = [...l.byKey.values(), ...[...l.byProviderId.values()].flat()];
    const contactCols = ['contact_id', 'client_id', 'email', 'external_user_id', 'intercom_contact_id'] as const;
    const add = (c: ContactRef) => {
      if (l.contactsById.has(c.contact_id)) return;
      l.contactsById.set(c.contact_id, c);
      push(l.byEmail, c.email, c);
      if (c.intercom_contact_id) push(l.byIntercom, c.intercom_contact_id, c);
      if (c.external_user_id) push(l.byExternal, c.external_user_id, c);
    };
    const by = async (col: 'contact_id' | 'email' | 'intercom_contact_id' | 'external_user_id', values: string[]) => {
      for (const part of chunks(values)) for (const c of await db.selectFrom('contacts').select(contactCols).where(col, 'in', part).execute()) add(c);
    };
    await by('contact_id', distinct(messages.map((m) => m.contact_id)));
    // A message found by the provider's id settles whom it concerns; the rest are found by who they name.
    const unresolved = rest.filter((m) => !(m.identity.message_ids ?? []).some((id) => l.byProviderId.has(id)));
    await by('email', distinct(unresolved.map((m) => m.identity.email)));
    await by('intercom_contact_id', distinct(unresolved.map((m) => m.identity.intercom_contact_id)));
    await by('external_user_id', distinct(unresolved.map((m) => m.identity.external_user_id)));
    for (const part of chunks(distinct(unresolved.map((m) => m.identity.client_id)))) {
      for (const c of await db.selectFrom('clients').select('client_id').where('client_id', 'in', part).execute()) l.clients.add(c.client_id);
    }
    return l;
  }

  /** The message an event is about, if it is one of ours. */
  private message(provider: Endpoint, m: Interpretation, l: Lookups): OutboxRef | undefined {
    const byKey = m.identity.outbox_key ? l.byKey.get(m.identity.outbox_key) : undefined;
    if (byKey) return byKey;
    for (const id of m.identity.message_ids ?? []) {
      // One SendGrid request may carry several recipients under one X-Message-Id: the address decides.
      const found = (l.byProviderId.get(id) ?? []).find((r) =>
        provider === 'sendgrid' ? r.channel === 'email' && r.recipient_email.toLowerCase() === m.identity.email : r.channel !== 'email',
      );
      if (found) return found;
    }
    return undefined;
  }

  private targets(provider: Endpoint, m: Interpretation, message: OutboxRef | undefined, l: Lookups): { targets: Target[]; note?: string } {
    const asTarget = (c: ContactRef): Target => ({ client_id: c.client_id, contact_id: c.contact_id, intercom_contact_id: c.intercom_contact_id });
    if (message) return { targets: [asTarget(l.contactsById.get(message.contact_id) ?? { ...message, email: message.recipient_email, external_user_id: null, intercom_contact_id: null })] };
    const { email, intercom_contact_id: icId, external_user_id: ext, client_id } = m.identity;
    if (provider === 'events' && client_id) {
      if (!l.clients.has(client_id)) return { targets: [] };
      const atClient = (list?: ContactRef[]) => list?.filter((c) => c.client_id === client_id) ?? [];
      const contacts = ext ? atClient(l.byExternal.get(ext)) : email ? atClient(l.byEmail.get(email)) : [];
      if (contacts.length) return { targets: contacts.map(asTarget) };
      return { targets: [{ client_id, contact_id: null }], note: ext || email ? 'recorded for the client (the named person is not a roster contact)' : undefined };
    }
    const candidates = [icId && l.byIntercom.get(icId), ext && l.byExternal.get(ext), email && l.byEmail.get(email)];
    const found = candidates.find((c): c is ContactRef[] => Array.isArray(c) && c.length > 0) ?? [];
    return { targets: found.map(asTarget) };
  }

  private plan(items: Array<{ row: InboxRow; meaning: Interpretation }>, l: Lookups): Plan {
    const plan: Plan = { consent: [], events: [], timeline: [], engagement: [], links: [], outcomes: new Map() };
    const settle = (id: number, state: InboxState, note: string) => {
      const k = `${state}\u0000${note}`;
      const o = plan.outcomes.get(k);
      if (o) o.ids.push(id);
      else plan.outcomes.set(k, { ids: [id], state, note });
    };
    for (const { row, meaning: m } of items) {
      const provider = row.provider as Endpoint;
      if (m.ignored) {
        settle(row.inbox_id, 'ignored', m.ignored);
        continue;
      }
      if (m.noAction) {
        settle(row.inbox_id, 'processed', m.noAction);
        continue;
      }
      const source = `webhook:${provider}`;
      const providerEventId = row.dedup_key.slice(row.dedup_key.indexOf(':') + 1);
      const message = this.message(provider, m, l);
      const { targets, note } = this.targets(provider, m, message, l);
      const origin = message
        ? { outbox_key: message.idempotency_key, channel: message.channel, [message.source_kind === 'campaign' ? 'campaign_id' : 'workflow_id']: message.source_id }
        : {};
      const properties = { ...m.properties, ...(provider === 'sendgrid' && m.identity.email ? { email: m.identity.email } : {}), ...origin };

      if (m.consent) {
        // Consent is about the address: every roster contact with it, whatever matched the event.
        const emails = [...new Set([m.identity.email, message?.recipient_email, ...targets.map((t) => (t.contact_id ? l.contactsById.get(t.contact_id)?.email : undefined))].filter((e): e is string => !!e))];
        if (emails.length) plan.consent.push({ change: m.consent, emails, source: provider, at: row.occurred_at, data: { event: row.event_type, event_id: providerEventId, ...origin } });
      }
      if (!targets.length) {
        settle(row.inbox_id, 'unmatched', UNMATCHED[provider]);
        continue;
      }
      targets.forEach((t) => {
        if (m.name) {
          plan.events.push({
            name: m.name,
            client_id: t.client_id,
            contact_id: t.contact_id,
            properties,
            occurred_at: row.occurred_at,
            source,
            source_ref: message?.idempotency_key ?? null,
            // One event per contact: a second contact sharing the address gets its own key.
            dedup_key: targets.length > 1 ? `${row.dedup_key}:${t.contact_id ?? t.client_id}` : row.dedup_key,
          });
        }
        if (m.timeline) {
          plan.timeline.push({
            client_id: t.client_id,
            contact_id: t.contact_id,
            type: 'inbound_event',
            channel: TIMELINE_CHANNEL[provider],
            actor: source,
            summary: message ? `${m.timeline.summary} (${message.source_kind} ${message.source_id}, ${message.channel})` : m.timeline.summary,
            outcome: m.timeline.outcome,
            provider_ids: { event_id: providerEventId },
            data: { event: row.event_type, name: m.name, occurred_at: row.occurred_at, ...properties },
          });
        }
        if (m.intercom && t.contact_id && t.intercom_contact_id !== m.intercom.id && !t.intercom_contact_id) {
          plan.links.push({ contact_id: t.contact_id, intercom_contact_id: m.intercom.id, role: m.intercom.role });
        }
      });
      if (message && m.engagement) {
        plan.engagement.push({ outbox_key: message.idempotency_key, kind: m.engagement, source_kind: message.source_kind, source_id: message.source_id, channel: message.channel, first_at: row.occurred_at });
      }
      settle(row.inbox_id, 'processed', note ?? 'recorded');
    }
    // The same message and kind twice in one batch (an open and its repeat): one row.
    const seen = new Set<string>();
    plan.engagement = plan.engagement.filter((e) => {
      const k = `${e.outbox_key}\u0000${e.kind}`;
      return !seen.has(k) && (seen.add(k), true);
    });
    return plan;
  }
}
