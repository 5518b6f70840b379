import { CompiledQuery, type Compilable, type Kysely, type QueryResult } from 'kysely';
import type { Database } from './schema.js';

type Slot<K> = K | { constant: unknown };

/**
 * A query of fixed shape, built and compiled once per dialect, then run with new values: Kysely's
 * builder costs more than SQLite's execution of a one-row update, and the settlement runs one per
 * message.
 *
 * `build` gets the database and a placeholder for each named value (a unique string), and uses them
 * where the values go. Parameters of the compiled query that are placeholders are replaced on each run;
 * any other parameter (a constant of the query) is kept. Only scalar values can be named this way (a
 * list for `in` changes the SQL itself).
 */
export function prepared<K extends string>(
  names: readonly K[],
  build: (db: Kysely<Database>, p: Record<K, string>) => Compilable,
): (db: Kysely<Database>, values: Record<K, unknown>) => Promise<QueryResult<unknown>> {
  // Per dialect (its adapter object, shared by a database and its transactions): tests run both in one process.
  const byAdapter = new WeakMap<object, { sql: string; slots: Array<Slot<K>> }>();
  return (db, values) => {
    const adapter = db.getExecutor().adapter;
    let compiled = byAdapter.get(adapter);
    if (!compiled) {
      const marks = Object.fromEntries(names.map((n) => [n, `\u0001prepared:${n}\u0001`])) as Record<K, string>;
      const byMark = new Map<unknown, K>(names.map((n) => [marks[n], n]));
      const q = build(db, marks).compile();
      const slots = q.parameters.map((p): Slot<K> => byMark.get(p) ?? { constant: p });
      const missing = names.filter((n) => !slots.includes(n));
      if (missing.length) throw new Error(`prepared query: ${missing.join(', ')} not used as a parameter`);
      byAdapter.set(adapter, (compiled = { sql: q.sql, slots }));
    }
    const { sql, slots } = compiled;
    return db.executeQuery(CompiledQuery.raw(sql, slots.map((s) => (typeof s === 'string' ? values[s] : s.constant))));
  };
}
