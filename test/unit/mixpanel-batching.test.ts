import { describe, expect, it } from 'vitest';
import { deriveInsertId, packBatches, type QueuedEvent } from '../../src/providers/mixpanel/service.js';

const ev = (i: number, size = 10): QueuedEvent => ({ event: 'e', properties: { time: 1, distinct_id: `u${i}`, $insert_id: `id${i}`, pad: 'x'.repeat(size) } });

describe('Mixpanel batching', () => {
  it('packs at most 2,000 events a batch', () => {
    const batches = packBatches(Array.from({ length: 4500 }, (_, i) => ev(i)));
    expect(batches.map((b) => b.length)).toEqual([2000, 2000, 500]);
  });
  it('keeps each batch under the byte limit', () => {
    const batches = packBatches(Array.from({ length: 30 }, (_, i) => ev(i, 1000)), 2000, 10_000);
    for (const b of batches) expect(Buffer.byteLength(JSON.stringify(b))).toBeLessThanOrEqual(10_000);
    expect(batches.flat()).toHaveLength(30);
  });
  it('derives a stable, valid $insert_id from the event content', () => {
    const a = deriveInsertId({ event: 'x', distinct_id: 'u', time: 5, properties: { b: 1, a: 2 } });
    expect(a).toBe(deriveInsertId({ event: 'x', distinct_id: 'u', time: 5, properties: { a: 2, b: 1 } }));
    expect(a).not.toBe(deriveInsertId({ event: 'x', distinct_id: 'u', time: 6, properties: { a: 2, b: 1 } }));
    expect(a).toMatch(/^[A-Za-z0-9-]{1,36}$/);
  });
});
