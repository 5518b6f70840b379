import type { Database as BetterSqlite3 } from 'better-sqlite3';
import { CompiledQuery, SqliteAdapter, SqliteDialect, SqliteDriver, type DatabaseConnection, type SqliteDatabase, type SqliteDialectConfig } from 'kysely';

/**
 * SQLite as several server processes sharing one file need it (e.g. Claude Desktop and Cursor each
 * running a stdio server on the default database):
 * - every transaction is BEGIN IMMEDIATE, taking the write lock up front (waiting up to busy_timeout)
 *   instead of failing when a read-then-write transaction finds another writer got there first;
 * - migrations therefore run in one such transaction, so two processes starting at once migrate
 *   one after the other instead of both creating the same tables.
 */
class ImmediateSqliteDriver extends SqliteDriver {
  constructor(
    cfg: SqliteDialectConfig,
    private readonly onCommit?: () => void,
  ) {
    super(cfg);
  }

  override async beginTransaction(connection: DatabaseConnection): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw('begin immediate'));
  }

  override async commitTransaction(connection: DatabaseConnection): Promise<void> {
    await super.commitTransaction(connection);
    this.onCommit?.();
  }
}

class TransactionalDdlSqliteAdapter extends SqliteAdapter {
  override get supportsTransactionalDdl(): boolean {
    return true;
  }
}

export class ImmediateSqliteDialect extends SqliteDialect {
  /** `onCommit`: told after each transaction commits (the WAL checkpointer schedules its work by it). */
  constructor(
    private readonly cfg: SqliteDialectConfig,
    private readonly onCommit?: () => void,
  ) {
    super(cfg);
  }
  override createDriver() {
    return new ImmediateSqliteDriver(this.cfg, this.onCommit);
  }
  override createAdapter() {
    return new TransactionalDdlSqliteAdapter();
  }
}

/** Prepared statements kept, by SQL text; the hot paths (outbox, admission) use a few dozen. */
const STATEMENT_CACHE = 256;

/**
 * The database as Kysely's driver sees it, preparing each distinct SQL text once. Kysely's driver
 * prepares on every query, which cost more than running the statement on the outbox's hot path.
 * A statement is reused only when it is not mid-iteration (Kysely runs statements to completion;
 * streaming would need a fresh one).
 */
export function withStatementCache(db: BetterSqlite3): SqliteDatabase {
  const cache = new Map<string, ReturnType<BetterSqlite3['prepare']>>();
  return {
    close: () => db.close(),
    prepare(sql: string) {
      let stmt = cache.get(sql);
      if (stmt && !stmt.busy) {
        // Most recently used last: the oldest entry is the one evicted.
        cache.delete(sql);
        cache.set(sql, stmt);
        return stmt;
      }
      stmt = db.prepare(sql);
      cache.set(sql, stmt);
      if (cache.size > STATEMENT_CACHE) cache.delete(cache.keys().next().value!);
      return stmt;
    },
  };
}
