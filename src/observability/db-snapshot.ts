import type { Kysely } from 'kysely';
import type { Database } from '../store/schema.js';

/**
 * What the database says about the work of every replica together: read at scrape time (through a
 * CachedProbe), so each replica reports the same truth. Six statements, each a grouped count over a
 * table retention keeps bounded, or an index-backed minimum.
 */
export interface DbSnapshot {
  /** Outbox rows by channel and state. */
  messages: Array<{ channel: string; state: string; n: number }>;
  /** The earliest due time among queued messages already due (ISO), if any wait. */
  oldestDueQueuedAt?: string;
  /** Inbox events still waiting to be processed, per provider. */
  webhooksPending: Array<{ provider: string; n: number }>;
  /** When the oldest event still pending was received (ISO), if any. */
  oldestPendingWebhookAt?: string;
  enrollments: Array<{ state: string; n: number }>;
  workflows: Array<{ status: string; runaway: boolean; n: number }>;
}

export async function readDbSnapshot(db: Kysely<Database>, now = Date.now()): Promise<DbSnapshot> {
  const at = new Date(now).toISOString();
  const [messages, due, pending, oldestPending, enrollments, workflows] = await Promise.all([
    db.selectFrom('outbox').select(['channel', 'state', (eb) => eb.fn.countAll<number | string>().as('n')]).groupBy(['channel', 'state']).execute(),
    // outbox_due_idx (state, not_before): the first queued row that is due, without a scan.
    db.selectFrom('outbox').select('not_before').where('state', '=', 'queued').where('not_before', '<=', at).orderBy('not_before').limit(1).executeTakeFirst(),
    db.selectFrom('inbox_events').select(['provider', (eb) => eb.fn.countAll<number | string>().as('n')]).where('state', '=', 'pending').groupBy('provider').execute(),
    db.selectFrom('inbox_events').select((eb) => eb.fn.min('received_at').as('at')).where('state', '=', 'pending').executeTakeFirst(),
    db.selectFrom('workflow_enrollments').select(['state', (eb) => eb.fn.countAll<number | string>().as('n')]).groupBy('state').execute(),
    db.selectFrom('workflows').select(['status', 'pause_reason', (eb) => eb.fn.countAll<number | string>().as('n')]).groupBy(['status', 'pause_reason']).execute(),
  ]);
  return {
    messages: messages.map((r) => ({ channel: r.channel, state: r.state, n: Number(r.n) })),
    oldestDueQueuedAt: due?.not_before,
    webhooksPending: pending.map((r) => ({ provider: r.provider, n: Number(r.n) })),
    oldestPendingWebhookAt: oldestPending?.at ?? undefined,
    enrollments: enrollments.map((r) => ({ state: r.state, n: Number(r.n) })),
    workflows: workflows.map((r) => ({ status: r.status, runaway: r.pause_reason === 'runaway', n: Number(r.n) })),
  };
}
