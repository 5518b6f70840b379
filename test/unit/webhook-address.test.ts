import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config.js';
import { addressRefusal, literalAddress, pinnedLookup } from '../../src/providers/webhooks/address.js';

/** Issue 16 item 6: which addresses a trigger_webhook may connect to, and what the allowlist entries mean. */
describe('webhook addresses', () => {
  it('public unicast addresses are allowed; loopback, private, link-local, CGNAT and reserved ones are not', () => {
    for (const a of ['93.184.216.34', '8.8.8.8', '2606:4700::1111']) expect(addressRefusal(a, false), a).toBeUndefined();
    expect(addressRefusal('127.0.0.1', false)).toBe('a loopback address');
    expect(addressRefusal('127.8.9.10', false)).toBe('a loopback address');
    expect(addressRefusal('::1', false)).toBe('a loopback address');
    expect(addressRefusal('::ffff:127.0.0.1', false)).toBe('a loopback address'); // IPv4-mapped
    expect(addressRefusal('::ffff:10.1.2.3', false)).toBe('a private address');
    for (const a of ['10.0.0.5', '172.16.3.4', '192.168.1.1']) expect(addressRefusal(a, false), a).toBe('a private address');
    expect(addressRefusal('fd12:3456::1', false)).toMatch(/private/);
    expect(addressRefusal('169.254.1.1', false)).toBe('a link-local address');
    expect(addressRefusal('fe80::1', false)).toBe('a link-local address');
    expect(addressRefusal('0.0.0.0', false)).toBe('the unspecified address');
    expect(addressRefusal('100.64.0.1', false)).toMatch(/carrier-grade/);
    expect(addressRefusal('64:ff9b::7f00:1', false)).toMatch(/reserved|rfc6052/); // NAT64 of 127.0.0.1
  });

  it('the opt-in allows private addresses, never a cloud metadata endpoint', () => {
    for (const a of ['127.0.0.1', '10.0.0.5', '::1', '169.254.1.1']) expect(addressRefusal(a, true), a).toBeUndefined();
    for (const a of ['169.254.169.254', '::ffff:169.254.169.254', 'fd00:ec2::254', '100.100.100.200', '168.63.129.16']) {
      expect(addressRefusal(a, true), a).toMatch(/metadata/);
      expect(addressRefusal(a, false), a).toMatch(/metadata/);
    }
  });

  it('literal addresses are recognised in URL host names (IPv6 in brackets)', () => {
    expect(literalAddress(new URL('http://[::1]:8080/').hostname)).toBe('::1');
    expect(literalAddress(new URL('http://0x7f.1/').hostname)).toBe('127.0.0.1'); // URL normalises odd IPv4 forms
    expect(literalAddress('hooks.example.com')).toBeUndefined();
  });

  it('the pinned lookup answers only the checked addresses, by family, never asking DNS', () => {
    const lookup = pinnedLookup([
      { address: '93.184.216.34', family: 4 },
      { address: '2606:2800:220:1::1', family: 6 },
    ]) as unknown as (h: string, o: object, cb: (...a: unknown[]) => void) => void;
    const answers: unknown[][] = [];
    lookup('anything.example', { all: true }, (...a) => answers.push(a));
    lookup('anything.example', { family: 6 }, (...a) => answers.push(a));
    lookup('anything.example', {}, (...a) => answers.push(a));
    expect(answers[0]).toEqual([null, [{ address: '93.184.216.34', family: 4 }, { address: '2606:2800:220:1::1', family: 6 }]]);
    expect(answers[1]).toEqual([null, '2606:2800:220:1::1', 6]);
    expect(answers[2]).toEqual([null, '93.184.216.34', 4]);
  });

  it('allowlist entries are origins; a bare host means https on port 443', () => {
    const c = loadConfig({
      AUTOMATION_WEBHOOK_ALLOWED_HOSTS: 'hooks.example.com, Hooks.Example.com:8443, http://10.0.0.7:8080, https://x.example:443/',
      AUTOMATION_WEBHOOK_PRIVATE_ORIGINS: 'http://10.0.0.7:8080',
    } as NodeJS.ProcessEnv);
    expect(c.automations.webhookAllowedOrigins).toEqual(['https://hooks.example.com', 'https://hooks.example.com:8443', 'http://10.0.0.7:8080', 'https://x.example']);
    expect(c.automations.webhookPrivateOrigins).toEqual(['http://10.0.0.7:8080']);
  });

  it('an entry with a path or credentials, or a private origin that is not allowed, stops the start', () => {
    expect(() => loadConfig({ AUTOMATION_WEBHOOK_ALLOWED_HOSTS: 'https://hooks.example.com/path' } as NodeJS.ProcessEnv)).toThrow(/origin only/);
    expect(() => loadConfig({ AUTOMATION_WEBHOOK_ALLOWED_HOSTS: 'https://u:p@hooks.example.com' } as NodeJS.ProcessEnv)).toThrow(ConfigError);
    expect(() => loadConfig({ AUTOMATION_WEBHOOK_ALLOWED_HOSTS: 'ftp://hooks.example.com' } as NodeJS.ProcessEnv)).toThrow(/https/);
    expect(() =>
      loadConfig({ AUTOMATION_WEBHOOK_ALLOWED_HOSTS: 'https://hooks.example.com', AUTOMATION_WEBHOOK_PRIVATE_ORIGINS: 'http://127.0.0.1:9000' } as NodeJS.ProcessEnv),
    ).toThrow(/does not allow/);
  });
});

describe('webhook URLs as credentials', () => {
  it('the path and query are secret, the origin and ordinary words are not', async () => {
    const { urlSecrets, registerUrlSecrets, scrubSecrets } = await import('../../src/secrets.js');
    const url = 'https://hooks.slack.com/services/T0AAAAAAA/B0BBBBBBB/abcDEF123ghiJKL456mnoPQR?token=qs-0123456789';
    const parts = urlSecrets(url);
    expect(parts).toContain('/services/T0AAAAAAA/B0BBBBBBB/abcDEF123ghiJKL456mnoPQR?token=qs-0123456789');
    expect(parts).toContain('/services/T0AAAAAAA/B0BBBBBBB/abcDEF123ghiJKL456mnoPQR');
    expect(parts).toContain('abcDEF123ghiJKL456mnoPQR');
    expect(parts).toContain('qs-0123456789');
    expect(parts).not.toContain('services');
    expect(parts.some((p) => p.includes('hooks.slack.com'))).toBe(false);
    registerUrlSecrets(url);
    expect(scrubSecrets(`posting to ${url}`)).toBe('posting to https://hooks.slack.com[REDACTED]');
    expect(scrubSecrets('Cannot POST /x/abcDEF123ghiJKL456mnoPQR (our services are fine)')).toBe('Cannot POST /x/[REDACTED] (our services are fine)');
    expect(urlSecrets('https://hooks.example.com/')).toEqual([]);
  });
});
