import type { Kysely } from 'kysely';

/**
 * Automations: workflows (one row each, every saved definition kept as a version), enrolments (a
 * subject going through a workflow's steps, one per trigger occurrence: `occurrence_key` is unique),
 * step runs (the durable record that makes every step happen once), per-workflow marks (re-entry
 * gates, occurrences already seen, the last side of a usage threshold), and the scheduler's shared
 * state (the trigger lease and the customer-event cursor).
 *
 * Confirmation tokens become one table for every two-phase tool: campaign_previews is renamed and its
 * campaign-specific columns generalised (label, result_id, kind).
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('workflows')
    .addColumn('workflow_id', 'text', (c) => c.primaryKey())
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('description', 'text')
    /** draft | active | paused | archived */
    .addColumn('status', 'text', (c) => c.notNull())
    .addColumn('version', 'integer', (c) => c.notNull())
    .addColumn('trigger_type', 'text', (c) => c.notNull())
    .addColumn('created_by', 'text')
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .addColumn('activated_at', 'text')
    .addColumn('paused_at', 'text')
    .addColumn('archived_at', 'text')
    // Customer events up to this id happened before the workflow was (re)activated: they never trigger it.
    .addColumn('event_floor', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('next_fire_at', 'text')
    .addColumn('last_fired_at', 'text')
    .addColumn('last_swept_at', 'text')
    .execute();
  await db.schema.createIndex('workflows_status_idx').on('workflows').columns(['status', 'trigger_type']).execute();

  await db.schema
    .createTable('workflow_versions')
    .addColumn('workflow_id', 'text', (c) => c.notNull())
    .addColumn('version', 'integer', (c) => c.notNull())
    .addColumn('definition', 'text', (c) => c.notNull())
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('workflow_versions_pk', ['workflow_id', 'version'])
    .execute();

  await db.schema
    .createTable('workflow_enrollments')
    .addColumn('enrollment_id', 'text', (c) => c.primaryKey())
    .addColumn('workflow_id', 'text', (c) => c.notNull())
    .addColumn('version', 'integer', (c) => c.notNull())
    .addColumn('occurrence_key', 'text', (c) => c.notNull().unique())
    .addColumn('subject_kind', 'text', (c) => c.notNull())
    .addColumn('client_id', 'text', (c) => c.notNull())
    .addColumn('contact_id', 'text')
    /** active | completed | exited (goal reached) | cancelled */
    .addColumn('state', 'text', (c) => c.notNull())
    .addColumn('step_index', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('next_run_at', 'text', (c) => c.notNull())
    .addColumn('lease_owner', 'text')
    .addColumn('lease_until', 'text')
    .addColumn('depth', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('context', 'text', (c) => c.notNull().defaultTo('{}'))
    .addColumn('start_event_id', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('enrolled_at', 'text', (c) => c.notNull())
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .addColumn('finished_at', 'text')
    .addColumn('exit_reason', 'text')
    .execute();
  await db.schema.createIndex('workflow_enrollments_due_idx').on('workflow_enrollments').columns(['state', 'next_run_at']).execute();
  await db.schema.createIndex('workflow_enrollments_workflow_idx').on('workflow_enrollments').columns(['workflow_id', 'state', 'step_index']).execute();
  await db.schema.createIndex('workflow_enrollments_client_idx').on('workflow_enrollments').columns(['client_id', 'state']).execute();

  await db.schema
    .createTable('workflow_step_runs')
    .addColumn('run_key', 'text', (c) => c.primaryKey())
    .addColumn('workflow_id', 'text', (c) => c.notNull())
    .addColumn('enrollment_id', 'text', (c) => c.notNull())
    .addColumn('step_index', 'integer', (c) => c.notNull())
    .addColumn('action_type', 'text', (c) => c.notNull())
    /** started | retry | done | failed | unknown | skipped */
    .addColumn('state', 'text', (c) => c.notNull())
    .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(1))
    .addColumn('owner', 'text')
    .addColumn('started_at', 'text', (c) => c.notNull())
    .addColumn('finished_at', 'text')
    .addColumn('error_code', 'text')
    .addColumn('error_message', 'text')
    .addColumn('detail', 'text', (c) => c.notNull().defaultTo('{}'))
    .execute();
  await db.schema.createIndex('workflow_step_runs_workflow_idx').on('workflow_step_runs').columns(['workflow_id', 'state', 'step_index']).execute();

  await db.schema
    .createTable('workflow_marks')
    .addColumn('workflow_id', 'text', (c) => c.notNull())
    .addColumn('mark', 'text', (c) => c.notNull())
    .addColumn('at', 'text', (c) => c.notNull())
    .addColumn('value', 'text')
    .addPrimaryKeyConstraint('workflow_marks_pk', ['workflow_id', 'mark'])
    .execute();

  await db.schema
    .createTable('automation_state')
    .addColumn('name', 'text', (c) => c.primaryKey())
    .addColumn('owner', 'text')
    .addColumn('lease_until', 'text')
    .addColumn('position', 'integer', (c) => c.notNull().defaultTo(0))
    .execute();

  // Inactivity triggers look for recent activity by time.
  await db.schema.createIndex('customer_events_occurred_idx').on('customer_events').column('occurred_at').execute();

  await db.schema.alterTable('campaign_previews').renameTo('confirmation_tokens').execute();
  await db.schema.alterTable('confirmation_tokens').renameColumn('campaign_name', 'label').execute();
  await db.schema.alterTable('confirmation_tokens').renameColumn('campaign_id', 'result_id').execute();
  await db.schema.alterTable('confirmation_tokens').addColumn('kind', 'text', (c) => c.notNull().defaultTo('campaign')).execute();
}

export async function down(): Promise<void> {
  throw new Error('0007_automations cannot be reverted');
}
