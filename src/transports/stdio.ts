import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import { createMcpServer } from '../server.js';
import type { Services } from '../services.js';

/** MCP over stdin/stdout. stdout carries protocol messages only; logs go to stderr. */
export async function serveStdio(services: Services, onClosed: () => void): Promise<void> {
  const server = createMcpServer(services);
  const transport = new StdioServerTransport();
  // The client closing stdin is the normal way a stdio server is told to stop.
  process.stdin.once('end', onClosed);
  process.stdin.once('close', onClosed);
  server.onclose = onClosed;
  await server.connect(transport);
  services.log.info('serving MCP over stdio');
}
