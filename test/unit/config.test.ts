import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigError, customProviderHosts, loadConfig, readSettingsFile } from '../../src/config.js';
import { tempDataDir } from '../helpers/mcp.js';

const env = (extra: Record<string, string>) => ({ CS_MCP_DATA_DIR: '/tmp/unused', ...extra }) as NodeJS.ProcessEnv;

describe('provider hosts: credentials go only to the providers own hosts', () => {
  it('accepts every provider host, regional ones included (https only)', () => {
    for (const [name, hosts] of Object.entries({
      INTERCOM_BASE_URL: ['api.intercom.io', 'api.eu.intercom.io', 'api.au.intercom.io'],
      SENDGRID_BASE_URL: ['api.sendgrid.com', 'api.eu.sendgrid.com'],
      MIXPANEL_API_HOST: ['api.mixpanel.com', 'api-eu.mixpanel.com', 'api-in.mixpanel.com'],
    })) {
      for (const h of hosts) expect(() => loadConfig(env({ [name]: `https://${h}/` })), `${name}=${h}`).not.toThrow();
    }
  });

  it.each([
    'http://api.intercom.io',
    'https://api.intercom.io.evil.example',
    'https://evil.example',
    'https://api.intercom.io:8443',
    'https://user:pw@api.intercom.io',
    'https://api.intercom.io/proxy',
    'http://127.0.0.1:9999',
  ])('refuses INTERCOM_BASE_URL=%s without the opt-in, naming the variable, the allowed hosts and the opt-in', (value) => {
    const run = () => loadConfig(env({ INTERCOM_BASE_URL: value }));
    expect(run).toThrow(ConfigError);
    expect(run).toThrow(/INTERCOM_BASE_URL=.*must be one of https:\/\/api\.intercom\.io, https:\/\/api\.eu\.intercom\.io, https:\/\/api\.au\.intercom\.io/);
    expect(run).toThrow(/CS_MCP_ALLOW_CUSTOM_PROVIDER_HOSTS=true/);
  });

  it('refuses a foreign SendGrid or Mixpanel host too', () => {
    expect(() => loadConfig(env({ SENDGRID_BASE_URL: 'https://sendgrid.evil.example' }))).toThrow(/SENDGRID_BASE_URL/);
    expect(() => loadConfig(env({ MIXPANEL_API_HOST: 'https://mixpanel.evil.example' }))).toThrow(/MIXPANEL_API_HOST/);
  });

  it('with CS_MCP_ALLOW_CUSTOM_PROVIDER_HOSTS=true accepts other hosts and lists them for the start-up notice', () => {
    const c = loadConfig(env({ INTERCOM_BASE_URL: 'http://127.0.0.1:9999', CS_MCP_ALLOW_CUSTOM_PROVIDER_HOSTS: 'true' }));
    expect(customProviderHosts(c)).toEqual(['INTERCOM_BASE_URL=http://127.0.0.1:9999']);
    expect(customProviderHosts(loadConfig(env({})))).toEqual([]);
  });
});

describe('settings file', () => {
  const dirs: Array<() => void> = [];
  afterEach(() => dirs.splice(0).forEach((c) => c()));
  const dir = () => {
    const d = tempDataDir();
    dirs.push(d.cleanup);
    return d.dir;
  };

  it('reads .env in the data folder when no file is named, and nothing when there is none', () => {
    const data = dir();
    expect(readSettingsFile(undefined, { CS_MCP_DATA_DIR: data })).toEqual({ values: {} });
    fs.writeFileSync(path.join(data, '.env'), 'INTERCOM_ACCESS_TOKEN=tok-from-file\nLOG_LEVEL=debug\n');
    expect(readSettingsFile(undefined, { CS_MCP_DATA_DIR: data })).toEqual({
      file: path.join(data, '.env'),
      values: { INTERCOM_ACCESS_TOKEN: 'tok-from-file', LOG_LEVEL: 'debug' },
    });
  });

  it('never reads the working directory', () => {
    const cwd = dir();
    const data = dir();
    fs.writeFileSync(path.join(cwd, '.env'), 'INTERCOM_ACCESS_TOKEN=planted\n');
    const before = process.cwd();
    process.chdir(cwd);
    try {
      expect(readSettingsFile(undefined, { CS_MCP_DATA_DIR: data })).toEqual({ values: {} });
    } finally {
      process.chdir(before);
    }
  });

  it('reads the file named by --env-file or CS_MCP_ENV_FILE; a named file that is missing is an error', () => {
    const d = dir();
    const f = path.join(d, 'team.env');
    fs.writeFileSync(f, 'SENDGRID_FROM_EMAIL=success@ourco.test\n');
    expect(readSettingsFile(f, {}).values).toEqual({ SENDGRID_FROM_EMAIL: 'success@ourco.test' });
    expect(readSettingsFile(undefined, { CS_MCP_ENV_FILE: f }).values).toEqual({ SENDGRID_FROM_EMAIL: 'success@ourco.test' });
    expect(() => readSettingsFile(path.join(d, 'missing.env'), {})).toThrow(/Cannot read the settings file .*missing\.env/);
  });

  it.each(['DATABASE_URL=postgres://evil.example/db', 'INTERCOM_BASE_URL=https://api.intercom.io', 'SENDGRID_BASE_URL=https://x', 'MIXPANEL_API_HOST=https://x', 'CS_MCP_ALLOW_CUSTOM_PROVIDER_HOSTS=true', 'CS_MCP_DATA_DIR=/tmp/x', 'SOMETHING_BASE_URL=https://x'])(
    'refuses a settings file that sets %s, naming it and where to set it instead',
    (line) => {
      const d = dir();
      const f = path.join(d, 'settings.env');
      fs.writeFileSync(f, `LOG_LEVEL=info\n${line}\n`);
      const run = () => readSettingsFile(f, {});
      expect(run).toThrow(ConfigError);
      expect(run).toThrow(new RegExp(`sets ${line.split('=')[0]}, which a settings file may not set`));
      expect(run).toThrow(/environment the server is started with/);
    },
  );
});
