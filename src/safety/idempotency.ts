import { createHash } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { Logger } from '../log.js';
import { toErrorBody, ToolError, type ErrorBody } from '../result.js';
import type { Database } from '../store/schema.js';
import { BackgroundWrites, writeWithRetry } from './durable-write.js';

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
 *
 * Once a request may have reached the provider its key is never released. Its outcome is written with
 * a bounded retry (writeWithRetry); if the database still fails, the call answers "in doubt, not
 * resent" (inDoubt below), the outcome is kept in memory and written in the background, and until then
 * every repeat with the key gets the same answer — from memory in this process, and from the stored
 * `in_progress` claim in any other. Nothing with that key is sent again.
 */

export interface IdempotencyConfig {
  idempotencyRetentionMs: number;
  duplicateWindowMs: number;
}

export type Begun<T> = { replay: T; at: string } | { handle: Handle };

interface Handle {
  scope: string;
  key: string;
  hash: string;
  at: string;
  /** The caller's own key (not the duplicate window's). */
  explicit: boolean;
}

/** A call whose outcome could not be stored yet: the answer to its repeats until it is. */
interface Unsettled {
  hash: string;
  at: string;
  answer: ErrorBody;
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
  private readonly unsettled = new Map<string, Unsettled>();
  /** Outcomes (and releases) waiting for the database. */
  readonly waiting: BackgroundWrites;

  constructor(
    private readonly db: Kysely<Database>,
    private readonly cfg: IdempotencyConfig,
    private readonly log?: Logger,
  ) {
    this.waiting = new BackgroundWrites('send outcome', (log ?? silent) as Logger, { cap: 10_000 });
  }

  /**
   * Claims the key for this call, or answers with what the first call returned. `summary` describes the
   * call for a later refusal ("sendgrid_send_email to ann@… 'Renewal'").
   */
  async begin<T>(scope: string, key: string | undefined, request: unknown, summary: string, now = Date.now()): Promise<Begun<T> | undefined> {
    const hash = requestHash(request);
    const explicit = key !== undefined;
    if (!explicit && this.cfg.duplicateWindowMs <= 0) return undefined;
    const k = explicit ? key : `auto:${hash}`;
    const mark = this.unsettled.get(`${scope}\0${k}`);
    if (mark) {
      if (mark.hash !== hash && explicit) {
        throw new ToolError('conflict', `idempotency_key "${key}" was already used at ${mark.at} for a different ${scope} call. Nothing was sent. Use a new key for a new message.`, {
          details: { policy: 'idempotency', first_call_at: mark.at },
        });
      }
      if (mark.hash === hash) {
        throw new ToolError(mark.answer.code, `(Answer of the first call${explicit ? ` with idempotency_key "${key}"` : ''} at ${mark.at}; nothing was sent now.) ${mark.answer.message}`, {
          retryable: false,
          outcomeUnknown: true,
          details: { ...mark.answer.details, first_call_at: mark.at },
        });
      }
    }
    const expires = now + (explicit ? this.cfg.idempotencyRetentionMs : this.cfg.duplicateWindowMs);
    for (let round = 0; round < 2; round++) {
      const inserted = await this.db
        .insertInto('idempotency_records')
        .values({ scope, key: k, request_hash: hash, state: 'in_progress', result: null, summary, created_at: iso(now), updated_at: iso(now), expires_at: iso(expires) })
        .onConflict((oc) => oc.columns(['scope', 'key']).doNothing())
        .executeTakeFirst();
      if (Number(inserted.numInsertedOrUpdatedRows ?? 0) === 1) return { handle: { scope, key: k, hash, at: iso(now), explicit } };
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

  /**
   * Stores how the call ended, retrying briefly. True when stored; false when the database still
   * fails: the outcome is then kept for repeats (they are answered "in doubt") and written in the
   * background. Never throws.
   */
  async settle<T>(h: Handle, outcome: StoredOutcome<T>): Promise<boolean> {
    const id = `${h.scope}\0${h.key}`;
    const write = () => this.complete(h, outcome);
    let failure: unknown;
    const stored = await writeWithRetry(write, (err) => (failure = err));
    if (stored) return true;
    const answer = toErrorBody(this.inDoubt(h, outcome));
    this.unsettled.set(id, { hash: h.hash, at: h.at, answer });
    this.log?.error({ err: failure, scope: h.scope, key: h.explicit ? h.key : undefined }, 'could not store the outcome of a send that may have gone out: repeats are refused as in doubt, and it is written once the database answers');
    this.waiting.add(id, { write, done: () => this.unsettled.delete(id) }, failure);
    return false;
  }

  /** Nothing was sent: forgets the key (retrying briefly, then in the background; meanwhile repeats are refused as in doubt). Never throws. */
  async releaseSafely(h: Handle): Promise<void> {
    const write = () => this.release(h);
    let failure: unknown;
    if (!(await writeWithRetry(write, (err) => (failure = err)))) this.waiting.add(`${h.scope}\0${h.key}`, { write }, failure);
  }

  /**
   * The answer of a call that may have reached the provider and whose outcome could not be stored.
   * `provider_error` (not retryable) with `outcome_unknown`: no code of the vocabulary names a local
   * database failure, `provider_error` is the one for "unexpected, see the logs", and
   * `retryable: false` + `outcome_unknown` tell the caller exactly what to do — not to repeat it.
   * Not `conflict` (the caller did nothing wrong) nor `timeout` / `provider_unavailable` (the provider
   * answered; they would read as "try again").
   */
  inDoubt(h: Pick<Handle, 'scope' | 'key' | 'explicit' | 'at'>, outcome: StoredOutcome<unknown> = {}, cause?: unknown): ToolError {
    const accepted = outcome.ok !== undefined;
    const id = messageIdOf(outcome.ok);
    const causeText = cause instanceof Error ? ` (${cause.message.slice(0, 200)})` : '';
    return new ToolError(
      'provider_error',
      `The ${h.scope} call ${accepted ? `was accepted by the provider${id}` : 'may have reached the provider'}, but this server could not record its outcome: ` +
        `its database failed${causeText}. It has not been sent again and will not be: ` +
        `${h.explicit ? `a retry with idempotency_key "${h.key}"` : 'an identical call'} is answered like this until the outcome is stored, then with the first result. ` +
        'Check with the recipient or the provider before sending it under a new key.',
      {
        retryable: false,
        outcomeUnknown: true,
        cause,
        details: { policy: 'idempotency', in_doubt: true, first_call_at: h.at, ...(accepted ? { first_result: outcome.ok } : {}) },
      },
    );
  }

  /**
   * Runs a write at most once per caller key (no key: just runs it). For writes that are not sends
   * (notes, events, counters): no duplicate window, only the caller's explicit key. A failure that is
   * not a ToolError saying the provider did nothing leaves the key claimed (the write may have happened).
   */
  async once<T extends object>(scope: string, key: string | undefined, request: unknown, summary: string, fn: () => Promise<T>): Promise<T & { replayed?: boolean }> {
    if (key === undefined) return fn();
    const begun = await this.begin<T>(scope, key, request, summary);
    if (!begun) return fn();
    if ('replay' in begun) return { ...begun.replay, replayed: true };
    let result: T;
    try {
      result = await fn();
    } catch (err) {
      if (err instanceof ToolError && !err.outcomeUnknown) {
        await this.releaseSafely(begun.handle);
        throw err;
      }
      const error = err instanceof ToolError ? err : this.inDoubt(begun.handle, {}, err);
      await this.settle(begun.handle, { error: toErrorBody(error) });
      throw error;
    }
    if (!(await this.settle(begun.handle, { ok: result }))) throw this.inDoubt(begun.handle, { ok: result });
    return result;
  }

  /** Tries once more to store what is waiting (at shutdown). */
  async flush(): Promise<void> {
    this.waiting.stop();
    if (this.waiting.size) await this.waiting.drain();
    this.waiting.stop();
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

const silent = { error() {}, info() {}, warn() {} };

function summaryOf(summary: string | null, scope: string): string {
  return summary ?? `${scope} call`;
}

function messageIdOf(ok: unknown): string {
  const id = (ok as { message_id?: unknown } | undefined)?.message_id;
  return typeof id === 'string' && id ? ` (message id ${id})` : '';
}
