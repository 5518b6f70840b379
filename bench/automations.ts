/**
 * `npm run bench:automations`: a roster of 10,000 clients (one contact each); a health-drop workflow
 * (send_email) whose trigger matches 2,000 clients at once (one CSV import drops their score); a
 * SendGrid stand-in that allows 200 requests per 2-second window with 20 ms latency. Reports the time
 * to enrol all 2,000, the time to the first message, the send rate as a fraction of the allowed rate,
 * 429s, duplicates and peak memory. Then the cost a health trigger adds to update_client_info: p50/p99
 * with no workflow, and with 20 active health workflows, on SQLite (and PostgreSQL when reachable).
 */
import fs from 'node:fs';
import path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { createTarget, postgresUnavailableReason } from '../test/helpers/databases.js';
import { startInMemory, tempDataDir, testEnv, type InMemoryHarness } from '../test/helpers/mcp.js';
import { startSendGridStandIn, type SendGridStandIn } from '../test/stand-ins/sendgrid.js';
import { fmt, line, memoryLine, summarize, withPeakMemory } from './util.js';
import { takeActions } from '../src/engine/automations/budget.js';

/** The burst measures sending, not the action budgets: they are set out of its way (their cost is measured on its own). */
const NO_BUDGET = { AUTOMATION_MAX_ACTIONS_PER_WORKFLOW_PER_HOUR: '1000000', AUTOMATION_MAX_ACTIONS_PER_HOUR: '10000000' };

/** What the action-budget check adds to a step: a step's transaction with and without taking one action. */
async function budgetCost(dialect: 'sqlite' | 'postgres'): Promise<void> {
  const target = await createTarget(dialect);
  const h = await startInMemory(testEnv({ ...target.env, LOG_LEVEL: 'silent', ...NO_BUDGET }));
  try {
    const db = h.services.store.db;
    const limits = h.services.config.automations;
    const run = async (take: boolean, n: number) => {
      const samples: number[] = [];
      for (let i = 0; i < n; i++) {
        const t = performance.now();
        await db.transaction().execute(async (trx) => {
          await trx.selectFrom('workflows').select('workflow_id').limit(1).execute();
          if (take) await takeActions(trx, limits, `wf_bench${i % 20}`, 1);
        });
        samples.push(performance.now() - t);
      }
      return summarize(samples);
    };
    await run(true, 200); // warm-up
    const without = await run(false, 2000);
    const withCheck = await run(true, 2000);
    line(`[${dialect}] budget check per step p50 / p99 ms (n=${withCheck.n})`, `${fmt(withCheck.p50 - without.p50, 3)} / ${fmt(withCheck.p99 - without.p99, 3)} (transaction alone ${fmt(without.p50, 3)} / ${fmt(without.p99, 3)})`);
  } finally {
    await h.close();
    await target.cleanup();
  }
}

const CLIENTS = Number(process.env.BENCH_CLIENTS ?? 10_000);
const MATCHING = Number(process.env.BENCH_MATCHING ?? 2_000);
const LIMIT = 200;
const WINDOW_MS = 2000;
const LATENCY_MS = 20;
const ALLOWED_PER_S = LIMIT / (WINDOW_MS / 1000);
const KEY = 'SG.bench-automations';
const UPDATES = 500;

/** Clients: the first MATCHING are enterprise (the workflow's audience); all start healthy. */
function rosterCsv(dir: string, health: (i: number) => number, name = 'roster.csv'): string {
  const rows = ['client_id,client_name,tier,health_score,contact_email,contact_first_name,contact_role'];
  for (let i = 0; i < CLIENTS; i++) {
    rows.push(`client-${String(i).padStart(5, '0')},Client ${i},${i < MATCHING ? 'enterprise' : 'standard'},${health(i)},person${i}@bench.example,P${i},champion`);
  }
  const file = path.join(dir, name);
  fs.writeFileSync(file, rows.join('\n'));
  return file;
}

async function activate(h: InMemoryHarness, args: Record<string, unknown>): Promise<string> {
  const p = await h.call('automate_communications', args);
  const c = await h.call('automate_communications', { ...args, confirmation_token: p.structuredContent.confirmation_token });
  if (c.structuredContent.phase !== 'confirmed') throw new Error(JSON.stringify(c.structuredContent).slice(0, 800));
  return c.structuredContent.result_id;
}

function duplicates(sg: SendGridStandIn): number {
  return [...sg.countsByAddress().values()].filter((n) => n > 1).length;
}

async function burst(dir: string): Promise<void> {
  const sg = await startSendGridStandIn({ apiKey: KEY, rateLimit: { limit: LIMIT, windowMs: WINDOW_MS }, latencyMs: LATENCY_MS });
  const h = await startInMemory(
    // Production timeouts (the test defaults are short): the stand-ins share this process's event loop.
    testEnv({ SENDGRID_API_KEY: KEY, SENDGRID_BASE_URL: sg.url, SENDGRID_FROM_EMAIL: 'success@ourco.test', CAMPAIGN_DISPATCH_POLL_MS: '100', HTTP_TIMEOUT_MS: '10000', ...NO_BUDGET }, dir),
  );
  try {
    const healthy = rosterCsv(dir, () => 80);
    await h.call('import_clients', { file_path: healthy });
    const id = await activate(h, {
      workflow_name: 'Health drop',
      trigger_type: 'health_score',
      trigger_conditions: { threshold: 50, direction: 'below' },
      audience: { tier: 'enterprise' },
      actions: [{ type: 'send_email', subject: '{{ client.name }}: can we help?', body: 'Hi {{ contact.first_name | fallback: "there" }}, your health score dropped to {{ client.health_score }}.' }],
    });
    const dropped = rosterCsv(dir, (i) => (i < MATCHING ? 40 : 80), 'dropped.csv');
    const db = h.services.store.db;
    const enrolled = async () => Number((await db.selectFrom('workflow_enrollments').select((eb) => eb.fn.countAll().as('n')).where('workflow_id', '=', id).executeTakeFirst())?.n ?? 0);
    const loop = monitorEventLoopDelay({ resolution: 10 });
    loop.enable();
    const memory = await withPeakMemory(async () => {
      const t0 = performance.now();
      const imported = await h.call('import_clients', { file_path: dropped });
      const importS = (performance.now() - t0) / 1000;
      let enrolS = 0;
      let firstS = 0;
      for (;;) {
        const now = (performance.now() - t0) / 1000;
        if (!enrolS && (await enrolled()) >= MATCHING) enrolS = now;
        if (!firstS && sg.requests.length > 0) firstS = (sg.requests[0]!.at - (Date.now() - performance.now()) - t0) / 1000;
        const s = await h.call('get_workflow', { workflow_id: id });
        const m = s.structuredContent.messages.by_state;
        if (enrolS && (m.sent ?? 0) + (m.failed ?? 0) + (m.unknown ?? 0) + (m.skipped ?? 0) >= MATCHING) {
          return { importS, enrolS, firstS, doneS: (performance.now() - t0) / 1000, totals: m, updated: imported.structuredContent.clients_updated };
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    });
    loop.disable();
    const r = memory.result;
    const sendSpan = r.doneS - r.firstS;
    const windows = Math.ceil((sendSpan * 1000) / WINDOW_MS);
    line(`burst: ${CLIENTS} clients, one import drops ${MATCHING} below 50`, `${r.updated} clients updated in ${fmt(r.importS, 2)} s`);
    line('  time to enrol all (from the import call)', `${fmt(r.enrolS, 2)} s`);
    line('  time to the first message (from the import call)', `${fmt(r.firstS, 2)} s`);
    line('  all settled (from the import call)', `${fmt(r.doneS, 2)} s`);
    line('  sent / failed / unknown / skipped', `${r.totals.sent ?? 0} / ${r.totals.failed ?? 0} / ${r.totals.unknown ?? 0} / ${r.totals.skipped ?? 0}`);
    line(`  send rate msg/s (allowed ${ALLOWED_PER_S}/s)`, `${fmt((r.totals.sent ?? 0) / sendSpan, 1)} = ${fmt((100 * (r.totals.sent ?? 0)) / (LIMIT * windows), 1)} % of the ${windows} windows touched`);
    line('  429s received / duplicates', `${sg.rate.rejected} / ${duplicates(sg)}`);
    line('  peak RSS / heap MiB', memoryLine(memory));
    line('  event-loop delay p99 / max ms (server and stand-in share it)', `${fmt(loop.percentile(99) / 1e6, 1)} / ${fmt(loop.max / 1e6, 1)}`);
  } finally {
    await h.close();
    await sg.stop();
  }
}

/** update_client_info latency while health triggers listen (their evaluation runs beside it, not inside it). */
async function updateCost(dialect: 'sqlite' | 'postgres', dir: string): Promise<void> {
  const target = await createTarget(dialect);
  const h = await startInMemory(testEnv({ ...target.env, AUTOMATION_TICK_MS: '200', LOG_LEVEL: 'silent', ...NO_BUDGET }));
  try {
    await h.call('import_clients', { file_path: rosterCsv(dir, () => 80) });
    // Each phase updates its own clients once: from 80 to below every threshold (a crossing for each health workflow).
    let next = 0;
    const measure = async (label: string | undefined) => {
      const samples: number[] = [];
      for (let i = 0; i < UPDATES; i++, next++) {
        const client_id = `client-${String(next % MATCHING).padStart(5, '0')}`;
        const t = performance.now();
        const r = await h.call('update_client_info', { client_id, health_score: 20 + (i % 10) });
        if (!r.structuredContent.success) throw new Error(JSON.stringify(r.structuredContent));
        samples.push(performance.now() - t);
        // Calls reach a real server over I/O; the in-memory transport alone would never let timers (the scheduler) run.
        await new Promise((r) => setImmediate(r));
      }
      const q = summarize(samples);
      if (label) line(`[${dialect}] update_client_info ${label} p50 / p99 ms (n=${q.n})`, `${fmt(q.p50)} / ${fmt(q.p99)}`);
      return q;
    };
    await measure(undefined); // warm-up
    const without = await measure('with no workflow');
    for (let k = 0; k < 20; k++) {
      await activate(h, {
        workflow_name: `Health ${k}`,
        trigger_type: 'health_score',
        trigger_conditions: { threshold: 35 + k, direction: 'below' },
        audience: { tier: 'enterprise' },
        actions: [{ type: 'create_task', title: 'Call {{ client.name }}' }],
      });
    }
    const count = async () => Number((await h.services.store.db.selectFrom('workflow_enrollments').select((eb) => eb.fn.countAll().as('n')).executeTakeFirst())?.n ?? 0);
    const t = performance.now();
    const withWf = await measure('with 20 active health workflows');
    const during = await count();
    const phaseS = (performance.now() - t) / 1000;
    // The triggers' own work, after the calls returned (the calls never wait for it).
    let total = during;
    for (let last = -1; total !== last; ) {
      await new Promise((r) => setTimeout(r, 1500));
      [last, total] = [total, await count()];
    }
    line(`[${dialect}]   added by the triggers p50 / p99 ms`, `${fmt(withWf.p50 - without.p50)} / ${fmt(withWf.p99 - without.p99)}`);
    line(`[${dialect}]   enrolments made during the ${fmt(phaseS, 1)} s of calls / in all`, `${during} / ${total}`);
  } finally {
    await h.close();
    await target.cleanup();
  }
}

async function main(): Promise<void> {
  const data = tempDataDir();
  try {
    line('stand-in limit', `${LIMIT} requests / ${WINDOW_MS} ms window, ${LATENCY_MS} ms latency`);
    await burst(path.join(data.dir));
    fs.mkdirSync(path.join(data.dir, 'sqlite'));
    await updateCost('sqlite', path.join(data.dir, 'sqlite'));
    await budgetCost('sqlite');
    const reason = await postgresUnavailableReason();
    if (reason) line('[postgres] skipped', reason);
    else {
      await updateCost('postgres', data.dir);
      await budgetCost('postgres');
    }
  } finally {
    data.cleanup();
  }
}

await main();
