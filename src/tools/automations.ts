import { z } from 'zod';
import { refineTriggerConditions, workflowInputShape } from '../engine/automations/definition.js';
import { defineTool, PREVIEW_OR_SEND } from '../mcp/tool.js';

const workflowId = z.string().trim().min(4).max(64).describe('the id automate_communications returned, e.g. "wf_…"');
const token = z.string().min(10).max(200).optional();

const preview = {
  trigger: z.string().describe('the trigger in words'),
  audience: z.object({ clients: z.number(), reachable_contacts: z.number(), examples: z.array(z.string()) }).describe('who the audience is today'),
  entering_now: z
    .object({ applies: z.boolean(), count: z.number(), examples: z.array(z.string()), note: z.string() })
    .describe('state-based triggers: who already meets the trigger, and whether they enter on activation (enroll_existing)'),
  samples: z.array(z.record(z.string(), z.unknown())).describe('every step, with its text rendered for one example contact (or why it would be held back)'),
  estimated_messages_per_day: z.number(),
  estimate_basis: z.string(),
  worst_case: z
    .object({
      per_firing: z
        .object({ contacts_per_firing: z.number(), provider_calls: z.number(), messages: z.number(), actions: z.number() })
        .describe("this workflow's own steps, for one firing of its trigger: every step that calls out, per contact it reaches"),
      chained: z
        .array(
          z.object({
            workflow_id: z.string(),
            name: z.string(),
            via: z.array(z.string()).describe('the events (recorded by its steps, or provider events about its messages) that fire it'),
            depth: z.number(),
            firings: z.number(),
            provider_calls: z.number(),
            messages: z.number(),
            actions: z.number(),
          }),
        )
        .describe('active workflows one firing can set off, up to AUTOMATION_MAX_CHAIN_DEPTH, with what they then do'),
      total_per_firing: z.object({ provider_calls: z.number(), messages: z.number(), actions: z.number() }),
      firings_per_hour_within_budget: z.number().nullable().describe('firings an hour AUTOMATION_MAX_ACTIONS_PER_WORKFLOW_PER_HOUR allows; null: no budgeted actions'),
      basis: z.string(),
      truncated: z.boolean(),
      warnings: z.array(z.string()),
    })
    .optional()
    .describe('the worst case of ONE firing of the trigger: provider calls and messages, across the workflows it can chain into'),
  warnings: z.array(z.string()),
};
const confirmation = {
  confirmation_token: z.string().optional().describe('present on a preview: pass it back, with the same parameters, to go ahead'),
  token_expires_at: z.string().optional(),
  result_id: z.string().optional().describe('what the confirmation created (the workflow id, or the run id)'),
  already_confirmed: z.boolean().optional(),
  next_step: z.string(),
};
/** What activating (automate_communications) and re-activating (resume_workflow) answer. */
const activationOut = {
  workflow_id: z.string().optional(),
  version: z.number().optional(),
  status: z.string().optional(),
  definition: z.record(z.string(), z.unknown()).optional().describe('the normalised definition, every default explicit'),
  ...preview,
  enrolled_now: z.number().optional(),
  next_fire_at: z.string().optional(),
  ...confirmation,
};
const workflowSummary = z.object({
  workflow_id: z.string(),
  name: z.string(),
  description: z.string().nullable(),
  status: z.enum(['draft', 'active', 'paused', 'archived']),
  version: z.number(),
  trigger_type: z.string(),
  created_by: z.string().nullable(),
  created_at: z.string(),
  activated_at: z.string().nullable(),
  activated_by: z.string().nullable(),
  paused_at: z.string().nullable(),
  pause_reason: z.string().nullable().describe('runaway: it paused itself over its action budget (AUTOMATION_MAX_ACTIONS_PER_…); null when a person paused it'),
  archived_at: z.string().nullable(),
  next_fire_at: z.string().nullable(),
  last_fired_at: z.string().nullable(),
});

export const automationTools = [
  defineTool({
    name: 'automate_communications',
    title: 'Create or change an automation',
    description:
      'Creates (or, with workflow_id, changes) a workflow that runs by itself: when its trigger fires for a client or contact, the subject ' +
      'goes through the ordered actions (messages, tasks, notes, tags, health score, events, tickets, Slack, webhooks, waits), once per ' +
      'occurrence, with goals (exit_when), re-entry rules, the per-contact frequency cap and an optional send window. Triggers: time_based ' +
      '(cron), event_based (a recorded customer event), health_score (crossing a threshold), milestone, contract_event (renewals), ' +
      'usage_pattern, behavior_based (inactivity), custom (run_workflow only). Two steps, like campaigns: called WITHOUT confirmation_token ' +
      'it activates nothing and returns the normalised definition, who would enter now, a rendered sample of every step, the estimated ' +
      'messages per day and a confirmation_token; show it to the user, then call again with the same parameters plus the token to activate. ' +
      'is_active: false saves a draft (nothing runs, no token needed). send_sms and schedule_meeting are not available. ' +
      'COST: an active workflow messages real customers with no one watching.',
    kind: 'send',
    scope: PREVIEW_OR_SEND,
    toolset: 'automations',
    openWorld: true,
    input: z
      .strictObject({
        ...workflowInputShape,
        is_active: z.boolean().default(true).describe('false: save as a draft that sends nothing'),
        workflow_id: workflowId.optional().describe('change this workflow (a new version; running enrolments finish on theirs)'),
        confirmation_token: token.describe('leave out to preview; pass the preview\'s token (same parameters) to activate'),
      })
      .superRefine(refineTriggerConditions),
    output: {
      phase: z.enum(['preview', 'saved', 'confirmed']).describe('preview: nothing started; saved: a draft (or paused) version; confirmed: active'),
      ...activationOut,
    },
    async handle(input, { services, approve, audit }) {
      return (await services.automations.save(input, approve, audit)) as never;
    },
  }),
  defineTool({
    name: 'list_workflows',
    title: 'List automations',
    description: 'Lists workflows, newest first, with status, trigger type, version and enrolment counts. Filter by status; pass next_cursor for more. Read-only.',
    kind: 'read',
    toolset: 'automations',
    openWorld: false,
    input: z.strictObject({
      status: z.enum(['draft', 'active', 'paused', 'archived']).optional(),
      limit: z.number().int().min(1).max(100).default(20),
      cursor: z.string().max(500).optional(),
    }),
    output: { workflows: z.array(workflowSummary.extend({ enrollments: z.object({ active: z.number(), total: z.number() }) })), next_cursor: z.string().optional() },
    async handle(input, { services }) {
      return (await services.automations.list(input)) as never;
    },
  }),
  defineTool({
    name: 'get_workflow',
    title: 'Automation status',
    description:
      'One workflow: its definition and version, the trigger in words, enrolments by state (active, completed, exited = goal reached, ' +
      'cancelled), how many wait at each step and how each step ended (done, failed, unknown = in doubt, skipped, retry), goals reached, ' +
      'its messages by delivery state with the reasons some were not sent or wait (unsubscribed, frequency_cap, send_window, daily_limit…), ' +
      'and the last errors with reasons. Read-only.',
    kind: 'read',
    toolset: 'automations',
    openWorld: false,
    input: z.strictObject({ workflow_id: workflowId }),
    output: {
      workflow: workflowSummary,
      definition: z.record(z.string(), z.unknown()),
      trigger: z.string(),
      enrollments: z.object({ active: z.number(), completed: z.number(), exited: z.number(), cancelled: z.number(), total: z.number() }),
      goals_reached: z.object({ total: z.number(), by_goal: z.record(z.string(), z.number()) }),
      steps: z.array(z.record(z.string(), z.unknown())).describe('per step: waiting_here and counts of done, failed, unknown, skipped, retry'),
      messages: z.object({
        by_state: z.record(z.string(), z.number()),
        not_sent_by_reason: z.record(z.string(), z.number()),
        waiting_by_reason: z.record(z.string(), z.number()),
        suppressed_by_cap: z.object({ skipped: z.number(), waiting: z.number() }),
      }),
      last_errors: z.array(z.object({ where: z.string(), state: z.string(), code: z.string().nullable(), message: z.string().nullable(), at: z.string().nullable() })),
    },
    async handle({ workflow_id }, { services }) {
      return (await services.automations.get(workflow_id)) as never;
    },
  }),
  defineTool({
    name: 'pause_workflow',
    title: 'Pause an automation',
    description:
      'Stops a workflow: its trigger no longer enrols anyone, enrolled subjects stop before their next step, and its messages still queued for ' +
      'delivery are cancelled (the result counts them). Nothing already sent can be recalled. resume_workflow starts it again. Safe to call twice.',
    kind: 'destructive',
    scope: 'cs:send',
    toolset: 'automations',
    idempotent: true,
    openWorld: false,
    input: z.strictObject({ workflow_id: workflowId }),
    output: { workflow_id: z.string(), status: z.string(), cancelled_messages: z.number() },
    async handle({ workflow_id }, { services, audit }) {
      const r = await services.automations.pause(workflow_id);
      Object.assign(audit, r);
      return r as never;
    },
  }),
  defineTool({
    name: 'resume_workflow',
    title: 'Resume or activate an automation',
    description:
      'Starts a paused or draft workflow, confirmed like activation: without confirmation_token it previews (who would enter now, samples, ' +
      'messages per day) and returns a token; with the token it becomes active. Enrolled subjects continue; what happened while it was paused ' +
      'does not fire it. COST: an active workflow messages real customers.',
    kind: 'send',
    scope: PREVIEW_OR_SEND,
    toolset: 'automations',
    openWorld: true,
    input: z.strictObject({ workflow_id: workflowId, confirmation_token: token }),
    output: { phase: z.enum(['preview', 'confirmed']), ...activationOut },
    async handle({ workflow_id, confirmation_token }, { services, approve, audit }) {
      return (await services.automations.resume(workflow_id, confirmation_token, approve, audit)) as never;
    },
  }),
  defineTool({
    name: 'archive_workflow',
    title: 'Archive an automation',
    description:
      'Ends a workflow for good: no more enrolments, every enrolment in progress is cancelled, queued messages are cancelled. Its history and ' +
      'counts stay readable with get_workflow. Safe to call twice.',
    kind: 'destructive',
    scope: 'cs:send',
    toolset: 'automations',
    idempotent: true,
    openWorld: false,
    input: z.strictObject({ workflow_id: workflowId }),
    output: { workflow_id: z.string(), status: z.string(), enrollments_cancelled: z.number(), cancelled_messages: z.number() },
    async handle({ workflow_id }, { services, audit }) {
      const r = await services.automations.archive(workflow_id);
      Object.assign(audit, r);
      return r as never;
    },
  }),
  defineTool({
    name: 'run_workflow',
    title: 'Run an automation now',
    description:
      'Enrols chosen clients (client_ids: their contacts with the audience roles are messaged) or contacts (contact_emails) in a workflow now: ' +
      'how a custom workflow runs, and a way to try any draft or active workflow on one account. Previewed and confirmed: without ' +
      'confirmation_token it returns who would enter, rendered samples and a token; with the token they are enrolled (once per run) and go ' +
      'through every step, waits included. At most 1,000 per run. COST: messages real customers.',
    kind: 'send',
    scope: PREVIEW_OR_SEND,
    toolset: 'automations',
    openWorld: true,
    input: z
      .strictObject({
        workflow_id: workflowId,
        client_ids: z.array(z.string().min(1).max(64)).min(1).max(1000).optional(),
        contact_emails: z.array(z.string().email()).min(1).max(1000).optional(),
        confirmation_token: token,
      })
      .refine((v) => v.client_ids || v.contact_emails, { message: 'give client_ids or contact_emails', path: ['client_ids'] }),
    output: {
      phase: z.enum(['preview', 'confirmed']),
      workflow_id: z.string(),
      version: z.number(),
      trigger: z.string(),
      subjects: z.object({ count: z.number(), examples: z.array(z.string()), unknown: z.array(z.string()).describe('ids or emails not in the roster') }),
      recipients: z.number().describe('distinct contacts the message steps reach (the previewed set: a run sends to them only)'),
      messages: z.number().describe('messages the run sends: recipients × message steps, without those consent keeps out'),
      samples: z.array(z.record(z.string(), z.unknown())),
      warnings: z.array(z.string()),
      enrolled: z.number().optional(),
      ...confirmation,
    },
    async handle({ workflow_id, confirmation_token, ...targets }, { services, approve, audit }) {
      return (await services.automations.run(workflow_id, targets, confirmation_token, approve, audit)) as never;
    },
  }),
];
