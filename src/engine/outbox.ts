import { sql, type Kysely, type Selectable, type Transaction } from 'kysely';
import type { Database, OutboxTable } from '../store/schema.js';
import type { PlannedDelivery, RecipientPayload } from './campaign-plan.js';

/**
 * The durable outbox: one row per (campaign, contact, channel), written in the confirming transaction
 * before any delivery. States: queued → sending → sent | failed | unknown, or queued → cancelled.
 *
 * A row is leased while a dispatcher holds it; it is marked `sending` only right before its request is
 * written (see request-hooks.ts). A `sending` row whose holder stopped renewing the lease is in doubt:
 * it becomes `unknown` and is never sent again.
 */

export type OutboxRow = Selectable<OutboxTable>;
export type OutboxState = 'queued' | 'sending' | 'sent' | 'failed' | 'cancelled' | 'unknown';

const iso = (ms: number) => new Date(ms).toISOString();

export function idempotencyKey(campaignId: string, contactId: string, channel: string): string {
  return `${campaignId}:${contactId}:${channel}`;
}

export async function insertOutboxRows(
  trx: Transaction<Database>,
  campaignId: string,
  deliveries: PlannedDelivery[],
  notBefore: string,
  now: string,
): Promise<void> {
  const rows = deliveries.map((d) => ({
    campaign_id: campaignId,
    contact_id: d.contact_id,
    client_id: d.client_id,
    channel: d.channel,
    idempotency_key: idempotencyKey(campaignId, d.contact_id, d.channel),
    recipient_email: d.payload.to_email,
    payload: JSON.stringify(d.payload),
    state: 'queued',
    attempts: 0,
    not_before: notBefore,
    updated_at: now,
  }));
  // 17 columns a row: stay well under SQLite's and PostgreSQL's bound-parameter limits.
  for (let i = 0; i < rows.length; i += 500) await trx.insertInto('outbox').values(rows.slice(i, i + 500)).execute();
}

export function parsePayload(row: OutboxRow): RecipientPayload {
  return JSON.parse(row.payload) as RecipientPayload;
}

export class OutboxRepository {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly dialect: 'sqlite' | 'postgres',
  ) {}

  /** Leases up to `limit` due rows for `owner`, skipping the blocked channels. */
  async claim(owner: string, limit: number, blockedChannels: string[], leaseMs: number, now = Date.now()): Promise<OutboxRow[]> {
    if (limit <= 0) return [];
    const nowIso = iso(now);
    let due = this.db
      .selectFrom('outbox')
      .select('outbox_id')
      .where('state', '=', 'queued')
      .where('not_before', '<=', nowIso)
      .where((eb) => eb.or([eb('lease_until', 'is', null), eb('lease_until', '<', nowIso)]))
      .orderBy('not_before')
      .orderBy('outbox_id')
      .limit(limit);
    if (blockedChannels.length) due = due.where('channel', 'not in', blockedChannels);
    // Several server instances may share a PostgreSQL database: each takes different rows.
    if (this.dialect === 'postgres') due = due.forUpdate().skipLocked();
    return this.db
      .updateTable('outbox')
      .set({ lease_owner: owner, lease_until: iso(now + leaseMs) })
      .where('outbox_id', 'in', due)
      .returningAll()
      .execute();
  }

  /** The point of no return: true if this holder may now send the row (it was not cancelled or taken). */
  async markSending(row: OutboxRow, owner: string, leaseMs: number, now = Date.now()): Promise<boolean> {
    const r = await this.db
      .updateTable('outbox')
      .set({ state: 'sending', attempts: sql`attempts + 1`, updated_at: iso(now), lease_until: iso(now + leaseMs) })
      .where('outbox_id', '=', row.outbox_id)
      .where('lease_owner', '=', owner)
      .where('state', '=', 'queued')
      .executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  }

  async finish(
    row: OutboxRow,
    state: Exclude<OutboxState, 'queued' | 'sending'>,
    fields: { provider_message_id?: string; error_code?: string; error_message?: string } = {},
    now = Date.now(),
  ): Promise<void> {
    await this.db
      .updateTable('outbox')
      .set({
        state,
        provider_message_id: fields.provider_message_id ?? null,
        error_code: fields.error_code ?? null,
        error_message: fields.error_message ?? null,
        updated_at: iso(now),
        sent_at: state === 'sent' ? iso(now) : null,
        lease_owner: null,
        lease_until: null,
      })
      .where('outbox_id', '=', row.outbox_id)
      .execute();
  }

  /** Not sent (provably): back to the queue, due again at `notBefore`. */
  async requeue(row: OutboxRow, notBefore: number, error: { code: string; message: string }, now = Date.now()): Promise<void> {
    await this.db
      .updateTable('outbox')
      .set({
        state: 'queued',
        not_before: iso(notBefore),
        error_code: error.code,
        error_message: error.message,
        updated_at: iso(now),
        lease_owner: null,
        lease_until: null,
      })
      .where('outbox_id', '=', row.outbox_id)
      .where('state', 'in', ['queued', 'sending'])
      .execute();
  }

  /** Keeps this holder's leases alive. */
  async renewLeases(owner: string, leaseMs: number, now = Date.now()): Promise<void> {
    await this.db
      .updateTable('outbox')
      .set({ lease_until: iso(now + leaseMs) })
      .where('lease_owner', '=', owner)
      .where('state', 'in', ['queued', 'sending'])
      .execute();
  }

  /** Rows whose holder vanished: queued ones become claimable again, sending ones are in doubt. */
  async recoverExpired(now = Date.now()): Promise<{ unknown: OutboxRow[] }> {
    const nowIso = iso(now);
    const unknown = await this.db
      .updateTable('outbox')
      .set({
        state: 'unknown',
        error_code: 'timeout',
        error_message:
          'The server stopped while this message was being sent, so it may or may not have been delivered. It was not sent again.',
        updated_at: nowIso,
        lease_owner: null,
        lease_until: null,
      })
      .where('state', '=', 'sending')
      .where('lease_until', '<', nowIso)
      .returningAll()
      .execute();
    await this.db
      .updateTable('outbox')
      .set({ lease_owner: null, lease_until: null })
      .where('state', '=', 'queued')
      .where('lease_until', '<', nowIso)
      .execute();
    return { unknown };
  }

  async cancelQueued(campaignId: string, now = Date.now()): Promise<number> {
    const r = await this.db
      .updateTable('outbox')
      .set({ state: 'cancelled', updated_at: iso(now), lease_owner: null, lease_until: null })
      .where('campaign_id', '=', campaignId)
      .where('state', '=', 'queued')
      .executeTakeFirst();
    return Number(r.numUpdatedRows);
  }

  async countsByStateAndChannel(campaignId: string): Promise<Array<{ state: string; channel: string; n: number }>> {
    const rows = await this.db
      .selectFrom('outbox')
      .select(['state', 'channel', (eb) => eb.fn.countAll<number | string>().as('n')])
      .where('campaign_id', '=', campaignId)
      .groupBy(['state', 'channel'])
      .execute();
    return rows.map((r) => ({ state: r.state, channel: r.channel, n: Number(r.n) }));
  }

  async lastSettledAt(campaignId: string): Promise<string | undefined> {
    const r = await this.db
      .selectFrom('outbox')
      .select((eb) => eb.fn.max('updated_at').as('at'))
      .where('campaign_id', '=', campaignId)
      .executeTakeFirst();
    return r?.at ? String(r.at) : undefined;
  }

  async problems(campaignId: string, limit: number): Promise<OutboxRow[]> {
    return this.db
      .selectFrom('outbox')
      .selectAll()
      .where('campaign_id', '=', campaignId)
      .where('state', 'in', ['failed', 'unknown'])
      .orderBy('outbox_id')
      .limit(limit)
      .execute();
  }

  /** Campaigns that still have rows queued or in flight. */
  async activeCampaignIds(): Promise<string[]> {
    const rows = await this.db.selectFrom('outbox').select('campaign_id').distinct().where('state', 'in', ['queued', 'sending']).execute();
    return rows.map((r) => r.campaign_id);
  }

  /** When the next queued row becomes due (to sleep until a scheduled campaign). */
  async nextDueAt(): Promise<number | undefined> {
    const r = await this.db
      .selectFrom('outbox')
      .select((eb) => eb.fn.min('not_before').as('next'))
      .where('state', '=', 'queued')
      .executeTakeFirst();
    return r?.next ? Date.parse(String(r.next)) : undefined;
  }
}
