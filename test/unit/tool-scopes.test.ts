import { describe, expect, it } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig, readSettingsFile } from '../../src/config.js';
import { SCOPES, scopeFor, scopesOf } from '../../src/mcp/tool.js';
import { actorOf } from '../../src/safety/actor.js';
import { allTools } from '../../src/tools/index.js';
import { assertSafeHttpConfig } from '../../src/transports/http-security.js';

/** The roles table the README documents: a change to who may do what shows up here in review. */
const EXPECTED: Record<string, string> = {
  // cs:read
  intercom_get_user: 'cs:read',
  sendgrid_get_stats: 'cs:read',
  list_suppressions: 'cs:read',
  list_clients: 'cs:read',
  get_client_overview: 'cs:read',
  get_client_timeline: 'cs:read',
  get_campaign_status: 'cs:read',
  list_campaigns: 'cs:read',
  list_workflows: 'cs:read',
  get_workflow: 'cs:read',
  list_customer_events: 'cs:read',
  list_inbound_events: 'cs:read',
  get_audit_log: 'cs:read',
  integrations_status: 'cs:read',
  // cs:write
  intercom_create_note: 'cs:write',
  intercom_track_event: 'cs:write',
  intercom_create_user: 'cs:write',
  intercom_add_tag: 'cs:write',
  intercom_remove_tag: 'cs:write',
  mixpanel_track_event: 'cs:write',
  mixpanel_set_profile: 'cs:write',
  mixpanel_increment: 'cs:write',
  mixpanel_flush: 'cs:write',
  mixpanel_track_usage_engagement: 'cs:write',
  register_client: 'cs:write',
  update_client_info: 'cs:write',
  upsert_contact: 'cs:write',
  remove_contact: 'cs:write',
  record_customer_event: 'cs:write',
  // preview cs:write, confirm cs:send
  send_personalized_email: 'cs:write|cs:send',
  automate_communications: 'cs:write|cs:send',
  resume_workflow: 'cs:write|cs:send',
  review_campaign: 'cs:read',
  run_workflow: 'cs:write|cs:send',
  send_reviewed_campaign: 'cs:send',
  // cs:send
  intercom_send_message: 'cs:send|cs:admin',
  sendgrid_send_email: 'cs:send|cs:admin',
  sendgrid_send_template_email: 'cs:send|cs:admin',
  sendgrid_send_bulk_emails: 'cs:send|cs:admin',
  cancel_campaign: 'cs:send',
  pause_workflow: 'cs:send',
  archive_workflow: 'cs:send',
  // unsubscribe cs:write, resubscribe cs:admin
  set_contact_subscription: 'cs:write|cs:admin',
  import_clients: 'cs:admin',
};

describe('roles as scopes', () => {
  it('every tool needs one known scope, as the README table says', () => {
    const actual = Object.fromEntries(allTools.map((t) => [t.name, scopesOf(t).join('|')]));
    expect(actual).toEqual(EXPECTED);
    for (const t of allTools) for (const s of scopesOf(t)) expect(SCOPES).toContain(s);
  });

  it('a preview needs cs:write and its confirmation cs:send', () => {
    const campaign = allTools.find((t) => t.name === 'send_personalized_email')!;
    expect(scopeFor(campaign, { campaign_name: 'x' })).toBe('cs:write');
    expect(scopeFor(campaign, { campaign_name: 'x', confirmation_token: 'cst_1' })).toBe('cs:send');
  });

  it('resubscribing (a consent override) needs cs:admin, unsubscribing cs:write; anything but subscribed:false is treated as the override', () => {
    const sub = allTools.find((t) => t.name === 'set_contact_subscription')!;
    expect(scopeFor(sub, { subscribed: false })).toBe('cs:write');
    expect(scopeFor(sub, { subscribed: true })).toBe('cs:admin');
    expect(scopeFor(sub, { subscribed: 'false' })).toBe('cs:admin');
    const send = allTools.find((t) => t.name === 'sendgrid_send_email')!;
    expect(scopeFor(send, {})).toBe('cs:send');
    expect(scopeFor(send, { override_consent: { reason: 'r' } })).toBe('cs:admin');
  });
});

describe('sign-in configuration', () => {
  it('a settings file may not say who signs in (a planted issuer would let its own tokens in)', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'csmcp-settings-'));
    try {
      const file = path.join(dir, '.env');
      fs.writeFileSync(file, 'MCP_OAUTH_ISSUER=https://evil.example\nMCP_OAUTH_JWKS_URL=https://evil.example/jwks\nMCP_HTTP_PUBLIC_URL=https://x.example/mcp\nLOG_LEVEL=info\n');
      expect(() => readSettingsFile(file, {})).toThrow(/sets MCP_HTTP_PUBLIC_URL, MCP_OAUTH_ISSUER, MCP_OAUTH_JWKS_URL, which a settings file may not set.*who may sign in/);
      fs.writeFileSync(file, 'MCP_OAUTH_REQUIRED_SCOPES=cs:read\nLOG_LEVEL=info\n');
      expect(readSettingsFile(file, {}).values).toEqual({ MCP_OAUTH_REQUIRED_SCOPES: 'cs:read', LOG_LEVEL: 'info' });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  const base = { MCP_OAUTH_ISSUER: 'https://login.example.com/', MCP_HTTP_PUBLIC_URL: 'https://mcp.example.com/mcp' };

  it('the audience defaults to the public URL; scopes and introspection are read', () => {
    const c = loadConfig({ ...base, MCP_OAUTH_REQUIRED_SCOPES: 'cs:read, openid' }).http.oauth!;
    expect(c).toMatchObject({ issuer: 'https://login.example.com/', audience: 'https://mcp.example.com/mcp', resource: 'https://mcp.example.com/mcp', requiredScopes: ['cs:read', 'openid'] });
    expect(loadConfig({ ...base, MCP_OAUTH_AUDIENCE: 'api://cs-mcp' }).http.oauth!.audience).toBe('api://cs-mcp');
    expect(loadConfig({}).http.oauth).toBeUndefined();
  });

  it('refuses an issuer with MCP_HTTP_TOKEN, without a public URL, over plain http off loopback, and half-configured introspection', () => {
    expect(() => loadConfig({ ...base, MCP_HTTP_TOKEN: 'x'.repeat(40) })).toThrow(/both set: choose one/);
    expect(() => loadConfig({ MCP_OAUTH_ISSUER: base.MCP_OAUTH_ISSUER })).toThrow(/needs MCP_HTTP_PUBLIC_URL/);
    expect(() => loadConfig({ ...base, MCP_OAUTH_ISSUER: 'http://login.example.com' })).toThrow(/must be https/);
    expect(() => loadConfig({ ...base, MCP_OAUTH_INTROSPECTION_URL: 'https://login.example.com/introspect' })).toThrow(/MCP_OAUTH_CLIENT_ID and MCP_OAUTH_CLIENT_SECRET/);
    expect(() => loadConfig({ MCP_OAUTH_AUDIENCE: 'https://x' })).toThrow(/without MCP_OAUTH_ISSUER/);
  });

  it('an issuer protects a non-loopback bind as a token does', () => {
    const http = loadConfig({ ...base, MCP_HTTP_HOST: '10.0.0.5' }).http;
    expect(() => assertSafeHttpConfig(http)).not.toThrow();
    expect(() => assertSafeHttpConfig({ ...http, oauth: undefined })).toThrow(/without a token/);
  });

  it('labels the person from the token: name, email and subject, as much as it gives', () => {
    const info = (who: Record<string, string>) => ({ token: 't', clientId: 'c', scopes: [], extra: { who } });
    expect(actorOf(info({ subject: 'auth0|1', name: 'Ann Lee', email: 'ann@x.test' }))!.label).toBe('Ann Lee <ann@x.test> (auth0|1)');
    expect(actorOf(info({ subject: 'auth0|1', email: 'ann@x.test' }))!.label).toBe('ann@x.test (auth0|1)');
    expect(actorOf(info({ subject: 'auth0|1' }))!.label).toBe('auth0|1');
    expect(actorOf(undefined)).toBeUndefined();
  });
});
