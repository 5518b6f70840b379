import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { DIST_CLI, testEnv } from './mcp.js';
import { until } from './until.js';

/** The built server in HTTP mode with sign-in (a child process), for the sign-in and replica tests. */

export function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

export interface SignedInServer {
  child: ChildProcess;
  url: string;
  stderr(): string;
}

/**
 * `node dist/cli.js --http` with sign-in against `issuer`, on a free port. Its public URL (the token
 * audience) is its own /mcp URL unless `publicUrl` names another (replicas behind one address).
 */
export async function startSignedInServer(issuer: string, env: Record<string, string>, dataDir: string, opts: { publicUrl?: string } = {}): Promise<SignedInServer> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}/mcp`;
  const child = spawn(process.execPath, [DIST_CLI, '--http'], {
    env: {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? '',
      ...testEnv({ LOG_LEVEL: 'info', ...env }, dataDir),
      MCP_HTTP_PORT: String(port),
      MCP_HTTP_PUBLIC_URL: opts.publicUrl ?? url,
      MCP_OAUTH_ISSUER: issuer,
      MCP_OAUTH_JWKS_COOLDOWN_MS: '0',
      MCP_OAUTH_CLOCK_TOLERANCE_S: '0',
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += String(d)));
  await until(() => /serving MCP \(Streamable HTTP\)/.test(stderr), { message: `server start (stderr: ${stderr})`, timeoutMs: 30_000 });
  return { child, url, stderr: () => stderr };
}
