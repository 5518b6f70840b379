import { Agent, request, type Dispatcher } from 'undici';

/**
 * fetch for provider calls, over undici's `request` rather than the global fetch. The global fetch
 * streams every body through WHATWG streams and builds its request and response objects in several
 * layers: about 0.15 ms of CPU per call here, against 0.04 ms for `request`, on a path that runs once
 * per message. The answer is read whole (provider answers are small JSON) and handed back as a
 * `Response` (a subclass that answers from those bytes), so callers (ours and intercom-client) keep
 * the standard API.
 *
 * What it does not do that fetch does: follow redirects (provider APIs answer in place; a 3xx is
 * returned as is, as with `redirect: 'manual'`) and send bodies other than strings and bytes (those go
 * through the global fetch). A `dispatcher` in the init (undici's extension) is used, as fetch would.
 */

/** One keep-alive pool for every provider host; idle sockets close after 10 s. */
const agent = new Agent({ keepAliveTimeout: 10_000, keepAliveMaxTimeout: 60_000 });

/** Statuses whose Response may not carry a body. */
const NULL_BODY = new Set([101, 204, 205, 304]);

function headerRecord(headers: RequestInit['headers']): Record<string, string> {
  const out: Record<string, string> = {};
  if (!headers) return out;
  if (headers instanceof Headers) headers.forEach((v, k) => (out[k] = v));
  else if (Array.isArray(headers)) for (const [k, v] of headers) out[k!.toLowerCase()] = v!;
  else for (const [k, v] of Object.entries(headers as Record<string, string>)) out[k.toLowerCase()] = v;
  return out;
}

function responseHeaders(raw: Record<string, string | string[] | undefined>): Headers {
  const h = new Headers();
  for (const [k, v] of Object.entries(raw)) {
    if (v === undefined) continue;
    if (Array.isArray(v)) for (const one of v) h.append(k, one);
    else h.append(k, v);
  }
  return h;
}

const decoder = new TextDecoder();

/**
 * A Response whose body was read whole before it was built. Its readers answer from those bytes
 * without the WHATWG stream a `new Response(bytes)` sets up and drains (about a fifth of leanFetch's
 * own CPU on a path that runs once per message); `body` builds that stream only for a caller that
 * asks for it. As with any Response, a body is read once.
 */
// Typed as a plain base: the DOM typings declare Response's methods as properties, which a class may not override.
const ResponseBase = Response as unknown as new (body: null, init: ResponseInit) => Pick<Response, 'status' | 'statusText' | 'headers'>;

class BufferedResponse extends ResponseBase {
  readonly #bytes: Uint8Array | null;
  #used = false;
  #stream?: ReadableStream<Uint8Array>;

  constructor(bytes: Uint8Array | null, init: ResponseInit) {
    super(null, init);
    this.#bytes = bytes;
  }

  #take(): Uint8Array {
    if (this.#used) throw new TypeError('Body is unusable: Body has already been read');
    this.#used = true;
    return this.#bytes ?? new Uint8Array(0);
  }

  get body(): ReadableStream<Uint8Array> | null {
    if (this.#bytes === null) return null;
    const bytes = this.#bytes;
    // One stream, as a Response has: asked again, the same one.
    this.#stream ??= new ReadableStream({
      start: (c) => {
        this.#used = true;
        c.enqueue(bytes);
        c.close();
      },
    });
    return this.#stream;
  }

  get bodyUsed(): boolean {
    return this.#used;
  }

  text(): Promise<string> {
    try {
      return Promise.resolve(decoder.decode(this.#take()));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  async json(): Promise<any> {
    return JSON.parse(await this.text());
  }

  async arrayBuffer(): Promise<ArrayBuffer> {
    const b = this.#take();
    return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
  }

  async bytes(): Promise<Uint8Array> {
    return new Uint8Array(await this.arrayBuffer());
  }

  async blob(): Promise<Blob> {
    return new Blob([await this.arrayBuffer()], { type: this.headers.get('content-type') ?? '' });
  }

  formData(): Promise<FormData> {
    return new Response(this.#take(), { status: this.status, headers: this.headers }).formData();
  }

  clone(): BufferedResponse {
    if (this.#used) throw new TypeError('Response.clone: Body has already been consumed.');
    return new BufferedResponse(this.#bytes, { status: this.status, statusText: this.statusText, headers: new Headers(this.headers) });
  }
}

/** True for a Response whose body leanFetch read whole before handing it back. */
export function isBuffered(response: Response): boolean {
  return response instanceof BufferedResponse;
}

/** Leaves an answer's body unread (a 202's empty one): a body read whole already has nothing to release. */
export async function discardBody(response: Response): Promise<void> {
  if (isBuffered(response)) return;
  await response.body?.cancel().catch(() => undefined);
}

export const leanFetch: typeof fetch = async (input, init) => {
  const body = init?.body;
  const plainBody = body === undefined || body === null || typeof body === 'string' || body instanceof Uint8Array;
  if (input instanceof Request || !plainBody) return globalThis.fetch(input, init);
  const url = typeof input === 'string' ? input : input.href;
  const r = await request(url, {
    method: (init?.method ?? 'GET').toUpperCase() as 'GET',
    headers: headerRecord(init?.headers),
    body: body as string | Uint8Array | undefined | null,
    signal: init?.signal ?? undefined,
    // A caller's own pool wins: the automation webhooks pin each connection to the addresses they checked.
    dispatcher: (init as { dispatcher?: Dispatcher } | undefined)?.dispatcher ?? agent,
  });
  const bytes = NULL_BODY.has(r.statusCode) ? (await r.body.dump(), null) : new Uint8Array(await r.body.arrayBuffer());
  return new BufferedResponse(bytes, { status: r.statusCode, headers: responseHeaders(r.headers) }) as unknown as Response;
};
