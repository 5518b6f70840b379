import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startInMemory, standInEnv, tempDataDir, testEnv, type InMemoryHarness } from '../helpers/mcp.js';
import { startIntercomStandIn, type IntercomStandIn } from '../stand-ins/intercom.js';

const IC_TOKEN = 'intercom-lookup-token';
const AUDIENCE = 120;

/**
 * A first Intercom campaign to an audience knows emails, not Intercom ids: the contacts are looked up
 * with `email IN [...]` searches, 50 addresses a search, once per campaign whatever the number of
 * channels, so the campaign costs about one request per message instead of two. The stand-in's search
 * is loose (it also returns contacts whose email merely contains the one searched, and leads beside
 * users), so only an exact match may be used.
 */
describe('Intercom contacts for a first campaign are looked up a page at a time', () => {
  const data = tempDataDir();
  let ic: IntercomStandIn;
  let h: InMemoryHarness;
  const ids = new Map<string, string>();

  beforeAll(async () => {
    ic = await startIntercomStandIn({ token: IC_TOKEN, looseEmailSearch: true });
    h = await startInMemory(
      testEnv({ ...standInEnv({ intercom: { url: ic.url, token: IC_TOKEN } }), CAMPAIGN_DISPATCH_POLL_MS: '20', CAMPAIGN_LEASE_MS: '5000', HTTP_TIMEOUT_MS: '20000' }, data.dir),
    );
    await h.call('register_client', { client_id: 'umbrella', name: 'Umbrella', tier: 'enterprise', health_score: 40 });
    for (let i = 0; i < AUDIENCE; i++) {
      const email = `ann${i}@umbrella.example`;
      ids.set(email, ic.seedContact({ email }).id);
      await h.call('upsert_contact', { client_id: 'umbrella', email, first_name: `Ann${i}` });
    }
    // Irregularities a real workspace has: a lead sharing a user's email, and another user whose email
    // contains a recipient's (the loose search returns both for "ann1@…": jo-ann1@…).
    ic.seedContact({ email: 'ann0@umbrella.example', role: 'lead' });
    ic.seedContact({ email: 'jo-ann1@umbrella.example' });
    // Ambiguous (two users), and not in Intercom at all: each fails alone, with its reason.
    ic.seedContact({ email: 'twins@umbrella.example' });
    ic.seedContact({ email: 'twins@umbrella.example' });
    await h.call('upsert_contact', { client_id: 'umbrella', email: 'twins@umbrella.example', first_name: 'Twin' });
    await h.call('upsert_contact', { client_id: 'umbrella', email: 'nobody@umbrella.example', first_name: 'Nobody' });
  });
  afterAll(async () => {
    await h.close();
    await ic.stop();
    data.cleanup();
  });

  it('sends in-app and email to every recipient with one search per 50 addresses, each to the exact contact', async () => {
    const args = {
      campaign_name: 'Umbrella check-in',
      template_type: 'health_check',
      subject_line: 'Checking in',
      body_text: 'Hi {{ contact.first_name }}, how is it going?',
      target_client_ids: ['umbrella'],
      channels: ['intercom_inapp', 'intercom_email'],
    };
    const preview = await h.call('send_personalized_email', args);
    expect(preview.structuredContent.audience?.recipients, JSON.stringify(preview.structuredContent).slice(0, 600)).toBe(AUDIENCE + 2);
    const searchesBefore = ic.matching(/^POST \/contacts\/search/).length;
    const r = await h.call('send_personalized_email', { ...args, confirmation_token: preview.structuredContent.confirmation_token });
    expect(r.structuredContent.success).toBe(true);
    const status = await h.call('get_campaign_status', { campaign_id: r.structuredContent.campaign_id, wait_seconds: 60 });
    const totals = status.structuredContent.campaign.totals;
    expect(totals, JSON.stringify(status.structuredContent.campaign).slice(0, 3000)).toMatchObject({ sent: AUDIENCE * 2, failed: 4, total: (AUDIENCE + 2) * 2 });

    // About one search per 50 addresses for both channels together (one per channel per recipient was
    // 244): ceil(122 / 50) = 3, plus at most one partly filled search per claim, as the dispatcher leases
    // a few seconds of work at a time.
    const searches = ic.matching(/^POST \/contacts\/search/).length - searchesBefore;
    expect(searches).toBeLessThanOrEqual(6);
    const messages = ic.matching(/^POST \/messages/).length;
    expect(messages).toBe(AUDIENCE * 2);
    expect((searches + messages) / messages).toBeLessThan(1.03);

    // Every message went to the user whose email is exactly the recipient's: never the lead beside it,
    // never jo-ann1, and each recipient once per channel.
    const byContact = new Map<string, string[]>();
    for (const m of ic.messages) byContact.set(m.to.id, [...(byContact.get(m.to.id) ?? []), m.message_type]);
    for (const [email, id] of ids) expect(byContact.get(id)?.sort(), email).toEqual(['email', 'inapp']);
    expect(byContact.size).toBe(AUDIENCE);

    const problems = status.structuredContent.campaign.problems.map((p: { to?: string; email?: string; code?: string; message?: string }) => JSON.stringify(p)).join('\n');
    expect(problems).toMatch(/twins@umbrella\.example[\s\S]*conflict|conflict[\s\S]*twins@umbrella\.example/);
    expect(problems).toMatch(/nobody@umbrella\.example/);

    // The ids found were remembered on the roster with the rows' final state (the exact user's id)...
    const overview = await h.call('get_client_overview', { client_id: 'umbrella' });
    const roster = overview.structuredContent.contacts as Array<{ email: string; intercom_contact_id: string | null }>;
    for (const [email, id] of ids) expect(roster.find((c) => c.email === email)?.intercom_contact_id, email).toBe(id);
    // ...so the next campaign searches only for the two addresses still unresolved (one search, or two if
    // its claims split them), not for all 122.
    const again = { ...args, campaign_name: 'Umbrella check-in, again' };
    const p2 = await h.call('send_personalized_email', again);
    const searchesBeforeAgain = ic.matching(/^POST \/contacts\/search/).length;
    const r2 = await h.call('send_personalized_email', { ...again, confirmation_token: p2.structuredContent.confirmation_token });
    const s2 = await h.call('get_campaign_status', { campaign_id: r2.structuredContent.campaign_id, wait_seconds: 60 });
    expect(s2.structuredContent.campaign.totals).toMatchObject({ sent: AUDIENCE * 2 });
    expect(ic.matching(/^POST \/contacts\/search/).length - searchesBeforeAgain).toBeLessThanOrEqual(2);
  }, 90_000);

  it('a direct send takes the exact match from a loose search, not a conflict between ann1 and jo-ann1', async () => {
    const r = await h.call('intercom_send_message', { user_email: ' Ann1@Umbrella.example', message_type: 'inapp', body: 'Hello again' });
    expect(r.structuredContent).toMatchObject({ success: true, recipient: { contact_id: ids.get('ann1@umbrella.example') } });
  });
});
