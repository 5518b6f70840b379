import { PROVIDER_LABEL, ToolError, type ProviderName } from '../result.js';

export type HeaderSource = Headers | Record<string, string | string[] | undefined> | undefined;

export function header(headers: HeaderSource, name: string): string | undefined {
  if (!headers) return undefined;
  if (typeof (headers as Headers).get === 'function') return (headers as Headers).get(name) ?? undefined;
  const rec = headers as Record<string, string | string[] | undefined>;
  const v = rec[name] ?? rec[name.toLowerCase()] ?? Object.entries(rec).find(([k]) => k.toLowerCase() === name)?.[1];
  return Array.isArray(v) ? v[0] : v;
}

/** Intercom and SendGrid send epoch seconds; some APIs send seconds-until-reset. Tell them apart. */
export function resetToEpochMs(reset: number, now: number): number {
  if (reset > 1e12) return reset; // already epoch ms
  if (reset > 1e9) return reset * 1000; // epoch seconds
  return now + reset * 1000; // seconds from now
}

/**
 * How long the provider asked us to wait: Retry-After (seconds or HTTP date), else (for rate limits
 * only) X-RateLimit-Reset, which on other answers just describes the current window.
 */
export function retryAfterMs(headers: HeaderSource, now = Date.now(), useRateLimitReset = true): number | undefined {
  const ra = header(headers, 'retry-after');
  if (ra !== undefined) {
    const secs = Number(ra);
    if (Number.isFinite(secs)) return Math.max(0, secs * 1000);
    const at = Date.parse(ra);
    if (Number.isFinite(at)) return Math.max(0, at - now);
  }
  const reset = Number(header(headers, 'x-ratelimit-reset'));
  if (useRateLimitReset && header(headers, 'x-ratelimit-reset') !== undefined && Number.isFinite(reset)) {
    return Math.max(0, resetToEpochMs(reset, now) - now);
  }
  return undefined;
}

/**
 * Maps an HTTP failure to the shared vocabulary. `detail` is the provider's own explanation, already
 * extracted from its error body by the provider module.
 */
export function httpStatusError(
  provider: ProviderName,
  status: number,
  headers: HeaderSource,
  detail?: string,
  now = Date.now(),
): ToolError {
  const who = PROVIDER_LABEL[provider];
  const said = detail ? ` ${who} said: ${detail}` : '';
  const base = { provider, status };
  switch (true) {
    case status === 400 || status === 422:
      return new ToolError('invalid_input', `${who} rejected the request (${status}).${said} Fix the input and call again.`, base);
    case status === 401:
      return new ToolError('auth_failed', `${who} rejected the credentials (401).${said} Check the access token / API key in the server's environment.`, base);
    case status === 403:
      return new ToolError('forbidden', `${who} refused this action (403).${said} The credentials lack the permission or scope needed; grant it in ${who}'s settings.`, base);
    case status === 404:
      return new ToolError('not_found', `${who} could not find it (404).${said} Check the id, email or name and call again.`, base);
    case status === 409:
      return new ToolError('conflict', `${who} reported a conflict (409).${said}`, base);
    case status === 413:
      return new ToolError('invalid_input', `${who} rejected the request as too large (413).${said} Send fewer items per call.`, base);
    case status === 408:
      return new ToolError('timeout', `${who} timed out reading the request (408). It was not processed; it is safe to try again.`, { ...base, retryable: true });
    case status === 429: {
      const wait = retryAfterMs(headers, now);
      return new ToolError(
        'rate_limited',
        `${who} rate limit reached (429).${wait !== undefined ? ` The budget resets in about ${Math.ceil(wait / 1000)} s.` : ''} Try again after that.`,
        { ...base, retryAfterMs: wait, retryable: true },
      );
    }
    case status === 503:
      // The server refused the work: nothing was processed, so even a send may be retried.
      return new ToolError('provider_unavailable', `${who} is unavailable (503).${said} Try again shortly.`, {
        ...base,
        retryAfterMs: retryAfterMs(headers, now, false),
        retryable: true,
        breakerFailure: true,
      });
    case status >= 500:
      // The request reached the provider, which failed while handling it: a send may have gone out.
      return new ToolError('provider_unavailable', `${who} failed while handling the request (${status}).${said}`, {
        ...base,
        retryable: true,
        breakerFailure: true,
        outcomeUnknown: true,
      });
    default:
      return new ToolError('provider_error', `${who} answered ${status} unexpectedly.${said}`, base);
  }
}

/** Connection-level failures that happen before any byte of the request could reach the provider. */
const NOT_SENT_CODES = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'UND_ERR_CONNECT_TIMEOUT',
  'ERR_INVALID_URL',
]);

function errorCode(err: unknown): string | undefined {
  let e: unknown = err;
  for (let depth = 0; e && depth < 5; depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string') return code;
    e = (e as { cause?: unknown }).cause;
  }
  return undefined;
}

export function networkError(provider: ProviderName, err: unknown, timedOutAfterMs?: number): ToolError {
  const who = PROVIDER_LABEL[provider];
  if (timedOutAfterMs !== undefined) {
    return new ToolError(
      'timeout',
      `${who} did not answer within ${timedOutAfterMs} ms. If this was a send, it may have been delivered: check before sending again.`,
      { provider, retryable: true, outcomeUnknown: true, breakerFailure: true, cause: err },
    );
  }
  const code = errorCode(err) ?? 'unknown';
  if (NOT_SENT_CODES.has(code)) {
    return new ToolError('provider_unavailable', `Could not connect to ${who} (${code}). Nothing was sent; try again shortly.`, {
      provider,
      retryable: true,
      breakerFailure: true,
      cause: err,
    });
  }
  return new ToolError(
    'provider_unavailable',
    `The connection to ${who} failed mid-request (${code}). If this was a send, it may have been delivered: check before sending again.`,
    { provider, retryable: true, outcomeUnknown: true, breakerFailure: true, cause: err },
  );
}
