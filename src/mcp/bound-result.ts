/**
 * No tool result is larger than MAX_RESULT_BYTES of JSON, whatever the input: a result a client cannot
 * receive is a failure, and after a send it would look like one (the model then repeats the send).
 * Tools are written to return small results (counts, then only problems, pages); this is the guarantee
 * for the whole class: the largest arrays are shortened and the longest strings cut until the result
 * fits, and `result_truncated` says what was cut and how to see the rest.
 */

export const MAX_RESULT_BYTES = 256 * 1024;
/** Strings are never cut below this many characters. */
const MIN_STRING = 200;

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

interface Cut {
  path: string;
  kept: number;
  of: number;
}

/** boundResult plus the JSON text of what it returns, serializing only once when nothing is cut (every call). */
export function boundResultWithText<T extends Record<string, unknown>>(value: T, maxBytes = MAX_RESULT_BYTES): { value: T; text: string } {
  const text = JSON.stringify(value);
  // A UTF-8 byte is at most 3 per UTF-16 unit: short texts need no byte count.
  if (text.length * 3 <= maxBytes || Buffer.byteLength(text) <= maxBytes) return { value, text };
  const cut = boundResult(value, maxBytes);
  return { value: cut, text: JSON.stringify(cut) };
}

export function boundResult<T extends Record<string, unknown>>(value: T, maxBytes = MAX_RESULT_BYTES): T {
  if (Buffer.byteLength(JSON.stringify(value)) <= maxBytes) return value;
  const copy = structuredClone(value) as unknown as { [k: string]: Json };
  const cuts = new Map<string, Cut>();
  for (let round = 0; round < 200; round++) {
    const size = Buffer.byteLength(JSON.stringify(copy));
    if (size <= maxBytes) break;
    const target = largest(copy, '');
    if (!target) break;
    const { parent, key, path, node } = target;
    if (Array.isArray(node)) {
      const keep = Math.max(0, Math.floor(node.length / 2));
      const prior = cuts.get(path);
      cuts.set(path, { path, kept: keep, of: prior?.of ?? node.length });
      (parent as Record<string | number, Json>)[key] = node.slice(0, keep);
    } else if (typeof node === 'string') {
      const keep = Math.max(MIN_STRING, Math.floor(node.length / 2));
      if (keep >= node.length) break;
      const prior = cuts.get(path);
      cuts.set(path, { path, kept: keep, of: prior?.of ?? node.length });
      (parent as Record<string | number, Json>)[key] = `${node.slice(0, keep)}… [cut]`;
    }
  }
  const list = [...cuts.values()];
  (copy as Record<string, Json>).result_truncated = {
    note:
      `This result was larger than ${Math.round(maxBytes / 1024)} KiB and was shortened: ` +
      list.map((c) => `${c.path} kept ${c.kept} of ${c.of}`).join('; ') +
      '. Use the tool\'s filters or paging (limit, cursor) to see the rest.',
    fields: list.map((c) => c.path),
  };
  return copy as unknown as T;
}

interface Target {
  parent: Json[] | { [k: string]: Json };
  key: string | number;
  path: string;
  node: Json[] | string;
  bytes: number;
}

/** The biggest array of two or more items (by serialized size), or long string, anywhere below `node`. */
function largest(node: Json, path: string): Target | undefined {
  let best: Target | undefined;
  const consider = (parent: Target['parent'], key: string | number, child: Json, childPath: string) => {
    if ((Array.isArray(child) && child.length > 1) || (typeof child === 'string' && child.length > MIN_STRING * 2)) {
      const bytes = Buffer.byteLength(JSON.stringify(child));
      if (!best || bytes > best.bytes) best = { parent, key, path: childPath, node: child as Json[] | string, bytes };
    }
    if (child && typeof child === 'object') {
      const inner = largest(child, childPath);
      if (inner && (!best || inner.bytes > best.bytes)) best = inner;
    }
  };
  if (Array.isArray(node)) node.forEach((c, i) => consider(node, i, c, `${path}[${i}]`));
  else if (node && typeof node === 'object') for (const [k, c] of Object.entries(node)) consider(node, k, c, path ? `${path}.${k}` : k);
  return best;
}
