/**
 * Workflow (automate_communications preview, get_workflow): the trigger and the steps as a flow, the
 * estimated volume and the worst case against the action budget, and the enrolments with where they
 * wait and how each step ended.
 */
import { barChart, connectView, fill, h, stackedBar, type Json } from './lib.js';

function onResult(r: Json, isError: boolean) {
  if (isError || r.success === false) {
    fill('head', h('h1', {}, 'Workflow'), h('p', { class: 'error' }, r.error?.message ?? 'The call failed.'));
    return;
  }
  const wf = r.workflow;
  const def: Json = r.definition ?? {};
  fill(
    'head',
    h('h1', {}, wf?.name ?? def.name ?? 'Workflow'),
    h('div', { class: 'note' }, wf ? `${wf.workflow_id} · ${wf.status} · version ${wf.version}` : `${r.phase}${r.phase === 'preview' ? ': nothing is running yet' : ''}`),
  );
  const steps: Json[] = (def.steps as Json[] | undefined) ?? [];
  const stats: Json[] = r.steps ?? [];
  fill(
    'flow',
    h(
      'div',
      { class: 'flow', 'data-flow': '' },
      h('div', { class: 'step', 'data-step': 'trigger' }, h('b', {}, 'Trigger'), h('div', {}, r.trigger ?? def.trigger_type)),
      ...steps.flatMap((s, i) => [h('span', { class: 'arrow' }, '→'), stepBox(s, i, stats.find((x) => x.step === i))]),
    ),
  );
  fill('volume', ...volume(r));
  if (r.enrollments) {
    const e = r.enrollments;
    fill(
      'enrolments',
      stackedBar('enrolments', [
        { label: 'active', value: e.active, color: '#1c7ed6' },
        { label: 'completed', value: e.completed, color: '#2f9e44' },
        { label: 'exited', value: e.exited, color: '#6741d9' },
        { label: 'cancelled', value: e.cancelled, color: '#adb5bd' },
      ]),
      h('p', { class: 'note' }, `${e.total} enrolments; goals reached: ${r.goals_reached?.total ?? 0}`),
      barChart('messages', Object.entries((r.messages?.by_state ?? {}) as Record<string, number>).filter(([k]) => k !== 'total').map(([label, value]) => ({ label, value }))),
    );
  } else if (r.entering_now) {
    fill('enrolments', h('p', {}, `Entering on activation: ${r.entering_now.applies ? r.entering_now.count : 0}. ${r.entering_now.note}`), h('p', { class: 'note' }, `Audience today: ${r.audience.clients} clients, ${r.audience.reachable_contacts} reachable contacts.`));
  }
}

function stepBox(s: Json, i: number, stat: Json | undefined): HTMLElement {
  const wait = [s.days && `${s.days} day(s)`, s.hours && `${s.hours} hour(s)`, s.minutes && `${s.minutes} minute(s)`].filter(Boolean).join(' ');
  const what = s.type === 'wait' ? `wait ${wait}` : (s.subject ?? s.title ?? s.tag ?? s.event_name ?? s.text ?? s.body ?? '');
  return h(
    'div',
    { class: 'step', 'data-step': i, 'data-type': s.type },
    h('b', {}, `${i + 1}. ${s.type}`),
    what ? h('div', {}, String(what)) : null,
    stat ? h('div', { class: 'note', 'data-step-stats': '' }, `waiting ${stat.waiting_here ?? 0} · done ${stat.done ?? 0} · failed ${stat.failed ?? 0}`) : null,
  );
}

function volume(r: Json): Array<Node | null> {
  if (r.estimated_messages_per_day === undefined) return [h('p', { class: 'note' }, 'Active workflow: see enrolments and messages.')];
  const w = r.worst_case;
  return [
    h('p', {}, 'Estimated messages per day: ', h('b', { 'data-estimate': '' }, r.estimated_messages_per_day)),
    h('p', { class: 'note' }, r.estimate_basis),
    w ? h('p', {}, `One firing at worst: ${w.total_per_firing.messages} messages, ${w.total_per_firing.provider_calls} provider calls${w.firings_per_hour_within_budget !== null ? `; the action budget allows ${w.firings_per_hour_within_budget} firings an hour` : ''}.`) : null,
    ...((r.warnings as string[] | undefined) ?? []).map((x) => h('p', { class: 'error' }, x)),
  ];
}

await connectView('workflow', { onResult });
