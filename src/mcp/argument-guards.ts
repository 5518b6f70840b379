import { invalidInput } from '../result.js';
import { TOO_DEEP, tooDeepAt } from '../validation.js';

/**
 * Checks that apply to every string and every key of every tool's arguments, whatever its schema:
 * - no NUL character (U+0000): PostgreSQL refuses it, providers mangle it, no person types it;
 * - nothing nested more than MAX_JSON_DEPTH arrays/objects deep (refused before anything recurses into it);
 * - no "__proto__" key: JSON.parse keeps it as a plain key, but any object built from the arguments
 *   (zod records included) silently drops it — the caller would be told "saved" for data that was not.
 * Refused up front as invalid_input naming each field.
 */
export function rejectUnsafeArguments(args: unknown, toolName: string): void {
  // First, and without recursion: every later step (this walk, zod, the audit's JSON) recurses.
  const deep = tooDeepAt(args);
  if (deep !== undefined) {
    const field = deep || '(arguments)';
    throw invalidInput(`Invalid arguments for ${toolName}: ${field}: ${TOO_DEEP}. Correct and call again.`, { fields: [{ field, problem: TOO_DEEP }] });
  }
  const problems: Array<{ field: string; problem: string }> = [];
  const visit = (v: unknown, path: string) => {
    if (problems.length >= 20) return;
    if (typeof v === 'string') {
      if (v.includes('\u0000')) problems.push({ field: path || '(arguments)', problem: 'contains a NUL character (\\u0000); remove it' });
      return;
    }
    if (Array.isArray(v)) {
      v.forEach((item, i) => visit(item, `${path}[${i}]`));
      return;
    }
    if (v && typeof v === 'object') {
      for (const [k, item] of Object.entries(v)) {
        const at = path ? `${path}.${k}` : k;
        if (k === '__proto__') problems.push({ field: at, problem: 'a key named "__proto__" cannot be stored; rename it' });
        else if (k.includes('\u0000')) problems.push({ field: at, problem: 'the key contains a NUL character (\\u0000); remove it' });
        else visit(item, at);
      }
    }
  };
  visit(args, '');
  if (problems.length) {
    throw invalidInput(`Invalid arguments for ${toolName}: ${problems.map((p) => `${p.field}: ${p.problem}`).join('; ')}. Correct and call again.`, {
      fields: problems,
    });
  }
}
