/**
 * The yardsticks for `bench:campaign`'s CPU figures, run as a child process. Each sends SendGrid
 * mail/send requests at a given rate over the same undici `request` the server uses, and reads each
 * answer.
 *
 * - `bare`: an HTTP client alone, with no database, engine or MCP. What it costs a request is what
 *   this machine charges for the timer wake-ups, socket writes and answer reads alone at that rate.
 * - `durable`: the same client with the least an outbox must write to keep the server's promises,
 *   hand-written over better-sqlite3 (WAL, synchronous NORMAL, as the server's store): every message
 *   staged in one transaction; on each wake-up one transaction that records the answers since the
 *   last one (state, provider id, an audit entry each), reads the group's consent (contact and
 *   suppression list) and marks the group `sending` before its requests leave. No lease, no
 *   admission rules beyond consent, no campaign or MCP: the floor of exactly-once and audit on this
 *   machine, under which the server's layers (Kysely, the engine, MCP) add their own cost.
 * - `leased`: `durable`, with rows leased ahead as the server leases them so that instances sharing a
 *   database never take the same row (a claim of about two seconds' rows, topped up at half; each
 *   group then marked `sending` only if still queued and held): what that coordination adds.
 *
 * `perWake` requests leave together on each wake-up: 1 is one a tick (the most a machine can charge a
 * request at that rate); 10 is the server's own grouping at 100/s (rate-budget.ts: up to ten within
 * 100 ms leave together), so its figure is the floor under the server's CPU per message. `rounds` runs
 * the same load again in the same process: the first round pays for a new process's compiling, as a
 * server's first campaign does; a later one is warm, as its second is.
 *
 * `reference-client.ts <url> <key> <rate> <n> [perWake=1] [rounds=1] [bare|durable|leased=bare] [dataDir]`;
 * prints `{ cpuMsPerRequest: number[] (one per round), rejected }` as JSON on stdout.
 */
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import SQLite from 'better-sqlite3';
import { request } from 'undici';

const [url, key, rateArg, nArg, perWakeArg = '1', roundsArg = '1', mode = 'bare', dataDir] = process.argv.slice(2);
const rate = Number(rateArg);
const n = Number(nArg);
const perWake = Math.max(1, Number(perWakeArg));
const rounds = Math.max(1, Number(roundsArg));

interface Message {
  id: number;
  email: string;
  name: string;
}

function body(m: Message): string {
  // About the size of one campaign message as the server sends it.
  return JSON.stringify({
    personalizations: [{ to: [{ email: m.email, name: m.name }], custom_args: { campaign_id: 'reference', outbox_id: String(m.id) } }],
    from: { email: 'success@ourco.test' },
    subject: 'Reference: news for Client',
    content: [{ type: 'text/plain', value: `Hi ${m.name}, reference news. `.repeat(8) }],
  });
}

/** Sends one message; resolves with SendGrid's message id (undefined when refused). */
async function send(m: Message, counts: { rejected: number }): Promise<string | undefined> {
  try {
    const r = await request(`${url}/v3/mail/send`, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: body(m) });
    await r.body.dump();
    if (r.statusCode === 429) counts.rejected += 1;
    const id = r.headers['x-message-id'];
    return r.statusCode < 300 && typeof id === 'string' ? id : undefined;
  } catch {
    counts.rejected += 1;
    return undefined;
  }
}

/** What a mode does each round: `stage` its messages (counted, as the server's confirm is), `wake` for each group, `drain` at the end. */
interface Sender {
  stage(offset: number): void;
  /** Starts up to `k` messages: a promise for each one started. */
  wake(k: number): Promise<unknown>[];
  drain(): void;
}

function bareSender(counts: { rejected: number }): Sender {
  let next = 0;
  let offset = 0;
  return {
    stage: (o) => {
      offset = o;
      next = 0;
    },
    wake: (k) => Array.from({ length: Math.min(k, n - next) }, () => {
      const i = offset + next++;
      return send({ id: i, email: `person${i}@bench.example`, name: `P${i}` }, counts);
    }),
    drain: () => undefined,
  };
}

function durableSender(counts: { rejected: number }, leased: boolean): Sender {
  const db = new SQLite(path.join(dataDir!, 'reference.db'));
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.exec(`
    create table if not exists contacts (contact_id text primary key, email text not null, unsubscribed integer not null default 0);
    create table if not exists suppressions (address text primary key, lifted_at integer);
    create table if not exists outbox (outbox_id integer primary key, contact_id text not null, recipient text not null, state text not null,
      content text not null, provider_message_id text, updated_at integer not null, sent_at integer, lease_owner text, lease_until integer);
    create index if not exists outbox_due on outbox (state, outbox_id);
    create index if not exists outbox_contact_sent on outbox (contact_id, sent_at);
    create index if not exists outbox_provider on outbox (provider_message_id);
    create index if not exists outbox_lease_owner on outbox (lease_owner) where lease_owner is not null;
    create table if not exists timeline (entry_id integer primary key, contact_id text not null, occurred_at integer not null, summary text not null);
    create index if not exists timeline_contact on timeline (contact_id, entry_id);`);
  type Row = { outbox_id: number; contact_id: string; recipient: string; content: string };
  const owner = randomUUID();
  const addContact = db.prepare('insert into contacts (contact_id, email) values (?, ?)');
  const stageOne = db.prepare(`insert into outbox (contact_id, recipient, state, content, updated_at) values (?, ?, 'queued', ?, ?)`);
  const due = `select outbox_id from outbox where state = 'queued' and lease_owner is null order by outbox_id limit ?`;
  const claimAndMark = db.prepare(`update outbox set state = 'sending', sent_at = ?, updated_at = ? where outbox_id in (${due}) returning outbox_id, contact_id, recipient, content`);
  const lease = db.prepare(`update outbox set lease_owner = ?, lease_until = ? where outbox_id in (${due}) returning outbox_id, contact_id, recipient, content`);
  // A statement with an `in (…)` list of k values, prepared once per k (as the server's statement cache keeps them).
  const withList = (sqlFor: (list: string) => string) => {
    const byCount = new Map<number, SQLite.Statement>();
    return (k: number) => {
      let st = byCount.get(k);
      if (!st) byCount.set(k, (st = db.prepare(sqlFor(Array.from({ length: k }, () => '?').join(',')))));
      return st;
    };
  };
  const markHeldSql = withList((l) => `update outbox set state = 'sending', sent_at = ?, updated_at = ?, lease_until = ? where outbox_id in (${l}) and lease_owner = ? and state = 'queued' returning outbox_id`);
  const consentSql = withList((l) => `select contact_id, unsubscribed from contacts where contact_id in (${l})`);
  const suppressedSql = withList((l) => `select address from suppressions where lifted_at is null and address in (${l})`);
  const markHeld = (ids: number[], now: number) => markHeldSql(ids.length).all(now, now, now + 60_000, ...ids, owner) as Array<{ outbox_id: number }>;
  const consent = (ids: string[]) => consentSql(ids.length).all(...ids) as Array<{ contact_id: string; unsubscribed: number }>;
  const suppressed = (addresses: string[]) => suppressedSql(addresses.length).all(...addresses) as Array<{ address: string }>;
  const settleOne = db.prepare(`update outbox set state = ?, provider_message_id = ?, updated_at = ?, lease_owner = null, lease_until = null where outbox_id = ?`);
  const audit = db.prepare('insert into timeline (contact_id, occurred_at, summary) values (?, ?, ?)');
  const answered: Array<{ id: number; contact: string; state: 'sent' | 'failed' | 'skipped'; providerId?: string }> = [];
  const held: Row[] = [];
  const settle = () => {
    const now = Date.now();
    for (const a of answered.splice(0)) {
      settleOne.run(a.state, a.providerId ?? null, now, a.id);
      audit.run(a.contact, now, `Email "Reference: news for Client" ${a.state}`);
    }
  };
  /** The rows that may be sent; the others are settled as skipped with the next group. */
  const admitted = (rows: Row[]) => {
    if (!rows.length) return rows;
    const allowed = new Set(consent(rows.map((r) => r.contact_id)).filter((c) => !c.unsubscribed).map((c) => c.contact_id));
    const blocked = new Set(suppressed(rows.map((r) => r.recipient)).map((s) => s.address));
    const go = (r: Row) => allowed.has(r.contact_id) && !blocked.has(r.recipient);
    for (const r of rows) if (!go(r)) answered.push({ id: r.outbox_id, contact: r.contact_id, state: 'skipped' });
    return rows.filter(go);
  };
  const takeGroup = db.transaction((k: number): Row[] => {
    settle();
    const now = Date.now();
    if (!leased) return admitted(claimAndMark.all(now, now, k) as Row[]);
    const group = admitted(held.splice(0, k));
    const marked = new Set(markHeld(group.map((r) => r.outbox_id), now).map((r) => r.outbox_id));
    return group.filter((r) => marked.has(r.outbox_id));
  });
  return {
    stage: (offset) =>
      db.transaction(() => {
        const now = Date.now();
        for (let i = offset; i < offset + n; i++) {
          const contact = randomUUID();
          const email = `person${i}@bench.example`;
          addContact.run(contact, email);
          stageOne.run(contact, email, JSON.stringify({ subject: 'Reference: news for Client', name: `P${i}` }), now);
        }
      })(),
    wake: (k) => {
      // Two seconds of rows at the rate, topped up at half (the server's CLAIM_HORIZON_MS), in a transaction of their own.
      if (leased && held.length < rate) held.push(...(lease.all(owner, Date.now() + 60_000, 2 * rate - held.length) as Row[]));
      return takeGroup(k).map((r) => {
        const content = JSON.parse(r.content) as { name: string };
        return send({ id: r.outbox_id, email: r.recipient, name: content.name }, counts).then((providerId) => {
          answered.push({ id: r.outbox_id, contact: r.contact_id, state: providerId ? 'sent' : 'failed', providerId });
        });
      });
    },
    drain: () => db.transaction(settle)(),
  };
}

/** One round: n messages, perWake at a time, each group when the rate allows it. CPU ms per message (staging included). */
async function round(sender: Sender, offset: number): Promise<number> {
  const cpu0 = process.cpuUsage();
  sender.stage(offset);
  const start = performance.now();
  const inFlight: Promise<unknown>[] = [];
  let sent = 0;
  await new Promise<void>((resolve) => {
    const wake = () => {
      const started = sender.wake(Math.min(perWake, n - sent));
      sent += started.length;
      inFlight.push(...started);
      // A wake that starts nothing has found the queue empty (or every message held back): the round is over.
      if (sent < n && started.length) setTimeout(wake, Math.max(0, start + (sent * 1000) / rate - performance.now()));
      else resolve();
    };
    wake();
  });
  await Promise.all(inFlight);
  sender.drain();
  const cpu = process.cpuUsage(cpu0);
  return (cpu.user + cpu.system) / 1000 / n;
}

async function main(): Promise<void> {
  const counts = { rejected: 0 };
  const sender = mode === 'bare' ? bareSender(counts) : durableSender(counts, mode === 'leased');
  const cpuMsPerRequest: number[] = [];
  for (let r = 0; r < rounds; r++) cpuMsPerRequest.push(await round(sender, r * n));
  process.stdout.write(`${JSON.stringify({ cpuMsPerRequest, rejected: counts.rejected })}\n`);
}

void main();
