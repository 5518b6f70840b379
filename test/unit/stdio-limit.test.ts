import { describe, expect, it } from 'vitest';
import { BoundedLineReader, identifyRequest, type OversizedLine } from '../../src/transports/stdio-limit.js';

async function feed(limit: number, chunks: string[]): Promise<{ lines: string[]; oversized: OversizedLine[] }> {
  const oversized: OversizedLine[] = [];
  const reader = new BoundedLineReader(limit, (l) => oversized.push(l));
  const out: Buffer[] = [];
  reader.on('data', (d: Buffer) => out.push(d));
  const ended = new Promise((resolve) => reader.on('end', resolve));
  for (const c of chunks) reader.write(Buffer.from(c));
  reader.end();
  await ended;
  return { lines: out.map(String), oversized };
}

describe('BoundedLineReader', () => {
  it('passes lines within the limit whole, one per chunk, however they arrive', async () => {
    const r = await feed(10, ['{"a"', ':1}\n{"b":2}\n{"c"', ':3}\n']);
    expect(r.lines).toEqual(['{"a":1}\n', '{"b":2}\n', '{"c":3}\n']);
    expect(r.oversized).toEqual([]);
  });

  it('drops a line over the limit, reports its size, head and tail, and goes on with the next line', async () => {
    const big = `{"method":"tools/call","params":{"x":"${'y'.repeat(5000)}"},"jsonrpc":"2.0","id":7}`;
    const chunks = [big.slice(0, 100), big.slice(100, 3000), `${big.slice(3000)}\n{"ok":1}\n`];
    const r = await feed(1000, chunks);
    expect(r.lines).toEqual(['{"ok":1}\n']);
    expect(r.oversized).toHaveLength(1);
    expect(r.oversized[0]!.bytes).toBe(Buffer.byteLength(big));
    expect(identifyRequest(r.oversized[0]!)).toEqual({ method: 'tools/call', id: 7 });
  });
});

describe('identifyRequest', () => {
  const line = (text: string): OversizedLine => ({ bytes: text.length, head: text.slice(0, 512), tail: text.slice(-512) });
  it('finds the id at the end (SDK order) or at the start', () => {
    expect(identifyRequest(line(`{"method":"resources/read","params":{"uri":"${'u'.repeat(2000)}"},"jsonrpc":"2.0","id":"req-1"}`))).toEqual({ method: 'resources/read', id: 'req-1' });
    expect(identifyRequest(line(`{"jsonrpc":"2.0","id":12,"method":"tools/call","params":{"a":"${'u'.repeat(2000)}"}}`))).toEqual({ method: 'tools/call', id: 12 });
  });
  it('never takes a nested "method" or "id" for the request\'s own', () => {
    expect(identifyRequest(line(`{"params":{"method":"tools/call","x":"${'u'.repeat(2000)}","id":5}}`))).toEqual({ method: undefined, id: undefined });
    expect(identifyRequest(line(`{"method":"notifications/message","params":{"data":"${'u'.repeat(2000)}"}}`))).toEqual({ method: 'notifications/message', id: undefined });
  });
});
