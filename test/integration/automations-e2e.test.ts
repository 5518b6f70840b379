import path from 'node:path';
import SQLite from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { startStdio, tempDataDir, testEnv, type StdioHarness, standInEnv } from '../helpers/mcp.js';
import { startIntercomStandIn } from '../stand-ins/intercom.js';
import { startSendGridStandIn } from '../stand-ins/sendgrid.js';
import { until } from '../helpers/until.js';

const SG_KEY = 'SG.automation_e2e_abcdef.0123456789abcdef';
const IC_TOKEN = 'intercom-automation-e2e-token';
const DAY = 86_400_000;

/**
 * The issue's own example, end to end over stdio against the provider stand-ins: "when an enterprise
 * client's health drops below 50: in-app message to its champion, task for the owner, wait 3 days,
 * email unless meeting_booked was recorded".
 */
describe('health-drop playbook over stdio', () => {
  it('fires once per drop as re-entry allows, stops at the goal, and its wait survives a restart', async () => {
    const sg = await startSendGridStandIn({ apiKey: SG_KEY });
    const ic = await startIntercomStandIn({ token: IC_TOKEN });
    const data = tempDataDir();
    const env = testEnv(
      {
        ...standInEnv({ sendgrid: { url: sg.url, apiKey: SG_KEY }, intercom: { url: ic.url, token: IC_TOKEN } }),
        CAMPAIGN_DISPATCH_POLL_MS: '50',
        AUTOMATION_TICK_MS: '50',
        AUTOMATION_LEASE_MS: '2000',
        // The test moves a three-day wait forward; the in-app message of the same "day" must not hold the email back.
        AUTOMATION_MAX_MESSAGES_PER_CONTACT_PER_DAY: '5',
      },
      data.dir,
    );
    let h: StdioHarness | undefined;
    try {
      h = await startStdio(env);
      const call = (name: string, args: Record<string, unknown> = {}) => h!.call(name, args);
      const reg = (client_id: string, name: string, tier: string, health_score: number) => call('register_client', { client_id, name, tier, health_score, owner_email: 'dana@ourco.test' });
      await reg('acme', 'Acme Corp', 'enterprise', 70);
      await reg('globex', 'Globex', 'enterprise', 80);
      await reg('initech', 'Initech', 'standard', 70);
      for (const [client_id, email, first_name, role] of [
        ['acme', 'maria@acme.example', 'María', 'champion'],
        ['acme', 'tom@acme.example', 'Tom', 'decision_maker'],
        ['globex', 'hank@globex.example', 'Hank', 'champion'],
        ['initech', 'peter@initech.example', 'Peter', 'champion'],
      ]) {
        await call('upsert_contact', { client_id, email, first_name, role });
        ic.seedContact({ email: email! });
      }
      const intercomId = (email: string) => [...ic.contacts.values()].find((c) => c.email === email)!.id;
      const inAppTo = (email: string) => ic.messages.filter((m) => m.message_type === 'inapp' && m.to.id === intercomId(email));

      const playbook = {
        workflow_name: 'Health drop rescue',
        trigger_type: 'health_score',
        trigger_conditions: { threshold: 50, direction: 'below' },
        audience: { tier: 'enterprise', contact_roles: ['champion'] },
        actions: [
          { type: 'send_in_app_notification', body: 'Hi {{ contact.first_name }}, {{ client.name }} looks stuck (health {{ client.health_score }}). Can we help?' },
          { type: 'create_task', title: 'Call {{ client.name }}: health {{ client.health_score }}', due_in_days: 1 },
          { type: 'wait', days: 3 },
          { type: 'send_email', subject: '{{ client.name }}: a plan to get back on track', body: 'Hi {{ contact.first_name }}, here is a plan.' },
        ],
        exit_when: [{ event: 'meeting_booked' }],
      };
      const preview = await call('automate_communications', playbook);
      expect(preview.structuredContent).toMatchObject({
        phase: 'preview',
        trigger: "when a enterprise client's health score crosses below 50",
        entering_now: { applies: true, count: 0 },
        definition: { reentry: { mode: 'never' }, enroll_existing: false },
      });
      expect(preview.structuredContent.samples.map((s: any) => s.text ?? s.summary)).toEqual([
        'Hi María, Acme Corp looks stuck (health 70). Can we help?',
        '',
        'wait 3 day(s)',
        'Hi María, here is a plan.',
      ]);
      const confirmed = await call('automate_communications', { ...playbook, confirmation_token: preview.structuredContent.confirmation_token });
      expect(confirmed.structuredContent).toMatchObject({ phase: 'confirmed', status: 'active', enrolled_now: 0 });
      const id = confirmed.structuredContent.result_id;
      // A second workflow on the same trigger that lets every crossing in, to show what re-entry changes.
      const everyDrop = { workflow_name: 'Every drop note', trigger_type: 'health_score', trigger_conditions: { threshold: 50 }, reentry: 'every_occurrence', audience: { tier: 'enterprise', contact_roles: ['champion'] }, actions: [{ type: 'create_note', body: 'Health dropped to {{ client.health_score }}' }] };
      const p2 = await call('automate_communications', everyDrop);
      const every = (await call('automate_communications', { ...everyDrop, confirmation_token: p2.structuredContent.confirmation_token })).structuredContent.result_id;
      const enrolments = async (wf: string) => (await call('get_workflow', { workflow_id: wf })).structuredContent.enrollments;

      // A drop fires once: in-app to the champion only, a task for the owner (an Intercom note marked as a task, and a timeline task).
      await call('update_client_info', { client_id: 'acme', health_score: 45 });
      await until(() => inAppTo('maria@acme.example').length, (n) => n === 1);
      await until(() => ic.notes.filter((n) => n.body.startsWith('[Task] Call Acme Corp: health 45')).length, (n) => n === 1);
      expect(inAppTo('tom@acme.example')).toHaveLength(0);
      const timeline = await call('get_client_timeline', { client_id: 'acme', types: ['task'] });
      expect(timeline.structuredContent.entries[0]).toMatchObject({ channel: 'automation', outcome: 'success' });
      expect(timeline.structuredContent.entries[0].summary).toMatch(/^Task for dana@ourco.test: Call Acme Corp: health 45 \(due /);
      await until(() => ic.events.filter((e) => e.event_name === 'automation_triggered').length, (n) => n === 1);
      expect(ic.events.find((e) => e.event_name === 'automation_triggered')).toMatchObject({
        metadata: { workflow_id: id, workflow_name: 'Health drop rescue', trigger_type: 'health_score', action_type: 'send_in_app_notification' },
      });

      // A further drop is not a crossing; recovery then a new drop is, but re-entry "never" keeps it out (the other workflow lets it in).
      await call('update_client_info', { client_id: 'acme', health_score: 30 });
      await call('update_client_info', { client_id: 'acme', health_score: 70 });
      await call('update_client_info', { client_id: 'acme', health_score: 40 });
      await until(() => enrolments(every), (e) => e.total === 2);
      // A standard-tier client is outside the audience.
      await call('update_client_info', { client_id: 'initech', health_score: 20 });
      await new Promise((r) => setTimeout(r, 500));
      expect(await enrolments(id)).toMatchObject({ total: 1, active: 1 });
      expect(inAppTo('maria@acme.example')).toHaveLength(1);
      expect(inAppTo('peter@initech.example')).toHaveLength(0);

      // Globex drops, its champion books a meeting during the wait: the goal.
      await call('update_client_info', { client_id: 'globex', health_score: 45 });
      await until(() => inAppTo('hank@globex.example').length, (n) => n === 1);
      await until(() => enrolments(id), (e) => e.total === 2);
      const booked = await call('record_customer_event', { event: 'meeting_booked', contact_email: 'hank@globex.example' });
      expect(booked.structuredContent.recorded).toBe(1);
      await until(() => enrolments(id), (e) => e.exited === 1);

      // The wait survives a restart.
      await h.close();
      h = await startStdio(env);
      const db = new SQLite(path.join(data.dir, 'customer-success.db'));
      try {
        const waiting = db.prepare("select enrolled_at, next_run_at, step_index from workflow_enrollments where workflow_id = ? and state = 'active'").all(id) as Array<{ enrolled_at: string; next_run_at: string; step_index: number }>;
        expect(waiting).toHaveLength(1);
        expect(waiting[0]!.step_index).toBe(3);
        expect(Date.parse(waiting[0]!.next_run_at) - Date.parse(waiting[0]!.enrolled_at)).toBeGreaterThan(3 * DAY - 60_000);
        const s = await call('get_workflow', { workflow_id: id });
        expect(s.structuredContent.steps[3]).toMatchObject({ type: 'send_email', waiting_here: 1 });
        expect(sg.requests).toHaveLength(0);
        // Three days pass (the test moves the due time; the restarted server does the rest).
        db.prepare("update workflow_enrollments set next_run_at = ? where workflow_id = ? and state = 'active'").run(new Date().toISOString(), id);
      } finally {
        db.close();
      }
      await until(() => sg.delivered.length, (n) => n === 1);
      await new Promise((r) => setTimeout(r, 300));
      expect(sg.delivered.map((d) => [d.to, d.subject])).toEqual([['maria@acme.example', 'Acme Corp: a plan to get back on track']]);
      const done = await until(() => call('get_workflow', { workflow_id: id }), (x) => x.structuredContent.enrollments.completed === 1);
      expect(done.structuredContent).toMatchObject({
        enrollments: { total: 2, completed: 1, exited: 1, active: 0 },
        goals_reached: { total: 1, by_goal: { 'meeting_booked recorded': 1 } },
        messages: { by_state: { sent: 3, total: 3 } },
      });
      expect(ic.violations).toEqual([]);
      expect(sg.violations).toEqual([]);
    } finally {
      await h?.close();
      await sg.stop();
      await ic.stop();
      data.cleanup();
    }
  }, 60_000);
});
