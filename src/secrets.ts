/**
 * One place that knows the secret values in use, so any text leaving the process (logs, error
 * messages, tool results) can be scrubbed of them, whatever code path produced it.
 *
 * Only the configured values are redacted — as written and in every encoding they travel in (URL
 * encoding, JSON escaping, the base64 of HTTP Basic credentials) — never ordinary words: tool results
 * carry customer data ("Basic Fitness Studio", "a bearer of good news"), and a model would write a
 * redacted name back into the roster.
 */

/** Shorter values are not scrubbed: they would match ordinary text, and are no secret anyway. */
export const MIN_SECRET_LENGTH = 8;

const known = new Set<string>();
let matcher: RegExp | undefined;

/** The forms a credential takes on its way out: raw, URL-encoded, JSON-escaped, and base64 as HTTP Basic sends it. */
function forms(secret: string): string[] {
  const out = new Set([secret, encodeURIComponent(secret), JSON.stringify(secret).slice(1, -1)]);
  // Basic auth: "user:secret", "secret:" (secret as user name, e.g. Mixpanel's API secret) or ":secret".
  for (const plain of [secret, `${secret}:`, `:${secret}`]) {
    const b64 = Buffer.from(plain).toString('base64');
    out.add(b64);
    out.add(b64.replace(/=+$/, ''));
    out.add(Buffer.from(plain).toString('base64url'));
  }
  return [...out].filter((f) => f.length >= MIN_SECRET_LENGTH);
}

export function registerSecrets(values: Iterable<string | undefined>): void {
  let changed = false;
  for (const v of values) {
    if (!v || v.length < MIN_SECRET_LENGTH) continue;
    for (const f of forms(v)) {
      if (!known.has(f)) {
        known.add(f);
        changed = true;
      }
    }
  }
  if (changed) {
    // Longest first, so a secret that contains another is redacted whole.
    const alternatives = [...known].sort((a, b) => b.length - a.length).map((s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
    matcher = new RegExp(alternatives.join('|'), 'g');
  }
}

/**
 * The parts of a URL that are credentials: the user-info, and everything after the origin — its path
 * and query (Slack, Discord, Teams, Zapier and most webhook services put their secret there, and which
 * segment is the secret differs by service), as a whole, the path and the query alone, each query value,
 * and each path segment that looks like a token (16+ characters, letters and digits). The origin stays
 * readable: it says where the data goes.
 */
export function urlSecrets(raw: string): string[] {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    return [];
  }
  const out = new Set<string>();
  if (u.username) out.add(decodeURIComponent(u.username));
  if (u.password) out.add(decodeURIComponent(u.password));
  const at = raw.toLowerCase().indexOf(u.host);
  if (at >= 0) out.add(raw.slice(at + u.host.length).replace(/#.*$/, '')); // as written (it may differ from the normalised form)
  for (const v of [`${u.pathname}${u.search}`, u.search, u.search.slice(1)]) out.add(v);
  if (u.pathname !== '/') out.add(u.pathname);
  for (const [, v] of u.searchParams) out.add(v);
  for (const seg of u.pathname.split('/')) {
    if (seg.length >= 16 && /[a-z]/i.test(seg) && /\d/.test(seg)) out.add(seg);
  }
  return [...out].filter((v) => v.length >= MIN_SECRET_LENGTH && v !== '/');
}

/** Registers a URL's credential parts (see urlSecrets) for scrubbing. */
export function registerUrlSecrets(raw: string): void {
  registerSecrets(urlSecrets(raw));
}

/**
 * Credentials we were not told about but can recognise without touching prose: a complete SendGrid key
 * (SG.<22>.<43>), and the value of an Authorization header written out as a header.
 */
const PATTERNS: Array<[RegExp, string]> = [
  [/\bSG\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}/g, '[REDACTED]'],
  [/(\bauthorization["']?\s*[:=]\s*["']?(?:Bearer|Basic|Token)\s+)[A-Za-z0-9._~+/=-]+/gi, '$1[REDACTED]'],
];

export function scrubSecrets(text: string): string {
  let out = matcher ? text.replace(matcher, '[REDACTED]') : text;
  for (const [p, replacement] of PATTERNS) out = out.replace(p, replacement);
  return out;
}

/** Deep-scrubs a JSON-able value (used on tool results before they leave the server). */
export function scrubValue<T>(value: T): T {
  if (typeof value === 'string') return scrubSecrets(value) as T;
  if (Array.isArray(value)) return value.map((v) => scrubValue(v)) as T;
  // fromEntries defines own properties, so even a "__proto__" key from provider data stays a plain key.
  if (value && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, scrubValue(v)])) as T;
  return value;
}

/** For tests. */
export function clearSecrets(): void {
  known.clear();
  matcher = undefined;
}
