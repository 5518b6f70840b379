import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { decodeProtectedHeader } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { standInEnv, tempDataDir } from '../helpers/mcp.js';
import { startSignedInServer, type SignedInServer } from '../helpers/signed-in-server.js';
import { INTROSPECTOR, PERSON_SECRET, startIssuer, type TestIssuer } from '../helpers/oauth-issuer.js';
import { until } from '../helpers/until.js';
import { startSendGridStandIn, type SendGridStandIn } from '../stand-ins/sendgrid.js';

/**
 * Sign-in end to end: the built server in HTTP mode (a child process) behind a real OAuth authorization
 * server (oidc-provider) on loopback, reached by the SDK Client with each person's access token.
 */

const SG_KEY = 'SG.signin-test-key';
const PEOPLE = [
  { id: 'reader', scope: 'cs:read' },
  { id: 'csm', scope: 'cs:read cs:write', name: 'Cara Smith', email: 'cara@ourco.test' },
  { id: 'lead', scope: 'cs:read cs:write cs:send', name: 'Lee Adams', email: 'lee@ourco.test' },
  { id: 'lead2', scope: 'cs:read cs:write cs:send', name: 'Kim Other', email: 'kim@ourco.test' },
  { id: 'admin', scope: 'cs:read cs:write cs:send cs:admin', email: 'ops@ourco.test' },
  { id: 'brief', scope: 'cs:read', ttlS: 1 },
  { id: 'opaque', scope: 'cs:read cs:write', email: 'op@ourco.test', opaque: true },
];

const introspection = (issuer: string) => ({ MCP_OAUTH_INTROSPECTION_URL: `${issuer}/token/introspection`, MCP_OAUTH_CLIENT_ID: INTROSPECTOR, MCP_OAUTH_CLIENT_SECRET: PERSON_SECRET });

const INIT = { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '1' } } };
const HEADERS = { 'Content-Type': 'application/json', Accept: 'application/json, text/event-stream' };

describe('sign-in (OAuth 2.1 resource server) over HTTP', () => {
  const data = tempDataDir();
  let issuer: TestIssuer;
  let foreign: TestIssuer;
  let sg: SendGridStandIn;
  let server: SignedInServer;
  let url = '';
  const stderr = () => server.stderr();
  const tokens: Record<string, string> = {};
  const clients: Client[] = [];

  async function connect(token: string | (() => string)): Promise<Client> {
    const client = new Client({ name: 'signin-test', version: '1.0.0' });
    const transport = new StreamableHTTPClientTransport(new URL(url), {
      // Each request carries the token of that moment (a token can change mid-session).
      fetch: (input, init) => {
        const headers = new Headers(init?.headers);
        headers.set('Authorization', `Bearer ${typeof token === 'string' ? token : token()}`);
        return fetch(input, { ...init, headers });
      },
    });
    await client.connect(transport);
    clients.push(client);
    return client;
  }
  const as = async (person: string) => connect(tokens[person]!);
  const call = async (c: Client, name: string, args: Record<string, unknown>) => (await c.callTool({ name, arguments: args })) as { isError?: boolean; structuredContent: Record<string, any> };

  /** One raw JSON-RPC POST (initialize, or a call in `session`), for what the SDK client does not show: status and headers. */
  async function raw(token: string | undefined, body: unknown, session?: string) {
    const res = await fetch(url, {
      method: 'POST',
      headers: { ...HEADERS, ...(token ? { Authorization: `Bearer ${token}` } : {}), ...(session ? { 'Mcp-Session-Id': session, 'Mcp-Protocol-Version': '2025-06-18' } : {}) },
      body: JSON.stringify(body),
    });
    return { status: res.status, www: res.headers.get('www-authenticate') ?? '', session: res.headers.get('mcp-session-id') ?? undefined, text: await res.text() };
  }

  beforeAll(async () => {
    issuer = await startIssuer(PEOPLE);
    foreign = await startIssuer([{ id: 'lead', scope: 'cs:read cs:write cs:send' }]);
    sg = await startSendGridStandIn({ apiKey: SG_KEY });
    server = await startSignedInServer(issuer.issuer, { ...standInEnv({ sendgrid: { url: sg.url, apiKey: SG_KEY } }), ...introspection(issuer.issuer) }, data.dir);
    url = server.url;
    for (const p of PEOPLE) if (p.id !== 'brief') tokens[p.id] = await issuer.token(p.id, url);
  }, 60_000);

  afterAll(async () => {
    await Promise.all(clients.map((c) => c.close().catch(() => undefined)));
    server?.child.kill('SIGTERM');
    await Promise.all([issuer?.close(), foreign?.close(), sg?.stop()]);
    data.cleanup();
  });

  it('a request without a token gets 401 pointing at the metadata, which names the issuer, whose metadata issues tokens', async () => {
    const r = await raw(undefined, INIT);
    expect(r.status).toBe(401);
    const metadataUrl = /resource_metadata="([^"]+)"/.exec(r.www)?.[1];
    expect(metadataUrl).toBe(url.replace('/mcp', '/.well-known/oauth-protected-resource/mcp'));
    const prm = (await (await fetch(metadataUrl!)).json()) as Record<string, any>;
    expect(prm.resource).toBe(url);
    expect(prm.authorization_servers).toEqual([issuer.issuer]);
    expect(prm.scopes_supported).toEqual(['cs:read', 'cs:write', 'cs:send', 'cs:admin']);
    // The root form too, for clients that look there.
    expect(((await (await fetch(url.replace('/mcp', '/.well-known/oauth-protected-resource'))).json()) as Record<string, any>).resource).toBe(url);
    const as = (await (await fetch(`${prm.authorization_servers[0]}/.well-known/openid-configuration`)).json()) as Record<string, any>;
    expect(as.token_endpoint).toMatch(/\/token$/);
    // A token from that issuer, for this resource, is accepted.
    expect((await raw(tokens.reader, INIT)).status).toBe(200);
    // Nothing of the token reaches the logs.
    expect(stderr()).not.toContain(tokens.reader!.split('.')[2]);
  });

  it('refuses a token for another resource, one from a foreign issuer, an expired one and a forged one, each with 401', async () => {
    const other = await issuer.token('lead', 'http://127.0.0.1:9/other-mcp');
    const wrongAud = await raw(other, INIT);
    expect(wrongAud.status).toBe(401);
    expect(wrongAud.text).toMatch(/another resource/);
    expect(wrongAud.www).toMatch(/resource_metadata="/);

    const foreignToken = await foreign.token('lead', url);
    const f = await raw(foreignToken, INIT);
    expect(f.status).toBe(401);

    const brief = await issuer.token('brief', url);
    const expired = await until(() => raw(brief, INIT), (r) => r.status === 401, { message: 'the one-second token refused once expired' });
    expect(expired.text).toMatch(/expired/);

    const [h, p] = tokens.lead!.split('.');
    const forged = `${h}.${Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(p!, 'base64url').toString()), scope: 'cs:admin' })).toString('base64url')}.${tokens.lead!.split('.')[2]}`;
    expect((await raw(forged, INIT)).status).toBe(401);
  });

  it('accepts an opaque token through introspection, with its scopes and person; refuses an unknown one', async () => {
    const opaque = await issuer.token('opaque', url);
    expect(opaque.split('.')).toHaveLength(1);
    const c = await connect(opaque);
    const names = (await c.listTools()).tools.map((t) => t.name);
    expect(names).toContain('register_client');
    expect(names).not.toContain('sendgrid_send_email');
    expect((await call(c, 'register_client', { client_id: 'opaque-co', name: 'Opaque Co' })).structuredContent.success).toBe(true);
    const entry = (await call(await as('admin'), 'get_audit_log', { tool: 'register_client' })).structuredContent.entries[0];
    expect(entry.actor).toBe('op@ourco.test (opaque)');
    const unknown = await raw('not-a-token-the-issuer-knows', INIT);
    expect(unknown.status).toBe(401);
    expect(unknown.text).toMatch(/not active/);
    // An opaque token for another resource is refused too.
    const other = await issuer.token('opaque', 'http://127.0.0.1:9/other-mcp');
    expect((await raw(other, INIT)).status).toBe(401);
  });

  it('picks up a rotated signing key (a new kid)', async () => {
    expect((await raw(tokens.reader, INIT)).status).toBe(200); // the first key set is cached
    await issuer.rotateKey();
    const fresh = await issuer.token('reader', url);
    expect(decodeProtectedHeader(fresh).kid).not.toBe(decodeProtectedHeader(tokens.reader!).kid);
    expect((await raw(fresh, INIT)).status).toBe(200);
    for (const p of PEOPLE) if (p.id !== 'brief') tokens[p.id] = await issuer.token(p.id, url);
  });

  it('tools/list shows each role only the tools its scopes allow', async () => {
    const names = async (person: string) => new Set((await (await as(person)).listTools()).tools.map((t) => t.name));
    const reader = await names('reader');
    const csm = await names('csm');
    const lead = await names('lead');
    const admin = await names('admin');
    expect(reader.has('list_clients')).toBe(true);
    expect(reader.has('register_client')).toBe(false);
    expect(reader.has('sendgrid_send_email')).toBe(false);
    expect(csm.has('register_client')).toBe(true);
    expect(csm.has('send_personalized_email')).toBe(true); // to preview
    expect(csm.has('sendgrid_send_email')).toBe(false);
    expect(csm.has('cancel_campaign')).toBe(false);
    expect(csm.has('import_clients')).toBe(false);
    expect(lead.has('sendgrid_send_email')).toBe(true);
    expect(lead.has('import_clients')).toBe(false);
    expect(admin.has('import_clients')).toBe(true);
    expect(reader.size).toBeLessThan(csm.size);
    expect(csm.size).toBeLessThan(lead.size);
    expect(lead.size).toBeLessThan(admin.size);
  });

  const campaign = {
    campaign_name: 'Signed-in check-in',
    template_type: 'health_check',
    subject_line: 'Hello {{ client.name }}',
    body_text: 'Hi {{ contact.first_name | fallback: "there" }}',
    target_client_ids: ['acme'],
    scheduled_send_time: new Date(Date.now() + 30 * 86_400_000).toISOString(),
    created_by: 'the model says: the CEO',
  };

  it('records the signed-in person as the actor: audit log, client timeline, campaign created_by; a read/write token cannot send (403 step-up)', async () => {
    const csm = await as('csm');
    expect((await call(csm, 'register_client', { client_id: 'acme', name: 'Acme', actor: 'someone else' })).structuredContent.success).toBe(true);
    expect((await call(csm, 'upsert_contact', { client_id: 'acme', email: 'pat@acme.test', first_name: 'Pat', role: 'primary' })).structuredContent.success).toBe(true);
    const cara = 'Cara Smith <cara@ourco.test> (csm)';

    // A CSM previews, but confirming (a send) needs cs:send: HTTP 403 insufficient_scope naming it.
    const preview = await call(csm, 'send_personalized_email', campaign);
    expect(preview.structuredContent.phase, JSON.stringify(preview.structuredContent)).toBe('preview');
    const init = await raw(tokens.csm, INIT);
    await raw(tokens.csm, { jsonrpc: '2.0', method: 'notifications/initialized' }, init.session);
    const refused = await raw(tokens.csm, { jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'send_personalized_email', arguments: { ...campaign, confirmation_token: preview.structuredContent.confirmation_token } } }, init.session);
    expect(refused.status).toBe(403);
    expect(refused.www).toMatch(/error="insufficient_scope"/);
    expect(refused.www).toMatch(/scope="cs:read cs:write cs:send"/);
    expect(refused.www).toMatch(/resource_metadata="/);
    const direct = await raw(tokens.reader, { jsonrpc: '2.0', id: 3, method: 'tools/call', params: { name: 'sendgrid_send_email', arguments: { to: [{ email: 'pat@acme.test' }], subject: 's', text: 't' } } }, (await raw(tokens.reader, INIT)).session);
    expect(direct.status).toBe(403);
    expect(direct.www).toMatch(/scope="cs:read cs:send"/);
    await expect(csm.callTool({ name: 'sendgrid_send_email', arguments: { to: [{ email: 'pat@acme.test' }], subject: 's', text: 't' } })).rejects.toThrow(/needs the cs:send scope/);

    // The lead previews and confirms: the campaign is theirs, whatever the model wrote in created_by.
    const lead = await as('lead');
    const p2 = await call(lead, 'send_personalized_email', campaign);
    const done = await call(lead, 'send_personalized_email', { ...campaign, confirmation_token: p2.structuredContent.confirmation_token });
    expect(done.structuredContent.phase).toBe('confirmed');
    const status = await call(lead, 'get_campaign_status', { campaign_id: done.structuredContent.campaign_id });
    expect(status.structuredContent.campaign.created_by).toBe('Lee Adams <lee@ourco.test> (lead)');

    const timeline = await call(csm, 'get_client_timeline', { client_id: 'acme' });
    const actors = timeline.structuredContent.entries.map((e: { actor: string | null }) => e.actor);
    expect(actors).toContain(cara);
    expect(actors).not.toContain('someone else');

    const admin = await as('admin');
    const audit = await call(admin, 'get_audit_log', { tool: 'register_client' });
    expect(audit.structuredContent.entries[0].actor).toBe(cara);
    expect(audit.structuredContent.entries[0].details.claimed_actor).toBe('someone else');
    const sent = await call(admin, 'get_audit_log', { tool: 'send_personalized_email', outcome: 'success' });
    expect(sent.structuredContent.entries[0].actor).toBe('Lee Adams <lee@ourco.test> (lead)');
    expect(sent.structuredContent.entries[0].details.approved_by).toMatch(/^policy/);
  });

  it("refuses one person's confirmation token in another person's session, and gives them a preview of their own", async () => {
    const lead = await as('lead');
    const other = await as('lead2');
    const c = { ...campaign, campaign_name: 'Cross-person check' };
    const p = await call(lead, 'send_personalized_email', c);
    const stolen = await call(other, 'send_personalized_email', { ...c, confirmation_token: p.structuredContent.confirmation_token });
    expect(stolen.isError).toBe(true);
    expect(stolen.structuredContent.error.code, JSON.stringify(stolen.structuredContent.error)).toBe('forbidden');
    expect(stolen.structuredContent.error.message).toMatch(/another person's preview/);
    const own = stolen.structuredContent.error.details.fresh_preview.confirmation_token;
    expect(own).toBeTruthy();
    // The original token still confirms for the person who previewed (it was not consumed).
    expect((await call(lead, 'send_personalized_email', { ...c, confirmation_token: p.structuredContent.confirmation_token })).structuredContent.phase).toBe('confirmed');
    // And the other person confirms with their own preview's token.
    const theirs = await call(other, 'send_personalized_email', { ...c, confirmation_token: own });
    expect(theirs.structuredContent.phase).toBe('confirmed');
    const status = await call(other, 'get_campaign_status', { campaign_id: theirs.structuredContent.campaign_id });
    expect(status.structuredContent.campaign.created_by).toBe('Kim Other <kim@ourco.test> (lead2)');
  });

  it("keeps a session to the person who started it: another person's token naming it gets 404", async () => {
    const init = await raw(tokens.lead, INIT);
    expect(init.session).toBeTruthy();
    expect((await raw(tokens.lead, { jsonrpc: '2.0', method: 'notifications/initialized' }, init.session)).status).toBe(202);
    const list = { jsonrpc: '2.0', id: 2, method: 'tools/list', params: {} };
    const other = await raw(tokens.lead2, list, init.session);
    expect(other.status).toBe(404);
    expect(other.text).toMatch(/started by another person/);
    expect((await raw(await issuer.token('lead', url), list, init.session)).status).toBe(200); // the same person, a fresh token
  });

  it('checks every call against the token of that request: a scope lost mid-session is refused', async () => {
    let current = tokens.lead!;
    const c = await connect(() => current);
    expect((await call(c, 'cancel_campaign', { campaign_id: 'cmp_none' })).structuredContent.error?.code).toBe('not_found');
    current = await issuer.token('lead', url, 'cs:read cs:write');
    await expect(c.callTool({ name: 'cancel_campaign', arguments: { campaign_id: 'cmp_none' } })).rejects.toThrow(/needs the cs:send scope/);
    expect((await c.listTools()).tools.some((t) => t.name === 'cancel_campaign')).toBe(false);
  });
});

describe('sign-in in stateless mode (any replica answers any request)', () => {
  const data = tempDataDir();
  let issuer: TestIssuer;
  let server: SignedInServer;
  afterAll(async () => {
    server?.child.kill('SIGTERM');
    await issuer?.close();
    data.cleanup();
  });

  it('lists per role and records the person, with no session kept', async () => {
    issuer = await startIssuer([
      { id: 'reader', scope: 'cs:read' },
      { id: 'csm', scope: 'cs:read cs:write', name: 'Cara Smith' },
    ]);
    server = await startSignedInServer(issuer.issuer, { MCP_HTTP_STATELESS: 'true' }, data.dir);
    const connect = async (person: string) => {
      const client = new Client({ name: 'stateless-test', version: '1.0.0' });
      await client.connect(new StreamableHTTPClientTransport(new URL(server.url), { requestInit: { headers: { Authorization: `Bearer ${await issuer.token(person, server.url)}` } } }));
      return client;
    };
    const reader = await connect('reader');
    const csm = await connect('csm');
    const readerTools = (await reader.listTools()).tools.map((t) => t.name);
    expect(readerTools).toContain('list_clients');
    expect(readerTools).not.toContain('register_client');
    const r = (await csm.callTool({ name: 'register_client', arguments: { client_id: 'acme', name: 'Acme' } })) as { structuredContent: Record<string, any> };
    expect(r.structuredContent.success).toBe(true);
    const t = (await reader.callTool({ name: 'get_client_timeline', arguments: { client_id: 'acme' } })) as { structuredContent: Record<string, any> };
    expect(t.structuredContent.entries[0].actor).toBe('Cara Smith (csm)');
    await Promise.all([reader.close(), csm.close()]);
  });
});
