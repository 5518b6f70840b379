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

export interface GetUserFigures {
  mcp: ReturnType<typeof summarize>;
  sdk: ReturnType<typeof summarize>;
}

/**
 * Times `n` calls each way (after `warmup` untimed ones) against one stand-in with no latency. The two
 * ways alternate in rounds of 50 so that a slow patch of the (shared) machine lands on both.
 */
export async function measureGetUser(n: number, warmup: number): Promise<GetUserFigures> {
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
    for (let i = 0; i < warmup; i++) {
      await viaMcp();
      await viaSdk();
    }
    const mcpSamples: number[] = [];
    const sdkSamples: number[] = [];
    const round = 50;
    for (let done = 0; done < n; done += round) {
      const k = Math.min(round, n - done);
      for (const [fn, samples] of [
        [viaMcp, mcpSamples],
        [viaSdk, sdkSamples],
      ] as const) {
        for (let i = 0; i < k; i++) {
          const t = performance.now();
          await fn();
          samples.push(performance.now() - t);
        }
      }
    }
    return { mcp: summarize(mcpSamples), sdk: summarize(sdkSamples) };
  } finally {
    await h.close();
    await stand.stop();
    data.cleanup();
  }
}

export function printGetUser({ mcp, sdk }: GetUserFigures): void {
  line(`intercom_get_user via MCP (n=${mcp.n}) p50 / p99 ms`, `${fmt(mcp.p50)} / ${fmt(mcp.p99)}`);
  line(`same lookup direct with intercom-client p50 / p99 ms`, `${fmt(sdk.p50)} / ${fmt(sdk.p99)}`);
  line('ratio MCP / direct (p50, p99)', `${fmt(mcp.p50 / sdk.p50)}x, ${fmt(mcp.p99 / sdk.p99)}x`);
  line('overhead per call, p50 ms', fmt(mcp.p50 - sdk.p50));
}

export default async function run(): Promise<void> {
  printGetUser(await measureGetUser(N, WARMUP));
}
