import { randomUUID } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { Config } from '../../config.js';
import type { Logger } from '../../log.js';
import type { CustomerEvent } from '../../store/customer-events.js';
import type { Store } from '../../store/index.js';
import type { Database } from '../../store/schema.js';
import { matchingClients } from '../audience.js';
import { WorkLoop } from '../work-loop.js';
import { cronFor, type WorkflowDefinition } from './definition.js';
import { candidateOf, currentOccurrences, inactivity, renewals, targetingOf, usage, type StateOccurrence } from './occurrences.js';
import type { AutomationRepository, Candidate, EnrollmentRow, WorkflowRow } from './repository.js';
import { EnrolmentRunner, type RunnerDeps } from './steps.js';
import { recordExit } from './exits.js';
import { causedBy, eventNamesOf, goalReachedBy, subjectKey, triggerSubject } from './triggers.js';

/**
 * Where automations fire: one loop per process (stdio, HTTP, or the headless worker).
 *
 * - Triggers are evaluated by one process at a time (a lease in the database, taken over when its
 *   holder stops renewing it): new customer events (event, health, milestone triggers and goals),
 *   schedules (time_based), and periodic sweeps of state (renewals, usage, inactivity). Every
 *   occurrence has a unique key, so even two evaluators racing could not enrol a subject twice.
 * - Due steps are run by every process: each enrolment is leased to one process while it runs.
 */

const TRIGGERS = 'triggers';
const EVENT_BATCH = 1000;
/** Events recorded within this long may still be joined by earlier ids committing late: the cursor stays behind them. */
const COMMIT_GRACE_MS = 10_000;

export type SchedulerDeps = RunnerDeps;

export class AutomationScheduler {
  readonly owner = `automation-${randomUUID()}`;
  private readonly runner: EnrolmentRunner;
  private readonly triggers: TriggerEvaluator;
  private readonly loop: WorkLoop;
  private lastRenewal = 0;
  private lastTriggerPass = 0;
  /** Set by wake(): something happened that triggers may react to (finished steps only need the step pass). */
  private triggersDue = true;

  constructor(private readonly deps: SchedulerDeps) {
    this.runner = new EnrolmentRunner(deps, this.owner);
    this.triggers = new TriggerEvaluator(deps);
    this.loop = new WorkLoop({
      pass: () => this.tick(),
      retryMs: () => deps.config.automations.tickMs,
      onPassError: (err) => deps.log.error({ err }, 'automation scheduler pass failed; retrying at the next tick'),
    });
  }

  get running(): boolean {
    return this.loop.running;
  }

  get evaluator(): TriggerEvaluator {
    return this.triggers;
  }

  start(): void {
    this.loop.start();
  }

  /** Something happened (an event was recorded, a workflow activated): look now rather than at the next tick. */
  wake(): void {
    this.triggersDue = true;
    this.loop.wake();
  }

  /** Stops taking work, waits (bounded) for steps in flight, and gives back what this process held. */
  async stop(graceMs = 10_000): Promise<void> {
    if (!this.loop.running) return;
    await this.loop.stop(graceMs);
    await this.deps.repo.releaseAll(this.owner).catch(() => undefined);
    await this.deps.repo.releaseLease(TRIGGERS, this.owner).catch(() => undefined);
  }

  private async tick(): Promise<number> {
    const { repo, config } = this.deps;
    const { leaseMs, tickMs, stepConcurrency } = config.automations;
    const now = Date.now();
    if (now - this.lastRenewal >= leaseMs / 3) {
      this.lastRenewal = now;
      await repo.renewLeases(this.owner, leaseMs, now);
    }
    let more = false;
    // Triggers are evaluated when something happened or a tick has passed; finished steps only free slots.
    if (this.triggersDue || now - this.lastTriggerPass >= tickMs) {
      this.triggersDue = false;
      this.lastTriggerPass = now;
      const live = await repo.liveWorkflows();
      if (live.length && (await repo.acquireLease(TRIGGERS, this.owner, leaseMs, now))) more = await this.triggers.run(this.owner, live, now);
      if (more) this.triggersDue = true;
    }
    const free = stepConcurrency - this.loop.active;
    if (free > 0) for (const e of await repo.claimDue(this.owner, free, leaseMs, Date.now())) this.launch(e);
    if (more) return 0;
    let sleep = tickMs;
    if (this.loop.active === 0) {
      const next = await repo.nextDueAt();
      if (next !== undefined) sleep = Math.min(sleep, next - Date.now());
    }
    return Math.max(10, Math.min(sleep, leaseMs / 3));
  }

  private launch(e: EnrollmentRow): void {
    this.loop.launch(() =>
      this.runner.run(e).catch(async (err: unknown) => {
        this.deps.log.error({ err, enrollment_id: e.enrollment_id, workflow_id: e.workflow_id }, 'running an automation step failed; retrying shortly');
        await this.deps.repo.release(e, this.owner, Date.now() + 5_000).catch(() => undefined);
      }),
    );
  }
}

/** Turns events, schedules and state into enrolments (run by the trigger lease holder). */
export class TriggerEvaluator {
  /**
   * Events above the shared cursor this process already handled, with when each was recorded. The
   * shared cursor lags recent events on purpose (an earlier id may still commit late); this process
   * reads on from where it got to, and re-reads from the cursor now and then to catch late commits.
   */
  private readonly handled = new Map<number, number>();
  private readPos = 0;
  private lastRescan = 0;
  private readonly warnedDepth = new Set<number>();

  constructor(private readonly deps: { config: Config; log: Logger; store: Store; repo: AutomationRepository }) {}

  private get db(): Kysely<Database> {
    return this.deps.store.db;
  }

  /** One pass; true when more events are waiting. */
  async run(owner: string, live: WorkflowRow[], now: number): Promise<boolean> {
    const defs = new Map<string, WorkflowDefinition>();
    for (const w of live) defs.set(w.workflow_id, await this.deps.repo.definition(w.workflow_id, w.version));
    const more = await this.consumeEvents(owner, live, defs, now);
    for (const w of live) {
      if (w.status !== 'active') continue;
      const def = defs.get(w.workflow_id)!;
      try {
        if (def.trigger.type === 'time_based') await this.schedule(w, def, now);
        else if (['contract_event', 'usage_pattern', 'behavior_based'].includes(def.trigger.type)) await this.sweep(w, def, now);
      } catch (err) {
        this.deps.log.error({ err, workflow_id: w.workflow_id }, 'evaluating a workflow trigger failed');
      }
    }
    return more;
  }

  // ---- customer events: event, health and milestone triggers; goals -----------------------------

  private async consumeEvents(owner: string, live: WorkflowRow[], defs: Map<string, WorkflowDefinition>, now: number): Promise<boolean> {
    const { repo, store } = this.deps;
    // Paused and draft workflows still listen for their enrolments' goals; only active ones trigger.
    const listening = live
      .map((w) => ({ w, names: eventNamesOf(w.status === 'active' ? defs.get(w.workflow_id)!.trigger : null, defs.get(w.workflow_id)!.exit_when) }))
      .filter((x) => x.names.length);
    const names = new Set(listening.flatMap((x) => x.names));
    // Nothing at or below the low watermark can trigger or end anything: start there, not at the beginning of time.
    const pos = Math.max(await repo.position(TRIGGERS), await repo.eventLowWatermark(listening.map((x) => x.w.workflow_id)));
    if (!names.size) {
      await repo.setPosition(TRIGGERS, owner, await repo.maxEventId());
      this.handled.clear();
      this.readPos = 0;
      return false;
    }
    if (this.readPos < pos || now - this.lastRescan >= COMMIT_GRACE_MS / 2) {
      this.readPos = pos;
      this.lastRescan = now;
    }
    const batch = await store.events.after(this.readPos, EVENT_BATCH, [...names]);
    const fresh = batch.filter((ev) => !this.handled.has(ev.event_id));
    if (fresh.length) {
      await this.resolveClients(fresh);
      for (const w of live) {
        const def = defs.get(w.workflow_id)!;
        try {
          if (w.status === 'active') await this.enrolFromEvents(w, def, fresh);
          if (def.exit_when.length) await this.goalsFromEvents(w, fresh);
        } catch (err) {
          this.deps.log.error({ err, workflow_id: w.workflow_id }, 'applying customer events to a workflow failed');
        }
      }
      for (const ev of fresh) this.handled.set(ev.event_id, Date.parse(ev.recorded_at));
    }
    if (batch.length) this.readPos = batch[batch.length - 1]!.event_id;
    // The shared cursor moves over the handled events, in order, that are old enough to have no late company.
    let next = pos;
    const settled = now - COMMIT_GRACE_MS;
    for (const [id, at] of [...this.handled.entries()].sort((a, b) => a[0] - b[0])) {
      if (id <= pos) this.handled.delete(id);
      else if (at <= settled) next = id;
      else break;
    }
    if (next > pos) {
      await repo.setPosition(TRIGGERS, owner, next);
      for (const id of this.handled.keys()) if (id <= next) this.handled.delete(id);
    }
    return batch.length === EVENT_BATCH;
  }

  /** Events recorded with a contact but no client (a producer that did not know it) get the contact's client. */
  private async resolveClients(events: CustomerEvent[]): Promise<void> {
    const missing = [...new Set(events.filter((e) => e.contact_id && !e.client_id).map((e) => e.contact_id!))];
    if (!missing.length) return;
    const rows = await this.db.selectFrom('contacts').select(['contact_id', 'client_id']).where('contact_id', 'in', missing).execute();
    const clientOf = new Map(rows.map((r) => [r.contact_id, r.client_id]));
    for (const e of events) if (e.contact_id && !e.client_id) e.client_id = clientOf.get(e.contact_id) ?? null;
  }

  private async enrolFromEvents(w: WorkflowRow, def: WorkflowDefinition, events: CustomerEvent[]): Promise<void> {
    const maxDepth = this.deps.config.automations.maxChainDepth;
    const candidates: Candidate[] = [];
    for (const ev of events) {
      if (ev.event_id <= w.event_floor) continue;
      if (causedBy(ev) === w.workflow_id) continue; // a workflow's own steps, and events about its own messages, never re-trigger it
      const subject = triggerSubject(def.trigger, ev);
      if (!subject) continue;
      if (ev.depth >= maxDepth) {
        if (!this.warnedDepth.has(ev.event_id)) {
          if (this.warnedDepth.size > 1_000) this.warnedDepth.clear(); // only to avoid repeating a warning on a re-read
          this.warnedDepth.add(ev.event_id);
          this.deps.log.warn({ event_id: ev.event_id, event: ev.name, depth: ev.depth, workflow_id: w.workflow_id }, `automation chain stopped: this event was caused by ${ev.depth} automation steps in a row (AUTOMATION_MAX_CHAIN_DEPTH)`);
        }
        continue;
      }
      candidates.push({
        ...subject,
        occurrence: `ev:${ev.event_id}`,
        context: { fired_at: ev.occurred_at, event: { name: ev.name, occurred_at: ev.occurred_at, properties: ev.properties } },
        depth: ev.depth,
        start_event_id: ev.event_id,
      });
    }
    if (!candidates.length) return;
    const inAudience = await this.audienceFilter(def, candidates);
    const enrolled = await this.deps.repo.enrol({ workflow_id: w.workflow_id, version: w.version, reentry: def.reentry, delay_minutes: def.delay_minutes }, inAudience);
    if (enrolled.length) this.deps.log.info({ workflow_id: w.workflow_id, enrolled: enrolled.length, trigger: def.trigger.type }, 'automation triggered');
  }

  /** Only subjects in the workflow's audience enter: the client matches its filters, a contact has one of its roles. */
  private async audienceFilter(def: WorkflowDefinition, candidates: Candidate[]): Promise<Candidate[]> {
    const ids = [...new Set(candidates.map((c) => c.client_id))];
    const { clients } = await matchingClients(this.db, { ...targetingOf(def.audience), client_ids: ids });
    const ok = new Set(clients.map((c) => c.client_id));
    let pass = candidates.filter((c) => ok.has(c.client_id));
    const roles = def.audience.contact_roles;
    const contactIds = [...new Set(pass.filter((c) => c.kind === 'contact').map((c) => c.contact_id!))];
    if (contactIds.length) {
      const rows: Array<{ contact_id: string; role: string | null }> = [];
      for (let i = 0; i < contactIds.length; i += 500) {
        rows.push(...(await this.db.selectFrom('contacts').select(['contact_id', 'role']).where('contact_id', 'in', contactIds.slice(i, i + 500)).execute()));
      }
      const roleOf = new Map(rows.map((r) => [r.contact_id, (r.role ?? '').toLowerCase()]));
      pass = pass.filter((c) => c.kind === 'client' || (roleOf.has(c.contact_id!) && (!roles || roles.includes(roleOf.get(c.contact_id!)!))));
    }
    return pass;
  }

  private async goalsFromEvents(w: WorkflowRow, events: CustomerEvent[]): Promise<void> {
    const clientIds = [...new Set(events.map((e) => e.client_id).filter((c): c is string => !!c))];
    const enrolments = await this.deps.repo.activeEnrolmentsOf(w.workflow_id, clientIds);
    if (!enrolments.length) return;
    for (const e of enrolments) {
      const def = await this.deps.repo.definition(e.workflow_id, e.version);
      if (!def.exit_when.length) continue;
      for (const ev of events) {
        if (ev.event_id <= e.start_event_id) continue;
        const goal = goalReachedBy(def.exit_when, ev, e);
        if (!goal) continue;
        if (await this.deps.repo.finish(this.db, e.enrollment_id, 'exited', goal)) await recordExit(this.deps.store, def, e, goal);
        break;
      }
    }
  }

  // ---- schedules -----------------------------------------------------------------------------

  /**
   * Fires a due schedule once, for the audience of that moment. Of occurrences missed while nothing
   * ran, only the latest fires, and only if it is recent (AUTOMATION_CATCH_UP_MINUTES): never a burst.
   */
  private async schedule(w: WorkflowRow, def: WorkflowDefinition, now: number): Promise<void> {
    if (def.trigger.type !== 'time_based') return;
    const cron = cronFor(def.trigger.schedule, def.trigger.timezone);
    const advance = async (latest: string | null) => {
      const next = cron.nextRun(new Date(now))?.toISOString() ?? null;
      let q = this.db.updateTable('workflows').set({ next_fire_at: next, ...(latest ? { last_fired_at: latest } : {}) }).where('workflow_id', '=', w.workflow_id);
      q = w.next_fire_at === null ? q.where('next_fire_at', 'is', null) : q.where('next_fire_at', '=', w.next_fire_at);
      await q.execute();
    };
    if (!w.next_fire_at) return advance(null);
    if (Date.parse(w.next_fire_at) > now) return;
    const latest = cron.previousRuns(1, new Date(now + 1))[0] ?? new Date(w.next_fire_at);
    const at = latest.toISOString();
    // Late by no more than the scheduler's own lag (a tick, or a lease taken over) is on time, even with
    // AUTOMATION_CATCH_UP_MINUTES=0; later than that the run was missed, and fires only within the catch-up limit.
    const { catchUpMs, leaseMs, tickMs, minScheduleIntervalMs } = this.deps.config.automations;
    if (w.last_fired_at && latest.getTime() - Date.parse(w.last_fired_at) < minScheduleIntervalMs) {
      // A schedule saved before the minimum interval was raised: it fires no more often than the minimum allows.
      this.deps.log.warn({ workflow_id: w.workflow_id, skipped: at, last_fired_at: w.last_fired_at }, 'a scheduled run came sooner than AUTOMATION_MIN_SCHEDULE_INTERVAL_SECONDS after the last one: skipped');
      return advance(null); // last_fired_at stays the run that fired
    }
    if (now - latest.getTime() <= Math.max(catchUpMs, leaseMs + tickMs)) {
      const missed = latest.getTime() > Date.parse(w.next_fire_at);
      if (missed) this.deps.log.warn({ workflow_id: w.workflow_id, fired_for: at, first_missed: w.next_fire_at }, 'scheduled runs were missed while nothing ran: only the latest fires');
      const { clients } = await matchingClients(this.db, targetingOf(def.audience));
      const startEventId = await this.deps.repo.maxEventId();
      const candidates = clients.map((c): Candidate => ({ kind: 'client', client_id: c.client_id, contact_id: null, occurrence: `at:${at}`, context: { fired_at: at }, depth: 0, start_event_id: startEventId }));
      const enrolled = await this.deps.repo.enrol({ workflow_id: w.workflow_id, version: w.version, reentry: def.reentry, delay_minutes: def.delay_minutes }, candidates);
      this.deps.log.info({ workflow_id: w.workflow_id, fired_for: at, audience: clients.length, enrolled: enrolled.length }, 'scheduled automation fired');
    } else {
      this.deps.log.warn({ workflow_id: w.workflow_id, missed: at }, 'a scheduled run was missed by more than AUTOMATION_CATCH_UP_MINUTES: skipped');
    }
    await advance(at);
  }

  // ---- state sweeps: renewals, usage, inactivity -------------------------------------------------

  private async sweep(w: WorkflowRow, def: WorkflowDefinition, now: number): Promise<void> {
    const { sweepMs } = this.deps.config.automations;
    const claimed = await this.db
      .updateTable('workflows')
      .set({ last_swept_at: new Date(now).toISOString() })
      .where('workflow_id', '=', w.workflow_id)
      .where((eb) => eb.or([eb('last_swept_at', 'is', null), eb('last_swept_at', '<=', new Date(now - sweepMs).toISOString())]))
      .executeTakeFirst();
    if (Number(claimed.numUpdatedRows) !== 1) return;
    const startEventId = await this.deps.repo.maxEventId();
    const firedAt = new Date(now).toISOString();
    const wf = { workflow_id: w.workflow_id, version: w.version, reentry: def.reentry, delay_minutes: def.delay_minutes };
    if (def.trigger.type === 'usage_pattern') {
      const sides = await usage(this.db, def, now);
      const marks = await this.deps.repo.marks(w.workflow_id, 'side:');
      let enrolled = 0;
      for (const u of sides) {
        const mark = `side:${subjectKey(u.subject)}`;
        const want = u.past ? 'past' : 'clear';
        const was = marks.get(mark);
        if (was === want) continue;
        await this.db.transaction().execute(async (trx) => {
          // A subject first seen now only gets its side; a change of side from clear to past is a crossing.
          if (was === undefined) return void (await this.deps.repo.addMarks(trx, w.workflow_id, [{ mark, value: want }], now));
          if (!(await this.deps.repo.swapMark(trx, w.workflow_id, mark, was, want, now)) || want !== 'past') return;
          const o: StateOccurrence = { subject: u.subject, occurrence: `usage:${firedAt}`, label: u.label };
          enrolled += (await this.deps.repo.enrolChunk(trx, wf, [{ ...candidateOf(o, '', firedAt, startEventId), context: { fired_at: firedAt, usage: u.value } }], true, now)).length;
        });
      }
      if (enrolled) this.deps.log.info({ workflow_id: w.workflow_id, enrolled }, 'usage threshold crossed');
      return;
    }
    const occurrences = def.trigger.type === 'contract_event' ? await renewals(this.db, def, now) : await inactivity(this.db, def, now);
    const enrolled = await enrolNewOccurrences(this.deps.repo, this.db, wf, occurrences, firedAt, startEventId, true, now);
    if (enrolled) this.deps.log.info({ workflow_id: w.workflow_id, enrolled, trigger: def.trigger.type }, 'automation triggered');
  }

  /**
   * What activation does for state-based triggers, inside the activating transaction, from occurrences
   * read before it: with enroll_existing, those already past the threshold enter now; without, they are
   * remembered as seen, so only new crossings enter.
   */
  async activate(trx: Kysely<Database>, wf: { workflow_id: string; version: number; def: WorkflowDefinition }, current: StateOccurrence[], usageSides: Awaited<ReturnType<typeof usage>>, now: number, startEventId: number): Promise<number> {
    const { def } = wf;
    const target = { workflow_id: wf.workflow_id, version: wf.version, reentry: def.reentry, delay_minutes: def.delay_minutes };
    const firedAt = new Date(now).toISOString();
    if (def.trigger.type === 'usage_pattern') {
      await this.deps.repo.addMarks(trx, wf.workflow_id, usageSides.map((u) => ({ mark: `side:${subjectKey(u.subject)}`, value: u.past ? 'past' : 'clear' })), now);
    }
    if (def.trigger.type === 'contract_event' || def.trigger.type === 'behavior_based') {
      return enrolNewOccurrences(this.deps.repo, trx, target, current, firedAt, startEventId, def.enroll_existing, now);
    }
    if (!def.enroll_existing || !current.length) return 0;
    let n = 0;
    for (let i = 0; i < current.length; i += 400) {
      const chunk = current.slice(i, i + 400).map((o) => candidateOf(o, `activation:v${wf.version}:`, firedAt, startEventId));
      n += (await this.deps.repo.enrolChunk(trx, target, chunk, true, now)).length;
    }
    return n;
  }

  /** Who would enter right now on activation (previews), and the usage sides activation records. */
  async current(def: WorkflowDefinition, now = Date.now()): Promise<{ occurrences: StateOccurrence[]; usageSides: Awaited<ReturnType<typeof usage>> }> {
    if (def.trigger.type !== 'usage_pattern') return { occurrences: await currentOccurrences(this.db, def, now), usageSides: [] };
    const usageSides = await usage(this.db, def, now);
    return { occurrences: usageSides.filter((u) => u.past).map((u) => ({ subject: u.subject, occurrence: 'existing', label: u.label })), usageSides };
  }
}

/**
 * Each occurrence is remembered once (a mark per subject and occurrence, taken with one unique write);
 * the one call that takes the mark enrols (when `enrol`), in the same transaction.
 */
async function enrolNewOccurrences(
  repo: AutomationRepository,
  db: Kysely<Database>,
  wf: { workflow_id: string; version: number; reentry: WorkflowDefinition['reentry']; delay_minutes: number },
  occurrences: StateOccurrence[],
  firedAt: string,
  startEventId: number,
  enrol: boolean,
  now: number,
): Promise<number> {
  const markOf = (o: StateOccurrence) => `occ:${subjectKey(o.subject)}|${o.occurrence}`;
  const known = await repo.marks(wf.workflow_id, 'occ:', db);
  const fresh = occurrences.filter((o) => !known.has(markOf(o)));
  let n = 0;
  for (let i = 0; i < fresh.length; i += 400) {
    const chunk = fresh.slice(i, i + 400);
    const work = async (trx: Kysely<Database>) => {
      const taken = await repo.addMarks(trx, wf.workflow_id, chunk.map((o) => ({ mark: markOf(o) })), now);
      if (!enrol) return 0;
      const candidates = chunk.filter((o) => taken.has(markOf(o))).map((o) => candidateOf(o, '', firedAt, startEventId));
      return (await repo.enrolChunk(trx, wf, candidates, true, now)).length;
    };
    n += db.isTransaction ? await work(db) : await db.transaction().execute(work);
  }
  return n;
}
