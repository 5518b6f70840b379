import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { openStore } from '../../src/store/index.js';
import { availableDialects, createTarget } from '../helpers/databases.js';
import { DIST_CLI, startInMemory, startStdio, tempDataDir, testEnv, type StdioHarness, standInEnv } from '../helpers/mcp.js';
import { exited, until } from '../helpers/until.js';
import { HttpStandIn } from '../stand-ins/http-stand-in.js';
import { startIntercomStandIn } from '../stand-ins/intercom.js';
import { startSendGridStandIn, type SendGridStandIn } from '../stand-ins/sendgrid.js';
import { TriggerEvaluator } from '../../src/engine/automations/scheduler.js';
import { activate } from '../helpers/automations.js';

const SG_KEY = 'SG.automation_kill_abcdef.0123456789abcdef';
const IC_TOKEN = 'intercom-automation-kill-token';
const SECRET = 'whsec_two_processes_secret';

function perAddress(sg: SendGridStandIn): Map<string, number> {
  const m = new Map<string, number>();
  for (const r of sg.matching(/^POST \/v3\/mail\/send/)) for (const p of (r.body as any).personalizations ?? []) for (const to of p.to ?? []) m.set(to.email, (m.get(to.email) ?? 0) + 1);
  return m;
}

function rosterCsv(dir: string, n: number, domain: string): string {
  const rows = ['client_id,client_name,tier,contact_email,contact_first_name,contact_role'];
  for (let i = 0; i < n; i++) rows.push(`client-${String(i).padStart(3, '0')},Client ${i},enterprise,person${i}@${domain},P${i},champion`);
  const file = path.join(dir, 'roster.csv');
  fs.writeFileSync(file, rows.join('\n'));
  return file;
}

const dialects = await availableDialects();

describe('automation durability', () => {
  it('SIGKILL in the middle of a 500-enrolment run: after a restart each step reached each subject exactly once', async () => {
    const CONCURRENCY = 8;
    const sg = await startSendGridStandIn({ apiKey: SG_KEY, latencyMs: 2 });
    const ic = await startIntercomStandIn({ token: IC_TOKEN, latencyMs: 2 });
    const data = tempDataDir();
    const env = testEnv(
      {
        ...standInEnv({ sendgrid: { url: sg.url, apiKey: SG_KEY }, intercom: { url: ic.url, token: IC_TOKEN } }),
        CAMPAIGN_DISPATCH_POLL_MS: '50',
        CAMPAIGN_DISPATCH_CONCURRENCY: String(CONCURRENCY),
        // One request per message, so every dispatch slot can be caught inside one (batched sends: campaigns.test.ts).
        CAMPAIGN_EMAIL_BATCHING: 'false',
        CAMPAIGN_LEASE_MS: '1000',
        AUTOMATION_TICK_MS: '50',
        AUTOMATION_LEASE_MS: '1000',
        AUTOMATION_STEP_CONCURRENCY: String(CONCURRENCY),
        HTTP_TIMEOUT_MS: '30000', // the kill comes before any timeout
        AUTOMATION_MAX_ACTIONS_PER_WORKFLOW_PER_HOUR: '100000', // 500 enrolments × 2 steps: far over the default budget
      },
      data.dir,
    );
    let second: StdioHarness | undefined;
    try {
      const seed = await startInMemory(env);
      const csv = rosterCsv(data.dir, 500, 'example.org');
      expect((await seed.call('import_clients', { file_path: csv })).structuredContent.contacts_created).toBe(500);
      const draft = await seed.call('automate_communications', {
        workflow_name: 'Bulk playbook',
        trigger_type: 'custom',
        is_active: false,
        actions: [
          { type: 'create_note', body: 'Playbook for {{ contact.email }}' },
          { type: 'send_email', subject: 'Hello {{ contact.first_name }}', body: 'Hi {{ contact.first_name }}' },
        ],
      });
      await seed.close();
      for (let i = 0; i < 500; i++) ic.seedContact({ email: `person${i}@example.org` });
      const id = draft.structuredContent.workflow_id;
      const clientIds = Array.from({ length: 500 }, (_, i) => `client-${String(i).padStart(3, '0')}`);

      const first = await startStdio(env);
      const preview = await first.call('run_workflow', { workflow_id: id, client_ids: clientIds });
      expect(preview.structuredContent.subjects.count).toBe(500);
      const run = await first.call('run_workflow', { workflow_id: id, client_ids: clientIds, confirmation_token: preview.structuredContent.confirmation_token });
      expect(run.structuredContent.enrolled).toBe(500);

      // Mid-run: every email slot, then every step slot, blocked inside a request the provider has received; then kill.
      const NOTE = /^POST \/contacts\/[^/]+\/notes$/;
      const MAIL = /^POST \/v3\/mail\/send/;
      const hung = (s: { matching(re: RegExp): Array<{ answer?: unknown }> }, re: RegExp) => s.matching(re).filter((r) => r.answer === 'hang').length;
      await until(() => ic.matching(NOTE).length, (n) => n >= 150);
      sg.inject({ match: MAIL, times: CONCURRENCY, hang: true });
      await until(() => hung(sg, MAIL), (n) => n === CONCURRENCY);
      ic.inject({ match: NOTE, times: CONCURRENCY, hang: true });
      await until(() => hung(ic, NOTE), (n) => n === CONCURRENCY);
      expect(ic.matching(NOTE).length).toBeLessThan(500);
      process.kill(first.pid!, 'SIGKILL');
      await first.close().catch(() => undefined);
      sg.clearFaults();
      ic.clearFaults();

      second = await startStdio(env);
      const s = await until(
        () => second!.call('get_workflow', { workflow_id: id }),
        (x) => x.structuredContent.enrollments?.completed === 500 && (x.structuredContent.messages.by_state.queued ?? 0) + (x.structuredContent.messages.by_state.sending ?? 0) === 0,
        { timeoutMs: 60_000 },
      );
      // At the stand-ins: one note per contact, one email per address — the ones caught mid-request included, none repeated.
      const notesPer = new Map<string, number>();
      for (const r of ic.matching(/^POST \/contacts\/[^/]+\/notes$/)) notesPer.set(r.path, (notesPer.get(r.path) ?? 0) + 1);
      expect(notesPer.size).toBe(500);
      expect([...notesPer.values()].every((n) => n === 1)).toBe(true);
      const mailsPer = perAddress(sg);
      expect(mailsPer.size).toBe(500);
      expect([...mailsPer.values()].every((n) => n === 1)).toBe(true);
      // What was caught mid-request is reported in doubt, not repeated.
      expect(s.structuredContent.steps[0]).toMatchObject({ type: 'create_note', done: 500 - CONCURRENCY, unknown: CONCURRENCY });
      expect(s.structuredContent.steps[1]).toMatchObject({ type: 'send_email', done: 500 });
      expect(s.structuredContent.messages.by_state).toMatchObject({ sent: 500 - CONCURRENCY, unknown: CONCURRENCY, total: 500 });
      expect(s.structuredContent.last_errors.some((e: any) => e.code === 'interrupted')).toBe(true);
    } finally {
      await second?.close();
      await sg.stop();
      await ic.stop();
      data.cleanup();
    }
  }, 120_000);

  it.each(dialects)('two processes on one %s database (an MCP server and a worker) never fire an occurrence twice', async (dialect) => {
    const target = await createTarget(dialect);
    const receiver = await new HttpStandIn({ name: 'receiver', latencyMs: 15 }, () => ({ status: 200, body: {} })).start();
    const env = testEnv({
      AUTOMATION_WEBHOOK_ALLOWED_HOSTS: new URL(receiver.url).origin,
        AUTOMATION_WEBHOOK_PRIVATE_ORIGINS: new URL(receiver.url).origin, // the stand-in is on 127.0.0.1
      AUTOMATION_WEBHOOK_SECRET: SECRET,
      AUTOMATION_MIN_SCHEDULE_INTERVAL_SECONDS: '1', // the schedules here run every two seconds
      AUTOMATION_TICK_MS: '50',
      AUTOMATION_LEASE_MS: '1500',
      AUTOMATION_STEP_CONCURRENCY: '4',
      ...target.env,
    });
    let server: StdioHarness | undefined;
    let worker: ChildProcess | undefined;
    try {
      server = await startStdio(env);
      worker = spawn(process.execPath, [DIST_CLI, 'worker'], { env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
      let workerErr = '';
      worker.stderr!.on('data', (d) => (workerErr += String(d)));
      await until(() => workerErr, (e) => e.includes('worker: running automations'));
      const csv = rosterCsv(fs.mkdtempSync(path.join(target.env.CS_MCP_DATA_DIR!, 'csv-')), 30, 'two.example');
      await server.call('import_clients', { file_path: csv });
      const activate = async (args: Record<string, unknown>) => {
        const p = await server!.call('automate_communications', args);
        const c = await server!.call('automate_communications', { ...args, confirmation_token: p.structuredContent.confirmation_token });
        expect(c.structuredContent.phase, JSON.stringify(c.structuredContent).slice(0, 500)).toBe('confirmed');
        return c.structuredContent.result_id as string;
      };
      const ticks = await activate({ workflow_name: 'Tick', trigger_type: 'time_based', trigger_conditions: { schedule: '*/2 * * * * *' }, actions: [{ type: 'trigger_webhook', url: `${receiver.url}/tick` }] });
      const events = await activate({
        workflow_name: 'On ping',
        trigger_type: 'event_based',
        trigger_conditions: { event: 'ping' },
        reentry: 'every_occurrence',
        actions: [{ type: 'trigger_webhook', url: `${receiver.url}/ping` }],
      });
      for (let i = 0; i < 30; i++) await server.call('record_customer_event', { event: 'ping', contact_email: `person${i}@two.example`, properties: { round: 1 } });
      for (let i = 0; i < 30; i++) await server.call('record_customer_event', { event: 'ping', contact_email: `person${i}@two.example`, properties: { round: 2 } });
      await until(() => receiver.matching(/^POST \/ping/).length, (n) => n >= 60, { timeoutMs: 30_000 });
      await until(() => new Set(receiver.matching(/^POST \/tick/).map((r) => (r.body as any).fired_at)).size, (n) => n >= 4, { timeoutMs: 30_000 });
      await server.call('pause_workflow', { workflow_id: ticks });
      await new Promise((r) => setTimeout(r, 1_500)); // anything still in flight arrives

      const byKey = (re: RegExp, key: (b: any) => string) => {
        const m = new Map<string, number>();
        for (const r of receiver.matching(re)) m.set(key(r.body), (m.get(key(r.body)) ?? 0) + 1);
        return m;
      };
      const pings = byKey(/^POST \/ping/, (b) => `${b.contact.email}|${b.event.properties.round}`);
      expect(pings.size).toBe(60);
      expect([...pings.values()].every((n) => n === 1)).toBe(true);
      const tickRuns = byKey(/^POST \/tick/, (b) => `${b.client.id}|${b.fired_at}`);
      expect([...tickRuns.values()].every((n) => n === 1)).toBe(true);
      // Each scheduled time fired once, for all 30 clients (the newest may have been cut short by the pause).
      const fired = [...new Set([...tickRuns.keys()].map((k) => k.split('|')[1]!))].sort();
      for (const at of fired.slice(0, -1)) expect([...tickRuns.keys()].filter((k) => k.endsWith(`|${at}`))).toHaveLength(30);
      const keys = receiver.requests.map((r) => String(r.headers['idempotency-key']));
      expect(new Set(keys).size).toBe(keys.length);
      const pinged = await server.call('get_workflow', { workflow_id: events });
      expect(pinged.structuredContent.enrollments).toMatchObject({ completed: 60, total: 60 });
      // Both processes ran steps (the check above would be trivial otherwise).
      const store = await openStore(loadConfig(env as NodeJS.ProcessEnv), pino({ level: 'silent' }));
      try {
        const owners = await store.db.selectFrom('workflow_step_runs').select('owner').distinct().execute();
        expect(owners.length).toBe(2);
      } finally {
        await store.close();
      }
      worker.kill('SIGTERM');
      expect(await exited(worker)).toMatchObject({ code: 0 });
    } finally {
      if (worker && worker.exitCode === null) worker.kill('SIGKILL');
      await server?.close();
      await receiver.stop();
      await target.cleanup();
    }
  }, 90_000);

  it.each(dialects)('on %s, a process taking over the trigger role re-reads events another one already enrolled (the shared cursor lags on purpose): each occurrence enrols once', async (dialect) => {
    const target = await createTarget(dialect);
    const h = await startInMemory(testEnv({ AUTOMATION_TICK_MS: '50', ...target.env }));
    try {
      await h.call('register_client', { client_id: 'once', name: 'Once', tier: 'standard' });
      for (let i = 0; i < 5; i++) await h.call('upsert_contact', { client_id: 'once', email: `p${i}@once.example` });
      const { workflowId } = await activate(h, {
        workflow_name: 'On ping once',
        trigger_type: 'event_based',
        trigger_conditions: { event: 'ping' },
        reentry: 'every_occurrence',
        actions: [{ type: 'create_task', title: 'Follow up' }],
      });
      for (let i = 0; i < 5; i++) await h.call('record_customer_event', { event: 'ping', contact_email: `p${i}@once.example` });
      const enrolments = async () => (await h.services.store.db.selectFrom('workflow_enrollments').select('occurrence_key').where('workflow_id', '=', workflowId).execute()).length;
      await until(enrolments, (n) => n === 5, { message: 'five enrolments' });
      // Another process takes the role over from the shared cursor (here rewound to before the events, as
      // after a crash between enrolling and moving it): it evaluates the same five events again.
      await h.services.store.db.updateTable('automation_state').set({ position: 0 }).where('name', '=', 'triggers').execute();
      const other = new TriggerEvaluator({ config: h.services.config, log: h.services.log, store: h.services.store, repo: h.services.automations.repo });
      await other.run('another-process', await h.services.automations.repo.liveWorkflows(), Date.now());
      expect(await enrolments()).toBe(5);
    } finally {
      await h.close();
      await target.cleanup();
    }
  }, 60_000);
});
