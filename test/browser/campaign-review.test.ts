import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { browserAvailable, launchBrowser, openView, screenshot } from '../helpers/browser.js';
import { standInEnv, startInMemory, tempDataDir, testClient, testEnv, type InMemoryHarness } from '../helpers/mcp.js';
import { until } from '../helpers/until.js';
import { startSendGridStandIn, type SendGridStandIn } from '../stand-ins/sendgrid.js';
import { InMemoryTransport } from '@modelcontextprotocol/sdk/inMemory.js';
import { createMcpServer } from '../../src/server.js';

const SG_KEY = 'SG.viewkey_abcdef.0123456789abcdef';
const REVIEW = 'ui://customer-success/campaign-review.html';

const campaign = {
  campaign_name: 'Q4 health check',
  template_type: 'health_check',
  subject_line: '{{ client.name }}: <b>quick</b> check-in',
  body_text: 'Hi {{ contact.first_name | fallback: "there" }}, book a call: https://cal.example/dana',
  body_html:
    '<p>Hi {{ contact.first_name | fallback: "there" }},</p><p>Your health score is {{ client.health_score }}. <a href="https://cal.example/dana">Book a call</a></p>' +
    '<script>document.body.setAttribute("data-ran", "yes")</script>',
  target_tier: 'enterprise',
  created_by: 'dana@ourco.test',
};

/** Mail-send requests the stand-in received per address. */
function receivedPerAddress(sg: SendGridStandIn): Map<string, number> {
  const m = new Map<string, number>();
  for (const r of sg.matching(/^POST \/v3\/mail\/send/)) {
    for (const p of (r.body as any).personalizations ?? []) for (const to of p.to ?? []) m.set(to.email, (m.get(to.email) ?? 0) + 1);
  }
  return m;
}

describe.skipIf(!browserAvailable())('campaign review view in Chromium', () => {
  let browser: Browser;
  let sg: SendGridStandIn;
  let h: InMemoryHarness;
  let data: ReturnType<typeof tempDataDir>;

  beforeAll(async () => {
    data = tempDataDir();
    sg = await startSendGridStandIn({ apiKey: SG_KEY });
    h = await startInMemory(testEnv({ ...standInEnv({ sendgrid: { url: sg.url, apiKey: SG_KEY } }), CAMPAIGN_DISPATCH_POLL_MS: '50' }, data.dir), {}, { views: true });
    browser = await launchBrowser();
    await h.call('register_client', { client_id: 'acme', name: 'Acme Corp', tier: 'enterprise', health_score: 42 });
    await h.call('register_client', { client_id: 'globex', name: 'Globex', tier: 'enterprise', health_score: 71 });
    await h.call('register_client', { client_id: 'initech', name: 'Initech', tier: 'enterprise' }); // no health score: held back
    await h.call('upsert_contact', { client_id: 'acme', email: 'maria@acme.example', first_name: 'María', role: 'champion' });
    await h.call('upsert_contact', { client_id: 'acme', email: 'tom@acme.example', first_name: 'Tom', role: 'decision_maker' });
    await h.call('upsert_contact', { client_id: 'acme', email: 'gone@acme.example', first_name: 'Gone' });
    await h.call('upsert_contact', { client_id: 'globex', email: 'hank@globex.example', first_name: 'Hank' });
    await h.call('upsert_contact', { client_id: 'initech', email: 'peter@initech.example', first_name: 'Peter' });
    await h.call('set_contact_subscription', { email: 'gone@acme.example', subscribed: false, reason: 'asked to stop' });
  }, 60_000);
  afterAll(async () => {
    await browser?.close();
    await h?.close();
    await sg?.stop();
    data?.cleanup();
  });

  it('shows the email, its links, the audience and who is left out; Send delivers once, as a person\'s approval', async () => {
    const preview = await h.client.callTool({ name: 'send_personalized_email', arguments: campaign });
    expect((preview.structuredContent as any).phase).toBe('preview');
    const { page, view, calls } = await openView(browser, h.client, REVIEW, campaign, preview);
    const v = view();

    // The first recipient's email, as rendered by the server, in a frame whose scripts do not run.
    await v.locator('[data-copy-for="maria@acme.example"]').waitFor();
    const email = v.frameLocator('iframe.email');
    await expect.poll(() => email.locator('body').textContent()).toContain('Hi María,');
    expect(await email.locator('body').textContent()).toContain('Your health score is 42.');
    expect(await email.locator('body').getAttribute('data-ran')).toBeNull();
    expect(await v.locator('iframe.email').getAttribute('sandbox')).toBe('');
    // Markup in a subject is text: shown as written, never parsed into the view.
    expect(await v.locator('[data-subject]').textContent()).toBe('Subject: Acme Corp: <b>quick</b> check-in');
    await v.locator('[data-list="links"]').waitFor();
    expect(await v.locator('[data-list="links"] li').allTextContents()).toEqual(['https://cal.example/dana']);
    expect(await v.locator('[data-fact="from"]').textContent()).toContain('success@ourco.test');
    expect(await v.locator('[data-fact="reply_to"]').textContent()).toContain('none set');

    // The audience: counts, per channel, and the excluded contact with its reason.
    expect(await v.locator('[data-count="recipients"]').textContent()).toBe('3');
    expect(await v.locator('[data-chart="per-channel"] g').getAttribute('data-value')).toBe('3');
    expect(await v.locator('[data-table="excluded"] tbody tr').allTextContents()).toEqual(['gone@acme.exampleacmeunsubscribedall']);
    expect(await v.locator('[data-count="held_back"]').textContent()).toBe('1');
    await v.locator('[data-table="held_back"] tbody tr').first().waitFor();
    expect(await v.locator('[data-table="held_back"] tbody tr td').allTextContents()).toEqual([
      'peter@initech.example',
      'initech',
      'missing_value',
      expect.stringContaining('client.health_score'),
    ]);
    // The search covers reasons too: "unsub" keeps the excluded contact and no one else.
    await v.locator('#search').fill('unsub');
    await expect.poll(() => v.locator('[data-table="held_back"] tbody tr').count()).toBe(0);
    expect(await v.locator('[data-table="excluded"] tbody tr').count()).toBe(1);
    expect(await v.locator('[data-table="recipients"] [data-pick]').count()).toBe(0);

    // Search narrows the lists; picking a recipient shows their own copy.
    await v.locator('#search').fill('hank');
    await expect.poll(() => v.locator('[data-table="recipients"] [data-pick]').allTextContents()).toEqual(['hank@globex.example']);
    await v.locator('[data-pick="hank@globex.example"]').click();
    await v.locator('[data-copy-for="hank@globex.example"]').waitFor();
    await expect.poll(() => email.locator('body').textContent()).toContain('Hi Hank,');
    expect(await email.locator('body').textContent()).toContain('Your health score is 71.');
    await v.locator('#search').fill('');
    await expect.poll(() => v.locator('[data-table="recipients"] [data-pick]').count()).toBe(3);

    await screenshot(page, 'campaign-review');

    // Send: through the host bridge to the server; delivered once to each recipient.
    await v.locator('#send-button').click();
    await v.locator('[data-outcome="sent"]').waitFor();
    expect(calls.filter((c) => c.name === 'send_reviewed_campaign')).toHaveLength(1);
    await until(() => receivedPerAddress(sg).size === 3, { timeoutMs: 20_000 });
    expect(Object.fromEntries(receivedPerAddress(sg))).toEqual({ 'maria@acme.example': 1, 'tom@acme.example': 1, 'hank@globex.example': 1 });
    expect(await v.locator('#send-button').isDisabled()).toBe(true);
    await page.close();

    // Recorded as a person's approval.
    const log = await h.call('get_audit_log', { tool: 'send_reviewed_campaign' });
    const entry = (log.structuredContent.entries as any[]).find((e) => e.outcome === 'success');
    expect(entry.details).toMatchObject({ approved_by: 'person', approved_through: 'campaign review view (MCP Apps)' });
  }, 60_000);

  it('refuses a campaign that changed since the preview it shows: nothing is sent until the person reviews it as it is now', async () => {
    const changing = { ...campaign, campaign_name: 'Changing', target_client_ids: ['acme'], target_tier: undefined };
    const preview = await h.client.callTool({ name: 'send_personalized_email', arguments: changing });
    const before = sg.matching(/^POST \/v3\/mail\/send/).length;
    await h.call('upsert_contact', { client_id: 'acme', email: 'new@acme.example', first_name: 'Newcomer' });
    const { page, view } = await openView(browser, h.client, REVIEW, changing, preview);
    await view().locator('#send-button').click();
    const refusal = view().locator('[data-outcome="refused"]');
    await refusal.waitFor();
    expect(await refusal.textContent()).toContain('changed since the preview (audience)');
    expect(sg.matching(/^POST \/v3\/mail\/send/).length).toBe(before);
    // The person reviews the campaign as it is now (the newcomer included) before a new Send can go.
    await view().locator('#show-fresh').click();
    await expect.poll(() => view().locator('[data-count="recipients"]').textContent()).toBe('3');
    await expect.poll(() => view().locator('[data-table="recipients"] [data-pick]').allTextContents()).toContain('new@acme.example');
    await view().locator('#send-button').click();
    await view().locator('[data-outcome="sent"]').waitFor();
    await until(() => receivedPerAddress(sg).get('new@acme.example') === 1);
    // Once each, to the campaign's three acme contacts (María and Tom had the first campaign too).
    expect(Object.fromEntries(receivedPerAddress(sg))).toEqual({ 'maria@acme.example': 2, 'tom@acme.example': 2, 'hank@globex.example': 1, 'new@acme.example': 1 });
    await page.close();
  }, 60_000);

  it('is neither listed to nor callable by a client that did not declare MCP Apps', async () => {
    const server = createMcpServer(h.services);
    const [ct, st] = InMemoryTransport.createLinkedPair();
    const plain = testClient({ name: 'no-views' });
    await Promise.all([server.connect(st), plain.connect(ct)]);
    const { tools } = await plain.listTools();
    expect(tools.map((t) => t.name)).not.toContain('send_reviewed_campaign');
    expect(tools.map((t) => t.name)).not.toContain('review_campaign');
    expect(tools.some((t) => t._meta !== undefined)).toBe(false);
    const preview = (await plain.callTool({ name: 'send_personalized_email', arguments: { ...campaign, campaign_name: 'By the model' } })).structuredContent as any;
    const before = sg.matching(/^POST \/v3\/mail\/send/).length;
    const r = (await plain.callTool({ name: 'send_reviewed_campaign', arguments: { campaign: { ...campaign, campaign_name: 'By the model' }, confirmation_token: preview.confirmation_token } })) as any;
    expect(r.isError).toBe(true);
    expect(r.structuredContent.error).toMatchObject({ code: 'forbidden', details: { policy: 'view_only' } });
    expect(sg.matching(/^POST \/v3\/mail\/send/).length).toBe(before);
    // The client that declared it sees the view-only tool, hidden from the model, and the preview's view.
    const listed = (await h.client.listTools()).tools;
    expect(listed.find((t) => t.name === 'send_reviewed_campaign')?._meta).toEqual({ ui: { resourceUri: REVIEW, visibility: ['app'] } });
    expect(listed.find((t) => t.name === 'send_personalized_email')?._meta).toEqual({ ui: { resourceUri: REVIEW } });
    await plain.close();
    await server.close();
  });
});
