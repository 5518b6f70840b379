import fs from 'node:fs';
import path from 'node:path';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { ElicitResult } from '@modelcontextprotocol/sdk/types.js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { configSecrets, loadConfig } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { registerSecrets } from '../../src/secrets.js';
import { createServices } from '../../src/services.js';
import { serveHttp } from '../../src/transports/http.js';
import { availableDialects, createTarget, type DatabaseTarget } from '../helpers/databases.js';
import { startInMemory, startStdio, tempDataDir, testClient, testEnv, type InMemoryHarness, standInEnv } from '../helpers/mcp.js';
import { person } from '../helpers/approval.js';
import { until } from '../helpers/until.js';
import { startIntercomStandIn, type IntercomStandIn } from '../stand-ins/intercom.js';
import { startSendGridStandIn, type SendGridStandIn } from '../stand-ins/sendgrid.js';

const SG_KEY = 'SG.safetykey_abcdefghij.klmnopqrstuvwxyz0123';
const IC_TOKEN = 'intercom-safety-token';


const sendsTo = (sg: SendGridStandIn, email: string) => sg.delivered.filter((d) => d.to === email).length;

describe('outbound safety (in memory)', () => {
  const data = tempDataDir();
  let sg: SendGridStandIn;
  let ic: IntercomStandIn;
  const env = (extra: Record<string, string> = {}) =>
    testEnv(
      {
        ...standInEnv({ sendgrid: { url: sg.url, apiKey: SG_KEY }, intercom: { url: ic.url, token: IC_TOKEN } }),
        INTERCOM_ADMIN_ID: '991',
        CAMPAIGN_DISPATCH_POLL_MS: '50',
        ...extra,
      },
      data.dir,
    );
  const open: InMemoryHarness[] = [];
  const start = async (extra: Record<string, string> = {}, p?: ReturnType<typeof person>, name?: string) => {
    const h = await startInMemory(env(extra), {}, { onElicit: p?.onElicit, name });
    open.push(h);
    return h;
  };

  beforeAll(async () => {
    sg = await startSendGridStandIn({ apiKey: SG_KEY });
    ic = await startIntercomStandIn({ token: IC_TOKEN });
    const h = await start();
    await h.call('register_client', { client_id: 'acme', name: 'Acme Corp', tier: 'enterprise' });
    await h.call('upsert_contact', { client_id: 'acme', email: 'ann@acme.test', first_name: 'Ann', external_user_id: 'u-ann' });
    await h.call('upsert_contact', { client_id: 'acme', email: 'gone@acme.test', first_name: 'Gone', external_user_id: 'u-gone' });
    await h.call('set_contact_subscription', { email: 'gone@acme.test', subscribed: false, reason: 'asked to stop', source: 'customer_email' });
    ic.seedContact({ email: 'gone@acme.test', name: 'Gone Person', external_id: 'u-gone' });
    ic.seedContact({ email: 'ann@acme.test', name: 'Ann Smith', external_id: 'u-ann' });
  });
  afterEach(async () => {
    while (open.length > 1) await open.pop()!.close();
  });
  afterAll(async () => {
    while (open.length) await open.pop()!.close();
    await sg.stop();
    await ic.stop();
    data.cleanup();
  });

  describe('human approval through elicitation', () => {
    it('asks the person before a direct send, showing what, to whom, how many and a sample; accept sends', async () => {
      const p = person();
      const h = await start({}, p);
      const before = sendsTo(sg, 'ann@acme.test');
      const r = await h.call('sendgrid_send_email', { to: 'ann@acme.test', subject: 'Your renewal', text: 'Hi Ann, your renewal is due on 1 December.' });
      expect(r.structuredContent, JSON.stringify(r.structuredContent)).toMatchObject({ success: true, accepted: 1 });
      expect(sendsTo(sg, 'ann@acme.test') - before).toBe(1);
      expect(p.asked).toHaveLength(1);
      expect(p.asked[0]!.message).toMatch(/^1\. Action: send a message now$/m);
      expect(p.asked[0]!.message).toMatch(/^2\. Recipients: 1; messages: 1$/m);
      expect(p.asked[0]!.message).toMatch(/^Subject: “Your renewal”$/m);
      expect(p.asked[0]!.message).toMatch(/ann@acme\.test/);
      expect(p.asked[0]!.message).toMatch(/Hi Ann, your renewal is due/);
      expect((p.asked[0] as { requestedSchema: { required: string[] } }).requestedSchema.required).toEqual(['decision']);
    });

    it.each([
      ['decline', { action: 'decline' } as ElicitResult, /declined/],
      ['cancel', { action: 'cancel' } as ElicitResult, /cancelled/],
      ['accept but choose not to send', { action: 'accept', content: { decision: 'do_not_send' } } as ElicitResult, /answered "No, send nothing" to the approval request/],
    ])('%s: nothing is sent, and the tool says so', async (_label, answer, said) => {
      const p = person();
      p.answers(answer);
      const h = await start({}, p);
      const before = sg.requests.length;
      const r = await h.call('sendgrid_send_email', { to: 'ann@acme.test', subject: `Declined ${_label}`, text: 'x' });
      expect(r.isError).toBe(true);
      expect(r.structuredContent.error).toMatchObject({ code: 'declined', retryable: false });
      expect(r.structuredContent.error.message).toMatch(said);
      expect(r.structuredContent.error.message).toMatch(/nothing was sent/i);
      expect(sg.requests.length).toBe(before);
    });

    it('CS_MCP_APPROVAL=elicitation: a client without elicitation cannot send, and is told how to fix it', async () => {
      const h = await start({ CS_MCP_APPROVAL: 'elicitation' });
      const before = sg.requests.length;
      const r = await h.call('sendgrid_send_email', { to: 'ann@acme.test', subject: 'No person here', text: 'x' });
      expect(r.structuredContent.error).toMatchObject({ code: 'forbidden', details: { policy: 'approval_required' } });
      expect(r.structuredContent.error.message).toMatch(/does not support elicitation.*CS_MCP_APPROVAL/);
      expect(sg.requests.length).toBe(before);
    });

    it('auto with a client without elicitation, and token: a direct send within the limits goes ahead without asking', async () => {
      for (const extra of [{}, { CS_MCP_APPROVAL: 'token' }] as Array<Record<string, string>>) {
        const p = person();
        const h = extra.CS_MCP_APPROVAL ? await start(extra, p) : await start(extra);
        const r = await h.call('sendgrid_send_email', { to: 'ann@acme.test', subject: `No ask ${JSON.stringify(extra)}`, text: 'x' });
        expect(r.structuredContent.success).toBe(true);
        expect(p.asked).toHaveLength(0);
        await h.close();
        open.pop();
      }
    });

    it('CS_MCP_APPROVAL_THRESHOLD: only sends to at least that many recipients ask', async () => {
      const p = person();
      const h = await start({ CS_MCP_APPROVAL_THRESHOLD: '3' }, p);
      await h.call('sendgrid_send_email', { to: ['ann@acme.test', 'bo@else.test'], subject: 'Two', text: 'x' });
      expect(p.asked).toHaveLength(0);
      await h.call('sendgrid_send_email', { to: ['ann@acme.test', 'bo@else.test', 'cy@else.test'], subject: 'Three', text: 'x' });
      expect(p.asked).toHaveLength(1);
    });

    it('confirming a campaign asks the person before anything is queued; a decline queues nothing and the token stays usable', async () => {
      const p = person();
      const h = await start({}, p);
      const args = { campaign_name: 'Approval check', template_type: 'health_check', subject_line: 'Hi {{ contact.first_name }}', body_text: 'Checking in, {{ contact.first_name }}.', target_client_ids: ['acme'] };
      const preview = await h.call('send_personalized_email', args);
      expect(p.asked).toHaveLength(0); // a preview sends nothing and asks nothing
      p.answers({ action: 'decline' });
      const declined = await h.call('send_personalized_email', { ...args, confirmation_token: preview.structuredContent.confirmation_token });
      expect(declined.structuredContent.error).toMatchObject({ code: 'declined' });
      expect(p.asked[0]!.message).toMatch(/^1\. Action: send a campaign$/m);
      expect(p.asked[0]!.message).toMatch(/^- Campaign name: “Approval check”$/m);
      expect(p.asked[0]!.message).toMatch(/^2\. Recipients: 1; messages: 1$/m);
      expect(p.asked[0]!.message).toMatch(/Checking in, Ann\./);
      expect(await h.services.store.db.selectFrom('outbox').select('outbox_id').where('recipient_email', '=', 'ann@acme.test').where('source_kind', '=', 'campaign').execute()).toHaveLength(0);
      p.answers({ action: 'accept', content: { decision: 'send' } });
      const ok = await h.call('send_personalized_email', { ...args, confirmation_token: preview.structuredContent.confirmation_token });
      expect(ok.structuredContent).toMatchObject({ success: true, phase: 'confirmed', queued: 1 });
    });
  });

  describe('consent on every path', () => {
    it('every direct send tool refuses an unsubscribed roster contact, by email, user id or Intercom id, naming when and why', async () => {
      const h = await start();
      const before = sg.requests.length + ic.messages.length;
      const calls: Array<[string, Record<string, unknown>]> = [
        ['sendgrid_send_email', { to: 'gone@acme.test', subject: 'Hello', text: 'x' }],
        ['sendgrid_send_bulk_emails', { recipients: [{ email: 'ann@acme.test' }, { email: 'GONE@acme.test' }], subject: 'Hello', text: 'x' }],
        ['sendgrid_send_template_email', { template_id: 'd-0123456789abcdef0123456789abcdef', to: [{ email: 'gone@acme.test' }] }],
        ['intercom_send_message', { user_email: 'gone@acme.test', message_type: 'inapp', body: 'hi' }],
        ['intercom_send_message', { user_id: 'u-gone', message_type: 'email', subject: 's', body: 'hi' }],
      ];
      for (const [tool, args] of calls) {
        const r = await h.call(tool, args);
        expect(r.structuredContent.error, tool).toMatchObject({ code: 'forbidden', details: { policy: 'consent' } });
        expect(r.structuredContent.error.message, tool).toMatch(/gone@acme\.test unsubscribed from all messages on \d{4}-\d{2}-\d{2} \(source: customer_email, reason: asked to stop\)/);
      }
      expect(sg.requests.length + ic.messages.length).toBe(before);
    });

    it("Intercom's own unsubscribed_from_emails stops an Intercom email but not an in-app message", async () => {
      const h = await start();
      const c = ic.seedContact({ email: 'optout@else.test', name: 'Opt Out' });
      (c as { unsubscribed_from_emails?: boolean }).unsubscribed_from_emails = true;
      const email = await h.call('intercom_send_message', { user_email: 'optout@else.test', message_type: 'email', subject: 's', body: 'hi' });
      expect(email.structuredContent.error).toMatchObject({ code: 'forbidden', details: { policy: 'consent' } });
      expect(email.structuredContent.error.message).toMatch(/unsubscribed from emails in Intercom/);
      const inapp = await h.call('intercom_send_message', { user_email: 'optout@else.test', message_type: 'inapp', body: 'hi' });
      expect(inapp.structuredContent.success).toBe(true);
    });

    it('an explicit override needs a person, and is recorded in the audit log', async () => {
      const withoutPerson = await start();
      const refused = await withoutPerson.call('sendgrid_send_email', { to: 'gone@acme.test', subject: 'Your ticket', text: 'x', override_consent: { reason: 'asked us to reply to ticket 4411' } });
      expect(refused.structuredContent.error).toMatchObject({ code: 'forbidden', details: { policy: 'approval_required' } });
      const p = person();
      const h = await start({}, p, 'override-client');
      const before = sendsTo(sg, 'gone@acme.test');
      const r = await h.call('sendgrid_send_email', { to: 'gone@acme.test', subject: 'Your ticket', text: 'x', override_consent: { reason: 'asked us to reply to ticket 4411' } });
      expect(r.structuredContent.success).toBe(true);
      expect(sendsTo(sg, 'gone@acme.test') - before).toBe(1);
      expect(p.asked[0]!.message).toMatch(/^7\. Consent override: overrides the consent of gone@acme\.test unsubscribed/m);
      expect(p.asked[0]!.message).toMatch(/^- Reason given for the consent override: “asked us to reply to ticket 4411”$/m);
      const log = await h.call('get_audit_log', { tool: 'sendgrid_send_email', outcome: 'success', limit: 5 });
      const entry = log.structuredContent.entries.find((e: any) => e.details.consent_override);
      expect(entry).toMatchObject({ client_name: 'override-client', details: { approved_by: 'person', consent_override: { reason: 'asked us to reply to ticket 4411' } } });
    });
  });

  describe('hard limits', () => {
    it('a direct send to more than CS_MCP_MAX_RECIPIENTS_PER_SEND is refused with the way to do it as a campaign', async () => {
      const h = await start({ CS_MCP_MAX_RECIPIENTS_PER_SEND: '5' });
      const before = sg.requests.length;
      const recipients = Array.from({ length: 6 }, (_, i) => ({ email: `many${i}@else.test` }));
      const r = await h.call('sendgrid_send_bulk_emails', { recipients, subject: 'Many', text: 'x' });
      expect(r.structuredContent.error).toMatchObject({ code: 'forbidden', details: { policy: 'max_recipients', limit: 5, recipients: 6 } });
      expect(r.structuredContent.error.message).toMatch(/send_personalized_email/);
      expect(sg.requests.length).toBe(before);
    });

    it('a 50,000-recipient bulk send reports counts and problems in a small result (never the whole audience back)', async () => {
      // A generous timeout: the stand-in validates every 1,000-personalization body against the contract in this process.
      const h = await start({ CS_MCP_MAX_RECIPIENTS_PER_SEND: '50000', CS_MCP_DAILY_SEND_LIMIT: '0', HTTP_TIMEOUT_MS: '20000' });
      sg.inject({ match: /^POST \/v3\/mail\/send/, times: 1, status: 500, body: { errors: [{ field: null, message: 'internal' }] } });
      const recipients = Array.from({ length: 50_000 }, (_, i) => ({ email: `huge${i}@else.test`, substitutions: { '-n-': String(i) } }));
      const r = await h.call('sendgrid_send_bulk_emails', { recipients, subject: 'Huge', text: 'Hi -n-' });
      // Counts add up whatever else happens on a loaded machine (a dropped connection is one more batch in doubt).
      const c = r.structuredContent;
      expect(c).toMatchObject({ success: true, requests: 50 });
      expect(c.accepted + c.unknown + c.failed).toBe(50_000);
      expect(c.unknown).toBeGreaterThanOrEqual(1_000);
      expect(c.problems_total).toBe(c.unknown + c.failed);
      expect(c.problems.length).toBeLessThanOrEqual(100);
      expect(Buffer.byteLength(JSON.stringify(r))).toBeLessThan(64 * 1024);
    });

    it('the daily send limit stops the 1,001st message with a clear error and loses nothing queued', async () => {
      const limited = tempDataDir();
      const csv = path.join(limited.dir, 'big.csv');
      fs.writeFileSync(csv, ['client_id,client_name,tier,contact_email', ...Array.from({ length: 1001 }, (_, i) => `big-${Math.floor(i / 50)},Big ${Math.floor(i / 50)},starter,p${i}@big.test`)].join('\n'));
      const h = await startInMemory(testEnv({ SENDGRID_API_KEY: SG_KEY, SENDGRID_BASE_URL: sg.url, SENDGRID_FROM_EMAIL: 'success@ourco.test', CS_MCP_DAILY_SEND_LIMIT: '1000', CAMPAIGN_DISPATCH_POLL_MS: '50', CAMPAIGN_DISPATCH_CONCURRENCY: '16' }, limited.dir));
      try {
        expect((await h.call('import_clients', { file_path: csv })).structuredContent.success).toBe(true);
        const args = { campaign_name: 'Big one', template_type: 'newsletter', subject_line: 'News', body_text: 'Hello', target_tier: 'starter' };
        const preview = await h.call('send_personalized_email', args);
        const confirmed = await h.call('send_personalized_email', { ...args, confirmation_token: preview.structuredContent.confirmation_token });
        expect(confirmed.structuredContent.queued).toBe(1001);
        const id = confirmed.structuredContent.campaign_id;
        const status = await until(
          async () => (await h.call('get_campaign_status', { campaign_id: id })).structuredContent.campaign,
          (c) => c.totals.sent === 1000 && c.waiting_by_reason.daily_limit === 1,
          { timeoutMs: 60_000 },
        );
        expect(status.totals).toMatchObject({ sent: 1000, queued: 1, failed: 0, unknown: 0 });
        const direct = await h.call('sendgrid_send_email', { to: 'extra@else.test', subject: 'One more', text: 'x' });
        expect(direct.structuredContent.error).toMatchObject({ code: 'rate_limited', retryable: true, details: { policy: 'daily_send_limit', remaining: 0 } });
        expect(direct.structuredContent.error.message).toMatch(/daily send limit \(CS_MCP_DAILY_SEND_LIMIT=1000\).*resets at/);
        const row = await h.services.store.db.selectFrom('outbox').selectAll().where('source_id', '=', id).where('state', '=', 'queued').executeTakeFirstOrThrow();
        expect(row.error_code).toBe('daily_limit');
        expect(Date.parse(row.not_before)).toBeGreaterThan(Date.now()); // waits for tomorrow, still queued: nothing lost
        expect((await h.call('integrations_status', {})).structuredContent.mode).toMatchObject({ daily_send_limit: 1000, sent_today: 1000 });
      } finally {
        await h.close();
        limited.cleanup();
      }
    });
  });

  describe('idempotency', () => {
    it('a repeated idempotency_key returns the first result and sends nothing; the same key with other content is conflict', async () => {
      const h = await start();
      const before = sendsTo(sg, 'ann@acme.test');
      const args = { to: 'ann@acme.test', subject: 'Keyed', text: 'once', idempotency_key: 'keyed-1' };
      const first = await h.call('sendgrid_send_email', args);
      const again = await h.call('sendgrid_send_email', args);
      expect(again.structuredContent).toMatchObject({ success: true, replayed: true, message_id: first.structuredContent.message_id });
      expect(sendsTo(sg, 'ann@acme.test') - before).toBe(1);
      const other = await h.call('sendgrid_send_email', { ...args, text: 'different' });
      expect(other.structuredContent.error).toMatchObject({ code: 'conflict', details: { policy: 'idempotency' } });
    });

    it('without a key, three identical Intercom messages send one; the refusal names the earlier message and how to send again', async () => {
      const h = await start();
      const before = ic.messages.length;
      const args = { user_email: 'ann@acme.test', message_type: 'inapp', body: 'Same words' };
      const first = await h.call('intercom_send_message', args);
      const second = await h.call('intercom_send_message', args);
      const third = await h.call('intercom_send_message', args);
      expect(first.structuredContent.success).toBe(true);
      for (const r of [second, third]) {
        expect(r.structuredContent.error).toMatchObject({ code: 'conflict', details: { policy: 'duplicate_window' } });
        expect(r.structuredContent.error.message).toContain(`message id ${first.structuredContent.message_id}`);
        expect(r.structuredContent.error.message).toMatch(/new idempotency_key/);
      }
      expect(ic.messages.length - before).toBe(1);
    });

    it('a bulk send interrupted by a 500 is not sent again by a retry with the same key', async () => {
      const h = await start({ CS_MCP_MAX_RECIPIENTS_PER_SEND: '5000' });
      sg.inject({ match: /^POST \/v3\/mail\/send/, times: 1, status: 500, body: { errors: [{ field: null, message: 'internal' }] } });
      const recipients = Array.from({ length: 1500 }, (_, i) => ({ email: `retry${i}@else.test` }));
      const args = { recipients, subject: 'Bulk retry', text: 'x', idempotency_key: 'bulk-retry-1' };
      const before = sg.matching(/^POST \/v3\/mail\/send/).length;
      const first = await h.call('sendgrid_send_bulk_emails', args);
      expect(first.structuredContent).toMatchObject({ success: true, accepted: 500, unknown: 1000 });
      const retry = await h.call('sendgrid_send_bulk_emails', args);
      expect(retry.structuredContent).toMatchObject({ success: true, replayed: true, accepted: 500, unknown: 1000 });
      expect(sg.matching(/^POST \/v3\/mail\/send/).length - before).toBe(2);
    });
  });

  describe('modes', () => {
    it('read-only: only tools that change nothing are listed, write tools cannot be called, the outbox sends nothing', async () => {
      const h = await start({ CS_MCP_READ_ONLY: 'true' });
      const { tools } = await h.client.listTools();
      expect(tools.length).toBeGreaterThan(5);
      expect(tools.every((t) => t.annotations?.readOnlyHint === true)).toBe(true);
      expect(tools.map((t) => t.name)).not.toContain('sendgrid_send_email');
      await expect(h.client.callTool({ name: 'sendgrid_send_email', arguments: { to: 'ann@acme.test', subject: 's', text: 't' } })).rejects.toThrow(/Unknown tool/);
      const status = await h.call('integrations_status', {});
      expect(status.structuredContent.mode).toMatchObject({ read_only: true, outbox_sending: false });
    });

    it('CS_MCP_TOOLSETS and CS_MCP_TOOLS_DENY: what is not enabled is not listed', async () => {
      const h = await start({ CS_MCP_TOOLSETS: 'roster', CS_MCP_TOOLS_DENY: 'remove_contact' });
      const names = (await h.client.listTools()).tools.map((t) => t.name);
      expect(names).toContain('list_clients');
      expect(names).toContain('integrations_status');
      expect(names).not.toContain('remove_contact');
      expect(names.some((n) => n.startsWith('sendgrid_') || n.startsWith('intercom_') || n === 'send_personalized_email')).toBe(false);
    });

    it('the audit log records refusals by policy, with client and session, and redacts bodies', async () => {
      const h = await start({}, undefined, 'audit-reader');
      await h.call('sendgrid_send_email', { to: 'gone@acme.test', subject: 'Audited', text: 'secret words' });
      const log = await h.call('get_audit_log', { policy: 'consent', limit: 3 });
      const e = log.structuredContent.entries[0];
      expect(e).toMatchObject({ tool: 'sendgrid_send_email', kind: 'send', outcome: 'forbidden', policy: 'consent', client_name: 'audit-reader', session_id: 'stdio' });
      expect(JSON.stringify(e.arguments)).not.toContain('secret words');
      expect(e.arguments.text).toMatch(/^\[redacted: 12 characters, sha256 [0-9a-f]{16}\]$/);
      expect(e.arguments.subject).toBe('Audited');
    });
  });
});


const dialects = await availableDialects();

describe.each(dialects)('idempotency across two instances on one %s database', (dialect) => {
  let target: DatabaseTarget;
  let sg: SendGridStandIn;
  beforeAll(async () => {
    target = await createTarget(dialect);
    sg = await startSendGridStandIn({ apiKey: SG_KEY });
  });
  afterAll(async () => {
    await sg.stop();
    await target.cleanup();
  });

  it('the same key on another instance sends nothing, even when both calls race', async () => {
    const env = testEnv({ SENDGRID_API_KEY: SG_KEY, SENDGRID_BASE_URL: sg.url, SENDGRID_FROM_EMAIL: 'success@ourco.test', ...target.env });
    const a = await startInMemory(env);
    const b = await startInMemory(env);
    try {
      const args = { to: 'twice@else.test', subject: 'Across instances', text: 'x', idempotency_key: `across-${dialect}` };
      const first = await a.call('sendgrid_send_email', args);
      const second = await b.call('sendgrid_send_email', args);
      expect(second.structuredContent).toMatchObject({ success: true, replayed: true, message_id: first.structuredContent.message_id });
      const raced = await Promise.all([a, b, a, b].map((h) => h.call('sendgrid_send_email', { ...args, idempotency_key: `race-${dialect}` })));
      expect(raced.filter((r) => r.structuredContent.success && !r.structuredContent.replayed)).toHaveLength(1);
      expect(sendsTo(sg, 'twice@else.test')).toBe(2);
    } finally {
      await a.close();
      await b.close();
    }
  });
});

describe('approval over stdio and HTTP', () => {
  let sg: SendGridStandIn;
  const data = tempDataDir();
  beforeAll(async () => {
    sg = await startSendGridStandIn({ apiKey: SG_KEY });
  });
  afterAll(async () => {
    await sg.stop();
    data.cleanup();
  });
  const env = () => testEnv({ SENDGRID_API_KEY: SG_KEY, SENDGRID_BASE_URL: sg.url, SENDGRID_FROM_EMAIL: 'success@ourco.test' }, data.dir);

  it('stdio: the real binary asks the person; accept sends, decline does not', async () => {
    const p = person();
    const h = await startStdio(env(), { onElicit: p.onElicit });
    try {
      const ok = await h.call('sendgrid_send_email', { to: 'stdio@else.test', subject: 'Over stdio', text: 'x' });
      expect(ok.structuredContent.success).toBe(true);
      p.answers({ action: 'decline' });
      const no = await h.call('sendgrid_send_email', { to: 'stdio@else.test', subject: 'Over stdio, declined', text: 'x' });
      expect(no.structuredContent.error.code).toBe('declined');
      expect(p.asked).toHaveLength(2);
      expect(sendsTo(sg, 'stdio@else.test')).toBe(1);
    } finally {
      await h.close();
    }
  });

  /** The client's fetch, with no standalone GET stream: what the server sends must travel on a POST's own response. */
  const postStreamsOnly = (gets: string[]): typeof fetch => async (input, init) => {
    if ((init?.method ?? 'GET').toUpperCase() === 'GET') {
      gets.push(String(input));
      return new Response(null, { status: 405 });
    }
    return fetch(input, init);
  };

  it('Streamable HTTP: the approval request travels on the call\'s own stream; accept sends, cancel does not', async () => {
    // A short approval timeout: an approval request sent anywhere but on the call's stream goes unanswered.
    const config = loadConfig({ ...env(), MCP_HTTP_PORT: '0', CS_MCP_APPROVAL_TIMEOUT_S: '5' } as NodeJS.ProcessEnv);
    registerSecrets(configSecrets(config));
    const services = await createServices(config, createLogger('silent'));
    const running = await serveHttp(services);
    const p = person();
    const client = testClient({ onElicit: p.onElicit });
    const gets: string[] = [];
    await client.connect(new StreamableHTTPClientTransport(new URL(running.url), { fetch: postStreamsOnly(gets) }));
    try {
      const ok = (await client.callTool({ name: 'sendgrid_send_email', arguments: { to: 'http@else.test', subject: 'Over HTTP', text: 'x' } })) as any;
      expect(ok.structuredContent, JSON.stringify(ok.structuredContent)).toMatchObject({ success: true });
      expect(p.asked).toHaveLength(1);
      p.answers({ action: 'cancel' });
      const no = (await client.callTool({ name: 'sendgrid_send_email', arguments: { to: 'http@else.test', subject: 'Over HTTP, cancelled', text: 'x' } })) as any;
      expect(no.structuredContent.error.code).toBe('declined');
      expect(no.structuredContent.error.message).toMatch(/cancelled the approval request/);
      expect(sendsTo(sg, 'http@else.test')).toBe(1);
      expect(gets.length).toBeGreaterThan(0); // the client did try to open the standalone stream, and had none
    } finally {
      await client.close();
      await running.close();
      await services.close();
    }
  });

  it('Streamable HTTP, stateless: no session to carry an approval, so no person can approve; sends that need one are refused, the rest follow CS_MCP_APPROVAL=auto', async () => {
    for (const approval of ['elicitation', 'auto']) {
      const config = loadConfig({ ...env(), MCP_HTTP_PORT: '0', MCP_HTTP_STATELESS: 'true', CS_MCP_APPROVAL: approval, CS_MCP_APPROVAL_TIMEOUT_S: '5' } as NodeJS.ProcessEnv);
      registerSecrets(configSecrets(config));
      const services = await createServices(config, createLogger('silent'));
      const running = await serveHttp(services);
      const p = person();
      const client = testClient({ onElicit: p.onElicit }); // the client could answer: the server must not ask it
      await client.connect(new StreamableHTTPClientTransport(new URL(running.url)));
      try {
        const to = `stateless-${approval}@else.test`;
        const r = (await client.callTool({ name: 'sendgrid_send_email', arguments: { to, subject: 'Stateless', text: 'x' } })) as any;
        if (approval === 'elicitation') {
          expect(r.structuredContent.error).toMatchObject({ code: 'forbidden', details: { policy: 'approval_required' } });
          expect(r.structuredContent.error.message).toMatch(/does not support elicitation/);
          expect(sendsTo(sg, to)).toBe(0);
        } else {
          expect(r.structuredContent, JSON.stringify(r.structuredContent)).toMatchObject({ success: true });
          expect(sendsTo(sg, to)).toBe(1);
        }
        expect(p.asked).toEqual([]);
      } finally {
        await client.close();
        await running.close();
        await services.close();
      }
    }
  });
});
