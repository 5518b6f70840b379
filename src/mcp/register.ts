import type { Server } from '@modelcontextprotocol/sdk/server/index.js';
import { UriTemplate } from '@modelcontextprotocol/sdk/shared/uriTemplate.js';
import {
  CallToolRequestSchema,
  ElicitResultSchema,
  ErrorCode,
  InitializeRequestSchema,
  LATEST_PROTOCOL_VERSION,
  ListResourcesRequestSchema,
  ListResourceTemplatesRequestSchema,
  ListToolsRequestSchema,
  McpError,
  ReadResourceRequestSchema,
  SUPPORTED_PROTOCOL_VERSIONS,
  type CallToolResult,
  type InitializeRequest,
  type ListToolsResult,
} from '@modelcontextprotocol/sdk/types.js';
import { z } from 'zod';
import type { Logger } from '../log.js';
import { fromZodError, toErrorBody, ToolError } from '../result.js';
import { actorOf, runAs } from '../safety/actor.js';
import { createApprover, supportsElicitation, type Approver } from '../safety/approval.js';
import { scrubValue } from '../secrets.js';
import type { Services } from '../services.js';
import { TOO_DEEP, tooDeepAt } from '../validation.js';
import { rejectUnsafeArguments } from './argument-guards.js';
import { nearestKey, validKeysAt } from './unknown-keys.js';
import { boundResultWithText, MAX_RESULT_BYTES } from './bound-result.js';
import { scopeFor, scopesOf, successSchema, type Actor, type AnyToolDefinition } from './tool.js';
import { listedTool, type ListedTool } from './tool-listing.js';
import { listingFor, showsViews, VIEW_ONLY_TOOLS } from './views.js';

export { jsonSchema } from './tool-listing.js';

export interface ResourceDefinition {
  name: string;
  title: string;
  description: string;
  uriTemplate: string;
  mimeType: string;
  list(services: Services): Promise<Array<{ uri: string; name: string; description?: string }>>;
  read(params: Record<string, string>, services: Services): Promise<unknown>;
  /** read() gives the content itself ({ text, _meta }), not a value to serialise as JSON (the views). */
  raw?: boolean;
}

/**
 * What registration derives from the declarations, computed once per tool list: Streamable HTTP builds
 * a server per session (or per request when stateless), and converting every schema each time cost
 * ~0.5 MB and ~10 ms per server.
 */
const derived = new WeakMap<AnyToolDefinition[], { listed: ListedTool[]; strictOutput: Map<string, z.ZodType> }>();
function deriveOnce(tools: AnyToolDefinition[]) {
  let d = derived.get(tools);
  if (!d) {
    d = {
      listed: tools.map(listedTool),
      strictOutput: new Map(tools.map((t) => [t.name, successSchema(t)])),
    };
    derived.set(tools, d);
  }
  return d;
}

/** A value now, or one still being built (stdio answers `initialize` before the services exist). */
export type Eventually<T> = T | Promise<T>;

/**
 * Runs `use` with the value as soon as there is one: synchronously when it is already there (HTTP, tests),
 * else when the promise settles. The returned getter gives the value, awaiting it only while it is pending.
 */
function whenReady<T, R>(value: Eventually<T>, use: (v: T) => R): () => Eventually<R> {
  if (!(value instanceof Promise)) {
    const r = use(value);
    return () => r;
  }
  let ready: R | undefined;
  const pending = value.then((v) => (ready = use(v)));
  pending.catch(() => undefined); // whoever builds the value reports its failure (and stops the process)
  return () => ready ?? pending;
}

/**
 * The adapter: lists every declared tool with its schemas and annotations, and runs calls through
 * one path that validates input (structured invalid_input naming each field), runs the handler,
 * checks the result against the declared output, and shapes every outcome into the contract.
 *
 * Why the SDK's low-level Server rather than McpServer.registerTool: McpServer (1.32) answers a
 * schema-invalid call with a text-only isError result and no structuredContent, so the model would
 * not get our `invalid_input` error with `details.fields`; here one path gives every failure that shape.
 *
 * `tools` and `services` may still be on their way: the handlers are registered at once and wait for them.
 * With `prebuilt` (the listing `npm run build` wrote), tools/list is answered from it at once.
 */
export function registerTools(
  server: Server,
  tools: Eventually<AnyToolDefinition[]>,
  services: Eventually<Services>,
  prebuilt?: ListedTool[],
): void {
  const state = whenReady(
    tools instanceof Promise || services instanceof Promise
      ? Promise.all([tools, services])
      : ([tools, services] as [AnyToolDefinition[], Services]),
    ([tools, services]) => {
      const { safety } = services.config;
      const derivedListing = deriveOnce(tools);
      // The prebuilt listing answered tools/list while the tools loaded; a stale one (built from other
      // sources than these) is replaced by what the tools themselves declare.
      if (prebuilt && JSON.stringify(prebuilt) !== JSON.stringify(derivedListing.listed)) {
        services.log.warn('the prebuilt tool listing (dist/tool-listing.json) differs from the tools: listing from the tools instead; run npm run build');
        prebuilt = undefined;
      }
      return {
        tools,
        services,
        byName: new Map(tools.map((t) => [t.name, t])),
        ...derivedListing,
        approvalOptions: {
          policy: safety.approval,
          threshold: safety.approvalThreshold,
          timeoutMs: safety.approvalTimeoutMs,
          onOutcome: (action: string, outcome: string) => services.metrics.approval(action, outcome),
        },
      };
    },
  );

  // The protocol version the client negotiated: the approval form's shape depends on it (the SDK keeps
  // only the client's capabilities and name). The SDK's own handler still answers.
  let negotiated: string | undefined;
  const initialize = (server as unknown as { _oninitialize(r: InitializeRequest): Promise<unknown> })._oninitialize.bind(server);
  server.setRequestHandler(InitializeRequestSchema, async (request) => {
    const v = request.params.protocolVersion;
    negotiated = SUPPORTED_PROTOCOL_VERSIONS.includes(v) ? v : LATEST_PROTOCOL_VERSION;
    return (await initialize(request)) as never;
  });

  // With sign-in, each request sees the tools its own token's scopes allow (stdio and MCP_HTTP_TOKEN: all).
  // A client that shows views (MCP Apps) also gets each tool's view and the tools only views call.
  server.setRequestHandler(ListToolsRequestSchema, async (_request, extra) => {
    const views = showsViews(server.getClientCapabilities());
    if (!extra.authInfo) return { tools: listingFor(prebuilt ?? (await state()).listed, views) as ListToolsResult['tools'] };
    const { tools, listed } = await state();
    const granted = new Set(extra.authInfo.scopes);
    return { tools: listingFor(listed.filter((_, i) => scopesOf(tools[i]!).some((s) => granted.has(s))), views) as ListToolsResult['tools'] };
  });

  server.setRequestHandler(CallToolRequestSchema, async (request, extra): Promise<CallToolResult> => {
    const ready = state();
    const { tools, services, byName, strictOutput, approvalOptions } = ready instanceof Promise ? await ready : ready;
    const tool = byName.get(request.params.name);
    if (!tool) throw new McpError(ErrorCode.InvalidParams, `Unknown tool: ${request.params.name}`);
    const started = Date.now();
    let toolLog: Logger | undefined; // made only when a handler logs: one per call cost a pino child each time
    const log = services.log;
    const logger = () => (toolLog ??= log.child({ tool: tool.name }));
    const progressToken = request.params._meta?.progressToken;
    const audit: Record<string, unknown> = {};
    const actor = actorOf(extra.authInfo);
    // Approval asks the person through the client that made this call, on this call's own stream.
    const approve = recordApproval(audit, actor, createApprover(approvalOptions, {
      capabilities: () => server.getClientCapabilities(),
      protocolVersion: () => negotiated,
      elicit: (message, requestedSchema, timeoutMs) =>
        extra.sendRequest({ method: 'elicitation/create', params: { message, requestedSchema } }, ElicitResultSchema, { timeout: timeoutMs, signal: extra.signal }),
    }));
    const client = server.getClientVersion();
    const base = () => ({
      tool: tool.name,
      kind: tool.kind,
      client: { name: client?.name, version: client?.version },
      session_id: extra.sessionId ?? 'stdio',
      actor: actor?.label,
      // A value nested too deep to walk is not stored (it was refused before use).
      arguments: tooDeepAt(request.params.arguments) === undefined ? (request.params.arguments ?? {}) : { refused: TOO_DEEP },
    });
    /** A send's audit entry, written before it goes out (see AuditLog.intent). */
    let intentId: number | undefined;
    const record = (outcome: string, error?: { message: string; details?: Record<string, unknown> }) => {
      const policy = typeof error?.details?.policy === 'string' ? error.details.policy : undefined;
      // A read is audited only when a policy refused it: build no entry for the rest (the hot path).
      if (intentId === undefined && tool.kind === 'read' && !policy) return;
      const entry = { ...base(), outcome, message: error?.message, policy, details: audit, duration_ms: Date.now() - started };
      if (intentId !== undefined) return void services.audit.outcome(intentId, entry);
      void services.audit.record(entry);
    };
    try {
      if (extra.authInfo) checkScope(tool, request.params.arguments ?? {}, extra.authInfo.scopes);
      const args = actor ? asActor(tool, request.params.arguments ?? {}, actor, audit) : (request.params.arguments ?? {});
      rejectUnsafeArguments(args, tool.name);
      const views = showsViews(server.getClientCapabilities());
      if (VIEW_ONLY_TOOLS.has(tool.name) && !views) {
        throw new ToolError(
          'forbidden',
          `${tool.name} is a button in this server's views (MCP Apps): only a person using the view can press it, and this client did not declare the MCP Apps extension. ` +
            'Nothing was done. To send a previewed campaign, call send_personalized_email with its confirmation_token.',
          { details: { policy: 'view_only' } },
        );
      }
      const parsed = tool.input.safeParse(args);
      if (!parsed.success) throw fromZodError(parsed.error, `Invalid arguments for ${tool.name}`, (path, key) => nearestKey(key, validKeysAt(tool.input, args, path)));
      // Nothing reaches a customer unaudited: no intent in the audit log, no send.
      if (tool.kind === 'send') intentId = await services.audit.intent({ ...base(), details: {} });
      const data = await runAs(actor, () => tool.handle(parsed.data, {
        services,
        get log() {
          return logger();
        },
        signal: extra.signal,
        approve,
        audit,
        approvalAvailable: () => supportsElicitation(server.getClientCapabilities()),
        toolsOffered: views ? tools.length : tools.filter((t) => !VIEW_ONLY_TOOLS.has(t.name)).length,
        progressRequested: progressToken !== undefined,
        progress: async (progress, total, message) => {
          if (progressToken === undefined) return;
          await extra
            .sendNotification({ method: 'notifications/progress', params: { progressToken, progress, total, message } })
            .catch(() => undefined); // progress is best-effort; a closed client must not fail the call
        },
        actor,
      }));
      const checked = strictOutput.get(tool.name)!.safeParse({ success: true, ...(data as object) });
      let result = checked.data as Record<string, unknown>;
      if (!checked.success) {
        logger().error({ issues: checked.error.issues }, 'tool returned a result that does not match its declared output');
        // A read can simply fail. Anything else has done its work (sent, or changed a record here or at a
        // provider): an error now would make the model do it again. Report what happened, with a warning.
        if (tool.kind === 'read') throw new ToolError('provider_error', `Internal error: ${tool.name} produced an invalid result. This is a bug; the server logs have details.`);
        const salvaged = salvageResult(tool, data, checked.error);
        audit.result_defect = salvaged.fields;
        result = salvaged.value;
      }
      // Never a failure once the work is done (a send must not be followed by an error): an oversized result is cut, with a note.
      const { value: structured, text } = boundResultWithText(scrubValue(result), MAX_RESULT_BYTES);
      const ms = Date.now() - started;
      log.info({ tool: tool.name, ms, success: true }, 'tool call');
      services.metrics.toolCall(tool.name, 'success', ms / 1000);
      record('success');
      return { content: [{ type: 'text', text }], structuredContent: structured };
    } catch (err) {
      const error = toErrorBody(err);
      if (!(err instanceof ToolError) && !(err instanceof z.ZodError)) logger().error({ err }, 'tool crashed');
      const ms = Date.now() - started;
      log.info({ tool: tool.name, ms, success: false, code: error.code }, 'tool call');
      services.metrics.toolCall(tool.name, error.code, ms / 1000);
      record(error.code, error);
      const { value: structured, text } = boundResultWithText({ success: false, error } as Record<string, unknown>, MAX_RESULT_BYTES);
      return { content: [{ type: 'text', text }], structuredContent: structured, isError: true };
    }
  });
}

/**
 * A call the token of ITS request does not allow (a scope lost mid-session, or a client that skipped
 * the HTTP step-up answer): refused as `forbidden` (policy `scope`), naming the scope to sign in with.
 */
function checkScope(tool: AnyToolDefinition, args: Record<string, unknown>, granted: string[]): void {
  const needed = scopeFor(tool, args);
  if (granted.includes(needed)) return;
  throw new ToolError(
    'forbidden',
    `${tool.name} needs the ${needed} scope, which your sign-in token does not carry (it has: ${granted.join(' ') || 'none'}). Nothing was done. ` +
      `Ask your administrator for the role, or sign in again asking for ${needed}.`,
    { details: { policy: 'scope', required_scope: needed } },
  );
}

/** Arguments in which the model names who is acting: with sign-in the token says who, not the model. */
const ACTOR_ARGUMENTS = ['actor', 'created_by'] as const;

/**
 * With sign-in, the signed-in person is the actor: an `actor` / `created_by` argument the model gave
 * is replaced by the token's label (what it said is kept in the audit entry as `claimed_actor`).
 */
function asActor(tool: AnyToolDefinition, args: Record<string, unknown>, actor: Actor, audit: Record<string, unknown>): Record<string, unknown> {
  const shape = (tool.input as unknown as { shape?: Record<string, unknown> }).shape ?? {};
  const keys = ACTOR_ARGUMENTS.filter((k) => k in shape);
  if (!keys.length) return args;
  const out = { ...args };
  for (const k of keys) {
    if (args[k] !== undefined && args[k] !== actor.label) audit.claimed_actor = args[k];
    out[k] = actor.label;
  }
  return out;
}

/** Every approval of the call lands in its audit entry: by whom (the signed-in person, when there is one) or by which policy. */
function recordApproval(audit: Record<string, unknown>, actor: Actor | undefined, approve: Approver): Approver {
  return async (req) => {
    const approved = await approve(req);
    audit.approved_by = approved.by === 'person' ? (actor ? `person: ${actor.label}` : 'person') : `policy (${approved.why})`;
    return approved;
  };
}

/**
 * The parts of a result that match the declared output, plus `result_warning` saying the work was done
 * and which fields could not be reported. For tools that already acted (see registerTools).
 */
function salvageResult(tool: AnyToolDefinition, data: unknown, error: z.ZodError): { value: Record<string, unknown>; fields: string[] } {
  const shape = tool.output as Record<string, z.ZodType>;
  const given = (data && typeof data === 'object' ? data : {}) as Record<string, unknown>;
  const value: Record<string, unknown> = { success: true };
  const fields = [...new Set(error.issues.map((i) => String(i.path[0] ?? '(result)')))];
  for (const [k, schema] of Object.entries(shape)) {
    if (fields.includes(k)) continue;
    const r = schema.safeParse(given[k]);
    if (r.success && r.data !== undefined) value[k] = r.data;
  }
  const done = tool.kind === 'send' ? 'was sent' : 'was done';
  value.result_warning =
    `The ${tool.name} call ${done}, but part of its result could not be reported (${fields.join(', ')}: not in the declared format). ` +
    'This is a bug in customer-success-mcp, logged on the server. Do not repeat the call: it succeeded; check the audit log or the provider for the missing details.';
  return { value, fields };
}

export function registerResources(server: Server, resources: Eventually<ResourceDefinition[]>, services: Eventually<Services>): void {
  const state = whenReady(
    resources instanceof Promise || services instanceof Promise
      ? Promise.all([resources, services])
      : ([resources, services] as [ResourceDefinition[], Services]),
    ([resources, services]) => ({ resources, services, templates: resources.map((r) => ({ def: r, template: new UriTemplate(r.uriTemplate) })) }),
  );

  server.setRequestHandler(ListResourceTemplatesRequestSchema, async () => ({
    resourceTemplates: (await state()).resources.map((r) => ({
      name: r.name,
      title: r.title,
      uriTemplate: r.uriTemplate,
      description: r.description,
      mimeType: r.mimeType,
    })),
  }));

  server.setRequestHandler(ListResourcesRequestSchema, async () => {
    const { resources, services } = await state();
    const lists = await Promise.all(resources.map(async (r) => (await r.list(services)).map((item) => ({ ...item, mimeType: r.mimeType }))));
    return { resources: lists.flat() };
  });

  server.setRequestHandler(ReadResourceRequestSchema, async (request) => {
    const { services, templates } = await state();
    const uri = request.params.uri;
    for (const { def, template } of templates) {
      const params = template.match(uri);
      if (!params) continue;
      const flat = Object.fromEntries(Object.entries(params).map(([k, v]) => [k, Array.isArray(v) ? v[0] : v]));
      try {
        const data = await def.read(flat as Record<string, string>, services);
        if (def.raw) {
          const { text, _meta } = data as { text: string; _meta?: Record<string, unknown> };
          return { contents: [{ uri, mimeType: def.mimeType, text, ...(_meta ? { _meta } : {}) }] };
        }
        return { contents: [{ uri, mimeType: def.mimeType, text: JSON.stringify(scrubValue(data), null, 2) }] };
      } catch (err) {
        const body = toErrorBody(err);
        throw new McpError(body.code === 'not_found' ? ErrorCode.InvalidParams : ErrorCode.InternalError, body.message);
      }
    }
    throw new McpError(ErrorCode.InvalidParams, `No resource matches ${uri}`);
  });
}
