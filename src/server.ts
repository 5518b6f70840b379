import type { Server } from '@modelcontextprotocol/sdk/server/index.js';
import { registerResources, registerTools } from './mcp/register.js';
import { newServer } from './mcp/server-info.js';
import { enabledTools } from './mcp/toolsets.js';
import { allResources } from './resources/index.js';
import type { Services } from './services.js';
import { allTools } from './tools/index.js';

export { SERVER_NAME, SERVER_VERSION } from './mcp/server-info.js';

/**
 * One MCP server over the shared services. Streamable HTTP makes one per session, all sharing the same
 * providers, store and campaign dispatcher. (stdio registers the same handlers before the services
 * exist: see transports/stdio.ts.)
 */
export function createMcpServer(services: Services): Server {
  const server = newServer();
  registerTools(server, enabledTools(services.config, allTools), services);
  registerResources(server, allResources, services);
  return server;
}
