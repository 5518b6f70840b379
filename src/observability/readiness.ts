import { sql, type Kysely } from 'kysely';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import type { ProviderName } from '../result.js';
import { migrations } from '../store/migrations/index.js';
import type { Database } from '../store/schema.js';
import { CachedProbe } from './cached-probe.js';

/** How long one database check answers /readyz: a load balancer polling every second costs one query per second at most. */
export const READY_TTL_MS = 1000;

export interface ReadinessReport {
  ready: boolean;
  /** The checks that failed, by name: database, migrations, providers. */
  not_ready: string[];
  database: { ok: boolean; error?: string };
  migrations: { ok: boolean; expected: number; applied?: number; missing?: string[]; unknown?: string[] };
  providers: { ok: boolean; configured: ProviderName[]; required: ProviderName[]; missing?: ProviderName[] };
}

/** The applied migrations compared with the code's own list. */
export function compareMigrations(applied: string[], expected: string[] = Object.keys(migrations)): ReadinessReport['migrations'] {
  const have = new Set(applied);
  const known = new Set(expected);
  const missing = expected.filter((m) => !have.has(m));
  const unknown = applied.filter((m) => !known.has(m));
  return { ok: missing.length === 0 && unknown.length === 0, expected: expected.length, applied: applied.length, ...(missing.length ? { missing } : {}), ...(unknown.length ? { unknown } : {}) };
}

/**
 * What /readyz answers: the database answers within MCP_READY_TIMEOUT_MS, every migration of this
 * version is applied (and none unknown to it), and the providers of MCP_READY_PROVIDERS are configured.
 * One query (the migration list: it also proves the database answers), reused for READY_TTL_MS. Nothing
 * secret in it: database errors are logged, not returned.
 */
export class Readiness {
  private readonly probe: CachedProbe<string[]>;

  constructor(
    db: Kysely<Database>,
    private readonly config: Config['observability'],
    private readonly configured: () => Record<ProviderName, boolean>,
    private readonly log: Logger,
  ) {
    this.probe = new CachedProbe(
      async () => {
        try {
          const r = await sql<{ name: string }>`select name from kysely_migration`.execute(db);
          return r.rows.map((row) => row.name);
        } catch (err) {
          log.warn({ err }, 'readiness: the database check failed');
          throw new Error('the database query failed (the server log has the reason)');
        }
      },
      { ttlMs: READY_TTL_MS, timeoutMs: config.readyTimeoutMs },
    );
  }

  async check(): Promise<ReadinessReport> {
    const r = await this.probe.get();
    const flags = this.configured();
    const configured = (Object.keys(flags) as ProviderName[]).filter((p) => flags[p]);
    const missingProviders = this.config.readyProviders.filter((p) => !flags[p]);
    const report: ReadinessReport = {
      ready: false,
      not_ready: [],
      database: r.ok ? { ok: true } : { ok: false, error: r.error },
      migrations: r.ok ? compareMigrations(r.value) : { ok: false, expected: Object.keys(migrations).length },
      providers: { ok: missingProviders.length === 0, configured, required: this.config.readyProviders, ...(missingProviders.length ? { missing: missingProviders } : {}) },
    };
    if (!r.ok) this.log.debug({ error: r.error }, 'readiness: database not ready');
    report.not_ready = (['database', 'migrations', 'providers'] as const).filter((k) => !report[k].ok);
    report.ready = report.not_ready.length === 0;
    return report;
  }
}
