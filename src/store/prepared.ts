import { CompiledQuery, type Compilable, type Kysely, type QueryResult } from 'kysely';
import type { Database } from './schema.js';

/** A parameter of the compiled query: a named value (the item of a list), or a constant of the query. */
type Slot = { name: string; index: number } | { constant: unknown };

/** Lengths of lists compiled per dialect and query; a longer list is built afresh each time (no cache grows without bound). */
export const MAX_PREPARED_LIST = 64;

type Marks<K extends string, L extends string> = Record<K, string> & Record<L, string[]>;
type Values<K extends string, L extends string> = Record<K, unknown> & Record<L, readonly unknown[]>;

const MARK = '\u0001prepared:';

/**
 * A query of fixed shape, built and compiled once per dialect, then run with new values: Kysely's
 * builder costs more than SQLite's execution of a one-row update, and the delivery path runs several
 * such queries per message or per group.
 *
 * `build` gets the database and a placeholder for each named value (a unique string), and uses them
 * where the values go. Parameters of the compiled query that are placeholders are replaced on each run;
 * any other parameter (a constant of the query) is kept. A name in `lists` stands for a list of values
 * (an `in (…)`, or one column of a multi-row insert): `build` gets one placeholder per item, and the
 * query is compiled once per length of its lists (up to MAX_PREPARED_LIST items; longer ones are built
 * each time, as Kysely would).
 */
export function prepared<K extends string, L extends string = never>(
  names: readonly K[],
  build: (db: Kysely<Database>, p: Marks<K, L>) => Compilable,
  lists: readonly L[] = [],
): PreparedQuery<K, L> {
  // Per dialect (its adapter object, shared by a database and its transactions): tests run both in one process.
  const byAdapter = new WeakMap<object, Map<string, { sql: string; slots: Slot[] }>>();

  const compile = (db: Kysely<Database>, lengths: number[]): { sql: string; slots: Slot[] } => {
    const marks: Record<string, string | string[]> = {};
    const byMark = new Map<unknown, { name: string; index: number }>();
    for (const n of names) {
      marks[n] = `${MARK}${n}\u0001`;
      byMark.set(marks[n], { name: n, index: -1 });
    }
    lists.forEach((n, i) => {
      const items = Array.from({ length: lengths[i]! }, (_, j) => `${MARK}${n}:${j}\u0001`);
      marks[n] = items;
      items.forEach((m, j) => byMark.set(m, { name: n, index: j }));
    });
    const q = build(db, marks as Marks<K, L>).compile();
    const slots = q.parameters.map((p): Slot => byMark.get(p) ?? { constant: p });
    const used = new Set(slots.flatMap((s) => ('name' in s ? [s.name] : [])));
    const missing: string[] = [...names.filter((n) => !used.has(n)), ...lists.filter((n, i) => lengths[i]! > 0 && !used.has(n))];
    if (missing.length) throw new Error(`prepared query: ${missing.join(', ')} not used as a parameter`);
    return { sql: q.sql, slots };
  };

  const compiledFor = (db: Kysely<Database>, values: Values<K, L>): CompiledQuery => {
    const lengths = lists.map((n) => (values[n] as readonly unknown[]).length);
    const cacheable = lengths.every((l) => l <= MAX_PREPARED_LIST);
    const adapter = db.getExecutor().adapter;
    let shapes = byAdapter.get(adapter);
    if (!shapes) byAdapter.set(adapter, (shapes = new Map()));
    const key = lengths.join(',');
    let compiled = cacheable ? shapes.get(key) : undefined;
    if (!compiled) {
      compiled = compile(db, lengths);
      if (cacheable) shapes.set(key, compiled);
    }
    const v = values as Record<string, unknown>;
    const parameters = compiled.slots.map((s) => ('constant' in s ? s.constant : s.index < 0 ? v[s.name] : (v[s.name] as readonly unknown[])[s.index]));
    return CompiledQuery.raw(compiled.sql, parameters);
  };
  return Object.assign((db: Kysely<Database>, values: Values<K, L>) => db.executeQuery(compiledFor(db, values)), { compiledFor });
}

/** Runs the query with these values; `compiledFor` gives the SQL and parameters it would run (a query plan's test reads it). */
export type PreparedQuery<K extends string, L extends string> = ((db: Kysely<Database>, values: Values<K, L>) => Promise<QueryResult<unknown>>) & {
  compiledFor(db: Kysely<Database>, values: Values<K, L>): CompiledQuery;
};
