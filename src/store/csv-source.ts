import fs from 'node:fs';
import path from 'node:path';
import { parse } from 'csv-parse';
import { invalidInput, ToolError } from '../result.js';

/**
 * Reading a CSV file the tool was pointed at, on the server's disk. The path comes from a model, so:
 * only a regular file whose real path (symlinks resolved) ends in .csv, opened without following a
 * link swapped in meanwhile, never a device or FIFO, bounded in size, rows, columns and row length,
 * text only (no NUL bytes), strictly UTF-8. Errors say where (line, row, column) and what, never what
 * the file contains: the file might not be the CSV it claims to be.
 */

export const CSV_LIMITS = {
  maxBytes: 64 * 1024 * 1024,
  maxRows: 100_000,
  maxColumns: 200,
  maxRowBytes: 1024 * 1024,
} as const;

export interface CsvFile {
  /** The real path (symlinks resolved). */
  path: string;
  fd: number;
  size: number;
  close(): void;
}

const refuse = (message: string) => invalidInput(message, { fields: [{ field: 'file_path', problem: message }] });

export function openCsvFile(given: string): CsvFile {
  if (!/\.csv$/i.test(given)) throw refuse(`file_path must name a .csv file (got ${given}).`);
  let real: string;
  try {
    real = fs.realpathSync(given);
  } catch {
    throw refuse(`file_path ${given} is not a readable file on the server machine. Give the absolute path of a CSV file.`);
  }
  // A .csv link to ~/.env is not a CSV file.
  if (!/\.csv$/i.test(real)) throw refuse(`file_path ${given} is a link to ${path.basename(real)}, which is not a .csv file.`);
  let fd: number;
  try {
    // O_NONBLOCK: opening a FIFO must not hang; O_NOFOLLOW: a link swapped in after realpath is refused.
    fd = fs.openSync(real, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK | fs.constants.O_NOFOLLOW);
  } catch {
    throw refuse(`file_path ${given} cannot be opened for reading on the server machine.`);
  }
  const close = () => {
    try {
      fs.closeSync(fd);
    } catch {
      // already closed
    }
  };
  try {
    const stat = fs.fstatSync(fd);
    if (!stat.isFile()) throw refuse(`file_path ${given} is not a regular file (a directory, device or pipe); give a CSV file.`);
    if (stat.size === 0) throw refuse(`file_path ${given} is empty: the CSV needs a header row and one row per contact.`);
    if (stat.size > CSV_LIMITS.maxBytes) {
      throw refuse(`file_path ${given} is ${stat.size} bytes, over the ${CSV_LIMITS.maxBytes}-byte limit (64 MiB): split it into several files.`);
    }
    const head = Buffer.alloc(Math.min(8192, stat.size));
    fs.readSync(fd, head, 0, head.length, 0);
    if (head.includes(0)) throw refuse(`file_path ${given} is a binary file, not CSV text.`);
    return { path: real, fd, size: stat.size, close };
  } catch (err) {
    close();
    throw err;
  }
}

export type CsvRow =
  | { row: number; record: Record<string, string> }
  /** A row whose cells cannot be read as text: each problem names the column. */
  | { row: number; problems: Array<{ field: string; problem: string }> };

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function decode(cell: Buffer): string | undefined {
  try {
    return utf8.decode(cell);
  } catch {
    return undefined;
  }
}

/** What a csv-parse error means, in words, without quoting the file. */
function describeParseError(err: { code?: string; message?: string; lines?: number; index?: number; record?: unknown[] }, header: string[]): string {
  const column = typeof err.index === 'number' && header[err.index] ? `, column ${header[err.index]}` : '';
  const where = `line ${err.lines ?? '?'}${column}`;
  switch (err.code) {
    case 'CSV_QUOTE_NOT_CLOSED':
      return `${where}: a quoted field is never closed (a " without its closing ")`;
    case 'CSV_RECORD_INCONSISTENT_COLUMNS':
    case 'CSV_RECORD_INCONSISTENT_FIELDS_LENGTH':
    case 'CSV_RECORD_DONT_MATCH_COLUMNS_LENGTH':
    {
      // The header may not have reached us yet when the parser stops; csv-parse's message has the count (digits only are taken).
      const expected = header.length || Number(/(?:expect|length is) (\d+)/.exec(err.message ?? '')?.[1] ?? 0);
      const got = Array.isArray(err.record) ? `${err.record.length} fields` : 'a different number of fields';
      return `line ${err.lines ?? '?'}: has ${got}${expected ? `, the header has ${expected}` : ', unlike the header'}`;
    }
    case 'CSV_MAX_RECORD_SIZE':
      return `${where}: a row is longer than ${CSV_LIMITS.maxRowBytes} bytes`;
    case 'CSV_INVALID_CLOSING_QUOTE':
    case 'INVALID_OPENING_QUOTE':
      return `${where}: a quote (") in an unexpected place; quote the whole field and double the quotes inside it ("Acme ""Best"" Corp")`;
    default:
      return `${where}: unreadable CSV (${err.code ?? 'parse error'})`;
  }
}

/**
 * The rows of the file: the header (row 1) as lower-case names, then each record as { column: trimmed text }.
 * Quotes inside an unquoted field are kept as written (Acme "Best" Corp), as spreadsheet exports produce them.
 */
export async function* readCsvRows(file: CsvFile, required: readonly string[] = []): AsyncGenerator<CsvRow> {
  const parser = fs.createReadStream('', { fd: file.fd, start: 0, end: file.size - 1, autoClose: false }).pipe(
    parse({ encoding: null, bom: false, relax_quotes: true, skip_empty_lines: true, relax_column_count: false, max_record_size: CSV_LIMITS.maxRowBytes }),
  );
  let header: string[] = [];
  let row = 0;
  try {
    for await (const cells of parser as AsyncIterable<Buffer[]>) {
      row += 1;
      if (row === 1) {
        header = cells.map((c, i) => {
          const name = decode(c);
          if (name === undefined) throw refuse(`the header (row 1) of ${file.path} is not UTF-8 text: save the file as UTF-8 (CSV UTF-8).`);
          return (i === 0 ? name.replace(/^\uFEFF/, '') : name).trim().toLowerCase();
        });
        if (header.length > CSV_LIMITS.maxColumns) throw refuse(`the CSV has ${header.length} columns, over the limit of ${CSV_LIMITS.maxColumns}.`);
        const dup = header.find((h, i) => h !== '' && header.indexOf(h) !== i);
        if (dup !== undefined) throw refuse(`the CSV header names the column ${dup} twice; rename or remove one.`);
        const missing = required.filter((c) => !header.includes(c));
        if (missing.length) throw refuse(`the CSV header lacks ${missing.join(', ')}: it needs at least ${required.join(', ')} (see the README).`);
        continue;
      }
      if (row - 1 > CSV_LIMITS.maxRows) throw refuse(`the CSV has more than ${CSV_LIMITS.maxRows} rows: split it into several files.`);
      const problems: Array<{ field: string; problem: string }> = [];
      const entries: Array<[string, string]> = [];
      cells.forEach((cell, i) => {
        const name = header[i]!;
        if (name === '') return;
        const text = decode(cell);
        if (text === undefined) problems.push({ field: name, problem: 'is not valid UTF-8 text: save the file as UTF-8 (CSV UTF-8)' });
        else if (text.includes('\u0000')) problems.push({ field: name, problem: 'contains a NUL character (\\u0000)' });
        else entries.push([name, text.trim()]);
      });
      // fromEntries defines own properties: a column named "custom.__proto__" stays a key, to be refused by name.
      yield problems.length ? { row, problems } : { row, record: Object.fromEntries(entries) };
    }
  } catch (err) {
    if (err instanceof ToolError) throw err;
    throw refuse(`file_path ${file.path} is not valid CSV: ${describeParseError(err as Parameters<typeof describeParseError>[0], header)}.`);
  }
  if (row === 0) throw refuse(`file_path ${file.path} has no header row.`);
}
