import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { InMemoryTransport } from '@modelcontextprotocol/sdk/inMemory.js';
import type { AuthInfo } from '@modelcontextprotocol/sdk/server/auth/types.js';
import { ElicitRequestSchema, type CallToolResult, type ElicitRequest, type ElicitResult } from '@modelcontextprotocol/sdk/types.js';
import { Writable } from 'node:stream';
import { loadConfig, configSecrets } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { registerSecrets } from '../../src/secrets.js';
import { createMcpServer } from '../../src/server.js';
import { createServices, type ServiceOverrides, type Services } from '../../src/services.js';

export const DIST_CLI = path.resolve(import.meta.dirname, '../../dist/cli.js');

/** A fresh temporary data folder; removed by the returned cleanup. */
export function tempDataDir(prefix = 'csmcp-test-'): { dir: string; cleanup: () => void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  return { dir, cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

/**
 * Test defaults: fast retries and breaker, no credentials, a private data folder, and the opt-in that
 * lets provider base URLs point at the loopback stand-ins (a test that checks the refusal removes it
 * by passing CS_MCP_ALLOW_CUSTOM_PROVIDER_HOSTS: undefined).
 */
export function testEnv(extra: Record<string, string | undefined> = {}, dataDir?: string): Record<string, string> {
  const env: Record<string, string | undefined> = {
    LOG_LEVEL: 'silent',
    RETRY_MAX_RETRIES: '2',
    RETRY_BASE_DELAY_MS: '10',
    RETRY_MAX_DELAY_MS: '2000',
    CIRCUIT_BREAKER_FAILURE_THRESHOLD: '5',
    CIRCUIT_BREAKER_RESET_MS: '500',
    HTTP_TIMEOUT_MS: '1000',
    CS_MCP_DATA_DIR: dataDir,
    CS_MCP_ALLOW_CUSTOM_PROVIDER_HOSTS: 'true',
    ...extra,
  };
  return Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined)) as Record<string, string>;
}

/** The environment that points the server at the SendGrid and Intercom stand-ins. */
export function standInEnv(p: { sendgrid?: { url: string; apiKey: string }; intercom?: { url: string; token: string } }): Record<string, string> {
  return {
    ...(p.sendgrid ? { SENDGRID_API_KEY: p.sendgrid.apiKey, SENDGRID_BASE_URL: p.sendgrid.url, SENDGRID_FROM_EMAIL: 'success@ourco.test' } : {}),
    ...(p.intercom ? { INTERCOM_ACCESS_TOKEN: p.intercom.token, INTERCOM_BASE_URL: p.intercom.url } : {}),
  };
}

export interface InMemoryHarness {
  client: Client;
  services: Services;
  /** Every log line the server wrote (JSON strings). */
  logs: string[];
  call(name: string, args?: Record<string, unknown>): Promise<CallToolResult & { structuredContent: Record<string, any> }>;
  close(): Promise<void>;
}

/** The real server (real services, real adapter) connected to the SDK client over an in-memory transport pair. */
/** How the test client presents itself: a person who answers elicitation requests, or a client that cannot. */
export interface ClientOptions {
  /** Answers elicitation/create as the person would; declares the elicitation capability. */
  onElicit?: (request: ElicitRequest['params']) => ElicitResult | Promise<ElicitResult>;
  name?: string;
  /** Declares the MCP Apps extension (io.modelcontextprotocol/ui): the client shows this server's views. */
  views?: boolean;
  /** Ask for this protocol version in initialize (the SDK client asks for the latest), as an older client would. */
  protocolVersion?: string;
  /** Every message carries this (as HTTP sign-in gives it: the token's scopes and person); read at each send, so a test may change it. */
  authInfo?: AuthInfo;
}

/** An SDK client, with an elicitation handler when the test plays a person. */
export function testClient(opts: ClientOptions = {}): Client {
  const client = new Client(
    { name: opts.name ?? 'test-client', version: '1.0.0' },
    {
      capabilities: {
        ...(opts.onElicit ? { elicitation: {} } : {}),
        ...(opts.views ? { extensions: { 'io.modelcontextprotocol/ui': { mimeTypes: ['text/html;profile=mcp-app'] } } } : {}),
      },
    },
  );
  if (opts.onElicit) client.setRequestHandler(ElicitRequestSchema, (req) => opts.onElicit!(req.params));
  return client;
}

export async function startInMemory(env: Record<string, string>, overrides: ServiceOverrides = {}, clientOptions: ClientOptions = {}): Promise<InMemoryHarness> {
  const config = loadConfig(env as NodeJS.ProcessEnv);
  registerSecrets(configSecrets(config));
  const logs: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      logs.push(String(chunk));
      cb();
    },
  });
  const log = createLogger(env.LOG_LEVEL === 'silent' ? 'debug' : (env.LOG_LEVEL ?? 'debug'), sink);
  const services = await createServices(config, log, overrides);
  const server = createMcpServer(services);
  const [clientTransport, serverTransport] = InMemoryTransport.createLinkedPair();
  const client = testClient(clientOptions);
  if (clientOptions.protocolVersion) {
    const send = clientTransport.send.bind(clientTransport);
    const version = clientOptions.protocolVersion;
    clientTransport.send = (message, options) => {
      const m = message as { method?: string; params?: Record<string, unknown> };
      return send(m.method === 'initialize' ? ({ ...m, params: { ...m.params, protocolVersion: version } } as unknown as typeof message) : message, options);
    };
  }
  if (clientOptions.authInfo) {
    const send = clientTransport.send.bind(clientTransport);
    clientTransport.send = (message, options) => send(message, { ...options, authInfo: clientOptions.authInfo });
  }
  await Promise.all([server.connect(serverTransport), client.connect(clientTransport)]);
  return {
    client,
    services,
    logs,
    call: async (name, args = {}) => (await client.callTool({ name, arguments: args })) as any,
    close: async () => {
      await client.close();
      await server.close();
      await services.close();
    },
  };
}

export interface StdioHarness {
  client: Client;
  /** The server process id (to kill it mid-work). */
  pid: number | null;
  stderr: () => string;
  call(name: string, args?: Record<string, unknown>): Promise<CallToolResult & { structuredContent: Record<string, any> }>;
  close(): Promise<void>;
}

/**
 * The built binary (dist/cli.js) spawned over stdio, as Claude Desktop runs it.
 * `nodeArgs` go to node before the script (e.g. `--cpu-prof`, which NODE_OPTIONS does not take);
 * `script` replaces dist/cli.js (a bench comparing another build of the server).
 */
export async function startStdio(env: Record<string, string>, opts: { cwd?: string; args?: string[]; nodeArgs?: string[]; script?: string } & ClientOptions = {}): Promise<StdioHarness> {
  const transport = new StdioClientTransport({
    command: process.execPath,
    args: [...(opts.nodeArgs ?? []), opts.script ?? DIST_CLI, ...(opts.args ?? [])],
    cwd: opts.cwd,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env },
    stderr: 'pipe',
  });
  let stderr = '';
  transport.stderr?.on('data', (d) => (stderr += String(d)));
  const client = testClient(opts);
  await client.connect(transport);
  return {
    client,
    pid: transport.pid,
    stderr: () => stderr,
    call: async (name, args = {}) => (await client.callTool({ name, arguments: args })) as any,
    close: () => client.close(),
  };
}
