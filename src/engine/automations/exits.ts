import type { Store } from '../../store/index.js';
import type { WorkflowDefinition } from './definition.js';
import type { EnrollmentRow } from './repository.js';

/** The timeline entry of a subject leaving a workflow because it reached a goal (best effort). */
export async function recordExit(store: Store, def: WorkflowDefinition, e: EnrollmentRow, goal: string): Promise<void> {
  await store.timeline
    .append(store.db, {
      client_id: e.client_id,
      contact_id: e.contact_id,
      type: 'automation',
      channel: 'automation',
      actor: `automation:${e.workflow_id}`,
      summary: `Left automation "${def.name}": goal reached (${goal})`,
      outcome: 'success',
      data: { workflow_id: e.workflow_id, workflow_name: def.name, enrollment_id: e.enrollment_id, goal },
    })
    .catch(() => undefined);
}
