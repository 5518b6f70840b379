/**
 * The yardstick for `bench:campaign`'s CPU figures: a bare HTTP client, with no database, engine or MCP,
 * sending SendGrid mail/send requests at a given rate over the same undici `request` the server uses,
 * and reading each answer. What it costs a request is what this machine charges for the timer wake-ups,
 * socket writes and answer reads alone at that rate.
 *
 * `perWake` requests leave together on each wake-up: 1 is one a tick (the most a machine can charge a
 * request at that rate); 10 is the server's own grouping at 100/s (rate-budget.ts: up to ten within
 * 100 ms leave together), so its figure is the floor under the server's CPU per message. `rounds` runs
 * the same load again in the same process: the first round pays for a new process's compiling, as a
 * server's first campaign does; a later one is warm, as its second is.
 *
 * Run as a child process: `reference-client.ts <url> <key> <rate> <n> [perWake=1] [rounds=1]`; prints
 * `{ cpuMsPerRequest: number[] (one per round), rejected }` as JSON on stdout.
 */
import { request } from 'undici';

const [url, key, rateArg, nArg, perWakeArg = '1', roundsArg = '1'] = process.argv.slice(2);
const rate = Number(rateArg);
const n = Number(nArg);
const perWake = Math.max(1, Number(perWakeArg));
const rounds = Math.max(1, Number(roundsArg));

function body(i: number): string {
  // About the size of one campaign message as the server sends it.
  return JSON.stringify({
    personalizations: [{ to: [{ email: `person${i}@bench.example`, name: `P${i}` }], custom_args: { campaign_id: 'reference', outbox_id: String(i) } }],
    from: { email: 'success@ourco.test' },
    subject: 'Reference: news for Client',
    content: [{ type: 'text/plain', value: `Hi P${i}, reference news. `.repeat(8) }],
  });
}

/** One round: n requests, perWake at a time, each group when the rate allows it. CPU ms per request. */
async function round(offset: number, counts: { rejected: number }): Promise<number> {
  let done = 0;
  const start = performance.now();
  const cpu0 = process.cpuUsage();
  await new Promise<void>((resolve) => {
    let sent = 0;
    const send = (i: number) =>
      request(`${url}/v3/mail/send`, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: body(offset + i) })
        .then(async (r) => {
          if (r.statusCode === 429) counts.rejected += 1;
          await r.body.dump();
        })
        .catch(() => (counts.rejected += 1))
        .finally(() => {
          if (++done === n) resolve();
        });
    const wake = () => {
      for (let k = 0; k < perWake && sent < n; k++) void send(sent++);
      if (sent < n) setTimeout(wake, Math.max(0, start + (sent * 1000) / rate - performance.now()));
    };
    wake();
  });
  const cpu = process.cpuUsage(cpu0);
  return (cpu.user + cpu.system) / 1000 / n;
}

async function main(): Promise<void> {
  const counts = { rejected: 0 };
  const cpuMsPerRequest: number[] = [];
  for (let r = 0; r < rounds; r++) cpuMsPerRequest.push(await round(r * n, counts));
  process.stdout.write(`${JSON.stringify({ cpuMsPerRequest, rejected: counts.rejected })}\n`);
}

void main();
