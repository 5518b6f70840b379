#!/usr/bin/env node
import fs from 'node:fs';
import path from 'node:path';
import { ConfigError, configSecrets, customProviderHosts, loadConfig, readSettingsFile, type SettingsFile } from './config.js';
import type { Logger } from './log.js';
import { registerSecrets } from './secrets.js';
import { SERVER_NAME, SERVER_VERSION } from './mcp/server-info.js';
import { readPrebuiltListing, type ListedTool } from './mcp/tool-listing.js';
import { chooseTools, enabledTools } from './mcp/toolsets.js';
import type { Services } from './services.js';
import { serveStdio, type StdioBackend } from './transports/stdio.js';

// Only what every mode needs is imported up front. The tools, the services (store, providers, engines) and
// each transport are imported when used: a stdio server answers `initialize` before they have loaded,
// and stdio never loads Express at all.

const USAGE = `Usage: customer-success-mcp [--http] [--env-file <path>] [--help] [--version]
       customer-success-mcp worker [--env-file <path>]

  (no option)        serve MCP over stdio (for Claude Desktop, Cursor and other local clients)
  --http             serve MCP over Streamable HTTP on MCP_HTTP_HOST:MCP_HTTP_PORT (default 127.0.0.1:3000) at /mcp
  worker             run automations and deliver queued messages around the clock, without MCP (stop with Ctrl+C or SIGTERM)
  --env-file <path>  read settings from this file (default: CS_MCP_ENV_FILE, else .env in the data folder)

Configuration comes from environment variables and, at most, that one settings file; see README.md.
A .env file in the working directory is not read.`;

interface Options {
  http: boolean;
  /** The headless worker: automations and delivery, no MCP. */
  worker: boolean;
  envFile?: string;
}

function parseArgs(argv: string[]): Options | { exit: string; code: number } {
  const opts: Options = { http: false, worker: false };
  for (let i = 0; i < argv.length; i += 1) {
    const a = argv[i]!;
    if (a === '--help' || a === '-h') return { exit: USAGE, code: 0 };
    if (a === '--version') return { exit: `${SERVER_NAME} ${SERVER_VERSION}`, code: 0 };
    if (a === '--http') opts.http = true;
    else if (a === '--stdio') opts.http = false;
    else if (a === 'worker' && i === 0) opts.worker = true;
    else if (a === '--env-file' && argv[i + 1] !== undefined) opts.envFile = argv[++i];
    else if (a.startsWith('--env-file=')) opts.envFile = a.slice('--env-file='.length);
    else return { exit: `Unknown or incomplete option: ${a}\n\n${USAGE}`, code: 2 };
  }
  if (opts.worker && opts.http) return { exit: `worker serves no MCP transport: leave out --http.\n\n${USAGE}`, code: 2 };
  return opts;
}

async function main(argv: string[]): Promise<void> {
  const parsed = parseArgs(argv);
  if ('exit' in parsed) {
    process.stderr.write(`${parsed.exit}\n`);
    process.exitCode = parsed.code;
    return;
  }
  const args = parsed;

  let config;
  let settings: SettingsFile;
  let prebuilt: ListedTool[] | undefined;
  try {
    settings = readSettingsFile(args.envFile, process.env);
    // The environment wins over the file, as with any .env loader.
    config = loadConfig({ ...settings.values, ...process.env });
    // Unknown toolset or tool names stop start-up, listing the valid ones (stdio checks in the background).
    if (args.http || args.worker) enabledTools(config, (await import('./tools/index.js')).allTools);
    // stdio lists its tools from the listing the build wrote, before the tools and services load.
    else {
      const built = readPrebuiltListing();
      if (built) prebuilt = chooseTools(config, built.map((e) => ({ ...e, name: e.listed.name }))).map((e) => e.listed);
    }
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.exitCode = 2;
      return;
    }
    throw err;
  }
  registerSecrets(configSecrets(config));
  // Importing pino is about a tenth of a stdio server's start (15 of 190 ms on a 2-core machine): stdio
  // builds the logger with the services, once the transport is up; the other modes build it at once.
  let built: Logger | undefined;
  let logging: Promise<Logger> | undefined;
  const logger = (): Promise<Logger> =>
    (logging ??= import('./log.js').then(({ createLogger }) => {
      const log = (built = createLogger(config.logLevel));
      if (settings.file) log.info({ file: settings.file, variables: Object.keys(settings.values) }, 'read settings file');
      // Start-up notices go through the logger: stderr carries JSON lines only (log collectors parse them).
      if (fs.existsSync('.env') && path.resolve('.env') !== settings.file) {
        log.warn(
          { file: path.resolve('.env') },
          'a .env file in the working directory is not read (a file there could redirect your credentials): put settings in the environment, in .env in the data folder, or name the file with --env-file',
        );
      }
      const custom = customProviderHosts(config);
      if (custom.length) {
        log.warn({ hosts: custom }, "CS_MCP_ALLOW_CUSTOM_PROVIDER_HOSTS=true: provider credentials go to hosts that are not the providers' own");
      }
      process.on('uncaughtException', (err) => log.error({ err }, 'uncaught exception'));
      process.on('unhandledRejection', (err) => log.error({ err }, 'unhandled rejection'));
      return log;
    }));

  const cfg = config;
  // stdio: the transport comes up first (see serveStdio) and the tools and services are built meanwhile;
  // a failure then is reported as before (exit 2 for a setting, 1 otherwise), after the initialize answer.
  const stdioBackend = async (): Promise<StdioBackend> => {
    await new Promise((resolve) => setImmediate(resolve)); // an initialize already waiting on stdin is answered first
    const [{ allTools }, { allResources }, { createServices }, log] = await Promise.all([
      import('./tools/index.js'),
      import('./resources/index.js'),
      import('./services.js'),
      logger(),
    ]);
    const tools = enabledTools(cfg, allTools);
    return { tools, resources: allResources, services: await createServices(cfg, log) };
  };
  const backend = args.http || args.worker ? undefined : stdioBackend();
  backend?.catch((err: unknown) => {
    built?.flush();
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(2);
    }
    process.stderr.write(`customer-success-mcp failed to start: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
  const starting: Promise<Services> = backend
    ? backend.then((b) => b.services)
    : Promise.all([import('./services.js'), logger()]).then(([m, log]) => m.createServices(cfg, log));
  starting.catch(() => undefined); // reported where it is awaited (or, for stdio, by backend's handler)
  let stopping = false;
  const stop = (why: string, after?: () => Promise<void>) => {
    if (stopping) return;
    stopping = true;
    const hardStop = setTimeout(() => {
      built?.error('shutdown took longer than 15 s; exiting');
      process.exit(1);
    }, 15_000);
    hardStop.unref();
    void (async () => {
      const log = await logger();
      log.info({ why }, 'shutting down: flushing buffered work');
      await after?.().catch((err) => log.error({ err }, 'closing the transport failed'));
      // Services still being built (stdio) are awaited, then closed; had they failed, that was reported above.
      const services = await starting.catch(() => new Promise<never>(() => undefined));
      await services.close();
      log.flush();
      process.exit(0);
    })();
  };

  if (backend) {
    for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => stop(sig));
    await serveStdio(config, backend, () => stop('stdin closed'), prebuilt);
    return;
  }

  const services = await starting;
  if (args.worker) {
    // Headless: the scheduler and the outbox run (started with the services); no MCP transport. The
    // provider webhooks are served when one is enabled, so the worker alone closes the loop.
    let listener;
    try {
      const { serveWebhooks } = await import('./transports/webhook-listener.js');
      listener = await serveWebhooks(services);
    } catch (err) {
      await services.close();
      if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') {
        process.stderr.write(`Port ${config.http.port} on ${config.http.host} is already in use (webhooks): set MCP_HTTP_PORT to a free port.\n`);
        process.exitCode = 2;
        return;
      }
      throw err;
    }
    setInterval(() => undefined, 3_600_000); // the loops' timers are unref'd; the worker lives until a signal
    for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => stop(sig, listener?.close));
    const running = services.automations.running;
    services.log.info({ automations: running, outbox: services.delivery.dispatcher.running, webhooks: listener?.endpoints ?? [] }, 'worker started');
    process.stderr.write(
      `\n${SERVER_NAME} ${SERVER_VERSION} worker: ${running ? 'running automations and delivering queued messages' : 'read-only mode (CS_MCP_READ_ONLY): nothing runs'}. ` +
        (listener?.endpoints.length ? `Webhooks (${listener.endpoints.join(', ')}) at ${listener.url}<endpoint>. ` : 'No webhook endpoint is enabled. ') +
        (listener && config.observability.metrics ? `Metrics at ${listener.url.replace(/webhooks\/$/, 'metrics')}. ` : '') +
        `Data: ${config.database.kind === 'sqlite' ? config.database.file : 'PostgreSQL (DATABASE_URL)'}. Press Ctrl+C to stop.\n\n`,
    );
    return;
  }

  if (args.http) {
    let running;
    try {
      const { serveHttp } = await import('./transports/http.js');
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
        `Connect a client to that URL${config.http.token ? ' with the header "Authorization: Bearer <MCP_HTTP_TOKEN>"' : ''}${config.http.oauth ? ` (sign-in: tokens of ${config.http.oauth.issuer} for ${config.http.oauth.resource})` : ''}, e.g.\n` +
        `  npx @modelcontextprotocol/inspector  (transport: Streamable HTTP, URL above)\n` +
        `  claude mcp add --transport http customer-success ${running.url}\n` +
        `Data: ${config.database.kind === 'sqlite' ? config.database.file : 'PostgreSQL (DATABASE_URL)'}. Press Ctrl+C to stop.\n\n`,
    );
  }
}

main(process.argv.slice(2)).catch((err) => {
  process.stderr.write(`customer-success-mcp failed to start: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
