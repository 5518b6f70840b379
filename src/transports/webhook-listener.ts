import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { ENDPOINTS } from '../engine/inbox/index.js';
import { createWebhookHandler, webhookServerOptions } from '../inbox/http.js';
import type { Services } from '../services.js';
import { observabilityRoutes } from './http-observability.js';

export interface RunningWebhookListener {
  /** e.g. http://0.0.0.0:3000/webhooks/ */
  url: string;
  endpoints: string[];
  close(): Promise<void>;
}

/**
 * The headless worker's only HTTP surface: the provider webhooks, /healthz, /readyz and /metrics (when
 * enabled), on MCP_HTTP_HOST:MCP_HTTP_PORT. No MCP is served, so a public bind needs no MCP token: every
 * webhook is authenticated by its provider signature, /metrics by its own token. Started only when some
 * endpoint is enabled by its secret, or /metrics is.
 */
export async function serveWebhooks(services: Services): Promise<RunningWebhookListener | undefined> {
  const endpoints = ENDPOINTS.filter((e) => services.inbox.enabled(e));
  if (!endpoints.length && !services.config.observability.metrics) return undefined;
  const { host, port } = services.config.http;
  const webhooks = createWebhookHandler(services);
  const app = express();
  app.disable('x-powered-by');
  app.use(observabilityRoutes(services));
  app.use((req, res) => {
    req.resume();
    res.status(404).json({ error: 'This worker serves only /webhooks/<endpoint>, /healthz, /readyz and /metrics (when enabled).' });
  });
  const server = createServer(webhookServerOptions(services.config), (req, res) => {
    void webhooks(req, res).then((handled) => handled || app(req, res));
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
