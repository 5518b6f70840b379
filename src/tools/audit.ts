import { z } from 'zod';
import { defineTool } from '../mcp/tool.js';

const entry = z.object({
  audit_id: z.number(),
  at: z.string(),
  tool: z.string(),
  kind: z.string(),
  client_name: z.string().nullable(),
  client_version: z.string().nullable(),
  session_id: z.string().nullable(),
  actor: z.string().nullable().describe('the signed-in person (sign-in only)'),
  arguments: z.unknown().describe('the call\'s arguments; secrets scrubbed, message bodies redacted unless CS_MCP_AUDIT_BODIES=full'),
  outcome: z.string().describe('success, or the error code'),
  message: z.string().nullable(),
  policy: z.string().nullable().describe('the policy that refused the call: approval_required, consent, max_recipients, daily_send_limit, idempotency, duplicate_window…'),
  details: z.record(z.string(), z.unknown()),
  duration_ms: z.number(),
});

export const auditTools = [
  defineTool({
    name: 'get_audit_log',
    title: 'Audit log',
    description:
      'Every tool call that wrote or sent something, and every refusal by a safety policy, newest first: when, which tool, which MCP client and ' +
      'session, the arguments (bodies redacted), the outcome, who approved it. Filter by tool, outcome ("success", "error" or an error code), ' +
      'policy, session or time; paginated. Read-only.',
    kind: 'read',
    toolset: 'audit',
    openWorld: false,
    input: z.strictObject({
      tool: z.string().max(100).optional(),
      outcome: z.string().max(50).optional().describe('"success", "error" (any failure) or an error code such as "forbidden"'),
      policy: z.string().max(50).optional(),
      session_id: z.string().max(200).optional(),
      since: z.string().datetime({ offset: true }).optional(),
      until: z.string().datetime({ offset: true }).optional(),
      limit: z.number().int().min(1).max(100).default(25),
      cursor: z.string().max(20).optional(),
    }),
    output: { entries: z.array(entry), next_cursor: z.string().optional() },
    async handle({ limit, cursor, since, until, ...f }, { services }) {
      return services.audit.list(
        { ...f, since: since && new Date(since).toISOString(), until: until && new Date(until).toISOString() },
        limit,
        cursor,
      );
    },
  }),
];
