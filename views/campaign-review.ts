/**
 * Campaign review: the send_personalized_email preview as a person checks it: the email as a chosen
 * recipient receives it (HTML in a frame with scripts disabled, and the text part), every link target,
 * sender, reply-to and schedule, the audience per channel, the excluded and held-back contacts
 * (searchable), and Send: the person's approval, confirming exactly what was previewed.
 */
import type { App } from '@modelcontextprotocol/ext-apps';
import { barChart, callTool, connectView, fill, h, table, ToolCallError, when, type Json } from './lib.js';

let app: App;
let args: Json | undefined;
let preview: Json | undefined;
let search = '';
let searchTimer: ReturnType<typeof setTimeout> | undefined;

/** The arguments of the previewed call, without the token a confirming call carried. */
const campaignArgs = () => {
  const { confirmation_token: _t, ...rest } = args ?? {};
  return rest;
};

function showResult(result: Json, isError: boolean) {
  preview = result;
  if (isError || result.success === false) {
    fill('head', h('h1', {}, 'Campaign preview'), h('p', { class: 'error' }, result.error?.message ?? 'The preview failed.'));
    return;
  }
  fill(
    'head',
    h('h1', {}, result.campaign_name),
    h('div', { class: 'note' }, `${result.template_type} · ${(result.channels ?? []).join(' + ')} · ${result.phase === 'preview' ? 'preview: nothing has been sent' : 'confirmed'}`),
  );
  const a = result.audience ?? {};
  fill(
    'audience',
    h('p', {}, h('b', { 'data-count': 'recipients' }, a.recipients), ' recipients, ', h('b', { 'data-count': 'messages' }, a.messages), ' messages, of ', a.contacts_considered, ' contacts considered'),
    barChart('per-channel', Object.entries(a.per_channel ?? {}).map(([label, value]) => ({ label, value: value as number, color: '#1c7ed6' }))),
    h('p', {}, 'Excluded: ', h('b', { 'data-count': 'excluded' }, a.excluded?.total ?? 0), ' · held back: ', h('b', { 'data-count': 'held_back' }, a.held_back?.total ?? 0)),
    Object.keys(a.excluded?.by_reason ?? {}).length ? barChart('excluded-by-reason', Object.entries(a.excluded.by_reason).map(([label, value]) => ({ label, value: value as number, color: '#adb5bd' }))) : null,
    a.unknown_client_ids_total ? h('p', { class: 'note' }, `${a.unknown_client_ids_total} target client id(s) not in the roster: ${a.unknown_client_ids.join(', ')}`) : null,
  );
  if (result.phase === 'confirmed') {
    fill('send', h('p', { class: 'ok' }, `Confirmed: campaign ${result.campaign_id}, ${result.queued} message(s) queued.`));
  } else if (result.confirmation_token) {
    fill(
      'send',
      h('button', { class: 'send', id: 'send-button', onclick: () => void send() }, `Send ${a.messages} message(s) to ${a.recipients} recipient(s)`),
      h('span', { class: 'note' }, ` Pressing Send is your approval. The preview's token expires ${when(result.token_expires_at)}.`),
      h('div', { id: 'send-outcome' }),
    );
  } else {
    fill('send', h('p', { class: 'note' }, result.next_step));
  }
  // The first sample shows at once; the review call adds links, other recipients and the full lists.
  const first = result.samples?.[0];
  if (first) showCopy({ ...first, links: [], images: [] }, true);
  void review();
}

async function review(recipient?: string) {
  if (!args || preview?.success === false) return;
  try {
    const r = await callTool(app, 'review_campaign', { campaign: campaignArgs(), ...(recipient ? { recipient } : {}), ...(search ? { search } : {}) });
    showFacts(r);
    if (r.copy) showCopy(r.copy, false);
    else if (recipient) fill('copy-note', h('span', { class: 'error' }, `${recipient} receives no message of this campaign.`));
    showLists(r);
  } catch (err) {
    fill('copy-note', h('span', { class: 'error' }, (err as Error).message));
  }
}

function showFacts(r: Json) {
  const sender = r.sender ?? {};
  fill(
    'facts',
    h(
      'dl',
      { class: 'facts' },
      h('dt', {}, 'From'),
      h('dd', { 'data-fact': 'from' }, sender.from ? `${sender.from_name ? `${sender.from_name} ` : ''}<${sender.from}>` : 'the provider default'),
      h('dt', {}, 'Reply-to'),
      h('dd', { 'data-fact': 'reply_to' }, sender.reply_to ?? 'none set (replies go to the sender)'),
      sender.intercom_admin ? h('dt', {}, 'Intercom admin') : null,
      sender.intercom_admin ? h('dd', {}, sender.intercom_admin) : null,
      h('dt', {}, 'When'),
      h('dd', { 'data-fact': 'schedule' }, r.schedule?.send_immediately ? 'as soon as you press Send' : when(r.schedule?.scheduled_send_time)),
    ),
  );
}

function showCopy(c: Json, provisional: boolean) {
  const frame = h('iframe', { class: 'email', title: `Email for ${c.to}`, sandbox: '', referrerpolicy: 'no-referrer', 'data-email-for': c.to });
  // A separate document with scripts, forms, popups and navigation of this view all disabled (sandbox="").
  if (c.html) frame.srcdoc = `<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">${c.html}`;
  fill(
    'copy',
    h('div', { 'data-copy-for': c.to }, h('b', {}, 'To: '), c.to, ` (${c.client_id}, ${c.channel})`),
    c.subject !== undefined ? h('div', { 'data-subject': '' }, h('b', {}, 'Subject: '), c.subject) : null,
    c.html ? frame : null,
    h('h2', {}, c.html ? 'Text part' : 'Text'),
    h('pre', { class: 'text', 'data-text': '' }, c.text),
  );
  fill(
    'links',
    provisional
      ? h('p', { class: 'note' }, 'Reading the link targets…')
      : h(
          'div',
          {},
          h('p', {}, `${c.links.length} link target(s)`, c.images.length ? `, ${c.images.length} image source(s)` : ''),
          h('ul', { class: 'links', 'data-list': 'links' }, ...c.links.map((l: string) => h('li', {}, l))),
          c.images.length ? h('ul', { class: 'links', 'data-list': 'images' }, ...c.images.map((l: string) => h('li', {}, l))) : null,
        ),
  );
  if (!provisional) fill('copy-note');
}

function showLists(r: Json) {
  const more = (part: Json, what: string) => (part.matched > part.shown.length ? h('p', { class: 'note' }, `${part.matched - part.shown.length} more ${what} match; search to narrow.`) : null);
  fill(
    'recipients',
    h('p', { class: 'note' }, `${r.recipients.matched} of ${r.recipients.total} recipients${search ? ` match “${search}”` : ''}. Pick one to see their copy.`),
    h(
      'table',
      { 'data-table': 'recipients' },
      h('tbody', {}, ...r.recipients.shown.map((p: Json) => h('tr', {}, h('td', {}, h('button', { class: 'pick', 'data-pick': p.email, onclick: () => void review(p.email) }, p.email)), h('td', {}, p.client_id), h('td', {}, p.channels.join(', '))))),
    ),
    more(r.recipients, 'recipients'),
  );
  fill(
    'left-out',
    h('p', { class: 'note' }, `Excluded: ${r.excluded.matched} shown of ${r.excluded.total}${r.excluded.complete ? '' : ' (search covers the first 5,000)'}.`),
    table('excluded', ['Address', 'Client', 'Reason', 'Channel'], r.excluded.shown.map((e: Json) => [e.email, e.client_id, e.reason, e.channel ?? 'all'])),
    more(r.excluded, 'excluded contacts'),
    h('p', { class: 'note' }, `Held back: ${r.held_back.matched} shown of ${r.held_back.total}.`),
    table('held_back', ['Address', 'Client', 'Reason', 'Detail'], r.held_back.shown.map((e: Json) => [e.email, e.client_id, e.reason, e.detail])),
    more(r.held_back, 'held-back contacts'),
  );
}

async function send() {
  const button = document.getElementById('send-button') as HTMLButtonElement;
  button.disabled = true;
  fill('send-outcome', h('span', { class: 'note' }, 'Sending…'));
  try {
    const r = await callTool(app, 'send_reviewed_campaign', { campaign: campaignArgs(), confirmation_token: preview!.confirmation_token });
    fill('send-outcome', h('p', { class: 'ok', 'data-outcome': 'sent' }, `Queued ${r.queued} message(s): campaign ${r.campaign_id}. ${r.next_step}`));
  } catch (err) {
    // A refusal (changed since the preview, expired) sends nothing. Its fresh preview is shown only when
    // the person asks, and needs its own press of Send.
    const fresh = err instanceof ToolCallError ? (err.details.fresh_preview as Json | undefined) : undefined;
    fill(
      'send-outcome',
      h('p', { class: 'error', 'data-outcome': 'refused' }, (err as Error).message),
      fresh ? h('button', { id: 'show-fresh', onclick: () => showResult({ success: true, ...fresh }, false) }, 'Review the campaign as it is now') : null,
    );
  }
}

document.getElementById('search')!.addEventListener('input', (e) => {
  search = (e.target as HTMLInputElement).value.trim();
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => void review(document.querySelector('[data-copy-for]')?.getAttribute('data-copy-for') ?? undefined), 250);
});

app = await connectView('campaign-review', { onInput: (a) => (args = a), onResult: showResult });
