import { createRequire } from 'node:module';
import { Server } from '@modelcontextprotocol/sdk/server/index.js';

const pkg = createRequire(import.meta.url)('../../package.json') as { name: string; version: string };
export const SERVER_NAME = pkg.name;
export const SERVER_VERSION = pkg.version;

const INSTRUCTIONS = `Customer-success tools over Intercom, SendGrid, Mixpanel and the team's own customer roster.
Tools that send (intercom_send_message, sendgrid_*, send_personalized_email) reach real customers: confirm intent before calling them.
send_personalized_email always previews first and only sends when called again with the confirmation_token it returned.
Every result has success: true with data, or success: false with error {code, message, retryable}; follow the message.
Call integrations_status when a provider answers not_configured, circuit_open or rate_limited.`;

/**
 * The bare MCP server (name, capabilities, instructions), no handlers yet. Kept apart from the tool
 * and resource definitions so that stdio can answer `initialize` before those (and the services) load.
 */
export function newServer(): Server {
  return new Server({ name: SERVER_NAME, version: SERVER_VERSION }, { capabilities: { tools: {}, resources: {} }, instructions: INSTRUCTIONS });
}
