import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DIST_CLI, tempDataDir, testEnv } from '../helpers/mcp.js';

interface Running {
  child: ChildProcess;
  url: string;
  stderr: () => string;
  exit: Promise<number | null>;
}

/** Starts `node dist/cli.js --http` on a free port and reads the URL it prints. */
async function startHttp(env: Record<string, string>, cwd?: string, args: string[] = []): Promise<Running> {
  const child = spawn(process.execPath, [DIST_CLI, '--http', ...args], { env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', MCP_HTTP_PORT: '0', ...env }, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += String(d)));
  const exit = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no URL printed; stderr: ${stderr}`)), 15_000);
    const check = () => {
      const m = /serving MCP \(Streamable HTTP\) at (http:\/\/\S+\/mcp)/.exec(stderr);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    };
    child.stderr!.on('data', check);
    void exit.then((code) => reject(new Error(`exited ${code}: ${stderr}`)));
  });
  return { child, url, stderr: () => stderr, exit };
}

function runCli(args: string[], env: Record<string, string>, cwd?: string): Promise<{ code: number | null; stderr: string; stdout: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [DIST_CLI, ...args], { env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env }, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    let stdout = '';
    child.stderr.on('data', (d) => (stderr += String(d)));
    child.stdout.on('data', (d) => (stdout += String(d)));
    child.on('exit', (code) => resolve({ code, stderr, stdout }));
  });
}

describe('Streamable HTTP transport', () => {
  const data = tempDataDir();
  const TOKEN = 'http-bearer-token-0123456789';
  let server: Running;
  beforeAll(async () => {
    server = await startHttp(testEnv({ MCP_HTTP_TOKEN: TOKEN, LOG_LEVEL: 'info' }, data.dir));
  });
  afterAll(async () => {
    server.child.kill('SIGTERM');
    await server.exit;
    data.cleanup();
  });

  it('prints the URL and how to connect, then serves MCP to a client with the token', async () => {
    expect(server.stderr()).toMatch(/claude mcp add --transport http/);
    const client = new Client({ name: 'http-test', version: '1.0.0' });
    await client.connect(new StreamableHTTPClientTransport(new URL(server.url), { requestInit: { headers: { Authorization: `Bearer ${TOKEN}` } } }));
    const { tools } = await client.listTools();
    expect(tools.length).toBeGreaterThan(20);
    const r = (await client.callTool({ name: 'integrations_status', arguments: {} })) as any;
    expect(r.structuredContent.success).toBe(true);
    await client.close();
  });

  it('refuses a missing or wrong token with 401', async () => {
    const body = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'x', version: '1' } } });
    const headers = { 'Content-Type': 'application/json', Accept: 'application/json, text/event-stream' };
    expect((await fetch(server.url, { method: 'POST', headers, body })).status).toBe(401);
    expect((await fetch(server.url, { method: 'POST', headers: { ...headers, Authorization: 'Bearer nope' }, body })).status).toBe(401);
  });

  it('refuses a foreign Host (DNS rebinding) and a foreign Origin with 403', async () => {
    const port = new URL(server.url).port;
    const res = await new Promise<number>((resolve) => {
      const req = http.request(
        { host: '127.0.0.1', port, path: '/mcp', method: 'POST', headers: { Host: `evil.example:${port}`, Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/json' } },
        (r) => {
          r.resume();
          resolve(r.statusCode ?? 0);
        },
      );
      req.end('{}');
    });
    expect(res).toBe(403);
    const origin = await fetch(server.url, { method: 'POST', headers: { Origin: 'https://evil.example', Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/json' }, body: '{}' });
    expect(origin.status).toBe(403);
  });

  it('the token never appears in its logs', () => {
    expect(server.stderr()).not.toContain(TOKEN);
  });
});

describe('CLI start-up checks', () => {
  it('refuses to bind a non-loopback address without a token, with a clear message', async () => {
    const d = tempDataDir();
    const r = await runCli(['--http'], testEnv({ MCP_HTTP_HOST: '0.0.0.0', MCP_HTTP_PORT: '0' }, d.dir));
    d.cleanup();
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/Refusing to serve MCP on 0\.0\.0\.0 without a token/);
    expect(r.stderr).toMatch(/MCP_HTTP_TOKEN/);
  });

  it('an invalid value stops the server naming the variable and what is allowed; missing credentials do not', async () => {
    const d = tempDataDir();
    const r = await runCli(['--http'], testEnv({ RETRY_MAX_RETRIES: 'abc', INTERCOM_BASE_URL: 'not-a-url', MCP_HTTP_PORT: '0' }, d.dir));
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/RETRY_MAX_RETRIES="abc"/);
    expect(r.stderr).toMatch(/INTERCOM_BASE_URL="not-a-url"/);
    expect(r.stdout).toBe('');
    d.cleanup();
  });

  it('unknown names in CS_MCP_TOOLSETS or CS_MCP_TOOLS_DENY stop start-up (stdio and HTTP), listing the valid ones', async () => {
    const d = tempDataDir();
    try {
      // Checked before any transport starts: stdio (no argument) for one, --http for the other.
      const [sets, deny] = await Promise.all([
        runCli([], testEnv({ CS_MCP_TOOLSETS: 'roster,campaignz' }, d.dir)),
        runCli(['--http'], testEnv({ CS_MCP_TOOLS_DENY: 'remove_contact,send_fax', MCP_HTTP_PORT: '0' }, d.dir)),
      ]);
      expect(sets.code, sets.stderr).toBe(2);
      expect(sets.stderr).toMatch(/CS_MCP_TOOLSETS names unknown toolset\(s\): campaignz\. Valid toolsets: intercom, sendgrid, mixpanel, roster, campaigns, automations, events, audit, status\./);
      expect(sets.stdout).toBe('');
      expect(deny.code, deny.stderr).toBe(2);
      expect(deny.stderr).toMatch(/CS_MCP_TOOLS_DENY names unknown tool\(s\): send_fax\. Valid tools: .*\bremove_contact\b.*\bsendgrid_send_email\b/);
      expect(deny.stderr).not.toMatch(/serving MCP/);
      // Stopped before opening anything: no database was created.
      expect(fs.readdirSync(d.dir)).toEqual([]);
    } finally {
      d.cleanup();
    }
  });

  it('a data folder that cannot be created stops the server with the reason, at once (never hangs)', async () => {
    // Node's own recursive mkdir never returns for a path under /proc.
    const r = await runCli(['--http'], testEnv({ MCP_HTTP_PORT: '0' }, '/proc/no-such-folder'));
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/failed to start: .*\/proc\/no-such-folder/);
    expect(r.stdout).toBe('');
  });

  it('reads the settings file named with --env-file, and SIGTERM stops it cleanly', async () => {
    const d = tempDataDir();
    const file = path.join(d.dir, 'team.env');
    fs.writeFileSync(file, 'LOG_LEVEL=info\nSENDGRID_FROM_NAME=Success Team\n');
    const s = await startHttp({ MCP_HTTP_PORT: '0', CS_MCP_DATA_DIR: path.join(d.dir, 'data') }, d.dir, ['--env-file', file]);
    expect(fs.existsSync(path.join(d.dir, 'data', 'customer-success.db'))).toBe(true);
    expect(s.stderr()).toMatch(/"msg":"read settings file"/);
    expect(s.stderr()).toContain('SENDGRID_FROM_NAME');
    s.child.kill('SIGTERM');
    expect(await s.exit).toBe(0);
    d.cleanup();
  });
});
