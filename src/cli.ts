#!/usr/bin/env node
import fs from 'node:fs';
import { ConfigError, configSecrets, loadConfig } from './config.js';
import { createLogger } from './log.js';
import { registerSecrets } from './secrets.js';
import { SERVER_NAME, SERVER_VERSION } from './server.js';
import { createServices } from './services.js';
import { serveHttp } from './transports/http.js';
import { serveStdio } from './transports/stdio.js';
import { enabledTools } from './mcp/toolsets.js';
import { allTools } from './tools/index.js';

const USAGE = `Usage: customer-success-mcp [--http] [--help] [--version]
       customer-success-mcp worker

  (no option)  serve MCP over stdio (for Claude Desktop, Cursor and other local clients)
  --http       serve MCP over Streamable HTTP on MCP_HTTP_HOST:MCP_HTTP_PORT (default 127.0.0.1:3000) at /mcp
  worker       run automations and deliver queued messages around the clock, without MCP (stop with Ctrl+C or SIGTERM)

Configuration comes from environment variables, or a .env file in the working directory; see README.md.`;

async function main(argv: string[]): Promise<void> {
  const args = new Set(argv);
  if (args.has('--help') || args.has('-h')) {
    process.stderr.write(`${USAGE}\n`);
    return;
  }
  if (args.has('--version')) {
    process.stderr.write(`${SERVER_NAME} ${SERVER_VERSION}\n`);
    return;
  }
  const unknown = [...args].filter((a) => !['--http', '--stdio', 'worker'].includes(a));
  if (args.has('worker') && args.size > 1) {
    process.stderr.write(`worker takes no other option.\n\n${USAGE}\n`);
    process.exitCode = 2;
    return;
  }
  if (unknown.length) {
    process.stderr.write(`Unknown option(s): ${unknown.join(' ')}\n\n${USAGE}\n`);
    process.exitCode = 2;
    return;
  }
  if (fs.existsSync('.env')) process.loadEnvFile('.env');

  let config;
  try {
    config = loadConfig(process.env);
    enabledTools(config, allTools); // unknown toolset or tool names stop start-up here, listing the valid ones
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.exitCode = 2;
      return;
    }
    throw err;
  }
  registerSecrets(configSecrets(config));
  const log = createLogger(config.logLevel);
  process.on('uncaughtException', (err) => log.error({ err }, 'uncaught exception'));
  process.on('unhandledRejection', (err) => log.error({ err }, 'unhandled rejection'));

  const services = await createServices(config, log);
  let stopping = false;
  const stop = (why: string, after?: () => Promise<void>) => {
    if (stopping) return;
    stopping = true;
    log.info({ why }, 'shutting down: flushing buffered work');
    const hardStop = setTimeout(() => {
      log.error('shutdown took longer than 15 s; exiting');
      process.exit(1);
    }, 15_000);
    hardStop.unref();
    void (async () => {
      await after?.().catch((err) => log.error({ err }, 'closing the transport failed'));
      await services.close();
      log.flush();
      process.exit(0);
    })();
  };

  if (args.has('worker')) {
    // Headless: the scheduler and the outbox run (started with the services); no MCP transport.
    // The inbound-webhook HTTP listener will be mounted here (one place, so the worker serves it too).
    setInterval(() => undefined, 3_600_000); // the loops' timers are unref'd; the worker lives until a signal
    for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => stop(sig));
    const running = services.automations.running;
    log.info({ automations: running, outbox: services.delivery.dispatcher.running }, 'worker started');
    process.stderr.write(
      `\n${SERVER_NAME} ${SERVER_VERSION} worker: ${running ? 'running automations and delivering queued messages' : 'read-only mode (CS_MCP_READ_ONLY): nothing runs'}. ` +
        `Data: ${config.database.kind === 'sqlite' ? config.database.file : 'PostgreSQL (DATABASE_URL)'}. Press Ctrl+C to stop.\n\n`,
    );
    return;
  }

  if (args.has('--http')) {
    let running;
    try {
      running = await serveHttp(services);
    } catch (err) {
      await services.close();
      if (err instanceof ConfigError || (err as NodeJS.ErrnoException).code === 'EADDRINUSE') {
        const msg =
          err instanceof ConfigError
            ? err.message
            : `Port ${config.http.port} on ${config.http.host} is already in use: set MCP_HTTP_PORT to a free port.`;
        process.stderr.write(`${msg}\n`);
        process.exitCode = 2;
        return;
      }
      throw err;
    }
    // Handlers first: a client that reads the URL may stop the server right away.
    for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => stop(sig, running.close));
    process.stderr.write(
      `\n${SERVER_NAME} ${SERVER_VERSION} is serving MCP (Streamable HTTP) at ${running.url}\n` +
        `Connect a client to that URL${config.http.token ? ' with the header "Authorization: Bearer <MCP_HTTP_TOKEN>"' : ''}, e.g.\n` +
        `  npx @modelcontextprotocol/inspector  (transport: Streamable HTTP, URL above)\n` +
        `  claude mcp add --transport http customer-success ${running.url}\n` +
        `Data: ${config.database.kind === 'sqlite' ? config.database.file : 'PostgreSQL (DATABASE_URL)'}. Press Ctrl+C to stop.\n\n`,
    );
  } else {
    for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => stop(sig));
    await serveStdio(services, () => stop('stdin closed'));
  }
}

main(process.argv.slice(2)).catch((err) => {
  process.stderr.write(`customer-success-mcp failed to start: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
