import { z } from 'zod';

/** Field rules shared across domains (roster, SendGrid, Intercom), so one field is checked the same way everywhere. */

/** RFC 5321: a local part of at most 64 octets, a whole address of at most 254. */
export const EMAIL_MAX_LENGTH = 254;
export const EMAIL_LOCAL_MAX_LENGTH = 64;

// zod's own pattern for z.email(), tested directly: it runs several times per message sent, where a schema's parse costs more than the test.
const EMAIL_PATTERN = z.regexes.email;

/** Why an address cannot be sent to, or undefined when it can. */
export function emailProblem(address: string): string | undefined {
  if (address.length > EMAIL_MAX_LENGTH) return `an email address is at most ${EMAIL_MAX_LENGTH} characters (RFC 5321)`;
  if (!EMAIL_PATTERN.test(address)) return 'must be an email address like name@company.com';
  if (address.slice(0, address.lastIndexOf('@')).length > EMAIL_LOCAL_MAX_LENGTH) {
    return `the part before "@" is at most ${EMAIL_LOCAL_MAX_LENGTH} characters (RFC 5321)`;
  }
  return undefined;
}

/** An email address (trimmed), within RFC 5321's lengths. */
export const emailAddress = z
  .string()
  .trim()
  .max(EMAIL_MAX_LENGTH, { message: `an email address is at most ${EMAIL_MAX_LENGTH} characters (RFC 5321)`, abort: true })
  .superRefine((v, ctx) => {
    const problem = emailProblem(v);
    if (problem) ctx.addIssue({ code: 'custom', message: problem });
  })
  .meta({ format: 'email' });

export const DATE_MIN_YEAR = 1900;
export const DATE_MAX_YEAR = 2200;

/** A calendar date that exists (no 2024-02-30), as YYYY-MM-DD, between 1900 and 2200. */
export const calendarDate = z
  .string()
  .regex(/^\d{4}-\d{2}-\d{2}$/, { message: 'a date as YYYY-MM-DD', abort: true })
  .superRefine((d, ctx) => {
    const [y, m, day] = d.split('-').map(Number) as [number, number, number];
    if (y < DATE_MIN_YEAR || y > DATE_MAX_YEAR) {
      ctx.addIssue({ code: 'custom', message: `a year between ${DATE_MIN_YEAR} and ${DATE_MAX_YEAR}` });
      return;
    }
    const t = new Date(Date.UTC(y, m - 1, day));
    if (t.getUTCMonth() !== m - 1 || t.getUTCDate() !== day) ctx.addIssue({ code: 'custom', message: 'not a date in the calendar (check the month and day)' });
  });

/**
 * How deep arrays and objects may nest, in tool arguments and webhook bodies alike: no field of ours
 * needs more than a handful of levels, and code that walks a value (validation, scrubbing, JSON) recurses,
 * so a value nested thousands of levels deep would overflow the stack and read as an internal error.
 */
export const MAX_JSON_DEPTH = 64;
export const TOO_DEEP = `nested more than ${MAX_JSON_DEPTH} levels deep (arrays and objects); flatten it`;

/**
 * Where a parsed value nests more than `max` arrays/objects deep (the path of the first container past
 * the limit, "" for the value itself), or undefined. Iterative: safe at any depth.
 */
export function tooDeepAt(value: unknown, max = MAX_JSON_DEPTH): string | undefined {
  const stack: Array<{ v: unknown; depth: number; path: string }> = [{ v: value, depth: 1, path: '' }];
  while (stack.length) {
    const { v, depth, path } = stack.pop()!;
    if (!v || typeof v !== 'object') continue;
    if (depth > max) return path;
    if (Array.isArray(v)) v.forEach((item, i) => item && typeof item === 'object' && stack.push({ v: item, depth: depth + 1, path: `${path}[${i}]` }));
    else for (const [k, item] of Object.entries(v)) if (item && typeof item === 'object') stack.push({ v: item, depth: depth + 1, path: path ? `${path}.${k}` : k });
  }
  return undefined;
}

/** Whether JSON text nests more than `max` arrays/objects deep; a scan of the text, before any parsing. */
export function jsonTextTooDeep(text: string, max = MAX_JSON_DEPTH): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) {
      if (++depth > max) return true;
    } else if (c === 0x5d || c === 0x7d) depth--;
  }
  return false;
}
