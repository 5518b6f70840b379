/**
 * Campaign status: progress by state and channel, why messages wait, problems, and the engagement
 * funnel (sent → delivered → opened → clicked, with bounces and unsubscribes). From get_campaign_status
 * or list_campaigns; while a campaign is sending or scheduled the view asks get_campaign_status again
 * through the host every few seconds and redraws.
 */
import type { App } from '@modelcontextprotocol/ext-apps';
import { barChart, callTool, connectView, fill, h, stackedBar, table, when, type Json } from './lib.js';

const POLL_MS = 2_000;
const STATES = ['sent', 'sending', 'queued', 'failed', 'unknown', 'skipped', 'cancelled'];

let app: App;
let list: Json[] = [];
let selected: string | undefined;
let timer: ReturnType<typeof setTimeout> | undefined;
let refreshes = 0;

function onResult(result: Json, isError: boolean) {
  if (isError || result.success === false) {
    fill('head', h('h1', {}, 'Campaign status'), h('p', { class: 'error' }, result.error?.message ?? 'The call failed.'));
    return;
  }
  list = result.campaigns ?? (result.campaign ? [result.campaign] : []);
  showList();
  const first = list[0];
  if (first) show(first);
  else fill('head', h('h1', {}, 'Campaigns'), h('p', { class: 'note' }, 'No campaigns.'));
}

function showList() {
  if (list.length < 2) return void fill('list');
  fill(
    'list',
    h('h2', {}, `${list.length} campaigns`),
    h(
      'table',
      { 'data-table': 'campaigns' },
      h('tbody', {}, ...list.map((c) => h('tr', {}, h('td', {}, h('button', { class: 'pick', 'data-pick': c.campaign_id, onclick: () => show(c) }, c.campaign_name)), h('td', {}, c.status), h('td', {}, `${c.progress.percent}%`), h('td', {}, when(c.created_at))))),
    ),
  );
}

function show(c: Json) {
  selected = c.campaign_id;
  const t = c.totals;
  fill(
    'head',
    h('h1', {}, c.campaign_name),
    h('div', { class: 'note' }, `${c.campaign_id} · ${c.template_type} · ${c.channels.join(' + ')}`),
    h('p', {}, 'Status: ', h('b', { 'data-status': c.status }, c.status), ` · ${c.progress.settled} of ${c.progress.total} settled (${c.progress.percent}%)`, c.scheduled_send_time ? ` · scheduled ${when(c.scheduled_send_time)}` : '', c.completed_at ? ` · done ${when(c.completed_at)}` : ''),
  );
  fill(
    'progress',
    stackedBar('progress', STATES.map((s) => ({ label: s, value: t[s] ?? 0 }))),
    h('h2', {}, 'Per channel'),
    table('per-channel', ['Channel', ...STATES, 'total'], Object.entries(c.per_channel as Record<string, Json>).map(([ch, x]) => [ch, ...STATES.map((s) => x[s] ?? 0), x.total])),
  );
  const waiting = Object.entries(c.waiting_by_reason as Record<string, number>);
  const skipped = Object.entries(c.skipped_by_reason as Record<string, number>);
  fill(
    'waiting',
    waiting.length ? barChart('waiting', waiting.map(([label, value]) => ({ label, value, color: '#f08c00' }))) : h('p', { class: 'note' }, 'Nothing is waiting.'),
    skipped.length ? h('div', {}, h('h2', {}, 'Skipped'), barChart('skipped', skipped.map(([label, value]) => ({ label, value, color: '#adb5bd' })))) : null,
  );
  const e = c.engagement.totals;
  fill(
    'funnel',
    barChart('funnel', [
      { label: 'sent', value: t.sent },
      { label: 'delivered', value: e.delivered },
      { label: 'opened', value: e.opened },
      { label: 'clicked', value: e.clicked },
    ]),
    h('h2', {}, 'Lost and left'),
    barChart('losses', [
      { label: 'bounced', value: e.bounced },
      { label: 'dropped', value: e.dropped },
      { label: 'unsubscribed', value: e.unsubscribed },
      { label: 'spam_reported', value: e.spam_reported },
    ]),
    h('p', { class: 'note' }, `Rates of sent: delivered ${e.rates.delivered}%, opened ${e.rates.opened}%, clicked ${e.rates.clicked}%, replied ${e.replied}. From the providers' webhooks.`),
  );
  fill(
    'problems',
    c.problems_total
      ? h('div', {}, h('p', {}, `${c.problems_total} failed or in doubt${c.problems_total > c.problems.length ? ` (first ${c.problems.length} shown)` : ''}`), table('problems', ['Address', 'Client', 'Channel', 'State', 'Error'], c.problems.map((p: Json) => [p.email, p.client_id, p.channel, p.state, p.error_message ?? p.error_code])))
      : h('p', { class: 'note' }, 'No problems.'),
  );
  document.body.setAttribute('data-refreshes', String(refreshes));
  schedule(c);
}

/** Refreshes while there is something left to happen. */
function schedule(c: Json) {
  clearTimeout(timer);
  if (c.status !== 'sending' && c.status !== 'scheduled') return;
  timer = setTimeout(async () => {
    try {
      const r = await callTool(app, 'get_campaign_status', { campaign_id: c.campaign_id });
      if (selected !== c.campaign_id) return;
      refreshes += 1;
      list = list.map((x) => (x.campaign_id === c.campaign_id ? r.campaign : x));
      show(r.campaign);
    } catch (err) {
      fill('refresh-error', h('span', { class: 'error' }, `Refresh failed: ${(err as Error).message}`));
      schedule(c);
    }
  }, POLL_MS);
}

app = await connectView('campaign-status', { onResult });
