import type { ClientCapabilities } from '@modelcontextprotocol/sdk/types.js';
import { ToolError } from '../result.js';
import { linkTargetsIn, viewHtml } from './content-view.js';
import { currentActor } from './actor.js';

/**
 * Human approval, through MCP elicitation, of every step that sends to customers. The model asks; a
 * person answers in the client's own UI; the tool proceeds only on an explicit "send".
 *
 * CS_MCP_APPROVAL:
 * - elicitation: a person must approve; a client without elicitation cannot send (clear error).
 * - auto (default): elicitation where the client supports it; elsewhere campaigns and automations keep
 *   their preview + confirmation token, and direct sends within the recipient limit go ahead.
 * - token: never elicitation; tokens for campaigns and automations.
 * Nothing in a tool's arguments can lower it.
 */

export const APPROVAL_POLICIES = ['elicitation', 'auto', 'token'] as const;
export type ApprovalPolicy = (typeof APPROVAL_POLICIES)[number];

export interface ApprovalRequest {
  /** What is being approved, for the audit and the message. */
  action: 'campaign_confirm' | 'direct_send' | 'workflow_activate' | 'workflow_resume' | 'workflow_run' | 'consent_override';
  /** Distinct people reached. */
  recipients: number;
  /** Messages sent: recipients × channels (× message steps). */
  messages: number;
  /** A few recipients, as people read them (addresses, names). */
  examples: string[];
  channel: string;
  /** From name and address, reply-to, Intercom admin: whatever applies. */
  sender?: { from?: string; reply_to?: string; intercom_admin?: string };
  /** "now", or when it goes out / starts. */
  when: string;
  /** Contacts added to the audience since the preview (confirmations refuse a changed audience, so usually 0). */
  added_since_preview?: number;
  /** The server's description of a consent override (whose unsubscribe is overridden). */
  consent_override?: string;
  /** Strings the model wrote (names, descriptions, reasons): shown quoted, one line each. */
  written?: Array<{ label: string; value: string | undefined }>;
  /** What customers read: one rendered copy, or more (e.g. the first and another recipient). */
  copies?: ApprovalCopy[];
  /** A SendGrid dynamic template: its name and active version's subject, as SendGrid holds them. */
  template?: { id: string; name?: string; subject?: string; unavailable?: string };
  /** Extra lines of the server's own (e.g. "3 excluded (unsubscribed: 3)"). */
  notes?: string[];
  /** Where the whole of what was not shown can be read, e.g. "the preview (… without confirmation_token)". */
  full_at?: string;
  /** Ask even under the direct-send threshold (e.g. a consent override). */
  always?: boolean;
  /** What only a person needs (e.g. a template read from SendGrid): fetched only when a person is asked, after every other check. */
  more?: () => Promise<Partial<ApprovalRequest>>;
}

/** One rendered message as a recipient receives it. */
export interface ApprovalCopy {
  /** Whose copy (an address); the dynamic data's owner for template sends. */
  to?: string;
  subject?: string;
  text?: string;
  html?: string;
  /** Per-recipient data (template dynamic_template_data), shown as JSON. */
  data?: unknown;
  /** Where this copy comes from, e.g. "step 2 (send_email)". */
  label?: string;
}

export type Approver = (request: ApprovalRequest) => Promise<ApprovalOutcome>;

/** How the call was approved: by a person, or (where policy allows) by the confirmation token / without asking. */
export type ApprovalOutcome = { by: 'person' } | { by: 'policy'; why: string };

export interface ElicitationPort {
  capabilities(): ClientCapabilities | undefined;
  /** The protocol version the client negotiated (older ones get the legacy enumNames form). */
  protocolVersion?(): string | undefined;
  /** Sends elicitation/create for the current request; resolves with the client's answer. */
  elicit(message: string, schema: ElicitSchema, timeoutMs: number): Promise<{ action: 'accept' | 'decline' | 'cancel'; content?: Record<string, unknown> }>;
}

export interface ElicitSchema {
  type: 'object';
  properties: Record<
    string,
    | { type: 'string'; title: string; description?: string; oneOf: Array<{ const: string; title: string }> }
    | { type: 'string'; title: string; description?: string; enum: string[]; enumNames: string[] }
  >;
  required: string[];
}

export interface ApprovalGateOptions {
  policy: ApprovalPolicy;
  /** Direct sends to at least this many recipients need a person (where one can be asked). */
  threshold: number;
  timeoutMs: number;
  /** Told each request's action and outcome (metrics): approved_by_person, approved_by_policy, declined, cancelled, no_answer, refused_no_elicitation. */
  onOutcome?: (action: ApprovalRequest['action'], outcome: string) => void;
}

/** Form-mode elicitation: declared as `elicitation: {}` (the original form) or with `form`. */
export function supportsElicitation(caps: ClientCapabilities | undefined): boolean {
  const e = caps?.elicitation as { form?: unknown; url?: unknown } | undefined;
  if (!e) return false;
  return e.form !== undefined || e.url === undefined;
}

/** Builds the approver of one tool call from the policy and what the calling client supports. */
export function createApprover(opts: ApprovalGateOptions, port: ElicitationPort): Approver {
  const decide = approverOf(opts, port);
  const report = opts.onOutcome;
  if (!report) return decide;
  return async (req) => {
    try {
      const outcome = await decide(req);
      report(req.action, outcome.by === 'person' ? 'approved_by_person' : 'approved_by_policy');
      return outcome;
    } catch (err) {
      report(req.action, refusalOf(err));
      throw err;
    }
  };
}

/** How an approval request that did not approve ended, from the error the approver threw. */
function refusalOf(err: unknown): string {
  if (!(err instanceof ToolError)) return 'error';
  if (err.code === 'forbidden') return 'refused_no_elicitation';
  const action = err.details?.action;
  return action === 'no_answer' ? 'no_answer' : action === 'cancel' ? 'cancelled' : 'declined';
}

function approverOf(opts: ApprovalGateOptions, port: ElicitationPort): Approver {
  return async (req) => {
    const supported = supportsElicitation(port.capabilities());
    const needsPerson = req.action !== 'direct_send' || req.always === true || req.recipients >= opts.threshold;
    if (opts.policy === 'token' || !needsPerson) {
      return { by: 'policy', why: opts.policy === 'token' ? 'CS_MCP_APPROVAL=token' : `below CS_MCP_APPROVAL_THRESHOLD (${opts.threshold})` };
    }
    if (!supported) {
      if (opts.policy === 'elicitation' || req.always) {
        throw new ToolError(
          'forbidden',
          `A person must approve this ${describe(req.action)}, but this MCP client does not support elicitation (asking the user). Nothing was sent. ` +
            'Use a client that supports MCP elicitation, or ask the server operator to change CS_MCP_APPROVAL' +
            (req.always ? ' (an override of a contact\'s unsubscribe always needs a person unless CS_MCP_APPROVAL=token).' : '.'),
          { details: { policy: 'approval_required', approval: opts.policy } },
        );
      }
      return { by: 'policy', why: 'client without elicitation: confirmation token / recipient limit apply' };
    }
    let answer;
    try {
      const full = req.more ? { ...req, ...(await req.more()) } : req;
      answer = await port.elicit(messageFor(full), schemaFor(port.protocolVersion?.()), opts.timeoutMs);
    } catch (err) {
      throw new ToolError('declined', `No answer to the approval request (${(err as Error).message}). Nothing was sent.`, {
        details: { policy: 'approval_required', action: 'no_answer' },
      });
    }
    if (answer.action === 'accept' && answer.content?.decision === 'send') return { by: 'person' };
    const how =
      answer.action === 'accept'
        ? 'answered "No, send nothing" to the approval request'
        : answer.action === 'decline'
          ? 'declined the approval request'
          : 'cancelled the approval request';
    throw new ToolError('declined', `The user ${how}: nothing was sent. Do not retry unless the user asks again.`, {
      details: { policy: 'approval_required', action: answer.action },
    });
  };
}

function describe(action: ApprovalRequest['action']): string {
  return {
    campaign_confirm: 'campaign',
    direct_send: 'send',
    workflow_activate: 'automation',
    workflow_resume: 'automation',
    workflow_run: 'automation run',
    consent_override: 'resubscribe (a consent override)',
  }[action];
}

/** The first revision whose elicitation schema has the titled single-select form (oneOf of const + title). */
const TITLED_ENUM_SINCE = '2025-11-25';

const CHOICES = [
  { const: 'send', title: 'Yes, send' },
  { const: 'do_not_send', title: 'No, send nothing' },
];

/** The approval form: the titled single-select of the 2025-11-25 revision; the legacy enumNames form for clients that negotiated an older one. */
export function schemaFor(protocolVersion: string | undefined): ElicitSchema {
  const title = 'Send these messages to customers?';
  const legacy = protocolVersion !== undefined && protocolVersion < TITLED_ENUM_SINCE; // versions are ISO dates
  return {
    type: 'object',
    properties: {
      decision: legacy
        ? { type: 'string', title, enum: CHOICES.map((c) => c.const), enumNames: CHOICES.map((c) => c.title) }
        : { type: 'string', title, oneOf: CHOICES },
    },
    required: ['decision'],
  };
}

/** Characters of one assistant-written string shown (names, subjects, reasons). */
const LINE_CHARS = 200;
/** Characters of one message copy's text shown. */
const COPY_CHARS = 2_500;
/** Link targets / image sources listed per copy, and characters of each. */
const LIST_ITEMS = 40;
const URL_CHARS = 2_000;
/** Characters of per-recipient data shown. */
const DATA_CHARS = 800;

const ACTION_TEXT: Record<ApprovalRequest['action'], string> = {
  campaign_confirm: 'send a campaign',
  direct_send: 'send a message now',
  workflow_activate: 'activate an automation (it then sends by itself)',
  workflow_resume: 'resume an automation (it then sends by itself)',
  workflow_run: 'run an automation now',
  consent_override: 'resubscribe an address: lift its opt-out, so it can be messaged again',
};

/** One line: control characters and line breaks (any Unicode separator) become visible, length capped. */
export function oneLine(value: string, max = LINE_CHARS): string {
  const flat = value
    .replace(/\r\n|[\r\n\u0085\u2028\u2029]/g, ' ⏎ ')
    .replace(/[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]/g, '\ufffd')
    .replace(/\s+/g, ' ')
    .trim();
  return flat.length > max ? `${flat.slice(0, max)}… [${flat.length - max} more characters not shown]` : flat;
}

/** A model-written string as the person reads it: one line, capped, in quotes. */
const quoted = (v: string, max = LINE_CHARS) => `“${oneLine(v, max)}”`;

/** Body text: every line prefixed, so no line of it can pass for a line of the server's own. */
function block(text: string, max: number): { lines: string[]; cut: number } {
  const clean = text.replace(/\r\n?/g, '\n').replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]/g, '\ufffd').replace(/[\u0085\u2028\u2029]/g, '\n');
  const shown = clean.length > max ? clean.slice(0, max) : clean;
  const lines = shown.replace(/\n{3,}/g, '\n\n').trim().split('\n').map((l) => `  | ${l}`);
  return { lines, cut: clean.length - shown.length };
}

const normal = (s: string) => s.replace(/\s+/g, ' ').trim().toLowerCase();

/**
 * What the person reads. The server's own facts first, in a fixed order; then every string the
 * assistant wrote, quoted and one line each; then each copy as the customer reads it — the HTML's own
 * words when there is HTML, every link target and image source — and, for anything not shown, how
 * much and where to read it in full.
 */
export function messageFor(req: ApprovalRequest): string {
  const lines: string[] = [];
  const notShown: string[] = [];
  lines.push('APPROVAL REQUEST. Facts from the server:');
  lines.push(`1. Action: ${ACTION_TEXT[req.action]}`);
  lines.push(`2. Recipients: ${req.recipients}; messages: ${req.messages}`);
  lines.push(`3. Channels: ${req.channel}`);
  const s = req.sender ?? {};
  lines.push(
    `4. Sender: ${[
      `from ${s.from ? oneLine(s.from) : '(the provider default)'}`,
      `reply-to ${s.reply_to ? oneLine(s.reply_to) : 'none set'}`,
      ...(s.intercom_admin ? [`Intercom admin ${oneLine(s.intercom_admin)}`] : []),
    ].join('; ')}`,
  );
  lines.push(`5. When: ${oneLine(req.when)}`);
  lines.push(
    `6. Contacts added since the preview: ${req.added_since_preview ?? 'not bound (an active automation reaches whoever meets its trigger from now on)'}`,
  );
  lines.push(`7. Consent override: ${req.consent_override ? oneLine(req.consent_override, 600) : 'none'}`);
  // With sign-in, who asks is a fact from the access token, not something the assistant wrote.
  const signedIn = currentActor();
  if (signedIn) lines.push(`- Requested by (signed in): ${oneLine(signedIn.label)}`);
  if (req.examples.length) {
    lines.push(`8. Recipients include: ${req.examples.slice(0, 5).map((e) => quoted(e, 120)).join(', ')}${req.recipients > Math.min(5, req.examples.length) ? ', …' : ''}`);
  }
  for (const n of req.notes ?? []) lines.push(`- ${oneLine(n, 600)}`);
  if (req.template) {
    const t = req.template;
    lines.push(
      `Template ${oneLine(t.id, 80)}: ${t.unavailable ? `not readable from SendGrid (${oneLine(t.unavailable)}); the content is SendGrid's, not shown here` : `name ${quoted(t.name ?? '(none)')}, active version subject ${quoted(t.subject ?? '(none)')}`}`,
    );
  }

  const written = (req.written ?? []).filter((w) => w.value !== undefined && w.value !== '');
  if (written.length) {
    lines.push('', 'Written by the assistant (quoted; not checked by the server):');
    for (const w of written) lines.push(`- ${w.label}: ${quoted(w.value!)}`);
  }

  (req.copies ?? []).forEach((c, i) => {
    const who = c.to ? ` for ${quoted(c.to, 120)}` : '';
    lines.push('', `Message ${i + 1}${c.label ? ` (${oneLine(c.label, 80)})` : ''}${who}, as the customer receives it (written by the assistant):`);
    if (c.subject !== undefined) lines.push(`Subject: ${quoted(c.subject, 400)}`);
    const links: string[] = [];
    const images: string[] = [];
    if (c.html) {
      const view = viewHtml(c.html);
      links.push(...view.links);
      images.push(...view.images);
      lines.push('Text of the HTML (what the customer sees):');
      const b = block(view.text, COPY_CHARS);
      lines.push(...b.lines);
      if (b.cut) notShown.push(`${b.cut} characters of message ${i + 1}'s HTML text`);
      if (c.text !== undefined && normal(c.text) !== normal(view.text)) {
        lines.push('WARNING: the plain-text part says something different from the HTML (mail programs show one or the other). Plain-text part:');
        const t = block(c.text, Math.min(COPY_CHARS, 1_500));
        lines.push(...t.lines);
        if (t.cut) notShown.push(`${t.cut} characters of message ${i + 1}'s plain-text part`);
      }
    } else if (c.text !== undefined) {
      lines.push('Text:');
      const b = block(c.text, COPY_CHARS);
      lines.push(...b.lines);
      if (b.cut) notShown.push(`${b.cut} characters of message ${i + 1}'s text`);
    }
    for (const t of linkTargetsIn([c.subject ?? '', c.html ? '' : (c.text ?? '')].join('\n'))) if (!links.includes(t)) links.push(t);
    if (c.html && c.text) for (const t of linkTargetsIn(c.text)) if (!links.includes(t)) links.push(t);
    const list = (title: string, items: string[]) => {
      lines.push(`${title} (${items.length}):${items.length ? '' : ' none'}`);
      for (const u of items.slice(0, LIST_ITEMS)) lines.push(`  - ${oneLine(u, URL_CHARS)}`);
      if (items.length > LIST_ITEMS) notShown.push(`${items.length - LIST_ITEMS} more ${title.toLowerCase()} of message ${i + 1}`);
    };
    list('Link targets', links);
    list('Image sources', images);
    if (c.data !== undefined) {
      const json = JSON.stringify(c.data) ?? 'null';
      lines.push(`Dynamic data: ${oneLine(json, DATA_CHARS)}`);
    }
  });
  if (notShown.length) {
    lines.push('', `NOT SHOWN HERE: ${notShown.join('; ')}.${req.full_at ? ` Read it in full in ${req.full_at}.` : ''}`);
  }
  lines.push('', 'Choose "Yes, send" to send, or "No, send nothing".');
  return lines.join('\n');
}
