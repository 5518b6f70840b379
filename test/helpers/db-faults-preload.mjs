// A database that fails on chosen statements, for the exactly-once drills.
//
// Loaded into a spawned server with NODE_OPTIONS=--import=<this file> (see db-faults.ts), or installed
// in-process with installDbFaults(file). It patches better-sqlite3's statements and pg's Client.query so
// that a statement whose SQL matches a rule throws, as a disk error or a dropped connection would.
// The rules live in a JSON file the test rewrites at will: {"rules": [{"match": "<regex, case-insensitive>",
// "times": <how many statements to fail, absent = until the file changes>, "message": "..."}]}.
// Each failure appends one line (the SQL's first 200 characters) to <file>.log, so a test can wait for it.
import fs from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
let installed;
let file;

/** Installs the patches once per process; a later call with another rules file switches to that file. */
export function installDbFaults(rulesFile) {
  if (installed) {
    if (rulesFile !== file) {
      file = rulesFile;
      installed.reset();
    }
    return installed;
  }
  file = rulesFile;
  let mtime = -1;
  let rules = [];
  const load = () => {
    let st;
    try {
      st = fs.statSync(file);
    } catch {
      rules = [];
      mtime = -1;
      return;
    }
    if (st.mtimeMs === mtime) return;
    mtime = st.mtimeMs;
    try {
      const parsed = JSON.parse(fs.readFileSync(file, 'utf8'));
      rules = (parsed.rules ?? []).map((r) => ({ re: new RegExp(r.match, 'i'), left: r.times ?? Infinity, message: r.message ?? 'injected database fault' }));
    } catch {
      rules = [];
    }
  };
  const check = (sql) => {
    load();
    for (const r of rules) {
      if (r.left > 0 && r.re.test(sql)) {
        r.left -= 1;
        try {
          fs.appendFileSync(`${file}.log`, `${String(sql).replace(/\s+/g, ' ').slice(0, 200)}\n`);
        } catch {
          /* the log is a convenience */
        }
        const err = new Error(`${r.message} (${String(sql).slice(0, 60)})`);
        err.code = 'SQLITE_IOERR';
        return err;
      }
    }
    return undefined;
  };

  try {
    const Database = require('better-sqlite3');
    const prepare = Database.prototype.prepare;
    let patched = false;
    Database.prototype.prepare = function (sql, ...rest) {
      const stmt = prepare.call(this, sql, ...rest);
      if (!patched) {
        patched = true;
        const proto = Object.getPrototypeOf(stmt);
        for (const m of ['run', 'all', 'get', 'iterate']) {
          const orig = proto[m];
          proto[m] = function (...args) {
            const err = check(this.source);
            if (err) throw err;
            return orig.apply(this, args);
          };
        }
      }
      return stmt;
    };
    const exec = Database.prototype.exec;
    Database.prototype.exec = function (sql) {
      const err = check(sql);
      if (err) throw err;
      return exec.call(this, sql);
    };
  } catch {
    /* better-sqlite3 not installed */
  }

  try {
    const pg = require('pg');
    const query = pg.Client.prototype.query;
    pg.Client.prototype.query = function (config, values, callback) {
      const sql = typeof config === 'string' ? config : config?.text;
      const err = sql ? check(sql) : undefined;
      if (err) {
        err.code = '08006'; // connection_failure
        const cb = typeof values === 'function' ? values : callback ?? (typeof config === 'object' ? config?.callback : undefined);
        if (typeof cb === 'function') {
          process.nextTick(() => cb(err));
          return undefined;
        }
        return Promise.reject(err);
      }
      return query.call(this, config, values, callback);
    };
  } catch {
    /* pg not installed */
  }
  installed = {
    reset() {
      mtime = -1;
      rules = [];
    },
  };
  return installed;
}

if (process.env.CS_MCP_TEST_DB_FAULTS) installDbFaults(process.env.CS_MCP_TEST_DB_FAULTS);
