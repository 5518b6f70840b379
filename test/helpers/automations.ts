import { expect, vi } from 'vitest';
import { until } from './until.js';
import type { InMemoryHarness } from './mcp.js';

/** Two-phase: preview, then confirm with the token; returns both results. */
export async function activate(h: InMemoryHarness, args: Record<string, unknown>) {
  const preview = await h.call('automate_communications', args);
  expect(preview.structuredContent, JSON.stringify(preview.structuredContent).slice(0, 2000)).toMatchObject({ success: true, phase: 'preview' });
  const confirmed = await h.call('automate_communications', { ...args, confirmation_token: preview.structuredContent.confirmation_token });
  expect(confirmed.structuredContent, JSON.stringify(confirmed.structuredContent).slice(0, 2000)).toMatchObject({ success: true, phase: 'confirmed' });
  return { preview: preview.structuredContent, workflowId: confirmed.structuredContent.result_id as string, confirmed: confirmed.structuredContent };
}

const SWEPT = ['contract_event', 'usage_pattern', 'behavior_based'];

/**
 * Instead of sleeping a fixed time before asserting that nothing more happens: resolves once the
 * scheduler has made `passes` more trigger passes, every active sweep-evaluated workflow has been swept
 * `passes` more times, and no enrolment step nor outbox message is due and waiting. Whatever a change
 * could still set off has had its chance by then, however slow the machine.
 */
export async function settled(h: InMemoryHarness, passes = 3): Promise<void> {
  const db = h.services.store.db;
  const spy = vi.spyOn(h.services.automations.repo, 'liveWorkflows');
  const swept = new Map<string, Set<string | null>>();
  try {
    await until(
      async () => {
        const rows = await db.selectFrom('workflows').select(['workflow_id', 'last_swept_at']).where('status', '=', 'active').where('trigger_type', 'in', SWEPT).execute();
        for (const r of rows) {
          const seen = swept.get(r.workflow_id) ?? new Set();
          seen.add(r.last_swept_at);
          swept.set(r.workflow_id, seen);
        }
        const sweptEnough = rows.every((r) => swept.get(r.workflow_id)!.size > passes);
        return spy.mock.calls.length >= passes && sweptEnough;
      },
      { message: `${passes} more scheduler passes and sweeps` },
    );
    await until(
      async () => {
        const now = new Date().toISOString();
        const steps = await db.selectFrom('workflow_enrollments').select('enrollment_id').where('state', '=', 'active').where('next_run_at', '<=', now).limit(1).execute();
        const mails = await db.selectFrom('outbox').select('outbox_id').where('state', 'in', ['queued', 'sending']).where('not_before', '<=', now).limit(1).execute();
        return steps.length + mails.length === 0;
      },
      { message: 'no enrolment step or message due' },
    );
  } finally {
    spy.mockRestore();
  }
}
