import { z } from 'zod';
import { isValidTimezone } from '../engine/delivery/send-window.js';
import { calendarDate, emailAddress } from '../validation.js';

/** The roster's field rules, shared by the tools and the CSV import so both validate the same way. */

export const TIERS = ['starter', 'standard', 'professional', 'enterprise'] as const;
export const LIFECYCLE_STAGES = ['onboarding', 'adopting', 'mature', 'renewal', 'churned'] as const;

export const clientIdSchema = z
  .string()
  .regex(/^[a-z0-9_-]{3,64}$/, 'client_id is 3–64 characters: lowercase letters, digits, "-" or "_" (e.g. "acme-corp")');

export const emailSchema = emailAddress.transform((e) => e.toLowerCase());

/** Custom attributes are free-form, within bounds a roster row (and a template) can carry. */
export const CUSTOM_ATTRIBUTE_LIMITS = { maxKeys: 100, maxKeyLength: 100, maxValueLength: 2000, maxTotalBytes: 32 * 1024 } as const;
const RESERVED_KEYS = new Set(['__proto__', 'constructor', 'prototype']);
const L = CUSTOM_ATTRIBUTE_LIMITS;

export const customAttributesSchema = z.preprocess(
  // Before the record is built: a record silently drops "__proto__", and counting first spares parsing 20,000 keys.
  (v, ctx) => {
    if (!v || typeof v !== 'object' || Array.isArray(v)) return v;
    const keys = Object.keys(v);
    if (keys.length > L.maxKeys) {
      ctx.addIssue({ code: 'custom', input: v, message: `at most ${L.maxKeys} custom attributes (got ${keys.length})` });
      return {};
    }
    // Bad names are reported here, by name, and left out of what the record sees (its own message names no key).
    const kept: Array<[string, unknown]> = [];
    for (const [k, value] of Object.entries(v)) {
      if (RESERVED_KEYS.has(k)) ctx.addIssue({ code: 'custom', input: v, path: [k], message: `"${k}" cannot be an attribute name (reserved); rename it` });
      else if (k.length === 0 || k.length > L.maxKeyLength) {
        ctx.addIssue({ code: 'custom', input: v, path: [k], message: `an attribute name is 1 to ${L.maxKeyLength} characters (got ${k.length})` });
      } else kept.push([k, value]);
    }
    const bytes = Buffer.byteLength(JSON.stringify(v));
    if (bytes > L.maxTotalBytes) ctx.addIssue({ code: 'custom', input: v, message: `custom attributes are at most ${L.maxTotalBytes} bytes as JSON in total (got ${bytes})` });
    return Object.fromEntries(kept);
  },
  z
    .record(
      z.string().min(1).max(L.maxKeyLength),
      z.union([z.string().max(L.maxValueLength, `an attribute value is at most ${L.maxValueLength} characters`), z.number(), z.boolean(), z.null()]),
    )
    .meta({ maxProperties: L.maxKeys })
    .describe(`up to ${L.maxKeys} attributes; names up to ${L.maxKeyLength} characters, text values up to ${L.maxValueLength}, ${L.maxTotalBytes / 1024} KB in all`),
);

const dateOnly = calendarDate;
const segment = z.string().trim().toLowerCase().regex(/^[a-z0-9_-]{1,50}$/, 'segment labels are lowercase letters, digits, "-" or "_"');

/** Every client field except the id; all optional so the same shape serves partial updates. */
export const clientFieldsSchema = z.strictObject({
  name: z.string().trim().min(1).max(200),
  tier: z.enum(TIERS),
  segments: z.array(segment).max(50).describe('labels such as "high_value", "at_risk" (a set: duplicates are dropped)'),
  lifecycle_stage: z.enum(LIFECYCLE_STAGES),
  health_score: z.number().int().min(0).max(100).nullable(),
  mrr: z.number().min(0).nullable().describe('monthly recurring revenue'),
  renewal_date: dateOnly.nullable(),
  owner_email: emailSchema.nullable().describe('the CSM who owns the account'),
  custom_attributes: customAttributesSchema,
});

export const newClientSchema = clientFieldsSchema.partial().extend({
  client_id: clientIdSchema,
  name: clientFieldsSchema.shape.name,
  tier: clientFieldsSchema.shape.tier.default('standard'),
  lifecycle_stage: clientFieldsSchema.shape.lifecycle_stage.default('onboarding'),
});
export type NewClient = z.output<typeof newClientSchema>;
export type ClientPatch = Partial<z.output<typeof clientFieldsSchema>>;

export const contactFieldsSchema = z.strictObject({
  email: emailSchema,
  name: z.string().trim().max(200).nullable().optional(),
  first_name: z.string().trim().max(100).nullable().optional(),
  role: z.string().trim().toLowerCase().max(50).nullable().optional().describe('e.g. champion, decision_maker, user'),
  phone: z.string().trim().max(50).nullable().optional(),
  external_user_id: z.string().trim().max(200).nullable().optional().describe('your own user id (Intercom external_id)'),
  timezone: z
    .string()
    .trim()
    .max(64)
    .refine(isValidTimezone, 'an IANA time zone such as "Europe/Berlin" or "America/New_York"')
    .nullable()
    .optional()
    .describe("the contact's IANA time zone; automations' send windows use it"),
});
export type ContactInput = z.output<typeof contactFieldsSchema>;
