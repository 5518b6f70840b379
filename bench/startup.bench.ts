/**
 * Issue 12: start-up and per-call overhead, each against a baseline measured in the same run.
 *
 * 1. Cold start: time from spawn to the `initialize` answer, and to the `tools/list` answer (issue 18: a
 *    client lists tools right after initializing), over stdio, for `node dist/cli.js` (a temp
 *    data folder, no provider credentials) and for a one-tool server made with the SDK's McpServer over
 *    StdioServerTransport (written by this bench into a temp file). Median of BENCH_SPAWNS spawns each,
 *    alternating, after one untimed spawn each. Target: ratio ≤ 1.3.
 * 2. intercom_get_user through MCP against the direct intercom-client call, same stand-in (see
 *    intercom.bench.ts). Target: p50 ratio ≤ 1.3.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { DIST_CLI, tempDataDir } from '../test/helpers/mcp.js';
import { measureGetUser, printGetUser } from './intercom.bench.js';
import { fmt, line, summarize } from './util.js';

const SPAWNS = Number(process.env.BENCH_SPAWNS ?? 15);
const CALLS = Number(process.env.BENCH_N ?? 300);
const CALL_WARMUP = 100;

const INITIALIZE = `${JSON.stringify({
  jsonrpc: '2.0',
  id: 1,
  method: 'initialize',
  params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'startup-bench', version: '1.0.0' } },
})}\n`;

/** The baseline: the SDK's own one-tool example shape, imported from this project's node_modules. */
function sdkServerSource(): string {
  const mcp = import.meta.resolve('@modelcontextprotocol/sdk/server/mcp.js');
  const stdio = import.meta.resolve('@modelcontextprotocol/sdk/server/stdio.js');
  const zod = import.meta.resolve('zod');
  return `import { McpServer } from ${JSON.stringify(mcp)};
import { StdioServerTransport } from ${JSON.stringify(stdio)};
import { z } from ${JSON.stringify(zod)};
const server = new McpServer({ name: 'one-tool', version: '1.0.0' });
server.registerTool('echo', { description: 'Echoes its text', inputSchema: { text: z.string() } }, async ({ text }) => ({
  content: [{ type: 'text', text }],
}));
await server.connect(new StdioServerTransport());
`;
}

const INITIALIZED = `${JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' })}\n`;
const TOOLS_LIST = `${JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'tools/list', params: {} })}\n`;

interface StartupTimes {
  initialize: number;
  toolsList: number;
}

/**
 * Spawns `args`, sends initialize at once and, on its answer, initialized and tools/list (as a client
 * does); resolves with the ms from spawn until each answer.
 */
function timeStartup(args: string[], env: Record<string, string>): Promise<StartupTimes> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(process.execPath, args, { env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    let initializedAt: number | undefined;
    let listedAt: number | undefined;
    child.stdout.on('data', (d: Buffer) => {
      out += String(d);
      let nl;
      while ((nl = out.indexOf('\n')) >= 0) {
        const answer = JSON.parse(out.slice(0, nl)) as { id?: number; result?: { tools?: unknown[] } };
        out = out.slice(nl + 1);
        if (answer.id === 1 && answer.result && initializedAt === undefined) {
          initializedAt = performance.now() - started;
          child.stdin.write(INITIALIZED + TOOLS_LIST);
        } else if (answer.id === 2 && answer.result?.tools?.length && listedAt === undefined) {
          listedAt = performance.now() - started;
          child.stdin.end(); // the client closing stdin is how a stdio server is told to stop
        } else if (answer.id !== undefined) reject(new Error(`unexpected answer: ${JSON.stringify(answer).slice(0, 300)}`));
      }
    });
    child.stderr.on('data', (d: Buffer) => (err += String(d)));
    child.on('error', reject);
    child.on('exit', (code) => {
      if (initializedAt === undefined || listedAt === undefined) reject(new Error(`exited (${code}) before answering initialize and tools/list: ${err}`));
      else resolve({ initialize: initializedAt, toolsList: listedAt });
    });
    child.stdin.write(INITIALIZE);
  });
}

type Summary = ReturnType<typeof summarize>;

export async function measureStartup(spawns: number): Promise<{ ours: Summary; sdk: Summary; oursList: Summary; sdkList: Summary }> {
  const data = tempDataDir('csmcp-bench-startup-');
  const script = path.join(data.dir, 'one-tool-server.mjs');
  fs.writeFileSync(script, sdkServerSource());
  // No provider credentials; the data folder is reused, as on a desktop that starts the server each time.
  const env = { CS_MCP_DATA_DIR: path.join(data.dir, 'data'), LOG_LEVEL: 'info' };
  try {
    await timeStartup([DIST_CLI], env); // creates the database: a first launch, not timed
    await timeStartup([script], {});
    const ours: StartupTimes[] = [];
    const sdk: StartupTimes[] = [];
    for (let i = 0; i < spawns; i++) {
      ours.push(await timeStartup([DIST_CLI], env));
      sdk.push(await timeStartup([script], {}));
    }
    return {
      ours: summarize(ours.map((t) => t.initialize)),
      sdk: summarize(sdk.map((t) => t.initialize)),
      oursList: summarize(ours.map((t) => t.toolsList)),
      sdkList: summarize(sdk.map((t) => t.toolsList)),
    };
  } finally {
    data.cleanup();
  }
}

export default async function run(): Promise<void> {
  const { ours, sdk, oursList, sdkList } = await measureStartup(SPAWNS);
  line(`spawn → initialize answer, node dist/cli.js (n=${ours.n}) median ms`, fmt(ours.p50, 0));
  line(`spawn → initialize answer, one-tool SDK server median ms`, fmt(sdk.p50, 0));
  line('ratio ours / one-tool SDK server (median; target ≤ 1.3)', `${fmt(ours.p50 / sdk.p50)}x`);
  line(`spawn → tools/list answer, node dist/cli.js (n=${oursList.n}) median ms`, fmt(oursList.p50, 0));
  line(`spawn → tools/list answer, one-tool SDK server median ms`, fmt(sdkList.p50, 0));
  line('ratio ours / one-tool SDK server (median; target ≤ 1.3)', `${fmt(oursList.p50 / sdkList.p50)}x`);
  printGetUser(await measureGetUser(CALLS, CALL_WARMUP));
  process.stdout.write('(target for intercom_get_user: ratio MCP / direct at p50 ≤ 1.3)\n');
}
