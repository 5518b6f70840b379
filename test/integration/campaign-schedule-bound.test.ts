import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startInMemory, tempDataDir, testEnv, type InMemoryHarness, standInEnv } from '../helpers/mcp.js';
import { startSendGridStandIn, type SendGridStandIn } from '../stand-ins/sendgrid.js';

/**
 * Issue 17 item 14: a campaign scheduled for the year 9999 was accepted and sat in the outbox forever.
 * A schedule is bounded (CAMPAIGN_MAX_SCHEDULE_DAYS, default 365 days ahead).
 */
const SG_KEY = 'SG.schedulebound_abcdef.0123456789abcdef';
const campaign = {
  campaign_name: 'Far future',
  template_type: 'custom',
  subject_line: '{{ client.name }}: hello',
  body_text: 'Hi {{ contact.first_name | fallback: "there" }}',
  target_client_ids: ['acme'],
};

describe('scheduled_send_time is bounded', () => {
  const data = tempDataDir();
  const dataShort = tempDataDir();
  let sg: SendGridStandIn;
  let h: InMemoryHarness;
  let short: InMemoryHarness;

  beforeAll(async () => {
    sg = await startSendGridStandIn({ apiKey: SG_KEY });
    const env = (dir: string, extra: Record<string, string> = {}) => testEnv({ ...standInEnv({ sendgrid: { url: sg.url, apiKey: SG_KEY } }), ...extra }, dir);
    h = await startInMemory(env(data.dir));
    short = await startInMemory(env(dataShort.dir, { CAMPAIGN_MAX_SCHEDULE_DAYS: '7' }));
    for (const x of [h, short]) {
      await x.call('register_client', { client_id: 'acme', name: 'Acme Corp', tier: 'enterprise' });
      await x.call('upsert_contact', { client_id: 'acme', email: 'maria@acme.example', first_name: 'María' });
    }
  });
  afterAll(async () => {
    await h?.close();
    await short?.close();
    await sg?.stop();
    data.cleanup();
    dataShort.cleanup();
  });

  it('the year 9999, or just over a year ahead, is refused naming the field and the limit; nothing is queued', async () => {
    for (const at of ['9999-12-31T23:59:59Z', new Date(Date.now() + 366 * 86_400_000).toISOString()]) {
      const r = await h.call('send_personalized_email', { ...campaign, scheduled_send_time: at });
      expect(r.structuredContent.success, at).toBe(false);
      expect(r.structuredContent.error).toMatchObject({ code: 'invalid_input', details: { field: 'scheduled_send_time' } });
      expect(r.structuredContent.error.message).toMatch(/at most 365 days ahead/);
      expect(r.structuredContent.error.message).toMatch(/CAMPAIGN_MAX_SCHEDULE_DAYS/);
    }
    expect((await h.call('list_campaigns', {})).structuredContent.campaigns ?? []).toHaveLength(0);
  });

  it('a time within the bound is accepted; the operator can set a shorter bound', async () => {
    const inTenDays = new Date(Date.now() + 10 * 86_400_000).toISOString();
    const ok = await h.call('send_personalized_email', { ...campaign, scheduled_send_time: new Date(Date.now() + 364 * 86_400_000).toISOString() });
    expect(ok.structuredContent).toMatchObject({ success: true, phase: 'preview' });
    expect((await h.call('send_personalized_email', { ...campaign, scheduled_send_time: inTenDays })).structuredContent.success).toBe(true);
    const refused = await short.call('send_personalized_email', { ...campaign, scheduled_send_time: inTenDays });
    expect(refused.structuredContent.error.message).toMatch(/at most 7 days ahead/);
  });
});
