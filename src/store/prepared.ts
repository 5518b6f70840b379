import { CompiledQuery, type Compilable, type Kysely, type QueryResult } from 'kysely';
import type { Database } from './schema.js';

/**
 * A query of fixed shape, built and compiled once, then run with new values: Kysely's builder costs
 * more than SQLite's execution of a one-row update, and the settlement runs one per message.
 *
 * `build` receives a placeholder for each named value (a unique string) and uses them where the
 * values go; the compiled parameters that are placeholders are replaced on each run, any other
 * parameter (a constant of the query) is kept. Only scalar values can be named this way (a list for
 * `in` varies the SQL itself).
 */
export function prepared<K extends string>(names: readonly K[], build: (p: Record<K, string>) => Compilable): (db: Kysely<Database>, values: Record<K, unknown>) => Promise<QueryResult<unknown>> {
  let compiled: { sql: string; slots: Array<K | { constant: unknown }> } | undefined;
  return (db, values) => {
    if (!compiled) {
      const marks = Object.fromEntries(names.map((n) => [n, `\u0001prepared:${n}\u0001`])) as Record<K, string>;
      const byMark = new Map<unknown, K>(names.map((n) => [marks[n], n]));
      const q = build(marks).compile();
      const slots = q.parameters.map((p) => byMark.get(p) ?? { constant: p });
      const missing = names.filter((n) => !slots.includes(n));
      if (missing.length) throw new Error(`prepared query: ${missing.join(', ')} not used as a parameter`);
      compiled = { sql: q.sql, slots };
    }
    const { sql, slots } = compiled;
    return db.executeQuery(CompiledQuery.raw(sql, slots.map((s) => (typeof s === 'string' ? values[s] : s.constant))));
  };
}
