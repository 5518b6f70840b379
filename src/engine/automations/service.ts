import type { Kysely } from 'kysely';
import { invalidInput, PROVIDERS, ToolError, type ProviderName } from '../../result.js';
import { currentActor } from '../../safety/actor.js';
import type { ApprovalCopy, ApprovalRequest, Approver } from '../../safety/approval.js';
import { consentBlock } from '../../store/consent.js';
import type { ContactsTable, Database } from '../../store/schema.js';
import { audienceOf, matchingClients, type AudienceClient } from '../audience.js';
import { canonicalJson, hash } from '../campaigns/plan.js';
import { twoPhase, type ConfirmationTokens, type TwoPhaseSpec } from '../confirmations.js';
import { decodeCursor, encodeCursor } from '../cursor.js';
import { isEmailChannel } from '../delivery/message.js';
import type { OutboxRepository, OutboxState } from '../delivery/outbox.js';
import type { RenderGate } from '../render-gate.js';
import { DEFAULT_RENDER_LIMITS, renderForRecipient } from '../templating.js';
import { CHANNEL_OF, checkScheduleInterval, checkSteps, compileWorkflow, countRuns, cronFor, isMessageStep, normalize, type WorkflowDefinition, type WorkflowInput } from './definition.js';
import { targetingOf, type StateOccurrence } from './occurrences.js';
import { scopeFor, type OccurrenceContext } from './render.js';
import { AutomationRepository, newId, type Candidate, type WorkflowRow } from './repository.js';
import { AutomationScheduler, type SchedulerDeps } from './scheduler.js';
import { isStageMilestone, subjectKey, type Subject } from './triggers.js';
import { describeWorstCase, worstCase, type Candidate as ChainCandidate, type WorstCase } from './worst-case.js';

/**
 * Workflows as the tools see them: save (draft) or preview → confirm (activate), list, get with
 * counts, pause, resume (confirmed like activation), archive, and run (enrol chosen subjects now,
 * previewed and confirmed). The scheduler does the rest.
 */

export interface AutomationDeps extends SchedulerDeps {
  outbox: OutboxRepository;
  tokens: ConfirmationTokens;
  renderGate: RenderGate;
}

const EXAMPLES = 5;

/** Another call confirmed the same token first: this one rolls back and reports that one. */
class ConfirmedElsewhere extends Error {}

/** Who meets a state-based trigger now, and the usage sides activation records. */
type Current = Awaited<ReturnType<AutomationScheduler['evaluator']['current']>>;
const MAX_RUN_SUBJECTS = 1_000;
const DAY = 86_400_000;

export type SaveRequest = WorkflowInput & { workflow_id?: string; is_active: boolean; confirmation_token?: string };

interface Preview {
  trigger: string;
  audience: { clients: number; reachable_contacts: number; examples: string[] };
  entering_now: { applies: boolean; count: number; examples: string[]; note: string };
  samples: Array<Record<string, unknown>>;
  estimated_messages_per_day: number;
  estimate_basis: string;
  worst_case: WorstCase;
  warnings: string[];
}

/** Active workflows loaded at most when following the chains a workflow can set off. */
const MAX_CHAIN_CANDIDATES = 500;

/** The most contacts one client has among the audience's members (what one firing about a client reaches). */
function mostPerClient(members: Array<{ contact: ContactsTable }>): number {
  const by = new Map<string, number>();
  for (const m of members) by.set(m.contact.client_id, (by.get(m.contact.client_id) ?? 0) + 1);
  return Math.max(1, ...by.values());
}

export class AutomationService {
  readonly repo: AutomationRepository;
  readonly scheduler: AutomationScheduler;

  constructor(private readonly deps: AutomationDeps) {
    this.repo = deps.repo;
    this.scheduler = new AutomationScheduler(deps);
  }

  private get db(): Kysely<Database> {
    return this.deps.store.db;
  }

  /** Starts the scheduler, except in read-only mode (then nothing fires; said at start-up and in integrations_status). */
  start(): void {
    if (this.deps.config.safety.readOnly) {
      this.deps.log.warn('read-only mode (CS_MCP_READ_ONLY=true): automations do not run; active workflows wait');
      return;
    }
    this.scheduler.start();
  }

  stop(): Promise<void> {
    return this.scheduler.stop();
  }

  wake(): void {
    this.scheduler.wake();
  }

  get running(): boolean {
    return this.scheduler.running;
  }

  private configured(): Record<ProviderName, boolean> {
    return Object.fromEntries(PROVIDERS.map((p) => [p, this.deps.runtimes[p].configured])) as Record<ProviderName, boolean>;
  }

  async requireWorkflow(id: string): Promise<WorkflowRow> {
    const w = await this.repo.workflow(id);
    if (!w) throw new ToolError('not_found', `No workflow ${id}. Use list_workflows to find its id.`);
    return w;
  }

  // ---- automate_communications -----------------------------------------------------------------

  async save(req: SaveRequest, approve: Approver, audit: Record<string, unknown>): Promise<Record<string, unknown>> {
    const { workflow_id, is_active, confirmation_token, ...input } = req;
    const def = normalize(input, this.deps.config, this.configured());
    const existing = workflow_id ? await this.requireWorkflow(workflow_id) : undefined;
    if (existing?.status === 'archived') throw invalidInput(`Workflow ${workflow_id} is archived and cannot change. Create a new workflow instead.`, { field: 'workflow_id' });
    if (!is_active) {
      if (confirmation_token) throw invalidInput('is_active is false: a draft is saved without a confirmation_token. Leave the token out.', { field: 'confirmation_token' });
      const saved = await this.store(existing, def, existing && existing.status !== 'draft' ? 'paused' : 'draft');
      // An active workflow saved inactive is paused: what it still had queued is cancelled, as pause_workflow does.
      const cancelled = existing?.status === 'active' ? (await this.pause(saved.workflow_id)).cancelled_messages : 0;
      Object.assign(audit, { workflow_id: saved.workflow_id, version: saved.version, status: saved.status, cancelled_messages: cancelled });
      const { copies: _copies, ...preview } = await this.preview(def, saved.workflow_id);
      return {
        phase: 'saved',
        workflow_id: saved.workflow_id,
        version: saved.version,
        status: saved.status,
        definition: def,
        ...preview,
        next_step: `Saved as ${saved.status}; nothing will be sent. To start it, call resume_workflow with workflow_id "${saved.workflow_id}" (it previews first). run_workflow tries it on chosen clients.`,
      };
    }
    return twoPhase(
      this.deps.tokens,
      this.activation(def, existing, {
        kind: 'workflow_activate',
        tool: 'automate_communications',
        title: `Activate the automation "${def.name}"`,
        save: true,
        approve,
        audit,
        done: (id) => `Active: "${def.name}" (${id}) now runs by itself. Follow it with get_workflow; stop it with pause_workflow.`,
      }),
      confirmation_token,
    );
  }

  /**
   * Activation (automate_communications, which saves a new version) and re-activation (resume_workflow,
   * which activates the stored one) as one two-phase spec: the preview shows who would enter now; the
   * token is bound to the definition and, with enroll_existing, to who enters at once.
   */
  private activation(
    def: WorkflowDefinition,
    existing: WorkflowRow | undefined,
    o: { kind: 'workflow_activate' | 'workflow_resume'; tool: string; title: string; save: boolean; approve: Approver; audit: Record<string, unknown>; done: (id: string) => string },
  ): TwoPhaseSpec<{ preview: Record<string, unknown> & Preview; current: Current; copies: ApprovalCopy[] }> {
    const id = existing?.workflow_id;
    return {
      kind: o.kind,
      tool: o.tool,
      nothingDone: 'Nothing was started.',
      compute: async () => {
        const current = await this.deps.renderGate.run(() => this.scheduler.evaluator.current(def));
        const { copies, ...preview } = await this.preview(def, id ?? 'wf_preview', current.occurrences);
        return { preview: { ...(existing ? { workflow_id: existing.workflow_id, version: existing.version } : {}), definition: def, ...preview }, current, copies };
      },
      label: () => def.name,
      parts: ({ current }) => ({
        definition: hash(canonicalJson({ workflow_id: id ?? null, version: o.save ? null : existing?.version, def })),
        entering: hash((def.enroll_existing ? current.occurrences : []).map((x) => `${subjectKey(x.subject)}|${x.occurrence}`).sort().join('\n')),
      }),
      preview: (c) => c.preview,
      confirm: async ({ preview, current, copies }, consume) => {
        const recipients = preview.entering_now.count || preview.audience.reachable_contacts;
        await o.approve(
          this.approval(o.kind, def, copies, {
            recipients,
            messages: recipients * def.steps.filter(isMessageStep).length,
            examples: preview.entering_now.examples.length ? preview.entering_now.examples : preview.audience.examples,
            when: `${preview.trigger} (${o.kind === 'workflow_activate' ? 'activated' : 'resumed'} now; it keeps sending by itself)`,
            notes: [
              `Counts above: who enters now, or everyone the audience reaches today; then about ${preview.estimated_messages_per_day} messages a day (${preview.estimate_basis})`,
              describeWorstCase(preview.worst_case),
              ...preview.warnings,
            ],
          }),
        );
        const r = await this.activate(existing, def, current, { save: o.save, consume });
        if (!r) return undefined;
        Object.assign(o.audit, { result_id: r.id, ...r.facts });
        this.scheduler.wake();
        return { id: r.id, result: { phase: 'confirmed', ...preview, result_id: r.id, ...r.facts, next_step: o.done(r.id) } };
      },
      replay: async (rid, { preview }) => {
        Object.assign(o.audit, { result_id: rid, already_confirmed: true });
        return { phase: 'confirmed', already_confirmed: true, ...preview, result_id: rid, next_step: `Already confirmed; nothing new was done. ${o.done(rid)}` };
      },
    };
  }

  /** Saves a new workflow, or a new version of one, with this status (no trigger state: drafts and paused ones do not fire). */
  private async store(existing: WorkflowRow | undefined, def: WorkflowDefinition, status: string, db: Kysely<Database> = this.db): Promise<WorkflowRow> {
    const now = new Date().toISOString();
    const write = async (trx: Kysely<Database>) => {
      const id = existing?.workflow_id ?? newId('wf');
      const version = (existing?.version ?? 0) + 1;
      await trx.insertInto('workflow_versions').values({ workflow_id: id, version, definition: JSON.stringify(def), created_at: now }).execute();
      const fields = { name: def.name, description: def.description, status, version, trigger_type: def.trigger.type, updated_at: now, ...(status === 'paused' ? { paused_at: now } : {}) };
      if (existing) await trx.updateTable('workflows').set(fields).where('workflow_id', '=', id).execute();
      else {
        await trx
          .insertInto('workflows')
          .values({ workflow_id: id, ...fields, created_by: def.created_by, created_at: now, activated_at: null, paused_at: null, archived_at: null, event_floor: 0, next_fire_at: null, last_fired_at: null, last_swept_at: null })
          .execute();
      }
      return (await this.repo.workflow(id, trx))!;
    };
    return db.isTransaction ? write(db) : db.transaction().execute(write);
  }

  /**
   * Activation (or re-activation) in one transaction: the workflow (a new version when `save`), the
   * token consumed, its trigger state, and who enters now. A token another call consumed first rolls
   * it all back.
   */
  private async activate(
    existing: WorkflowRow | undefined,
    def: WorkflowDefinition,
    current: Current,
    opts: { save: boolean; consume: (db: Kysely<Database>, id: string) => Promise<boolean> },
  ): Promise<{ id: string; facts: Record<string, unknown> } | undefined> {
    const now = Date.now();
    const startEventId = await this.repo.maxEventId();
    try {
      return await this.db.transaction().execute(async (trx) => {
        const w = opts.save || !existing ? await this.store(existing, def, 'active', trx) : existing;
        if (!(await opts.consume(trx, w.workflow_id))) throw new ConfirmedElsewhere();
        const next = def.trigger.type === 'time_based' ? (cronFor(def.trigger.schedule, def.trigger.timezone).nextRun(new Date(now))?.toISOString() ?? null) : null;
        await trx
          .updateTable('workflows')
          .set({ status: 'active', pause_reason: null, activated_at: new Date(now).toISOString(), activated_by: currentActor()?.label ?? null, paused_at: null, event_floor: startEventId, next_fire_at: next, last_swept_at: new Date(now).toISOString(), updated_at: new Date(now).toISOString() })
          .where('workflow_id', '=', w.workflow_id)
          .execute();
        const enrolled = await this.scheduler.evaluator.activate(trx, { workflow_id: w.workflow_id, version: w.version, def }, current.occurrences, current.usageSides, now, startEventId);
        this.deps.log.info({ workflow_id: w.workflow_id, version: w.version, enrolled }, 'workflow activated');
        return { id: w.workflow_id, facts: { workflow_id: w.workflow_id, version: w.version, status: 'active', enrolled_now: enrolled, ...(next ? { next_fire_at: next } : {}) } };
      });
    } catch (err) {
      if (err instanceof ConfirmedElsewhere) return undefined;
      throw err;
    }
  }

  // ---- previews --------------------------------------------------------------------------------

  private async preview(def: WorkflowDefinition, workflowId: string, entering: StateOccurrence[] = []): Promise<Preview & { copies: ApprovalCopy[] }> {
    const { clients } = await matchingClients(this.db, targetingOf(def.audience));
    const audience = await audienceOf(this.db, clients, def.audience.contact_roles);
    const warnings: string[] = [];
    const messageSteps = def.steps.filter(isMessageStep);
    if (messageSteps.length && !audience.members.length) warnings.push('Nobody in the audience can receive messages right now (no contacts, or none with the chosen roles).');
    if (def.send_window) warnings.push(`Messages wait for the send window (${def.send_window.start_hour}:00–${def.send_window.end_hour}:00 ${def.send_window.timezone}, or the contact's own time zone).`);
    const cap = this.deps.config.automations;
    if (messageSteps.length > cap.maxPerContactPerDay) {
      warnings.push(`This workflow sends ${messageSteps.length} messages to a contact; the frequency cap allows ${cap.maxPerContactPerDay} a day and ${cap.maxPerContactPerWeek} a week across all workflows, so later ones ${def.frequency_cap_action === 'wait' ? 'wait' : 'are skipped'}.`);
    }
    const stateBased = ['health_score', 'milestone', 'contract_event', 'usage_pattern', 'behavior_based'].includes(def.trigger.type);
    const estimate = await this.estimate(def, clients.length, audience.members.length, entering.length);
    const worst = await this.worstCase(def, workflowId, mostPerClient(audience.members));
    warnings.push(...worst.warnings);
    return {
      trigger: describeTrigger(def),
      audience: { clients: clients.length, reachable_contacts: audience.members.length, examples: clients.slice(0, EXAMPLES).map((c) => c.name) },
      entering_now: {
        applies: stateBased,
        count: def.enroll_existing || def.trigger.type === 'contract_event' ? entering.length : 0,
        examples: entering.slice(0, EXAMPLES).map((o) => o.label),
        note: !stateBased
          ? `${def.trigger.type} triggers enrol no one on activation.`
          : def.enroll_existing
            ? `${entering.length} already meet the trigger and enter on activation.`
            : `${entering.length} already meet the trigger; without enroll_existing they do not enter, only new crossings do.`,
      },
      samples: this.samples(def, workflowId, clients, audience.members.map((m) => m.contact)),
      copies: this.copies(def, workflowId, clients, audience.members.map((m) => m.contact)),
      estimated_messages_per_day: estimate.perDay,
      estimate_basis: estimate.basis,
      worst_case: worst,
      warnings,
    };
  }

  /** The worst case of one firing, across the active workflows it can chain into (see worst-case.ts). */
  private async worstCase(def: WorkflowDefinition, workflowId: string, contacts: number): Promise<WorstCase> {
    const rows = await this.db
      .selectFrom('workflows')
      .select(['workflow_id', 'version'])
      .where('status', '=', 'active')
      .where('trigger_type', 'in', ['event_based', 'milestone', 'health_score'])
      .where('workflow_id', '!=', workflowId)
      .orderBy('workflow_id')
      .limit(MAX_CHAIN_CANDIDATES)
      .execute();
    const active: ChainCandidate[] = [];
    for (const r of rows) active.push({ workflow_id: r.workflow_id, def: await this.repo.definition(r.workflow_id, r.version) });
    const cap = this.deps.config.automations;
    return worstCase({
      root: { workflow_id: workflowId, def },
      rootContacts: contacts,
      active,
      maxChainDepth: cap.maxChainDepth,
      maxActionsPerWorkflowPerHour: cap.maxActionsPerWorkflowPerHour,
      maxActionsPerHour: cap.maxActionsPerHour,
      clientContacts: async (c) => {
        const { clients } = await matchingClients(this.db, targetingOf(c.def.audience));
        return mostPerClient((await audienceOf(this.db, clients, c.def.audience.contact_roles)).members);
      },
    });
  }

  /** Every step with text rendered for one example subject from today's audience. */
  private samples(def: WorkflowDefinition, workflowId: string, clients: AudienceClient[], contacts: ContactsTable[]): Array<Record<string, unknown>> {
    const compiled = compileWorkflow(def);
    const contact = contacts[0];
    const client = (contact && clients.find((c) => c.client_id === contact.client_id)) ?? clients[0];
    const ctx: OccurrenceContext = { fired_at: new Date().toISOString(), event: sampleEvent(def) };
    return def.steps.map((step, i) => {
      const base: Record<string, unknown> = { step: i, type: step.type, ...(isMessageStep(step) ? { channel: CHANNEL_OF[step.type] } : {}) };
      const tpl = compiled.get(i);
      if (!tpl) return { ...base, summary: describeStep(step) };
      if (!client) return { ...base, note: 'no client in the audience right now to render a sample for' };
      const r = renderForRecipient(tpl, scopeFor(def, workflowId, ctx, client, contact), DEFAULT_RENDER_LIMITS);
      const who = { client_id: client.client_id, ...(contact ? { to: contact.email } : {}) };
      if (!r.ok) return { ...base, ...who, held_back: r.detail };
      const cut = (t: string) => (t.length > 2_000 ? `${t.slice(0, 2_000)}… [${t.length} characters]` : t);
      return { ...base, ...who, ...(step.type === 'send_in_app_notification' || step.type === 'create_note' || step.type === 'send_slack_message' ? {} : { subject: r.subject }), text: cut(r.text) };
    });
  }

  /** Every message step rendered whole for one example subject: what the person approving reads. */
  private copies(def: WorkflowDefinition, workflowId: string, clients: AudienceClient[], contacts: ContactsTable[]): ApprovalCopy[] {
    const compiled = compileWorkflow(def);
    const contact = contacts[0];
    const client = (contact && clients.find((c) => c.client_id === contact.client_id)) ?? clients[0];
    const ctx: OccurrenceContext = { fired_at: new Date().toISOString(), event: sampleEvent(def) };
    const out: ApprovalCopy[] = [];
    def.steps.forEach((step, i) => {
      if (!isMessageStep(step)) return;
      const label = `step ${i}, ${step.type}`;
      const tpl = compiled.get(i);
      if (!tpl || !client) {
        const raw = step as { subject?: string; body?: string; body_html?: string };
        out.push({ label: `${label}, the template itself (nobody to render it for)`, subject: raw.subject, text: raw.body, html: raw.body_html });
        return;
      }
      const r = renderForRecipient(tpl, scopeFor(def, workflowId, ctx, client, contact), DEFAULT_RENDER_LIMITS);
      if (!r.ok) {
        out.push({ label: `${label}: held back for this example (${r.detail})`, to: contact?.email });
        return;
      }
      out.push({ label, to: contact?.email ?? client.name, subject: step.type === 'send_in_app_notification' ? undefined : r.subject, text: r.text, html: r.html });
    });
    return out;
  }

  /** Messages a day from today's data: occurrences a day × recipients per occurrence × message steps, capped by the frequency cap. */
  private async estimate(def: WorkflowDefinition, clients: number, contacts: number, entering: number): Promise<{ perDay: number; basis: string }> {
    const steps = def.steps.filter(isMessageStep).length;
    if (!steps) return { perDay: 0, basis: 'the workflow has no message steps' };
    const t = def.trigger;
    const perSubject = t.type === 'event_based' || t.type === 'custom' || (t.type === 'behavior_based' && t.level === 'contact') ? 1 : clients ? contacts / clients : 0;
    const since = (days: number) => new Date(Date.now() - days * DAY).toISOString();
    const countEvents = async (names: string[], days: number, keep: (p: Record<string, unknown>) => boolean = () => true) => {
      const rows = await this.db.selectFrom('customer_events').select('properties').where('name', 'in', names).where('occurred_at', '>=', since(days)).limit(20_000).execute();
      return rows.filter((r) => keep(JSON.parse(r.properties) as Record<string, unknown>)).length;
    };
    let occurrences = 0;
    let basis: string;
    switch (t.type) {
      case 'time_based': {
        const { runs, capped } = countRuns(t.schedule, t.timezone, new Date(), 7 * DAY);
        occurrences = (runs / 7) * clients;
        basis = `${capped ? 'more than ' : ''}${runs} runs in the next 7 days × ${clients} clients in the audience`;
        break;
      }
      case 'event_based':
        occurrences = (await countEvents([t.event], 7)) / 7;
        basis = `"${t.event}" events recorded in the last 7 days`;
        break;
      case 'health_score':
        occurrences = (await countEvents(['health_score_changed'], 30, (p) => typeof p.to === 'number' && (t.direction === 'below' ? p.to < t.threshold : p.to > t.threshold) && !(typeof p.from === 'number' && (t.direction === 'below' ? p.from < t.threshold : p.from > t.threshold)))) / 30;
        basis = 'threshold crossings recorded in the last 30 days';
        break;
      case 'milestone':
        occurrences = ((await countEvents(['lifecycle_stage_changed'], 30, (p) => p.to === t.milestone_name)) + (isStageMilestone(t.milestone_name) ? 0 : await countEvents([t.milestone_name], 30))) / 30;
        basis = `clients reaching "${t.milestone_name}" in the last 30 days`;
        break;
      case 'contract_event': {
        const lead = t.event_type === 'renewal_upcoming' ? (t.days_before ?? 0) : 0;
        const from = new Date(Date.now() + lead * DAY).toISOString().slice(0, 10);
        const to = new Date(Date.now() + (lead + 30) * DAY).toISOString().slice(0, 10);
        const { clients: renewing } = await matchingClients(this.db, targetingOf(def.audience));
        occurrences = renewing.filter((c) => c.renewal_date && c.renewal_date > from && c.renewal_date <= to).length / 30;
        basis = 'renewals entering the window in the next 30 days';
        break;
      }
      case 'behavior_based':
      case 'usage_pattern':
        basis = `depends on future activity; ${entering} meet the trigger today`;
        break;
      default:
        basis = 'custom workflows send only when run_workflow enrols someone';
    }
    const raw = occurrences * perSubject * steps + (def.enroll_existing ? entering * perSubject * steps : 0);
    const cap = contacts * this.deps.config.automations.maxPerContactPerDay;
    const perDay = Math.round(Math.min(raw, Math.max(cap, 0)) * 10) / 10;
    return { perDay, basis: `${basis}; ${Math.round(perSubject * 10) / 10} recipient(s) per occurrence × ${steps} message step(s)${raw > cap ? `; capped by the frequency cap (${contacts} contacts × ${this.deps.config.automations.maxPerContactPerDay} a day)` : ''}` };
  }

  /** What the person approving reads: the server's facts, the names the assistant gave, every message step rendered whole. */
  private approval(
    action: 'workflow_activate' | 'workflow_resume' | 'workflow_run',
    def: WorkflowDefinition,
    copies: ApprovalCopy[],
    facts: { recipients: number; messages: number; examples: string[]; when: string; notes: string[]; added_since_preview?: number },
  ): ApprovalRequest {
    const steps = def.steps.filter(isMessageStep);
    const channels = [...new Set(steps.map((x) => CHANNEL_OF[x.type]))];
    const emailFrom = steps.map((x) => (x.type === 'send_email' && x.from_email) || (x.type === 'send_email' ? def.sender.email : null)).filter((x): x is string => Boolean(x));
    return {
      action,
      ...facts,
      channel: channels.length ? channels.join(' + ') : 'no messages (internal steps only)',
      sender: {
        ...(emailFrom.length ? { from: [...new Set(emailFrom)].map((e) => `${def.sender.name ? `"${def.sender.name}" ` : ''}<${e}>`).join(', ') } : {}),
        ...(channels.some((c) => c !== 'email') ? { intercom_admin: this.deps.config.intercom.adminId ?? 'the Intercom token owner' } : {}),
      },
      written: [
        { label: 'Workflow name', value: def.name },
        { label: 'Description', value: def.description ?? undefined },
      ],
      copies,
      full_at: 'the preview (the same tool without confirmation_token) and get_workflow (the definition)',
    };
  }

  // ---- lifecycle -------------------------------------------------------------------------------

  async pause(id: string): Promise<{ workflow_id: string; status: string; cancelled_messages: number }> {
    const w = await this.requireWorkflow(id);
    if (w.status === 'archived') throw invalidInput(`Workflow ${id} is archived.`, { field: 'workflow_id' });
    const now = new Date().toISOString();
    const cancelled = await this.db.transaction().execute(async (trx) => {
      if (w.status === 'active') await trx.updateTable('workflows').set({ status: 'paused', paused_at: now, updated_at: now }).where('workflow_id', '=', id).where('status', '=', 'active').execute();
      return this.deps.outbox.cancelQueued('automation', id, Date.now(), trx);
    });
    this.deps.log.info({ workflow_id: id, cancelled }, 'workflow paused');
    return { workflow_id: id, status: w.status === 'active' ? 'paused' : w.status, cancelled_messages: cancelled };
  }

  async archive(id: string): Promise<Record<string, unknown>> {
    const w = await this.requireWorkflow(id);
    const now = new Date().toISOString();
    const result = await this.db.transaction().execute(async (trx) => {
      await trx.updateTable('workflows').set({ status: 'archived', archived_at: w.archived_at ?? now, updated_at: now }).where('workflow_id', '=', id).execute();
      const ended = await trx
        .updateTable('workflow_enrollments')
        .set({ state: 'cancelled', exit_reason: 'workflow archived', finished_at: now, updated_at: now, lease_owner: null, lease_until: null })
        .where('workflow_id', '=', id)
        .where('state', '=', 'active')
        .executeTakeFirst();
      return { enrollments_cancelled: Number(ended.numUpdatedRows), cancelled_messages: await this.deps.outbox.cancelQueued('automation', id, Date.now(), trx) };
    });
    this.deps.log.info({ workflow_id: id, ...result }, 'workflow archived');
    return { workflow_id: id, status: 'archived', ...result };
  }

  async resume(id: string, token: string | undefined, approve: Approver, audit: Record<string, unknown>): Promise<Record<string, unknown>> {
    const w = await this.requireWorkflow(id);
    if (w.status === 'active') throw invalidInput(`Workflow ${id} is already active.`, { field: 'workflow_id' });
    if (w.status === 'archived') throw invalidInput(`Workflow ${id} is archived and cannot run again. Create a new workflow instead.`, { field: 'workflow_id' });
    const def = await this.repo.definition(id, w.version);
    checkSteps(def, this.deps.config, this.configured()); // its providers must still be configured
    if (def.trigger.type === 'time_based') checkScheduleInterval(def.trigger.schedule, def.trigger.timezone, this.deps.config.automations.minScheduleIntervalMs); // and its schedule still allowed
    return twoPhase(
      this.deps.tokens,
      this.activation(def, w, {
        kind: 'workflow_resume',
        tool: 'resume_workflow',
        title: `${w.status === 'draft' ? 'Activate' : 'Resume'} the automation "${def.name}"`,
        save: false,
        approve,
        audit,
        done: (wid) => `Active again: "${def.name}" (${wid}). Enrolments that were waiting continue; what happened while it was paused does not fire it.`,
      }),
      token,
    );
  }

  /** Enrols chosen clients (their audience contacts) or contacts now: the custom trigger, or a try on one account. */
  async run(id: string, targets: { client_ids?: string[]; contact_emails?: string[] }, token: string | undefined, approve: Approver, audit: Record<string, unknown>): Promise<Record<string, unknown>> {
    const w = await this.requireWorkflow(id);
    if (w.status === 'archived' || w.status === 'paused') {
      throw invalidInput(`Workflow ${id} is ${w.status}: ${w.status === 'paused' ? 'resume it first' : 'it cannot run'}.`, { field: 'workflow_id' });
    }
    const def = await this.repo.definition(id, w.version);
    const done = () => `Enrolled now; the steps run in order (waits included). Follow them with get_workflow "${id}".`;
    type Run = {
      preview: Record<string, unknown> & { subjects: { count: number; examples: string[] }; samples: Array<Record<string, unknown>>; warnings: string[] };
      subjects: Subject[];
      /** Per subject, the contacts its message steps reach (as previewed): a run sends to them only. */
      reach: Map<string, string[]>;
      recipients: number;
      messages: number;
      copies: ApprovalCopy[];
    };
    const spec: TwoPhaseSpec<Run> = {
      kind: 'workflow_run',
      tool: 'run_workflow',
      nothingDone: 'Nothing was started.',
      compute: async () => {
        const { subjects, unknown } = await this.runSubjects(targets);
        const { clients } = await matchingClients(this.db, { client_ids: [...new Set(subjects.map((x) => x.client_id))] });
        const byClient = new Map(clients.map((c) => [c.client_id, c]));
        const named = subjects.filter((x) => x.kind === 'contact' && x.contact_id).map((x) => x.contact_id!);
        const namedRows = named.length ? await this.db.selectFrom('contacts').selectAll().where('contact_id', 'in', named).execute() : [];
        // Who each subject's message steps reach: the named contact, or the client's contacts with the audience's roles.
        const members = await audienceOf(this.db, clients.filter((c) => subjects.some((x) => x.kind === 'client' && x.client_id === c.client_id)), def.audience.contact_roles);
        const reachOf = (x: Subject): ContactsTable[] =>
          x.kind === 'contact' ? namedRows.filter((c) => c.contact_id === x.contact_id) : members.members.filter((m) => m.contact.client_id === x.client_id).map((m) => m.contact);
        const reach = new Map(subjects.map((x) => [subjectKey(x), reachOf(x).map((c) => c.contact_id).sort()]));
        const contacts = [...namedRows, ...members.members.map((m) => m.contact)];
        const examples = subjects.slice(0, EXAMPLES).map((x) => (x.kind === 'contact' ? (namedRows.find((c) => c.contact_id === x.contact_id)?.email ?? x.contact_id!) : (byClient.get(x.client_id)?.name ?? x.client_id)));
        const messageSteps = def.steps.filter(isMessageStep);
        const emailSteps = messageSteps.some((x) => isEmailChannel(CHANNEL_OF[x.type]));
        // Recipients × message steps (each on its channel), without those consent keeps out.
        const reached = new Set<string>();
        let messages = 0;
        for (const x of subjects) {
          for (const c of reachOf(x)) {
            for (const step of messageSteps) {
              if (consentBlock(c, isEmailChannel(CHANNEL_OF[step.type]))) continue;
              messages += 1;
              reached.add(c.contact_id);
            }
          }
        }
        const preview = {
          workflow_id: id,
          version: w.version,
          trigger: describeTrigger(def),
          subjects: { count: subjects.length, examples, unknown },
          recipients: reached.size,
          messages,
          samples: this.samples(def, id, clients, contacts),
          warnings: contacts.filter((c) => consentBlock(c, emailSteps)).map((c) => `${c.email} has unsubscribed: message steps skip them.`).slice(0, 10),
        };
        return { preview, subjects, reach, recipients: reached.size, messages, copies: this.copies(def, id, clients, contacts) };
      },
      label: () => def.name,
      // Bound to exactly what was previewed: this workflow, this version and definition, these subjects and the contacts they reach.
      parts: ({ subjects, reach }) => ({
        workflow_id: id,
        version: String(w.version),
        definition: hash(canonicalJson(def)),
        subjects: hash(subjects.map(subjectKey).sort().join('\n')),
        recipients: hash([...reach].map(([k, v]) => `${k}:${v.join(',')}`).sort().join('\n')),
      }),
      preview: (c) => c.preview,
      nothingToConfirm: ({ subjects }) => (subjects.length ? undefined : 'None of the given clients or contacts is in the roster: nothing to run.'),
      confirm: async ({ preview, subjects, reach, recipients, messages, copies }, consume) => {
        await approve(
          this.approval('workflow_run', def, copies, {
            recipients,
            messages,
            examples: preview.subjects.examples,
            when: 'now',
            added_since_preview: 0, // the token is bound to the contacts previewed: one added since refuses it before this point
            notes: [`${subjects.length} enrolled; ${def.steps.filter(isMessageStep).length} message step(s)`, ...preview.warnings],
          }),
        );
        const runId = newId('run');
        const startEventId = await this.repo.maxEventId();
        const firedAt = new Date().toISOString();
        const target = { workflow_id: id, version: w.version, reentry: def.reentry, delay_minutes: def.delay_minutes };
        const enrolled = await this.db.transaction().execute(async (trx) => {
          if (!(await consume(trx, runId))) return undefined;
          const candidates: Candidate[] = subjects.map((x) => ({
            ...x,
            occurrence: `run:${runId}`,
            context: { fired_at: firedAt, run_id: runId, recipients: reach.get(subjectKey(x)) ?? [] },
            depth: 0,
            start_event_id: startEventId,
          }));
          let n = 0;
          for (let i = 0; i < candidates.length; i += 400) n += (await this.repo.enrolChunk(trx, target, candidates.slice(i, i + 400), false, Date.now())).length;
          return n;
        });
        if (enrolled === undefined) return undefined;
        Object.assign(audit, { workflow_id: id, version: w.version, run_id: runId, enrolled });
        this.scheduler.wake();
        return { id: runId, result: { phase: 'confirmed', ...preview, result_id: runId, enrolled, next_step: done() } };
      },
      replay: async (runId, { preview }) => {
        Object.assign(audit, { workflow_id: id, run_id: runId, already_confirmed: true });
        return { phase: 'confirmed', already_confirmed: true, ...preview, result_id: runId, next_step: `Already confirmed; nothing new was done. ${done()}` };
      },
    };
    return twoPhase(this.deps.tokens, spec, token);
  }

  private async runSubjects(t: { client_ids?: string[]; contact_emails?: string[] }): Promise<{ subjects: Subject[]; unknown: string[] }> {
    const subjects: Subject[] = [];
    const unknown: string[] = [];
    if (t.client_ids?.length) {
      const { clients, unknown_client_ids } = await matchingClients(this.db, { client_ids: t.client_ids });
      subjects.push(...clients.map((c): Subject => ({ kind: 'client', client_id: c.client_id, contact_id: null })));
      unknown.push(...unknown_client_ids);
    }
    if (t.contact_emails?.length) {
      const emails = [...new Set(t.contact_emails.map((e) => e.trim().toLowerCase()))];
      const rows = await this.db.selectFrom('contacts').select(['contact_id', 'client_id', 'email']).where('email', 'in', emails).execute();
      subjects.push(...rows.map((r): Subject => ({ kind: 'contact', client_id: r.client_id, contact_id: r.contact_id })));
      unknown.push(...emails.filter((e) => !rows.some((r) => r.email === e)));
    }
    if (subjects.length > MAX_RUN_SUBJECTS) throw invalidInput(`A run enrols at most ${MAX_RUN_SUBJECTS} clients or contacts (got ${subjects.length}). Run it in parts, or give the workflow a trigger and audience.`, { field: 'client_ids' });
    return { subjects, unknown };
  }

  // ---- reading -------------------------------------------------------------------------------

  async list(opts: { status?: string; limit: number; cursor?: string }): Promise<{ workflows: Array<Record<string, unknown>>; next_cursor?: string }> {
    let q = this.db.selectFrom('workflows').selectAll().orderBy('created_at', 'desc').orderBy('workflow_id', 'desc');
    if (opts.status) q = q.where('status', '=', opts.status);
    if (opts.cursor) {
      const [at, id] = decodeCursor(opts.cursor, 'list_workflows');
      q = q.where((eb) => eb.or([eb('created_at', '<', at), eb.and([eb('created_at', '=', at), eb('workflow_id', '<', id)])]));
    }
    const rows = await q.limit(opts.limit + 1).execute();
    const page = rows.slice(0, opts.limit);
    const counts = page.length
      ? await this.db
          .selectFrom('workflow_enrollments')
          .select(['workflow_id', 'state', (eb) => eb.fn.countAll<number>().as('n')])
          .where('workflow_id', 'in', page.map((w) => w.workflow_id))
          .groupBy(['workflow_id', 'state'])
          .execute()
      : [];
    const workflows = page.map((w) => {
      const by = Object.fromEntries(counts.filter((c) => c.workflow_id === w.workflow_id).map((c) => [c.state, Number(c.n)]));
      return { ...summaryOf(w), enrollments: { active: by.active ?? 0, total: Object.values(by).reduce((a, b) => a + Number(b), 0) } };
    });
    const last = page[page.length - 1];
    return { workflows, next_cursor: rows.length > opts.limit && last ? encodeCursor(last.created_at, last.workflow_id) : undefined };
  }

  async get(id: string): Promise<Record<string, unknown>> {
    const w = await this.requireWorkflow(id);
    const def = await this.repo.definition(id, w.version);
    const db = this.db;
    // One read after another, counts before the lists they summarise: enrolments, steps and messages
    // only move forward, so a list read later includes what the counts counted (side by side, on
    // separate PostgreSQL connections, a change landing in between made them disagree).
    // By state and reason in one read, so the goals reached always add up to the exited enrolments.
    const enrolments = await db.selectFrom('workflow_enrollments').select(['state', 'exit_reason', (eb) => eb.fn.countAll<number>().as('n')]).where('workflow_id', '=', id).groupBy(['state', 'exit_reason']).execute();
    const atStep = await db.selectFrom('workflow_enrollments').select(['version', 'step_index', (eb) => eb.fn.countAll<number>().as('n')]).where('workflow_id', '=', id).where('state', '=', 'active').groupBy(['version', 'step_index']).execute();
    const runs = await db.selectFrom('workflow_step_runs').select(['step_index', 'action_type', 'state', (eb) => eb.fn.countAll<number>().as('n')]).where('workflow_id', '=', id).groupBy(['step_index', 'action_type', 'state']).execute();
    const errors = await db
      .selectFrom('workflow_step_runs')
      .select(['run_key', 'step_index', 'action_type', 'state', 'error_code', 'error_message', 'finished_at'])
      .where('workflow_id', '=', id)
      .where('state', 'in', ['failed', 'unknown', 'retry'])
      .orderBy('started_at', 'desc')
      .limit(10)
      .execute();
    const messages = await this.deps.outbox.countsByStateAndChannel('automation', id);
    const reasons = await this.deps.outbox.reasons('automation', id, ['skipped', 'queued']);
    const problems = await this.deps.outbox.problems('automation', id, 10);
    const byState = Object.fromEntries(['active', 'completed', 'exited', 'cancelled'].map((s) => [s, enrolments.filter((e) => e.state === s).reduce((n, e) => n + Number(e.n), 0)]));
    const exits = enrolments.filter((e) => e.state === 'exited');
    const steps = def.steps.map((s, i) => {
      const counts = Object.fromEntries(runs.filter((r) => r.step_index === i && r.action_type === s.type).map((r) => [r.state, Number(r.n)]));
      const waiting = atStep.filter((a) => a.version === w.version && a.step_index === i).reduce((n, a) => n + Number(a.n), 0);
      return { step: i, type: s.type, waiting_here: waiting, ...counts };
    });
    const totals: Record<string, number> = { total: 0 };
    for (const m of messages) {
      totals[m.state] = (totals[m.state] ?? 0) + m.n;
      totals.total += m.n;
    }
    const skipped: Record<string, number> = {};
    const waiting: Record<string, number> = {};
    for (const r of reasons) (r.state === 'skipped' ? skipped : waiting)[r.code] = r.n;
    return {
      workflow: summaryOf(w),
      definition: def,
      trigger: describeTrigger(def),
      enrollments: { ...byState, total: Object.values(byState).reduce((a, b) => a + b, 0) },
      goals_reached: { total: byState.exited, by_goal: Object.fromEntries(exits.map((e) => [e.exit_reason ?? 'goal', Number(e.n)])) },
      steps,
      messages: {
        by_state: totals as Partial<Record<OutboxState | 'total', number>>,
        not_sent_by_reason: skipped,
        waiting_by_reason: waiting,
        suppressed_by_cap: { skipped: skipped.frequency_cap ?? 0, waiting: waiting.frequency_cap ?? 0 },
      },
      last_errors: [
        ...errors.map((e) => ({ where: `step ${e.step_index} (${e.action_type})`, state: e.state, code: e.error_code, message: e.error_message, at: e.finished_at })),
        ...problems.map((p) => ({ where: `message to ${p.recipient_email} via ${p.channel}`, state: p.state, code: p.error_code, message: p.error_message, at: p.updated_at })),
      ],
    };
  }
}

function summaryOf(w: WorkflowRow) {
  return {
    workflow_id: w.workflow_id,
    name: w.name,
    description: w.description,
    status: w.status,
    version: w.version,
    trigger_type: w.trigger_type,
    created_by: w.created_by,
    created_at: w.created_at,
    activated_at: w.activated_at,
    activated_by: w.activated_by ?? null,
    paused_at: w.paused_at,
    pause_reason: w.pause_reason ?? null,
    archived_at: w.archived_at,
    next_fire_at: w.next_fire_at,
    last_fired_at: w.last_fired_at,
  };
}

function sampleEvent(def: WorkflowDefinition): OccurrenceContext['event'] {
  const t = def.trigger;
  const at = new Date().toISOString();
  if (t.type === 'event_based') {
    const props = Object.fromEntries(Object.entries(t.properties ?? {}).filter(([, v]) => v === null || typeof v !== 'object'));
    return { name: t.event, occurred_at: at, properties: props };
  }
  if (t.type === 'health_score') return { name: 'health_score_changed', occurred_at: at, properties: { from: t.threshold, to: t.direction === 'below' ? Math.max(0, t.threshold - 1) : Math.min(100, t.threshold + 1) } };
  if (t.type === 'milestone') return { name: 'lifecycle_stage_changed', occurred_at: at, properties: { to: t.milestone_name } };
  return undefined;
}

export function describeTrigger(def: WorkflowDefinition): string {
  const t = def.trigger;
  const a = def.audience;
  const who = [a.tier?.join('/'), a.segment && `in segment ${a.segment}`, a.lifecycle_stage && `at stage ${a.lifecycle_stage.join('/')}`].filter(Boolean).join(' ');
  const whom = `${who ? `${who} ` : ''}client`;
  switch (t.type) {
    case 'time_based':
      return `on schedule "${t.schedule}" (${t.timezone}), for every ${whom} in the audience at that time`;
    case 'event_based':
      return `when "${t.event}" is recorded${t.properties ? ' with matching properties' : ''} for a contact or ${whom}`;
    case 'health_score':
      return `when a ${whom}'s health score crosses ${t.direction} ${t.threshold}`;
    case 'milestone':
      return `when a ${whom} reaches "${t.milestone_name}" (lifecycle stage or milestone event)`;
    case 'contract_event':
      return t.event_type === 'renewal_upcoming' ? `${t.days_before} days before a ${whom}'s renewal date (once per renewal date)` : `when a ${whom}'s renewal date is reached (once per renewal date)`;
    case 'usage_pattern':
      return `when a ${whom}'s ${t.property ? `sum of ${t.metric}.${t.property}` : `"${t.metric}" count`} over ${t.window_days} days goes ${t.direction} ${t.threshold}`;
    case 'behavior_based':
      return `when a ${t.level === 'contact' ? 'contact' : whom} has had no recorded activity for ${t.days} days`;
    default:
      return 'only when run_workflow enrols someone';
  }
}

function describeStep(s: WorkflowDefinition['steps'][number]): string {
  switch (s.type) {
    case 'wait':
      return `wait ${[s.days && `${s.days} day(s)`, s.hours && `${s.hours} hour(s)`, s.minutes && `${s.minutes} minute(s)`].filter(Boolean).join(' ')}`;
    case 'add_tag':
    case 'remove_tag':
      return `${s.type === 'add_tag' ? 'add' : 'remove'} the Intercom tag "${s.tag}"`;
    case 'update_health_score':
      return s.set !== undefined ? `set the health score to ${s.set}` : `adjust the health score by ${s.adjust}`;
    case 'track_event':
      return `track "${s.event_name}" in ${(s.destinations ?? []).join(' and ')}`;
    case 'trigger_webhook':
      return `POST to ${s.url} (signed)`;
    default:
      return s.type;
  }
}
