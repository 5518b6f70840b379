import type { Config } from '../../config.js';
import type { Logger } from '../../log.js';
import type { ProviderRuntime } from '../../resilience/provider-runtime.js';
import type { ProviderName } from '../../result.js';
import { DailySendLimit } from '../../safety/daily-limit.js';
import type { Store } from '../../store/index.js';
import { SendAdmission } from './admission.js';
import { ChannelDelivery, type EmailSender, type EventTracker, type IntercomMessenger } from './channels.js';
import { OutboxDispatcher, type ChannelGate, type DispatcherOptions } from './dispatcher.js';
import { CHANNELS, PROVIDER_OF_CHANNEL } from './message.js';
import { FollowUpQueue } from './follow-ups.js';
import { OutboxRepository } from './outbox.js';
import { SettlementWriter } from './settlement.js';

export interface DeliveryDeps {
  config: Config;
  log: Logger;
  store: Store;
  runtimes: Record<ProviderName, ProviderRuntime>;
  email: EmailSender;
  intercom: IntercomMessenger;
  analytics: EventTracker;
  dailyLimit: DailySendLimit;
  /** Told when messages go back to the queue to be tried again (metrics). */
  observer?: DispatcherOptions['observer'];
  /** Overrides for tests. */
  leaseMs?: number;
}

/** Where every message is sent from: the outbox, its send-time rules and the dispatcher, shared by all producers. */
export class Delivery {
  readonly outbox: OutboxRepository;
  readonly admission: SendAdmission;
  readonly dispatcher: OutboxDispatcher;
  readonly intercomFollowUps: FollowUpQueue;
  private readonly settlements: SettlementWriter;

  constructor(private readonly deps: DeliveryDeps) {
    const { config, store } = deps;
    this.outbox = new OutboxRepository(store.db, store.dialect);
    this.admission = new SendAdmission(this.outbox, deps.dailyLimit, {
      perDay: config.automations.maxPerContactPerDay,
      perWeek: config.automations.maxPerContactPerWeek,
      kinds: config.campaigns.frequencyCap ? ['automation', 'campaign'] : ['automation'],
    });
    // Tracking events in Intercom wait while Intercom has messages to send or to pace.
    const intercomChannels = CHANNELS.filter((c) => PROVIDER_OF_CHANNEL[c] === 'intercom');
    this.intercomFollowUps = new FollowUpQueue('intercom tracking', () => !this.dispatcher.busy(intercomChannels) && deps.runtimes.intercom.budget.waiting === 0, deps.log);
    const channels = new ChannelDelivery({
      store,
      log: deps.log,
      runtimes: deps.runtimes,
      email: deps.email,
      intercom: deps.intercom,
      analytics: deps.analytics,
      intercomFollowUps: this.intercomFollowUps,
      batchEmail: config.campaigns.emailBatching,
    });
    this.settlements = new SettlementWriter(this.outbox, store.timeline, channels, deps.log);
    this.dispatcher = new OutboxDispatcher({
      repo: this.outbox,
      admission: this.admission,
      port: channels,
      settlements: this.settlements,
      log: deps.log,
      concurrency: config.campaigns.dispatchConcurrency,
      pollMs: config.campaigns.dispatchPollMs,
      leaseMs: deps.leaseMs ?? config.campaigns.leaseMs,
      retryMaxMs: config.resilience.maxDelayMs,
      channelGate: () => this.channelGate(),
      observer: deps.observer,
    });
  }

  /**
   * Rows of a provider whose circuit is open wait in the queue instead of failing. Once the circuit's
   * reset time has passed they are claimable again: their own delivery is the trial call that closes it.
   */
  private channelGate(): ChannelGate {
    const blocked: string[] = [];
    let reopensInMs: number | undefined;
    let paced = false;
    for (const channel of CHANNELS) {
      const runtime = this.deps.runtimes[PROVIDER_OF_CHANNEL[channel]];
      // A queue at the pacer (not one request that happened to arrive within its spacing): the budget is the limit.
      paced ||= runtime.budget.waiting > 1;
      const policy = runtime.policy;
      if (policy.state !== 'open') continue;
      const wait = policy.msUntilHalfOpen() ?? 0;
      if (wait <= 0) continue;
      blocked.push(channel);
      reopensInMs = Math.min(reopensInMs ?? wait, wait);
    }
    return { blocked, reopensInMs, paced };
  }

  /** Starts sending (not in read-only mode: then queued messages stay queued). */
  start(): void {
    if (this.deps.config.safety.readOnly) {
      this.deps.log.warn('read-only mode (CS_MCP_READ_ONLY=true): the outbox sends nothing; queued messages wait');
      return;
    }
    this.dispatcher.start();
  }

  wake(): void {
    this.dispatcher.wake();
  }

  async stop(): Promise<void> {
    await this.dispatcher.stop();
    await this.intercomFollowUps.drain(3_000);
  }
}
