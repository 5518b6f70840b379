import { z } from 'zod';
import { defineTool } from '../mcp/tool.js';
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
    reset_at: z.string().optional(),
    observed_at: z.string().optional(),
    waiting: z.number(),
    in_flight: z.number(),
    paced_waits: z.number(),
  }),
});

export const statusTools = [
  defineTool({
    name: 'integrations_status',
    title: 'Integration status',
    description:
      'Shows, for Intercom, SendGrid and Mixpanel: whether each is configured (and which environment variable is missing), ' +
      'the circuit-breaker state, the last error seen, and the rate-limit budget the provider last reported. ' +
      'Use it when a tool answers not_configured, circuit_open or rate_limited, or before a large send. Read-only; calls no provider.',
    kind: 'read',
    toolset: 'status',
    openWorld: false,
    input: z.object({}),
    output: { providers: z.array(providerStatus) },
    async handle(_input, { services }) {
      return { providers: PROVIDERS.map((p) => services.runtimes[p].status()) };
    },
  }),
];
