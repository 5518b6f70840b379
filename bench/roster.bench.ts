/**
 * Import of 50,000 contacts across 10,000 clients from CSV (rows/s, peak memory), then list_clients
 * with a health + tier filter over that roster (p50/p99), on SQLite and on PostgreSQL when reachable.
 */
import fs from 'node:fs';
import path from 'node:path';
import { createTarget, postgresUnavailableReason } from '../test/helpers/databases.js';
import { startInMemory, tempDataDir, testEnv } from '../test/helpers/mcp.js';
import { fmt, line, memoryLine, summarize, withPeakMemory } from './util.js';

const CLIENTS = 10_000;
const PER_CLIENT = 5;
const TIERS = ['starter', 'standard', 'professional', 'enterprise'];
const STAGES = ['onboarding', 'adopting', 'mature', 'renewal', 'churned'];

async function writeCsv(file: string): Promise<void> {
  const out = fs.createWriteStream(file);
  out.write('client_id,client_name,tier,segments,lifecycle_stage,health_score,mrr,renewal_date,owner_email,contact_email,contact_first_name,contact_role\n');
  let rows = '';
  for (let c = 0; c < CLIENTS; c++) {
    const id = `client-${String(c).padStart(5, '0')}`;
    const client = `${id},Client ${c},${TIERS[c % 4]},${c % 3 === 0 ? 'at_risk' : 'high_value;expansion'},${STAGES[c % 5]},${(c * 37) % 101},${(c % 50) * 100},2027-${String((c % 12) + 1).padStart(2, '0')}-15,csm${c % 20}@ourco.test`;
    for (let k = 0; k < PER_CLIENT; k++) rows += `${client},person${k}@${id}.example,P${k},${k === 0 ? 'champion' : 'user'}\n`;
    if (rows.length > 1_000_000) {
      out.write(rows);
      rows = '';
    }
  }
  await new Promise<void>((resolve, reject) => out.end(rows, () => resolve()).on('error', reject));
}

async function benchDialect(name: 'sqlite' | 'postgres', csv: string): Promise<void> {
  const target = await createTarget(name);
  const h = await startInMemory(testEnv({ ...target.env, LOG_LEVEL: 'silent' }));
  try {
    const t = performance.now();
    const memory = await withPeakMemory(() => h.call('import_clients', { file_path: csv }));
    const result = memory.result;
    const secs = (performance.now() - t) / 1000;
    const r = result.structuredContent;
    if (!r.imported) throw new Error(JSON.stringify(r).slice(0, 500));
    line(`[${name}] import ${r.rows} rows (${r.clients_created} clients, ${r.contacts_created} contacts) s`, fmt(secs, 1));
    line(`[${name}] import rows/s`, fmt(r.rows / secs, 0));
    line(`[${name}] import peak RSS / heap MiB`, memoryLine(memory));
    const samples: number[] = [];
    let total = 0;
    for (let i = 0; i < 220; i++) {
      const lo = (i * 7) % 60;
      const s = performance.now();
      const res = await h.call('list_clients', { tier: [TIERS[i % 4]!, TIERS[(i + 1) % 4]!], health_min: lo, health_max: lo + 30, sort_by: 'health_score', limit: 50 });
      if (i >= 20) samples.push(performance.now() - s);
      total = res.structuredContent.total;
    }
    const q = summarize(samples);
    line(`[${name}] list_clients tier+health filter p50 / p99 ms (n=${q.n}, ~${total} matches)`, `${fmt(q.p50)} / ${fmt(q.p99)}`);
  } finally {
    await h.close();
    await target.cleanup();
  }
}

export default async function run(): Promise<void> {
  const data = tempDataDir();
  try {
    const csv = path.join(data.dir, 'roster.csv');
    await writeCsv(csv);
    await benchDialect('sqlite', csv);
    const reason = await postgresUnavailableReason();
    if (reason) line('[postgres] skipped', reason);
    else await benchDialect('postgres', csv);
  } finally {
    data.cleanup();
  }
}
