import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startInMemory, tempDataDir, testEnv, type InMemoryHarness } from '../helpers/mcp.js';
import { startIntercomStandIn, type IntercomStandIn } from '../stand-ins/intercom.js';
import { startMixpanelStandIn, type MixpanelStandIn } from '../stand-ins/mixpanel.js';

const IC_TOKEN = 'intercom-events-token';

/** What happened to customers is recorded from every path that learns it: roster changes, imports, provider tools, the tool itself. */
describe('customer events', () => {
  const data = tempDataDir();
  let ic: IntercomStandIn;
  let mp: MixpanelStandIn;
  let h: InMemoryHarness;
  const events = async (args: Record<string, unknown>) => (await h.call('list_customer_events', args)).structuredContent.events as any[];

  beforeAll(async () => {
    ic = await startIntercomStandIn({ token: IC_TOKEN });
    mp = await startMixpanelStandIn();
    h = await startInMemory(
      testEnv({ INTERCOM_ACCESS_TOKEN: IC_TOKEN, INTERCOM_BASE_URL: ic.url, MIXPANEL_API_SECRET: 'mp-secret', MIXPANEL_PROJECT_TOKEN: 'mp-token', MIXPANEL_API_HOST: mp.url }, data.dir),
    );
    await h.call('register_client', { client_id: 'acme', name: 'Acme', tier: 'enterprise', health_score: 70, lifecycle_stage: 'adopting' });
    await h.call('upsert_contact', { client_id: 'acme', email: 'maria@acme.example', external_user_id: 'u-maria' });
  });
  afterAll(async () => {
    await h.close();
    await ic.stop();
    await mp.stop();
    data.cleanup();
  });

  it('roster changes record health, stage and renewal changes as {from, to}', async () => {
    await h.call('update_client_info', { client_id: 'acme', health_score: 40, lifecycle_stage: 'mature', renewal_date: '2027-03-01', mrr: 900 });
    const got = await events({ client_id: 'acme' });
    // Newest first; mrr is not a tracked change.
    expect(got.map((e) => [e.name, e.properties, e.source])).toEqual([
      ['renewal_date_changed', { from: null, to: '2027-03-01' }, 'roster'],
      ['lifecycle_stage_changed', { from: 'adopting', to: 'mature' }, 'roster'],
      ['health_score_changed', { from: 70, to: 40 }, 'roster'],
    ]);
    // No change, no event.
    await h.call('update_client_info', { client_id: 'acme', health_score: 40 });
    expect(await events({ client_id: 'acme', names: ['health_score_changed'] })).toHaveLength(1);
  });

  it('a CSV import records the changes of clients it updates (not of new ones)', async () => {
    const file = path.join(data.dir, 'update.csv');
    fs.writeFileSync(file, 'client_id,client_name,health_score,contact_email\nacme,Acme,20,maria@acme.example\nnewco,NewCo,10,ann@newco.example\n');
    expect((await h.call('import_clients', { file_path: file })).structuredContent).toMatchObject({ imported: true, clients_created: 1, clients_updated: 1 });
    expect((await events({ client_id: 'acme', names: ['health_score_changed'] }))[0]).toMatchObject({ properties: { from: 40, to: 20 }, source: 'import' });
    expect(await events({ client_id: 'newco' })).toEqual([]);
  });

  it('record_customer_event: timeline entry, dedup_key stores once, roster-change names refused', async () => {
    const r = await h.call('record_customer_event', { event: 'meeting_booked', contact_email: 'maria@acme.example', properties: { with: 'dana' }, dedup_key: 'cal-123' });
    expect(r.structuredContent).toMatchObject({ recorded: 1, duplicate: false });
    const again = await h.call('record_customer_event', { event: 'meeting_booked', contact_email: 'maria@acme.example', dedup_key: 'cal-123' });
    expect(again.structuredContent).toMatchObject({ recorded: 0, duplicate: true });
    expect(await events({ contact_email: 'maria@acme.example', names: ['meeting_booked'] })).toHaveLength(1);
    const t = await h.call('get_client_timeline', { client_id: 'acme', types: ['event'] });
    expect(t.structuredContent.entries[0]).toMatchObject({ summary: 'Event "meeting_booked" recorded', channel: 'roster' });
    const reserved = await h.call('record_customer_event', { event: 'health_score_changed', client_id: 'acme' });
    expect(reserved.structuredContent.error.message).toMatch(/recorded by the roster/);
    const unknown = await h.call('record_customer_event', { event: 'login', contact_email: 'nobody@acme.example' });
    expect(unknown.structuredContent.error).toMatchObject({ code: 'invalid_input', details: { field: 'contact_email' } });
  });

  it('intercom_track_event and mixpanel_* record the event for a roster contact (or the account)', async () => {
    ic.seedContact({ email: 'maria@acme.example', external_id: 'u-maria' });
    ic.seedContact({ email: 'stranger@else.example' });
    await h.call('intercom_track_event', { user_email: 'maria@acme.example', event_name: 'upgraded-plan', metadata: { plan: 'pro' } });
    await h.call('intercom_track_event', { user_email: 'stranger@else.example', event_name: 'upgraded-plan' });
    await h.call('mixpanel_track_event', { distinct_id: 'u-maria', event: 'report_exported', properties: { rows: 10 } });
    await h.call('mixpanel_track_usage_engagement', { distinct_id: 'anonymous-42', feature: 'dashboards', client_id: 'acme', duration_seconds: 30 });
    const got = await events({ client_id: 'acme', names: ['upgraded-plan', 'report_exported', 'feature_used'] });
    expect(got.map((e) => [e.name, e.contact_id === null ? 'account' : 'contact', e.source])).toEqual([
      ['feature_used', 'account', 'tool:mixpanel_track_usage_engagement'],
      ['report_exported', 'contact', 'tool:mixpanel_track_event'],
      ['upgraded-plan', 'contact', 'tool:intercom_track_event'],
    ]);
    expect(got.find((e) => e.name === 'upgraded-plan').properties).toEqual({ plan: 'pro' });
  });
});
