import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

/**
 * A database that fails on chosen statements, for the exactly-once drills. `env` goes into the spawned
 * server's environment (startStdio); for an in-process server call `installInProcess()` first.
 * `fail(/insert into "outbox"/, 3)` makes the next three matching statements throw; `clear()` heals.
 */
export interface DbFaults {
  env: Record<string, string>;
  fail(match: RegExp | string, times?: number, message?: string): void;
  clear(): void;
  /** SQL (first 200 characters) of every statement failed so far. */
  hits(): string[];
  installInProcess(): Promise<void>;
  cleanup(): void;
}

const PRELOAD = path.resolve(import.meta.dirname, 'db-faults-preload.mjs');

export function dbFaults(): DbFaults {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'csmcp-dbfaults-'));
  const file = path.join(dir, 'rules.json');
  let version = 0;
  const write = (rules: unknown[]) => {
    // mtime is the preload's change signal; write to a new file and rename so a reader never sees half a file,
    // and bump the time explicitly (two writes within one mtime tick would look unchanged).
    const tmp = `${file}.${++version}`;
    fs.writeFileSync(tmp, JSON.stringify({ rules }));
    const t = new Date(Date.now() + version);
    fs.utimesSync(tmp, t, t);
    fs.renameSync(tmp, file);
  };
  write([]);
  return {
    env: { NODE_OPTIONS: `--import=${pathToFileURL(PRELOAD).href}`, CS_MCP_TEST_DB_FAULTS: file },
    fail(match, times, message) {
      write([{ match: typeof match === 'string' ? match : match.source, times, message }]);
    },
    clear() {
      write([]);
    },
    hits() {
      try {
        return fs.readFileSync(`${file}.log`, 'utf8').split('\n').filter(Boolean);
      } catch {
        return [];
      }
    },
    async installInProcess() {
      const mod = (await import(pathToFileURL(PRELOAD).href)) as { installDbFaults(file: string): unknown };
      mod.installDbFaults(file);
    },
    cleanup() {
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
