import { createHash } from 'node:crypto';
import type { Kysely } from 'kysely';
import { toErrorBody, ToolError, type ErrorBody } from '../result.js';
import type { Database } from '../store/schema.js';

/**
 * Idempotency of direct sends, stored (it survives restarts and is shared by instances on one
 * database).
 * - With an `idempotency_key`: the first call's result is kept for the retention period; a repeat with
 *   the same key returns it and sends nothing; the same key with different content is `conflict`.
 * - Without one: an identical call (same tool and arguments) within the duplicate window is refused,
 *   naming the earlier send and how to send again on purpose.
 * A call that provably sent nothing (refused before any request left, or by the provider) releases its
 * key, so a retry can do what the first call could not. A call whose outcome is unknown keeps it: a
 * repeat is told so and sends nothing.
 */

export interface IdempotencyConfig {
  idempotencyRetentionMs: number;
  duplicateWindowMs: number;
}

export type Begun<T> = { replay: T; at: string } | { handle: Handle };

interface Handle {
  scope: string;
  key: string;
}

interface StoredOutcome<T> {
  ok?: T;
  error?: ErrorBody;
}

const iso = (ms: number) => new Date(ms).toISOString();

export function requestHash(value: unknown): string {
  return createHash('sha256').update(canonical(value)).digest('hex');
}

function canonical(value: unknown): string {
  return JSON.stringify(value, (_k, v) =>
    v && typeof v === 'object' && !Array.isArray(v) ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, (v as Record<string, unknown>)[k]])) : v,
  );
}

export class IdempotencyStore {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly cfg: IdempotencyConfig,
  ) {}

  /**
   * Claims the key for this call, or answers with what the first call returned. `summary` describes the
   * call for a later refusal ("sendgrid_send_email to ann@… 'Renewal'").
   */
  async begin<T>(scope: string, key: string | undefined, request: unknown, summary: string, now = Date.now()): Promise<Begun<T> | undefined> {
    const hash = requestHash(request);
    const explicit = key !== undefined;
    if (!explicit && this.cfg.duplicateWindowMs <= 0) return undefined;
    const k = explicit ? key : `auto:${hash}`;
    const expires = now + (explicit ? this.cfg.idempotencyRetentionMs : this.cfg.duplicateWindowMs);
    for (let round = 0; round < 2; round++) {
      const inserted = await this.db
        .insertInto('idempotency_records')
        .values({ scope, key: k, request_hash: hash, state: 'in_progress', result: null, summary, created_at: iso(now), updated_at: iso(now), expires_at: iso(expires) })
        .onConflict((oc) => oc.columns(['scope', 'key']).doNothing())
        .executeTakeFirst();
      if (Number(inserted.numInsertedOrUpdatedRows ?? 0) === 1) return { handle: { scope, key: k } };
      const existing = await this.db.selectFrom('idempotency_records').selectAll().where('scope', '=', scope).where('key', '=', k).executeTakeFirst();
      if (!existing) continue; // released meanwhile: claim it
      if (Date.parse(existing.expires_at) <= now) {
        await this.db.deleteFrom('idempotency_records').where('scope', '=', scope).where('key', '=', k).where('expires_at', '=', existing.expires_at).execute();
        continue;
      }
      if (existing.request_hash !== hash) {
        throw new ToolError(
          'conflict',
          `idempotency_key "${key}" was already used at ${existing.created_at} for a different ${scope} call (${existing.summary ?? 'other content'}). ` +
            'Nothing was sent. Use a new key for a new message.',
          { details: { policy: 'idempotency', first_call_at: existing.created_at } },
        );
      }
      if (existing.state === 'in_progress') {
        throw new ToolError(
          'conflict',
          `The same ${scope} call ${explicit ? `(idempotency_key "${key}") ` : ''}started at ${existing.created_at} has not finished, or was interrupted ` +
            'and may have been delivered. Nothing was sent now. Check with the recipient or the provider before sending again.',
          { details: { policy: explicit ? 'idempotency' : 'duplicate_window', first_call_at: existing.created_at }, outcomeUnknown: true },
        );
      }
      const stored = JSON.parse(existing.result ?? '{}') as StoredOutcome<T>;
      if (!explicit) {
        throw new ToolError(
          'conflict',
          `An identical ${summaryOf(existing.summary, scope)} was ${stored.error ? 'attempted (its outcome is unknown)' : 'sent'} at ${existing.created_at}` +
            `${messageIdOf(stored.ok)}. Nothing was sent now. To send it again on purpose, call again with a new idempotency_key; to retry safely, reuse one key for every attempt.`,
          { details: { policy: 'duplicate_window', first_call_at: existing.created_at, first_result: stored.ok ?? stored.error } },
        );
      }
      if (stored.error) {
        throw new ToolError(stored.error.code, `(Result of the first call with idempotency_key "${key}" at ${existing.created_at}; nothing was sent now.) ${stored.error.message}`, {
          retryable: false,
          outcomeUnknown: stored.error.outcome_unknown,
          details: { policy: 'idempotency', first_call_at: existing.created_at },
        });
      }
      return { replay: stored.ok as T, at: existing.created_at };
    }
    throw new ToolError('conflict', `Could not claim the idempotency key for this ${scope} call; try again.`, { retryable: true });
  }

  /** The call finished: keep its result (or its unknown outcome) for repeats. */
  async complete<T>(h: Handle, outcome: StoredOutcome<T>, now = Date.now()): Promise<void> {
    await this.db
      .updateTable('idempotency_records')
      .set({ state: 'completed', result: JSON.stringify(outcome), updated_at: iso(now) })
      .where('scope', '=', h.scope)
      .where('key', '=', h.key)
      .execute();
  }

  /** Nothing was sent: forget the key so a retry can send. */
  async release(h: Handle): Promise<void> {
    await this.db.deleteFrom('idempotency_records').where('scope', '=', h.scope).where('key', '=', h.key).execute();
  }

  /** Settles a claimed key from how the call ended. */
  async finish<T>(h: Handle, result: { ok: T } | { error: unknown }): Promise<void> {
    if ('ok' in result) return this.complete(h, { ok: result.ok });
    const body = toErrorBody(result.error);
    if (body.outcome_unknown) return this.complete(h, { error: body });
    return this.release(h);
  }

  /**
   * Runs a write at most once per caller key (no key: just runs it). For writes that are not sends
   * (notes, events, counters): no duplicate window, only the caller's explicit key.
   */
  async once<T extends object>(scope: string, key: string | undefined, request: unknown, summary: string, fn: () => Promise<T>): Promise<T & { replayed?: boolean }> {
    if (key === undefined) return fn();
    const begun = await this.begin<T>(scope, key, request, summary);
    if (!begun) return fn();
    if ('replay' in begun) return { ...begun.replay, replayed: true };
    try {
      const result = await fn();
      await this.finish(begun.handle, { ok: result });
      return result;
    } catch (err) {
      await this.finish(begun.handle, { error: err });
      throw err;
    }
  }

  /**
   * Deletes records past their window (a key is kept for its whole window), about `limit` at a time
   * (oldest first: up to the expiry of the limit-th oldest; ties may add a few); returns how many.
   */
  async prune(now = Date.now(), limit = 10_000): Promise<number> {
    const boundary = await this.db
      .selectFrom('idempotency_records')
      .select('expires_at')
      .where('expires_at', '<', iso(now))
      .orderBy('expires_at')
      .offset(limit - 1)
      .limit(1)
      .executeTakeFirst();
    let q = this.db.deleteFrom('idempotency_records').where('expires_at', '<', iso(now));
    if (boundary) q = q.where('expires_at', '<=', boundary.expires_at);
    const r = await q.executeTakeFirst();
    return Number(r.numDeletedRows);
  }
}

function summaryOf(summary: string | null, scope: string): string {
  return summary ?? `${scope} call`;
}

function messageIdOf(ok: unknown): string {
  const id = (ok as { message_id?: unknown } | undefined)?.message_id;
  return typeof id === 'string' && id ? ` (message id ${id})` : '';
}
