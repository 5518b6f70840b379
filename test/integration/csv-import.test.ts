import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CSV_LIMITS } from '../../src/store/csv-source.js';
import { availableDialects, createTarget, type DatabaseTarget } from '../helpers/databases.js';
import { startInMemory, startStdio, tempDataDir, testEnv, type InMemoryHarness } from '../helpers/mcp.js';

const dialects = await availableDialects();
const HEADER = 'client_id,client_name,tier,renewal_date,owner_email,contact_email,contact_name';
const SECRET = 'api_secret=s3cr3t-value-do-not-leak';

/** A CSV of `clients` clients with `perClient` contacts each. */
function rosterCsv(file: string, clients: number, perClient: number): void {
  const lines = [HEADER];
  for (let c = 0; c < clients; c++) for (let k = 0; k < perClient; k++) lines.push(`client-${c},Client ${c},standard,2027-01-31,,p${k}@client-${c}.example,P ${k}`);
  fs.writeFileSync(file, `${lines.join('\n')}\n`);
}

describe('import_clients: what a file may be, and how a bad one is reported', () => {
  const data = tempDataDir();
  let h: InMemoryHarness;
  const file = (name: string, content: string | Buffer) => {
    const p = path.join(data.dir, name);
    fs.writeFileSync(p, content);
    return p;
  };
  beforeAll(async () => {
    h = await startInMemory(testEnv({}, data.dir));
  });
  afterAll(async () => {
    await h.close();
    data.cleanup();
  });

  const expectRefused = async (file_path: string, message: RegExp) => {
    const r = await h.call('import_clients', { file_path });
    expect(r.structuredContent.success, JSON.stringify(r.structuredContent)).toBe(false);
    expect(r.structuredContent.error.code).toBe('invalid_input');
    expect(r.structuredContent.error.message).toMatch(message);
    expect(r.structuredContent.error.message).not.toMatch(/This is a bug|s3cr3t|api_secret/);
    return r.structuredContent.error;
  };

  it('imports a quote inside an unquoted field as written (Acme "Best" Corp), as spreadsheet exports produce it', async () => {
    const f = file('quotes.csv', `${HEADER}\nacme-best,Acme "Best" Corp,standard,,,ann@acme.example,"Ann ""The Boss"" Lee"\n`);
    const r = await h.call('import_clients', { file_path: f });
    expect(r.structuredContent).toMatchObject({ success: true, imported: true, clients_created: 1 });
    const o = await h.call('get_client_overview', { client_id: 'acme-best' });
    expect(o.structuredContent.client.name).toBe('Acme "Best" Corp');
    expect(o.structuredContent.contacts[0].name).toBe('Ann "The Boss" Lee');
  });

  it('malformed CSV is invalid_input with the line and no file content', async () => {
    await expectRefused(file('unclosed.csv', `${HEADER}\nx-co,"${SECRET},standard,,,a@x.example,A\n`), /not valid CSV: line 2.*quoted field is never closed/);
    await expectRefused(file('columns.csv', `${HEADER}\nx-co,${SECRET},standard\n`), /not valid CSV: line 2: has 3 fields, the header has 7/);
    await expectRefused(file('long.csv', `${HEADER}\nx-co,${SECRET}${'x'.repeat(CSV_LIMITS.maxRowBytes)},standard,,,a@x.example,A\n`), /not valid CSV: line 2.*longer than 1048576 bytes/);
  });

  it('a .csv link to a settings file is refused without reading it; so are directories, FIFOs, binaries, empty and huge files', async () => {
    const env = file('.env', `${SECRET}\n`);
    fs.symlinkSync(env, path.join(data.dir, 'innocent.csv'));
    await expectRefused(path.join(data.dir, 'innocent.csv'), /is a link to \.env, which is not a \.csv file/);
    await expectRefused(env, /must name a \.csv file/);
    fs.mkdirSync(path.join(data.dir, 'folder.csv'));
    await expectRefused(path.join(data.dir, 'folder.csv'), /not a regular file/);
    execFileSync('mkfifo', [path.join(data.dir, 'pipe.csv')]);
    await expectRefused(path.join(data.dir, 'pipe.csv'), /not a regular file/);
    await expectRefused(file('image.csv', Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x00, 0x00, 0x1a, 0x0a])), /binary file, not CSV text/);
    await expectRefused(file('empty.csv', ''), /is empty/);
    const huge = path.join(data.dir, 'huge.csv');
    fs.writeFileSync(huge, HEADER);
    fs.truncateSync(huge, CSV_LIMITS.maxBytes + 1); // sparse: no time, no disk
    await expectRefused(huge, /over the 67108864-byte limit/);
    await expectRefused(path.join(data.dir, 'missing.csv'), /not a readable file/);
  });

  it('refuses a file with more rows than the limit', async () => {
    const row = 'x,y,standard,,,z,w\n';
    await expectRefused(file('tall.csv', HEADER + '\n' + row.repeat(CSV_LIMITS.maxRows + 1)), /more than 100000 rows: split it/);
  });

  it('refuses too many columns, a duplicated column and a header without the required columns', async () => {
    const wide = Array.from({ length: CSV_LIMITS.maxColumns + 1 }, (_, i) => `custom.c${i}`).join(',');
    await expectRefused(file('wide.csv', `${HEADER},${wide}\n`), /columns, over the limit of 200/);
    await expectRefused(file('dup.csv', `${HEADER},client_id\n`), /names the column client_id twice/);
    await expectRefused(file('nohead.csv', 'name,email\nx,y@z.example\n'), /lacks client_id, client_name, contact_email/);
  });

  it('invalid UTF-8 and NUL characters are errors naming the row and column, not stored as U+FFFD', async () => {
    // 200 good rows first, so the NUL byte is past the binary sniff at the start of the file.
    const good = Array.from({ length: 200 }, (_, i) => `ok-co,OK Co,standard,,,p${i}@ok.example,Person ${i}`).join('\n');
    const bad = Buffer.concat([
      Buffer.from(`${HEADER}\n${good}\nbad-co,Caf`),
      Buffer.from([0xe9]), // "é" in Latin-1: not UTF-8
      Buffer.from(`,standard,,,b@bad.example,B\nnul-co,Nul Co,standard,,,c@nul.example,C`),
      Buffer.from([0x00]),
      Buffer.from('\n'),
    ]);
    const r = await h.call('import_clients', { file_path: file('latin1.csv', bad) });
    expect(r.structuredContent.error.code).toBe('invalid_input');
    expect(r.structuredContent.error.details.errors).toEqual([
      { row: 202, field: 'client_name', problem: expect.stringMatching(/not valid UTF-8/) },
      { row: 203, field: 'contact_name', problem: expect.stringMatching(/NUL character/) },
    ]);
    expect((await h.call('get_client_overview', { client_id: 'ok-co' })).structuredContent.error.code).toBe('not_found');
    const skipped = await h.call('import_clients', { file_path: path.join(data.dir, 'latin1.csv'), skip_invalid: true });
    expect(skipped.structuredContent).toMatchObject({ imported: true, rows_skipped: 2, contacts_created: 200 });
  });

  it('a file with row errors is refused as invalid_input (nothing imported is never a success), its row errors structured and bounded', async () => {
    const bad = Array.from({ length: 250 }, (_, i) => `bad ${i},Bad,standard,,,b${i}@bad.example,B`);
    const f = file('refused.csv', `${HEADER}\nfine-one,Fine,standard,,,a@fine-one.example,A\n${bad.join('\n')}\n`);
    const r = await h.call('import_clients', { file_path: f });
    expect(r.isError).toBe(true);
    expect(r.structuredContent.success).toBe(false);
    expect(r.structuredContent.error).toMatchObject({ code: 'invalid_input', retryable: false });
    expect(r.structuredContent.error.message).toMatch(/Nothing was imported: 250 of 251 rows have errors.*skip_invalid: true/);
    const details = r.structuredContent.error.details;
    expect(details).toMatchObject({ rows: 251, rows_with_errors: 250, error_count: 250, errors_truncated: true });
    expect(details.errors).toHaveLength(200);
    expect(details.errors[0]).toEqual({ row: 3, field: 'client_id', problem: expect.any(String) });
    expect((await h.call('get_client_overview', { client_id: 'fine-one' })).structuredContent.error.code).toBe('not_found');
    // skip_invalid with not one valid row imports nothing either: refused the same way.
    const none = await h.call('import_clients', { file_path: file('none.csv', `${HEADER}\n${bad.slice(0, 3).join('\n')}\n`), skip_invalid: true });
    expect(none.structuredContent).toMatchObject({ success: false, error: { code: 'invalid_input' } });
    expect(none.structuredContent.error.details.errors).toHaveLength(3);
    // The valid rows go in with skip_invalid: true, the skipped ones counted.
    const skipped = await h.call('import_clients', { file_path: f, skip_invalid: true });
    expect(skipped.structuredContent).toMatchObject({ success: true, imported: true, rows_skipped: 250, clients_created: 1 });
  });

  it('applies the roster field rules: real dates, RFC 5321 emails, custom attribute limits and reserved names', async () => {
    const custom = Array.from({ length: 101 }, (_, i) => `custom.a${i}`).join(',');
    const lines = [
      `${HEADER},custom.__proto__,${custom}`,
      `feb-co,Feb,standard,2024-02-30,,a@feb.example,A,,${Array(101).fill('').join(',')}`,
      `zero-co,Zero,standard,0000-01-01,,a@zero.example,A,,${Array(101).fill('').join(',')}`,
      `long-co,Long,standard,,,${'x'.repeat(65)}@long.example,A,,${Array(101).fill('').join(',')}`,
      `proto-co,Proto,standard,,,a@proto.example,A,polluted,${Array(101).fill('').join(',')}`,
      `many-co,Many,standard,,,a@many.example,A,,${Array(101).fill('v').join(',')}`,
      `fine-co,Fine,standard,2024-02-29,,a@fine.example,A,,${Array(101).fill('').join(',')}`,
    ];
    const r = await h.call('import_clients', { file_path: file('rules.csv', `${lines.join('\n')}\n`) });
    expect(r.structuredContent.error.code).toBe('invalid_input');
    expect(r.structuredContent.error.details.errors).toEqual([
      { row: 2, field: 'renewal_date', problem: 'not a date in the calendar (check the month and day)' },
      { row: 3, field: 'renewal_date', problem: 'a year between 1900 and 2200' },
      { row: 4, field: 'contact_email', problem: 'the part before "@" is at most 64 characters (RFC 5321)' },
      { row: 5, field: 'custom.__proto__', problem: '"__proto__" cannot be an attribute name (reserved); rename it' },
      { row: 6, field: 'custom.*', problem: 'at most 100 custom attributes (got 101)' },
    ]);
  });
});

describe.each(dialects)('import_clients is whole or absent on %s', (dialect) => {
  let target: DatabaseTarget;
  const csvDir = tempDataDir();
  beforeAll(async () => {
    target = await createTarget(dialect);
  });
  afterAll(async () => {
    await target?.cleanup();
    csvDir.cleanup();
  });

  const counts = async (h: InMemoryHarness) => {
    const c = await sql<{ n: number }>`select count(*) as n from clients`.execute(h.services.store.db);
    const k = await sql<{ n: number }>`select count(*) as n from contacts`.execute(h.services.store.db);
    return { clients: Number(c.rows[0]!.n), contacts: Number(k.rows[0]!.n) };
  };

  it('a database failure midway leaves nothing written, and says so', async () => {
    const h = await startInMemory(testEnv(target.env));
    try {
      const csv = path.join(csvDir.dir, 'fail.csv');
      rosterCsv(csv, 1000, 3);
      // The 2,500th contact cannot be inserted: by then every client and 2,000 contacts were written.
      if (dialect === 'sqlite') {
        await sql`create trigger boom before insert on contacts when new.email = 'p1@client-833.example' begin select raise(abort, 'injected failure'); end`.execute(h.services.store.db);
      } else {
        await sql`create function boom() returns trigger language plpgsql as $$ begin if new.email = 'p1@client-833.example' then raise exception 'injected failure'; end if; return new; end $$`.execute(h.services.store.db);
        await sql`create trigger boom before insert on contacts for each row execute function boom()`.execute(h.services.store.db);
      }
      const r = await h.call('import_clients', { file_path: csv });
      expect(r.structuredContent.success).toBe(false);
      expect(r.structuredContent.error.message).toMatch(/injected failure.*Nothing was imported/);
      expect(await counts(h)).toEqual({ clients: 0, contacts: 0 });
      await sql`drop trigger boom ${sql.raw(dialect === 'postgres' ? 'on contacts' : '')}`.execute(h.services.store.db);
      const again = await h.call('import_clients', { file_path: csv });
      expect(again.structuredContent).toMatchObject({ imported: true, clients_created: 1000, contacts_created: 3000 });
      await sql`delete from timeline`.execute(h.services.store.db);
      await sql`delete from clients`.execute(h.services.store.db);
    } finally {
      await h.close();
    }
  });

  it('SIGKILL of the real binary while it writes leaves nothing written', async () => {
    const csv = path.join(csvDir.dir, 'kill.csv');
    rosterCsv(csv, 4000, 5);
    const h = await startStdio(testEnv(target.env));
    let sawWriting = false;
    const call = h.client
      .callTool({ name: 'import_clients', arguments: { file_path: csv } }, undefined, {
        timeout: 120_000,
        onprogress: (p) => {
          if (!sawWriting && /^writing/.test(p.message ?? '')) {
            sawWriting = true;
            process.kill(h.pid!, 'SIGKILL');
          }
        },
      })
      .catch((err: unknown) => err);
    const outcome = await call;
    expect(sawWriting, `import finished before it could be killed: ${JSON.stringify(outcome).slice(0, 300)}`).toBe(true);
    await h.close().catch(() => undefined);
    const after = await startInMemory(testEnv(target.env));
    try {
      expect(await counts(after)).toEqual({ clients: 0, contacts: 0 });
    } finally {
      await after.close();
    }
  });
});
