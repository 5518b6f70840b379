import { createRequire } from 'node:module';
import { Server } from '@modelcontextprotocol/sdk/server/index.js';
import { registerResources, registerTools } from './mcp/register.js';
import { enabledTools } from './mcp/toolsets.js';
import { allResources } from './resources/index.js';
import type { Services } from './services.js';
import { allTools } from './tools/index.js';

const pkg = createRequire(import.meta.url)('../package.json') as { name: string; version: string };
export const SERVER_NAME = pkg.name;
export const SERVER_VERSION = pkg.version;

const INSTRUCTIONS = `Customer-success tools over Intercom, SendGrid, Mixpanel and the team's own customer roster.
Tools that send (intercom_send_message, sendgrid_*, send_personalized_email) reach real customers: confirm intent before calling them.
send_personalized_email always previews first and only sends when called again with the confirmation_token it returned.
Every result has success: true with data, or success: false with error {code, message, retryable}; follow the message.
Call integrations_status when a provider answers not_configured, circuit_open or rate_limited.`;

/**
 * One MCP server over the shared services. stdio makes one; Streamable HTTP makes one per session,
 * all sharing the same providers, store and campaign dispatcher.
 */
export function createMcpServer(services: Services): Server {
  const server = new Server(
    { name: SERVER_NAME, version: SERVER_VERSION },
    { capabilities: { tools: {}, resources: {} }, instructions: INSTRUCTIONS },
  );
  registerTools(server, enabledTools(services.config, allTools), services, services.log);
  registerResources(server, allResources, services);
  return server;
}
