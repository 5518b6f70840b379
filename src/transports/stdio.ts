import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import { registerResources, registerTools, type ResourceDefinition } from '../mcp/register.js';
import { newServer } from '../mcp/server-info.js';
import type { AnyToolDefinition } from '../mcp/tool.js';
import type { ListedTool } from '../mcp/tool-listing.js';
import type { Services } from '../services.js';
import { BoundedLineReader, identifyRequest, type OversizedLine } from './stdio-limit.js';

/** What the tools need, built after the transport is up. */
export interface StdioBackend {
  tools: AnyToolDefinition[];
  resources: ResourceDefinition[];
  services: Services;
}

/** Logs a line once the logger is there. */
type LaterLog = (write: (log: Logger) => void) => void;

/**
 * MCP over stdin/stdout. stdout carries protocol messages only; logs go to stderr.
 *
 * Desktop clients start every configured server when they open, so the transport comes up first and
 * answers `initialize` at once, and tools/list from the listing built ahead (`prebuilt`); tools/call and
 * the resources wait for `backend` (tool definitions, store, services and the logger), which the caller
 * builds meanwhile and whose failure it reports. Lines logged before then wait for the logger.
 */
export async function serveStdio(config: Config, backend: Promise<StdioBackend>, onClosed: () => void, prebuilt?: ListedTool[]): Promise<void> {
  const limit = config.maxRequestBytes;
  const server = newServer();
  const services = backend.then((b) => b.services);
  // Failures of the backend are reported by the caller; a line that cannot be logged then is dropped with it.
  const stdioLog: Promise<Logger> = services.then((s): Logger => s.log.child({ transport: 'stdio' }));
  const log: LaterLog = (write) => void stdioLog.then(write, () => undefined);
  registerTools(server, backend.then((b) => b.tools), services, prebuilt);
  registerResources(server, backend.then((b) => b.resources), services);
  const reader = new BoundedLineReader(limit, (line) => answerOversized(line, limit, log));
  process.stdin.pipe(reader);
  // The reader passes one whole line per chunk, each within the limit: the SDK's buffer only needs room for one.
  const transport = new StdioServerTransport(reader, process.stdout, { maxBufferSize: limit + 1024 });
  // The client closing stdin is the normal way a stdio server is told to stop.
  process.stdin.once('end', onClosed);
  process.stdin.once('close', onClosed);
  server.onclose = onClosed;
  await server.connect(transport);
  log((l) => l.info({ max_request_bytes: limit }, 'serving MCP over stdio'));
}

/**
 * A request over MCP_MAX_REQUEST_BYTES was dropped unread: answer it, so the client is not left waiting.
 * A tool call gets the tool-result contract (invalid_input), anything else a JSON-RPC error.
 */
function answerOversized(line: OversizedLine, limit: number, log: LaterLog): void {
  const { method, id } = identifyRequest(line);
  log((l) => l.warn({ bytes: line.bytes, limit, method, id }, 'dropped a message over MCP_MAX_REQUEST_BYTES'));
  if (method === undefined || id === undefined) return; // a notification or a response: nobody waits for an answer
  const message =
    `The request is ${line.bytes} bytes, over this server's limit of ${limit} bytes (MCP_MAX_REQUEST_BYTES); nothing was done. ` +
    'Send less in one call (shorter text, fewer recipients per call), or raise MCP_MAX_REQUEST_BYTES in the server environment.';
  const details = { size_bytes: line.bytes, limit_bytes: limit };
  const answer =
    method === 'tools/call'
      ? (() => {
          const structured = { success: false, error: { code: 'invalid_input', message, retryable: false, details } };
          return { jsonrpc: '2.0', id, result: { content: [{ type: 'text', text: JSON.stringify(structured) }], structuredContent: structured, isError: true } };
        })()
      : { jsonrpc: '2.0', id, error: { code: -32600, message, data: details } };
  process.stdout.write(`${JSON.stringify(answer)}\n`);
}
