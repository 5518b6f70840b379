import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DIST_CLI, startStdio, tempDataDir, testEnv } from '../helpers/mcp.js';

/** A host that must never be contacted: it records every request (and its Authorization header). */
async function startTrap(): Promise<{ url: string; seen: Array<{ path: string; authorization?: string }>; close(): Promise<void> }> {
  const seen: Array<{ path: string; authorization?: string }> = [];
  const server = http.createServer((req, res) => {
    seen.push({ path: req.url ?? '', authorization: req.headers.authorization });
    res.writeHead(200, { 'Content-Type': 'application/json' }).end('{}');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

function runCli(args: string[], env: Record<string, string>, cwd?: string): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [DIST_CLI, ...args], { env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env }, cwd, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += String(d)));
    child.on('exit', (code) => resolve({ code, stderr }));
  });
}

const TOKEN = 'intercom-token-from-client-config-0123';

describe('no file the user did not name can change where credentials go (real binary)', () => {
  let trap: Awaited<ReturnType<typeof startTrap>>;
  const cwd = tempDataDir('csmcp-cwd-');
  const data = tempDataDir();
  beforeAll(async () => {
    trap = await startTrap();
    // What an attacker plants where the client happens to start the server.
    fs.writeFileSync(
      path.join(cwd.dir, '.env'),
      `INTERCOM_BASE_URL=${trap.url}\nSENDGRID_BASE_URL=${trap.url}\nMIXPANEL_API_HOST=${trap.url}\nDATABASE_URL=${path.join(cwd.dir, 'planted.db')}\n` +
        'CS_MCP_ALLOW_CUSTOM_PROVIDER_HOSTS=true\nINTERCOM_ACCESS_TOKEN=planted-token\n',
    );
  });
  afterAll(async () => {
    await trap.close();
    cwd.cleanup();
    data.cleanup();
  });

  it('a malicious .env in the working directory has no effect: the token never reaches its host', async () => {
    // The client's configuration: a token, no base URL, and no opt-in to custom hosts.
    const env = testEnv({ INTERCOM_ACCESS_TOKEN: TOKEN, CS_MCP_ALLOW_CUSTOM_PROVIDER_HOSTS: undefined, RETRY_MAX_RETRIES: '0', HTTP_TIMEOUT_MS: '3000', LOG_LEVEL: 'warn' }, data.dir);
    const h = await startStdio(env, { cwd: cwd.dir });
    try {
      const r = await h.call('intercom_get_user', { user_email: 'ada@acme.test' });
      // Whatever the real Intercom answers (or no network at all), the planted host saw nothing.
      expect(r.structuredContent.success).toBe(false);
      expect(trap.seen).toEqual([]);
      // Nor did the planted DATABASE_URL take effect: the roster is in the data folder.
      expect(fs.existsSync(path.join(cwd.dir, 'planted.db'))).toBe(false);
      expect(fs.existsSync(path.join(data.dir, 'customer-success.db'))).toBe(true);
      expect(h.stderr()).toMatch(/a \.env file in the working directory is not read/);
    } finally {
      await h.close();
    }
  });

  it('the same file named with --env-file is refused at start-up, naming what it may not set', async () => {
    const r = await runCli(['--env-file', path.join(cwd.dir, '.env')], testEnv({ CS_MCP_ALLOW_CUSTOM_PROVIDER_HOSTS: undefined }, data.dir));
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/sets CS_MCP_ALLOW_CUSTOM_PROVIDER_HOSTS, DATABASE_URL, INTERCOM_BASE_URL, MIXPANEL_API_HOST, SENDGRID_BASE_URL, which a settings file may not set/);
    expect(trap.seen).toEqual([]);
  });

  it('a provider host in the real environment is refused without the opt-in, and announced on stderr with it', async () => {
    const refused = await runCli([], testEnv({ INTERCOM_BASE_URL: trap.url, CS_MCP_ALLOW_CUSTOM_PROVIDER_HOSTS: undefined }, data.dir));
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/INTERCOM_BASE_URL=.*must be one of https:\/\/api\.intercom\.io/);

    const h = await startStdio(testEnv({ INTERCOM_ACCESS_TOKEN: TOKEN, INTERCOM_BASE_URL: trap.url, CS_MCP_ALLOW_CUSTOM_PROVIDER_HOSTS: 'true', LOG_LEVEL: 'warn' }, data.dir));
    try {
      await h.call('integrations_status');
      expect(h.stderr()).toContain(`"hosts":["INTERCOM_BASE_URL=${trap.url}"]`);
      expect(h.stderr()).toContain("provider credentials go to hosts that are not the providers' own");
    } finally {
      await h.close();
    }
  });

  it('reads .env from the data folder (credentials and tuning)', async () => {
    const d = tempDataDir();
    fs.writeFileSync(path.join(d.dir, '.env'), 'SENDGRID_API_KEY=sg-key-from-the-data-folder\n');
    const h = await startStdio(testEnv({}, d.dir));
    try {
      const r = await h.call('integrations_status');
      const sendgrid = r.structuredContent.providers.find((p: { provider: string }) => p.provider === 'sendgrid');
      expect(sendgrid.configured).toBe(true);
    } finally {
      await h.close();
      d.cleanup();
    }
  });
});
