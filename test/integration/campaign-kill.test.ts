import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { openStore } from '../../src/store/index.js';
import { availableDialects, createTarget } from '../helpers/databases.js';
import { startStdio, standInEnv, testEnv, type StdioHarness } from '../helpers/mcp.js';
import { busiestHolderPid, heldAtDeath, heldBy } from '../helpers/lease-holders.js';
import { importEnterpriseRoster } from '../helpers/roster-seed.js';
import { until } from '../helpers/until.js';
import type { RecordedRequest } from '../stand-ins/http-stand-in.js';
import { startSendGridStandIn } from '../stand-ins/sendgrid.js';

/**
 * The kill drill: three server processes (the built binary) share one PostgreSQL outbox and send a
 * 600-email campaign (one request a message) at a paced 100 requests a second. One of them is
 * SIGKILLed at 40 %. Every recipient must get the email exactly once (a row caught mid-request is
 * `unknown`, never resent), and the rows the dead process had leased must be taken up by the others
 * within 5 s (with the default CAMPAIGN_LEASE_MS), not after a long lease runs out.
 */

const SG_KEY = 'SG.kill_drill_key.0123456789';
const RECIPIENTS = 600;
const KILL_AT = Math.round(RECIPIENTS * 0.4);
const RESUME_WITHIN_MS = 5_000;

const dialects = await availableDialects();
const isSend = (r: RecordedRequest) => r.method === 'POST' && r.path === '/v3/mail/send';

describe.runIf(dialects.includes('postgres'))('a SIGKILL among three instances on PostgreSQL', () => {
  it('every recipient exactly once (or unknown, never resent); the dead instance’s rows resumed within 5 s', { timeout: 180_000 }, async () => {
    const target = await createTarget('postgres');
    const sg = await startSendGridStandIn({ apiKey: SG_KEY, latencyMs: 20, rateLimit: { limit: 100, windowMs: 1000 } });
    const env = testEnv({
      ...standInEnv({ sendgrid: { url: sg.url, apiKey: SG_KEY } }),
      CAMPAIGN_EMAIL_BATCHING: 'false',
      ...target.env,
    });
    await importEnterpriseRoster(env, target.env.CS_MCP_DATA_DIR!, RECIPIENTS, { domain: 'kill.example' });
    const store = await openStore(loadConfig(env as NodeJS.ProcessEnv), pino({ level: 'silent' }));
    const servers: StdioHarness[] = [];
    let accepted = 0;
    const acceptedAt: number[] = [];
    sg.on('answered', (q) => {
      if (isSend(q) && typeof q.answer === 'number' && q.answer >= 200 && q.answer < 300) {
        accepted += 1;
        acceptedAt.push(Date.now());
      }
    });
    try {
      for (let i = 0; i < 3; i++) servers.push(await startStdio(env));
      const args = {
        campaign_name: 'Kill drill',
        template_type: 'health_check',
        subject_line: 'Hello {{ client.name }}',
        body_text: 'Hi {{ contact.first_name }}, checking in.',
        target_tier: 'enterprise',
        channels: ['email'],
      };
      const preview = await servers[0]!.call('send_personalized_email', args);
      expect(String(preview.structuredContent.confirmation_token)).toMatch(/^cst_/);
      const confirmed = await servers[0]!.call('send_personalized_email', { ...args, confirmation_token: preview.structuredContent.confirmation_token });
      expect(confirmed.structuredContent.phase).toBe('confirmed');
      const campaignId = String(confirmed.structuredContent.campaign_id);

      await until(() => accepted >= KILL_AT, { timeoutMs: 60_000, message: `${KILL_AT} emails accepted` });
      // The worst case: kill the instance that holds the most rows (a lease owner names its process).
      const busiest = await busiestHolderPid(store.db, campaignId);
      const victim = servers.find((s) => s.pid === busiest) ?? servers[2]!;
      process.kill(victim.pid!, 'SIGKILL');
      const killedAt = Date.now();
      const held = () => heldBy(store.db, campaignId, victim.pid!);
      const atDeath = await heldAtDeath(store.db, campaignId, victim.pid!);
      // Meaningful only if the dead instance was holding work when it died.
      expect(atDeath.queued.length + atDeath.midSend.length, 'rows the killed instance held').toBeGreaterThan(0);
      await until(held, (rows) => rows.length === 0, { timeoutMs: 30_000, intervalMs: 50, message: 'the dead instance’s rows taken up by the others' });
      const resumedMs = Date.now() - killedAt;

      const rows = await until(
        () => store.db.selectFrom('outbox').select(['outbox_id', 'recipient_email', 'state']).where('source_id', '=', campaignId).execute(),
        (rs) => rs.length === RECIPIENTS && rs.every((r) => r.state !== 'queued' && r.state !== 'sending'),
        { timeoutMs: 60_000, message: 'every row settled' },
      );
      const counts = sg.countsByAddress();
      const duplicates = [...counts.values()].filter((n) => n > 1).length;
      const sent = rows.filter((r) => r.state === 'sent');
      const unknown = rows.filter((r) => r.state === 'unknown');
      const span = (acceptedAt[acceptedAt.length - 1]! - acceptedAt[0]!) / 1000;
      process.stderr.write(
        `[kill drill] killed at ${KILL_AT}/${RECIPIENTS} accepted; the dead instance held ${atDeath.queued.length + atDeath.midSend.length} rows (${atDeath.midSend.length} mid-send); ` +
          `resumed within ${(resumedMs / 1000).toFixed(1)} s; ${sent.length} sent, ${unknown.length} unknown, ${duplicates} duplicates; ` +
          `${accepted} accepted over ${span.toFixed(1)} s = ${(accepted / span).toFixed(1)}/s (limit 100/s)\n`,
      );
      expect(duplicates).toBe(0);
      expect(rows.every((r) => r.state === 'sent' || r.state === 'unknown')).toBe(true);
      // Every sent row reached the provider exactly once; an unknown one at most once (a kill mid-request).
      for (const r of sent) expect(counts.get(r.recipient_email), r.recipient_email).toBe(1);
      // `unknown` (in doubt, not resent) is exactly what the dead instance had marked `sending` (mid-request,
      // or answered but not yet recorded): nothing of the live ones. Each reached the provider at most once.
      for (const r of unknown) expect(counts.get(r.recipient_email) ?? 0, r.recipient_email).toBeLessThanOrEqual(1);
      expect(unknown.map((r) => Number(r.outbox_id)).sort((a, b) => a - b)).toEqual(atDeath.midSend);
      expect(resumedMs).toBeLessThanOrEqual(RESUME_WITHIN_MS);
      // Leased only what it could start soon: far from a third of the campaign waiting on one process.
      expect(atDeath.queued.length).toBeLessThan(RECIPIENTS / 3);
    } finally {
      for (const s of servers) await s.close().catch(() => undefined);
      await store.close();
      await sg.stop();
      await target.cleanup();
    }
  });
});
