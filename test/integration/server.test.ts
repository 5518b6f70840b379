import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DIST_CLI, startInMemory, startStdio, tempDataDir, testEnv, type InMemoryHarness } from '../helpers/mcp.js';
import { exited, until } from '../helpers/until.js';

describe('server wiring', () => {
  const data = tempDataDir();
  let h: InMemoryHarness;
  beforeAll(async () => {
    h = await startInMemory(testEnv({}, data.dir));
  });
  afterAll(async () => {
    await h.close();
    data.cleanup();
  });

  it('lists tools with input and output schemas and truthful annotations', async () => {
    const { tools } = await h.client.listTools();
    const status = tools.find((t) => t.name === 'integrations_status');
    expect(status).toBeDefined();
    expect(status!.annotations).toMatchObject({ readOnlyHint: true, destructiveHint: false, openWorldHint: false });
    for (const t of tools) {
      expect(t.inputSchema.type).toBe('object');
      expect(t.outputSchema?.type).toBe('object');
      expect(t.description!.length).toBeGreaterThan(40);
    }
  });

  it('integrations_status reports unconfigured providers and the variable to set', async () => {
    const r = await h.call('integrations_status');
    expect(r.isError).toBeFalsy();
    expect(r.structuredContent.success).toBe(true);
    const intercom = r.structuredContent.providers.find((p: any) => p.provider === 'intercom');
    expect(intercom).toMatchObject({ configured: false, missing: ['INTERCOM_ACCESS_TOKEN'], circuit: 'closed' });
  });

  it('answers invalid_input naming the field for bad arguments', async () => {
    const r = await h.call('integrations_status', { unexpected: 1 });
    // integrations_status takes no arguments: an unknown key is refused, named, never silently dropped.
    expect(r.isError).toBe(true);
    expect(r.structuredContent.error).toMatchObject({ code: 'invalid_input', retryable: false });
    expect(r.structuredContent.error.message).toMatch(/unexpected/);
  });
});

describe('stdio binary', () => {
  it('serves MCP over stdio and keeps stdout for the protocol', async () => {
    const data = tempDataDir();
    const h = await startStdio(testEnv({ LOG_LEVEL: 'info' }, data.dir));
    try {
      const { tools } = await h.client.listTools();
      expect(tools.map((t) => t.name)).toContain('integrations_status');
      const r = await h.call('integrations_status');
      expect(r.structuredContent.success).toBe(true);
    } finally {
      await h.close();
      data.cleanup();
    }
    // Every stderr line is a JSON log record.
    for (const line of h.stderr().split('\n').filter(Boolean)) expect(() => JSON.parse(line)).not.toThrow();
  });
});

describe('stdout is the protocol channel', () => {
  it('every byte the binary writes to stdout is a JSON-RPC message', async () => {
    const { spawn } = await import('node:child_process');
    const data = tempDataDir();
    const child = spawn(process.execPath, [DIST_CLI], { env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...testEnv({ LOG_LEVEL: 'debug' }, data.dir) }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += String(d)));
    child.stderr.on('data', (d) => (stderr += String(d)));
    const send = (m: object) => child.stdin.write(`${JSON.stringify(m)}\n`);
    send({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '1' } } });
    send({ jsonrpc: '2.0', method: 'notifications/initialized' });
    send({ jsonrpc: '2.0', id: 2, method: 'tools/list' });
    send({ jsonrpc: '2.0', id: 3, method: 'tools/call', params: { name: 'list_clients', arguments: { health_min: 500 } } });
    await until(() => stdout.includes('"id":3'), { message: 'the answer to request 3 on stdout' });
    child.stdin.end();
    await exited(child);
    data.cleanup();
    const lines = stdout.split('\n').filter(Boolean);
    expect(lines).toHaveLength(3);
    for (const l of lines) expect(JSON.parse(l)).toMatchObject({ jsonrpc: '2.0' });
    expect(JSON.parse(lines[2]!).result.structuredContent.error.code).toBe('invalid_input');
    expect(stderr).toMatch(/"msg":"tool call"/);
  });
});
