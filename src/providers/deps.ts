import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import type { ProviderRuntime } from '../resilience/provider-runtime.js';

/** What every provider module is built from: config, a logger, and its resilience runtime. */
export interface ProviderDeps {
  config: Config;
  log: Logger;
  runtime: ProviderRuntime;
}
