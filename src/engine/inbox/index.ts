import type { KeyObject } from 'node:crypto';
import { parseSendGridPublicKey, type Config } from '../../config.js';
import type { Logger } from '../../log.js';
import type { Store } from '../../store/index.js';
import { PROVIDER_EVENT_NAMES } from './interpret.js';
import { ROSTER_EVENT_NAMES } from '../../store/customer-events.js';

/** Names a product event may not take: those provider webhooks record, and the roster's own (its state). */
const RESERVED_PRODUCT_EVENT_NAMES: ReadonlySet<string> = new Set([...PROVIDER_EVENT_NAMES, ...ROSTER_EVENT_NAMES]);
import { BadPayload, ENDPOINTS, parseIntercom, parseProductEvents, parseSendGrid, type Endpoint, type InboxRecord } from './parse.js';
import { InboxProcessor } from './processor.js';
import { InboxRepository } from './repository.js';
import { EVENTS_SIGNATURE_HEADER, verifyIntercom, verifyProductEvents, verifySendGrid, type Verification } from './verify.js';

export { ENDPOINTS, type Endpoint } from './parse.js';

/** What the HTTP layer answers. */
export interface WebhookReply {
  status: number;
  body: Record<string, unknown>;
}

export interface EndpointStatus {
  endpoint: Endpoint;
  path: string;
  enabled: boolean;
  /** The variable to set, when disabled. */
  missing?: string;
  last_verified_at: string | null;
  verified_requests: number;
  pending: number;
  unmatched: number;
  failed: number;
  /** Requests this process refused (bad signature, stale timestamp, bad body), and the last reason. */
  rejected_here: number;
  last_rejection?: { at: string; status: number; reason: string };
}

/** Allowance for Intercom's clock being ahead of ours when judging a notification's age. */
const INTERCOM_CLOCK_MARGIN_S = 3600;

const VARIABLE: Record<Endpoint, string> = { sendgrid: 'SENDGRID_WEBHOOK_PUBLIC_KEY', intercom: 'INTERCOM_CLIENT_SECRET', events: 'CS_MCP_EVENTS_WEBHOOK_SECRET' };

type Headers = Record<string, string | string[] | undefined>;
const header = (h: Headers, name: string) => {
  const v = h[name];
  return Array.isArray(v) ? v[0] : v;
};

/**
 * The inbound side: verifies and stores provider webhooks (answering only after the events are
 * committed), and runs the processor that applies them. Needs nothing but the store and config, so
 * the HTTP server and the headless worker mount the same thing.
 */
/** Told what the inbox stores, refuses and settles (metrics). */
export interface InboxObserver {
  webhooksStored(provider: Endpoint, stored: number, duplicates: number): void;
  webhookRequestRefused(provider: Endpoint, status: number): void;
  webhookSettled(provider: string, state: string, lagSeconds: number): void;
}

export class Inbox {
  readonly repo: InboxRepository;
  readonly processor: InboxProcessor;
  private readonly sendgridKey?: KeyObject;
  private readonly rejections = new Map<Endpoint, { n: number; last: { at: string; status: number; reason: string } }>();

  constructor(
    private readonly config: Config,
    private readonly store: Store,
    private readonly log: Logger,
    private readonly observer?: InboxObserver,
  ) {
    this.repo = new InboxRepository(store.db, store.dialect);
    this.processor = new InboxProcessor({
      repo: this.repo,
      store,
      log,
      observer,
      pollMs: config.webhooks.pollMs,
      retentionDays: config.webhooks.retentionDays,
      concurrency: store.dialect === 'postgres' ? 3 : 1,
    });
    if (config.webhooks.sendgridPublicKey) this.sendgridKey = parseSendGridPublicKey(config.webhooks.sendgridPublicKey);
  }

  enabled(endpoint: Endpoint): boolean {
    const w = this.config.webhooks;
    return endpoint === 'sendgrid' ? !!this.sendgridKey : endpoint === 'intercom' ? !!w.intercomClientSecret : !!w.eventsSecret;
  }

  /** How request bodies must arrive: size, time and minimum rate (WEBHOOK_MAX_BODY_BYTES, _BODY_TIMEOUT_MS, _MIN_BODY_BYTES_PER_S). */
  get bodyLimits(): { maxBytes: number; timeoutMs: number; minBytesPerS: number } {
    const w = this.config.webhooks;
    return { maxBytes: w.maxBodyBytes, timeoutMs: w.bodyTimeoutMs, minBytesPerS: w.minBodyBytesPerS };
  }

  get maxBodyBytes(): number {
    return this.config.webhooks.maxBodyBytes;
  }

  start(): void {
    this.processor.start();
  }

  async stop(): Promise<void> {
    await this.processor.stop();
  }

  /** Verifies, parses and stores one request; every expected outcome (refusal, bad body, storage down) is a reply. */
  async receive(endpoint: Endpoint, headers: Headers, body: Buffer, now = Date.now()): Promise<WebhookReply> {
    if (!this.enabled(endpoint)) return { status: 404, body: { error: `This endpoint is not enabled (set ${VARIABLE[endpoint]}).` } };
    const verified = this.verify(endpoint, headers, body, now);
    if (!verified.ok) return this.reject(endpoint, 401, `signature check failed: ${verified.reason}`);
    const at = new Date(now).toISOString();
    let records: InboxRecord[];
    try {
      if (endpoint === 'sendgrid') records = parseSendGrid(body, at);
      else if (endpoint === 'events') records = parseProductEvents(body, at, RESERVED_PRODUCT_EVENT_NAMES);
      else {
        const parsed = parseIntercom(body, at);
        records = parsed.records;
        const stale = parsed.ping ? undefined : this.intercomTooOld(parsed.sentAt, now);
        if (stale) return this.reject(endpoint, 400, stale);
        if (parsed.ping) {
          await this.repo.noteVerified(this.store.db, endpoint, at);
          return { status: 200, body: { ok: true, ping: true } };
        }
      }
    } catch (err) {
      if (err instanceof BadPayload) return this.reject(endpoint, 400, err.message, err.problems);
      throw err;
    }
    try {
      const { stored, duplicates } = await this.repo.store(endpoint, records, now);
      if (stored) this.processor.wake();
      this.observer?.webhooksStored(endpoint, stored, duplicates);
      this.log.debug({ endpoint, received: records.length, stored, duplicates }, 'webhook events stored');
      return { status: 200, body: { ok: true, received: records.length, stored, duplicates } };
    } catch (err) {
      // Not stored: a 5xx makes the provider deliver the batch again later.
      this.log.error({ err, endpoint, events: records.length }, 'storing webhook events failed');
      return { status: 503, body: { error: 'The events could not be stored right now; deliver them again later.' } };
    }
  }

  /**
   * Intercom signs no timestamp: a captured delivery stays valid for good, and its dedup record (the
   * stored inbox event) is pruned after WEBHOOK_RETENTION_DAYS. So a notification created longer ago
   * than that horizon, less an hour for clocks, is refused: anything younger is still remembered.
   */
  private intercomTooOld(sentAt: number | undefined, now: number): string | undefined {
    const horizonS = this.config.webhooks.retentionDays * 86_400 - INTERCOM_CLOCK_MARGIN_S;
    if (sentAt === undefined) return 'the notification has no created_at: a delivery that cannot be dated cannot be told from a replay';
    if (now / 1000 - sentAt > horizonS) {
      return `the notification was created ${new Date(sentAt * 1000).toISOString()}, longer ago than the replay horizon (WEBHOOK_RETENTION_DAYS less an hour): refused as a possible replay`;
    }
    return undefined;
  }

  private verify(endpoint: Endpoint, h: Headers, body: Buffer, now: number): Verification {
    const w = this.config.webhooks;
    if (endpoint === 'sendgrid') {
      return verifySendGrid(this.sendgridKey!, header(h, 'x-twilio-email-event-webhook-signature'), header(h, 'x-twilio-email-event-webhook-timestamp'), body, w.maxAgeS, now);
    }
    if (endpoint === 'intercom') return verifyIntercom(w.intercomClientSecret!, header(h, 'x-hub-signature'), body);
    return verifyProductEvents(w.eventsSecret!, header(h, EVENTS_SIGNATURE_HEADER), body, w.maxAgeS, now);
  }

  /** Records a refusal (this process, in memory: an unauthenticated request never writes to the database). */
  reject(endpoint: Endpoint, status: number, reason: string, problems?: string[]): WebhookReply {
    const last = { at: new Date().toISOString(), status, reason };
    const r = this.rejections.get(endpoint);
    this.rejections.set(endpoint, { n: (r?.n ?? 0) + 1, last });
    this.observer?.webhookRequestRefused(endpoint, status);
    this.log.warn({ endpoint, status, reason }, 'webhook request refused');
    return { status, body: { error: reason, ...(problems?.length ? { problems } : {}) } };
  }

  async status(): Promise<EndpointStatus[]> {
    const [endpoints, backlog] = await Promise.all([this.repo.endpoints(), this.repo.backlog()]);
    const count = (e: Endpoint, state: string) => backlog.find((b) => b.provider === e && b.state === state)?.n ?? 0;
    return ENDPOINTS.map((e) => {
      const seen = endpoints.get(e);
      const rejected = this.rejections.get(e);
      return {
        endpoint: e,
        path: `/webhooks/${e}`,
        enabled: this.enabled(e),
        ...(this.enabled(e) ? {} : { missing: VARIABLE[e] }),
        last_verified_at: seen?.last_verified_at ?? null,
        verified_requests: seen?.verified_requests ?? 0,
        pending: count(e, 'pending'),
        unmatched: count(e, 'unmatched'),
        failed: count(e, 'failed'),
        rejected_here: rejected?.n ?? 0,
        ...(rejected ? { last_rejection: rejected.last } : {}),
      };
    });
  }
}
