import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ENDPOINTS } from '../engine/inbox/index.js';
import { createWebhookHandler, webhookServerOptions } from '../inbox/http.js';
import type { Services } from '../services.js';

export interface RunningWebhookListener {
  /** e.g. http://0.0.0.0:3000/webhooks/ */
  url: string;
  endpoints: string[];
  close(): Promise<void>;
}

/**
 * The headless worker's only HTTP surface: the provider webhooks (and a health check), on
 * MCP_HTTP_HOST:MCP_HTTP_PORT. No MCP is served, so a public bind needs no MCP token: every request is
 * authenticated by its provider signature. Started only when some endpoint is enabled by its secret.
 */
export async function serveWebhooks(services: Services): Promise<RunningWebhookListener | undefined> {
  const endpoints = ENDPOINTS.filter((e) => services.inbox.enabled(e));
  if (!endpoints.length) return undefined;
  const { host, port } = services.config.http;
  const webhooks = createWebhookHandler(services);
  const server = createServer(webhookServerOptions(services.config), (req, res) => {
    void webhooks(req, res).then((handled) => {
      if (handled) return;
      const path = (req.url ?? '').split('?')[0];
      const health = req.method === 'GET' && path === '/healthz';
      res.writeHead(health ? 200 : 404, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(health ? { ok: true } : { error: 'This worker serves only /webhooks/<endpoint> and /healthz.' }));
      req.resume();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const address = server.address() as AddressInfo;
  const shownHost = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const url = `http://${shownHost}:${address.port}/webhooks/`;
  services.log.info({ url, endpoints }, 'serving provider webhooks');
  return {
    url,
    endpoints,
    close: async () => {
      server.close();
      server.closeAllConnections();
    },
  };
}
