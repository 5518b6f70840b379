import { sql, type Kysely } from 'kysely';
import type { Database } from './schema.js';

/**
 * Runs `work` inside a transaction under a savepoint: if it throws, only its own writes are rolled back
 * and the transaction goes on (on PostgreSQL a failed statement would otherwise doom the whole of it).
 * Resolves `{ ok: true }`, or `{ ok: false, err }` with what `work` threw. A failure of the savepoint
 * statements themselves rejects: the transaction cannot go on then.
 */
export async function underSavepoint(trx: Kysely<Database>, name: string, work: () => Promise<void>): Promise<{ ok: true } | { ok: false; err: unknown }> {
  await sql`savepoint ${sql.id(name)}`.execute(trx);
  let result: { ok: true } | { ok: false; err: unknown } = { ok: true };
  try {
    await work();
  } catch (err) {
    await sql`rollback to savepoint ${sql.id(name)}`.execute(trx);
    result = { ok: false, err };
  }
  await sql`release savepoint ${sql.id(name)}`.execute(trx);
  return result;
}
