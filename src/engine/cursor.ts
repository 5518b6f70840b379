import { invalidInput } from '../result.js';

/** Keyset cursors of the list tools: the (created_at, id) of a page's last row, opaque to the caller. */

export function encodeCursor(at: string, id: string): string {
  return Buffer.from(JSON.stringify([at, id])).toString('base64url');
}

export function decodeCursor(cursor: string, tool: string): [string, string] {
  try {
    const v = JSON.parse(Buffer.from(cursor, 'base64url').toString()) as unknown;
    if (Array.isArray(v) && v.length === 2 && typeof v[0] === 'string' && typeof v[1] === 'string') return [v[0], v[1]];
  } catch {
    // fall through
  }
  throw invalidInput(`cursor is not one this server returned. Call ${tool} without a cursor to start again.`, { field: 'cursor' });
}
