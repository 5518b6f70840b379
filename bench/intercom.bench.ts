/**
 * intercom_get_user through the MCP server (SDK client over an in-memory transport → adapter → service
 * → intercom-client → local stand-in), against the same lookup made directly with intercom-client.
 */
import { IntercomClient } from 'intercom-client';
import { startInMemory, tempDataDir, testEnv } from '../test/helpers/mcp.js';
import { startIntercomStandIn } from '../test/stand-ins/intercom.js';
import { fmt, line, summarize } from './util.js';

const N = Number(process.env.BENCH_N ?? 2000);
const WARMUP = 200;

export default async function run(): Promise<void> {
  const stand = await startIntercomStandIn({ token: 'bench-token' });
  stand.seedContact({ email: 'bench@example.org', external_id: 'u-bench', name: 'Bench User' });
  const data = tempDataDir();
  const h = await startInMemory(testEnv({ INTERCOM_ACCESS_TOKEN: 'bench-token', INTERCOM_BASE_URL: stand.url }, data.dir));
  const direct = new IntercomClient({ token: 'bench-token', baseUrl: stand.url, version: '2.14', maxRetries: 0 });
  try {
    const viaMcp = async () => {
      const r = await h.call('intercom_get_user', { user_email: 'bench@example.org' });
      if (!r.structuredContent.success) throw new Error(JSON.stringify(r.structuredContent));
    };
    // The same work the tool does: search by email, then the contact's tags.
    const viaSdk = async () => {
      const page = await direct.contacts.search({ query: { field: 'email', operator: '=', value: 'bench@example.org' }, pagination: { per_page: 5 } });
      const c = page.data[0]!;
      await direct.contacts.listAttachedTags({ contact_id: c.id });
    };
    const time = async (fn: () => Promise<void>) => {
      for (let i = 0; i < WARMUP; i++) await fn();
      const samples: number[] = [];
      for (let i = 0; i < N; i++) {
        const t = performance.now();
        await fn();
        samples.push(performance.now() - t);
      }
      return summarize(samples);
    };
    const mcp = await time(viaMcp);
    const sdk = await time(viaSdk);
    line(`intercom_get_user via MCP (n=${N}) p50 / p99 ms`, `${fmt(mcp.p50)} / ${fmt(mcp.p99)}`);
    line(`same lookup direct with intercom-client p50 / p99 ms`, `${fmt(sdk.p50)} / ${fmt(sdk.p99)}`);
    line('ratio MCP / direct (p50, p99)', `${fmt(mcp.p50 / sdk.p50)}x, ${fmt(mcp.p99 / sdk.p99)}x`);
    line('overhead per call, p50 ms', fmt(mcp.p50 - sdk.p50));
  } finally {
    await h.close();
    await stand.stop();
    data.cleanup();
  }
}
