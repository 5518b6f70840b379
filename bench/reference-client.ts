/**
 * The yardstick for `bench:campaign`'s CPU figures: a bare HTTP client, with no database, engine or MCP,
 * sending one SendGrid mail/send request per tick at a given rate over the same undici `request` the
 * server uses, and reading each answer. What it costs a request is what this machine charges for a
 * timer wake-up, a socket write and an answer read at that rate: the server cannot spend less a message
 * without sending several per wake-up. Run as a child process: `reference-client.ts <url> <key> <rate> <n>`;
 * prints `{ cpuMsPerRequest, rejected }` as JSON on stdout.
 */
import { request } from 'undici';

const [url, key, rateArg, nArg] = process.argv.slice(2);
const rate = Number(rateArg);
const n = Number(nArg);

function body(i: number): string {
  // About the size of one campaign message as the server sends it.
  return JSON.stringify({
    personalizations: [{ to: [{ email: `person${i}@bench.example`, name: `P${i}` }], custom_args: { campaign_id: 'reference', outbox_id: String(i) } }],
    from: { email: 'success@ourco.test' },
    subject: 'Reference: news for Client',
    content: [{ type: 'text/plain', value: `Hi P${i}, reference news. `.repeat(8) }],
  });
}

async function main(): Promise<void> {
  let done = 0;
  let rejected = 0;
  const start = performance.now();
  const cpu0 = process.cpuUsage();
  await new Promise<void>((resolve) => {
    let sent = 0;
    const tick = () => {
      const i = sent++;
      request(`${url}/v3/mail/send`, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: body(i) })
        .then(async (r) => {
          if (r.statusCode === 429) rejected += 1;
          await r.body.dump();
        })
        .catch(() => (rejected += 1))
        .finally(() => {
          if (++done === n) resolve();
        });
      if (sent < n) setTimeout(tick, Math.max(0, start + (sent * 1000) / rate - performance.now()));
    };
    tick();
  });
  const cpu = process.cpuUsage(cpu0);
  process.stdout.write(`${JSON.stringify({ cpuMsPerRequest: (cpu.user + cpu.system) / 1000 / n, rejected })}\n`);
}

void main();
