import { spawn } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { DIST_CLI, startInMemory, tempDataDir, testEnv } from '../helpers/mcp.js';
import { exited, until } from '../helpers/until.js';
import { get, Scrape } from '../helpers/metrics.js';
import { post, sendgridSigner, sgEvent } from '../helpers/webhooks.js';

/** The headless worker serves the provider webhooks too: with it alone running, the loop is closed. */
describe('customer-success-mcp worker', () => {
  const data = tempDataDir();
  afterAll(() => data.cleanup());

  it('serves the enabled webhook endpoints (and only them), stores a signed batch, and stops cleanly', async () => {
    const signer = sendgridSigner();
    const metricsToken = 'worker-metrics-token-0123456789abcdef';
    const env = testEnv({ SENDGRID_WEBHOOK_PUBLIC_KEY: signer.publicKey, MCP_HTTP_PORT: '0', LOG_LEVEL: 'warn', MCP_METRICS_TOKEN: metricsToken }, data.dir);
    const seed = await startInMemory(env);
    await seed.call('register_client', { client_id: 'acme', name: 'Acme' });
    await seed.call('upsert_contact', { client_id: 'acme', email: 'ann@acme.example' });
    await seed.close();

    const worker = spawn(process.execPath, [DIST_CLI, 'worker'], { env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    worker.stderr!.on('data', (d) => (stderr += String(d)));
    try {
      const line = await until(() => /Webhooks \(sendgrid\) at (http:\/\/[^ ]+\/webhooks\/)/.exec(stderr), { message: 'the worker to print its webhook URL' });
      const base = line![1]!;
      const body = JSON.stringify([sgEvent('unsubscribe', 'ann@acme.example')]);
      expect((await post(`${base}sendgrid`, body, signer.headers(body))).status).toBe(200);
      expect((await post(`${base}sendgrid`, body, { 'Content-Type': 'application/json' })).status).toBe(401);
      expect((await post(`${base}intercom`, '{}', { 'Content-Type': 'application/json' })).status).toBe(404); // not enabled
      expect((await fetch(base.replace(/webhooks\/$/, 'mcp'), { method: 'POST', body: '{}' })).status).toBe(404); // no MCP here
      expect((await fetch(base.replace(/webhooks\/$/, 'healthz'))).status).toBe(200);
      expect((await fetch(base.replace(/webhooks\/$/, 'readyz'))).status).toBe(200);
      // The worker's own counters: it stored the batch and refused the unsigned one.
      expect((await get(base.replace(/webhooks\/$/, 'metrics'))).status).toBe(401);
      const scraped = await get(base.replace(/webhooks\/$/, 'metrics'), { Authorization: `Bearer ${metricsToken}` });
      const m = Scrape.parse(scraped.text);
      expect(m.sum('csmcp_webhook_events_stored_total', { provider: 'sendgrid' })).toBe(1);
      expect(m.sum('csmcp_webhook_requests_refused_total', { provider: 'sendgrid', status: '401' })).toBe(1);

      // The worker's own inbox processor applies it: the contact is suppressed for email.
      const check = await startInMemory(env);
      try {
        await until(
          async () => (await check.call('get_client_overview', { client_id: 'acme' })).structuredContent.contacts[0].email_status,
          (status) => status === 'unsubscribed',
          { message: 'the unsubscribe to be applied' },
        );
      } finally {
        await check.close();
      }
    } finally {
      worker.kill('SIGTERM');
      expect(await exited(worker)).toMatchObject({ code: 0 });
    }
  });
});
