/**
 * `npm run bench:campaign`: a 2,000-recipient campaign against a SendGrid stand-in that enforces 200
 * requests per 2-second window and adds 20 ms latency. Reports the achieved send rate as a fraction of
 * the allowed rate, 429s, duplicates, wall time and peak memory; then the same audience sent by a
 * straightforward sequential loop, and by a naive concurrent loop without pacing, for comparison.
 */
import fs from 'node:fs';
import path from 'node:path';
import { startInMemory, tempDataDir, testEnv } from '../test/helpers/mcp.js';
import { startSendGridStandIn, type SendGridStandIn } from '../test/stand-ins/sendgrid.js';
import { fmt, line, memoryLine, withPeakMemory } from './util.js';

const RECIPIENTS = Number(process.env.BENCH_RECIPIENTS ?? 2000);
const LIMIT = 200;
const WINDOW_MS = 2000;
const LATENCY_MS = 20;
const ALLOWED_PER_S = LIMIT / (WINDOW_MS / 1000);
const KEY = 'SG.bench-campaign';

function duplicates(sg: SendGridStandIn): number {
  return [...sg.countsByAddress().values()].filter((n) => n > 1).length;
}

/** Waits for the start of a fresh rate window so every run gets the same budget. */
async function alignToWindow(): Promise<void> {
  await new Promise((r) => setTimeout(r, WINDOW_MS - (Date.now() % WINDOW_MS) + 5));
}

async function viaServer(csv: string, dataDir: string): Promise<void> {
  const sg = await startSendGridStandIn({ apiKey: KEY, rateLimit: { limit: LIMIT, windowMs: WINDOW_MS }, latencyMs: LATENCY_MS });
  const h = await startInMemory(testEnv({ SENDGRID_API_KEY: KEY, SENDGRID_BASE_URL: sg.url, SENDGRID_FROM_EMAIL: 'success@ourco.test', CAMPAIGN_DISPATCH_POLL_MS: '100' }, dataDir));
  try {
    await h.call('import_clients', { file_path: csv });
    const args = {
      campaign_name: 'Bench',
      template_type: 'newsletter',
      subject_line: 'News for {{ client.name }}',
      body_text: 'Hi {{ contact.first_name | fallback: "there" }}',
      target_tier: 'enterprise',
    };
    const preview = await h.call('send_personalized_email', args);
    await alignToWindow();
    const memory = await withPeakMemory(async () => {
      const started = performance.now();
      const confirmed = await h.call('send_personalized_email', { ...args, confirmation_token: preview.structuredContent.confirmation_token });
      const id = confirmed.structuredContent.campaign_id;
      for (;;) {
        const s = await h.call('get_campaign_status', { campaign_id: id });
        const t = s.structuredContent.campaign.totals;
        if (t.queued + t.sending === 0) return { secs: (performance.now() - started) / 1000, totals: t };
        await new Promise((r) => setTimeout(r, 25));
      }
    });
    const result = memory.result;
    const rate = result.totals.sent / result.secs;
    // Budget use: what was sent against what the windows the run touched allowed.
    const windows = Math.ceil((result.secs * 1000) / WINDOW_MS);
    line(`send_personalized_email: ${RECIPIENTS} recipients, wall time s`, fmt(result.secs, 2));
    line('  sent / failed / unknown', `${result.totals.sent} / ${result.totals.failed} / ${result.totals.unknown}`);
    line(`  budget used: sent / (${LIMIT} × ${windows} windows touched)`, `${fmt((100 * result.totals.sent) / (LIMIT * windows), 1)} % of allowed`);
    line(`  raw rate msg/s (allowed ${ALLOWED_PER_S}/s; the last window is not waited out)`, fmt(rate, 1));
    line('  429s received / duplicates', `${sg.rate.rejected} / ${duplicates(sg)}`);
    line('  peak RSS / heap MiB', memoryLine(memory));
  } finally {
    await h.close();
    await sg.stop();
  }
}

function body(i: number) {
  return JSON.stringify({
    personalizations: [{ to: [{ email: `person${i}@bench.example` }] }],
    from: { email: 'success@ourco.test' },
    subject: 'News',
    content: [{ type: 'text/plain', value: 'Hi' }],
  });
}

async function send(url: string, i: number): Promise<number> {
  const r = await fetch(`${url}/v3/mail/send`, { method: 'POST', headers: { Authorization: `Bearer ${KEY}`, 'Content-Type': 'application/json' }, body: body(i) });
  await r.arrayBuffer();
  return r.status;
}

async function sequentialLoop(): Promise<void> {
  const sg = await startSendGridStandIn({ apiKey: KEY, rateLimit: { limit: LIMIT, windowMs: WINDOW_MS }, latencyMs: LATENCY_MS });
  try {
    await alignToWindow();
    const started = performance.now();
    let sent = 0;
    for (let i = 0; i < RECIPIENTS; i++) if ((await send(sg.url, i)) === 202) sent++;
    const secs = (performance.now() - started) / 1000;
    line('sequential loop (one request after another): wall time s', fmt(secs, 2));
    line('  sent, achieved rate', `${sent}, ${fmt(sent / secs, 1)} msg/s = ${fmt((100 * sent) / secs / ALLOWED_PER_S, 1)} % of allowed`);
    line('  429s / duplicates', `${sg.rate.rejected} / ${duplicates(sg)}`);
  } finally {
    await sg.stop();
  }
}

async function naiveConcurrentLoop(): Promise<void> {
  const sg = await startSendGridStandIn({ apiKey: KEY, rateLimit: { limit: LIMIT, windowMs: WINDOW_MS }, latencyMs: LATENCY_MS });
  try {
    await alignToWindow();
    const started = performance.now();
    let next = 0;
    let sent = 0;
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (next < RECIPIENTS) {
          const i = next++;
          if ((await send(sg.url, i)) === 202) sent++;
        }
      }),
    );
    const secs = (performance.now() - started) / 1000;
    line('naive loop, 8 concurrent, no pacing: wall time s', fmt(secs, 2));
    line('  sent (the rest got 429 and were dropped), 429s', `${sent}, ${sg.rate.rejected}`);
  } finally {
    await sg.stop();
  }
}

async function main(): Promise<void> {
  const data = tempDataDir();
  try {
    const csv = path.join(data.dir, 'audience.csv');
    const rows = ['client_id,client_name,tier,contact_email,contact_first_name'];
    for (let i = 0; i < RECIPIENTS; i++) rows.push(`client-${String(Math.floor(i / 10)).padStart(4, '0')},Client ${Math.floor(i / 10)},enterprise,person${i}@bench.example,P${i}`);
    fs.writeFileSync(csv, rows.join('\n'));
    line('stand-in limit', `${LIMIT} requests / ${WINDOW_MS} ms window, ${LATENCY_MS} ms latency`);
    await viaServer(csv, data.dir);
    await sequentialLoop();
    await naiveConcurrentLoop();
  } finally {
    data.cleanup();
  }
}

await main();
