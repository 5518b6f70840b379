import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { person } from '../helpers/approval.js';
import { activate } from '../helpers/automations.js';
import { startInMemory, standInEnv, tempDataDir, testEnv, type InMemoryHarness } from '../helpers/mcp.js';
import { startIntercomStandIn, type IntercomStandIn } from '../stand-ins/intercom.js';
import { startSendGridStandIn, type SendGridStandIn } from '../stand-ins/sendgrid.js';

/**
 * Issue 16, item 4 (the preview's part): the approver's preview said "0 messages a day, no warnings"
 * while one event caused 1,110 Intercom calls. The preview and the approval now state the worst case of
 * one firing of the trigger — provider calls and messages — across the active workflows it chains into.
 */

const SG_KEY = 'SG.worstcase_abcdefghij.klmnopqrstuvwxyz0123';
const IC_TOKEN = 'intercom-worst-case-token';

describe('the worst case per firing, across the workflows it chains into (issue 16, item 4)', () => {
  const dirs: Array<ReturnType<typeof tempDataDir>> = [];
  let sg: SendGridStandIn;
  let ic: IntercomStandIn;
  const open: InMemoryHarness[] = [];
  const start = async (extra: Record<string, string>, p: ReturnType<typeof person>) => {
    const data = tempDataDir(); // a database of its own: no workflow of another test is active in it
    dirs.push(data);
    const env = testEnv({ ...standInEnv({ sendgrid: { url: sg.url, apiKey: SG_KEY }, intercom: { url: ic.url, token: IC_TOKEN } }), AUTOMATION_TICK_MS: '50', ...extra }, data.dir);
    const h = await startInMemory(env, {}, { onElicit: p.onElicit });
    open.push(h);
    return h;
  };

  beforeAll(async () => {
    sg = await startSendGridStandIn({ apiKey: SG_KEY });
    ic = await startIntercomStandIn({ token: IC_TOKEN });
  });
  afterEach(async () => {
    while (open.length) await open.pop()!.close();
  });
  afterAll(async () => {
    await Promise.all([sg.stop(), ic.stop()]);
    for (const d of dirs) d.cleanup();
  });

  /** A client with three contacts: an event about the client reaches all three. */
  async function roster(h: InMemoryHarness, id: string) {
    await h.call('register_client', { client_id: id, name: `Client ${id}`, tier: 'enterprise' });
    for (const n of ['a', 'b', 'c']) await h.call('upsert_contact', { client_id: id, email: `${n}@${id}.test`, first_name: n.toUpperCase() });
  }

  const A = {
    workflow_name: 'On x: note, email, track y',
    trigger_type: 'event_based',
    trigger_conditions: { event: 'x' },
    reentry: 'every_occurrence',
    actions: [
      { type: 'create_note', body: 'x happened for {{ client.name }}' },
      { type: 'send_email', subject: 'About x', body: 'Hi {{ contact.first_name }}, x happened.' },
      { type: 'track_event', event_name: 'y' },
    ],
  };
  const B = {
    workflow_name: 'On y: tag and email',
    trigger_type: 'event_based',
    trigger_conditions: { event: 'y' },
    reentry: 'every_occurrence',
    actions: [
      { type: 'add_tag', tag: 'saw-y' },
      { type: 'send_email', subject: 'About y', body: 'Hi {{ contact.first_name }}, y happened.' },
    ],
  };
  // Fired by the provider events about the emails A and B send (a delivered email continues their chain).
  const C = {
    workflow_name: 'On delivered: note',
    trigger_type: 'event_based',
    trigger_conditions: { event: 'email_delivered' },
    reentry: 'every_occurrence',
    actions: [{ type: 'create_note', body: 'delivered' }],
  };

  it('previewing A states its own steps, B (through track_event "y") and C (through the delivered events of A\'s and B\'s emails); the approval says the same', async () => {
    const p = person();
    const h = await start({ AUTOMATION_MAX_ACTIONS_PER_WORKFLOW_PER_HOUR: '12' }, p);
    await roster(h, 'wc1');
    const b = await activate(h, B);
    const c = await activate(h, C);

    const preview = await h.call('automate_communications', A);
    expect(preview.structuredContent, JSON.stringify(preview.structuredContent).slice(0, 2000)).toMatchObject({ success: true, phase: 'preview' });
    const wc = preview.structuredContent.worst_case;
    // A: a note (1 call), an email to each of the client's 3 contacts (3 calls, 3 messages), "y" tracked in Intercom (1 call).
    expect(wc.per_firing).toEqual({ contacts_per_firing: 3, provider_calls: 5, messages: 3, actions: 5 });
    const byId = Object.fromEntries(wc.chained.map((x: { workflow_id: string }) => [x.workflow_id, x]));
    // B: once, for the contact "y" was tracked on: a tag and an email.
    expect(byId[b.workflowId]).toMatchObject({ name: B.workflow_name, via: ['y'], depth: 1, firings: 1, provider_calls: 2, messages: 1, actions: 2 });
    // C: once per email of A (3, depth 1) and of B (1, depth 2): a note each.
    expect(byId[c.workflowId]).toMatchObject({ via: ['email_delivered'], depth: 1, firings: 4, provider_calls: 4, messages: 0 });
    expect(wc.chained).toHaveLength(2);
    expect(wc.total_per_firing).toEqual({ provider_calls: 11, messages: 4, actions: 11 });
    expect(wc.firings_per_hour_within_budget).toBe(2); // 12 actions an hour ÷ 5 per firing
    expect(wc.truncated).toBe(false);
    expect(wc.warnings).toEqual([]);

    const confirmed = await h.call('automate_communications', { ...A, confirmation_token: preview.structuredContent.confirmation_token });
    expect(confirmed.structuredContent).toMatchObject({ success: true, phase: 'confirmed' });
    const msg = p.asked.at(-1)!.message;
    expect(msg).toMatch(/Worst case per firing of the trigger: 11 provider calls and 4 messages in all \(this workflow: 5 calls, 3 messages for up to 3 contact\(s\); it can set off 2 active workflow\(s\)/);
    expect(msg).toContain(`${b.workflowId} (via y: 1 firing(s), 2 provider calls, 1 messages)`);
    expect(msg).toContain(`${c.workflowId} (via email_delivered: 4 firing(s), 4 provider calls, 0 messages)`);
    expect(msg).toContain('its action budget allows 2 firing(s) an hour');
  }, 60_000);

  it('warns when one firing exceeds the per-workflow hourly budget, and the chain stops at AUTOMATION_MAX_CHAIN_DEPTH', async () => {
    const p = person();
    const h = await start({ AUTOMATION_MAX_ACTIONS_PER_WORKFLOW_PER_HOUR: '4', AUTOMATION_MAX_CHAIN_DEPTH: '2' }, p);
    await roster(h, 'wc2');
    const b = await activate(h, B);
    const c = await activate(h, C);
    const preview = await h.call('automate_communications', A);
    const wc = preview.structuredContent.worst_case;
    const byId = Object.fromEntries(wc.chained.map((x: { workflow_id: string }) => [x.workflow_id, x]));
    expect(byId[b.workflowId]).toMatchObject({ firings: 1, provider_calls: 2, messages: 1 });
    // Depth 2: only A's own emails fire C; B's (one link deeper) do not.
    expect(byId[c.workflowId]).toMatchObject({ firings: 3, provider_calls: 3 });
    expect(wc.total_per_firing).toEqual({ provider_calls: 10, messages: 4, actions: 10 });
    expect(wc.firings_per_hour_within_budget).toBe(0);
    expect(wc.warnings).toEqual([expect.stringMatching(/takes up to 5 actions; AUTOMATION_MAX_ACTIONS_PER_WORKFLOW_PER_HOUR allows 4: it would pause itself \(runaway\)/)]);
    expect(preview.structuredContent.warnings).toEqual(expect.arrayContaining(wc.warnings));
    await h.call('automate_communications', { ...A, confirmation_token: preview.structuredContent.confirmation_token });
    const msg = p.asked.at(-1)!.message;
    expect(msg).toContain('Worst case per firing of the trigger: 10 provider calls and 4 messages in all');
    expect(msg).toMatch(/^- One firing of this workflow takes up to 5 actions; AUTOMATION_MAX_ACTIONS_PER_WORKFLOW_PER_HOUR allows 4/m);
  }, 60_000);
});
