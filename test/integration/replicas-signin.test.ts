import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { openStore } from '../../src/store/index.js';
import { availableDialects, createTarget } from '../helpers/databases.js';
import { standInEnv, testEnv } from '../helpers/mcp.js';
import { startIssuer } from '../helpers/oauth-issuer.js';
import { startSignedInServer, type SignedInServer } from '../helpers/signed-in-server.js';
import { busiestHolderPid, heldAtDeath } from '../helpers/lease-holders.js';
import { importEnterpriseRoster } from '../helpers/roster-seed.js';
import { until } from '../helpers/until.js';
import type { RecordedRequest } from '../stand-ins/http-stand-in.js';
import { startSendGridStandIn } from '../stand-ins/sendgrid.js';

/**
 * A team's server as it is deployed: three replicas of the built binary in stateless HTTP mode, with
 * sign-in, on one PostgreSQL database, behind a balancer with no affinity (each request goes to the
 * next live replica). A campaign is previewed through one replica and confirmed through another, its
 * status read through a third, and the replica holding the most of its rows is SIGKILLed mid-delivery.
 * Every recipient gets the email once (a row caught mid-request is `unknown`, never resent), and the
 * person who signed in is the actor on every replica.
 */

const SG_KEY = 'SG.replicas_signin_key.0123456789';
const RECIPIENTS = 300;
const KILL_AT = Math.round(RECIPIENTS * 0.4);
const LEAD = { id: 'lead', scope: 'cs:read cs:write cs:send', name: 'Lee Adams', email: 'lee@ourco.test' };

const dialects = await availableDialects();
const isSend = (r: RecordedRequest) => r.method === 'POST' && r.path === '/v3/mail/send';

/** A balancer with no affinity: each request to the next replica that is still alive (round robin). */
async function startBalancer(replicas: () => SignedInServer[]): Promise<{ url: string; served: number[]; close(): Promise<void> }> {
  let next = 0;
  const served: number[] = [];
  const server = http.createServer((req, res) => {
    const live = replicas().filter((r) => r.child.exitCode === null && r.child.signalCode === null);
    const i = next++ % live.length;
    const target = new URL(live[i]!.url);
    served.push(replicas().indexOf(live[i]!));
    const upstream = http.request({ host: target.hostname, port: target.port, path: req.url, method: req.method, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    upstream.on('error', () => {
      if (!res.headersSent) res.writeHead(502).end();
      else res.destroy();
    });
    req.pipe(upstream);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/mcp`,
    served,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

describe.runIf(dialects.includes('postgres'))('three replicas with sign-in on one PostgreSQL, no affinity', () => {
  it('preview, confirm and status through different replicas; one SIGKILLed mid-delivery; every recipient once; the person recorded', { timeout: 240_000 }, async () => {
    const target = await createTarget('postgres');
    const issuer = await startIssuer([LEAD]);
    const sg = await startSendGridStandIn({ apiKey: SG_KEY, latencyMs: 20, rateLimit: { limit: 100, windowMs: 1000 } });
    const env = testEnv({ ...standInEnv({ sendgrid: { url: sg.url, apiKey: SG_KEY } }), CAMPAIGN_EMAIL_BATCHING: 'false', ...target.env });
    await importEnterpriseRoster(env, target.env.CS_MCP_DATA_DIR!, RECIPIENTS, { domain: 'replicas.example' });

    const store = await openStore(loadConfig(env as NodeJS.ProcessEnv), pino({ level: 'silent' }));
    const replicas: SignedInServer[] = [];
    const balancer = await startBalancer(() => replicas);
    let client: Client | undefined;
    let accepted = 0;
    sg.on('answered', (q) => {
      if (isSend(q) && typeof q.answer === 'number' && q.answer >= 200 && q.answer < 300) accepted += 1;
    });
    try {
      // One public URL (the balancer's) is every replica's audience, as behind a real load balancer.
      const replicaEnv = { ...env, MCP_HTTP_STATELESS: 'true', CS_MCP_APPROVAL: 'token' };
      for (let i = 0; i < 3; i++) replicas.push(await startSignedInServer(issuer.issuer, replicaEnv, target.env.CS_MCP_DATA_DIR!, { publicUrl: balancer.url }));
      const token = await issuer.token(LEAD.id, balancer.url);
      client = new Client({ name: 'replicas-test', version: '1.0.0' });
      await client.connect(
        new StreamableHTTPClientTransport(new URL(balancer.url), {
          fetch: (input, init) => {
            const headers = new Headers(init?.headers);
            headers.set('Authorization', `Bearer ${token}`);
            return fetch(input, { ...init, headers });
          },
        }),
      );
      const call = async (name: string, args: Record<string, unknown>) => (await client!.callTool({ name, arguments: args })) as { isError?: boolean; structuredContent: Record<string, any> };
      const args = {
        campaign_name: 'Replica drill',
        template_type: 'health_check',
        subject_line: 'Hello {{ client.name }}',
        body_text: 'Hi {{ contact.first_name }}, checking in.',
        target_tier: 'enterprise',
        channels: ['email'],
        created_by: 'someone the model named',
      };
      const previewAt = balancer.served.length;
      const preview = await call('send_personalized_email', args);
      expect(String(preview.structuredContent.confirmation_token)).toMatch(/^cst_/);
      const confirmAt = balancer.served.length;
      const confirmed = await call('send_personalized_email', { ...args, confirmation_token: preview.structuredContent.confirmation_token });
      expect(confirmed.structuredContent.phase, JSON.stringify(confirmed.structuredContent).slice(0, 500)).toBe('confirmed');
      // The preview and the confirmation were answered by different replicas.
      expect(balancer.served[previewAt]).not.toBe(balancer.served[confirmAt]);
      const campaignId = String(confirmed.structuredContent.campaign_id);

      await until(() => accepted >= KILL_AT, { timeoutMs: 60_000, message: `${KILL_AT} emails accepted` });
      const busiest = await busiestHolderPid(store.db, campaignId);
      const victim = replicas.find((r) => r.child.pid === busiest) ?? replicas[2]!;
      victim.child.kill('SIGKILL');
      await until(() => victim.child.signalCode !== null, { message: 'the replica is dead' });
      const atDeath = await heldAtDeath(store.db, campaignId, victim.child.pid!);

      // Status through the balancer (the live replicas in turn) until every row is settled.
      const status = await until(
        () => call('get_campaign_status', { campaign_id: campaignId }),
        (s) => !s.isError && s.structuredContent.campaign.totals.queued + s.structuredContent.campaign.totals.sending === 0,
        { timeoutMs: 90_000, intervalMs: 250, message: 'every row settled, seen through the balancer' },
      );
      const totals = status.structuredContent.campaign.totals;
      const rows = await store.db.selectFrom('outbox').select(['outbox_id', 'recipient_email', 'state']).where('source_id', '=', campaignId).execute();
      const counts = sg.countsByAddress();
      const duplicates = [...counts.values()].filter((n) => n > 1).length;
      process.stderr.write(
        `[replicas] sent ${totals.sent}, unknown ${totals.unknown}, duplicates ${duplicates}; the dead replica held ${atDeath.queued.length} queued and ${atDeath.midSend.length} mid-send; ` +
          `requests per replica ${[0, 1, 2].map((i) => balancer.served.filter((x) => x === i).length).join('/')}\n`,
      );
      expect(rows).toHaveLength(RECIPIENTS);
      expect(duplicates).toBe(0);
      expect(rows.every((r) => r.state === 'sent' || r.state === 'unknown')).toBe(true);
      for (const r of rows.filter((x) => x.state === 'sent')) expect(counts.get(r.recipient_email), r.recipient_email).toBe(1);
      for (const r of rows.filter((x) => x.state === 'unknown')) expect(counts.get(r.recipient_email) ?? 0, r.recipient_email).toBeLessThanOrEqual(1);
      // In doubt is exactly what the dead replica had marked `sending` (mid-request, or answered but not
      // yet recorded): nothing of a live replica, and none of the rows it had claimed but not started,
      // which the others sent. How many were mid-send depends on the machine's load (30 under the full
      // suite on 2 cores); marking happens only after the budget wait (resilience.test.ts).
      const unknownIds = rows.filter((r) => r.state === 'unknown').map((r) => Number(r.outbox_id)).sort((a, b) => a - b);
      expect(unknownIds).toEqual(atDeath.midSend);
      expect(atDeath.queued.length, 'the dead replica held rows it had not started').toBeGreaterThan(0);

      // The person who signed in, not the model's `created_by`, is the actor, whichever replica answered.
      const campaign = await store.db.selectFrom('campaigns').select('created_by').where('campaign_id', '=', campaignId).executeTakeFirstOrThrow();
      expect(campaign.created_by).toContain('Lee Adams');
      const audited = await store.db.selectFrom('audit_log').select(['tool', 'actor']).where('tool', '=', 'send_personalized_email').execute();
      expect(audited.length).toBeGreaterThanOrEqual(2);
      for (const a of audited) expect(a.actor).toContain('(lead)');
    } finally {
      await client?.close().catch(() => undefined);
      for (const r of replicas) r.child.kill('SIGTERM');
      await Promise.all(replicas.map((r) => (r.child.exitCode === null && r.child.signalCode === null ? new Promise((res) => r.child.once('exit', res)) : undefined)));
      await balancer.close();
      await store.close();
      await sg.stop();
      await issuer.close();
      await target.cleanup();
    }
  });
});
