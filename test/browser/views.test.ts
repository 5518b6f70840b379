import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serveHttp, type RunningHttpServer } from '../../src/transports/http.js';
import { browserAvailable, launchBrowser, openView, screenshot } from '../helpers/browser.js';
import { standInEnv, startInMemory, tempDataDir, testEnv, type InMemoryHarness } from '../helpers/mcp.js';
import { until } from '../helpers/until.js';
import { post, sendgridSigner, sgEvent } from '../helpers/webhooks.js';
import { startSendGridStandIn, type SendGridStandIn } from '../stand-ins/sendgrid.js';

const SG_KEY = 'SG.viewkey2_abcdef.0123456789abcdef';

/** The values a chart drew, by label (read back from the SVG the view drew). */
async function chart(frame: import('playwright-core').Frame, name: string): Promise<Record<string, number>> {
  const parts = frame.locator(`[data-chart="${name}"] [data-label]`);
  const out: Record<string, number> = {};
  for (const el of await parts.all()) out[(await el.getAttribute('data-label'))!] = Number(await el.getAttribute('data-value'));
  return out;
}

describe.skipIf(!browserAvailable())('status, client and workflow views in Chromium', () => {
  const signer = sendgridSigner();
  let browser: Browser;
  let sg: SendGridStandIn;
  let h: InMemoryHarness;
  let http: RunningHttpServer;
  let data: ReturnType<typeof tempDataDir>;

  beforeAll(async () => {
    data = tempDataDir();
    sg = await startSendGridStandIn({ apiKey: SG_KEY });
    h = await startInMemory(
      testEnv(
        {
          ...standInEnv({ sendgrid: { url: sg.url, apiKey: SG_KEY } }),
          CAMPAIGN_DISPATCH_POLL_MS: '50',
          MCP_HTTP_PORT: '0',
          SENDGRID_WEBHOOK_PUBLIC_KEY: signer.publicKey,
          WEBHOOK_PROCESS_POLL_MS: '50',
        },
        data.dir,
      ),
      {},
      { views: true },
    );
    http = await serveHttp(h.services);
    browser = await launchBrowser();
    await h.call('register_client', { client_id: 'acme', name: 'Acme Corp', tier: 'enterprise', health_score: 80, renewal_date: '2027-03-01' });
    await h.call('upsert_contact', { client_id: 'acme', email: 'maria@acme.example', first_name: 'María', role: 'champion' });
    await h.call('upsert_contact', { client_id: 'acme', email: 'tom@acme.example', first_name: 'Tom' });
    await h.call('upsert_contact', { client_id: 'acme', email: 'gone@acme.example', first_name: 'Gone' });
    await h.call('set_contact_subscription', { email: 'gone@acme.example', subscribed: false, reason: 'asked to stop' });
  }, 60_000);
  afterAll(async () => {
    await browser?.close();
    await http?.close();
    await h?.close();
    await sg?.stop();
    data?.cleanup();
  });

  it('campaign status: progress and waiting reasons while sending, refreshed through the host until done; the engagement funnel', async () => {
    const campaign = { campaign_name: 'Renewal prep', template_type: 'renewal_reminder', subject_line: 'Renewal', body_text: 'Hi {{ contact.first_name }}', target_client_ids: ['acme'] };
    // SendGrid refuses for now: the messages wait (rate limit, then the open circuit).
    sg.inject({ match: /^POST \/v3\/mail\/send/, times: 1_000_000, status: 429, headers: { 'X-RateLimit-Limit': '600', 'X-RateLimit-Remaining': '0', 'X-RateLimit-Reset': String(Math.floor(Date.now() / 1000) + 1) } });
    const preview = await h.call('send_personalized_email', campaign);
    const confirmed = await h.call('send_personalized_email', { ...campaign, confirmation_token: preview.structuredContent.confirmation_token });
    const id = confirmed.structuredContent.campaign_id;
    const waiting = await until(
      () => h.call('get_campaign_status', { campaign_id: id }),
      (r) => Object.keys(r.structuredContent.campaign.waiting_by_reason).length > 0,
    );
    const { page, view } = await openView(browser, h.client, 'ui://customer-success/campaign-status.html', { campaign_id: id }, waiting);
    const v = view();
    await v.locator('[data-status="sending"]').waitFor();
    expect(await chart(v, 'progress')).toMatchObject({ queued: 2, sent: 0 });
    expect(Object.values(await chart(v, 'waiting')).reduce((a, b) => a + b, 0)).toBe(2);
    await screenshot(page, 'campaign-status-sending');

    // SendGrid answers again: the view, polling get_campaign_status through the host, shows the campaign done.
    sg.clearFaults();
    await v.locator('[data-status="completed"]').waitFor({ timeout: 30_000 });
    expect(await chart(v, 'progress')).toMatchObject({ sent: 2, queued: 0, sending: 0 });
    expect(Number(await v.locator('body').getAttribute('data-refreshes'))).toBeGreaterThan(0);
    await page.close();

    // Engagement from the signed SendGrid webhook: the funnel a fresh status shows.
    const events = sg.delivered.map((d) => sgEvent('delivered', d.to, { ...d.custom_args, sg_message_id: `${d.message_id}.filter0001` }));
    const first = sg.delivered[0]!;
    events.push(sgEvent('open', first.to, { ...first.custom_args, sg_message_id: `${first.message_id}.filter0001` }));
    events.push(sgEvent('click', first.to, { ...first.custom_args, sg_message_id: `${first.message_id}.filter0001`, url: 'https://ourco.test' }));
    const body = JSON.stringify(events);
    expect((await post(`${http.url.replace(/\/mcp$/, '')}/webhooks/sendgrid`, body, signer.headers(body))).status).toBe(200);
    // (from list_campaigns this time: the same view)
    const engaged = await until(
      () => h.call('list_campaigns', {}),
      (r) => r.structuredContent.campaigns[0].engagement.totals.clicked === 1,
    );
    const second = await openView(browser, h.client, 'ui://customer-success/campaign-status.html', {}, engaged);
    await second.view().locator('[data-status="completed"]').waitFor();
    expect(await chart(second.view(), 'funnel')).toEqual({ sent: 2, delivered: 2, opened: 1, clicked: 1 });
    await screenshot(second.page, 'campaign-status');
    await second.page.close();
  }, 90_000);

  it('client overview: health over time, contacts with their consent, the timeline', async () => {
    await h.call('update_client_info', { client_id: 'acme', health_score: 60 });
    await h.call('update_client_info', { client_id: 'acme', health_score: 45 });
    const overview = await h.client.callTool({ name: 'get_client_overview', arguments: { client_id: 'acme' } });
    const { page, view } = await openView(browser, h.client, 'ui://customer-success/client-overview.html', { client_id: 'acme' }, overview);
    const v = view();
    await v.locator('[data-chart="health"] circle').first().waitFor();
    const points = await v.locator('[data-chart="health"] circle').evaluateAll((cs) => cs.map((c) => Number(c.getAttribute('data-value'))));
    expect(points).toEqual([80, 60, 45]);
    expect(await v.locator('[data-fact="health"]').textContent()).toBe('45');
    const rows = await v.locator('[data-table="contacts"] tbody tr').allTextContents();
    expect(rows.find((r) => r.startsWith('gone@acme.example'))).toMatch(/unsubscribed .*\(asked to stop\)/);
    expect(rows.find((r) => r.startsWith('maria@acme.example'))).toContain('subscribed');
    expect(await v.locator('[data-table="timeline"] tbody tr').count()).toBeGreaterThan(3);
    await screenshot(page, 'client-overview');
    await page.close();
  }, 60_000);

  it('workflow: the trigger and steps as a flow with the estimate, then enrolments from get_workflow', async () => {
    const playbook = {
      workflow_name: 'Health drop rescue',
      trigger_type: 'health_score',
      trigger_conditions: { threshold: 50, direction: 'below' },
      audience: { tier: 'enterprise' },
      actions: [
        { type: 'send_email', subject: '{{ client.name }}: can we help?', body: 'Hi {{ contact.first_name }}' },
        { type: 'wait', days: 3 },
        { type: 'create_task', title: 'Call {{ client.name }}', due_in_days: 1 },
      ],
    };
    const preview = await h.client.callTool({ name: 'automate_communications', arguments: playbook });
    expect((preview.structuredContent as any).phase).toBe('preview');
    const { page, view } = await openView(browser, h.client, 'ui://customer-success/workflow.html', playbook, preview);
    const v = view();
    await v.locator('[data-flow]').waitFor();
    expect(await v.locator('[data-step]').evaluateAll((s) => s.map((x) => x.getAttribute('data-type') ?? x.getAttribute('data-step')))).toEqual(['trigger', 'send_email', 'wait', 'create_task']);
    expect(await v.locator('[data-step="trigger"]').textContent()).toContain('health score crosses below 50');
    expect(await v.locator('[data-step="1"]').textContent()).toContain('wait 3 day(s)');
    expect(await v.locator('[data-estimate]').textContent()).toBe(String((preview.structuredContent as any).estimated_messages_per_day));
    await screenshot(page, 'workflow-preview');
    await page.close();

    const confirmed = await h.call('automate_communications', { ...playbook, confirmation_token: (preview.structuredContent as any).confirmation_token });
    const workflowId = confirmed.structuredContent.workflow_id ?? confirmed.structuredContent.result_id;
    await h.call('update_client_info', { client_id: 'acme', health_score: 70 });
    await h.call('update_client_info', { client_id: 'acme', health_score: 40 }); // crosses below 50: Acme's contacts enter
    const status = await until(
      () => h.client.callTool({ name: 'get_workflow', arguments: { workflow_id: workflowId } }),
      (r: any) => r.structuredContent.enrollments.total > 0,
    );
    const second = await openView(browser, h.client, 'ui://customer-success/workflow.html', { workflow_id: workflowId }, status);
    await second.view().locator('[data-chart="enrolments"]').waitFor();
    const e = (status.structuredContent as any).enrollments;
    expect(await chart(second.view(), 'enrolments')).toEqual({ active: e.active, completed: e.completed, exited: e.exited, cancelled: e.cancelled });
    expect(await second.view().locator('[data-step-stats]').count()).toBe(3);
    await screenshot(second.page, 'workflow');
    await second.page.close();
  }, 60_000);
});
