import { z } from 'zod';
import type { Logger } from '../log.js';
import { errorBodySchema } from '../result.js';
import type { Approver } from '../safety/approval.js';
import type { Services } from '../services.js';

/**
 * Tools are data: a declaration plus one handler. The adapter (register.ts) turns every declaration
 * into the protocol's tool, derives the annotations from `kind`, validates input and output, and turns
 * any thrown error into the result contract. Tool files never touch the transport.
 *
 * kind:
 * - read:        reads only (readOnlyHint).
 * - write:       changes our roster or a provider's record; additive or an update.
 * - send:        reaches a real person (a message, an email); never idempotent.
 * - destructive: removes or cancels something.
 */
export type ToolKind = 'read' | 'write' | 'send' | 'destructive';

/**
 * Toolsets group tools by capability (CS_MCP_TOOLSETS enables a subset). `status` is always on: it
 * only reports on the server itself.
 */
export const TOOLSETS = ['intercom', 'sendgrid', 'mixpanel', 'roster', 'campaigns', 'automations', 'events', 'audit', 'status'] as const;
export type Toolset = (typeof TOOLSETS)[number];

export interface ToolContext {
  services: Services;
  log: Logger;
  signal: AbortSignal;
  /** Asks a person (MCP elicitation) where the approval policy requires it; throws when refused. */
  approve: Approver;
  /** Facts for this call's audit entry (recipients, ids, overrides); the adapter writes them. */
  audit: Record<string, unknown>;
  /** The calling client can be asked (MCP elicitation). */
  approvalAvailable(): boolean;
  /** How many tools this server registered (after read-only, toolsets and deny). */
  toolsOffered: number;
  /** Sends an MCP progress notification when the client asked for one; otherwise does nothing. */
  progress(progress: number, total?: number, message?: string): Promise<void>;
  /** The client sent a progress token: it wants to follow long work as it happens. */
  progressRequested: boolean;
}

export interface ToolDefinition<I extends z.ZodObject = z.ZodObject, O extends z.ZodRawShape = z.ZodRawShape> {
  name: string;
  title: string;
  /** Written for the model: what it does, when to use it, what it returns, what it costs. */
  description: string;
  kind: ToolKind;
  toolset: Toolset;
  /** Calling twice with the same input leaves the same state (writes only; reads always are). */
  idempotent?: boolean;
  /** Talks to a provider outside this server (Intercom, SendGrid, Mixpanel). */
  openWorld: boolean;
  input: I;
  /** The success result's fields, besides `success: true`. */
  output: O;
  handle(input: z.output<I>, ctx: ToolContext): Promise<z.input<z.ZodObject<O>>>;
}

// The generic parameters only serve inference at the definition site.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyToolDefinition = ToolDefinition<any, any>;

export function defineTool<I extends z.ZodObject, O extends z.ZodRawShape>(def: ToolDefinition<I, O>): ToolDefinition<I, O> {
  return def;
}

export function annotationsFor(tool: AnyToolDefinition) {
  return {
    title: tool.title,
    readOnlyHint: tool.kind === 'read',
    destructiveHint: tool.kind === 'destructive',
    idempotentHint: tool.kind === 'read' || (tool.kind !== 'send' && tool.idempotent === true),
    openWorldHint: tool.openWorld,
  };
}

/** The exact shape of a successful result. Used to check what handlers return (and by tests). */
export function successSchema(tool: AnyToolDefinition) {
  return z.object({ success: z.literal(true), ...tool.output });
}

/**
 * The published output schema has to describe both outcomes, because MCP clients validate
 * structuredContent of error results too: `success` tells which, the data fields are present on
 * success and `error` on failure.
 */
export function publishedOutputSchema(tool: AnyToolDefinition) {
  const optional = Object.fromEntries(
    Object.entries(tool.output as z.ZodRawShape).map(([k, v]) => [k, (v as z.ZodType).optional()]),
  );
  return z.object({
    success: z.boolean().describe('true: the data fields below are present; false: see error'),
    ...optional,
    error: errorBodySchema.optional().describe('present when success is false'),
    result_warning: z
      .string()
      .optional()
      .describe('present when the call did its work but part of its result could not be reported: what happened; do not repeat the call'),
    result_truncated: z
      .object({ note: z.string(), fields: z.array(z.string()) })
      .optional()
      .describe('present when the result was too large and was shortened: which fields, and how to see the rest'),
  });
}
