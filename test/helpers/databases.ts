import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { tempDataDir } from './mcp.js';

/**
 * The databases a store test runs against: SQLite always; PostgreSQL when one answers
 * (TEST_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/test). Each PostgreSQL target is a
 * fresh database, dropped afterwards. Without a server the PostgreSQL target is skipped with the
 * reason printed — unless REQUIRE_POSTGRES=1 (CI), where that is a failure.
 */
export const POSTGRES_ADMIN_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

export interface DatabaseTarget {
  name: 'sqlite' | 'postgres';
  /** Environment for the server: DATABASE_URL / CS_MCP_DATA_DIR. */
  env: Record<string, string>;
  cleanup(): Promise<void>;
}

let probe: Promise<string | undefined> | undefined;

/** undefined when PostgreSQL is reachable, else why not. */
export function postgresUnavailableReason(): Promise<string | undefined> {
  probe ??= (async () => {
    const client = new pg.Client({ connectionString: POSTGRES_ADMIN_URL, connectionTimeoutMillis: 3000 });
    try {
      await client.connect();
      await client.query('select 1');
      return undefined;
    } catch (err) {
      return `PostgreSQL at ${POSTGRES_ADMIN_URL.replace(/:[^:@/]*@/, ':***@')} is not reachable (${(err as Error).message})`;
    } finally {
      await client.end().catch(() => undefined);
    }
  })();
  return probe;
}

export async function createPostgresDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  const name = `csmcp_test_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: POSTGRES_ADMIN_URL });
  await admin.connect();
  await admin.query(`create database ${name}`);
  await admin.end();
  const url = new URL(POSTGRES_ADMIN_URL);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    drop: async () => {
      const c = new pg.Client({ connectionString: POSTGRES_ADMIN_URL });
      await c.connect();
      await c.query(`drop database if exists ${name} with (force)`);
      await c.end();
    },
  };
}

/** Names of the dialects to run; prints why PostgreSQL is skipped, fails under REQUIRE_POSTGRES=1. */
export async function availableDialects(): Promise<Array<'sqlite' | 'postgres'>> {
  const reason = await postgresUnavailableReason();
  if (!reason) return ['sqlite', 'postgres'];
  if (process.env.REQUIRE_POSTGRES === '1') throw new Error(`REQUIRE_POSTGRES=1 but ${reason}`);
  process.stderr.write(`[skip] PostgreSQL store tests skipped: ${reason}\n`);
  return ['sqlite'];
}

export async function createTarget(name: 'sqlite' | 'postgres'): Promise<DatabaseTarget> {
  const data = tempDataDir();
  if (name === 'sqlite') return { name, env: { CS_MCP_DATA_DIR: data.dir }, cleanup: async () => data.cleanup() };
  const db = await createPostgresDatabase();
  return {
    name,
    env: { CS_MCP_DATA_DIR: data.dir, DATABASE_URL: db.url },
    cleanup: async () => {
      await db.drop();
      data.cleanup();
    },
  };
}
