import type { Config } from './config.js';
import type { Logger } from './log.js';
import { AutomationRepository } from './engine/automations/repository.js';
import { AutomationService } from './engine/automations/service.js';
import { CampaignService } from './engine/campaigns/service.js';
import { ConfirmationTokens } from './engine/confirmations.js';
import { Delivery } from './engine/delivery/index.js';
import { Inbox } from './engine/inbox/index.js';
import { RenderGate } from './engine/render-gate.js';
import { Retention } from './engine/retention.js';
import { Metrics } from './observability/metrics.js';
import { IntercomService } from './providers/intercom/service.js';
import { MixpanelService } from './providers/mixpanel/service.js';
import { SendGridService } from './providers/sendgrid/service.js';
import { SlackService } from './providers/slack/service.js';
import type { WebhookLookup } from './providers/webhooks/address.js';
import { WebhookService } from './providers/webhooks/service.js';
import { BudgetPeers } from './resilience/budget-peers.js';
import { ProviderRuntime } from './resilience/provider-runtime.js';
import type { ProviderName } from './result.js';
import { AuditLog } from './safety/audit.js';
import { DailySendLimit } from './safety/daily-limit.js';
import { DirectSendGuard } from './safety/direct-send.js';
import { IdempotencyStore } from './safety/idempotency.js';
import { openStore, type Store } from './store/index.js';

/** Everything the tools can use. Built once per server process; tools receive it in their context. */
export interface Services {
  config: Config;
  log: Logger;
  runtimes: Record<ProviderName, ProviderRuntime>;
  intercom: IntercomService;
  sendgrid: SendGridService;
  mixpanel: MixpanelService;
  slack: SlackService;
  webhooks: WebhookService;
  store: Store;
  delivery: Delivery;
  campaigns: CampaignService;
  /** Verified provider webhooks: storage and the processor that applies them. */
  inbox: Inbox;
  automations: AutomationService;
  renderGate: RenderGate;
  dailyLimit: DailySendLimit;
  idempotency: IdempotencyStore;
  audit: AuditLog;
  directSends: DirectSendGuard;
  /** This process's Prometheus registry and the counters the parts feed (GET /metrics). */
  metrics: Metrics;
  /** Deletes old records of every kind in the background. */
  retention: Retention;
  /** Stops background work (flushing what is buffered) and closes the store. Safe to call twice. */
  close(): Promise<void>;
}

export interface ServiceOverrides {
  /** Replaces global fetch for every provider (tests, benchmarks). */
  baseFetch?: typeof fetch;
  /** Replaces DNS for trigger_webhook's host names (tests: a name that resolves to a private address). */
  webhookLookup?: WebhookLookup;
}

/** Which variables each provider still needs, from the config. Empty: ready to use. */
export function missingCredentials(config: Config): Record<ProviderName, string[]> {
  const m = config.mixpanel;
  const mixpanelAuth = m.projectToken || m.apiSecret || (m.serviceAccountUsername && m.serviceAccountSecret && m.projectId);
  const a = config.automations;
  return {
    intercom: config.intercom.accessToken ? [] : ['INTERCOM_ACCESS_TOKEN'],
    sendgrid: config.sendgrid.apiKey ? [] : ['SENDGRID_API_KEY'],
    mixpanel: mixpanelAuth ? [] : ['MIXPANEL_PROJECT_TOKEN'],
    slack: a.slackWebhookUrl ? [] : ['SLACK_WEBHOOK_URL'],
    webhook: [...(a.webhookSecret ? [] : ['AUTOMATION_WEBHOOK_SECRET']), ...(a.webhookAllowedOrigins.length ? [] : ['AUTOMATION_WEBHOOK_ALLOWED_HOSTS'])],
  };
}

export async function createServices(config: Config, log: Logger, overrides: ServiceOverrides = {}): Promise<Services> {
  const missing = missingCredentials(config);
  const runtime = (provider: ProviderName) =>
    new ProviderRuntime({ provider, resilience: config.resilience, log, missing: missing[provider], baseFetch: overrides.baseFetch });
  const runtimes: Record<ProviderName, ProviderRuntime> = {
    intercom: runtime('intercom'),
    sendgrid: runtime('sendgrid'),
    mixpanel: runtime('mixpanel'),
    slack: runtime('slack'),
    webhook: runtime('webhook'),
  };
  const metrics = new Metrics({ processMetrics: config.observability.metrics });
  metrics.watchProviders(runtimes);
  const store = await openStore(config, log);
  metrics.watchDatabase(store.db);
  // Processes on one database that send with the same account share its rate budget.
  const sharing = (
    [
      ['intercom', config.intercom.accessToken],
      ['sendgrid', config.sendgrid.apiKey],
    ] as const
  ).flatMap(([provider, credential]) => {
    if (!credential) return [];
    const peers = new BudgetPeers(store.db, BudgetPeers.key(provider, credential), log.child({ provider }));
    runtimes[provider].budget.shareWith(peers);
    return [peers];
  });
  const intercom = new IntercomService({ config, log: log.child({ provider: 'intercom' }), runtime: runtimes.intercom });
  const sendgrid = new SendGridService({ config, log: log.child({ provider: 'sendgrid' }), runtime: runtimes.sendgrid });
  const mixpanel = new MixpanelService({ config, log: log.child({ provider: 'mixpanel' }), runtime: runtimes.mixpanel }, store.db);
  const slack = new SlackService({ config, log: log.child({ provider: 'slack' }), runtime: runtimes.slack });
  const webhooks = new WebhookService({ config, log: log.child({ provider: 'webhook' }), runtime: runtimes.webhook }, overrides.webhookLookup);
  const dailyLimit = new DailySendLimit(config.safety.dailySendLimit);
  const deliveryLog = log.child({ component: 'delivery' });
  const delivery = new Delivery({ config, log: deliveryLog, store, runtimes, email: sendgrid, intercom, analytics: mixpanel, dailyLimit, observer: metrics });
  const renderGate = new RenderGate();
  const tokens = new ConfirmationTokens(store.db, config.campaigns.confirmationTtlS);
  const campaigns = new CampaignService({
    config,
    log: log.child({ component: 'campaigns' }),
    store,
    runtimes,
    outbox: delivery.outbox,
    wakeDelivery: () => delivery.wake(),
    renderGate,
    tokens,
  });
  const automationRepo = new AutomationRepository(store.db, store.dialect);
  await automationRepo.registerStoredSecrets(); // webhook URLs' secret paths are redacted from the first log line on
  const automations = new AutomationService({
    config,
    log: log.child({ component: 'automations' }),
    store,
    repo: automationRepo,
    runtimes,
    intercom,
    mixpanel,
    slack,
    webhooks,
    outbox: delivery.outbox,
    wakeDelivery: () => delivery.wake(),
    tokens,
    renderGate,
    observer: metrics,
  });
  const idempotency = new IdempotencyStore(store.db, config.safety, log.child({ component: 'idempotency' }));
  const audit = new AuditLog(store.db, config.safety, log.child({ component: 'audit' }));
  const directSends = new DirectSendGuard({ config, store, dailyLimit, idempotency, log: log.child({ component: 'direct-send' }) });
  const inbox = new Inbox(config, store, log.child({ component: 'inbox' }), metrics);
  mixpanel.start();
  await campaigns.start();
  delivery.start();
  inbox.start();
  automations.start();
  // Retention: old rows of every kind, in small batches, now and every CS_MCP_RETENTION_INTERVAL_S.
  const retention = new Retention({
    db: store.db,
    config: config.retention,
    log: log.child({ component: 'retention' }),
    prune: { audit: (now, limit) => audit.prune(now, limit), idempotency: (now, limit) => idempotency.prune(now, limit) },
  });
  retention.start();

  let closing: Promise<void> | undefined;
  const services: Services = {
    config,
    log,
    runtimes,
    intercom,
    sendgrid,
    mixpanel,
    slack,
    webhooks,
    store,
    delivery,
    campaigns,
    inbox,
    automations,
    renderGate,
    dailyLimit,
    idempotency,
    audit,
    directSends,
    metrics,
    retention,
    close: () =>
      (closing ??= (async () => {
        await retention.stop().catch((err) => log.error({ err }, 'stopping retention failed'));
        await automations.stop().catch((err) => log.error({ err }, 'stopping automations failed'));
        await delivery.stop().catch((err) => log.error({ err }, 'stopping delivery failed'));
        await inbox.stop().catch((err) => log.error({ err }, 'stopping the inbox processor failed'));
        await mixpanel.close().catch((err) => log.error({ err }, 'flushing Mixpanel failed'));
        await webhooks.close();
        await audit.flush();
        await idempotency.flush().catch((err) => log.error({ err }, 'storing waiting send outcomes failed'));
        await Promise.all(sharing.map((p) => p.close()));
        await store.close().catch((err) => log.error({ err }, 'closing the store failed'));
      })()),
  };
  return services;
}
