/**
 * Client overview (get_client_overview): profile and renewal, the health score over time (from the
 * client's own profile changes, read through the host with get_client_timeline), the recent timeline,
 * and the contacts with their consent.
 */
import type { App } from '@modelcontextprotocol/ext-apps';
import { callTool, connectView, fill, h, lineChart, table, when, type Json } from './lib.js';

let app: App;

function onResult(r: Json, isError: boolean) {
  if (isError || r.success === false) {
    fill('head', h('h1', {}, 'Client overview'), h('p', { class: 'error' }, r.error?.message ?? 'The call failed.'));
    return;
  }
  const c = r.client;
  fill(
    'head',
    h('h1', {}, c.name),
    h('div', { class: 'note' }, `${c.client_id} · ${c.tier} · ${c.lifecycle_stage}${c.segments.length ? ` · ${c.segments.join(', ')}` : ''}`),
  );
  fill(
    'profile',
    h(
      'dl',
      { class: 'facts' },
      h('dt', {}, 'Health'),
      h('dd', { 'data-fact': 'health' }, c.health_score ?? 'unknown'),
      h('dt', {}, 'MRR'),
      h('dd', {}, c.mrr ?? '—'),
      h('dt', {}, 'Renewal'),
      h('dd', { 'data-fact': 'renewal' }, r.renewal.date ? `${r.renewal.date} (${r.renewal.days_until} days)` : 'not set'),
      h('dt', {}, 'Owner'),
      h('dd', {}, c.owner_email ?? '—'),
    ),
  );
  fill(
    'timeline',
    table('timeline', ['When', 'Type', 'Channel', 'What', 'Outcome'], r.recent_timeline.map((e: Json) => [when(e.occurred_at), e.type, e.channel, e.summary, e.outcome])),
  );
  fill(
    'contacts',
    table(
      'contacts',
      ['Address', 'Name', 'Role', 'Consent', 'Intercom'],
      r.contacts.map((p: Json) => [p.email, p.name ?? p.first_name, p.role, consent(p), p.linked_to_intercom ? 'linked' : 'not linked']),
    ),
  );
  void health(c);
}

function consent(p: Json): string {
  if (p.unsubscribed) return `unsubscribed ${when(p.unsubscribed_at)}${p.unsubscribe_reason ? ` (${p.unsubscribe_reason})` : ''}`;
  if (p.email_status) return `email: ${p.email_status} ${when(p.email_status_at)}`;
  return 'subscribed';
}

/** Health points: the registration's value, then each change, oldest first. */
async function health(c: Json) {
  try {
    const t = await callTool(app, 'get_client_timeline', { client_id: c.client_id, types: ['profile_change'], limit: 200 });
    const points: Array<{ at: string; value: number }> = [];
    for (const e of [...t.entries].reverse()) {
      const v = e.data?.changes?.health_score?.to ?? e.data?.client?.health_score;
      if (typeof v === 'number') points.push({ at: e.occurred_at, value: v });
    }
    fill('health', lineChart('health', points), t.next_cursor ? h('p', { class: 'note' }, 'Older changes are not shown.') : null, points.length ? null : h('p', { class: 'note' }, 'No health score recorded yet.'));
  } catch (err) {
    fill('health', h('p', { class: 'error' }, (err as Error).message));
  }
}

app = await connectView('client-overview', { onResult });
