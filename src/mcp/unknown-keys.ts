import { distance } from 'fastest-levenshtein';
import type { z } from 'zod';

/**
 * Every tool's input is a strict object (nested objects of fixed shape too): an argument the tool does not
 * know is refused, never dropped — `record_customer_event {client_id, email}` once recorded the event for the
 * whole client because `email` (meant: contact_email) was silently ignored. The refusal names the nearest
 * valid field, found here from the schema at the place of the unknown key.
 */

// zod 4's definition objects, as far as walking a schema needs them.
interface Def {
  type: string;
  shape?: Record<string, z.ZodType>;
  innerType?: z.ZodType;
  in?: z.ZodType;
  element?: z.ZodType;
  options?: z.ZodType[];
  valueType?: z.ZodType;
  left?: z.ZodType;
  right?: z.ZodType;
  getter?: () => z.ZodType;
}
const defOf = (s: z.ZodType) => (s as unknown as { _zod: { def: Def } })._zod.def;
const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The object schemas a value at this place may be checked against (unions give several). */
function objectsOf(schema: z.ZodType | undefined, value: unknown, depth = 0): Def[] {
  if (!schema || depth > 20) return [];
  const def = defOf(schema);
  switch (def.type) {
    case 'object':
      return [def];
    case 'optional':
    case 'nullable':
    case 'default':
    case 'prefault':
    case 'readonly':
    case 'catch':
    case 'nonoptional':
      return objectsOf(def.innerType, value, depth + 1);
    case 'pipe':
      return objectsOf(def.in, value, depth + 1);
    case 'lazy':
      return objectsOf(def.getter?.(), value, depth + 1);
    case 'intersection':
      return [...objectsOf(def.left, value, depth + 1), ...objectsOf(def.right, value, depth + 1)];
    case 'union': {
      const all = (def.options ?? []).flatMap((o) => objectsOf(o, value, depth + 1));
      if (!isObject(value) || all.length < 2) return all;
      // The branch the value was meant for: the one that knows most of its keys (a discriminator among them).
      const known = (d: Def) => Object.keys(value).filter((k) => d.shape && k in d.shape && matchesLiteral(d.shape[k]!, value[k])).length;
      const best = Math.max(...all.map(known));
      return all.filter((d) => known(d) === best);
    }
    default:
      return [];
  }
}

/** False only for a literal (a discriminator) that the value does not equal. */
function matchesLiteral(schema: z.ZodType, value: unknown): boolean {
  const def = defOf(schema) as Def & { values?: unknown[] };
  return def.type !== 'literal' || (def.values ?? []).includes(value);
}

/** The field names valid where `path` points in the arguments (empty when the place cannot be resolved). */
export function validKeysAt(schema: z.ZodType, args: unknown, path: ReadonlyArray<PropertyKey>): string[] {
  let schemas: z.ZodType[] = [schema];
  let value: unknown = args;
  for (const seg of path) {
    const next: z.ZodType[] = [];
    for (const s of schemas) {
      const def = defOf(s);
      const inner = def.type === 'array' ? [def] : objectsOf(s, value);
      for (const d of inner) {
        if (d.type === 'array' && d.element) next.push(d.element);
        else if (d.shape && typeof seg === 'string' && d.shape[seg]) next.push(d.shape[seg]);
      }
      // Wrappers around an array (optional, default…).
      if (!inner.length && typeof seg === 'number') {
        let w: z.ZodType | undefined = s;
        for (let i = 0; w && i < 10 && defOf(w).type !== 'array'; i++) w = defOf(w).innerType ?? defOf(w).in;
        if (w && defOf(w).element) next.push(defOf(w).element!);
      }
    }
    schemas = next;
    value = isObject(value) || Array.isArray(value) ? (value as Record<PropertyKey, unknown>)[seg as string] : undefined;
    if (!schemas.length) return [];
  }
  return [...new Set(schemas.flatMap((s) => objectsOf(s, value)).flatMap((d) => Object.keys(d.shape ?? {})))];
}

const norm = (k: string) => k.toLowerCase().replace(/[_\-\s.]/g, '');

/**
 * The valid field most likely meant by `key`: the same name spelled otherwise (case, "_"), one that contains
 * it or is contained in it ("email" → "contact_email"), or one a few typing slips away ("serach" → "search").
 */
export function nearestKey(key: string, valid: string[]): string | undefined {
  const k = norm(key);
  if (!k || !valid.length) return undefined;
  let best: { name: string; rank: number } | undefined;
  for (const name of valid) {
    const n = norm(name);
    const d = distance(k, n);
    let rank: number;
    if (n === k) rank = 0;
    else if (d <= Math.max(1, Math.floor(Math.min(k.length, n.length) / 3))) rank = 1 + d / 100;
    else if (k.length >= 3 && (n.includes(k) || k.includes(n))) rank = 2 + d / 100;
    else continue;
    if (!best || rank < best.rank) best = { name, rank };
  }
  return best?.name;
}
