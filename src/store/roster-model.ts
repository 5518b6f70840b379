import { z } from 'zod';
import { isValidTimezone } from '../engine/delivery/send-window.js';

/** The roster's field rules, shared by the tools and the CSV import so both validate the same way. */

export const TIERS = ['starter', 'standard', 'professional', 'enterprise'] as const;
export const LIFECYCLE_STAGES = ['onboarding', 'adopting', 'mature', 'renewal', 'churned'] as const;

export const clientIdSchema = z
  .string()
  .regex(/^[a-z0-9_-]{3,64}$/, 'client_id is 3–64 characters: lowercase letters, digits, "-" or "_" (e.g. "acme-corp")');

export const emailSchema = z
  .string()
  .trim()
  .toLowerCase()
  .pipe(z.email('must be an email address like name@company.com'));

const dateOnly = z.string().regex(/^\d{4}-\d{2}-\d{2}$/, 'a date as YYYY-MM-DD').refine((d) => !Number.isNaN(Date.parse(d)), 'not a real date');
const segment = z.string().trim().toLowerCase().regex(/^[a-z0-9_-]{1,50}$/, 'segment labels are lowercase letters, digits, "-" or "_"');

/** Every client field except the id; all optional so the same shape serves partial updates. */
export const clientFieldsSchema = z.object({
  name: z.string().trim().min(1).max(200),
  tier: z.enum(TIERS),
  segments: z.array(segment).max(50).describe('labels such as "high_value", "at_risk" (a set: duplicates are dropped)'),
  lifecycle_stage: z.enum(LIFECYCLE_STAGES),
  health_score: z.number().int().min(0).max(100).nullable(),
  mrr: z.number().min(0).nullable().describe('monthly recurring revenue'),
  renewal_date: dateOnly.nullable(),
  owner_email: emailSchema.nullable().describe('the CSM who owns the account'),
  custom_attributes: z.record(z.string(), z.union([z.string(), z.number(), z.boolean(), z.null()])),
});

export const newClientSchema = clientFieldsSchema.partial().extend({
  client_id: clientIdSchema,
  name: clientFieldsSchema.shape.name,
  tier: clientFieldsSchema.shape.tier.default('standard'),
  lifecycle_stage: clientFieldsSchema.shape.lifecycle_stage.default('onboarding'),
});
export type NewClient = z.output<typeof newClientSchema>;
export type ClientPatch = Partial<z.output<typeof clientFieldsSchema>>;

export const contactFieldsSchema = z.object({
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
