import { describe, expect, it } from 'vitest';
import type { Config } from '../../src/config.js';
import { allowedHostNames, assertSafeHttpConfig, isLoopbackHost } from '../../src/transports/http-security.js';

const cfg = (over: Partial<Config['http']>): Config['http'] => ({ host: '127.0.0.1', port: 0, maxSessions: 10, sessionIdleMs: 1000, stateless: false, ...over });
const STRONG = 'f'.repeat(64);

describe('loopback is decided by parsing the address, never by prefix', () => {
  it.each(['127.0.0.1', '127.0.0.2', '127.255.255.254', 'localhost', 'LOCALHOST', '::1', '[::1]', '::ffff:127.0.0.1'])('%s is loopback', (h) => {
    expect(isLoopbackHost(h)).toBe(true);
  });
  it.each(['127.evil.com', '127.0.0.1.evil.example', 'localhost.evil.example', '128.0.0.1', '0.0.0.0', '::', '10.0.0.5', '::ffff:10.0.0.1', '', 'evil.com'])('%s is not', (h) => {
    expect(isLoopbackHost(h)).toBe(false);
  });
});

describe('start-up refusals for an exposed HTTP server', () => {
  it('a loopback bind needs no token', () => {
    expect(() => assertSafeHttpConfig(cfg({ host: '127.0.0.2' }))).not.toThrow();
  });
  it('a non-loopback bind needs a token of at least 32 characters, and says how to generate one', () => {
    expect(() => assertSafeHttpConfig(cfg({ host: '10.0.0.5' }))).toThrow(/without a token/);
    expect(() => assertSafeHttpConfig(cfg({ host: '10.0.0.5', token: 'x' }))).toThrow(/1-character MCP_HTTP_TOKEN.*at least 32 random characters.*randomBytes\(32\)/s);
    expect(() => assertSafeHttpConfig(cfg({ host: '10.0.0.5', token: 'y'.repeat(31) }))).toThrow(/at least 32/);
    expect(() => assertSafeHttpConfig(cfg({ host: '10.0.0.5', token: STRONG }))).not.toThrow();
  });
  it('a wildcard bind needs MCP_HTTP_ALLOWED_HOSTS (the Host names clients use)', () => {
    for (const host of ['0.0.0.0', '::']) {
      expect(() => assertSafeHttpConfig(cfg({ host, token: STRONG }))).toThrow(/MCP_HTTP_ALLOWED_HOSTS/);
      expect(() => assertSafeHttpConfig(cfg({ host, token: STRONG, allowedHosts: ['mcp.example.com'] }))).not.toThrow();
    }
  });
  it('Host names accepted: loopback names, a specific bind address, and the allowed hosts', () => {
    expect(allowedHostNames(cfg({ host: '127.0.0.2' }))).toEqual(['localhost', '127.0.0.1', '[::1]', '127.0.0.2']);
    expect(allowedHostNames(cfg({ host: '10.0.0.5', token: STRONG }))).toContain('10.0.0.5');
    expect(allowedHostNames(cfg({ host: '0.0.0.0', token: STRONG, allowedHosts: ['mcp.example.com', 'fe80::1'] }))).toEqual([
      'localhost',
      '127.0.0.1',
      '[::1]',
      'mcp.example.com',
      '[fe80::1]',
    ]);
  });
});
