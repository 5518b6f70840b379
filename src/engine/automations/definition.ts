import { Cron } from 'croner';
import { z } from 'zod';
import type { Config } from '../../config.js';
import { allowedWebhookUrl } from '../../providers/webhooks/service.js';
import { invalidInput, notConfigured, ToolError, type ProviderName } from '../../result.js';
import { registerUrlSecrets } from '../../secrets.js';
import { ROSTER_EVENT_NAMES, rosterEventRefusal } from '../../store/customer-events.js';
import { LIFECYCLE_STAGES, TIERS } from '../../store/roster-model.js';
import type { Channel, SendWindow } from '../delivery/message.js';
import { isValidTimezone } from '../delivery/send-window.js';
import { compileTemplates, MAX_TEXT_TEMPLATE_CHARS, templateString, type CompiledTemplates, type TemplateSources } from '../templating.js';
import { singleLine } from '../../safety/content-view.js';

/**
 * A workflow as the tool receives it, validated field by field, and as it is stored: normalised (every
 * default made explicit) so a preview shows exactly what will run and a token can be bound to it.
 */

export const TRIGGER_TYPES = ['time_based', 'event_based', 'health_score', 'milestone', 'contract_event', 'usage_pattern', 'behavior_based', 'custom'] as const;
export type TriggerType = (typeof TRIGGER_TYPES)[number];

export const MESSAGE_ACTIONS = ['send_email', 'send_in_app_notification', 'send_intercom_email'] as const;
export const ACTION_TYPES = [
  ...MESSAGE_ACTIONS,
  'create_task',
  'create_note',
  'add_tag',
  'remove_tag',
  'update_health_score',
  'track_event',
  'create_ticket',
  'send_slack_message',
  'trigger_webhook',
  'wait',
] as const;
export type ActionType = (typeof ACTION_TYPES)[number];

/** Step types people ask for that this product cannot perform: refused with the reason, nothing saved. */
const UNAVAILABLE_ACTIONS: Record<string, string> = {
  send_sms: 'send_sms is not available: this product has no SMS provider. Use send_email, send_intercom_email or send_in_app_notification.',
  schedule_meeting:
    'schedule_meeting is not available: this product has no calendar provider. Use create_task to ask the owner to book it, or put a booking link in a send_email body.',
};

export const CHANNEL_OF: Record<(typeof MESSAGE_ACTIONS)[number], Channel> = {
  send_email: 'email',
  send_intercom_email: 'intercom_email',
  send_in_app_notification: 'intercom_inapp',
};

/** The template variables of workflow messages: a campaign's, plus the workflow and the triggering event. */
export const WORKFLOW_ROOTS = ['contact', 'client', 'sender', 'workflow', 'event'] as const;

export const MAX_STEPS = 30;
const DAY_NAMES = ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'] as const;

// ---- input schemas ---------------------------------------------------------------------------

const oneOrMany = <T extends z.ZodType>(t: T) => z.union([t, z.array(t).min(1).max(10)]);
const eventName = z.string().trim().min(1).max(100).regex(/^[A-Za-z0-9_.:-]+$/, 'event names are letters, digits, "_", ".", ":" or "-"');
const scalar = z.union([z.string().max(500), z.number(), z.boolean()]);
const comparison = z.strictObject({
  eq: scalar.optional(),
  ne: scalar.optional(),
  gt: z.number().optional(),
  gte: z.number().optional(),
  lt: z.number().optional(),
  lte: z.number().optional(),
  in: z.array(scalar).min(1).max(50).optional(),
  exists: z.boolean().optional(),
});
export const propertyConditions = z
  .record(z.string().min(1).max(100), z.union([scalar, comparison]))
  .refine((r) => Object.keys(r).length <= 10, 'at most 10 property conditions')
  .describe('conditions on the event properties: a value (equals) or {eq, ne, gt, gte, lt, lte, in, exists}; all must hold');
export type PropertyConditions = z.output<typeof propertyConditions>;

const timezone = z.string().trim().min(1).max(64).refine(isValidTimezone, 'an IANA time zone such as "Europe/Berlin" or "America/New_York"');

export const TRIGGER_CONDITIONS = {
  time_based: z.strictObject({
    schedule: z.string().trim().min(9).max(100).describe('cron: "0 9 * * 1" (minute hour day month weekday), or with a leading seconds field'),
    timezone: timezone.default('UTC'),
  }),
  event_based: z.strictObject({ event: eventName, properties: propertyConditions.optional() }),
  health_score: z.strictObject({ threshold: z.number().int().min(0).max(100), direction: z.enum(['below', 'above']).default('below') }),
  milestone: z.strictObject({ milestone_name: z.string().trim().min(1).max(100) }),
  contract_event: z
    .strictObject({ event_type: z.enum(['renewal_upcoming', 'renewal_reached']), days_before: z.number().int().min(1).max(365).optional() })
    .refine((c) => c.event_type !== 'renewal_upcoming' || c.days_before !== undefined, { message: 'renewal_upcoming needs days_before (1–365)', path: ['days_before'] }),
  usage_pattern: z.strictObject({
    metric: eventName.describe('the event counted (e.g. "login"), or summed with `property`'),
    property: z
      .string()
      .trim()
      .regex(/^[A-Za-z0-9_]{1,100}$/, 'a property name: letters, digits and _')
      .optional()
      .describe('a numeric event property to sum instead of counting events'),
    threshold: z.number().min(0),
    window_days: z.number().int().min(1).max(90),
    direction: z.enum(['below', 'above']),
  }),
  behavior_based: z.strictObject({
    behavior: z.literal('inactive'),
    days: z.number().int().min(1).max(365),
    level: z.enum(['contact', 'client']).default('contact'),
  }),
  custom: z.strictObject({}),
} satisfies Record<TriggerType, z.ZodType>;

type Conditions = { [K in TriggerType]: z.output<(typeof TRIGGER_CONDITIONS)[K]> };
export type Trigger = { [K in TriggerType]: { type: K } & Conditions[K] }[TriggerType];

const liquid = (max: number) => templateString(max).min(1);
/** A send_email step's HTML body: less than a campaign's (MAX_TEMPLATE_CHARS), as a workflow has up to 30 steps in one request. */
export const STEP_HTML_MAX_CHARS = 200_000;
const stepSchemas = [
  z.strictObject({
    type: z.literal('send_email'),
    subject: liquid(998),
    body: liquid(MAX_TEXT_TEMPLATE_CHARS).describe('plain text (Liquid)'),
    body_html: liquid(STEP_HTML_MAX_CHARS).optional().describe('HTML (Liquid; values are HTML-escaped; at most 200,000 characters)'),
    from_email: z.email().optional().describe('default: sender_email, else SENDGRID_FROM_EMAIL'),
  }),
  z.strictObject({ type: z.literal('send_intercom_email'), subject: liquid(998), body: liquid(MAX_TEXT_TEMPLATE_CHARS) }),
  z.strictObject({ type: z.literal('send_in_app_notification'), body: liquid(MAX_TEXT_TEMPLATE_CHARS) }),
  z.strictObject({
    type: z.literal('create_task'),
    title: liquid(500),
    body: liquid(10_000).optional(),
    due_in_days: z.number().int().min(0).max(365).default(1),
  }),
  z.strictObject({ type: z.literal('create_note'), body: liquid(10_000) }),
  z.strictObject({ type: z.literal('add_tag'), tag: z.string().trim().min(1).max(100) }),
  z.strictObject({ type: z.literal('remove_tag'), tag: z.string().trim().min(1).max(100) }),
  z
    .strictObject({ type: z.literal('update_health_score'), set: z.number().int().min(0).max(100).optional(), adjust: z.number().int().min(-100).max(100).optional() })
    .refine((s) => (s.set === undefined) !== (s.adjust === undefined), { message: 'give exactly one of set (0–100) or adjust (−100…100)', path: ['set'] }),
  z.strictObject({
    type: z.literal('track_event'),
    event_name: z.string().trim().min(1).max(255),
    metadata: z
      .record(z.string().min(1).max(255), z.union([z.string().max(255), z.number(), z.boolean()]))
      .refine((m) => Object.keys(m).length <= 10, 'at most 10 metadata keys')
      .optional(),
    destinations: z.array(z.enum(['intercom', 'mixpanel'])).min(1).optional().describe('default: whichever of Intercom and Mixpanel is configured'),
  }),
  z.strictObject({ type: z.literal('create_ticket'), title: liquid(500), description: liquid(10_000).optional() }),
  z.strictObject({ type: z.literal('send_slack_message'), text: liquid(3_000) }),
  z.strictObject({
    type: z.literal('trigger_webhook'),
    url: z
      .string()
      .min(1)
      .max(2_000)
      // A webhook URL's path and query are a credential (Slack's secret is its last segment): known to the
      // scrubber from the moment it arrives, so no answer, audit entry or log line shows them.
      .refine((u) => (registerUrlSecrets(u), true))
      .describe('https URL on an origin (scheme, host, port) in AUTOMATION_WEBHOOK_ALLOWED_HOSTS; its path and query are treated as a secret and shown redacted'),
    payload: z
      .record(z.string().min(1).max(100), scalar)
      .refine((p) => Object.keys(p).length <= 50, 'at most 50 payload fields')
      .optional()
      .describe('extra fixed fields, sent beside workflow, step, client, contact and event'),
  }),
  z
    .strictObject({
      type: z.literal('wait'),
      minutes: z.number().int().min(1).max(525_600).optional(),
      hours: z.number().int().min(1).max(8_760).optional(),
      days: z.number().int().min(1).max(365).optional(),
    })
    .refine((w) => w.minutes !== undefined || w.hours !== undefined || w.days !== undefined, { message: 'give minutes, hours or days', path: ['days'] })
    .refine((w) => waitMs(w) <= 365 * 86_400_000, { message: 'a wait is at most 365 days', path: ['days'] }),
] as const;

export const stepSchema = z.discriminatedUnion('type', stepSchemas, {
  error: (iss) => {
    if (iss.code !== 'invalid_union') return undefined;
    const given = (iss.input as { type?: unknown } | undefined)?.type;
    if (typeof given === 'string' && UNAVAILABLE_ACTIONS[given]) return UNAVAILABLE_ACTIONS[given];
    return `${typeof given === 'string' ? `unknown step type "${given}"` : 'each step needs a type'}; supported: ${ACTION_TYPES.join(', ')}`;
  },
});
export type Step = z.output<typeof stepSchema>;
export type MessageStep = Extract<Step, { type: (typeof MESSAGE_ACTIONS)[number] }>;

export function isMessageStep(s: Step): s is MessageStep {
  return (MESSAGE_ACTIONS as readonly string[]).includes(s.type);
}

export function waitMs(w: { minutes?: number; hours?: number; days?: number }): number {
  return ((w.minutes ?? 0) + (w.hours ?? 0) * 60 + (w.days ?? 0) * 1440) * 60_000;
}

export const audienceSchema = z.strictObject({
  tier: oneOrMany(z.enum(TIERS)).optional(),
  segment: z.string().trim().toLowerCase().min(1).max(50).optional(),
  lifecycle_stage: oneOrMany(z.enum(LIFECYCLE_STAGES)).optional(),
  health_min: z.number().int().min(0).max(100).optional(),
  health_max: z.number().int().min(0).max(100).optional(),
  contact_roles: z
    .array(z.string().trim().toLowerCase().min(1).max(50))
    .min(1)
    .max(20)
    .optional()
    .describe('who a client-level trigger messages (default every contact); for contact-level triggers, only contacts with these roles enter'),
});

const goalSchema = z.union(
  [
    z.strictObject({
      event: eventName,
      properties: propertyConditions.optional(),
      of_this_workflow: z.boolean().default(false).describe('only events about a message this enrolment sent (e.g. email_opened of its first email)'),
    }),
    z.strictObject({ health_above: z.number().int().min(0).max(100) }),
    z.strictObject({ lifecycle_stage: z.enum(LIFECYCLE_STAGES) }),
  ],
  { error: () => 'each exit_when item is {event, properties?, of_this_workflow?}, {health_above: 0–100} or {lifecycle_stage}' },
);
export type Goal = z.output<typeof goalSchema>;

const sendWindowSchema = z
  .strictObject({
    days: z.array(z.enum(DAY_NAMES)).min(1).max(7).default(['mon', 'tue', 'wed', 'thu', 'fri']),
    start_hour: z.number().int().min(0).max(23),
    end_hour: z.number().int().min(1).max(24),
    timezone: timezone.default('UTC'),
  })
  .refine((w) => w.start_hour < w.end_hour, { message: 'start_hour must be before end_hour', path: ['end_hour'] });

const reentrySchema = z.union([z.enum(['never', 'every_occurrence']), z.strictObject({ after_days: z.number().int().min(1).max(3650) })], {
  error: () => 'reentry is "never", "every_occurrence" or {"after_days": N}',
});

/** The definition fields of automate_communications (the tool adds workflow_id, is_active, confirmation_token). */
export const workflowInputShape = {
  workflow_name: z.string().trim().min(1).max(200),
  description: z.string().trim().max(2_000).optional(),
  trigger_type: z.enum(TRIGGER_TYPES, { error: () => `unknown trigger_type; supported: ${TRIGGER_TYPES.join(', ')}` }),
  trigger_conditions: z
    .record(z.string(), z.unknown())
    .default({})
    .describe(
      'By trigger_type — time_based: {schedule (cron), timezone}; event_based: {event, properties?}; health_score: {threshold, direction below|above}; ' +
        'milestone: {milestone_name}; contract_event: {event_type renewal_upcoming (with days_before) | renewal_reached}; ' +
        'usage_pattern: {metric, property?, threshold, window_days, direction}; behavior_based: {behavior "inactive", days, level contact|client}; custom: {}',
    ),
  actions: z.array(stepSchema).min(1).max(MAX_STEPS).describe('the ordered steps; message bodies are Liquid over contact.*, client.*, sender.*, workflow.*, event.*'),
  delay_minutes: z.number().int().min(0).max(525_600).default(0).describe('wait before the first step'),
  audience: audienceSchema.optional(),
  reentry: reentrySchema
    .optional()
    .describe('may a subject enter again: "never", "every_occurrence" or {after_days}. Default never; every_occurrence for time_based and contract_event'),
  exit_when: z.array(goalSchema).max(10).optional().describe('goals: an enrolled subject that meets any leaves before its next step'),
  send_window: sendWindowSchema.optional().describe("messages go out only on these days and hours (the contact's own time zone wins when the roster has one)"),
  enroll_existing: z.boolean().default(false).describe('on activation, enrol subjects already past the threshold (state-based triggers); default only new crossings'),
  frequency_cap_action: z.enum(['wait', 'skip']).default('wait').describe('a message over the per-contact cap waits for the next allowed time, or is skipped'),
  sender_email: z.email().optional().describe('From address of send_email steps; default SENDGRID_FROM_EMAIL'),
  created_by: z.string().trim().max(200).optional(),
};

const inputObject = z.object(workflowInputShape);
export type WorkflowInput = z.output<typeof inputObject>;

/** Checks trigger_conditions against the trigger type's own shape, naming each field under trigger_conditions. */
export function refineTriggerConditions(v: { trigger_type: TriggerType; trigger_conditions: Record<string, unknown> }, ctx: z.RefinementCtx): void {
  const schema = TRIGGER_CONDITIONS[v.trigger_type];
  if (!schema) return;
  const r = schema.safeParse(v.trigger_conditions);
  if (!r.success) for (const i of r.error.issues) ctx.addIssue({ ...i, path: ['trigger_conditions', ...i.path] } as never);
}

// ---- the stored definition -------------------------------------------------------------------

export type Reentry = { mode: 'never' } | { mode: 'every_occurrence' } | { mode: 'after_days'; days: number };

export interface AudienceSpec {
  tier?: Array<(typeof TIERS)[number]>;
  segment?: string;
  lifecycle_stage?: Array<(typeof LIFECYCLE_STAGES)[number]>;
  health_min?: number;
  health_max?: number;
  contact_roles?: string[];
}

export interface WorkflowDefinition {
  name: string;
  description: string | null;
  trigger: Trigger;
  audience: AudienceSpec;
  steps: Step[];
  delay_minutes: number;
  reentry: Reentry;
  exit_when: Goal[];
  send_window: SendWindow | null;
  enroll_existing: boolean;
  frequency_cap_action: 'wait' | 'skip';
  sender: { email: string | null; name: string | null };
  created_by: string | null;
}

/** time_based and contract_event occur again and again by nature; everything else enters once unless told. */
function defaultReentry(t: TriggerType): Reentry {
  return t === 'time_based' || t === 'contract_event' ? { mode: 'every_occurrence' } : { mode: 'never' };
}

export function cronFor(schedule: string, tz: string): Cron {
  return new Cron(schedule, { timezone: tz, mode: '5-or-6-parts', paused: true });
}

/** "1 hour", "90 seconds", "5 minutes": a length of time as the messages say it. */
export function describeInterval(ms: number): string {
  const s = Math.round(ms / 1000);
  const unit = (n: number, u: string) => `${n} ${u}${n === 1 ? '' : 's'}`;
  if (s % 3600 === 0) return unit(s / 3600, 'hour');
  if (s % 60 === 0) return unit(s / 60, 'minute');
  return unit(s, 'second');
}

/** How far ahead (in runs, and in time) a schedule's gaps are checked: enough to see every day boundary of a month. */
const GAP_CHECK_RUNS = 1_000;
const GAP_CHECK_MS = 370 * 86_400_000;

/**
 * A schedule may not run more often than AUTOMATION_MIN_SCHEDULE_INTERVAL_SECONDS allows: every gap
 * between consecutive runs (checked ahead, across day and month boundaries) must be at least that long,
 * and a seconds field is refused unless the minimum is under a minute. Throws invalid_input saying so.
 */
export function checkScheduleInterval(schedule: string, tz: string, minMs: number, from = new Date()): void {
  const field = [{ field: 'trigger_conditions.schedule', problem: `runs more often than every ${describeInterval(minMs)}` }];
  const setting = `AUTOMATION_MIN_SCHEDULE_INTERVAL_SECONDS (now ${Math.round(minMs / 1000)})`;
  if (schedule.trim().split(/\s+/).length === 6 && minMs >= 60_000) {
    throw invalidInput(
      `trigger_conditions.schedule "${schedule}" has a seconds field, but schedules run at most every ${describeInterval(minMs)} (${setting}). Use five fields: minute hour day month weekday, e.g. "0 9 * * 1".`,
      { fields: [{ field: 'trigger_conditions.schedule', problem: 'seconds field not allowed' }] },
    );
  }
  const cron = cronFor(schedule, tz);
  let prev = cron.nextRun(from);
  const end = from.getTime() + GAP_CHECK_MS;
  for (let n = 0; prev && n < GAP_CHECK_RUNS && prev.getTime() < end; n++) {
    const next = cron.nextRun(prev);
    if (!next) return;
    const gap = next.getTime() - prev.getTime();
    if (gap < minMs) {
      throw invalidInput(
        `trigger_conditions.schedule "${schedule}" runs ${describeInterval(gap)} apart (at ${prev.toISOString()} and ${next.toISOString()}); the shortest gap allowed between scheduled runs is ${describeInterval(minMs)} (${setting}). Choose a schedule that runs less often, e.g. "0 9 * * *" for every day at 09:00.`,
        { fields: field },
      );
    }
    prev = next;
  }
}

/**
 * The runs of a schedule in the next `ms`, counted one by one: exact, as the minimum interval bounds how
 * many there can be. Past `cap` runs (only when the operator allows very short intervals) it stops and says so.
 */
export function countRuns(schedule: string, tz: string, from: Date, ms: number, cap = 10_081): { runs: number; capped: boolean } {
  const cron = cronFor(schedule, tz);
  const end = from.getTime() + ms;
  let runs = 0;
  for (let d = cron.nextRun(from); d && d.getTime() < end; d = cron.nextRun(d)) {
    if (++runs >= cap) return { runs, capped: true };
  }
  return { runs, capped: false };
}

/**
 * Turns validated input into the stored definition, checking what the schema cannot: the cron
 * expression, templates, a sender for email, webhook hosts, and that every step's provider is
 * configured. Throws invalid_input naming the field, or not_configured naming the variable.
 */
export function normalize(input: WorkflowInput, config: Config, configured: Record<ProviderName, boolean>): WorkflowDefinition {
  const conditions = TRIGGER_CONDITIONS[input.trigger_type].parse(input.trigger_conditions) as Record<string, unknown>;
  const trigger = { type: input.trigger_type, ...conditions } as Trigger;
  if (trigger.type === 'time_based') {
    try {
      if (!cronFor(trigger.schedule, trigger.timezone).nextRun()) throw new Error('it never fires');
    } catch (err) {
      if (err instanceof ToolError) throw err;
      throw invalidInput(`trigger_conditions.schedule "${trigger.schedule}" is not a usable cron expression: ${(err as Error).message.replace(/^CronPattern: /, '')}`, {
        fields: [{ field: 'trigger_conditions.schedule', problem: 'e.g. "0 9 * * 1" = Mondays at 09:00' }],
      });
    }
    checkScheduleInterval(trigger.schedule, trigger.timezone, config.automations.minScheduleIntervalMs);
  }
  const a = input.audience ?? {};
  const list = <T>(v: T | T[] | undefined) => (v === undefined ? undefined : [...new Set(Array.isArray(v) ? v : [v])].sort());
  const audience: AudienceSpec = Object.fromEntries(
    Object.entries({
      tier: list(a.tier),
      segment: a.segment,
      lifecycle_stage: list(a.lifecycle_stage),
      health_min: a.health_min,
      health_max: a.health_max,
      contact_roles: list(a.contact_roles),
    }).filter(([, v]) => v !== undefined),
  );
  if (audience.health_min !== undefined && audience.health_max !== undefined && audience.health_min > audience.health_max) {
    throw invalidInput('audience.health_min is above audience.health_max.', { fields: [{ field: 'audience.health_min', problem: 'must be ≤ health_max' }] });
  }
  const reentry: Reentry =
    input.reentry === undefined
      ? defaultReentry(input.trigger_type)
      : typeof input.reentry === 'string'
        ? { mode: input.reentry }
        : { mode: 'after_days', days: input.reentry.after_days };
  const senderEmail = input.sender_email ?? config.sendgrid.fromEmail ?? null;
  const steps = input.actions.map((s) => ({ ...s }));
  checkSteps({ steps, sender: { email: senderEmail } }, config, configured);
  if (steps.every((s) => s.type === 'wait')) {
    throw invalidInput('actions has only wait steps: add at least one step that does something.', { fields: [{ field: 'actions', problem: 'only waits' }] });
  }
  const w = input.send_window;
  const def: WorkflowDefinition = {
    name: singleLine(input.workflow_name),
    description: input.description === undefined ? null : singleLine(input.description),
    trigger,
    audience,
    steps,
    delay_minutes: input.delay_minutes,
    reentry,
    exit_when: input.exit_when ?? [],
    send_window: w ? { days: [...new Set(w.days.map((d) => DAY_NAMES.indexOf(d) + 1))].sort(), start_hour: w.start_hour, end_hour: w.end_hour, timezone: w.timezone } : null,
    enroll_existing: input.enroll_existing,
    frequency_cap_action: input.frequency_cap_action,
    sender: { email: senderEmail, name: config.sendgrid.fromName ?? null },
    created_by: input.created_by ?? null,
  };
  compileWorkflow(def); // every template parses and names only known variables
  return def;
}

/**
 * Every step's provider is configured (and what it needs besides: a sender, a ticket type, an allowed
 * webhook host). Checked on saving, and again on resuming (configuration may have changed since).
 * Fills in track_event's default destinations.
 */
export function checkSteps(def: { steps: Step[]; sender: { email: string | null } }, config: Config, configured: Record<ProviderName, boolean>): void {
  def.steps.forEach((step, i) => checkStep(step, i, config, configured, def.sender.email));
}

function checkStep(step: Step, i: number, config: Config, configured: Record<ProviderName, boolean>, senderEmail: string | null): void {
  const need = (provider: ProviderName, variables: string[]) => {
    if (configured[provider]) return;
    const e = notConfigured(provider, variables);
    throw new ToolError('not_configured', `actions[${i}] (${step.type}): ${e.message}`, { provider });
  };
  switch (step.type) {
    case 'send_email':
      need('sendgrid', ['SENDGRID_API_KEY']);
      if (!step.from_email && !senderEmail) {
        throw invalidInput(`actions[${i}] (send_email) needs a sender: pass sender_email (or the step's from_email), or set SENDGRID_FROM_EMAIL.`, {
          fields: [{ field: `actions.${i}.from_email`, problem: 'no sender' }],
        });
      }
      return;
    case 'send_intercom_email':
    case 'send_in_app_notification':
    case 'create_note':
    case 'add_tag':
    case 'remove_tag':
      return need('intercom', ['INTERCOM_ACCESS_TOKEN']);
    case 'create_ticket':
      need('intercom', ['INTERCOM_ACCESS_TOKEN']);
      if (!config.automations.intercomTicketTypeId) {
        throw new ToolError('not_configured', `actions[${i}] (create_ticket) needs INTERCOM_TICKET_TYPE_ID: set it to the id of the Intercom ticket type to create, and restart the server.`, {
          provider: 'intercom',
        });
      }
      return;
    case 'track_event': {
      if (ROSTER_EVENT_NAMES.has(step.event_name)) throw invalidInput(`actions[${i}].event_name: ${rosterEventRefusal(step.event_name)}`, { fields: [{ field: `actions.${i}.event_name`, problem: 'reserved for the roster' }] });
      const dest = step.destinations ?? (['intercom', 'mixpanel'] as const).filter((d) => configured[d]);
      if (!dest.length) throw new ToolError('not_configured', `actions[${i}] (track_event) has nowhere to track: configure Intercom (INTERCOM_ACCESS_TOKEN) or Mixpanel (MIXPANEL_PROJECT_TOKEN).`);
      for (const d of dest) need(d, [d === 'intercom' ? 'INTERCOM_ACCESS_TOKEN' : 'MIXPANEL_PROJECT_TOKEN']);
      step.destinations = [...dest];
      return;
    }
    case 'send_slack_message':
      return need('slack', ['SLACK_WEBHOOK_URL']);
    case 'trigger_webhook':
      allowedWebhookUrl(step.url, config.automations, `actions[${i}].url`);
      return need('webhook', config.automations.webhookSecret ? ['AUTOMATION_WEBHOOK_ALLOWED_HOSTS'] : ['AUTOMATION_WEBHOOK_SECRET']);
    default:
      return;
  }
}

/** Registers the credential parts of a stored definition's webhook URLs for scrubbing (see secrets.urlSecrets). */
export function registerDefinitionSecrets(def: { steps: Step[] }): void {
  for (const step of def.steps) if (step.type === 'trigger_webhook') registerUrlSecrets(step.url);
}

/** Parts without a subject of their own (in-app messages, notes, Slack) render a fixed one that is never shown. */
const NO_SUBJECT = '-';

/** The Liquid parts of a step, by template part; fields say which parameter each came from. */
function templateParts(step: Step, i: number): { src: TemplateSources; fields: Record<keyof TemplateSources, string>; slack?: boolean } | undefined {
  const f = (name: string) => `actions[${i}].${name}`;
  switch (step.type) {
    case 'send_email':
      return { src: { subject: step.subject, text: step.body, html: step.body_html }, fields: { subject: f('subject'), text: f('body'), html: f('body_html') } };
    case 'send_intercom_email':
      return { src: { subject: step.subject, text: step.body }, fields: { subject: f('subject'), text: f('body'), html: f('body') } };
    case 'send_in_app_notification':
      return { src: { subject: NO_SUBJECT, text: step.body }, fields: { subject: f('body'), text: f('body'), html: f('body') } };
    case 'create_task':
      return { src: { subject: step.title, text: step.body ?? '' }, fields: { subject: f('title'), text: f('body'), html: f('body') } };
    case 'create_ticket':
      return { src: { subject: step.title, text: step.description ?? '' }, fields: { subject: f('title'), text: f('description'), html: f('description') } };
    case 'create_note':
      return { src: { subject: NO_SUBJECT, text: step.body }, fields: { subject: f('body'), text: f('body'), html: f('body') } };
    case 'send_slack_message':
      return { src: { subject: NO_SUBJECT, text: step.text }, fields: { subject: f('text'), text: f('text'), html: f('text') }, slack: true };
    default:
      return undefined;
  }
}

/** Compiled templates of every step that has text (by step index). */
export function compileWorkflow(def: WorkflowDefinition): Map<number, CompiledTemplates> {
  const out = new Map<number, CompiledTemplates>();
  def.steps.forEach((step, i) => {
    const parts = templateParts(step, i);
    if (parts) out.set(i, compileTemplates(parts.src, [], { roots: WORKFLOW_ROOTS, fields: parts.fields, slack: parts.slack }));
  });
  return out;
}
