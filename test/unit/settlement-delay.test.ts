import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { OutboxRepository, OutboxRow } from '../../src/engine/delivery/outbox.js';
import { SETTLE_DELAY_MS, SettlementWriter, type SettlementPort } from '../../src/engine/delivery/settlement.js';
import type { TimelineRepository } from '../../src/store/timeline.js';

/**
 * At 100 messages a second the pacer lets a group go about every 100 ms (rate-budget.ts) and its
 * answers come some 20 ms later: they must still be waiting when the next group's admission comes, so
 * they ride in its transaction instead of costing a commit of their own.
 */
describe('SettlementWriter: how long settled rows wait for a transaction to ride in', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  function writer() {
    // Nothing here may reach the database: a write of its own would be the failure.
    const untouchable = new Proxy({}, { get: (_t, key) => { throw new Error(`the database was used (${String(key)})`); } });
    const port: SettlementPort = { timelineEntry: () => ({}) as never, followUp: () => undefined };
    const w = new SettlementWriter(untouchable as OutboxRepository, untouchable as TimelineRepository, port, pino({ level: 'silent' }));
    const flushed = vi.spyOn(w, 'flush').mockResolvedValue(undefined);
    return { w, flushed };
  }
  const settleOne = (w: SettlementWriter) => w.settle({ outbox_id: 1 } as OutboxRow, { state: 'sent', receipt: {} as never });

  it('answers that came 20 ms after their group are still waiting when the next group is admitted 100 ms after it', async () => {
    const { w, flushed } = writer();
    await vi.advanceTimersByTimeAsync(20); // the answer arrives
    settleOne(w);
    await vi.advanceTimersByTimeAsync(80); // the next group is due
    expect(flushed).not.toHaveBeenCalled();
    expect(w.board()).toBeDefined();
  });

  it('without a transaction to ride in, they are written on their own after the wait', async () => {
    const { w, flushed } = writer();
    settleOne(w);
    await vi.advanceTimersByTimeAsync(SETTLE_DELAY_MS);
    expect(flushed).toHaveBeenCalledTimes(1);
  });
});
