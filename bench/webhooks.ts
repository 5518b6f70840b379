/**
 * `npm run bench:webhooks`: SendGrid Event Webhook batches of 1,000 signed events posted back to back
 * to /webhooks/sendgrid on the real HTTP server, on SQLite and on PostgreSQL (when reachable). Events
 * name messages of a 10,000-message campaign (delivered, open, click, processed, deferred, a few
 * bounces and unsubscribes) the way SendGrid echoes custom_args. Three runs per database:
 *   1. storing only (processor stopped): events/s stored, response time p50/p99 per batch;
 *   2. processing only: events/s applied from that backlog (customer events, timeline, counts, consent);
 *   3. both at once, as in production: events/s stored, events/s until everything is processed,
 *      response time p50/p99, peak memory.
 */
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import { sql } from 'kysely';
import { loadConfig } from '../src/config.js';
import { insertMessages } from '../src/engine/delivery/outbox.js';
import { createLogger } from '../src/log.js';
import { createServices, type Services } from '../src/services.js';
import { serveHttp } from '../src/transports/http.js';
import { createTarget, postgresUnavailableReason } from '../test/helpers/databases.js';
import { testEnv } from '../test/helpers/mcp.js';
import { sendgridSigner, type SendGridSigner } from '../test/helpers/webhooks.js';
import { fmt, line, memoryLine, summarize, withPeakMemory } from './util.js';

const BATCH = 1000;
const BATCHES = Number(process.env.BENCH_WEBHOOK_BATCHES ?? 40);
const MESSAGES = 10_000;
const CAMPAIGN = 'cmp_bench';

const id = () => randomBytes(16).toString('base64url');

/** What a large sender's stream looks like: mostly delivered / open / click, a few problems. */
function eventFor(i: number, ts: number): Record<string, unknown> {
  const m = i % MESSAGES;
  const email = `person${m}@bench.example`;
  const roll = (i * 7919) % 1000;
  const base = {
    email,
    timestamp: ts,
    'smtp-id': `<${id()}@ismtpd-1>`,
    sg_event_id: id(),
    sg_message_id: `msg${m}.filterdrecv-5645d9c87f-2lz4x-1-5D4A-4.0`,
    category: ['newsletter'],
    campaign_id: CAMPAIGN,
    contact_id: `ct_${m}`,
    client_id: `client-${Math.floor(m / 10)}`,
    outbox_key: `${CAMPAIGN}:ct_${m}:email`,
  };
  if (roll < 100) return { ...base, event: 'processed' };
  if (roll < 500) return { ...base, event: 'delivered', response: '250 OK', ip: '167.89.0.1' };
  if (roll < 800) return { ...base, event: 'open', useragent: 'Mozilla/5.0', ip: '10.0.0.1', sg_machine_open: false };
  if (roll < 950) return { ...base, event: 'click', url: `https://ourco.example/article/${m % 50}`, useragent: 'Mozilla/5.0', ip: '10.0.0.1' };
  if (roll < 985) return { ...base, event: 'deferred', response: '421 try again later', attempt: '1' };
  if (roll < 995) return { ...base, event: 'bounce', type: roll % 2 ? 'bounce' : 'blocked', reason: '550 5.1.1 mailbox does not exist', status: '5.1.1' };
  return { ...base, event: 'unsubscribe' };
}

async function seed(services: Services): Promise<void> {
  const db = services.store.db;
  const now = new Date().toISOString();
  for (let c = 0; c < MESSAGES / 10; c += 100) {
    const clients = Array.from({ length: 100 }, (_, k) => ({
      client_id: `client-${c + k}`, name: `Client ${c + k}`, tier: 'standard' as const, lifecycle_stage: 'adopting' as const,
      health_score: null, mrr: null, renewal_date: null, owner_email: null, custom_attributes: '{}', created_at: now, updated_at: now,
    }));
    await db.insertInto('clients').values(clients).execute();
  }
  for (let m = 0; m < MESSAGES; m += 500) {
    const contacts = Array.from({ length: 500 }, (_, k) => ({
      contact_id: `ct_${m + k}`, client_id: `client-${Math.floor((m + k) / 10)}`, email: `person${m + k}@bench.example`, name: null, first_name: null, role: null, phone: null,
      external_user_id: null, intercom_contact_id: null, intercom_role: null, unsubscribed: 0, unsubscribed_at: null, unsubscribe_source: null, unsubscribe_reason: null,
      email_status: null, email_status_at: null, email_status_source: null, email_status_reason: null, timezone: null, created_at: now, updated_at: now,
    }));
    await db.insertInto('contacts').values(contacts).execute();
  }
  const messages = Array.from({ length: MESSAGES }, (_, m) => ({
    source_kind: 'campaign' as const,
    source_id: CAMPAIGN,
    contact_id: `ct_${m}`,
    client_id: `client-${Math.floor(m / 10)}`,
    channel: 'email' as const,
    idempotency_key: `${CAMPAIGN}:ct_${m}:email`,
    content: { subject: 'News', text: 'Hello', to_email: `person${m}@bench.example` },
    meta: { label: 'Bench', custom_args: {} },
    not_before: now,
  }));
  // Staged, then marked sent: the outbox of a campaign that went out (the dispatcher never sees them).
  await insertMessages(db, messages, Date.now(), 'staged');
  await db.updateTable('outbox').set({ state: 'sent', sent_at: now, provider_message_id: sql`'msg' || substr(contact_id, 4)` }).execute();
  await services.store.refreshStatistics();
}

/** The batches' bodies, made before the clock starts (the generator is not what is measured). */
function makeBodies(batches: number, offset: number): string[] {
  const ts = Math.floor(Date.now() / 1000);
  return Array.from({ length: batches }, (_, b) => JSON.stringify(Array.from({ length: BATCH }, (_, k) => eventFor(offset + b * BATCH + k, ts))));
}

/** Posts the bodies one after another, each signed as it goes; returns the response times (ms). */
async function postBatches(url: string, signer: SendGridSigner, bodies: string[]): Promise<{ ms: number[]; secs: number; failed: number }> {
  const ms: number[] = [];
  let failed = 0;
  const started = performance.now();
  for (const body of bodies) {
    const t = performance.now();
    const r = await fetch(url, { method: 'POST', headers: signer.headers(body), body });
    await r.arrayBuffer();
    ms.push(performance.now() - t);
    if (r.status !== 200) failed++;
  }
  return { ms, secs: (performance.now() - started) / 1000, failed };
}

const cpuMs = (since: NodeJS.CpuUsage) => {
  const c = process.cpuUsage(since);
  return (c.user + c.system) / 1000;
};

/** Polls cheaply (the earliest pending event, from an index) so the check itself costs little. */
async function untilProcessed(services: Services): Promise<void> {
  while ((await services.inbox.repo.nextDueAt()) !== undefined) await new Promise((r) => setTimeout(r, 20));
}

async function benchDialect(name: 'sqlite' | 'postgres'): Promise<void> {
  const target = await createTarget(name);
  const signer = sendgridSigner();
  const config = loadConfig(testEnv({ ...target.env, MCP_HTTP_PORT: '0', SENDGRID_WEBHOOK_PUBLIC_KEY: signer.publicKey, WEBHOOK_PROCESS_POLL_MS: '100' }) as NodeJS.ProcessEnv);
  const services = await createServices(config, createLogger('silent'));
  const server = await serveHttp(services);
  const url = server.url.replace(/\/mcp$/, '/webhooks/sendgrid');
  const events = BATCHES * BATCH;
  try {
    await seed(services);
    line(`${name}: ${BATCHES} batches × ${BATCH} SendGrid events over HTTP`, `${events} events, ${MESSAGES} messages`);

    await services.inbox.processor.stop();
    let bodies = makeBodies(BATCHES, 0);
    let cpu = process.cpuUsage();
    const stored = await postBatches(url, signer, bodies);
    const storeCpu = cpuMs(cpu);
    const s1 = summarize(stored.ms);
    line('  1. storing only: events/s stored', fmt(events / stored.secs, 0));
    line('     response per batch p50 / p99 ms', `${fmt(s1.p50, 1)} / ${fmt(s1.p99, 1)}${stored.failed ? ` (${stored.failed} failed)` : ''}`);
    line('     this process\'s CPU ms per 1,000 events (client included)', fmt(storeCpu / BATCHES, 1));

    let t = performance.now();
    cpu = process.cpuUsage();
    services.inbox.processor.start();
    await untilProcessed(services);
    const processSecs = (performance.now() - t) / 1000;
    const processCpu = cpuMs(cpu);
    line('  2. processing only: events/s processed', fmt(events / processSecs, 0));
    line('     this process\'s CPU ms per 1,000 events', fmt(processCpu / BATCHES, 1));

    bodies = makeBodies(BATCHES, events);
    const memory = await withPeakMemory(async () => {
      t = performance.now();
      const r = await postBatches(url, signer, bodies);
      await untilProcessed(services);
      return { ...r, totalSecs: (performance.now() - t) / 1000 };
    });
    const both = memory.result;
    const s3 = summarize(both.ms);
    line('  3. both at once: events/s stored', fmt(events / both.secs, 0));
    line('     events/s processed (first post → last event processed)', fmt(events / both.totalSecs, 0));
    line('     response per batch p50 / p99 ms', `${fmt(s3.p50, 1)} / ${fmt(s3.p99, 1)}${both.failed ? ` (${both.failed} failed)` : ''}`);
    line('     peak RSS / heap MiB (the client\'s bodies included)', memoryLine(memory));

    const counts = await services.store.db.selectFrom('message_events').select(['kind', (eb) => eb.fn.countAll<number>().as('n')]).groupBy('kind').execute();
    const customer = await services.store.db.selectFrom('customer_events').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
    line('  check: customer events recorded', `${Number(customer.n)} (of ${2 * events}, minus processed events which record none)`);
    line('  check: distinct messages per kind', counts.map((c) => `${c.kind} ${Number(c.n)}`).join(', '));
  } finally {
    await server.close();
    await services.close();
    await target.cleanup();
  }
}

async function main(): Promise<void> {
  line('load average (1 min) / CPUs at start', `${os.loadavg()[0]!.toFixed(2)} / ${os.cpus().length}`);
  await benchDialect('sqlite');
  const reason = await postgresUnavailableReason();
  if (reason) line('postgres', `skipped: ${reason}`);
  else await benchDialect('postgres');
}

if (!process.env.BENCH_WEBHOOKS_NO_MAIN) await main();

export { seed, makeBodies, postBatches, untilProcessed };
