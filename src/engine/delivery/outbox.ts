import { sql, type Kysely, type Selectable } from 'kysely';
import { prepared } from '../../store/prepared.js';
import type { Database, OutboxTable } from '../../store/schema.js';
import type { MessageContent, MessageMeta, MessagePolicy, OutboundMessage, SourceKind } from './message.js';

/**
 * The durable outbox: one row per message, written by a producer (campaign confirmation, automation
 * step) in the producer's own transaction, before any delivery. States:
 * queued → sending → sent | failed | unknown, or queued → cancelled | skipped.
 *
 * A row is leased while a dispatcher holds it; it is `sending` only while a request that may have been
 * accepted is in flight (marked right before the request is written, see request-hooks.ts). A refused
 * request (429, 503, refused connection) puts it straight back to `queued`. A `sending` row whose holder
 * stopped renewing the lease is in doubt: it becomes `unknown` and is never sent again.
 */

export type OutboxRow = Selectable<OutboxTable>;
export type OutboxState = 'queued' | 'sending' | 'sent' | 'failed' | 'cancelled' | 'unknown' | 'skipped';
/** Rows of a producer that has not committed them yet (never claimed; removed if the producer gives up). */
export const STAGED = 'staged';
export const OUTBOX_STATES: OutboxState[] = ['queued', 'sending', 'sent', 'failed', 'cancelled', 'unknown', 'skipped'];

const iso = (ms: number) => new Date(ms).toISOString();

/** 23 columns a row: stay well under SQLite's and PostgreSQL's bound-parameter limits. */
const INSERT_CHUNK = 400;

/**
 * Writes messages; a key already present is left as it is (a producer may safely write twice). Returns
 * rows written. A message with `skip` is recorded as already `skipped`, never delivered. `staged` rows are invisible to delivery until their producer commits them to `queued`
 * (a campaign confirmation writes its messages as it renders them, then commits them in one step).
 */
export async function insertMessages(db: Kysely<Database>, messages: OutboundMessage[], now = Date.now(), state: 'queued' | 'staged' = 'queued'): Promise<number> {
  let written = 0;
  const at = iso(now);
  for (let i = 0; i < messages.length; i += INSERT_CHUNK) {
    const rows = messages.slice(i, i + INSERT_CHUNK).map((m) => ({
      source_kind: m.source_kind,
      source_id: m.source_id,
      source_ref: m.source_ref ?? null,
      contact_id: m.contact_id,
      client_id: m.client_id,
      channel: m.channel,
      idempotency_key: m.idempotency_key,
      recipient_email: m.content.to_email,
      payload: JSON.stringify(m.content),
      meta: JSON.stringify(m.meta),
      policy: m.policy ? JSON.stringify(m.policy) : null,
      state: m.skip ? 'skipped' : state,
      error_code: m.skip?.code ?? null,
      error_message: m.skip?.message ?? null,
      attempts: 0,
      not_before: m.not_before,
      updated_at: at,
    }));
    const r = await db.insertInto('outbox').values(rows).onConflict((oc) => oc.column('idempotency_key').doNothing()).executeTakeFirst();
    written += Number(r.numInsertedOrUpdatedRows ?? 0);
  }
  return written;
}

// A row is read several times on its way (batch key, lookup, request, timeline, follow-ups): parsed once.
// Callers treat what they get as read-only; a row read again from the database is a new object.
const contentOf = new WeakMap<OutboxRow, MessageContent>();
const metaOf = new WeakMap<OutboxRow, MessageMeta>();

export function parseContent(row: OutboxRow): MessageContent {
  let content = contentOf.get(row);
  if (!content) contentOf.set(row, (content = JSON.parse(row.payload) as MessageContent));
  return content;
}

export function parseMeta(row: OutboxRow): MessageMeta {
  let meta = metaOf.get(row);
  if (!meta) metaOf.set(row, (meta = JSON.parse(row.meta) as MessageMeta));
  return meta;
}

export function parsePolicy(row: OutboxRow): MessagePolicy | undefined {
  return row.policy ? (JSON.parse(row.policy) as MessagePolicy) : undefined;
}

// finish's statement, one per shape (sent_at kept or cleared), built once per number of rows (prepared.ts).
// A settled group is written in one statement per outcome (state and error), each row with its own provider
// message id: a group of answers costs one statement, not one per message.
const finishKeepingSentAt = finishStatement(false);
const finishClearingSentAt = finishStatement(true);
/** Rows per finish statement: within what prepared() keeps compiled. */
const FINISH_CHUNK = 64;

function finishStatement(clearSentAt: boolean) {
  return prepared(
    ['state', 'error_code', 'error_message', 'at'] as const,
    (db, p) =>
      db
        .updateTable('outbox')
        .set({
          state: p.state as OutboxState,
          // Each row's own id: `case outbox_id when <id> then <provider id> …`.
          provider_message_id: sql<string | null>`case outbox_id ${sql.join(
            p.ids.map((id, i) => sql`when ${id} then ${p.provider_message_ids[i]}`),
            sql` `,
          )} end`,
          error_code: p.error_code,
          error_message: p.error_message,
          updated_at: p.at,
          ...(clearSentAt ? { sent_at: null } : {}),
          lease_owner: null,
          lease_until: null,
        })
        .where('outbox_id', 'in', p.ids as unknown as number[])
        // Never over another final state: a peer that found this row's lease run out (its holder lagging,
        // not dead) marks it `unknown` and records that too; the holder's real answer, if it comes, wins.
        .where('state', 'in', ['queued', 'sending', 'unknown']),
    ['ids', 'provider_message_ids'] as const,
  );
}

/** A row's final state, as finishMany records it. */
export interface Finish {
  row: OutboxRow;
  state: Exclude<OutboxState, 'queued' | 'sending' | 'cancelled'>;
  provider_message_id?: string;
  error_code?: string;
  error_message?: string;
}

// claim's statement: due rows, oldest first, not leased by a live holder, none of the blocked channels.
function claimStatementFor(skipLocked: boolean) {
  return prepared(['owner', 'until', 'now', 'limit'] as const, (db, p) => {
    let due = db
      .selectFrom('outbox')
      .select('outbox_id')
      .where('state', '=', 'queued')
      .where('not_before', '<=', p.now)
      .where((eb) => eb.or([eb('lease_until', 'is', null), eb('lease_until', '<', p.now)]))
      .orderBy('not_before')
      .orderBy('outbox_id')
      .limit(p.limit as unknown as number);
    if (p.blocked.length) due = due.where('channel', 'not in', p.blocked);
    // Several server instances may share a PostgreSQL database: each takes different rows.
    if (skipLocked) due = due.forUpdate().skipLocked();
    return db.updateTable('outbox').set({ lease_owner: p.owner, lease_until: p.until }).where('outbox_id', 'in', due).returningAll();
  }, ['blocked'] as const);
}
const claimStatement = claimStatementFor(false);
const claimSkippingLocked = claimStatementFor(true);

// recoverExpired's statements, every CAMPAIGN_LEASE_MS / 3. Only a leased row has a lease to run out (owner and
// until are set and cleared together), so they read the holders' index of leased rows. By state, the queued
// one would read every queued row (5 ms a call at 20,000 queued, growing with the audience), and SQLite
// chooses the state index unless told: without statistics an equality wins, so that term is an expression
// (`state || ''`) no index serves. Rows in `sending` are the few in flight: by either index.
export const expiredSendingStatement = prepared(['now'] as const, (db, p) =>
  db
    .updateTable('outbox')
    .set({
      state: 'unknown',
      error_code: 'timeout',
      error_message:
        'The server stopped (or could not record the answer) while this message was being sent, so it may or may not have been delivered. It was not sent again.',
      updated_at: p.now,
      lease_owner: null,
      lease_until: null,
    })
    .where('lease_owner', 'is not', null)
    .where('state', '=', 'sending')
    .where('lease_until', '<', p.now)
    .returningAll(),
);
export const expiredQueuedStatement = prepared(['now'] as const, (db, p) =>
  db
    .updateTable('outbox')
    .set({ lease_owner: null, lease_until: null })
    .where('lease_owner', 'is not', null)
    .where(sql<string>`state || ''`, '=', 'queued')
    .where('lease_until', '<', p.now),
);

// markSendingMany's statement: only a row still queued and held by this owner becomes `sending`.
export const markSendingStatement = prepared(
  ['owner', 'at', 'until'] as const,
  (db, p) =>
    db
      .updateTable('outbox')
      .set({ state: 'sending', attempts: sql`attempts + 1`, updated_at: p.at, sent_at: p.at, lease_until: p.until })
      .where('outbox_id', 'in', p.ids as unknown as number[])
      .where('lease_owner', '=', p.owner)
      .where('state', '=', 'queued')
      .returning('outbox_id'),
  ['ids'] as const,
);

export class OutboxRepository {
  constructor(
    readonly db: Kysely<Database>,
    readonly dialect: 'sqlite' | 'postgres',
  ) {}

  /** Leases up to `limit` due rows for `owner`, skipping the blocked channels. */
  async claim(owner: string, limit: number, blockedChannels: string[], leaseMs: number, now = Date.now()): Promise<OutboxRow[]> {
    if (limit <= 0) return [];
    const nowIso = iso(now);
    const run = this.dialect === 'postgres' ? claimSkippingLocked : claimStatement;
    const r = await run(this.db, { owner, until: iso(now + leaseMs), now: nowIso, limit, blocked: blockedChannels });
    return r.rows as OutboxRow[];
  }

  /** The point of no return: true if this holder may now send the row (it was not cancelled or taken). */
  async markSending(db: Kysely<Database>, row: OutboxRow, owner: string, leaseMs: number, now = Date.now()): Promise<boolean> {
    return (await this.markSendingMany(db, [row], owner, leaseMs, now)).length === 1;
  }

  /** markSending for the rows of one request; returns the ids this holder may send (the others were withdrawn). */
  async markSendingMany(db: Kysely<Database>, rows: OutboxRow[], owner: string, leaseMs: number, now = Date.now()): Promise<number[]> {
    const marked: number[] = [];
    for (let i = 0; i < rows.length; i += 500) {
      const r = await markSendingStatement(db, { ids: rows.slice(i, i + 500).map((x) => x.outbox_id), owner, at: iso(now), until: iso(now + leaseMs) });
      for (const x of r.rows as Array<{ outbox_id: number | string }>) marked.push(Number(x.outbox_id));
    }
    return marked;
  }

  /**
   * Settles rows for good: one statement per outcome (state and error) and up to FINISH_CHUNK rows.
   * `sent_at` stays for sent and unknown (it may have gone out), and is cleared otherwise. A row already
   * settled as sent, failed or skipped keeps that state.
   */
  async finishMany(rows: readonly Finish[], now = Date.now(), db: Kysely<Database> = this.db): Promise<void> {
    const groups = new Map<string, Finish[]>();
    for (const f of rows) {
      const key = JSON.stringify([f.state, f.error_code ?? null, f.error_message ?? null]);
      const group = groups.get(key);
      if (group) group.push(f);
      else groups.set(key, [f]);
    }
    const at = iso(now);
    for (const group of groups.values()) {
      const { state, error_code, error_message } = group[0]!;
      const run = state === 'sent' || state === 'unknown' ? finishKeepingSentAt : finishClearingSentAt;
      for (let i = 0; i < group.length; i += FINISH_CHUNK) {
        const chunk = group.slice(i, i + FINISH_CHUNK);
        await run(db, {
          state,
          error_code: error_code ?? null,
          error_message: error_message ?? null,
          at,
          ids: chunk.map((f) => f.row.outbox_id),
          provider_message_ids: chunk.map((f) => f.provider_message_id ?? null),
        });
      }
    }
  }

  /** Not sent (provably): back to the queue, due again at `notBefore`, the reason kept for status. */
  async requeue(row: OutboxRow, notBefore: number, error: { code: string; message: string }, now = Date.now()): Promise<void> {
    await this.requeueMany([row], notBefore, error, now);
  }

  /** `requeue` for the rows of one request, in one statement: they come due together, to go out together again. */
  async requeueMany(rows: OutboxRow[], notBefore: number, error: { code: string; message: string }, now = Date.now()): Promise<void> {
    if (!rows.length) return;
    await this.db
      .updateTable('outbox')
      .set({
        state: 'queued',
        not_before: iso(notBefore),
        error_code: error.code,
        error_message: error.message,
        updated_at: iso(now),
        sent_at: null,
        lease_owner: null,
        lease_until: null,
      })
      .where('outbox_id', 'in', rows.map((r) => r.outbox_id))
      .where('state', 'in', ['queued', 'sending'])
      .execute();
  }

  /** Gives back rows this holder claimed but did not start (stopping, or their channel got blocked). */
  async release(owner: string, ids: number[]): Promise<void> {
    if (!ids.length) return;
    await this.db
      .updateTable('outbox')
      .set({ lease_owner: null, lease_until: null })
      .where('outbox_id', 'in', ids)
      .where('lease_owner', '=', owner)
      .where('state', '=', 'queued')
      .execute();
  }

  /** Keeps this holder's leases alive, except those of `except` (rows it no longer holds: their outcome was lost). */
  async renewLeases(owner: string, leaseMs: number, now = Date.now(), except: number[] = []): Promise<void> {
    let held = this.db.selectFrom('outbox').select('outbox_id').where('lease_owner', '=', owner).where('state', 'in', ['queued', 'sending']);
    if (except.length) held = held.where('outbox_id', 'not in', except);
    // A row locked right now is being settled or marked by this holder (which sets its lease anyway): skipped,
    // so a renewal never waits on (or deadlocks with) a settlement of the same rows.
    if (this.dialect === 'postgres') held = held.forUpdate().skipLocked();
    await this.db.updateTable('outbox').set({ lease_until: iso(now + leaseMs) }).where('outbox_id', 'in', held).execute();
  }

  /** Rows whose holder vanished: queued ones become claimable again, sending ones are in doubt. */
  async recoverExpired(now = Date.now()): Promise<{ unknown: OutboxRow[]; released: number }> {
    const at = iso(now);
    const unknown = (await expiredSendingStatement(this.db, { now: at })).rows as OutboxRow[];
    const released = Number((await expiredQueuedStatement(this.db, { now: at })).numAffectedRows ?? 0);
    return { unknown, released };
  }

  /** Commits a producer's staged rows to the queue (inside the producer's transaction). */
  async commitStaged(db: Kysely<Database>, kind: SourceKind, sourceId: string, now = Date.now()): Promise<number> {
    const r = await db
      .updateTable('outbox')
      .set({ state: 'queued', updated_at: iso(now) })
      .where('source_kind', '=', kind)
      .where('source_id', '=', sourceId)
      .where('state', '=', STAGED)
      .executeTakeFirst();
    return Number(r.numUpdatedRows);
  }

  /** Drops staged rows: of one producer, or every producer's older than `olderThan` (left by a crash mid-confirmation). */
  async dropStaged(opts: { kind: SourceKind; sourceId: string } | { olderThan: number }): Promise<void> {
    let q = this.db.deleteFrom('outbox').where('state', '=', STAGED);
    if ('olderThan' in opts) q = q.where('updated_at', '<', iso(opts.olderThan));
    else q = q.where('source_kind', '=', opts.kind).where('source_id', '=', opts.sourceId);
    await q.execute();
  }

  async cancelQueued(kind: SourceKind, sourceId: string, now = Date.now(), db: Kysely<Database> = this.db): Promise<number> {
    const r = await db
      .updateTable('outbox')
      .set({ state: 'cancelled', updated_at: iso(now), lease_owner: null, lease_until: null })
      .where('source_kind', '=', kind)
      .where('source_id', '=', sourceId)
      .where('state', '=', 'queued')
      .executeTakeFirst();
    return Number(r.numUpdatedRows);
  }

  async countsByStateAndChannel(kind: SourceKind, sourceId: string): Promise<Array<{ state: string; channel: string; n: number }>> {
    const rows = await this.db
      .selectFrom('outbox')
      .select(['state', 'channel', (eb) => eb.fn.countAll<number | string>().as('n')])
      .where('source_kind', '=', kind)
      .where('source_id', '=', sourceId)
      .groupBy(['state', 'channel'])
      .execute();
    return rows.map((r) => ({ state: r.state, channel: r.channel, n: Number(r.n) }));
  }

  /** Why rows were skipped, or are waiting (queued with a reason), by error code. */
  async reasons(kind: SourceKind, sourceId: string, states: OutboxState[]): Promise<Array<{ state: string; code: string; n: number }>> {
    const rows = await this.db
      .selectFrom('outbox')
      .select(['state', 'error_code', (eb) => eb.fn.countAll<number | string>().as('n')])
      .where('source_kind', '=', kind)
      .where('source_id', '=', sourceId)
      .where('state', 'in', states)
      .where('error_code', 'is not', null)
      .groupBy(['state', 'error_code'])
      .execute();
    return rows.map((r) => ({ state: r.state, code: String(r.error_code), n: Number(r.n) }));
  }

  async lastSettledAt(kind: SourceKind, sourceId: string): Promise<string | undefined> {
    const r = await this.db
      .selectFrom('outbox')
      .select((eb) => eb.fn.max('updated_at').as('at'))
      .where('source_kind', '=', kind)
      .where('source_id', '=', sourceId)
      .executeTakeFirst();
    return r?.at ? String(r.at) : undefined;
  }

  async problems(kind: SourceKind, sourceId: string, limit: number): Promise<OutboxRow[]> {
    return this.db
      .selectFrom('outbox')
      .selectAll()
      .where('source_kind', '=', kind)
      .where('source_id', '=', sourceId)
      .where('state', 'in', ['failed', 'unknown'])
      .orderBy('outbox_id')
      .limit(limit)
      .execute();
  }

  /**
   * When the next queued row can be claimed: due and not leased by someone else. A row leased by a
   * stopped holder is claimable only once its lease runs out, so waiting for it costs no polling.
   * Rows of `blockedChannels` (an open circuit) are left out: they wait for the circuit, not the clock.
   */
  async nextClaimableAt(blockedChannels: string[] = []): Promise<number | undefined> {
    let q = this.db
      .selectFrom('outbox')
      .select(sql<string | null>`min(case when lease_until is not null and lease_until > not_before then lease_until else not_before end)`.as('next'))
      .where('state', '=', 'queued');
    if (blockedChannels.length) q = q.where('channel', 'not in', blockedChannels);
    const r = await q.executeTakeFirst();
    return r?.next ? Date.parse(String(r.next)) : undefined;
  }

  /** When each of a contact's recent messages of these kinds went out (newest last), for the frequency cap. */
  async recentSendTimes(db: Kysely<Database>, contactId: string, kinds: SourceKind[], since: number): Promise<number[]> {
    const rows = await db
      .selectFrom('outbox')
      .select('sent_at')
      .where('contact_id', '=', contactId)
      .where('sent_at', '>=', iso(since))
      .where('state', 'in', ['sending', 'sent', 'unknown'])
      .where('source_kind', 'in', kinds)
      .orderBy('sent_at')
      .execute();
    return rows.map((r) => Date.parse(String(r.sent_at)));
  }
}
