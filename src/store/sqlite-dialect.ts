import { CompiledQuery, SqliteAdapter, SqliteDialect, SqliteDriver, type DatabaseConnection, type SqliteDialectConfig } from 'kysely';

/**
 * SQLite as several server processes sharing one file need it (e.g. Claude Desktop and Cursor each
 * running a stdio server on the default database):
 * - every transaction is BEGIN IMMEDIATE, taking the write lock up front (waiting up to busy_timeout)
 *   instead of failing when a read-then-write transaction finds another writer got there first;
 * - migrations therefore run in one such transaction, so two processes starting at once migrate
 *   one after the other instead of both creating the same tables.
 */
class ImmediateSqliteDriver extends SqliteDriver {
  override async beginTransaction(connection: DatabaseConnection): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw('begin immediate'));
  }
}

class TransactionalDdlSqliteAdapter extends SqliteAdapter {
  override get supportsTransactionalDdl(): boolean {
    return true;
  }
}

export class ImmediateSqliteDialect extends SqliteDialect {
  constructor(private readonly cfg: SqliteDialectConfig) {
    super(cfg);
  }
  override createDriver() {
    return new ImmediateSqliteDriver(this.cfg);
  }
  override createAdapter() {
    return new TransactionalDdlSqliteAdapter();
  }
}
