import { createPublicKey } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseEnv } from 'node:util';
import { z } from 'zod';
import type { RenderBudget } from './engine/campaigns/plan.js';
import { PROVIDERS, type ProviderName } from './result.js';
import { APPROVAL_POLICIES, type ApprovalPolicy } from './safety/approval.js';
import { urlSecrets } from './secrets.js';

/**
 * Every setting comes from the environment (plus, at most, one settings file the user chose: see
 * `readSettingsFile`), validated here once. Missing provider credentials are not an error: those tools
 * answer `not_configured` instead.
 */

/** 32 MiB: every tool field at its schema maximum fits, with room to spare (see README, "Limits"). */
export const DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024;

const emptyToUndefined = (v: unknown) => (typeof v === 'string' && v.trim() === '' ? undefined : v);
const optionalString = z.preprocess(emptyToUndefined, z.string().trim().optional());
const int = (def: number, min: number, max: number) =>
  z.preprocess(emptyToUndefined, z.coerce.number().int().min(min).max(max).default(def));
const url = (def: string) =>
  z.preprocess(
    emptyToUndefined,
    z
      .string()
      .url()
      .refine((u) => /^https?:\/\//.test(u), 'must start with http:// or https://')
      .default(def)
      .transform((u) => u.replace(/\/+$/, '')),
  );
const bool = (def: boolean) =>
  z.preprocess(
    emptyToUndefined,
    z
      .enum(['true', 'false', '1', '0', 'yes', 'no'])
      .default(def ? 'true' : 'false')
      .transform((v) => v === 'true' || v === '1' || v === 'yes'),
  );

const envSchema = z.object({
  LOG_LEVEL: z.preprocess(
    emptyToUndefined,
    z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  ),
  CS_MCP_DATA_DIR: optionalString,
  DATABASE_URL: z.preprocess(
    emptyToUndefined,
    z
      .string()
      .refine((u) => /^(postgres|postgresql|sqlite|file):/.test(u) || !u.includes('://'), {
        message: 'must be a postgres:// URL, a sqlite: / file: URL, or a path to a SQLite file',
      })
      .optional(),
  ),

  MCP_HTTP_HOST: z.preprocess(emptyToUndefined, z.string().default('127.0.0.1')),
  MCP_HTTP_PORT: int(3000, 0, 65535),
  MCP_HTTP_TOKEN: optionalString,
  MCP_HTTP_ALLOWED_HOSTS: optionalString,
  MCP_HTTP_MAX_SESSIONS: int(100, 1, 10_000),
  MCP_HTTP_SESSION_IDLE_MS: int(30 * 60_000, 50, 7 * 86_400_000),
  MCP_HTTP_STATELESS: bool(false),
  MCP_HTTP_PUBLIC_URL: optionalString,
  MCP_OAUTH_ISSUER: optionalString,
  MCP_OAUTH_AUDIENCE: optionalString,
  MCP_OAUTH_REQUIRED_SCOPES: optionalString,
  MCP_OAUTH_JWKS_URL: optionalString,
  MCP_OAUTH_INTROSPECTION_URL: optionalString,
  MCP_OAUTH_CLIENT_ID: optionalString,
  MCP_OAUTH_CLIENT_SECRET: optionalString,
  MCP_OAUTH_JWKS_CACHE_MS: int(10 * 60_000, 1_000, 86_400_000),
  MCP_OAUTH_JWKS_COOLDOWN_MS: int(30_000, 0, 3_600_000),
  MCP_OAUTH_CLOCK_TOLERANCE_S: int(30, 0, 300),
  MCP_METRICS: bool(false),
  MCP_METRICS_TOKEN: optionalString,
  MCP_READY_TIMEOUT_MS: int(2000, 50, 60_000),
  MCP_READY_PROVIDERS: optionalString,
  MCP_MAX_REQUEST_BYTES: int(DEFAULT_MAX_REQUEST_BYTES, 1024 * 1024, 512 * 1024 * 1024),
  CS_MCP_ALLOW_CUSTOM_PROVIDER_HOSTS: bool(false),

  RETRY_MAX_RETRIES: int(3, 0, 10),
  RETRY_BASE_DELAY_MS: int(1000, 0, 60_000),
  RETRY_MAX_DELAY_MS: int(60_000, 0, 600_000),
  CIRCUIT_BREAKER_FAILURE_THRESHOLD: int(5, 1, 1000),
  CIRCUIT_BREAKER_RESET_MS: int(60_000, 10, 3_600_000),
  HTTP_TIMEOUT_MS: int(10_000, 10, 300_000),

  INTERCOM_ACCESS_TOKEN: optionalString,
  INTERCOM_BASE_URL: url('https://api.intercom.io'),
  INTERCOM_ADMIN_ID: optionalString,

  SENDGRID_API_KEY: optionalString,
  SENDGRID_BASE_URL: url('https://api.sendgrid.com'),
  SENDGRID_FROM_EMAIL: z.preprocess(emptyToUndefined, z.string().email().optional()),
  SENDGRID_FROM_NAME: optionalString,
  SENDGRID_UNSUBSCRIBE_GROUP_ID: z.preprocess(emptyToUndefined, z.coerce.number().int().positive().optional()),
  SENDGRID_SANDBOX: bool(false),

  MIXPANEL_PROJECT_TOKEN: optionalString,
  MIXPANEL_PROJECT_ID: optionalString,
  MIXPANEL_SERVICE_ACCOUNT_USERNAME: optionalString,
  MIXPANEL_SERVICE_ACCOUNT_SECRET: optionalString,
  MIXPANEL_API_SECRET: optionalString,
  MIXPANEL_API_HOST: url('https://api.mixpanel.com'),
  MIXPANEL_FLUSH_INTERVAL_MS: int(2000, 10, 600_000),
  MIXPANEL_MAX_BUFFERED_EVENTS: int(200_000, 10, 10_000_000),

  CAMPAIGN_CONFIRMATION_TTL_S: int(900, 1, 86_400),
  CAMPAIGN_MAX_SCHEDULE_DAYS: int(365, 1, 3_650),
  CAMPAIGN_DISPATCH_CONCURRENCY: int(64, 1, 256),
  CAMPAIGN_DISPATCH_POLL_MS: int(1000, 10, 60_000),
  CAMPAIGN_LEASE_MS: int(2_500, 500, 3_600_000),
  CAMPAIGN_RENDER_BUDGET_MS: int(20_000, 100, 600_000),
  CAMPAIGN_FREQUENCY_CAP: bool(false),
  CAMPAIGN_EMAIL_BATCHING: bool(true),

  // Outbound safety (see README "Safety").
  CS_MCP_APPROVAL: z.preprocess(emptyToUndefined, z.enum(APPROVAL_POLICIES).default('auto')),
  CS_MCP_APPROVAL_THRESHOLD: int(1, 1, 1_000_000),
  CS_MCP_APPROVAL_TIMEOUT_S: int(600, 5, 86_400),
  CS_MCP_MAX_RECIPIENTS_PER_SEND: int(100, 1, 50_000),
  CS_MCP_DAILY_SEND_LIMIT: int(10_000, 0, 10_000_000),
  CS_MCP_READ_ONLY: bool(false),
  CS_MCP_TOOLSETS: optionalString,
  CS_MCP_TOOLS_DENY: optionalString,
  CS_MCP_IDEMPOTENCY_RETENTION_H: int(168, 1, 24 * 365),
  CS_MCP_DUPLICATE_WINDOW_S: int(600, 0, 86_400),
  CS_MCP_AUDIT_RETENTION_DAYS: int(90, 1, 3650),
  CS_MCP_AUDIT_BODIES: z.preprocess(emptyToUndefined, z.enum(['redact', 'full']).default('redact')),
  // Retention (see README "Limits"): what is deleted, and when; the housekeeping loop deletes in small batches.
  CS_MCP_OUTBOX_RETENTION_DAYS: int(180, 8, 36_500),
  CS_MCP_TIMELINE_RETENTION_DAYS: int(730, 1, 36_500),
  CS_MCP_EVENTS_RETENTION_DAYS: int(365, 1, 36_500),
  CS_MCP_CONFIRMATION_RETENTION_DAYS: int(30, 1, 3650),
  CS_MCP_RETENTION_BATCH: int(500, 10, 10_000),
  CS_MCP_RETENTION_INTERVAL_S: int(3600, 1, 86_400),
  AUTOMATION_MAX_MESSAGES_PER_CONTACT_PER_DAY: int(1, 1, 1000),
  AUTOMATION_MAX_MESSAGES_PER_CONTACT_PER_WEEK: int(3, 1, 10_000),

  // Inbound webhooks (see README "Webhooks"): each endpoint is enabled by its secret.
  SENDGRID_WEBHOOK_PUBLIC_KEY: z.preprocess(
    emptyToUndefined,
    z.string().trim().refine(isP256PublicKey, 'must be the verification key SendGrid shows for the Signed Event Webhook (base64, an ECDSA P-256 public key)').optional(),
  ),
  INTERCOM_CLIENT_SECRET: optionalString,
  CS_MCP_EVENTS_WEBHOOK_SECRET: z.preprocess(emptyToUndefined, z.string().trim().min(16, 'must be at least 16 characters (use a long random value)').optional()),
  WEBHOOK_MAX_AGE_S: int(300, 10, 86_400),
  WEBHOOK_MAX_BODY_BYTES: int(2 * 1024 * 1024, 1024, 64 * 1024 * 1024),
  WEBHOOK_HEADERS_TIMEOUT_MS: int(10_000, 1000, 120_000),
  WEBHOOK_BODY_TIMEOUT_MS: int(30_000, 1000, 600_000),
  WEBHOOK_MIN_BODY_BYTES_PER_S: int(1024, 0, 100 * 1024 * 1024),
  WEBHOOK_RETENTION_DAYS: int(30, 1, 3650),
  WEBHOOK_PROCESS_POLL_MS: int(1000, 10, 60_000),
  // Automations (see README "Automations").
  AUTOMATION_TICK_MS: int(1000, 10, 60_000),
  AUTOMATION_SWEEP_MS: int(60_000, 50, 3_600_000),
  AUTOMATION_LEASE_MS: int(60_000, 500, 3_600_000),
  AUTOMATION_STEP_CONCURRENCY: int(8, 1, 64),
  AUTOMATION_CATCH_UP_MINUTES: int(60, 0, 10_080),
  AUTOMATION_MAX_CHAIN_DEPTH: int(3, 1, 10),
  AUTOMATION_MIN_SCHEDULE_INTERVAL_SECONDS: int(3600, 1, 604_800),
  AUTOMATION_MAX_ACTIONS_PER_WORKFLOW_PER_HOUR: int(200, 1, 1_000_000),
  AUTOMATION_MAX_ACTIONS_PER_HOUR: int(1000, 1, 10_000_000),
  AUTOMATION_WEBHOOK_ALLOWED_HOSTS: z.preprocess(emptyToUndefined, z.string().optional().transform(originList)),
  AUTOMATION_WEBHOOK_PRIVATE_ORIGINS: z.preprocess(emptyToUndefined, z.string().optional().transform(originList)),
  AUTOMATION_WEBHOOK_SECRET: optionalString,
  SLACK_WEBHOOK_URL: z.preprocess(emptyToUndefined, z.string().url().refine((u) => /^https?:\/\//.test(u), 'must start with http:// or https://').optional()),
  INTERCOM_TICKET_TYPE_ID: optionalString,
});

/** SendGrid shows the key as base64 DER (SPKI); a PEM block is accepted too. */
export function parseSendGridPublicKey(value: string) {
  const pem = value.includes('BEGIN PUBLIC KEY');
  return createPublicKey(pem ? value : { key: Buffer.from(value.replace(/\s+/g, ''), 'base64'), format: 'der', type: 'spki' });
}

function isP256PublicKey(value: string): boolean {
  try {
    const key = parseSendGridPublicKey(value);
    return key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1';
  } catch {
    return false;
  }
}

export type Env = z.input<typeof envSchema>;

export interface ResilienceConfig {
  maxRetries: number;
  baseDelayMs: number;
  maxDelayMs: number;
  breakerThreshold: number;
  breakerResetMs: number;
  timeoutMs: number;
}

export interface Config {
  logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
  dataDir: string;
  /** `postgres://…` for PostgreSQL; otherwise the SQLite file path. */
  database: { kind: 'postgres'; url: string } | { kind: 'sqlite'; file: string };
  http: {
    host: string;
    port: number;
    token?: string;
    allowedHosts?: string[];
    maxSessions: number;
    sessionIdleMs: number;
    stateless: boolean;
    /** The /mcp URL clients use (behind a proxy or load balancer: its address, not the bind address). */
    publicUrl?: string;
    /** Sign-in (OAuth 2.1 resource server): only this issuer's access tokens are accepted. */
    oauth?: OAuthConfig;
  };
  /** GET /metrics, /readyz (see src/transports/http-observability.ts). */
  observability: {
    /** MCP_METRICS=true or MCP_METRICS_TOKEN set: /metrics answers; otherwise 404. */
    metrics: boolean;
    /** When set, /metrics wants `Authorization: Bearer <token>`; without it, /metrics is served on a loopback bind only. */
    metricsToken?: string;
    /** Longest a /readyz database check may take before it answers 503. */
    readyTimeoutMs: number;
    /** Providers that must be configured for /readyz to answer 200. */
    readyProviders: ProviderName[];
  };
  /** Largest MCP request accepted, in bytes (an HTTP body or one stdio line). */
  maxRequestBytes: number;
  resilience: ResilienceConfig;
  intercom: { accessToken?: string; baseUrl: string; adminId?: string };
  sendgrid: {
    apiKey?: string;
    baseUrl: string;
    fromEmail?: string;
    fromName?: string;
    unsubscribeGroupId?: number;
    sandbox: boolean;
  };
  mixpanel: {
    projectToken?: string;
    projectId?: string;
    serviceAccountUsername?: string;
    serviceAccountSecret?: string;
    apiSecret?: string;
    apiHost: string;
    flushIntervalMs: number;
    /** Events held in the database awaiting delivery at most; past it, tracking is refused. */
    maxBufferedEvents: number;
  };
  campaigns: {
    confirmationTtlS: number;
    /** How far ahead a scheduled_send_time may be, in days. */
    maxScheduleDays: number;
    dispatchConcurrency: number;
    dispatchPollMs: number;
    leaseMs: number;
    /** The whole-audience render budget of one preview or confirmation, and each recipient's share. */
    renderBudget: RenderBudget;
    /** Campaign messages count against, and are held by, the automations' per-contact frequency cap. */
    frequencyCap: boolean;
    /** Email messages small enough share SendGrid requests (up to 1,000 personalizations each). */
    emailBatching: boolean;
  };
  safety: {
    approval: ApprovalPolicy;
    approvalThreshold: number;
    approvalTimeoutMs: number;
    maxRecipientsPerSend: number;
    /** 0: no limit. */
    dailySendLimit: number;
    readOnly: boolean;
    /** undefined: every toolset. */
    toolsets?: string[];
    toolsDeny: string[];
    idempotencyRetentionMs: number;
    duplicateWindowMs: number;
    auditRetentionDays: number;
    auditBodies: 'redact' | 'full';
  };
  retention: RetentionConfig;
  automations: AutomationsConfig;
  /** Inbound provider webhooks; an endpoint without its secret answers 404. */
  webhooks: {
    sendgridPublicKey?: string;
    intercomClientSecret?: string;
    eventsSecret?: string;
    /** Replay window for signed timestamps (SendGrid, product events), both directions. */
    maxAgeS: number;
    maxBodyBytes: number;
    /** WEBHOOK_HEADERS_TIMEOUT_MS, WEBHOOK_BODY_TIMEOUT_MS, WEBHOOK_MIN_BODY_BYTES_PER_S: how slowly a request may arrive. */
    headersTimeoutMs: number;
    bodyTimeoutMs: number;
    minBodyBytesPerS: number;
    /** Settled inbox events older than this are deleted. */
    retentionDays: number;
    pollMs: number;
  };
}

/** How long each kind of record is kept (the audit, idempotency and inbox ones live with their owners). */
export interface RetentionConfig {
  /** Finished messages (sent, failed, cancelled, in doubt, skipped) of finished campaigns and enrolments. */
  outboxDays: number;
  timelineDays: number;
  customerEventsDays: number;
  /** Used and expired confirmation tokens. */
  confirmationDays: number;
  /** Rows deleted per statement; the loop yields between statements. */
  batch: number;
  /** How often the housekeeping loop looks for old rows once none are left. */
  intervalMs: number;
}

export interface AutomationsConfig {
  maxPerContactPerDay: number;
  maxPerContactPerWeek: number;
  /** How often the scheduler looks for due steps and triggers (recorded events wake it at once in-process). */
  tickMs: number;
  /** How often state-based triggers (renewals, usage, inactivity) are evaluated. */
  sweepMs: number;
  /** How long a claimed enrolment / the trigger lease stays reserved for a process that stopped renewing it. */
  leaseMs: number;
  stepConcurrency: number;
  /** A missed time-based occurrence younger than this fires once on start; older ones are skipped. */
  catchUpMs: number;
  /** Chains of workflows triggering each other stop at this depth. */
  maxChainDepth: number;
  /** The shortest time allowed between two runs of a schedule (time_based); under a minute allows a seconds field. */
  minScheduleIntervalMs: number;
  /** Actions (provider calls and messages) one workflow may take in a clock hour, and all automations together. */
  maxActionsPerWorkflowPerHour: number;
  maxActionsPerHour: number;
  /** trigger_webhook may post only to these origins (`scheme://host:port`, as URL.origin writes them). */
  webhookAllowedOrigins: string[];
  /** Allowed origins that may connect to loopback, private and link-local addresses (never metadata ones). */
  webhookPrivateOrigins: string[];
  webhookSecret?: string;
  slackWebhookUrl?: string;
  intercomTicketTypeId?: string;
}

export interface OAuthConfig {
  issuer: string;
  /** The `aud` a token must carry (RFC 8707): this server's canonical URL, or the API identifier the issuer uses for it. */
  audience: string;
  /** The protected resource (RFC 9728 `resource`): MCP_HTTP_PUBLIC_URL. */
  resource: string;
  /** Scopes every request's token must carry, besides the one each tool needs. */
  requiredScopes: string[];
  /** Where the keys are; discovered from the issuer's metadata when unset. */
  jwksUrl?: string;
  /** RFC 7662 introspection for opaque (non-JWT) tokens. */
  introspection?: { url: string; clientId: string; clientSecret: string };
  jwksCacheMs: number;
  jwksCooldownMs: number;
  clockToleranceS: number;
}

/** A URL that may carry a credential or a key: https, or http on a loopback host (a local issuer under test). */
function secureUrl(name: string, value: string): string {
  let u: URL;
  try {
    u = new URL(value);
  } catch {
    throw new ConfigError(`${name}=${JSON.stringify(value)}: not a URL.`);
  }
  const loopback = ['localhost', '127.0.0.1', '[::1]'].includes(u.hostname);
  if (u.protocol !== 'https:' && !(u.protocol === 'http:' && loopback)) throw new ConfigError(`${name}=${JSON.stringify(value)}: must be https:// (http:// only on localhost).`);
  if (u.hash || u.username || u.password) throw new ConfigError(`${name}: no fragment or credentials in the URL.`);
  return value;
}

function oauthConfig(e: z.output<typeof envSchema>): OAuthConfig | undefined {
  const set = ['MCP_OAUTH_AUDIENCE', 'MCP_OAUTH_REQUIRED_SCOPES', 'MCP_OAUTH_JWKS_URL', 'MCP_OAUTH_INTROSPECTION_URL', 'MCP_OAUTH_CLIENT_ID', 'MCP_OAUTH_CLIENT_SECRET'] as const;
  if (!e.MCP_OAUTH_ISSUER) {
    const orphan = set.filter((k) => e[k] !== undefined);
    if (orphan.length) throw new ConfigError(`${orphan.join(', ')} set without MCP_OAUTH_ISSUER: set the issuer too (sign-in is off without it).`);
    return undefined;
  }
  if (e.MCP_HTTP_TOKEN) {
    throw new ConfigError(
      'MCP_HTTP_TOKEN and MCP_OAUTH_ISSUER are both set: choose one. With an issuer every person signs in with their own token; ' +
        'MCP_HTTP_TOKEN is the one shared token of a one-person set-up.',
    );
  }
  if (!e.MCP_HTTP_PUBLIC_URL) {
    throw new ConfigError(
      'MCP_OAUTH_ISSUER needs MCP_HTTP_PUBLIC_URL: the /mcp URL clients use (e.g. https://mcp.example.com/mcp). It is the resource the ' +
        'tokens are for and where clients find the sign-in metadata.',
    );
  }
  const resource = secureUrl('MCP_HTTP_PUBLIC_URL', e.MCP_HTTP_PUBLIC_URL);
  const introspection = e.MCP_OAUTH_INTROSPECTION_URL
    ? { url: secureUrl('MCP_OAUTH_INTROSPECTION_URL', e.MCP_OAUTH_INTROSPECTION_URL), clientId: e.MCP_OAUTH_CLIENT_ID ?? '', clientSecret: e.MCP_OAUTH_CLIENT_SECRET ?? '' }
    : undefined;
  if (introspection && (!introspection.clientId || !introspection.clientSecret)) {
    throw new ConfigError('MCP_OAUTH_INTROSPECTION_URL needs MCP_OAUTH_CLIENT_ID and MCP_OAUTH_CLIENT_SECRET (this server\'s own credentials at the issuer).');
  }
  return {
    issuer: secureUrl('MCP_OAUTH_ISSUER', e.MCP_OAUTH_ISSUER),
    audience: e.MCP_OAUTH_AUDIENCE ?? resource,
    resource,
    requiredScopes: (e.MCP_OAUTH_REQUIRED_SCOPES ?? '').split(/[\s,]+/).filter(Boolean),
    jwksUrl: e.MCP_OAUTH_JWKS_URL ? secureUrl('MCP_OAUTH_JWKS_URL', e.MCP_OAUTH_JWKS_URL) : undefined,
    introspection,
    jwksCacheMs: e.MCP_OAUTH_JWKS_CACHE_MS,
    jwksCooldownMs: e.MCP_OAUTH_JWKS_COOLDOWN_MS,
    clockToleranceS: e.MCP_OAUTH_CLOCK_TOLERANCE_S,
  };
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** Where local state lives when CS_MCP_DATA_DIR is unset: the platform's per-user data folder. */
export function defaultDataDir(env: NodeJS.ProcessEnv = process.env): string {
  const home = os.homedir();
  if (process.platform === 'win32') {
    return path.join(env.LOCALAPPDATA ?? path.join(home, 'AppData', 'Local'), 'customer-success-mcp');
  }
  if (process.platform === 'darwin') {
    return path.join(home, 'Library', 'Application Support', 'customer-success-mcp');
  }
  return path.join(env.XDG_DATA_HOME ?? path.join(home, '.local', 'share'), 'customer-success-mcp');
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const parsed = envSchema.safeParse(env);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => {
      const name = String(i.path[0] ?? '?');
      const shown = /TOKEN|KEY|SECRET|WEBHOOK_URL/.test(name) ? '(hidden)' : JSON.stringify(env[name]);
      return `${name}=${shown}: ${i.message}`;
    });
    throw new ConfigError(`Invalid configuration:\n  ${lines.join('\n  ')}\nFix the variable(s) above (see README, "Configuration") and start again.`);
  }
  const e = parsed.data;
  const notAllowed = e.AUTOMATION_WEBHOOK_PRIVATE_ORIGINS.filter((o) => !e.AUTOMATION_WEBHOOK_ALLOWED_HOSTS.includes(o));
  if (notAllowed.length) {
    throw new ConfigError(
      `AUTOMATION_WEBHOOK_PRIVATE_ORIGINS names ${notAllowed.join(', ')}, which AUTOMATION_WEBHOOK_ALLOWED_HOSTS does not allow. ` +
        'List each origin in AUTOMATION_WEBHOOK_ALLOWED_HOSTS too (the opt-in only lets an allowed origin reach a private address).',
    );
  }
  if (!e.CS_MCP_ALLOW_CUSTOM_PROVIDER_HOSTS) {
    const wrong = (Object.keys(PROVIDER_HOSTS) as Array<keyof typeof PROVIDER_HOSTS>).filter((name) => !isProviderOwnHost(name, e[name]));
    if (wrong.length) {
      throw new ConfigError(
        `Refusing to send provider credentials to a host that is not the provider's own:\n  ${wrong
          .map((name) => `${name}=${JSON.stringify(e[name])}: must be one of ${PROVIDER_HOSTS[name].map((h) => `https://${h}`).join(', ')}`)
          .join('\n  ')}\n` +
          'To use another host on purpose (a proxy you run, or a test stand-in), set CS_MCP_ALLOW_CUSTOM_PROVIDER_HOSTS=true in the environment ' +
          'the server is started with (a settings file cannot set it).',
      );
    }
  }
  const dataDir = path.resolve(e.CS_MCP_DATA_DIR ?? defaultDataDir(env));
  let database: Config['database'];
  const dbUrl = e.DATABASE_URL;
  if (dbUrl && /^postgres(ql)?:\/\//.test(dbUrl)) database = { kind: 'postgres', url: dbUrl };
  else if (dbUrl) database = { kind: 'sqlite', file: path.resolve(dbUrl.replace(/^(sqlite|file):(\/\/)?/, '')) };
  else database = { kind: 'sqlite', file: path.join(dataDir, 'customer-success.db') };

  return {
    logLevel: e.LOG_LEVEL,
    dataDir,
    database,
    http: {
      host: e.MCP_HTTP_HOST,
      port: e.MCP_HTTP_PORT,
      token: e.MCP_HTTP_TOKEN,
      allowedHosts: e.MCP_HTTP_ALLOWED_HOSTS?.split(',').map((h) => h.trim().toLowerCase()).filter(Boolean),
      maxSessions: e.MCP_HTTP_MAX_SESSIONS,
      sessionIdleMs: e.MCP_HTTP_SESSION_IDLE_MS,
      stateless: e.MCP_HTTP_STATELESS,
      publicUrl: e.MCP_HTTP_PUBLIC_URL,
      oauth: oauthConfig(e),
    },
    observability: {
      metrics: e.MCP_METRICS || e.MCP_METRICS_TOKEN !== undefined,
      metricsToken: e.MCP_METRICS_TOKEN,
      readyTimeoutMs: e.MCP_READY_TIMEOUT_MS,
      readyProviders: providerList('MCP_READY_PROVIDERS', e.MCP_READY_PROVIDERS),
    },
    maxRequestBytes: e.MCP_MAX_REQUEST_BYTES,
    resilience: {
      maxRetries: e.RETRY_MAX_RETRIES,
      baseDelayMs: e.RETRY_BASE_DELAY_MS,
      maxDelayMs: e.RETRY_MAX_DELAY_MS,
      breakerThreshold: e.CIRCUIT_BREAKER_FAILURE_THRESHOLD,
      breakerResetMs: e.CIRCUIT_BREAKER_RESET_MS,
      timeoutMs: e.HTTP_TIMEOUT_MS,
    },
    intercom: { accessToken: e.INTERCOM_ACCESS_TOKEN, baseUrl: e.INTERCOM_BASE_URL, adminId: e.INTERCOM_ADMIN_ID },
    sendgrid: {
      apiKey: e.SENDGRID_API_KEY,
      baseUrl: e.SENDGRID_BASE_URL,
      fromEmail: e.SENDGRID_FROM_EMAIL,
      fromName: e.SENDGRID_FROM_NAME,
      unsubscribeGroupId: e.SENDGRID_UNSUBSCRIBE_GROUP_ID,
      sandbox: e.SENDGRID_SANDBOX,
    },
    mixpanel: {
      projectToken: e.MIXPANEL_PROJECT_TOKEN,
      projectId: e.MIXPANEL_PROJECT_ID,
      serviceAccountUsername: e.MIXPANEL_SERVICE_ACCOUNT_USERNAME,
      serviceAccountSecret: e.MIXPANEL_SERVICE_ACCOUNT_SECRET,
      apiSecret: e.MIXPANEL_API_SECRET,
      apiHost: e.MIXPANEL_API_HOST,
      flushIntervalMs: e.MIXPANEL_FLUSH_INTERVAL_MS,
      maxBufferedEvents: e.MIXPANEL_MAX_BUFFERED_EVENTS,
    },
    campaigns: {
      confirmationTtlS: e.CAMPAIGN_CONFIRMATION_TTL_S,
      maxScheduleDays: e.CAMPAIGN_MAX_SCHEDULE_DAYS,
      dispatchConcurrency: e.CAMPAIGN_DISPATCH_CONCURRENCY,
      dispatchPollMs: e.CAMPAIGN_DISPATCH_POLL_MS,
      leaseMs: e.CAMPAIGN_LEASE_MS,
      renderBudget: { totalMs: e.CAMPAIGN_RENDER_BUDGET_MS, perRecipient: { timeMs: Math.min(250, e.CAMPAIGN_RENDER_BUDGET_MS), maxChars: 1_000_000 } },
      frequencyCap: e.CAMPAIGN_FREQUENCY_CAP,
      emailBatching: e.CAMPAIGN_EMAIL_BATCHING,
    },
    safety: {
      approval: e.CS_MCP_APPROVAL,
      approvalThreshold: e.CS_MCP_APPROVAL_THRESHOLD,
      approvalTimeoutMs: e.CS_MCP_APPROVAL_TIMEOUT_S * 1000,
      maxRecipientsPerSend: e.CS_MCP_MAX_RECIPIENTS_PER_SEND,
      dailySendLimit: e.CS_MCP_DAILY_SEND_LIMIT,
      readOnly: e.CS_MCP_READ_ONLY,
      toolsets: list(e.CS_MCP_TOOLSETS),
      toolsDeny: list(e.CS_MCP_TOOLS_DENY) ?? [],
      idempotencyRetentionMs: e.CS_MCP_IDEMPOTENCY_RETENTION_H * 3_600_000,
      duplicateWindowMs: e.CS_MCP_DUPLICATE_WINDOW_S * 1000,
      auditRetentionDays: e.CS_MCP_AUDIT_RETENTION_DAYS,
      auditBodies: e.CS_MCP_AUDIT_BODIES,
    },
    retention: {
      outboxDays: e.CS_MCP_OUTBOX_RETENTION_DAYS,
      timelineDays: e.CS_MCP_TIMELINE_RETENTION_DAYS,
      customerEventsDays: e.CS_MCP_EVENTS_RETENTION_DAYS,
      confirmationDays: e.CS_MCP_CONFIRMATION_RETENTION_DAYS,
      batch: e.CS_MCP_RETENTION_BATCH,
      intervalMs: e.CS_MCP_RETENTION_INTERVAL_S * 1000,
    },
    automations: {
      maxPerContactPerDay: e.AUTOMATION_MAX_MESSAGES_PER_CONTACT_PER_DAY,
      maxPerContactPerWeek: e.AUTOMATION_MAX_MESSAGES_PER_CONTACT_PER_WEEK,
      tickMs: e.AUTOMATION_TICK_MS,
      sweepMs: e.AUTOMATION_SWEEP_MS,
      leaseMs: e.AUTOMATION_LEASE_MS,
      stepConcurrency: e.AUTOMATION_STEP_CONCURRENCY,
      catchUpMs: e.AUTOMATION_CATCH_UP_MINUTES * 60_000,
      maxChainDepth: e.AUTOMATION_MAX_CHAIN_DEPTH,
      minScheduleIntervalMs: e.AUTOMATION_MIN_SCHEDULE_INTERVAL_SECONDS * 1000,
      maxActionsPerWorkflowPerHour: e.AUTOMATION_MAX_ACTIONS_PER_WORKFLOW_PER_HOUR,
      maxActionsPerHour: e.AUTOMATION_MAX_ACTIONS_PER_HOUR,
      webhookAllowedOrigins: e.AUTOMATION_WEBHOOK_ALLOWED_HOSTS,
      webhookPrivateOrigins: e.AUTOMATION_WEBHOOK_PRIVATE_ORIGINS,
      webhookSecret: e.AUTOMATION_WEBHOOK_SECRET,
      slackWebhookUrl: e.SLACK_WEBHOOK_URL,
      intercomTicketTypeId: e.INTERCOM_TICKET_TYPE_ID,
    },
    webhooks: {
      sendgridPublicKey: e.SENDGRID_WEBHOOK_PUBLIC_KEY,
      intercomClientSecret: e.INTERCOM_CLIENT_SECRET,
      eventsSecret: e.CS_MCP_EVENTS_WEBHOOK_SECRET,
      maxAgeS: e.WEBHOOK_MAX_AGE_S,
      maxBodyBytes: e.WEBHOOK_MAX_BODY_BYTES,
      headersTimeoutMs: e.WEBHOOK_HEADERS_TIMEOUT_MS,
      bodyTimeoutMs: e.WEBHOOK_BODY_TIMEOUT_MS,
      minBodyBytesPerS: e.WEBHOOK_MIN_BODY_BYTES_PER_S,
      retentionDays: e.WEBHOOK_RETENTION_DAYS,
      pollMs: e.WEBHOOK_PROCESS_POLL_MS,
    },
  };
}

/**
 * A webhook allowlist entry as an origin (scheme, host, port): `https://hooks.example.com:8443`,
 * `http://10.0.0.7:8080`, or a bare `host[:port]`, which means https. A path, query or credentials
 * in an entry are refused: an entry names where requests go, nothing else.
 */
export function webhookOrigin(entry: string): string {
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(entry) ? entry : `https://${entry}`;
  let u: URL;
  try {
    u = new URL(withScheme);
  } catch {
    throw new Error(`"${entry}" is not an origin (e.g. https://hooks.example.com or https://hooks.example.com:8443)`);
  }
  if (u.protocol !== 'https:' && u.protocol !== 'http:') throw new Error(`"${entry}": only https:// (or http:// on purpose) origins`);
  if (u.username || u.password || u.pathname !== '/' || u.search || u.hash) {
    throw new Error(`"${entry}" must be an origin only (scheme, host and port): no path, query or credentials`);
  }
  return u.origin;
}

function originList(v: string | undefined, ctx: z.RefinementCtx): string[] {
  const out: string[] = [];
  for (const entry of list(v) ?? []) {
    try {
      out.push(webhookOrigin(entry));
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: (err as Error).message });
    }
  }
  return [...new Set(out)];
}

/** A comma-separated list of provider names; an unknown name stops the server, naming the valid ones. */
function providerList(variable: string, v: string | undefined): ProviderName[] {
  const names = list(v) ?? [];
  const unknown = names.filter((n) => !(PROVIDERS as readonly string[]).includes(n));
  if (unknown.length) throw new ConfigError(`${variable}: unknown provider ${unknown.join(', ')}; use a comma-separated list of ${PROVIDERS.join(', ')}.`);
  return [...new Set(names)] as ProviderName[];
}

function list(v: string | undefined): string[] | undefined {
  const items = v?.split(',').map((x) => x.trim()).filter(Boolean);
  return items?.length ? items : undefined;
}

/**
 * The hosts each provider's credentials may go to without CS_MCP_ALLOW_CUSTOM_PROVIDER_HOSTS: the
 * providers' own API hosts, regional ones included. https only.
 */
export const PROVIDER_HOSTS = {
  INTERCOM_BASE_URL: ['api.intercom.io', 'api.eu.intercom.io', 'api.au.intercom.io'],
  SENDGRID_BASE_URL: ['api.sendgrid.com', 'api.eu.sendgrid.com'],
  MIXPANEL_API_HOST: ['api.mixpanel.com', 'api-eu.mixpanel.com', 'api-in.mixpanel.com'],
} as const;

function isProviderOwnHost(name: keyof typeof PROVIDER_HOSTS, value: string): boolean {
  let u: URL;
  try {
    u = new URL(value);
  } catch {
    return false;
  }
  const hosts: readonly string[] = PROVIDER_HOSTS[name];
  return u.protocol === 'https:' && hosts.includes(u.hostname) && !u.port && !u.username && !u.password && (u.pathname === '/' || u.pathname === '') && !u.search && !u.hash;
}

/** The provider base URLs in use that are not the providers' own (only possible with the opt-in), for the start-up notice. */
export function customProviderHosts(config: Config): string[] {
  const inUse = { INTERCOM_BASE_URL: config.intercom.baseUrl, SENDGRID_BASE_URL: config.sendgrid.baseUrl, MIXPANEL_API_HOST: config.mixpanel.apiHost };
  return (Object.keys(inUse) as Array<keyof typeof inUse>).filter((k) => !isProviderOwnHost(k, inUse[k])).map((k) => `${k}=${inUse[k]}`);
}

/**
 * Settings files may set credentials and tuning, never where data and credentials go, nor who may sign
 * in: a file is easier to plant than an environment, a planted INTERCOM_BASE_URL would receive the
 * user's token, and a planted MCP_OAUTH_ISSUER would let its own tokens in.
 */
const FORBIDDEN_IN_SETTINGS_FILE =
  /^(DATABASE_URL|CS_MCP_DATA_DIR|CS_MCP_ENV_FILE|CS_MCP_ALLOW_CUSTOM_PROVIDER_HOSTS|[A-Z0-9_]*_BASE_URL|[A-Z0-9_]*_API_HOST|SLACK_WEBHOOK_URL|AUTOMATION_WEBHOOK_ALLOWED_HOSTS|AUTOMATION_WEBHOOK_PRIVATE_ORIGINS|MCP_HTTP_PUBLIC_URL|MCP_OAUTH_ISSUER|MCP_OAUTH_AUDIENCE|MCP_OAUTH_JWKS_URL|MCP_OAUTH_INTROSPECTION_URL)$/;

export interface SettingsFile {
  /** The file read, if any. */
  file?: string;
  values: Record<string, string>;
}

/**
 * The one settings file the server reads, if any: the path given with --env-file, else CS_MCP_ENV_FILE,
 * else `.env` in the server's data folder (CS_MCP_DATA_DIR or the per-user default). Never a file in the
 * working directory, which is wherever a client happens to start the server. Only the real environment
 * (`env`) decides which file; its values never override the environment.
 */
export function readSettingsFile(explicitPath: string | undefined, env: NodeJS.ProcessEnv = process.env): SettingsFile {
  const named = explicitPath ?? emptyToUndefined(env.CS_MCP_ENV_FILE);
  const file = typeof named === 'string' ? path.resolve(named) : path.join(path.resolve(env.CS_MCP_DATA_DIR?.trim() || defaultDataDir(env)), '.env');
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if (named === undefined && (err as NodeJS.ErrnoException).code === 'ENOENT') return { values: {} };
    throw new ConfigError(`Cannot read the settings file ${file} (${explicitPath ? '--env-file' : 'CS_MCP_ENV_FILE'}): ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}.`);
  }
  const values = parseEnv(text) as Record<string, string>;
  const forbidden = Object.keys(values).filter((k) => FORBIDDEN_IN_SETTINGS_FILE.test(k));
  if (forbidden.length) {
    throw new ConfigError(
      `The settings file ${file} sets ${forbidden.join(', ')}, which a settings file may not set: ` +
        'DATABASE_URL, CS_MCP_DATA_DIR, the provider hosts (*_BASE_URL, *_API_HOST), the automations\' destinations (SLACK_WEBHOOK_URL, ' +
        'AUTOMATION_WEBHOOK_ALLOWED_HOSTS, AUTOMATION_WEBHOOK_PRIVATE_ORIGINS) and CS_MCP_ALLOW_CUSTOM_PROVIDER_HOSTS decide where your data and credentials go; ' +
        'MCP_OAUTH_ISSUER, MCP_OAUTH_AUDIENCE, MCP_OAUTH_JWKS_URL, MCP_OAUTH_INTROSPECTION_URL and MCP_HTTP_PUBLIC_URL decide who may sign in. ' +
        'Remove them from the file and set them in the environment the server is started with (for Claude Desktop, the "env" block of its configuration).',
    );
  }
  return { file, values };
}

/** Every secret value in the config, so the logger and error shaping can scrub them from any text. */
export function configSecrets(config: Config): string[] {
  return [
    config.http.token,
    config.http.oauth?.introspection?.clientSecret,
    config.observability.metricsToken,
    config.intercom.accessToken,
    config.sendgrid.apiKey,
    config.mixpanel.projectToken,
    config.mixpanel.serviceAccountSecret,
    // Sent as HTTP Basic "user:secret": its base64 is a credential of its own.
    config.mixpanel.serviceAccountUsername && config.mixpanel.serviceAccountSecret
      ? `${config.mixpanel.serviceAccountUsername}:${config.mixpanel.serviceAccountSecret}`
      : undefined,
    config.mixpanel.apiSecret,
    config.webhooks.intercomClientSecret,
    config.webhooks.eventsSecret,
    config.automations.webhookSecret,
    config.automations.slackWebhookUrl,
    // Its path is the secret: redacted even where it appears without the host.
    ...(config.automations.slackWebhookUrl ? urlSecrets(config.automations.slackWebhookUrl) : []),
    config.database.kind === 'postgres' ? passwordOf(config.database.url) : undefined,
  ].filter((s): s is string => typeof s === 'string');
}

function passwordOf(dbUrl: string): string | undefined {
  try {
    return decodeURIComponent(new URL(dbUrl).password) || undefined;
  } catch {
    return undefined;
  }
}
