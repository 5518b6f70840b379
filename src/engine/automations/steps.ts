import { createHash } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { Config } from '../../config.js';
import type { Logger } from '../../log.js';
import type { IntercomService } from '../../providers/intercom/service.js';
import type { MixpanelService } from '../../providers/mixpanel/service.js';
import type { SlackService } from '../../providers/slack/service.js';
import type { WebhookService } from '../../providers/webhooks/service.js';
import type { ProviderRuntime } from '../../resilience/provider-runtime.js';
import { retryLater, ToolError, type ProviderName } from '../../result.js';
import { consentBlock, describeBlock } from '../../store/consent.js';
import type { CustomerEventInput } from '../../store/customer-events.js';
import type { Store } from '../../store/index.js';
import type { ContactsTable, Database } from '../../store/schema.js';
import type { ActivityInput } from '../../store/timeline.js';
import { isEmailChannel, PROVIDER_OF_CHANNEL, type OutboundMessage } from '../delivery/message.js';
import { insertMessages } from '../delivery/outbox.js';
import { linkGuard, UNAPPROVED_LINK, type LinkGuard } from '../link-guard.js';
import { messageContent } from '../recipient-scope.js';
import { DEFAULT_RENDER_LIMITS, renderForRecipient, type CompiledTemplates } from '../templating.js';
import { CHANNEL_OF, compileWorkflow, isMessageStep, waitMs, type MessageStep, type Step, type WorkflowDefinition } from './definition.js';
import { loadSubject, primaryContact, recipientsOf, scopeFor, type OccurrenceContext, type StepSubject } from './render.js';
import type { AutomationRepository, EnrollmentRow } from './repository.js';
import { goalReachedBy, messageKey, stateGoalReached } from './triggers.js';
import { recordExit } from './exits.js';
import { LRUCache } from 'lru-cache';
import { OverBudget, takeActions } from './budget.js';
import type { OutboxRepository } from '../delivery/outbox.js';

/**
 * Runs an enrolment's steps, each exactly once.
 *
 * - Message steps render for today's recipients and write their messages to the outbox in the same
 *   transaction that records the step and moves the enrolment on: delivery then brings consent, caps,
 *   send windows, pacing, `unknown`-never-resent and tracking.
 * - Steps that call a provider are recorded `started` before the call and settled after it; a step
 *   found `started` by the next holder (its process stopped mid-call) becomes `unknown` and is never
 *   run again. Providers that take an idempotency key get one (the webhook, Intercom events, Mixpanel
 *   insert ids); for the rest (notes, tickets, Slack) the durable record is the guarantee.
 * - A call refused before it could act (429, circuit open, 503, refused connection) is retried later.
 */

export interface RunnerDeps {
  config: Config;
  log: Logger;
  store: Store;
  repo: AutomationRepository;
  runtimes: Record<ProviderName, ProviderRuntime>;
  intercom: IntercomService;
  mixpanel: MixpanelService;
  slack: SlackService;
  webhooks: WebhookService;
  wakeDelivery: () => void;
  outbox: OutboxRepository;
  /** Told when a workflow pauses itself over its action budget (metrics). */
  observer?: { runawayPause(): void };
}

/** What a provider step did, for its record and the timeline. */
interface Done {
  summary: string;
  detail?: Record<string, unknown>;
  contact_id?: string | null;
  /** Extra timeline entries (a task for the owner) and customer events (a tracked event), written with the settlement. */
  timeline?: Array<Omit<ActivityInput, 'channel'>>;
  events?: CustomerEventInput[];
}

/** A step that cannot do anything for this subject (no contact, a value missing): recorded with the reason, not retried. */
class StepRefused extends Error {
  constructor(
    readonly state: 'skipped' | 'failed',
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

class LeaseLost extends Error {}

const MAX_ATTEMPTS = 5;
/** Workflow versions whose compiled templates are kept in memory (README: Automations, Behaviour). */
export const COMPILED_CACHE_SIZE = 256;
const RETRY_BASE_MS = 5_000;
const RETRY_MAX_MS = 600_000;

type Outcome = 'next' | 'stop';

export class EnrolmentRunner {
  /** Compiled templates of the most recently run COMPILED_CACHE_SIZE workflow versions. */
  private readonly compiled = new LRUCache<string, Map<number, CompiledTemplates>>({ max: COMPILED_CACHE_SIZE });

  constructor(
    private readonly deps: RunnerDeps,
    readonly owner: string,
  ) {}

  private get db(): Kysely<Database> {
    return this.deps.store.db;
  }

  private readonly guards = new Map<string, LinkGuard>();

  /** The link targets a message step's approved templates carry (the workflow's version, as approved). */
  private linkGuards(e: EnrollmentRow, def: WorkflowDefinition, i: number): LinkGuard {
    const key = `${e.workflow_id}@${e.version}#${i}`;
    let g = this.guards.get(key);
    if (!g) {
      const step = def.steps[i] as { subject?: string; body?: string; body_html?: string };
      this.guards.set(key, (g = linkGuard([{ subject: step.subject, text: step.body, html: step.body_html }])));
    }
    return g;
  }

  private templates(e: EnrollmentRow, def: WorkflowDefinition): Map<number, CompiledTemplates> {
    const key = `${e.workflow_id}@${e.version}`;
    let t = this.compiled.get(key);
    if (!t) this.compiled.set(key, (t = compileWorkflow(def)));
    return t;
  }

  /** Runs the enrolment's due steps until a wait, the end, or a step that must be retried later. */
  async run(claimed: EnrollmentRow): Promise<void> {
    const { repo } = this.deps;
    const wf = await repo.workflow(claimed.workflow_id);
    if (!wf || wf.status === 'archived') {
      await repo.finish(this.db, claimed.enrollment_id, 'cancelled', 'workflow archived', this.owner);
      return;
    }
    if (wf.status === 'paused') return repo.release(claimed, this.owner);
    const def = await repo.definition(claimed.workflow_id, claimed.version);
    let e = claimed;
    try {
      for (;;) {
        // SQLite answers synchronously, so a run of steps without provider calls would otherwise hold the
        // event loop (other calls, timers, sockets) for as long as a whole burst of enrolments takes.
        await new Promise((r) => setImmediate(r));
        const i = e.step_index;
        if (i >= def.steps.length) {
          await repo.finish(this.db, e.enrollment_id, 'completed', null, this.owner);
          return;
        }
        const subject = await loadSubject(this.db, e);
        if (!subject) {
          await repo.finish(this.db, e.enrollment_id, 'cancelled', e.contact_id ? 'contact removed from the roster' : 'client removed from the roster', this.owner);
          return;
        }
        const goal = await this.goalReached(def, e, subject);
        if (goal) {
          if (await repo.finish(this.db, e.enrollment_id, 'exited', goal, this.owner)) await recordExit(this.deps.store, def, e, goal);
          return;
        }
        const step = def.steps[i]!;
        if (step.type === 'wait') {
          if (await repo.advance(this.db, e, this.owner, i, Date.now() + waitMs(step))) await repo.release({ ...e, step_index: i + 1 }, this.owner);
          return;
        }
        const outcome = isMessageStep(step)
          ? await this.message(def, e, subject, step, i)
          : step.type === 'update_health_score'
            ? await this.healthScore(e, subject, step, i)
            : await this.provider(def, e, subject, step, i);
        if (outcome === 'stop') return;
        e = { ...e, step_index: i + 1 };
      }
    } catch (err) {
      if (err instanceof LeaseLost) return; // another holder has it now; it continues from where the record says
      if (err instanceof OverBudget) return this.runaway(def, e, err);
      throw err;
    }
  }

  /**
   * The workflow took more actions this hour than its budget (or all automations' budget) allows: it
   * pauses itself (reason `runaway`), what it still had queued is cancelled, and an audit entry says so,
   * all in one transaction. The enrolment waits at the step it could not take; resume_workflow continues it.
   */
  private async runaway(def: WorkflowDefinition, e: EnrollmentRow, over: OverBudget): Promise<void> {
    const now = new Date().toISOString();
    const { maxActionsPerWorkflowPerHour, maxActionsPerHour } = this.deps.config.automations;
    const setting = over.taken.scope === 'workflow' ? `AUTOMATION_MAX_ACTIONS_PER_WORKFLOW_PER_HOUR (${maxActionsPerWorkflowPerHour})` : `AUTOMATION_MAX_ACTIONS_PER_HOUR (${maxActionsPerHour}, all automations together)`;
    const message = `Workflow "${def.name}" paused itself: it reached its action budget, ${setting}, in the hour from ${over.taken.hour}:00 UTC. Nothing beyond the budget was sent; what it still had queued was cancelled. Check get_workflow, then resume_workflow to continue.`;
    const paused = await this.db.transaction().execute(async (trx) => {
      const r = await trx
        .updateTable('workflows')
        .set({ status: 'paused', pause_reason: 'runaway', paused_at: now, updated_at: now })
        .where('workflow_id', '=', e.workflow_id)
        .where('status', 'in', ['active', 'draft']) // a draft runs what run_workflow enrolled
        .executeTakeFirst();
      if (Number(r.numUpdatedRows) !== 1) return undefined;
      const cancelled = await this.deps.outbox.cancelQueued('automation', e.workflow_id, Date.now(), trx);
      await trx
        .insertInto('audit_log')
        .values({
          at: now,
          tool: 'automation',
          kind: 'runaway',
          client_name: null,
          client_version: null,
          session_id: null,
          arguments: JSON.stringify({ workflow_id: e.workflow_id }),
          outcome: 'paused',
          message,
          policy: 'runaway',
          details: JSON.stringify({ workflow_id: e.workflow_id, workflow_name: def.name, scope: over.taken.scope, limit: over.taken.limit, hour: over.taken.hour, cancelled_messages: cancelled, step: e.step_index }),
          duration_ms: 0,
        })
        .execute();
      return cancelled;
    });
    if (paused !== undefined) {
      this.deps.log.warn({ workflow_id: e.workflow_id, scope: over.taken.scope, limit: over.taken.limit, cancelled_messages: paused }, 'automation over its action budget: paused (runaway)');
      this.deps.observer?.runawayPause();
    }
    await this.deps.repo.release(e, this.owner).catch(() => undefined);
  }

  /** How many actions a provider step takes: one call, one per contact tagged, one per destination tracked. */
  private async cost(def: WorkflowDefinition, s: StepSubject, step: Step): Promise<number> {
    switch (step.type) {
      case 'add_tag':
      case 'remove_tag':
        return Math.max(1, (await recipientsOf(this.db, def, s)).members.length);
      case 'track_event':
        return Math.max(1, step.destinations?.length ?? 1);
      default:
        return 1;
    }
  }

  /** Goals met since the enrolment began: a state of the client now, or an event recorded after it entered. */
  private async goalReached(def: WorkflowDefinition, e: EnrollmentRow, s: StepSubject): Promise<string | undefined> {
    if (!def.exit_when.length) return undefined;
    const state = stateGoalReached(def.exit_when, s.client);
    if (state) return state;
    const names = def.exit_when.flatMap((g) => ('event' in g ? [g.event] : []));
    if (!names.length) return undefined;
    for (const ev of await this.deps.store.events.after(e.start_event_id, 500, names, e.client_id)) {
      const reached = goalReachedBy(def.exit_when, ev, e);
      if (reached) return reached;
    }
    return undefined;
  }

  private entry(def: WorkflowDefinition, e: EnrollmentRow, a: Omit<ActivityInput, 'channel'> & { channel?: string; contact_id?: string | null }) {
    const { contact_id, ...rest } = a;
    return {
      client_id: e.client_id,
      contact_id: contact_id === undefined ? e.contact_id : contact_id,
      channel: 'automation',
      actor: `automation:${e.workflow_id}`,
      ...rest,
      data: { workflow_id: e.workflow_id, workflow_name: def.name, enrollment_id: e.enrollment_id, ...rest.data },
    };
  }

  // ---- message steps -------------------------------------------------------------------------

  private async message(def: WorkflowDefinition, e: EnrollmentRow, s: StepSubject, step: MessageStep, i: number): Promise<Outcome> {
    const channel = CHANNEL_OF[step.type];
    const ctx = JSON.parse(e.context) as OccurrenceContext;
    const reached = await recipientsOf(this.db, def, s);
    // A run sends to the contacts its preview showed, never to one added since.
    const previewed = Array.isArray(ctx.recipients) ? new Set(ctx.recipients) : undefined;
    const members = previewed ? reached.members.filter((c) => previewed.has(c.contact_id)) : reached.members;
    const excluded = reached.excluded; // not messaged either way: counted with their reason
    const tpl = this.templates(e, def).get(i)!;
    const links = this.linkGuards(e, def, i);
    const runKey = `${e.enrollment_id}:${i}`;
    const now = new Date().toISOString();
    const base = (c: { contact_id: string; email: string }) => {
      const key = messageKey(e.workflow_id, e.enrollment_id, i, c.contact_id, channel);
      return {
        source_kind: 'automation' as const,
        source_id: e.workflow_id,
        source_ref: runKey,
        contact_id: c.contact_id,
        client_id: e.client_id,
        channel,
        idempotency_key: key,
        meta: {
          label: def.name,
          category: 'automation',
          actor: def.created_by,
          track_opens: true,
          track_clicks: true,
          custom_args: { workflow_id: e.workflow_id, enrollment_id: e.enrollment_id, contact_id: c.contact_id, client_id: e.client_id, outbox_key: key },
          intercom_event: {
            name: 'automation_triggered',
            metadata: { workflow_id: e.workflow_id, workflow_name: def.name, trigger_type: def.trigger.type, action_type: step.type },
          },
          mixpanel_event: {
            name: 'automation_action_executed',
            properties: { workflow_id: e.workflow_id, workflow_name: def.name, trigger_type: def.trigger.type, action_type: step.type, channel, client_id: e.client_id, step: i },
          },
        },
        policy: { frequency_cap: true, cap_action: def.frequency_cap_action, ...(def.send_window ? { send_window: def.send_window } : {}) },
        not_before: now,
      };
    };
    const messages: OutboundMessage[] = [];
    const notSent = (c: { contact_id: string; email: string }, code: string, message: string) =>
      messages.push({ ...base(c), content: { subject: '', text: '', to_email: c.email }, skip: { code, message } });
    for (const c of members) {
      const block = consentBlock(c, isEmailChannel(channel));
      if (block) {
        notSent(c, block.reason, `Not sent: ${describeBlock(c.email, block)}.`);
        continue;
      }
      const r = renderForRecipient(tpl, scopeFor(def, e.workflow_id, ctx, s.client, c), DEFAULT_RENDER_LIMITS);
      if (!r.ok) {
        notSent(c, 'held_back', `Not sent: ${r.detail}.`);
        continue;
      }
      const from = (step.type === 'send_email' && step.from_email) || def.sender.email || undefined;
      const added = links.unapproved(r, { recipient: c.email, senders: [from, def.sender.email] });
      if (added.length) {
        // An event property or a roster value put a link the approved workflow does not carry into this message.
        notSent(c, UNAPPROVED_LINK, `Not sent: a value put link target(s) the approved workflow does not carry into the message: ${added.slice(0, 3).join(', ')}${added.length > 3 ? ', …' : ''}.`);
        continue;
      }
      messages.push({ ...base(c), content: messageContent(c, r, channel, { email: from, name: def.sender.name ?? undefined }) });
    }
    for (const x of excluded) notSent(x, x.reason === 'missing_email' ? 'missing_address' : x.reason, `Not sent: ${x.email || x.contact_id} (${x.reason}).`);

    const queued = messages.filter((m) => !m.skip).length;
    const reasons: Record<string, number> = {};
    for (const m of messages) if (m.skip) reasons[m.skip.code] = (reasons[m.skip.code] ?? 0) + 1;
    await this.db.transaction().execute(async (trx) => {
      const began = await trx
        .insertInto('workflow_step_runs')
        .values(this.runRow(e, i, step.type, 'done', now, { detail: { channel, queued, not_sent: reasons }, finished_at: now }))
        .onConflict((oc) => oc.column('run_key').doNothing())
        .executeTakeFirst();
      if (Number(began.numInsertedOrUpdatedRows ?? 0) === 1) {
        // Every message queued is an action: over the budget, nothing of this step is written (rolled back).
        await takeActions(trx, this.deps.config.automations, e.workflow_id, queued);
        await insertMessages(trx, messages);
        for (const m of messages) {
          if (!m.skip) continue;
          await this.deps.store.timeline.append(
            trx,
            this.entry(def, e, {
              contact_id: m.contact_id,
              type: channel === 'email' ? 'email' : 'message',
              channel: PROVIDER_OF_CHANNEL[channel],
              summary: `Automation "${def.name}" via ${channel} not sent: ${m.skip.message.replace(/^Not sent: /, '')}`,
              outcome: 'skipped',
              data: { source_ref: runKey, code: m.skip.code, step: i },
            }),
          );
        }
      }
      if (!(await this.deps.repo.advance(trx, e, this.owner, i, Date.now()))) throw new LeaseLost();
    });
    if (queued) this.deps.wakeDelivery();
    return 'next';
  }

  // ---- a local step: one transaction, nothing to be unsure about ---------------------------------

  private async healthScore(e: EnrollmentRow, s: StepSubject, step: Extract<Step, { type: 'update_health_score' }>, i: number): Promise<Outcome> {
    const now = new Date().toISOString();
    const from = s.client.health_score;
    await this.db.transaction().execute(async (trx) => {
      let state: 'done' | 'skipped' = 'done';
      let detail: Record<string, unknown>;
      if (step.set === undefined && from === null) {
        state = 'skipped';
        detail = { reason: 'the client has no health score to adjust' };
      } else {
        const to = Math.max(0, Math.min(100, step.set ?? from! + step.adjust!));
        detail = { from, to };
      }
      const began = await trx
        .insertInto('workflow_step_runs')
        .values(this.runRow(e, i, step.type, state, now, { detail, finished_at: now, ...(state === 'skipped' ? { error_code: 'no_health_score', error_message: String(detail.reason) } : {}) }))
        .onConflict((oc) => oc.column('run_key').doNothing())
        .executeTakeFirst();
      if (Number(began.numInsertedOrUpdatedRows ?? 0) === 1 && state === 'done') {
        // The change records health_score_changed one level deeper in the chain: other workflows may react, this one does not.
        await this.deps.store.roster.applyClientPatch(trx, e.client_id, { health_score: detail.to as number }, `automation:${e.workflow_id}`, {
          source: 'automation',
          source_ref: e.workflow_id,
          depth: e.depth + 1,
        });
      }
      if (!(await this.deps.repo.advance(trx, e, this.owner, i, Date.now()))) throw new LeaseLost();
    });
    return 'next';
  }

  // ---- steps that call a provider ----------------------------------------------------------------

  private async provider(def: WorkflowDefinition, e: EnrollmentRow, s: StepSubject, step: Step, i: number): Promise<Outcome> {
    const runKey = `${e.enrollment_id}:${i}`;
    const { repo } = this.deps;
    const cost = await this.cost(def, s, step);
    const begun = await this.db.transaction().execute(async (trx) => {
      const existing = await trx.selectFrom('workflow_step_runs').selectAll().where('run_key', '=', runKey).executeTakeFirst();
      const now = new Date().toISOString();
      if (!existing) {
        await takeActions(trx, this.deps.config.automations, e.workflow_id, cost); // over the budget: rolled back, the call never made
        await trx.insertInto('workflow_step_runs').values(this.runRow(e, i, step.type, 'started', now)).execute();
        return { go: true as const, attempts: 1, startedAt: now };
      }
      if (existing.state === 'retry') {
        await trx
          .updateTable('workflow_step_runs')
          .set({ state: 'started', attempts: existing.attempts + 1, owner: this.owner })
          .where('run_key', '=', runKey)
          .where('state', '=', 'retry')
          .execute();
        return { go: true as const, attempts: existing.attempts + 1, startedAt: existing.started_at };
      }
      if (existing.state === 'started') {
        // Its process stopped during the call: it may or may not have happened. Never run it again.
        const message = 'The server stopped while this step was running, so it may or may not have happened. It was not run again.';
        await trx
          .updateTable('workflow_step_runs')
          .set({ state: 'unknown', error_code: 'interrupted', error_message: message, finished_at: now })
          .where('run_key', '=', runKey)
          .where('state', '=', 'started')
          .execute();
        await this.deps.store.timeline.append(trx, this.entry(def, e, { type: 'automation', summary: `Automation "${def.name}" ${step.type}: in doubt (not repeated)`, outcome: 'unknown', data: { step: i, action_type: step.type } }));
      }
      if (!(await repo.advance(trx, e, this.owner, i, Date.now()))) throw new LeaseLost();
      return { go: false as const };
    });
    if (!begun.go) return 'next';

    let done: Done | undefined;
    let failure: { state: 'failed' | 'unknown' | 'skipped'; code: string; message: string } | undefined;
    try {
      done = await this.call(def, e, s, step, i, runKey, begun.startedAt);
    } catch (err) {
      if (err instanceof StepRefused) failure = { state: err.state, code: err.code, message: err.message };
      else {
        const te = err instanceof ToolError ? err : new ToolError('provider_error', `Unexpected failure: ${err instanceof Error ? err.message : String(err)}`);
        if (retryLater(te) && begun.attempts < MAX_ATTEMPTS) {
          const wait = Math.min(RETRY_MAX_MS, te.retryAfterMs ?? RETRY_BASE_MS * 2 ** (begun.attempts - 1));
          await this.db
            .updateTable('workflow_step_runs')
            .set({ state: 'retry', error_code: te.code, error_message: te.message })
            .where('run_key', '=', runKey)
            .where('owner', '=', this.owner)
            .execute();
          this.deps.log.info({ workflow_id: e.workflow_id, run_key: runKey, code: te.code, wait_ms: wait }, 'automation step postponed');
          await repo.release(e, this.owner, Date.now() + wait);
          return 'stop';
        }
        failure = { state: te.outcomeUnknown ? 'unknown' : 'failed', code: te.code, message: te.message };
      }
    }
    const now = new Date().toISOString();
    const advanced = await this.db.transaction().execute(async (trx) => {
      // Settled by the process that made the call, even if its lease ran out meanwhile (the record stays truthful).
      await trx
        .updateTable('workflow_step_runs')
        .set(
          done
            ? { state: 'done', finished_at: now, detail: JSON.stringify(done.detail ?? {}), error_code: null, error_message: null }
            : { state: failure!.state, finished_at: now, error_code: failure!.code, error_message: failure!.message },
        )
        .where('run_key', '=', runKey)
        .where('owner', '=', this.owner)
        .where('state', 'in', ['started', 'unknown'])
        .execute();
      const outcome = done ? 'success' : failure!.state === 'failed' ? 'failed' : failure!.state;
      await this.deps.store.timeline.append(
        trx,
        this.entry(def, e, {
          contact_id: done?.contact_id,
          type: 'automation',
          summary: done ? `Automation "${def.name}": ${done.summary}` : `Automation "${def.name}" ${step.type} ${failure!.state === 'unknown' ? 'in doubt' : failure!.state}: ${failure!.message}`,
          outcome,
          data: { step: i, action_type: step.type, ...(done?.detail ?? {}), ...(failure ? { error: { code: failure.code, message: failure.message } } : {}) },
        }),
      );
      for (const t of done?.timeline ?? []) await this.deps.store.timeline.append(trx, this.entry(def, e, t));
      if (done?.events?.length) await this.deps.store.events.record(trx, done.events);
      return repo.advance(trx, e, this.owner, i, Date.now());
    });
    return advanced ? 'next' : 'stop';
  }

  private runRow(e: EnrollmentRow, i: number, actionType: string, state: string, now: string, extra: { detail?: Record<string, unknown>; finished_at?: string; error_code?: string; error_message?: string } = {}) {
    return {
      run_key: `${e.enrollment_id}:${i}`,
      workflow_id: e.workflow_id,
      enrollment_id: e.enrollment_id,
      step_index: i,
      action_type: actionType,
      state,
      attempts: 1,
      owner: this.owner,
      started_at: now,
      finished_at: extra.finished_at ?? null,
      error_code: extra.error_code ?? null,
      error_message: extra.error_message ?? null,
      detail: JSON.stringify(extra.detail ?? {}),
    };
  }

  /** Renders a text step for a contact (or none); a value missing for them fails the step, naming it. */
  private text(def: WorkflowDefinition, e: EnrollmentRow, s: StepSubject, i: number, contact?: ContactsTable): { subject: string; text: string } {
    const r = renderForRecipient(this.templates(e, def).get(i)!, scopeFor(def, e.workflow_id, JSON.parse(e.context) as OccurrenceContext, s.client, contact));
    if (!r.ok) throw new StepRefused('failed', r.reason, r.detail);
    return { subject: r.subject, text: r.text };
  }

  private async intercomIdOf(c: ContactsTable): Promise<string> {
    if (c.intercom_contact_id) return c.intercom_contact_id;
    const found = await this.deps.intercom.resolveContact({ user_email: c.email });
    await this.deps.store.linkIntercomContact({ email: c.email }, found.id, found.role).catch(() => undefined);
    return found.id;
  }

  private async contactFor(def: WorkflowDefinition, s: StepSubject, what: string): Promise<ContactsTable> {
    const c = await primaryContact(this.db, def, s);
    if (!c) throw new StepRefused('skipped', 'no_contact', `${s.client.name} has no contact${def.audience.contact_roles ? ` with the role ${def.audience.contact_roles.join(' or ')}` : ''} to ${what}.`);
    return c;
  }

  private async call(def: WorkflowDefinition, e: EnrollmentRow, s: StepSubject, step: Step, i: number, runKey: string, startedAt: string): Promise<Done> {
    const { intercom, config } = this.deps;
    switch (step.type) {
      case 'create_note': {
        const c = await this.contactFor(def, s, 'note');
        const { text } = this.text(def, e, s, i, c);
        const { note_id } = await intercom.createNote(await this.intercomIdOf(c), text, await intercom.defaultAdminId());
        return { summary: `Intercom note on ${c.email}`, detail: { note_id }, contact_id: c.contact_id };
      }
      case 'create_task': {
        const c = await primaryContact(this.db, def, s);
        const { subject: title, text: body } = this.text(def, e, s, i, c);
        const due = new Date(Date.now() + step.due_in_days * 86_400_000).toISOString().slice(0, 10);
        const owner = s.client.owner_email;
        const detail: Record<string, unknown> = { title, due_date: due, owner_email: owner };
        if (c && this.deps.runtimes.intercom.configured) {
          const note = [`[Task] ${title}`, body, `Due ${due}${owner ? ` · owner ${owner}` : ''}`].filter(Boolean).join('\n\n');
          detail.note_id = (await intercom.createNote(await this.intercomIdOf(c), note, await intercom.defaultAdminId())).note_id;
        }
        return {
          summary: `task "${title}" for ${owner ?? "the client's owner"} (due ${due})${detail.note_id ? `, noted on ${c!.email} in Intercom` : ''}`,
          detail,
          contact_id: c?.contact_id ?? null,
          timeline: [{ type: 'task', summary: `Task for ${owner ?? 'the owner'}: ${title} (due ${due})`, outcome: 'success', data: { ...detail, body } }],
        };
      }
      case 'add_tag':
      case 'remove_tag': {
        const { members } = await recipientsOf(this.db, def, s);
        if (!members.length) throw new StepRefused('skipped', 'no_contact', `${s.client.name} has no contact to tag.`);
        let changed = 0;
        for (const c of members) {
          const id = await this.intercomIdOf(c);
          const r = step.type === 'add_tag' ? await intercom.addTag(id, step.tag) : await intercom.removeTag(id, step.tag);
          if (r.changed) changed += 1;
        }
        return { summary: `${step.type === 'add_tag' ? 'tagged' : 'untagged'} "${step.tag}" on ${members.map((m) => m.email).join(', ')}`, detail: { tag: step.tag, contacts: members.length, changed } };
      }
      case 'create_ticket': {
        const c = await this.contactFor(def, s, 'open a ticket for');
        const { subject: title, text: description } = this.text(def, e, s, i, c);
        const { ticket_id } = await intercom.createTicket({ ticket_type_id: config.automations.intercomTicketTypeId!, contact_id: await this.intercomIdOf(c), title, description: description || undefined });
        return { summary: `Intercom ticket "${title}" for ${c.email}`, detail: { ticket_id }, contact_id: c.contact_id };
      }
      case 'track_event': {
        const c = await this.contactFor(def, s, 'track the event on');
        const props = { ...step.metadata, workflow_id: e.workflow_id };
        const destinations = step.destinations ?? [];
        if (destinations.includes('intercom')) {
          // Intercom counts an (event, time, contact) once: the step's start time makes a retry a no-op.
          await intercom.trackEvent({ contact_id: await this.intercomIdOf(c), event_name: step.event_name, created_at: Math.floor(Date.parse(startedAt) / 1000), metadata: step.metadata });
        }
        if (destinations.includes('mixpanel')) {
          await this.deps.mixpanel.track({ event: step.event_name, distinct_id: c.external_user_id ?? c.email, properties: props, insert_id: createHash('sha256').update(runKey).digest('hex').slice(0, 32) });
        }
        return {
          summary: `tracked "${step.event_name}" for ${c.email} in ${destinations.join(' and ')}`,
          detail: { event_name: step.event_name, destinations },
          contact_id: c.contact_id,
          events: [
            { name: step.event_name, client_id: e.client_id, contact_id: c.contact_id, properties: props, source: 'automation', source_ref: e.workflow_id, depth: e.depth + 1, dedup_key: `step:${runKey}` },
          ],
        };
      }
      case 'send_slack_message': {
        const { text } = this.text(def, e, s, i, s.contact ?? (await primaryContact(this.db, def, s)));
        await this.deps.slack.postMessage(text);
        return { summary: 'Slack message posted', detail: { characters: text.length } };
      }
      case 'trigger_webhook': {
        const c = s.contact ?? (await primaryContact(this.db, def, s));
        const ctx = JSON.parse(e.context) as OccurrenceContext;
        const payload = {
          ...step.payload,
          workflow: { id: e.workflow_id, name: def.name, version: e.version, trigger_type: def.trigger.type },
          enrollment_id: e.enrollment_id,
          step: i,
          fired_at: ctx.fired_at,
          client: { id: s.client.client_id, name: s.client.name, tier: s.client.tier, health_score: s.client.health_score, lifecycle_stage: s.client.lifecycle_stage, renewal_date: s.client.renewal_date, owner_email: s.client.owner_email },
          contact: c ? { id: c.contact_id, email: c.email, name: c.name, role: c.role } : null,
          event: ctx.event ?? null,
        };
        const { status, bytes } = await this.deps.webhooks.post(step.url, payload, runKey);
        // The reply itself is not kept or shown (it could be a local service's banner): its status and size only.
        return {
          summary: `webhook to ${new URL(step.url).host} answered ${status} (${bytes} bytes)`,
          detail: { host: new URL(step.url).host, status, reply_bytes: bytes, idempotency_key: runKey },
        };
      }
      default:
        throw new StepRefused('failed', 'invalid_step', `Unknown step type ${(step as Step).type}.`);
    }
  }
}
