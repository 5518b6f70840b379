import { randomBytes } from 'node:crypto';
import type { Kysely, Selectable } from 'kysely';
import type { Database, WorkflowEnrollmentsTable, WorkflowsTable } from '../../store/schema.js';
import { registerDefinitionSecrets, type Reentry, type WorkflowDefinition } from './definition.js';
import { occurrenceKey, subjectKey, type Subject } from './triggers.js';
import { LRUCache } from 'lru-cache';

/**
 * The automations' tables: workflows and their immutable versions, enrolments (leased to one process
 * at a time while a step runs), marks (re-entry gates and occurrences already seen), and the shared
 * scheduler state (the trigger lease and the event cursor). Every write that must happen once is a
 * conditional or unique write, so several processes on one database can run it side by side.
 */

export type WorkflowRow = Selectable<WorkflowsTable>;
export type EnrollmentRow = Selectable<WorkflowEnrollmentsTable>;

/** One subject entering on one occurrence. */
export interface Candidate extends Subject {
  /** e.g. `ev:123`, `at:2026-12-01T09:00:00.000Z`, `renewal:2027-01-31`, `run:<id>`. */
  occurrence: string;
  context: Record<string, unknown>;
  depth: number;
  /** Goal events must come after this customer event. */
  start_event_id: number;
}

const iso = (ms: number) => new Date(ms).toISOString();
const CHUNK = 400;
/** Workflow versions whose parsed definitions are kept in memory (README: Automations, Behaviour). */
export const DEFINITION_CACHE_SIZE = 256;

export function newId(prefix: string): string {
  return `${prefix}_${randomBytes(8).toString('hex')}`;
}

export class AutomationRepository {
  /** Versions never change, so they are cached; the most recently used DEFINITION_CACHE_SIZE of them. */
  private readonly definitions = new LRUCache<string, WorkflowDefinition>({ max: DEFINITION_CACHE_SIZE });

  constructor(
    readonly db: Kysely<Database>,
    readonly dialect: 'sqlite' | 'postgres',
  ) {}

  async workflow(id: string, db: Kysely<Database> = this.db): Promise<WorkflowRow | undefined> {
    return db.selectFrom('workflows').selectAll().where('workflow_id', '=', id).executeTakeFirst();
  }

  /** A version's definition (versions never change, so they are cached, up to DEFINITION_CACHE_SIZE). */
  async definition(workflowId: string, version: number): Promise<WorkflowDefinition> {
    const key = `${workflowId}@${version}`;
    let def = this.definitions.get(key);
    if (!def) {
      const row = await this.db.selectFrom('workflow_versions').select('definition').where('workflow_id', '=', workflowId).where('version', '=', version).executeTakeFirstOrThrow();
      def = JSON.parse(row.definition) as WorkflowDefinition;
      registerDefinitionSecrets(def); // saved by another process, perhaps: its webhook URLs are scrubbed here too
      this.definitions.set(key, def);
    }
    return def;
  }

  /**
   * Makes every stored webhook URL's credential parts known to the scrubber (at start-up: before any
   * timeline entry, error or log line could carry one).
   */
  async registerStoredSecrets(): Promise<void> {
    const rows = await this.db.selectFrom('workflow_versions').select('definition').where('definition', 'like', '%trigger_webhook%').execute();
    for (const row of rows) registerDefinitionSecrets(JSON.parse(row.definition) as WorkflowDefinition);
  }

  /** Workflows whose triggers or goals are live: active ones, and any with enrolments still in progress. */
  async liveWorkflows(): Promise<WorkflowRow[]> {
    return this.db
      .selectFrom('workflows')
      .selectAll()
      .where((eb) =>
        eb.or([
          eb('status', '=', 'active'),
          eb.and([
            eb('status', '!=', 'archived'),
            eb.exists(eb.selectFrom('workflow_enrollments as e').select('e.enrollment_id').whereRef('e.workflow_id', '=', 'workflows.workflow_id').where('e.state', '=', 'active')),
          ]),
        ]),
      )
      .orderBy('workflow_id')
      .execute();
  }

  async maxEventId(db: Kysely<Database> = this.db): Promise<number> {
    const r = await db.selectFrom('customer_events').select((eb) => eb.fn.max('event_id').as('m')).executeTakeFirst();
    return Number(r?.m ?? 0);
  }

  /**
   * Enrols candidates, in transactions of a few hundred: re-entry first (a gate mark per subject, taken
   * with one conditional write), then one enrolment per occurrence (unique key). Returns the ids
   * enrolled. `gate: false` (run_workflow) enrols whoever was chosen, once per run.
   */
  async enrol(wf: { workflow_id: string; version: number; reentry: Reentry; delay_minutes: number }, candidates: Candidate[], opts: { gate?: boolean; now?: number } = {}): Promise<string[]> {
    const now = opts.now ?? Date.now();
    const enrolled: string[] = [];
    for (let i = 0; i < candidates.length; i += CHUNK) {
      const chunk = candidates.slice(i, i + CHUNK);
      enrolled.push(...(await this.db.transaction().execute((trx) => this.enrolChunk(trx, wf, chunk, opts.gate !== false, now))));
      await new Promise((r) => setImmediate(r)); // let other work in between chunks (SQLite answers synchronously)
    }
    return enrolled;
  }

  /** The same, inside the caller's transaction (activation enrols with the workflow it activates). */
  async enrolChunk(
    trx: Kysely<Database>,
    wf: { workflow_id: string; version: number; reentry: Reentry; delay_minutes: number },
    chunk: Candidate[],
    gate: boolean,
    now: number,
  ): Promise<string[]> {
    let allowed = chunk;
    if (gate && wf.reentry.mode !== 'every_occurrence') {
      // One candidate per subject and gate: the gate decides for the subject, not per occurrence.
      const bySubject = new Map<string, Candidate>();
      for (const c of chunk) if (!bySubject.has(subjectKey(c))) bySubject.set(subjectKey(c), c);
      const rows = [...bySubject.keys()].map((k) => ({ workflow_id: wf.workflow_id, mark: `gate:${k}`, at: iso(now), value: null }));
      if (!rows.length) return [];
      const cutoff = wf.reentry.mode === 'after_days' ? iso(now - wf.reentry.days * 86_400_000) : undefined;
      const passed = await trx
        .insertInto('workflow_marks')
        .values(rows)
        .onConflict((oc) => {
          const target = oc.columns(['workflow_id', 'mark']);
          return cutoff ? target.doUpdateSet({ at: iso(now) }).where('workflow_marks.at', '<=', cutoff) : target.doNothing();
        })
        .returning('mark')
        .execute();
      const open = new Set(passed.map((p) => p.mark.slice('gate:'.length)));
      allowed = [...bySubject.values()].filter((c) => open.has(subjectKey(c)));
    }
    if (!allowed.length) return [];
    const at = iso(now);
    const due = iso(now + wf.delay_minutes * 60_000);
    const inserted = await trx
      .insertInto('workflow_enrollments')
      .values(
        allowed.map((c) => ({
          enrollment_id: newId('en'),
          workflow_id: wf.workflow_id,
          version: wf.version,
          occurrence_key: occurrenceKey(wf.workflow_id, c.occurrence, c),
          subject_kind: c.kind,
          client_id: c.client_id,
          contact_id: c.contact_id,
          state: 'active',
          step_index: 0,
          next_run_at: due,
          lease_owner: null,
          lease_until: null,
          depth: c.depth,
          context: JSON.stringify(c.context),
          start_event_id: c.start_event_id,
          enrolled_at: at,
          updated_at: at,
          finished_at: null,
          exit_reason: null,
        })),
      )
      .onConflict((oc) => oc.column('occurrence_key').doNothing())
      .returning('enrollment_id')
      .execute();
    return inserted.map((r) => r.enrollment_id);
  }

  /** Leases up to `limit` enrolments whose next step is due (workflows paused or archived wait). */
  async claimDue(owner: string, limit: number, leaseMs: number, now = Date.now()): Promise<EnrollmentRow[]> {
    if (limit <= 0) return [];
    const nowIso = iso(now);
    let due = this.db
      .selectFrom('workflow_enrollments')
      .select('enrollment_id')
      .where('state', '=', 'active')
      .where('next_run_at', '<=', nowIso)
      .where((eb) => eb.or([eb('lease_until', 'is', null), eb('lease_until', '<', nowIso)]))
      .where('workflow_id', 'in', (eb) => eb.selectFrom('workflows').select('workflow_id').where('status', 'in', ['active', 'draft']))
      .orderBy('next_run_at')
      .orderBy('enrollment_id')
      .limit(limit);
    if (this.dialect === 'postgres') due = due.forUpdate().skipLocked();
    return this.db
      .updateTable('workflow_enrollments')
      .set({ lease_owner: owner, lease_until: iso(now + leaseMs) })
      .where('enrollment_id', 'in', due)
      .where((eb) => eb.or([eb('lease_until', 'is', null), eb('lease_until', '<', nowIso)]))
      .returningAll()
      .execute();
  }

  async nextDueAt(): Promise<number | undefined> {
    const r = await this.db
      .selectFrom('workflow_enrollments')
      .select((eb) => eb.fn.min('next_run_at').as('next'))
      .where('state', '=', 'active')
      .where('workflow_id', 'in', (eb) => eb.selectFrom('workflows').select('workflow_id').where('status', 'in', ['active', 'draft']))
      .executeTakeFirst();
    return r?.next ? Date.parse(String(r.next)) : undefined;
  }

  async renewLeases(owner: string, leaseMs: number, now = Date.now()): Promise<void> {
    await this.db.updateTable('workflow_enrollments').set({ lease_until: iso(now + leaseMs) }).where('lease_owner', '=', owner).where('state', '=', 'active').execute();
  }

  /** Gives the enrolment back (due again at `nextRunAt` when given). */
  async release(e: EnrollmentRow, owner: string, nextRunAt?: number): Promise<void> {
    await this.db
      .updateTable('workflow_enrollments')
      .set({ lease_owner: null, lease_until: null, ...(nextRunAt !== undefined ? { next_run_at: iso(nextRunAt), updated_at: iso(Date.now()) } : {}) })
      .where('enrollment_id', '=', e.enrollment_id)
      .where('lease_owner', '=', owner)
      .execute();
  }

  async releaseAll(owner: string): Promise<void> {
    await this.db.updateTable('workflow_enrollments').set({ lease_owner: null, lease_until: null }).where('lease_owner', '=', owner).execute();
  }

  /** Moves past step `from` — only if this holder still has it there (a stale holder moves nothing). */
  async advance(db: Kysely<Database>, e: EnrollmentRow, owner: string, from: number, nextRunAt: number, now = Date.now()): Promise<boolean> {
    const r = await db
      .updateTable('workflow_enrollments')
      .set({ step_index: from + 1, next_run_at: iso(nextRunAt), updated_at: iso(now) })
      .where('enrollment_id', '=', e.enrollment_id)
      .where('step_index', '=', from)
      .where('state', '=', 'active')
      .where('lease_owner', '=', owner)
      .executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  }

  /** Ends an active enrolment (by its holder, or by anyone when `owner` is undefined). */
  async finish(db: Kysely<Database>, enrollmentId: string, state: 'completed' | 'exited' | 'cancelled', reason: string | null, owner?: string, now = Date.now()): Promise<boolean> {
    let q = db
      .updateTable('workflow_enrollments')
      .set({ state, exit_reason: reason, finished_at: iso(now), updated_at: iso(now), lease_owner: null, lease_until: null })
      .where('enrollment_id', '=', enrollmentId)
      .where('state', '=', 'active');
    if (owner) q = q.where('lease_owner', '=', owner);
    const r = await q.executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  }

  async activeEnrolmentsOf(workflowId: string, clientIds: string[]): Promise<EnrollmentRow[]> {
    if (!clientIds.length) return [];
    return this.db.selectFrom('workflow_enrollments').selectAll().where('workflow_id', '=', workflowId).where('state', '=', 'active').where('client_id', 'in', clientIds).execute();
  }

  /** Inserts marks that are not there yet; returns the ones this call inserted. */
  async addMarks(db: Kysely<Database>, workflowId: string, marks: Array<{ mark: string; value?: string | null }>, now = Date.now()): Promise<Set<string>> {
    const out = new Set<string>();
    for (let i = 0; i < marks.length; i += CHUNK) {
      const rows = marks.slice(i, i + CHUNK).map((m) => ({ workflow_id: workflowId, mark: m.mark, at: iso(now), value: m.value ?? null }));
      const r = await db.insertInto('workflow_marks').values(rows).onConflict((oc) => oc.columns(['workflow_id', 'mark']).doNothing()).returning('mark').execute();
      for (const x of r) out.add(x.mark);
    }
    return out;
  }

  /** Marks with this prefix (e.g. `side:`), by mark. */
  async marks(workflowId: string, prefix: string, db: Kysely<Database> = this.db): Promise<Map<string, string | null>> {
    const rows = await db
      .selectFrom('workflow_marks')
      .select(['mark', 'value'])
      .where('workflow_id', '=', workflowId)
      .where('mark', '>=', prefix)
      .where('mark', '<', `${prefix}\uffff`)
      .execute();
    return new Map(rows.map((r) => [r.mark, r.value]));
  }

  /** Changes a mark's value only if it still has `from`: the one caller that wins acts on the change. */
  async swapMark(db: Kysely<Database>, workflowId: string, mark: string, from: string | null, to: string, now = Date.now()): Promise<boolean> {
    let q = db.updateTable('workflow_marks').set({ value: to, at: iso(now) }).where('workflow_id', '=', workflowId).where('mark', '=', mark);
    q = from === null ? q.where('value', 'is', null) : q.where('value', '=', from);
    return Number((await q.executeTakeFirst()).numUpdatedRows) === 1;
  }

  /** Takes (or keeps) a named lease; false while another live process holds it. */
  async acquireLease(name: string, owner: string, leaseMs: number, now = Date.now()): Promise<boolean> {
    const r = await this.db
      .insertInto('automation_state')
      .values({ name, owner, lease_until: iso(now + leaseMs), position: 0 })
      .onConflict((oc) =>
        oc
          .column('name')
          .doUpdateSet({ owner, lease_until: iso(now + leaseMs) })
          .where((eb) => eb.or([eb('automation_state.owner', '=', owner), eb('automation_state.lease_until', '<', iso(now)), eb('automation_state.lease_until', 'is', null)])),
      )
      .executeTakeFirst();
    return Number(r.numInsertedOrUpdatedRows ?? 0) === 1;
  }

  async releaseLease(name: string, owner: string): Promise<void> {
    await this.db.updateTable('automation_state').set({ lease_until: null }).where('name', '=', name).where('owner', '=', owner).execute();
  }

  /**
   * The oldest customer event still of interest: none at or below an active workflow's floor can
   * trigger it, none at or below an enrolment's start can be its goal.
   */
  async eventLowWatermark(workflowIds: string[]): Promise<number> {
    if (!workflowIds.length) return 0;
    const [floors, starts] = await Promise.all([
      this.db.selectFrom('workflows').select((eb) => eb.fn.min('event_floor').as('m')).where('workflow_id', 'in', workflowIds).where('status', '=', 'active').executeTakeFirst(),
      this.db.selectFrom('workflow_enrollments').select((eb) => eb.fn.min('start_event_id').as('m')).where('state', '=', 'active').where('workflow_id', 'in', workflowIds).executeTakeFirst(),
    ]);
    const values = [floors?.m, starts?.m].filter((v) => v !== null && v !== undefined).map(Number);
    return values.length ? Math.min(...values) : 0;
  }

  async position(name: string): Promise<number> {
    const r = await this.db.selectFrom('automation_state').select('position').where('name', '=', name).executeTakeFirst();
    return Number(r?.position ?? 0);
  }

  /** Moves the cursor forward (never back), only for the lease holder. */
  async setPosition(name: string, owner: string, position: number): Promise<void> {
    await this.db.updateTable('automation_state').set({ position }).where('name', '=', name).where('owner', '=', owner).where('position', '<', position).execute();
  }
}
