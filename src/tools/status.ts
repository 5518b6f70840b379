import { z } from 'zod';
import { ENDPOINTS } from '../engine/inbox/index.js';
import { budgetUse } from '../engine/automations/budget.js';
import { defineTool, type ToolContext } from '../mcp/tool.js';
import { PROVIDERS } from '../result.js';

const providerStatus = z.object({
  provider: z.enum(PROVIDERS),
  configured: z.boolean(),
  missing: z.array(z.string()).optional().describe('environment variables to set, when not configured'),
  circuit: z.enum(['closed', 'open', 'half_open', 'isolated']),
  circuit_retry_in_ms: z.number().optional(),
  last_error: z
    .object({ code: z.string(), message: z.string(), status: z.number().optional(), at: z.string() })
    .optional(),
  rate_limit: z.object({
    limit: z.number().optional(),
    remaining: z.number().optional(),
    reset_at: z.string().optional().describe('when the current window is treated as over (learned; never before it really is)'),
    window_ms: z.number().optional().describe("the provider's window length, as learned from its answers"),
    observed_at: z.string().optional(),
    sharing: z.number().describe('processes sending with this account now, this one included; each spends its share'),
    waiting: z.number(),
    in_flight: z.number(),
    paced_waits: z.number(),
  }),
});

const mode = z.object({
  read_only: z.boolean().describe('CS_MCP_READ_ONLY: only tools that change nothing are offered, the outbox sends nothing and automations do not run'),
  outbox_sending: z.boolean().describe('whether this process delivers queued messages'),
  automations_running: z.boolean().describe('whether this process runs automations (never in read-only mode)'),
  approval: z.enum(['elicitation', 'auto', 'token']).describe('CS_MCP_APPROVAL'),
  approval_by_person_available: z.boolean().describe('this client supports elicitation, so a person can be asked'),
  max_recipients_per_send: z.number(),
  daily_send_limit: z.number().describe('0: no limit'),
  sent_today: z.number().optional().describe('messages counted against the daily limit today (UTC)'),
  tools_offered: z.number(),
});

const webhookStatus = z.object({
  endpoint: z.enum(ENDPOINTS),
  path: z.string().describe('POST here (on the HTTP server or the worker)'),
  enabled: z.boolean(),
  missing: z.string().optional().describe('the environment variable that enables it'),
  last_verified_at: z.string().nullable().describe('when the last request with a valid signature arrived'),
  verified_requests: z.number(),
  pending: z.number().describe('stored, not yet processed'),
  unmatched: z.number().describe('about no roster contact (kept; see list_inbound_events)'),
  failed: z.number().describe('could not be processed after retries (see list_inbound_events)'),
  rejected_here: z.number().describe('requests this server process refused (signature, timestamp, size, body)'),
  last_rejection: z.object({ at: z.string(), status: z.number(), reason: z.string() }).optional(),
});

const pendingWrites = z
  .object({
    audit: z.number().describe('audit entries (or outcomes of audited sends) not yet written because the database failed: kept in memory and retried in the background'),
    audit_given_up: z.number().describe('audit entries given up because too many were waiting (logged as errors)'),
    send_outcomes: z.number().describe('outcomes of direct sends that could not be stored yet (the database failed): kept in memory, retried in the background; their keys answer "in doubt, not resent" meanwhile'),
    mixpanel_buffered: z.number().describe('Mixpanel events stored and not yet delivered'),
    mixpanel_buffer_limit: z.number().describe('MIXPANEL_MAX_BUFFERED_EVENTS: past it new events are refused'),
    last_error: z.string().optional().describe('the database error that keeps them waiting, if any'),
  })
  .describe('records this server keeps until they are written or delivered');

export const statusTools = [
  defineTool({
    name: 'integrations_status',
    title: 'Integration status',
    description:
      'Shows, for Intercom, SendGrid, Mixpanel, Slack and outgoing webhooks: whether each is configured (and which environment variable is missing), ' +
      'the circuit-breaker state, the last error seen, and the rate-limit budget the provider last reported. ' +
      'Also each inbound webhook endpoint: enabled or not, when the last verified event arrived, backlog and refusals. ' +
      'Also the safety mode: read-only, approval policy, recipient and daily limits (and how much of today\'s limit is used). ' +
      'Use it when a tool answers not_configured, circuit_open, rate_limited or forbidden, or before a large send. Read-only; calls no provider.',
    kind: 'read',
    toolset: 'status',
    openWorld: false,
    input: z.strictObject({}),
    output: {
      providers: z.array(providerStatus),
      webhooks: z.array(webhookStatus),
      mode,
      pending_writes: pendingWrites,
      automations: z
        .object({
          actions_this_hour: z.number().describe('actions (messages queued, provider calls) all automations took this clock hour (UTC)'),
          max_actions_per_hour: z.number().describe('AUTOMATION_MAX_ACTIONS_PER_HOUR'),
          max_actions_per_workflow_per_hour: z.number().describe('AUTOMATION_MAX_ACTIONS_PER_WORKFLOW_PER_HOUR'),
          paused_runaway: z
            .array(z.object({ workflow_id: z.string(), name: z.string(), paused_at: z.string().nullable(), line: z.string() }))
            .describe('workflows that paused themselves over their action budget (reason runaway); resume_workflow continues them'),
        })
        .describe('automation action budgets'),
    },
    async handle(_input, { services, approvalAvailable, toolsOffered }) {
      const { safety } = services.config;
      return {
        providers: PROVIDERS.map((p) => services.runtimes[p].status()),
        webhooks: await services.inbox.status(),
        mode: {
          read_only: safety.readOnly,
          outbox_sending: services.delivery.dispatcher.running,
          automations_running: services.automations.running,
          approval: safety.approval,
          approval_by_person_available: approvalAvailable(),
          max_recipients_per_send: safety.maxRecipientsPerSend,
          daily_send_limit: safety.dailySendLimit,
          ...(services.dailyLimit.enabled ? { sent_today: await services.dailyLimit.used(services.store.db) } : {}),
          tools_offered: toolsOffered,
        },
        pending_writes: {
          audit: services.audit.waiting.size,
          audit_given_up: services.audit.waiting.dropped,
          send_outcomes: services.idempotency.waiting.size,
          mixpanel_buffered: services.mixpanel.buffered,
          mixpanel_buffer_limit: services.mixpanel.bufferLimit,
          ...((services.audit.waiting.lastError ?? services.idempotency.waiting.lastError) ? { last_error: services.audit.waiting.lastError ?? services.idempotency.waiting.lastError } : {}),
        },
        automations: await automationBudgets(services),
      };
    },
  }),
];

async function automationBudgets(services: ToolContext['services']) {
  const cfg = services.config.automations;
  const use = await budgetUse(services.store.db);
  const paused = await services.store.db.selectFrom('workflows').select(['workflow_id', 'name', 'paused_at']).where('status', '=', 'paused').where('pause_reason', '=', 'runaway').orderBy('paused_at', 'desc').limit(50).execute();
  return {
    actions_this_hour: use.all,
    max_actions_per_hour: cfg.maxActionsPerHour,
    max_actions_per_workflow_per_hour: cfg.maxActionsPerWorkflowPerHour,
    paused_runaway: paused.map((w) => ({
      ...w,
      line: `automation "${w.name}" (${w.workflow_id}) paused itself at ${w.paused_at}: over its action budget (runaway). Check get_workflow, then resume_workflow.`,
    })),
  };
}
