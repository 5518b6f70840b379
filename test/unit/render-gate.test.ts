import { describe, expect, it } from 'vitest';
import { RenderGate } from '../../src/engine/render-gate.js';

/** A render pass the test finishes when it wants. */
function pass() {
  let finish!: () => void;
  let started = false;
  const done = new Promise<void>((r) => (finish = r));
  return {
    work: async () => {
      started = true;
      await done;
      return 'rendered';
    },
    finish: () => finish(),
    started: () => started,
  };
}

const tick = () => new Promise((r) => setImmediate(r));

describe('RenderGate', () => {
  it('runs 2 at once, queues 8, and refuses the 11th with a retryable rate_limited error', async () => {
    const gate = new RenderGate();
    const passes = Array.from({ length: 10 }, pass);
    const results = passes.map((p) => gate.run(p.work));
    await tick();
    expect(passes.map((p) => p.started())).toEqual([true, true, false, false, false, false, false, false, false, false]);
    const extra = pass();
    await expect(gate.run(extra.work)).rejects.toMatchObject({
      code: 'rate_limited',
      retryable: true,
      retryAfterMs: 5_000,
      message: expect.stringMatching(/already rendering 10 campaign previews or confirmations\. Try again in a few seconds/),
    });
    expect(extra.started()).toBe(false);
    // A finished pass hands its slot to the next in line, in order; never more than 2 at once.
    passes[0]!.finish();
    await tick();
    expect(passes.map((p) => p.started()).filter(Boolean)).toHaveLength(3);
    expect(passes[2]!.started()).toBe(true);
    expect(passes[3]!.started()).toBe(false);
    // With a place free in the queue, a new pass is accepted again.
    const late = pass();
    const lateResult = gate.run(late.work);
    for (const p of passes) p.finish();
    await tick();
    late.finish();
    expect(await Promise.all(results)).toEqual(Array(10).fill('rendered'));
    expect(await lateResult).toBe('rendered');
  });

  it('a failing pass frees its slot', async () => {
    const gate = new RenderGate(1, 0);
    await expect(gate.run(async () => { throw new Error('budget'); })).rejects.toThrow('budget');
    expect(await gate.run(async () => 'next')).toBe('next');
  });
});
