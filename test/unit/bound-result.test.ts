import { describe, expect, it } from 'vitest';
import { boundResult } from '../../src/mcp/bound-result.js';

const size = (v: unknown) => Buffer.byteLength(JSON.stringify(v));

describe('boundResult: no result above the documented size, whatever the input', () => {
  it('leaves a small result exactly as it is', () => {
    const v = { success: true, a: [1, 2, 3], s: 'x' };
    expect(boundResult(v, 1024)).toBe(v);
  });

  it('shortens the largest list and says so', () => {
    const v = { success: true, accepted: 50_000, outcomes: Array.from({ length: 50_000 }, (_, i) => ({ email: `p${i}@example.org`, status: 'accepted' })) };
    const b = boundResult(v, 64 * 1024);
    expect(size(b)).toBeLessThanOrEqual(64 * 1024);
    expect(b.accepted).toBe(50_000); // counts survive
    expect(b.outcomes.length).toBeGreaterThan(0);
    expect((b as any).result_truncated.fields).toEqual(['outcomes']);
    expect((b as any).result_truncated.note).toMatch(/outcomes kept \d+ of 50000/);
  });

  it('cuts a huge string inside a single-item list instead of dropping the item', () => {
    const v = { success: true, samples: [{ to: 'a@b.c', text: 'y'.repeat(5_000_000) }] };
    const b = boundResult(v, 32 * 1024);
    expect(size(b)).toBeLessThanOrEqual(32 * 1024);
    expect(b.samples).toHaveLength(1);
    expect(b.samples[0]!.to).toBe('a@b.c');
    expect(b.samples[0]!.text.endsWith('… [cut]')).toBe(true);
  });

  it('handles nested lists and many fields', () => {
    const v = { success: true, pages: Array.from({ length: 50 }, (_, i) => ({ id: i, rows: Array.from({ length: 2_000 }, (_, j) => `row ${j} of page ${i}`) })) };
    const b = boundResult(v, 100 * 1024);
    expect(size(b)).toBeLessThanOrEqual(100 * 1024);
  });
});
