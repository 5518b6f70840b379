import type { Config } from './config.js';
import type { Logger } from './log.js';
import { CampaignService } from './engine/campaign-service.js';
import { ChannelDelivery } from './engine/channels.js';
import { IntercomService } from './providers/intercom/service.js';
import { MixpanelService } from './providers/mixpanel/service.js';
import { SendGridService } from './providers/sendgrid/service.js';
import { ProviderRuntime } from './resilience/provider-runtime.js';
import type { ProviderName } from './result.js';
import { openStore, type Store } from './store/index.js';

/** Everything the tools can use. Built once per server process; tools receive it in their context. */
export interface Services {
  config: Config;
  log: Logger;
  runtimes: Record<ProviderName, ProviderRuntime>;
  intercom: IntercomService;
  sendgrid: SendGridService;
  mixpanel: MixpanelService;
  store: Store;
  campaigns: CampaignService;
  /** Stops background work (flushing what is buffered) and closes the store. Safe to call twice. */
  close(): Promise<void>;
}

export interface ServiceOverrides {
  /** Replaces global fetch for every provider (tests, benchmarks). */
  baseFetch?: typeof fetch;
}

/** Which variables each provider still needs, from the config. Empty: ready to use. */
export function missingCredentials(config: Config): Record<ProviderName, string[]> {
  const m = config.mixpanel;
  const mixpanelAuth = m.projectToken || m.apiSecret || (m.serviceAccountUsername && m.serviceAccountSecret && m.projectId);
  return {
    intercom: config.intercom.accessToken ? [] : ['INTERCOM_ACCESS_TOKEN'],
    sendgrid: config.sendgrid.apiKey ? [] : ['SENDGRID_API_KEY'],
    mixpanel: mixpanelAuth ? [] : ['MIXPANEL_PROJECT_TOKEN'],
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
  };
  const store = await openStore(config, log);
  const intercom = new IntercomService({ config, log: log.child({ provider: 'intercom' }), runtime: runtimes.intercom });
  const sendgrid = new SendGridService({ config, log: log.child({ provider: 'sendgrid' }), runtime: runtimes.sendgrid });
  const mixpanel = new MixpanelService({ config, log: log.child({ provider: 'mixpanel' }), runtime: runtimes.mixpanel });
  const campaignLog = log.child({ component: 'campaigns' });
  const port = new ChannelDelivery({
    store,
    log: campaignLog,
    runtimes,
    email: sendgrid,
    intercom,
    analytics: mixpanel,
  });
  const campaigns = new CampaignService({ config, log: campaignLog, store, runtimes, port });
  mixpanel.start();
  campaigns.start();

  let closing: Promise<void> | undefined;
  const services: Services = {
    config,
    log,
    runtimes,
    intercom,
    sendgrid,
    mixpanel,
    store,
    campaigns,
    close: () =>
      (closing ??= (async () => {
        await campaigns.close().catch((err) => log.error({ err }, 'stopping campaigns failed'));
        await mixpanel.close().catch((err) => log.error({ err }, 'flushing Mixpanel failed'));
        await store.close().catch((err) => log.error({ err }, 'closing the store failed'));
      })()),
  };
  return services;
}
