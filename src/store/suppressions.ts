import type { Kysely, Selectable } from 'kysely';
import { prepared } from './prepared.js';
import type { Database, SuppressionsTable } from './schema.js';

/**
 * The suppression list: an opt-out belongs to the address, everywhere, for good. Keyed by the
 * normalised address (trimmed, lower-cased) with its scope, source and kind; removing or re-adding a
 * roster contact never touches it. Every send path checks it (direct tools, campaigns, automations,
 * the outbox at the moment of sending); verified provider events land in it whether or not the address
 * is in the roster. An opt-out from any source holds until the same source lifts the same scope (or a
 * person approves a resubscribe); a spam report, hard bounce or provider drop is never lifted by a tool.
 *
 * The roster rows' consent columns (unsubscribed, email_status…) mirror the list for the contacts that
 * carry each address: they are what the roster tools show and what previews read; the list stays the
 * authority at the moment of sending.
 */

export type SuppressionRow = Selectable<SuppressionsTable>;

export const SUPPRESSION_KINDS = ['unsubscribed', 'group_unsubscribed', 'bounced', 'spam_report', 'dropped'] as const;
export type SuppressionKind = (typeof SUPPRESSION_KINDS)[number];

/** Kinds only the recipient can undo, through the provider: no tool lifts them, no override sends past them. */
export const PERMANENT_KINDS: ReadonlySet<string> = new Set(['bounced', 'spam_report', 'dropped']);

/** Which suppression is shown first when an address has several. */
const RANK: Record<string, number> = { bounced: 5, spam_report: 5, dropped: 4, unsubscribed: 2, group_unsubscribed: 1 };

export function normalizeAddress(address: string): string {
  return address.trim().toLowerCase();
}

export interface NewSuppression {
  address: string;
  scope: string;
  source: string;
  kind: SuppressionKind;
  reason?: string | null;
  at: string;
  by?: string | null;
  data?: Record<string, unknown>;
}

/** What a lift may touch: the same source and scope (provider events), or what a person approved. */
export interface LiftFilter {
  addresses: string[];
  kinds: SuppressionKind[];
  scope?: string;
  source?: string;
  /** Lift only a suppression set no later than this (a resubscribe older than the unsubscribe lifts nothing). */
  notAfter?: string;
  by: string;
  reason?: string | null;
  at: string;
}

const CHUNK = 500;

/** The active entries of some addresses: run for every group of messages admitted. */
const activeByAddress = prepared([] as const, (db, p) => db.selectFrom('suppressions').selectAll().where('address', 'in', p.addresses).where('lifted_at', 'is', null), ['addresses'] as const);

/** A suppression that stops a message on this channel: scope `all` stops everything; the rest stop email. */
export function blocks(row: Pick<SuppressionRow, 'scope'>, emailChannel: boolean): boolean {
  return row.scope === 'all' || emailChannel;
}

/** The active suppressions of these addresses, by normalised address. */
export async function activeSuppressions(db: Kysely<Database>, addresses: Array<string | null | undefined>): Promise<Map<string, SuppressionRow[]>> {
  const wanted = [...new Set(addresses.filter((a): a is string => !!a).map(normalizeAddress).filter(Boolean))];
  const out = new Map<string, SuppressionRow[]>();
  for (let i = 0; i < wanted.length; i += CHUNK) {
    const part = wanted.slice(i, i + CHUNK);
    const rows = (await activeByAddress(db, { addresses: part })).rows as SuppressionRow[];
    for (const r of rows) (out.get(r.address) ?? out.set(r.address, []).get(r.address)!).push(r);
  }
  for (const list of out.values()) list.sort((a, b) => (RANK[b.kind] ?? 0) - (RANK[a.kind] ?? 0) || (a.set_at < b.set_at ? 1 : -1));
  return out;
}

/** The first suppression (strongest) of this address that stops a message on this channel. */
export function blockingSuppression(rows: SuppressionRow[] | undefined, emailChannel: boolean): SuppressionRow | undefined {
  return rows?.find((r) => blocks(r, emailChannel));
}

/** Adds (or renews) suppressions; returns those that were not active before. Mirrors the roster rows. */
export async function addSuppressions(db: Kysely<Database>, entries: NewSuppression[]): Promise<NewSuppression[]> {
  const fresh: NewSuppression[] = [];
  for (const e of entries) {
    const address = normalizeAddress(e.address);
    if (!address) continue;
    const key = { address, scope: e.scope, source: e.source, kind: e.kind };
    const existing = await db
      .selectFrom('suppressions')
      .select(['lifted_at', 'set_at'])
      .where('address', '=', address)
      .where('scope', '=', key.scope)
      .where('source', '=', key.source)
      .where('kind', '=', key.kind)
      .executeTakeFirst();
    const values = { reason: e.reason ?? null, set_at: e.at, set_by: e.by ?? null, data: JSON.stringify(e.data ?? {}), lifted_at: null, lifted_by: null, lift_reason: null };
    if (!existing) {
      // Another instance may add the same entry at the same moment: the first one stands.
      const inserted = await db
        .insertInto('suppressions')
        .values({ ...key, ...values })
        .onConflict((oc) => oc.columns(['address', 'scope', 'source', 'kind']).doNothing())
        .executeTakeFirst();
      if (Number(inserted.numInsertedOrUpdatedRows ?? 0) === 1) fresh.push({ ...e, address });
    } else if (existing.lifted_at !== null) {
      // Lifted earlier: a new opt-out counts again (an old event replayed after the lift does not).
      if (existing.lifted_at <= e.at) {
        await db.updateTable('suppressions').set(values).where('address', '=', address).where('scope', '=', key.scope).where('source', '=', key.source).where('kind', '=', key.kind).execute();
        fresh.push({ ...e, address });
      }
    }
    // Already active: the first report stands (its time and reason).
  }
  if (fresh.length) await syncContactConsent(db, fresh.map((f) => f.address));
  return fresh;
}

/** Lifts what the filter allows (never a permanent kind); returns the rows lifted. Mirrors the roster rows. */
export async function liftSuppressions(db: Kysely<Database>, f: LiftFilter): Promise<SuppressionRow[]> {
  const addresses = [...new Set(f.addresses.map(normalizeAddress).filter(Boolean))];
  const kinds = f.kinds.filter((k) => !PERMANENT_KINDS.has(k));
  if (!addresses.length || !kinds.length) return [];
  let q = db.selectFrom('suppressions').selectAll().where('address', 'in', addresses).where('kind', 'in', kinds).where('lifted_at', 'is', null);
  if (f.scope !== undefined) q = q.where('scope', '=', f.scope);
  if (f.source !== undefined) q = q.where('source', '=', f.source);
  if (f.notAfter !== undefined) q = q.where('set_at', '<=', f.notAfter);
  const rows = await q.execute();
  for (const r of rows) {
    await db
      .updateTable('suppressions')
      .set({ lifted_at: f.at, lifted_by: f.by, lift_reason: f.reason ?? null })
      .where('address', '=', r.address)
      .where('scope', '=', r.scope)
      .where('source', '=', r.source)
      .where('kind', '=', r.kind)
      .execute();
  }
  if (rows.length) await syncContactConsent(db, rows.map((r) => r.address));
  return rows.map((r) => ({ ...r, lifted_at: f.at, lifted_by: f.by, lift_reason: f.reason ?? null }));
}

/** The provider name of a source (`intercom:123` → `intercom`), as the roster rows show it. */
export const sourceName = (source: string) => source.split(':')[0]!;

/**
 * Makes the consent columns of every roster contact with these addresses match the list: `unsubscribed`
 * from a scope-`all` suppression, `email_status` from the strongest email one. Called after every change
 * of the list and whenever a contact is added.
 */
export async function syncContactConsent(db: Kysely<Database>, addresses: string[]): Promise<void> {
  const wanted = [...new Set(addresses.map(normalizeAddress).filter(Boolean))];
  if (!wanted.length) return;
  const active = await activeSuppressions(db, wanted);
  const now = new Date().toISOString();
  for (const address of wanted) {
    const rows = active.get(address) ?? [];
    const all = rows.filter((r) => r.scope === 'all').sort((a, b) => (a.set_at < b.set_at ? -1 : 1))[0];
    const email = rows.find((r) => r.scope !== 'all');
    await db
      .updateTable('contacts')
      .set({
        unsubscribed: all ? 1 : 0,
        unsubscribed_at: all?.set_at ?? null,
        unsubscribe_source: all ? all.source : null,
        unsubscribe_reason: all?.reason ?? null,
        email_status: email?.kind ?? null,
        email_status_at: email?.set_at ?? null,
        email_status_source: email ? sourceName(email.source) : null,
        email_status_reason: email?.reason ?? null,
        updated_at: now,
      })
      .where('email', '=', address)
      .execute();
  }
}

export interface SuppressionView {
  address: string;
  scope: string;
  source: string;
  kind: string;
  reason: string | null;
  set_at: string;
  set_by: string | null;
  liftable_by_tool: boolean;
  lifted_at: string | null;
  lifted_by: string | null;
  lift_reason: string | null;
}

export function toSuppressionView(r: SuppressionRow): SuppressionView {
  return {
    address: r.address,
    scope: r.scope,
    source: r.source,
    kind: r.kind,
    reason: r.reason,
    set_at: r.set_at,
    set_by: r.set_by,
    liftable_by_tool: !PERMANENT_KINDS.has(r.kind),
    lifted_at: r.lifted_at,
    lifted_by: r.lifted_by,
    lift_reason: r.lift_reason,
  };
}

/** A page of the list, newest first. */
export async function listSuppressions(
  db: Kysely<Database>,
  f: { address?: string; include_lifted?: boolean; limit: number; cursor?: string },
): Promise<{ suppressions: SuppressionView[]; total: number; next_cursor?: string }> {
  let q = db.selectFrom('suppressions');
  if (f.address) q = q.where('address', '=', normalizeAddress(f.address));
  if (!f.include_lifted) q = q.where('lifted_at', 'is', null);
  const total = Number((await q.select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirst())?.n ?? 0);
  const offset = f.cursor ? decodeCursor(f.cursor) : 0;
  const rows = await q.selectAll().orderBy('set_at', 'desc').orderBy('address').orderBy('scope').orderBy('source').orderBy('kind').limit(f.limit + 1).offset(offset).execute();
  const shown = rows.slice(0, f.limit);
  return {
    suppressions: shown.map(toSuppressionView),
    total,
    next_cursor: rows.length > f.limit ? Buffer.from(JSON.stringify({ offset: offset + f.limit })).toString('base64url') : undefined,
  };
}

function decodeCursor(cursor: string): number {
  try {
    const v = JSON.parse(Buffer.from(cursor, 'base64url').toString()) as { offset?: unknown };
    if (typeof v.offset === 'number' && Number.isInteger(v.offset) && v.offset >= 0) return v.offset;
  } catch {
    // fall through
  }
  return 0;
}
