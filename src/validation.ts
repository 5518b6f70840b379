import { z } from 'zod';

/** Field rules shared across domains (roster, SendGrid, Intercom), so one field is checked the same way everywhere. */

/** RFC 5321: a local part of at most 64 octets, a whole address of at most 254. */
export const EMAIL_MAX_LENGTH = 254;
export const EMAIL_LOCAL_MAX_LENGTH = 64;

const emailShape = z.email('must be an email address like name@company.com');

/** Why an address cannot be sent to, or undefined when it can. */
export function emailProblem(address: string): string | undefined {
  if (address.length > EMAIL_MAX_LENGTH) return `an email address is at most ${EMAIL_MAX_LENGTH} characters (RFC 5321)`;
  if (!emailShape.safeParse(address).success) return 'must be an email address like name@company.com';
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
