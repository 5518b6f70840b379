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
