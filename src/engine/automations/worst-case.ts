import { isStageMilestone } from './triggers.js';
import { isMessageStep, type Step, type Trigger, type WorkflowDefinition } from './definition.js';
import { EMAIL_MESSAGE_EVENT_NAMES } from '../inbox/interpret.js';

/**
 * The worst case of one firing of a workflow's trigger: the provider calls, messages and budgeted
 * actions its own steps make at most (every step that calls out, per contact one firing reaches), and
 * those of the active workflows its steps can set off — through the events its track_event steps record,
 * the health score changes it makes, and the provider events about the messages it sends (a delivered,
 * opened or clicked email is one more link of the same chain) — recursively, as deep as
 * AUTOMATION_MAX_CHAIN_DEPTH lets a chain go. Pure: the caller loads the workflows and counts contacts.
 */

/** Events SendGrid reports about one email we sent: each continues the chain that sent it. */
const EMAIL_EVENTS: readonly string[] = EMAIL_MESSAGE_EVENT_NAMES;
/** Events Intercom reports about one message we sent there (a reply to it). */
const INTERCOM_MESSAGE_EVENTS = ['replied'];

/** Workflows visited at most when following chains (each a node of the chain tree). */
export const MAX_CHAIN_NODES = 50;

export interface Cost {
  provider_calls: number;
  messages: number;
  /** What the action budget counts (AUTOMATION_MAX_ACTIONS_PER_…): messages queued and provider calls. */
  actions: number;
}

export interface Emit {
  event: string;
  /** How many such events one firing records. */
  count: number;
  /** Whether the event names a contact (then a workflow it fires reaches that contact only) or only the client. */
  subject: 'contact' | 'client';
}

export interface Candidate {
  workflow_id: string;
  def: WorkflowDefinition;
}

export interface ChainedWorstCase extends Cost {
  workflow_id: string;
  name: string;
  /** The events of the chain that fire it. */
  via: string[];
  /** Its shallowest link in the chain (1: fired by the previewed workflow's own steps). */
  depth: number;
  /** Its firings caused by one firing of the previewed workflow, at most. */
  firings: number;
}

export interface WorstCase {
  /** This workflow's own steps, for one firing of its trigger. */
  per_firing: Cost & { contacts_per_firing: number };
  /** Active workflows one firing can set off, with what they do as a result. */
  chained: ChainedWorstCase[];
  /** Everything one firing can cause: its own steps plus the chained workflows'. */
  total_per_firing: Cost;
  /** Firings an hour this workflow's own action budget (AUTOMATION_MAX_ACTIONS_PER_WORKFLOW_PER_HOUR) allows; null when its steps take no actions. */
  firings_per_hour_within_budget: number | null;
  basis: string;
  /** True when the chains were followed only up to MAX_CHAIN_NODES workflows. */
  truncated: boolean;
  warnings: string[];
}

/** One step's cost and the events it records, when one firing reaches `contacts` contacts. */
function stepCost(step: Step, contacts: number): Cost & { emits: Emit[] } {
  const none = { provider_calls: 0, messages: 0, actions: 0, emits: [] as Emit[] };
  if (isMessageStep(step)) {
    const events = step.type === 'send_email' ? EMAIL_EVENTS : INTERCOM_MESSAGE_EVENTS;
    return { provider_calls: contacts, messages: contacts, actions: contacts, emits: events.map((event) => ({ event, count: contacts, subject: 'contact' as const })) };
  }
  switch (step.type) {
    case 'add_tag':
    case 'remove_tag':
      return { ...none, provider_calls: contacts, actions: contacts };
    case 'track_event': {
      const calls = step.destinations?.length ?? 1;
      return { ...none, provider_calls: calls, actions: Math.max(1, calls), emits: [{ event: step.event_name, count: 1, subject: 'contact' }] };
    }
    case 'update_health_score':
      return { ...none, emits: [{ event: 'health_score_changed', count: 1, subject: 'client' }] };
    case 'wait':
      return none;
    default: // notes, tasks, tickets, Slack, webhooks: one call each
      return { ...none, provider_calls: 1, actions: 1 };
  }
}

export function costOf(def: WorkflowDefinition, contacts: number): Cost & { emits: Emit[] } {
  const total = { provider_calls: 0, messages: 0, actions: 0, emits: [] as Emit[] };
  for (const step of def.steps) {
    const c = stepCost(step, contacts);
    total.provider_calls += c.provider_calls;
    total.messages += c.messages;
    total.actions += c.actions;
    total.emits.push(...c.emits);
  }
  return total;
}

/** Whether an event of this name (recorded by a workflow's step or about its message) can fire the trigger. */
export function canFire(t: Trigger, event: string): boolean {
  if (t.type === 'event_based') return t.event === event; // property conditions may match: the worst case assumes they do
  if (t.type === 'milestone') return !isStageMilestone(t.milestone_name) && t.milestone_name === event;
  if (t.type === 'health_score') return event === 'health_score_changed';
  return false;
}

export interface WorstCaseInput {
  root: Candidate;
  /** Contacts one firing of the root reaches at most (today's data). */
  rootContacts: number;
  /** Active workflows (the root's own stored version left out). */
  active: Candidate[];
  maxChainDepth: number;
  maxActionsPerWorkflowPerHour: number;
  maxActionsPerHour: number;
  /** Contacts a firing about a whole client reaches at most, for a chained workflow. */
  clientContacts: (c: Candidate) => Promise<number>;
}

const round = (n: number) => Math.round(n * 10) / 10;

export async function worstCase(i: WorstCaseInput): Promise<WorstCase> {
  const own = costOf(i.root.def, i.rootContacts);
  const chained = new Map<string, ChainedWorstCase>();
  const clientContacts = new Map<string, number>();
  let nodes = 0;
  let truncated = false;
  const everyone = [i.root, ...i.active];
  // Breadth first, so the nodes cap keeps the shallowest links.
  let level: Array<{ c: Candidate; firings: number; emits: Emit[] }> = [{ c: i.root, firings: 1, emits: own.emits }];
  // A workflow at chain depth d records events at depth d + 1; they fire others only below the limit.
  for (let depth = 1; depth < i.maxChainDepth && level.length && !truncated; depth++) {
    const next: typeof level = [];
    for (const node of level) {
      for (const w of everyone) {
        if (w.workflow_id === node.c.workflow_id) continue; // a workflow's own steps and messages never re-trigger it
        const via = node.emits.filter((e) => canFire(w.def.trigger, e.event));
        if (!via.length) continue;
        if (++nodes > MAX_CHAIN_NODES) {
          truncated = true;
          break;
        }
        let firings = 0;
        let cost = { provider_calls: 0, messages: 0, actions: 0 };
        // Events naming a contact reach that contact only; a health score change reaches the whole client.
        for (const subject of ['contact', 'client'] as const) {
          const count = via.filter((e) => e.subject === subject).reduce((s, e) => s + e.count, 0);
          if (!count) continue;
          if (subject === 'client' && !clientContacts.has(w.workflow_id)) clientContacts.set(w.workflow_id, await i.clientContacts(w));
          const c = costOf(w.def, subject === 'client' ? clientContacts.get(w.workflow_id)! : 1);
          const n = node.firings * count;
          firings += n;
          cost = { provider_calls: cost.provider_calls + n * c.provider_calls, messages: cost.messages + n * c.messages, actions: cost.actions + n * c.actions };
          next.push({ c: w, firings: n, emits: c.emits });
        }
        const seen = chained.get(w.workflow_id);
        const names = [...new Set(via.map((v) => v.event))];
        if (seen) {
          seen.firings += firings;
          seen.provider_calls += cost.provider_calls;
          seen.messages += cost.messages;
          seen.actions += cost.actions;
          seen.via = [...new Set([...seen.via, ...names])];
        } else {
          chained.set(w.workflow_id, { workflow_id: w.workflow_id, name: w.def.name, via: names, depth, firings, ...cost });
        }
      }
      if (truncated) break;
    }
    level = next;
  }

  const list = [...chained.values()].map((c) => ({ ...c, firings: round(c.firings), provider_calls: round(c.provider_calls), messages: round(c.messages), actions: round(c.actions) }));
  const total = list.reduce(
    (t, c) => ({ provider_calls: t.provider_calls + c.provider_calls, messages: t.messages + c.messages, actions: t.actions + c.actions }),
    { provider_calls: own.provider_calls, messages: own.messages, actions: own.actions },
  );
  const warnings: string[] = [];
  const perWf = i.maxActionsPerWorkflowPerHour;
  if (own.actions > perWf) {
    warnings.push(`One firing of this workflow takes up to ${own.actions} actions; AUTOMATION_MAX_ACTIONS_PER_WORKFLOW_PER_HOUR allows ${perWf}: it would pause itself (runaway) during its first firing.`);
  }
  for (const c of list) {
    if (c.actions > perWf) warnings.push(`One firing of this workflow can make the active workflow ${c.workflow_id} take up to ${c.actions} actions; AUTOMATION_MAX_ACTIONS_PER_WORKFLOW_PER_HOUR allows ${perWf}: that workflow would pause itself (runaway).`);
  }
  if (total.actions > i.maxActionsPerHour) {
    warnings.push(`One firing of this workflow, with the workflows it sets off, can take up to ${round(total.actions)} actions; AUTOMATION_MAX_ACTIONS_PER_HOUR allows ${i.maxActionsPerHour} for all automations together.`);
  }
  if (truncated) warnings.push(`The chains this workflow can set off were followed through ${MAX_CHAIN_NODES} workflows only: the worst case is larger than shown.`);
  const firingsPerHour = own.actions > 0 ? Math.floor(perWf / own.actions) : null;
  return {
    per_firing: { contacts_per_firing: i.rootContacts, provider_calls: own.provider_calls, messages: own.messages, actions: own.actions },
    chained: list,
    total_per_firing: { provider_calls: round(total.provider_calls), messages: round(total.messages), actions: round(total.actions) },
    firings_per_hour_within_budget: firingsPerHour,
    basis:
      `one firing: one client or contact entering (a scheduled run fires once per client in the audience); up to ${i.rootContacts} contact(s) per firing (the most any one client in the audience has today) × each step that calls out; ` +
      `chained: active workflows triggered by the events its steps record or by the provider events about its messages (one per message, though opens and clicks can repeat), ` +
      `followed while the chain is shallower than AUTOMATION_MAX_CHAIN_DEPTH (${i.maxChainDepth})`,
    truncated,
    warnings,
  };
}

/** The worst case in one line, for the person approving. */
export function describeWorstCase(w: WorstCase): string {
  const t = w.total_per_firing;
  const own = w.per_firing;
  const chained = w.chained.length
    ? `; it can set off ${w.chained.length} active workflow(s): ${w.chained
        .slice(0, 5)
        .map((c) => `${c.workflow_id} (via ${c.via.slice(0, 3).join(', ')}${c.via.length > 3 ? ', …' : ''}: ${c.firings} firing(s), ${c.provider_calls} provider calls, ${c.messages} messages)`)
        .join('; ')}${w.chained.length > 5 ? '; …' : ''}`
    : '; it sets off no other active workflow';
  const budget = w.firings_per_hour_within_budget === null ? 'its steps take no budgeted actions' : `its action budget allows ${w.firings_per_hour_within_budget} firing(s) an hour`;
  return (
    `Worst case per firing of the trigger: ${t.provider_calls} provider calls and ${t.messages} messages in all ` +
    `(this workflow: ${own.provider_calls} calls, ${own.messages} messages for up to ${own.contacts_per_firing} contact(s)${chained}); ${budget}${w.truncated ? ' (chains followed only in part)' : ''}`
  );
}
