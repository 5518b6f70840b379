import dns from 'node:dns/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startInMemory, tempDataDir, testEnv, type InMemoryHarness } from '../helpers/mcp.js';
import { activate } from '../helpers/automations.js';
import { until } from '../helpers/until.js';
import { HttpStandIn } from '../stand-ins/http-stand-in.js';

/**
 * What automation steps send out of the building (issue 16, items 5–7): Slack text where customer data
 * cannot become markup, webhooks that reach only the origins the operator named (never a local
 * service by accident), and step settings that carry a credential (a webhook URL's secret path)
 * redacted everywhere like an API key.
 */

async function runNow(h: InMemoryHarness, workflowId: string, targets: Record<string, unknown>) {
  const preview = await h.call('run_workflow', { workflow_id: workflowId, ...targets });
  expect(preview.structuredContent, JSON.stringify(preview.structuredContent).slice(0, 2000)).toMatchObject({ success: true, phase: 'preview' });
  const confirmed = await h.call('run_workflow', { workflow_id: workflowId, ...targets, confirmation_token: preview.structuredContent.confirmation_token });
  expect(confirmed.structuredContent, JSON.stringify(confirmed.structuredContent).slice(0, 2000)).toMatchObject({ success: true, phase: 'confirmed' });
  return confirmed.structuredContent;
}

const SLACK_SECRET_PATH = '/services/T0SLACK01/B0SLACK02/slackhooksecret0123456789';

describe('automation steps that reach Slack', () => {
  const data = tempDataDir();
  let slack: HttpStandIn;
  let h: InMemoryHarness;

  beforeAll(async () => {
    slack = await new HttpStandIn({ name: 'slack' }, () => ({ status: 200, body: 'ok', headers: { 'Content-Type': 'text/plain' } })).start();
    h = await startInMemory(
      testEnv({ SLACK_WEBHOOK_URL: `${slack.url}${SLACK_SECRET_PATH}`, AUTOMATION_TICK_MS: '50', AUTOMATION_SWEEP_MS: '150', AUTOMATION_LEASE_MS: '3000' }, data.dir),
    );
  });
  afterAll(async () => {
    await h?.close();
    await slack?.stop();
    data.cleanup();
  });

  it('customer data in a Slack message is text: no mention, no link, no markup from a client name or an event', async () => {
    // What a hostile import or a forged event would put in the roster.
    const evil = '<!channel> Tom & Jerry <https://evil.example/pay|invoice> <@U0ADMIN> <#C0GENERAL>';
    expect((await h.call('register_client', { client_id: 'evil', name: evil, tier: 'enterprise' })).structuredContent.success).toBe(true);
    const { workflowId } = await activate(h, {
      workflow_name: 'Slack heads-up',
      trigger_type: 'custom',
      // The approved template's own markup (a mention and a link) must stay live.
      actions: [{ type: 'send_slack_message', text: '<!here> Heads-up: {{ client.name }} — <https://ourco.test/clients/{{ client.id }}|open>' }],
    });
    await runNow(h, workflowId, { client_ids: ['evil'] });
    await until(() => slack.requests.length, (n) => n === 1);
    const text = (slack.requests[0]!.body as { text: string }).text;
    expect(text.startsWith('<!here> Heads-up: ')).toBe(true);
    expect(text).toContain('&lt;!channel&gt; Tom &amp; Jerry &lt;https://evil.example/pay|invoice&gt; &lt;@U0ADMIN&gt; &lt;#C0GENERAL&gt;');
    // Only the template's own two pieces of markup remain as <…> spans.
    expect(text.match(/<[^<>]*>/g)).toEqual(['<!here>', expect.stringMatching(/^<https:\/\/ourco\.test\/clients\/.*\|open>$/)]);
    expect(text).not.toContain('<!channel>');
    expect(text).not.toContain('<https://evil.example');
  });

  it('a template cannot opt a value out of Slack escaping with the raw filter', async () => {
    const r = await h.call('automate_communications', {
      workflow_name: 'Raw slack',
      trigger_type: 'custom',
      actions: [{ type: 'send_slack_message', text: 'Heads-up: {{ client.name | raw }}' }],
    });
    expect(r.structuredContent.success).toBe(false);
    expect(r.structuredContent.error).toMatchObject({ code: 'invalid_input' });
    expect(r.structuredContent.error.message).toMatch(/raw/);
  });
});

const WEBHOOK_SECRET = 'whsec_outbound_test_secret';
/** What a local service would answer: none of it may reach the model. */
const INTERNAL_REPLY = 'pg: FATAL password authentication failed for user "postgres" hunter2-internal-detail';

const automationEnv = (dataDir: string, extra: Record<string, string>) =>
  testEnv(
    {
    AUTOMATION_WEBHOOK_SECRET: WEBHOOK_SECRET,
    AUTOMATION_TICK_MS: '50',
    AUTOMATION_SWEEP_MS: '150',
    AUTOMATION_LEASE_MS: '3000',
      RETRY_MAX_RETRIES: '0',
      ...extra,
    },
    dataDir,
  );

describe('trigger_webhook reaches only the origins the operator named', () => {
  const dataA = tempDataDir();
  const dataB = tempDataDir();
  let hooks: HttpStandIn; // the allowed receiver
  let other: HttpStandIn; // another port on the same host: a local service that must stay unreachable
  let a: InMemoryHarness; // private origins opted in for the stand-in
  let b: InMemoryHarness; // no opt-in
  const lookups: string[] = [];

  beforeAll(async () => {
    hooks = await new HttpStandIn({ name: 'receiver' }, (req) =>
      req.path.startsWith('/fail') ? { status: 400, body: INTERNAL_REPLY, headers: { 'Content-Type': 'text/plain' } } : { status: 200, body: { debug: INTERNAL_REPLY } },
    ).start();
    other = await new HttpStandIn({ name: 'local-service' }, () => ({ status: 200, body: INTERNAL_REPLY, headers: { 'Content-Type': 'text/plain' } })).start();
    const port = new URL(hooks.url).port;
    a = await startInMemory(
      automationEnv(dataA.dir, {
        // A bare host used to open every port of it; now it is the origin https://127.0.0.1 (port 443).
        AUTOMATION_WEBHOOK_ALLOWED_HOSTS: `127.0.0.1, http://127.0.0.1:${port}, http://rebind.test:${port}`,
        AUTOMATION_WEBHOOK_PRIVATE_ORIGINS: `http://127.0.0.1:${port}, http://rebind.test:${port}`,
      }),
      {
        // rebind.test answers the stand-in's address once, then the metadata address: only the first may be used.
        webhookLookup: async (hostname: string) => {
          lookups.push(hostname);
          return lookups.length === 1 ? [{ address: '127.0.0.1', family: 4 }] : [{ address: '169.254.169.254', family: 4 }];
        },
      } as any,
    );
    b = await startInMemory(
      automationEnv(dataB.dir, { AUTOMATION_WEBHOOK_ALLOWED_HOSTS: `http://127.0.0.1:${port}, http://localhost:${port}, http://intranet.test:${port}` }),
      // intranet.test stands for a company name pointing inside; everything else resolves as usual (localhost: /etc/hosts).
      { webhookLookup: async (hostname: string) => (hostname === 'intranet.test' ? [{ address: '10.0.0.5', family: 4 }] : dns.lookup(hostname, { all: true })) } as any,
    );
    for (const h of [a, b]) {
      await h.call('register_client', { client_id: 'acme', name: 'Acme Corp', tier: 'enterprise' });
      await h.call('upsert_contact', { client_id: 'acme', email: 'maria@acme.example', role: 'champion' });
    }
  });
  afterAll(async () => {
    await a?.close();
    await b?.close();
    await Promise.all([hooks?.stop(), other?.stop()]);
    dataA.cleanup();
    dataB.cleanup();
  });

  it('an allowlist entry is an origin: another port on an allowed host is refused, nothing is sent', async () => {
    const r = await a.call('automate_communications', {
      workflow_name: 'Port scan',
      trigger_type: 'custom',
      actions: [{ type: 'trigger_webhook', url: `http://127.0.0.1:${new URL(other.url).port}/` }],
    });
    expect(r.structuredContent.success).toBe(false);
    expect(r.structuredContent.error).toMatchObject({ code: 'invalid_input' });
    expect(r.structuredContent.error.message).toMatch(/is not an allowed webhook origin/);
    expect(other.requests).toHaveLength(0);
  });

  it('an opted-in origin is reached; the reply is shown as status and size only', async () => {
    const { workflowId } = await activate(a, {
      workflow_name: 'Hook ok and failing',
      trigger_type: 'custom',
      actions: [
        { type: 'trigger_webhook', url: `${hooks.url}/ok` },
        { type: 'trigger_webhook', url: `${hooks.url}/fail` },
      ],
    });
    await runNow(a, workflowId, { client_ids: ['acme'] });
    await until(() => hooks.requests.length, (n) => n >= 2);
    const s = await until(
      () => a.call('get_workflow', { workflow_id: workflowId }),
      (x) => x.structuredContent.steps?.[1]?.failed === 1,
    );
    const timeline = await a.call('get_client_timeline', { client_id: 'acme' });
    const status = await a.call('integrations_status', {});
    const shown = JSON.stringify([s, timeline, status]);
    expect(shown).not.toContain('hunter2');
    expect(shown).not.toContain('password authentication');
    const entries = timeline.structuredContent.entries.filter((e: any) => e.data?.action_type === 'trigger_webhook');
    expect(entries.map((e: any) => e.summary).join('\n')).toMatch(/answered 200 \(\d+ bytes\)/);
    expect(entries.map((e: any) => e.summary).join('\n')).toMatch(/\(400\)/);
    expect(hooks.requests.map((r) => r.path)).toEqual(['/ok', '/fail']);
  });

  it('a name is resolved once and the request goes to the address that was checked (no DNS rebinding)', async () => {
    const before = hooks.requests.length;
    const { workflowId } = await activate(a, {
      workflow_name: 'Rebind',
      trigger_type: 'custom',
      actions: [{ type: 'trigger_webhook', url: `http://rebind.test:${new URL(hooks.url).port}/rebind` }],
    });
    await runNow(a, workflowId, { client_ids: ['acme'] });
    await until(() => hooks.requests.length, (n) => n === before + 1);
    expect(hooks.requests.at(-1)!.path).toBe('/rebind');
    expect(hooks.requests.at(-1)!.headers.host).toBe(`rebind.test:${new URL(hooks.url).port}`);
    expect(lookups).toEqual(['rebind.test']);
  });

  it('without the opt-in, a loopback address is refused when saving', async () => {
    const r = await b.call('automate_communications', {
      workflow_name: 'Local',
      trigger_type: 'custom',
      actions: [{ type: 'trigger_webhook', url: `${hooks.url}/local` }],
    });
    expect(r.structuredContent.success).toBe(false);
    expect(r.structuredContent.error.message).toMatch(/loopback/);
    expect(r.structuredContent.error.message).toMatch(/AUTOMATION_WEBHOOK_PRIVATE_ORIGINS/);
  });

  it('without the opt-in, a name that resolves to a loopback or private address is refused when sending: nothing is sent', async () => {
    const before = hooks.requests.length;
    const port = new URL(hooks.url).port;
    const { workflowId } = await activate(b, {
      workflow_name: 'Names that point inside',
      trigger_type: 'custom',
      actions: [
        { type: 'trigger_webhook', url: `http://localhost:${port}/via-localhost` },
        { type: 'trigger_webhook', url: `http://intranet.test:${port}/via-intranet` },
      ],
    });
    await runNow(b, workflowId, { client_ids: ['acme'] });
    const s = await until(
      () => b.call('get_workflow', { workflow_id: workflowId }),
      (x) => x.structuredContent.steps?.[0]?.failed === 1 && x.structuredContent.steps?.[1]?.failed === 1,
    );
    const timeline = await b.call('get_client_timeline', { client_id: 'acme' });
    const summaries = timeline.structuredContent.entries.filter((e: any) => e.data?.action_type === 'trigger_webhook').map((e: any) => e.summary).join('\n');
    expect(summaries).toMatch(/localhost resolves to (127\.0\.0\.1|::1), a loopback address/);
    expect(summaries).toMatch(/intranet\.test resolves to 10\.0\.0\.5, a private address/);
    expect(JSON.stringify(s)).not.toContain('hunter2');
    expect(hooks.requests.length).toBe(before);
    expect(hooks.requests.filter((r) => r.path.startsWith('/via-'))).toHaveLength(0);
  });
});

describe('a webhook URL with a secret in it is a credential', () => {
  const data = tempDataDir();
  let hooks: HttpStandIn;
  let slack: HttpStandIn;
  let h: InMemoryHarness;
  // Slack-style: the last path segment is the secret; and a token in the query.
  const PATH_SECRET = 'pathsecretXq7Rk2Vn9Lw4Tz8Yb3';
  const QUERY_SECRET = 'querysecretMv5Hd1Jp6Cs0Gf';
  const CONFIG_SECRET = 'cfgslacksecretNa8Ue2Wi5Ko7';
  const SECRETS = [PATH_SECRET, QUERY_SECRET, CONFIG_SECRET];
  const hookPath = `/services/T0AAAAAAA/B0BBBBBBB/${PATH_SECRET}`;

  beforeAll(async () => {
    // Receivers that echo the path they were called on in an error (as many frameworks do: "Cannot POST /services/…").
    hooks = await new HttpStandIn({ name: 'slack-like-receiver' }, (req) =>
      req.query.get('fail') ? { status: 404, body: `Cannot POST ${req.path}?${req.query}`, headers: { 'Content-Type': 'text/plain' } } : { status: 200, body: 'ok', headers: { 'Content-Type': 'text/plain' } },
    ).start();
    slack = await new HttpStandIn({ name: 'slack' }, (req) => ({ status: 404, body: `no_service ${req.path}`, headers: { 'Content-Type': 'text/plain' } })).start();
    h = await startInMemory(
      automationEnv(data.dir, {
        AUTOMATION_WEBHOOK_ALLOWED_HOSTS: new URL(hooks.url).origin,
        AUTOMATION_WEBHOOK_PRIVATE_ORIGINS: new URL(hooks.url).origin,
        SLACK_WEBHOOK_URL: `${slack.url}/services/T0CFG/B0CFG/${CONFIG_SECRET}`,
        CS_MCP_AUDIT_BODIES: 'full',
      }),
    );
    await h.call('register_client', { client_id: 'acme', name: 'Acme Corp', tier: 'enterprise' });
    await h.call('upsert_contact', { client_id: 'acme', email: 'maria@acme.example', role: 'champion' });
  });
  afterAll(async () => {
    await h?.close();
    await Promise.all([hooks?.stop(), slack?.stop()]);
    data.cleanup();
  });

  it('is redacted in previews, get_workflow, list_workflows, the timeline, integrations_status, the resource, the audit log and the logs — and still used for sending', async () => {
    const url = `${hooks.url}${hookPath}?token=${QUERY_SECRET}`;
    const args = {
      workflow_name: 'Notify ops',
      trigger_type: 'custom',
      actions: [
        { type: 'trigger_webhook', url },
        { type: 'trigger_webhook', url: `${url}&fail=1` },
        { type: 'send_slack_message', text: 'Heads-up: {{ client.name }}' },
      ],
    };
    const preview = await h.call('automate_communications', args);
    const confirmed = await h.call('automate_communications', { ...args, confirmation_token: preview.structuredContent.confirmation_token });
    expect(confirmed.structuredContent).toMatchObject({ success: true, phase: 'confirmed' });
    const workflowId = confirmed.structuredContent.result_id as string;
    const run = await runNow(h, workflowId, { client_ids: ['acme'] });
    const wf = await until(
      () => h.call('get_workflow', { workflow_id: workflowId }),
      (x) => x.structuredContent.steps?.[0]?.done === 1 && x.structuredContent.steps?.[1]?.failed === 1 && x.structuredContent.steps?.[2]?.failed === 1,
    );
    // The stored definition keeps the real URL: the receiver was called on its secret path.
    expect(hooks.requests[0]!.path).toBe(hookPath);
    expect(hooks.requests[0]!.query.get('token')).toBe(QUERY_SECRET);
    expect(slack.requests[0]!.path).toBe(`/services/T0CFG/B0CFG/${CONFIG_SECRET}`);
    // The origin stays visible (where the data goes), the secret part does not.
    expect(JSON.stringify(wf.structuredContent)).toContain(new URL(hooks.url).origin);

    const shown = {
      preview,
      confirmed,
      run,
      wf,
      list: await h.call('list_workflows', {}),
      timeline: await h.call('get_client_timeline', { client_id: 'acme' }),
      status: await h.call('integrations_status', {}),
      resource: await h.client.readResource({ uri: 'customer://clients/acme' }),
      audit: await h.call('get_audit_log', {}),
      stored_audit: await h.services.store.db.selectFrom('audit_log').selectAll().execute(),
      logs: h.logs.join('\n'),
    };
    for (const [where, value] of Object.entries(shown)) {
      const text = JSON.stringify(value);
      for (const s of SECRETS) expect(text, `${where} shows ${s}`).not.toContain(s);
    }
    expect(JSON.stringify(shown.audit)).toContain('[REDACTED]');
  });
});
