import { CompiledQuery, type Kysely } from 'kysely';
import type { Database } from './schema.js';

/** Savepoints have names of our own, written into the SQL as they are (they run several times per second while sending). */
export type SavepointName = 'riding_settlements' | 'settled_extras';

/**
 * Runs `work` inside a transaction under a savepoint: if it throws, only its own writes are rolled back
 * and the transaction goes on (on PostgreSQL a failed statement would otherwise doom the whole of it).
 * Resolves `{ ok: true }`, or `{ ok: false, err }` with what `work` threw. A failure of the savepoint
 * statements themselves rejects: the transaction cannot go on then.
 */
export async function underSavepoint(trx: Kysely<Database>, name: SavepointName, work: () => Promise<void>): Promise<{ ok: true } | { ok: false; err: unknown }> {
  await trx.executeQuery(CompiledQuery.raw(`savepoint ${name}`));
  let result: { ok: true } | { ok: false; err: unknown } = { ok: true };
  try {
    await work();
  } catch (err) {
    await trx.executeQuery(CompiledQuery.raw(`rollback to savepoint ${name}`));
    result = { ok: false, err };
  }
  await trx.executeQuery(CompiledQuery.raw(`release savepoint ${name}`));
  return result;
}
