import { spawn } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { listedTool } from '../../src/mcp/tool-listing.js';
import { listingFor, VIEW_ONLY_TOOLS } from '../../src/mcp/views.js';
import { allTools } from '../../src/tools/index.js';
import { DIST_CLI, startStdio, tempDataDir, testEnv } from '../helpers/mcp.js';
import { until } from '../helpers/until.js';

/**
 * tools/list needs neither the database nor the providers: over stdio it is answered from the listing
 * `npm run build` wrote, while the store is still connecting. The proof is a database that never answers:
 * a TCP listener that accepts PostgreSQL connections and says nothing.
 */
describe('tools are listed before the services are ready (stdio)', () => {
  const data = tempDataDir();
  const sockets: net.Socket[] = [];
  const silent = net.createServer((s) => sockets.push(s));
  afterAll(async () => {
    for (const s of sockets) s.destroy();
    await new Promise((r) => silent.close(r));
    data.cleanup();
  });

  it('answers tools/list while the database has not answered, and the call still waits for it', async () => {
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const port = (silent.address() as net.AddressInfo).port;
    const h = await startStdio(testEnv({ DATABASE_URL: `postgres://nobody@127.0.0.1:${port}/never` }, data.dir));
    try {
      let callSettled = false;
      const call = h.call('list_clients', {}).finally(() => (callSettled = true));
      call.catch(() => undefined);
      // The server is now waiting on a database that will never answer...
      await until(() => sockets.length > 0);
      // ...and still lists every tool (but those only views call: this client did not declare MCP Apps).
      const { tools } = await h.client.listTools();
      expect(tools.map((t) => t.name).sort()).toEqual(allTools.map((t) => t.name).filter((n) => !VIEW_ONLY_TOOLS.has(n)).sort());
      expect(callSettled).toBe(false);
    } finally {
      const pid = h.pid;
      await h.close().catch(() => undefined);
      if (pid) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* already gone */
        }
      }
    }
  });

  it('gives a client that declared MCP Apps, from the prebuilt listing, what the live tools give it: every tool and its view', async () => {
    const port = (silent.address() as net.AddressInfo).port;
    const h = await startStdio(testEnv({ DATABASE_URL: `postgres://nobody@127.0.0.1:${port}/never` }, data.dir), { views: true });
    try {
      const { tools } = await h.client.listTools();
      expect(tools).toEqual(JSON.parse(JSON.stringify(listingFor(allTools.map(listedTool), true))));
    } finally {
      const pid = h.pid;
      await h.close().catch(() => undefined);
      if (pid) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* already gone */
        }
      }
    }
  });

  it('honours CS_MCP_TOOLSETS and CS_MCP_TOOLS_DENY in the prebuilt listing', async () => {
    const h = await startStdio(testEnv({ CS_MCP_TOOLSETS: 'roster', CS_MCP_TOOLS_DENY: 'remove_contact' }, data.dir));
    try {
      const { tools } = await h.client.listTools();
      const expected = allTools.filter((t) => (t.toolset === 'roster' || t.toolset === 'status') && t.name !== 'remove_contact').map((t) => t.name);
      expect(tools.map((t) => t.name).sort()).toEqual(expected.sort());
      // And the tools it lists are the ones it runs.
      const r = await h.call('list_clients', {});
      expect(r.structuredContent.success).toBe(true);
    } finally {
      await h.close();
    }
  });

  it('answers initialize before it loads its logger (pino, a tenth of the start-up) or the services', async () => {
    const probe = path.resolve(import.meta.dirname, '../helpers/module-load-probe.mjs');
    const env = { ...testEnv({ LOG_LEVEL: 'info', CS_MCP_PROBE_MODULES: '(^|/)(pino|better-sqlite3)(/|$)' }, data.dir), PATH: process.env.PATH ?? '' };
    const child = spawn(process.execPath, ['--import', probe, DIST_CLI], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stderr = '';
    let stdout = '';
    child.stderr.on('data', (d) => (stderr += String(d)));
    child.stdout.on('data', (d) => (stdout += String(d)));
    // Written before the server has started, as a client does: it is waiting when the server first reads.
    child.stdin.write(`${JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'probe', version: '1' } } })}\n`);
    try {
      await until(() => stdout.includes('"id":1') && /"msg":"serving MCP over stdio"/.test(stderr));
      const lines = stderr.split('\n').filter((l) => l.startsWith('probe: '));
      const answered = lines.indexOf('probe: first stdout write');
      const pino = lines.findIndex((l) => /loaded .*pino/.test(l));
      const sqlite = lines.findIndex((l) => /loaded .*better-sqlite3/.test(l));
      expect(answered, stderr).toBeGreaterThanOrEqual(0);
      // Both load, after the answer (the probe sees them: it is not blind).
      expect(pino, stderr).toBeGreaterThan(answered);
      expect(sqlite, stderr).toBeGreaterThan(answered);
    } finally {
      // A server that already exited (a failed start) has nothing left to wait for.
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.stdin.end();
        await exited;
      }
    }
  });
});
