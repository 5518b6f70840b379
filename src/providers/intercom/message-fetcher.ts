import type { IntercomClient } from 'intercom-client';

/** The SDK's transport hook (its `fetcher` option): one request in, the SDK's response record out. */
type SdkFetcher = NonNullable<ConstructorParameters<typeof IntercomClient>[0]>['fetcher'];
type SdkFetcherArgs = Parameters<NonNullable<SdkFetcher>>[0];

/**
 * A transport for the SDK's JSON calls that send one message each (POST /messages): the SDK's own
 * fetcher builds, per request, a Headers object, two AbortControllers joined by listeners and a timer
 * for its backstop timeout (bench:campaign: an Intercom campaign cost 1.9 ms of CPU a message with
 * this transport, 2.5–2.7 with the SDK's). This one does only what those calls need: the SDK's
 * headers as a plain record, its body as JSON, the caller's signal as given (the runtime's fetch
 * times each attempt, so the backstop adds nothing), and the answer in the shape the SDK expects, so
 * its endpoints, error classes and types stay the SDK's. A failure of the transport itself is thrown
 * as is: the runtime classifies it from what its fetch saw. It takes only the requests it was made
 * for; anything else is refused.
 */
export function jsonPostFetcher(fetchFn: typeof fetch): NonNullable<SdkFetcher> {
  const fetcher = async (args: SdkFetcherArgs) => {
    if (args.method !== 'POST' || (args.requestType ?? 'json') !== 'json' || (args.responseType ?? 'json') !== 'json' || hasEntries(args.queryParameters)) {
      throw new Error(`jsonPostFetcher takes JSON POSTs without a query only (got ${args.method} ${args.url})`);
    }
    const headers: Record<string, string> = { Accept: 'application/json' };
    if (args.body !== undefined) headers['Content-Type'] = args.contentType ?? 'application/json';
    for (const [name, value] of Object.entries(args.headers ?? {})) {
      if (typeof value === 'string') headers[name] = value;
      else if (value != null) throw new Error(`jsonPostFetcher takes header values as strings (${name} is not)`);
    }
    const response = await fetchFn(args.url, {
      method: 'POST',
      headers,
      body: args.body === undefined ? undefined : JSON.stringify(args.body),
      signal: args.abortSignal,
    });
    const text = await response.text();
    const rawResponse = { headers: response.headers, redirected: response.redirected, status: response.status, statusText: response.statusText, type: response.type, url: response.url };
    if (response.status >= 200 && response.status < 400) {
      if (!text) return { ok: true as const, body: undefined, headers: response.headers, rawResponse };
      try {
        return { ok: true as const, body: JSON.parse(text), headers: response.headers, rawResponse };
      } catch {
        return { ok: false as const, error: { reason: 'non-json' as const, statusCode: response.status, rawBody: text }, rawResponse };
      }
    }
    return { ok: false as const, error: { reason: 'status-code' as const, statusCode: response.status, body: errorBody(text) }, rawResponse };
  };
  return fetcher as NonNullable<SdkFetcher>;
}

function hasEntries(o: Record<string, unknown> | undefined): boolean {
  return o !== undefined && Object.values(o).some((v) => v !== undefined);
}

/** Intercom's error bodies are JSON ({type: "error.list", errors}); anything else is kept as text. */
function errorBody(text: string): unknown {
  if (!text) return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}
