import { z } from 'zod';
import { scrubSecrets } from './secrets.js';

/**
 * The one error vocabulary every tool and every provider speaks. `forbidden` also covers a refusal by
 * this server's own policy (read-only, consent, recipient limit, approval unavailable: details.policy
 * says which); `declined` means a person said no to an approval request.
 */
export const ERROR_CODES = [
  'not_configured',
  'invalid_input',
  'auth_failed',
  'forbidden',
  'not_found',
  'conflict',
  'rate_limited',
  'timeout',
  'circuit_open',
  'provider_unavailable',
  'provider_error',
  'declined',
] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];

/** Every outside service the server calls; `slack` and `webhook` are automation steps' destinations. */
export const PROVIDERS = ['intercom', 'sendgrid', 'mixpanel', 'slack', 'webhook'] as const;
export type ProviderName = (typeof PROVIDERS)[number];

/** How people write the providers' names, for messages. */
export const PROVIDER_LABEL: Record<ProviderName, string> = {
  intercom: 'Intercom',
  sendgrid: 'SendGrid',
  mixpanel: 'Mixpanel',
  slack: 'Slack',
  webhook: 'Webhook receiver',
};

export interface ToolErrorOptions {
  retryable?: boolean;
  provider?: ProviderName;
  status?: number;
  retryAfterMs?: number;
  /** Extra structured facts for the caller (e.g. per-field problems, the fresh preview). */
  details?: Record<string, unknown>;
  /** The request may have reached the provider: a send must not be repeated blindly. */
  outcomeUnknown?: boolean;
  /** The failure says the provider is unhealthy (network, timeout, 5xx): it counts towards the breaker. */
  breakerFailure?: boolean;
  cause?: unknown;
}

/** A failure we can explain. Thrown anywhere below a tool; the adapter turns it into the result contract. */
export class ToolError extends Error {
  override name = 'ToolError';
  readonly code: ErrorCode;
  readonly retryable: boolean;
  readonly provider?: ProviderName;
  readonly status?: number;
  readonly retryAfterMs?: number;
  readonly details?: Record<string, unknown>;
  readonly outcomeUnknown: boolean;
  readonly breakerFailure: boolean;

  constructor(code: ErrorCode, message: string, opts: ToolErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.code = code;
    this.retryable = opts.retryable ?? DEFAULT_RETRYABLE[code];
    this.provider = opts.provider;
    this.status = opts.status;
    this.retryAfterMs = opts.retryAfterMs;
    this.details = opts.details;
    this.outcomeUnknown = opts.outcomeUnknown ?? false;
    this.breakerFailure = opts.breakerFailure ?? false;
  }
}

const DEFAULT_RETRYABLE: Record<ErrorCode, boolean> = {
  not_configured: false,
  invalid_input: false,
  auth_failed: false,
  forbidden: false,
  not_found: false,
  conflict: false,
  rate_limited: true,
  timeout: true,
  circuit_open: true,
  provider_unavailable: true,
  provider_error: false,
  declined: false,
};

const TRANSIENT: ReadonlySet<ErrorCode> = new Set(['circuit_open', 'rate_limited', 'provider_unavailable', 'timeout']);

/** A failure worth trying again later: transient, and the provider provably did not act on the request. */
export function retryLater(err: ToolError): boolean {
  return TRANSIENT.has(err.code) && !err.outcomeUnknown;
}

export const errorBodySchema = z.object({
  code: z.enum(ERROR_CODES),
  message: z.string(),
  retryable: z.boolean(),
  provider: z.enum(PROVIDERS).optional(),
  status: z.number().int().optional(),
  retry_after_ms: z.number().int().optional(),
  outcome_unknown: z.boolean().optional(),
  details: z.record(z.string(), z.unknown()).optional(),
});
export type ErrorBody = z.infer<typeof errorBodySchema>;

export function invalidInput(message: string, details?: Record<string, unknown>): ToolError {
  return new ToolError('invalid_input', message, { details });
}

export function notConfigured(provider: ProviderName, variables: string[]): ToolError {
  return new ToolError(
    'not_configured',
    `${PROVIDER_LABEL[provider]} is not configured: set ${variables.join(' and ')} in the server's environment (or its settings file, .env in the data folder) and restart the server.`,
    { provider },
  );
}

/**
 * Turns a zod failure into invalid_input naming each field and what it needs. An unknown key (a strict
 * object's unrecognized_keys) is one problem per key, named by its own path; `nearest` may suggest the
 * valid field meant.
 */
export function fromZodError(error: z.ZodError, prefix = 'Invalid input', nearest?: (path: PropertyKey[], key: string) => string | undefined): ToolError {
  const problems = error.issues.flatMap((i) => {
    if (i.code === 'unrecognized_keys') {
      return i.keys.map((key) => {
        const meant = nearest?.(i.path, key);
        return { field: [...i.path, key].map(String).join('.'), problem: `unknown field \`${key}\`${meant ? `; did you mean \`${meant}\`?` : ''}` };
      });
    }
    return [{ field: i.path.map(String).join('.') || '(arguments)', problem: i.message }];
  });
  const text = problems.map((p) => `${p.field}: ${p.problem}`).join('; ');
  return invalidInput(`${prefix}: ${text}. Correct ${problems.length === 1 ? 'that field' : 'those fields'} and call again.`, {
    fields: problems,
  });
}

export function toErrorBody(err: unknown): ErrorBody {
  if (err instanceof ToolError) {
    const body: ErrorBody = { code: err.code, message: scrubSecrets(err.message), retryable: err.retryable };
    if (err.provider) body.provider = err.provider;
    if (err.status !== undefined) body.status = err.status;
    if (err.retryAfterMs !== undefined) body.retry_after_ms = Math.max(0, Math.round(err.retryAfterMs));
    if (err.outcomeUnknown) body.outcome_unknown = true;
    if (err.details) body.details = err.details;
    return body;
  }
  if (err instanceof z.ZodError) return toErrorBody(fromZodError(err));
  const message = err instanceof Error ? err.message : String(err);
  return {
    code: 'provider_error',
    message: scrubSecrets(`Unexpected internal error: ${message}. This is a bug in customer-success-mcp; the server logs have details.`),
    retryable: false,
  };
}
