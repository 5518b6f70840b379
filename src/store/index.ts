import fs from 'node:fs';
import path from 'node:path';
import SQLite from 'better-sqlite3';
import { Kysely, Migrator, PostgresDialect, sql, type MigrationProvider } from 'kysely';
import pg from 'pg';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import { migrations } from './migrations/index.js';
import { CustomerEventLog, type CustomerEventInput } from './customer-events.js';
import { withNulGuard } from './nul-guard.js';
import { RosterRepository } from './roster.js';
import { ImmediateSqliteDialect, withStatementCache } from './sqlite-dialect.js';
import type { Database } from './schema.js';
import { TimelineRepository, type ActivityInput } from './timeline.js';
import { WalCheckpointer } from './wal-checkpointer.js';

export type { ActivityInput } from './timeline.js';

/** Who a provider call was about, as the provider tools know it. */
export interface RecipientRef {
  email?: string;
  external_user_id?: string;
  intercom_contact_id?: string;
}

export interface Store {
  readonly dialect: 'sqlite' | 'postgres';
  readonly db: Kysely<Database>;
  readonly roster: RosterRepository;
  readonly timeline: TimelineRepository;
  readonly events: CustomerEventLog;
  /** Appends to the timeline of every roster contact matching the recipient; returns how many matched. */
  recordActivityForRecipient(ref: RecipientRef, entry: ActivityInput): Promise<number>;
  /** Records a customer event for every roster contact matching the recipient (automations trigger on it); returns how many matched. */
  recordEventForRecipient(ref: RecipientRef, event: Omit<CustomerEventInput, 'client_id' | 'contact_id'>): Promise<number>;
  /** Remembers Intercom's contact id on the roster contact(s) with this email / external id. */
  linkIntercomContact(ref: RecipientRef, intercomContactId: string, role?: 'user' | 'lead'): Promise<void>;
  /** Refreshes the query planner's statistics of the roster tables (after a bulk load). */
  refreshStatistics(): Promise<void>;
  close(): Promise<void>;
}

// PostgreSQL returns COUNT(*) as int8 text; our counts fit in a JS number.
pg.types.setTypeParser(20, (v) => Number(v));

/**
 * mkdir -p, one level at a time: Node's recursive mkdirSync never returns for a path under /proc (it
 * retries ENOENT forever), which would hang start-up on a mistyped data folder instead of saying so.
 */
function ensureDir(dir: string): void {
  const missing: string[] = [];
  for (let d = path.resolve(dir); !fs.existsSync(d); d = path.dirname(d)) {
    missing.unshift(d);
    if (path.dirname(d) === d) break;
  }
  for (const d of missing) fs.mkdirSync(d);
}

/** What the server's PostgreSQL sessions call themselves, followed by `/<pid>`. */
export const APPLICATION_NAME = 'customer-success-mcp';

function createDb(config: Config, log: Logger): { db: Kysely<Database>; dialect: Store['dialect']; checkpointer?: WalCheckpointer } {
  if (config.database.kind === 'postgres') {
    // Each session names its process (pg_stat_activity), so an operator can tell which replica holds a
    // lock or a transaction; an application_name in DATABASE_URL (or PGAPPNAME) wins.
    const pool = new pg.Pool({ connectionString: config.database.url, max: 10, fallback_application_name: `${APPLICATION_NAME}/${process.pid}` });
    // An idle connection dropped by the server (restart, failover) must not crash the process: the
    // pool discards it and the next query opens a fresh one.
    pool.on('error', (err) => log.warn({ err: { message: err.message, code: (err as { code?: string }).code } }, 'PostgreSQL dropped an idle connection'));
    return { db: new Kysely<Database>({ dialect: withNulGuard(new PostgresDialect({ pool })) }), dialect: 'postgres' };
  }
  const file = config.database.file;
  ensureDir(path.dirname(file));
  const sqlite = new SQLite(file);
  // WAL: readers never block the writer; NORMAL sync is durable across a process kill (not a power cut).
  sqlite.pragma('journal_mode = WAL');
  sqlite.pragma('synchronous = NORMAL');
  sqlite.pragma('busy_timeout = 5000');
  sqlite.pragma('foreign_keys = ON');
  // Statement journals and temporary tables stay in memory: on disk each one is a file opened,
  // written and unlinked, about nine a second while a campaign sends (a tenth of the outbox's SQLite
  // time). What they hold is bounded by one statement's work (claims and pages have limits).
  sqlite.pragma('temp_store = MEMORY');
  // SQLite's own lower() folds ASCII only ("Österreich" stays "Ö"), PostgreSQL's folds every letter:
  // the same search must find the same clients on both stores, so lower() here is JavaScript's.
  sqlite.function('lower', { deterministic: true }, (v: unknown) => (typeof v === 'string' ? v.toLowerCase() : v) as string | null);
  // Checkpoints (copying the WAL into the file, and waiting for the disk) run on a thread of their own, not inside a commit.
  const checkpointer = new WalCheckpointer(file, (pages) => sqlite.pragma(`wal_autocheckpoint = ${pages}`), log);
  const dialect = new ImmediateSqliteDialect({ database: withStatementCache(sqlite) }, () => checkpointer.committed());
  return { db: new Kysely<Database>({ dialect: withNulGuard(dialect) }), dialect: 'sqlite', checkpointer };
}

export async function migrateToLatest(db: Kysely<Database>): Promise<string[]> {
  const provider: MigrationProvider = { getMigrations: async () => migrations };
  const { error, results } = await new Migrator({ db, provider }).migrateToLatest();
  if (error) throw error instanceof Error ? error : new Error(String(error));
  return (results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName);
}

/** Opens the roster database (SQLite by default, PostgreSQL for DATABASE_URL=postgres://…) and migrates it. */
export async function openStore(config: Config, log: Logger): Promise<Store> {
  const { db, dialect, checkpointer } = createDb(config, log);
  try {
    const applied = await migrateToLatest(db);
    if (applied.length) log.info({ applied, dialect }, 'database migrated');
  } catch (err) {
    await checkpointer?.close();
    await db.destroy();
    const where = config.database.kind === 'postgres' ? 'the PostgreSQL database in DATABASE_URL' : config.database.file;
    throw new Error(`Could not open or migrate ${where}: ${(err as Error).message}`);
  }
  const timeline = new TimelineRepository(db);
  const events = new CustomerEventLog(db);
  const roster = new RosterRepository(db, dialect, timeline, events);
  return {
    dialect,
    db,
    roster,
    timeline,
    events,
    recordActivityForRecipient: async (ref, entry) => {
      const contacts = await roster.findContacts(ref);
      for (const c of contacts) await timeline.append(db, { client_id: c.client_id, contact_id: c.contact_id, ...entry });
      return contacts.length;
    },
    recordEventForRecipient: async (ref, event) => {
      const contacts = await roster.findContacts(ref);
      if (contacts.length) await events.record(db, contacts.map((c) => ({ ...event, client_id: c.client_id, contact_id: c.contact_id })));
      return contacts.length;
    },
    linkIntercomContact: (ref, id, role) => roster.linkIntercomContact(ref, id, role),
    refreshStatistics: async () => {
      // Without fresh statistics PostgreSQL plans a just-loaded table as nearly empty and scans it whole.
      if (dialect === 'postgres') await sql`analyze clients, client_segments, contacts`.execute(db);
      else await sql`pragma optimize`.execute(db);
    },
    close: async () => {
      await checkpointer?.close();
      await db.destroy();
    },
  };
}
