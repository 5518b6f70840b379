import { Router, type Request, type Response } from 'express';
import { ConfigError, type Config } from '../config.js';
import { Readiness } from '../observability/readiness.js';
import type { ProviderName } from '../result.js';
import type { Services } from '../services.js';
import { bearerAuth, hostCheck, isLoopbackHost, MIN_TOKEN_LENGTH } from './http-security.js';

/**
 * What an operator watches: GET /healthz (the process answers), GET /readyz (it can do its work) and,
 * when enabled, GET /metrics (Prometheus). Mounted before the Host/Origin checks and the MCP token:
 * load balancers and scrapers call by address and hold no MCP token. None of them reveals a secret;
 * /metrics has its own token (MCP_METRICS_TOKEN), or is served tokenless only on a loopback bind.
 */
export function observabilityRoutes(services: Services): Router {
  const { http, observability } = services.config;
  assertSafeMetricsConfig(http, observability);
  const router = Router();
  const noStore = (res: Response) => res.set('Cache-Control', 'no-store');

  router.get('/healthz', (_req, res) => {
    noStore(res).json({ ok: true });
  });

  const runtimes = Object.values(services.runtimes);
  const readiness = new Readiness(
    services.store.db,
    observability,
    () => Object.fromEntries(runtimes.map((rt) => [rt.provider, rt.configured])) as Record<ProviderName, boolean>,
    services.log.child({ component: 'readiness' }),
  );
  router.get('/readyz', async (_req, res) => {
    const report = await readiness.check();
    noStore(res).status(report.ready ? 200 : 503).json(report);
  });

  if (observability.metrics) {
    // Tokenless is allowed on a loopback bind only (checked above); the Host check keeps a web page
    // rebinding its name to 127.0.0.1 from reading it.
    const guard = observability.metricsToken ? bearerAuth(observability.metricsToken, 'MCP_METRICS_TOKEN') : hostCheck(http);
    router.get('/metrics', guard, async (_req: Request, res: Response) => {
      const text = await services.metrics.render();
      noStore(res).type(services.metrics.contentType).send(text);
    });
  }
  return router;
}

/**
 * /metrics without a token only where nobody else can reach it; a token long enough not to be guessed
 * on a reachable address, and not the MCP token (a scraper must not be able to send to customers).
 */
export function assertSafeMetricsConfig(http: Config['http'], o: Config['observability']): void {
  if (!o.metrics) return;
  if (!o.metricsToken) {
    if (isLoopbackHost(http.host)) return;
    throw new ConfigError(
      `Refusing to serve /metrics on ${http.host} without a token: set MCP_METRICS_TOKEN (Prometheus sends it as "Authorization: Bearer <token>"), ` +
        'or bind MCP_HTTP_HOST to 127.0.0.1, or leave MCP_METRICS unset.',
    );
  }
  if (o.metricsToken === http.token) {
    throw new ConfigError('MCP_METRICS_TOKEN must differ from MCP_HTTP_TOKEN: whoever scrapes metrics must not be able to call tools. Generate a separate token.');
  }
  if (!isLoopbackHost(http.host) && o.metricsToken.length < MIN_TOKEN_LENGTH) {
    throw new ConfigError(`Refusing to serve /metrics on ${http.host} with a ${o.metricsToken.length}-character MCP_METRICS_TOKEN: on a reachable address it must be at least ${MIN_TOKEN_LENGTH} random characters.`);
  }
}
