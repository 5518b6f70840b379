import { describe, expect, it } from 'vitest';
import { jsonPostFetcher } from '../../src/providers/intercom/message-fetcher.js';

/** A fetch that records what it was given and answers `status` with `body`. */
function fakeFetch(status: number, body: string, headers: Record<string, string> = { 'content-type': 'application/json' }) {
  const seen: Array<{ url: string; init: RequestInit }> = [];
  const fn = (async (url: string, init: RequestInit) => {
    seen.push({ url, init });
    return new Response(status === 204 ? null : body, { status, headers });
  }) as unknown as typeof fetch;
  return { fn, seen };
}

const args = (over: Record<string, unknown> = {}) =>
  ({
    url: 'https://api.intercom.io/messages',
    method: 'POST',
    contentType: 'application/json',
    requestType: 'json',
    headers: { Authorization: 'Bearer tok', 'Intercom-Version': '2.14', 'X-Skipped': undefined },
    body: { message_type: 'inapp', body: 'Hi', from: { type: 'admin', id: '1' }, to: { type: 'user', id: 'c1' } },
    ...over,
  }) as never;

describe('jsonPostFetcher (the SDK transport of POST /messages)', () => {
  it("sends the SDK's headers as a plain record, its body as JSON and the caller's own signal", async () => {
    const { fn, seen } = fakeFetch(200, '{"type":"user_message","id":"m1"}');
    const signal = new AbortController().signal;
    const r = (await jsonPostFetcher(fn)(args({ abortSignal: signal }))) as { ok: boolean; body: unknown; rawResponse: { status: number } };
    expect(r).toMatchObject({ ok: true, body: { type: 'user_message', id: 'm1' }, rawResponse: { status: 200 } });
    expect(seen).toHaveLength(1);
    expect(seen[0]!.url).toBe('https://api.intercom.io/messages');
    expect(seen[0]!.init.method).toBe('POST');
    expect(seen[0]!.init.signal).toBe(signal);
    expect(seen[0]!.init.headers).toEqual({ Accept: 'application/json', 'Content-Type': 'application/json', Authorization: 'Bearer tok', 'Intercom-Version': '2.14' });
    expect(JSON.parse(String(seen[0]!.init.body))).toEqual({ message_type: 'inapp', body: 'Hi', from: { type: 'admin', id: '1' }, to: { type: 'user', id: 'c1' } });
  });

  it('answers a refusal as the SDK does: status and the parsed error body (or its text)', async () => {
    const json = await jsonPostFetcher(fakeFetch(422, '{"type":"error.list","errors":[{"code":"parameter_invalid","message":"Body is too long"}]}').fn)(args());
    expect(json).toMatchObject({ ok: false, error: { reason: 'status-code', statusCode: 422, body: { errors: [{ code: 'parameter_invalid' }] } }, rawResponse: { status: 422 } });
    const text = await jsonPostFetcher(fakeFetch(502, 'Bad Gateway', { 'content-type': 'text/plain' }).fn)(args());
    expect(text).toMatchObject({ ok: false, error: { reason: 'status-code', statusCode: 502, body: 'Bad Gateway' } });
  });

  it('reads an empty success as no body, and a success that is not JSON as non-json', async () => {
    expect(await jsonPostFetcher(fakeFetch(204, '').fn)(args())).toMatchObject({ ok: true, body: undefined });
    expect(await jsonPostFetcher(fakeFetch(200, '<html>').fn)(args())).toMatchObject({ ok: false, error: { reason: 'non-json', statusCode: 200, rawBody: '<html>' } });
  });

  it('lets a transport failure through as thrown (the runtime classifies it from what its fetch saw)', async () => {
    const failing = (async () => {
      throw new TypeError('fetch failed');
    }) as unknown as typeof fetch;
    await expect(jsonPostFetcher(failing)(args())).rejects.toThrow('fetch failed');
  });

  it('refuses what it was not made for: another method, a query, a non-JSON body, a header that is not a string', async () => {
    const { fn, seen } = fakeFetch(200, '{}');
    const f = jsonPostFetcher(fn);
    await expect(f(args({ method: 'GET' }))).rejects.toThrow(/JSON POSTs/);
    await expect(f(args({ queryParameters: { per_page: 5 } }))).rejects.toThrow(/JSON POSTs/);
    await expect(f(args({ requestType: 'form' }))).rejects.toThrow(/JSON POSTs/);
    await expect(f(args({ headers: { Authorization: () => 'Bearer tok' } }))).rejects.toThrow(/as strings/);
    expect(seen).toHaveLength(0);
  });
});
