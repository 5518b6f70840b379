import { describe, expect, it } from 'vitest';
import type { WorkflowDefinition } from '../../src/engine/automations/definition.js';
import { MAX_CHAIN_NODES, worstCase, type Candidate } from '../../src/engine/automations/worst-case.js';

/** The worst-case walk stays bounded: by the chain depth, and by the number of workflows it visits. */

const wf = (id: string, event: string, steps: unknown[]): Candidate => ({
  workflow_id: id,
  def: { name: id, trigger: { type: 'event_based', event }, steps, audience: {} } as unknown as WorkflowDefinition,
});
const track = (name: string) => ({ type: 'track_event', event_name: name, destinations: ['intercom'] });
const limits = { maxChainDepth: 3, maxActionsPerWorkflowPerHour: 200, maxActionsPerHour: 1_000, clientContacts: async () => 1 };

describe('worst case per firing', () => {
  it('a fan-out of 30-step workflows: 60 listeners of one event are followed up to the node cap, said to be truncated, and over the budgets', async () => {
    const root = wf('root', 'x', Array.from({ length: 30 }, () => track('y')));
    const active = Array.from({ length: 60 }, (_, i) => wf(`l${i}`, 'y', Array.from({ length: 30 }, () => track('y'))));
    const started = Date.now();
    const w = await worstCase({ root, rootContacts: 1, active, ...limits });
    expect(Date.now() - started).toBeLessThan(2_000);
    expect(w.truncated).toBe(true);
    expect(w.chained.length).toBeLessThanOrEqual(MAX_CHAIN_NODES);
    expect(w.per_firing).toEqual({ contacts_per_firing: 1, provider_calls: 30, messages: 0, actions: 30 });
    // Each listener fires 30 times (once per "y" the root tracks): 900 calls each, over its hourly budget.
    expect(w.chained[0]).toMatchObject({ firings: 30, provider_calls: 900, depth: 1 });
    expect(w.warnings.some((x) => /that workflow would pause itself \(runaway\)/.test(x))).toBe(true);
    expect(w.warnings.some((x) => /AUTOMATION_MAX_ACTIONS_PER_HOUR allows 1000/.test(x))).toBe(true);
    expect(w.warnings.some((x) => /followed through 50 workflows only/.test(x))).toBe(true);
  });

  it('a loop A → B → A stops at the chain depth; a workflow is never fired by its own events', async () => {
    const a = wf('a', 'x', [track('y')]);
    const b = wf('b', 'y', [track('x'), track('y')]);
    const w = await worstCase({ root: a, rootContacts: 1, active: [b], ...limits, maxChainDepth: 10 });
    // a(0) → b(1) → a(2) → b(3) … → (9): b fires at depths 1,3,5,7,9 and a again at 2,4,6,8, once each (b's own "y" never re-fires b).
    expect(w.chained.find((c) => c.workflow_id === 'b')).toMatchObject({ firings: 5, depth: 1 });
    expect(w.chained.find((c) => c.workflow_id === 'a')).toMatchObject({ firings: 4, depth: 2 });
    const shallow = await worstCase({ root: a, rootContacts: 1, active: [b], ...limits, maxChainDepth: 1 });
    expect(shallow.chained).toEqual([]);
    expect(shallow.total_per_firing).toEqual({ provider_calls: 1, messages: 0, actions: 1 });
  });
});
