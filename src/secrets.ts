/**
 * One place that knows the secret values in use, so any text leaving the process (logs, error
 * messages, tool results) can be scrubbed of them, whatever code path produced it.
 */
const known = new Set<string>();

export function registerSecrets(values: Iterable<string | undefined>): void {
  for (const v of values) if (v && v.length >= 4) known.add(v);
}

const PATTERNS: RegExp[] = [
  /(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{6,}/gi, // Authorization header values
  /SG\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}/g, // SendGrid API keys
];

export function scrubSecrets(text: string): string {
  let out = text;
  for (const secret of known) {
    if (out.includes(secret)) out = out.split(secret).join('[REDACTED]');
    const encoded = encodeURIComponent(secret);
    if (encoded !== secret && out.includes(encoded)) out = out.split(encoded).join('[REDACTED]');
  }
  for (const p of PATTERNS) out = out.replace(p, (m) => (m.includes(' ') ? `${m.split(/\s+/)[0]} [REDACTED]` : '[REDACTED]'));
  return out;
}

/** Deep-scrubs a JSON-able value (used on tool results before they leave the server). */
export function scrubValue<T>(value: T): T {
  if (typeof value === 'string') return scrubSecrets(value) as T;
  if (Array.isArray(value)) return value.map((v) => scrubValue(v)) as T;
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = scrubValue(v);
    return out as T;
  }
  return value;
}

/** For tests. */
export function clearSecrets(): void {
  known.clear();
}
