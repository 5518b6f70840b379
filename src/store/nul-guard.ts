import type { CompiledQuery, DatabaseConnection, DatabaseIntrospector, Dialect, DialectAdapter, Driver, Kysely, QueryCompiler, QueryResult, TransactionSettings } from 'kysely';
import { invalidInput } from '../result.js';

/**
 * PostgreSQL cannot store or compare text containing NUL (U+0000) and fails the whole query; SQLite
 * stores it, so the two stores would disagree. Every parameter of every query is checked here, whatever
 * path it came by (tool argument, CSV cell, cursor, resource URI), and refused as invalid input before
 * it reaches either database. The tool adapter checks arguments first and names the field; this is the
 * guarantee for everything else.
 */
function checkParameters(query: CompiledQuery): void {
  for (const p of query.parameters) {
    if (typeof p === 'string' && p.includes('\u0000')) {
      throw invalidInput('A text value contains a NUL character (\\u0000), which cannot be stored or searched. Remove it and call again.', {
        fields: [{ field: '(text value)', problem: 'contains a NUL character (\\u0000)' }],
      });
    }
  }
}

function guardConnection(inner: DatabaseConnection, cache: WeakMap<DatabaseConnection, DatabaseConnection>): DatabaseConnection {
  let guarded = cache.get(inner);
  if (!guarded) {
    guarded = new Proxy(inner, {
      get(target, prop) {
        if (prop === 'executeQuery') {
          return <R>(q: CompiledQuery): Promise<QueryResult<R>> => {
            checkParameters(q);
            return target.executeQuery<R>(q);
          };
        }
        if (prop === 'streamQuery') {
          return <R>(q: CompiledQuery, chunkSize?: number): AsyncIterableIterator<QueryResult<R>> => {
            checkParameters(q);
            return target.streamQuery<R>(q, chunkSize);
          };
        }
        const v = Reflect.get(target, prop, target) as unknown;
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
    cache.set(inner, guarded);
  }
  return guarded;
}

class NulGuardDriver implements Driver {
  private readonly connections = new WeakMap<DatabaseConnection, DatabaseConnection>();
  constructor(private readonly inner: Driver) {}
  init(): Promise<void> {
    return this.inner.init();
  }
  async acquireConnection(): Promise<DatabaseConnection> {
    return guardConnection(await this.inner.acquireConnection(), this.connections);
  }
  beginTransaction(c: DatabaseConnection, settings: TransactionSettings): Promise<void> {
    return this.inner.beginTransaction(c, settings);
  }
  commitTransaction(c: DatabaseConnection): Promise<void> {
    return this.inner.commitTransaction(c);
  }
  rollbackTransaction(c: DatabaseConnection): Promise<void> {
    return this.inner.rollbackTransaction(c);
  }
  savepoint(c: DatabaseConnection, name: string, compile: QueryCompiler['compileQuery']): Promise<void> {
    return this.inner.savepoint!(c, name, compile);
  }
  rollbackToSavepoint(c: DatabaseConnection, name: string, compile: QueryCompiler['compileQuery']): Promise<void> {
    return this.inner.rollbackToSavepoint!(c, name, compile);
  }
  releaseSavepoint(c: DatabaseConnection, name: string, compile: QueryCompiler['compileQuery']): Promise<void> {
    return this.inner.releaseSavepoint!(c, name, compile);
  }
  releaseConnection(c: DatabaseConnection): Promise<void> {
    return this.inner.releaseConnection(c);
  }
  destroy(): Promise<void> {
    return this.inner.destroy();
  }
}

/** The dialect, with every query's parameters checked for NUL characters first. */
export function withNulGuard(dialect: Dialect): Dialect {
  return {
    createAdapter: (): DialectAdapter => dialect.createAdapter(),
    createDriver: (): Driver => new NulGuardDriver(dialect.createDriver()),
    createQueryCompiler: (): QueryCompiler => dialect.createQueryCompiler(),
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    createIntrospector: (db: Kysely<any>): DatabaseIntrospector => dialect.createIntrospector(db),
  };
}
