import type { ClientCapabilities } from '@modelcontextprotocol/sdk/types.js';
import { ToolError } from '../result.js';

/**
 * Human approval, through MCP elicitation, of every step that sends to customers. The model asks; a
 * person answers in the client's own UI; the tool proceeds only on an explicit "send".
 *
 * CS_MCP_APPROVAL:
 * - elicitation: a person must approve; a client without elicitation cannot send (clear error).
 * - auto (default): elicitation where the client supports it; elsewhere campaigns and automations keep
 *   their preview + confirmation token, and direct sends within the recipient limit go ahead.
 * - token: never elicitation; tokens for campaigns and automations.
 * Nothing in a tool's arguments can lower it.
 */

export const APPROVAL_POLICIES = ['elicitation', 'auto', 'token'] as const;
export type ApprovalPolicy = (typeof APPROVAL_POLICIES)[number];

export interface ApprovalRequest {
  /** What is being approved, for the audit and the message. */
  action: 'campaign_confirm' | 'direct_send' | 'workflow_activate' | 'workflow_resume' | 'workflow_run' | 'consent_override';
  /** One line: "Send the campaign “Q4 health check”". */
  title: string;
  recipients: number;
  /** A few of them, as people read them (addresses, names). */
  examples: string[];
  channel: string;
  /** "now", or when it goes out / starts. */
  when: string;
  subject?: string;
  /** A rendered sample (the approver reads what the customer will read). */
  sample?: string;
  /** Extra lines the person should weigh (e.g. "overrides the unsubscribe of …"). */
  notes?: string[];
  /** Ask even under the direct-send threshold (e.g. a consent override). */
  always?: boolean;
}

export type Approver = (request: ApprovalRequest) => Promise<ApprovalOutcome>;

/** How the call was approved: by a person, or (where policy allows) by the confirmation token / without asking. */
export type ApprovalOutcome = { by: 'person' } | { by: 'policy'; why: string };

export interface ElicitationPort {
  capabilities(): ClientCapabilities | undefined;
  /** Sends elicitation/create for the current request; resolves with the client's answer. */
  elicit(message: string, schema: ElicitSchema, timeoutMs: number): Promise<{ action: 'accept' | 'decline' | 'cancel'; content?: Record<string, unknown> }>;
}

export interface ElicitSchema {
  type: 'object';
  properties: Record<string, { type: 'string'; title: string; description?: string; enum: string[]; enumNames?: string[] }>;
  required: string[];
}

const SAMPLE_CHARS = 1_500;

export interface ApprovalGateOptions {
  policy: ApprovalPolicy;
  /** Direct sends to at least this many recipients need a person (where one can be asked). */
  threshold: number;
  timeoutMs: number;
}

/** Form-mode elicitation: declared as `elicitation: {}` (the original form) or with `form`. */
export function supportsElicitation(caps: ClientCapabilities | undefined): boolean {
  const e = caps?.elicitation as { form?: unknown; url?: unknown } | undefined;
  if (!e) return false;
  return e.form !== undefined || e.url === undefined;
}

/** Builds the approver of one tool call from the policy and what the calling client supports. */
export function createApprover(opts: ApprovalGateOptions, port: ElicitationPort): Approver {
  return async (req) => {
    const supported = supportsElicitation(port.capabilities());
    const needsPerson = req.action !== 'direct_send' || req.always === true || req.recipients >= opts.threshold;
    if (opts.policy === 'token' || !needsPerson) {
      return { by: 'policy', why: opts.policy === 'token' ? 'CS_MCP_APPROVAL=token' : `below CS_MCP_APPROVAL_THRESHOLD (${opts.threshold})` };
    }
    if (!supported) {
      if (opts.policy === 'elicitation' || req.always) {
        throw new ToolError(
          'forbidden',
          `A person must approve this ${describe(req.action)}, but this MCP client does not support elicitation (asking the user). Nothing was sent. ` +
            'Use a client that supports MCP elicitation, or ask the server operator to change CS_MCP_APPROVAL' +
            (req.always ? ' (an override of a contact\'s unsubscribe always needs a person unless CS_MCP_APPROVAL=token).' : '.'),
          { details: { policy: 'approval_required', approval: opts.policy } },
        );
      }
      return { by: 'policy', why: 'client without elicitation: confirmation token / recipient limit apply' };
    }
    let answer;
    try {
      answer = await port.elicit(messageFor(req), SCHEMA, opts.timeoutMs);
    } catch (err) {
      throw new ToolError('declined', `No answer to the approval request (${(err as Error).message}). Nothing was sent.`, {
        details: { policy: 'approval_required', action: 'no_answer' },
      });
    }
    if (answer.action === 'accept' && answer.content?.decision === 'send') return { by: 'person' };
    const how = answer.action === 'accept' ? 'chose not to send' : answer.action === 'decline' ? 'declined' : 'cancelled';
    throw new ToolError('declined', `The user ${how} the approval request: nothing was sent. Do not retry unless the user asks again.`, {
      details: { policy: 'approval_required', action: answer.action },
    });
  };
}

function describe(action: ApprovalRequest['action']): string {
  return {
    campaign_confirm: 'campaign',
    direct_send: 'send',
    workflow_activate: 'automation',
    workflow_resume: 'automation',
    workflow_run: 'automation run',
    consent_override: 'resubscribe (a consent override)',
  }[action];
}

const SCHEMA: ElicitSchema = {
  type: 'object',
  properties: {
    decision: {
      type: 'string',
      title: 'Send these messages to customers?',
      enum: ['send', 'do_not_send'],
      enumNames: ['Yes, send', 'No, send nothing'],
    },
  },
  required: ['decision'],
};

/** What the person reads: what, to whom, how many, a rendered sample, when. */
export function messageFor(req: ApprovalRequest): string {
  const lines = [
    req.title,
    `Recipients: ${req.recipients} via ${req.channel}${req.examples.length ? ` (e.g. ${req.examples.slice(0, 5).join(', ')}${req.recipients > 5 ? ', …' : ''})` : ''}`,
    `When: ${req.when}`,
  ];
  if (req.subject) lines.push(`Subject: ${req.subject}`);
  if (req.sample) lines.push('Sample:', req.sample.length > SAMPLE_CHARS ? `${req.sample.slice(0, SAMPLE_CHARS)}…` : req.sample);
  for (const n of req.notes ?? []) lines.push(`Note: ${n}`);
  lines.push('Choose "Yes, send" to send, or "No, send nothing".');
  return lines.join('\n');
}
