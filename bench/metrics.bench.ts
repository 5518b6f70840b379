/**
 * What watching costs: reading the database gauges of GET /metrics (db-snapshot.ts) over a large outbox,
 * inbox and enrolment table, a scrape (cached and not), and GET /readyz polled back to back, on SQLite and
 * on PostgreSQL when reachable. The gauges are read at most once per 1.5 s per process, whatever the scrape rate.
 */
import { sql } from 'kysely';
import { readDbSnapshot } from '../src/observability/db-snapshot.js';
import { serveHttp } from '../src/transports/http.js';
import { createTarget, postgresUnavailableReason } from '../test/helpers/databases.js';
import { startInMemory, testEnv } from '../test/helpers/mcp.js';
import { fmt, line, summarize } from './util.js';

const OUTBOX = 500_000;
const INBOX = 200_000;
const ENROLLMENTS = 100_000;
const CHUNK = 500;
const CHANNELS = ['email', 'intercom_email', 'intercom_inapp'];
const STATES = ['sent', 'sent', 'sent', 'sent', 'failed', 'skipped', 'cancelled', 'queued'];

export async function fill(db: Parameters<typeof readDbSnapshot>[0]): Promise<void> {
  const now = Date.now();
  const iso = (ms: number) => new Date(ms).toISOString();
  for (let i = 0; i < OUTBOX; i += CHUNK) {
    const rows = Array.from({ length: Math.min(CHUNK, OUTBOX - i) }, (_, k) => {
      const n = i + k;
      return {
        source_kind: 'campaign', source_id: `cmp_${n % 100}`, source_ref: null, contact_id: `ct_${n}`, client_id: `cl_${n % 1000}`,
        channel: CHANNELS[n % 3]!, idempotency_key: `key_${n}`, recipient_email: `p${n}@x.example`, payload: '{}', meta: '{}', policy: null,
        state: STATES[n % STATES.length]!, attempts: 1, not_before: iso(now - (n % 3600) * 1000), provider_message_id: null, error_code: null,
        error_message: null, updated_at: iso(now), sent_at: null, lease_owner: null, lease_until: null,
      };
    });
    await db.insertInto('outbox').values(rows).execute();
  }
  for (let i = 0; i < INBOX; i += CHUNK) {
    const rows = Array.from({ length: Math.min(CHUNK, INBOX - i) }, (_, k) => {
      const n = i + k;
      return {
        provider: 'sendgrid', dedup_key: `sendgrid:${n}`, event_type: 'delivered', email: `p${n}@x.example`, occurred_at: iso(now), received_at: iso(now - n),
        payload: '{}', state: n % 200 === 0 ? 'pending' : 'processed', attempts: 0, next_attempt_at: iso(now), lease_owner: null, lease_until: null,
        processed_at: n % 200 === 0 ? null : iso(now), note: null, last_error: null,
      };
    });
    await db.insertInto('inbox_events').values(rows).execute();
  }
  for (let i = 0; i < ENROLLMENTS; i += CHUNK) {
    const rows = Array.from({ length: Math.min(CHUNK, ENROLLMENTS - i) }, (_, k) => {
      const n = i + k;
      return {
        enrollment_id: `en_${n}`, workflow_id: `wf_${n % 50}`, version: 1, occurrence_key: `occ_${n}`, subject_kind: 'contact', client_id: `cl_${n % 1000}`,
        contact_id: `ct_${n}`, state: n % 10 === 0 ? 'active' : 'completed', step_index: 0, next_run_at: iso(now + 86_400_000), lease_owner: null, lease_until: null,
        depth: 0, context: '{}', start_event_id: 0, enrolled_at: iso(now), updated_at: iso(now), finished_at: null, exit_reason: null,
      };
    });
    await db.insertInto('workflow_enrollments').values(rows).execute();
  }
}

async function benchDialect(name: 'sqlite' | 'postgres'): Promise<void> {
  const target = await createTarget(name);
  // Delivery and the inbox processor stay idle: nothing is due to them (queued rows have no contacts; pending ones are not leased here).
  const h = await startInMemory(testEnv({ ...target.env, LOG_LEVEL: 'silent', MCP_HTTP_PORT: '0', MCP_METRICS: 'true', CS_MCP_READ_ONLY: 'true' }));
  const server = await serveHttp(h.services);
  const base = server.url.replace(/\/mcp$/, '');
  try {
    const db = h.services.store.db;
    await fill(db);
    if (name === 'postgres') await sql`analyze outbox, inbox_events, workflow_enrollments`.execute(db);
    const snap: number[] = [];
    for (let i = 0; i < 12; i++) {
      const t = performance.now();
      await readDbSnapshot(db);
      if (i >= 2) snap.push(performance.now() - t);
    }
    const s = summarize(snap);
    line(`[${name}] database gauges read (${OUTBOX / 1000}k outbox, ${INBOX / 1000}k inbox, ${ENROLLMENTS / 1000}k enrolments) p50 / max ms`, `${fmt(s.p50)} / ${fmt(Math.max(...snap))}`);
    /** p50 / p99 of `GET path` back to back (after 5 warm-up requests). */
    const poll = async (path: string) => {
      const samples: number[] = [];
      for (let i = 0; i < 200; i++) {
        const t = performance.now();
        await (await fetch(`${base}${path}`)).text();
        if (i >= 5) samples.push(performance.now() - t);
      }
      const q = summarize(samples);
      return `${fmt(q.p50)} / ${fmt(q.p99)}`;
    };
    line(`[${name}] GET /metrics back to back (gauges cached) p50 / p99 ms`, await poll('/metrics'));
    line(`[${name}] GET /readyz back to back (answer cached 1 s) p50 / p99 ms`, await poll('/readyz'));
    line(`[${name}] GET /healthz p50 / p99 ms`, await poll('/healthz'));
  } finally {
    await server.close();
    await h.close();
    await target.cleanup();
  }
}

export default async function run(): Promise<void> {
  await benchDialect('sqlite');
  const reason = await postgresUnavailableReason();
  if (reason) line('[postgres] skipped', reason);
  else await benchDialect('postgres');
}
