import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

/**
 * A stdio client waits for `initialize` while the CLI's static imports load; the tools, services,
 * store and providers are imported dynamically, after it is answered (cli.ts). This walks the static
 * import graph of the built CLI (npm test builds first) and names the packages it reaches, so a
 * module that pulls a heavy package into start-up (an HTML parser, a database driver) shows up here.
 */
const DIST_CLI = fileURLToPath(new URL('../../dist/cli.js', import.meta.url));
const STATIC_IMPORT = /^\s*(?:import|export)\s+(?:[^'"]*?\s+from\s+)?['"]([^'"]+)['"]/gm;

function packagesReachedFrom(entry: string): Set<string> {
  const seen = new Set<string>();
  const packages = new Set<string>();
  const walk = (file: string) => {
    if (seen.has(file)) return;
    seen.add(file);
    for (const [, spec] of fs.readFileSync(file, 'utf8').matchAll(STATIC_IMPORT)) {
      if (spec!.startsWith('.')) walk(path.resolve(path.dirname(file), spec!));
      else if (!spec!.startsWith('node:')) packages.add(spec!.startsWith('@') ? spec!.split('/').slice(0, 2).join('/') : spec!.split('/')[0]!);
    }
  };
  walk(entry);
  return packages;
}

describe('what a stdio client waits for before initialize', () => {
  // Not pino either: the logger loads with the services (startup-listing.test.ts watches the order).
  it('the CLI statically imports only the MCP SDK, zod and fastest-levenshtein', () => {
    expect([...packagesReachedFrom(DIST_CLI)].sort()).toEqual(['@modelcontextprotocol/sdk', 'fastest-levenshtein', 'zod']);
  });
});
