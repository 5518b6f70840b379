import { z } from 'zod';
import { Drop, Liquid, type FilterImplOptions, type Template } from 'liquidjs';
import { invalidInput } from '../result.js';

/**
 * Personalization with Liquid, sandboxed: no file system (includes resolve against an empty in-memory
 * map), own properties only, bounded parse/render time and memory, no JavaScript evaluation.
 *
 * A value that is missing (absent, null or empty) renders through `fallback` / `default` as usual; used
 * anywhere else it makes the recipient's render fail with the variable named, so the recipient is held
 * back instead of seeing "Hi ," or a raw {{…}}.
 */

/** The variables a campaign's templates may use; automations add `workflow` and `event` (see automations/render.ts). */
export const SCOPE_ROOTS = ['contact', 'client', 'sender', 'campaign', 'tokens'] as const;

/** A value the template asked for that the recipient does not have. Passes through filters unchanged. */
class MissingValue extends Drop {
  constructor(readonly path: string) {
    super();
  }
  override liquidMethodMissing(key: string | number): MissingValue {
    return new MissingValue(`${this.path}.${String(key)}`);
  }
  override valueOf(): null {
    return null; // falsy in {% if %}, empty for `default`
  }
}

/**
 * Characters a value from a record (a contact, a client, an event's properties) may have to be
 * substituted: a longer one renders as missing (the recipient is held back, or the template's
 * fallback is used), so a record cannot pour a page of text into an approved message.
 */
export const MAX_VALUE_CHARS = 1_000;

/** A record exposed to templates: present, non-empty fields only; anything else is a MissingValue. */
class RecordDrop extends Drop {
  constructor(
    private readonly path: string,
    data: Record<string, unknown>,
    capped = true,
  ) {
    super();
    for (const [k, v] of Object.entries(data)) {
      if (v === null || v === undefined || v === '') continue;
      if (capped && typeof v === 'string' && v.length > MAX_VALUE_CHARS) {
        (this as Record<string, unknown>)[k] = new MissingValue(`${path}.${k} (${v.length} characters, over the ${MAX_VALUE_CHARS}-character limit of a substituted value)`);
        continue;
      }
      (this as Record<string, unknown>)[k] =
        typeof v === 'object' && !Array.isArray(v) && !(v instanceof Date) ? new RecordDrop(`${path}.${k}`, v as Record<string, unknown>, capped) : v;
    }
  }
  override liquidMethodMissing(key: string | number): MissingValue {
    return new MissingValue(`${this.path}.${String(key)}`);
  }
}

const TOLERANT_FILTERS = new Set(['fallback', 'default']);

class MissingValueUsed extends Error {
  constructor(readonly path: string) {
    super(`missing value: ${path}`);
  }
}

/**
 * The longest template any field takes (characters): body_html, of campaigns and automation email steps.
 * The Liquid parser's own limit is this same figure, so a field within its schema maximum always parses
 * as far as length goes; every template field's schema maximum is at most this.
 */
export const MAX_TEMPLATE_CHARS = 500_000;
/** A plain-text body (campaign body_text, automation step bodies). */
export const MAX_TEXT_TEMPLATE_CHARS = 100_000;

/** A Liquid template field of at most `max` characters (≤ MAX_TEMPLATE_CHARS), refused past it with the figure. */
export function templateString(max: number = MAX_TEMPLATE_CHARS) {
  if (max > MAX_TEMPLATE_CHARS) throw new Error(`a template field cannot exceed MAX_TEMPLATE_CHARS (${MAX_TEMPLATE_CHARS})`);
  return z.string().max(max, `a template is at most ${max} characters`);
}

/** How an output value is escaped: not at all (plain text), for HTML, or for Slack's mrkdwn (`&`, `<`, `>`). */
type Escaping = 'none' | 'html' | 'slack';

/** Slack's own escaping: the three characters its markup is made of, so a value can form no mention, link or command. */
function escapeSlack(v: unknown): unknown {
  if (v === null || v === undefined) return v;
  return String(v).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

function createEngine(escaping: Escaping): Liquid {
  const engine = new Liquid({
    templates: {}, // no file system: {% include %} / {% render %} can read nothing
    ownPropertyOnly: true,
    strictFilters: true,
    parseLimit: MAX_TEMPLATE_CHARS,
    renderLimit: 1_000,
    memoryLimit: 10_000_000,
  });
  // Intercom's syntax: {{ contact.first_name | fallback: "there" }}.
  engine.registerFilter('fallback', engine.filters.default!);
  // Every other filter refuses a missing input or argument: the output would silently be blank.
  for (const [name, impl] of Object.entries(engine.filters)) {
    if (TOLERANT_FILTERS.has(name)) continue;
    const original = impl as FilterImplOptions;
    const handler = typeof original === 'function' ? original : original.handler;
    const guarded = function (this: unknown, ...args: unknown[]) {
      for (const a of args) if (a instanceof MissingValue) throw new MissingValueUsed(a.path);
      return (handler as (...a: unknown[]) => unknown).apply(this, args);
    };
    engine.registerFilter(name, typeof original === 'function' ? guarded : { ...original, handler: guarded });
  }
  // Outputs with no filter at all end up here (outputEscape runs last on every output).
  const escape = engine.filters.escape as (...a: unknown[]) => unknown;
  engine.registerFilter('__cs_output', function (this: unknown, v: unknown) {
    if (v instanceof MissingValue) throw new MissingValueUsed(v.path);
    return escaping === 'html' ? escape.call(this, v) : escaping === 'slack' ? escapeSlack(v) : v;
  });
  (engine.options as { outputEscape?: unknown }).outputEscape = engine.filters.__cs_output;
  return engine;
}

const textEngine = createEngine('none');
const htmlEngine = createEngine('html');
const slackEngine = createEngine('slack');

export interface TemplateSources {
  subject: string;
  text: string;
  html?: string;
}

export interface CompiledTemplates {
  subject: Template[];
  text: Template[];
  html?: Template[];
  /** The parameter each part came from, for messages. */
  fields: Record<keyof TemplateSources, string>;
  /** Subject and text are Slack text: every substituted value is escaped for Slack. */
  slack?: boolean;
}

const CAMPAIGN_FIELDS: Record<keyof TemplateSources, string> = { subject: 'subject_line', text: 'body_text', html: 'body_html' };

export interface CompileOptions {
  /** Variable roots the templates may use (default: a campaign's). */
  roots?: readonly string[];
  /** The parameter names of the parts, for messages (default: a campaign's subject_line, body_text, body_html). */
  fields?: Record<keyof TemplateSources, string>;
  /**
   * The text is posted to Slack: every value a template substitutes is escaped for Slack (`&` `<` `>`),
   * so customer data can form no mention (`<!channel>`), link or command; the template's own markup stays.
   */
  slack?: boolean;
}

/** Parses all parts once; a syntax error or an unknown variable root is invalid_input naming the field. */
export function compileTemplates(src: TemplateSources, tokenNames: string[], opts: CompileOptions = {}): CompiledTemplates {
  const allowedRoots = opts.roots ?? SCOPE_ROOTS;
  const FIELD_OF = opts.fields ?? CAMPAIGN_FIELDS;
  const known = new Set<string>([...allowedRoots, ...tokenNames]);
  const out: Partial<CompiledTemplates> = { fields: FIELD_OF, ...(opts.slack ? { slack: true } : {}) };
  for (const key of ['subject', 'text', 'html'] as const) {
    const source = src[key];
    if (source === undefined) continue;
    const engine = engineFor(key, opts.slack);
    let parsed: Template[];
    try {
      parsed = engine.parse(source);
    } catch (err) {
      if (source.length > MAX_TEMPLATE_CHARS) {
        // Not a syntax problem: the same limit the schemas state (reached only by a caller that skipped them).
        throw invalidInput(`${FIELD_OF[key]}: a template is at most ${MAX_TEMPLATE_CHARS} characters (got ${source.length}). Shorten it and call again.`, { field: FIELD_OF[key] });
      }
      throw invalidInput(`${FIELD_OF[key]} is not a valid template: ${(err as Error).message.split('\n')[0]}. Fix the Liquid syntax and call again.`, {
        field: FIELD_OF[key],
      });
    }
    if (key !== 'html' && opts.slack && /\|\s*raw\b/.test(source)) {
      // Slack text escapes every value; `raw` would let a client's name post <!channel> or a disguised link.
      throw invalidInput(
        `${FIELD_OF[key]} uses the raw filter, which is not available: every value in a Slack message is escaped for Slack. Write fixed markup (mentions, links) in the template itself.`,
        { field: FIELD_OF[key] },
      );
    }
    if (key === 'html' && /\|\s*raw\b/.test(source)) {
      // HTML bodies escape every value; `raw` would let a contact's own value (from an import, a webhook) inject markup.
      throw invalidInput(
        `${FIELD_OF[key]} uses the raw filter, which is not available: every value in an HTML body is HTML-escaped. Write fixed markup in the template itself.`,
        { field: FIELD_OF[key] },
      );
    }
    let roots: Set<string>;
    try {
      roots = new Set(engine.globalVariableSegmentsSync(parsed).map((seg) => String(seg[0])));
    } catch (err) {
      // Static analysis follows includes; there are none to follow in the sandbox.
      throw invalidInput(
        `${FIELD_OF[key]} cannot be used: ${(err as Error).message.split('\n')[0]}. Templates are self-contained: {% include %}, {% render %} and {% layout %} are not available.`,
        { field: FIELD_OF[key] },
      );
    }
    const unknown = [...roots].filter((r) => !known.has(r));
    if (unknown.length) {
      throw invalidInput(
        `${FIELD_OF[key]} uses ${unknown.map((u) => `{{ ${u} }}`).join(', ')}, which ${unknown.length === 1 ? 'is' : 'are'} not known. ` +
          `Use ${allowedRoots.filter((r) => r !== 'tokens').map((r) => `${r}.*`).join(', ')}${allowedRoots.includes('tokens') ? ', or pass a value in personalization_tokens' : ''}.`,
        { field: FIELD_OF[key], unknown_variables: unknown },
      );
    }
    out[key] = parsed;
  }
  return out as CompiledTemplates;
}

function engineFor(key: keyof TemplateSources, slack: boolean | undefined): Liquid {
  return key === 'html' ? htmlEngine : slack ? slackEngine : textEngine;
}

/** One record per variable root (contact, client, …); `tokens` are also usable bare ({{ promo }}). */
export type RenderScope = Record<string, Record<string, unknown>> & { tokens?: Record<string, unknown> };

export type RenderOutcome =
  | { ok: true; subject: string; text: string; html?: string }
  | { ok: false; missing: string[]; reason: 'missing_value' | 'unrendered_template_syntax' | 'render_error'; detail: string };

const LEFTOVER_SYNTAX = /\{\{|\}\}|\{%|%\}/;

/** Limits of one recipient's render; the caller divides a total budget into them. */
export interface RenderLimits {
  /** Milliseconds for each part's render. */
  timeMs: number;
  /** Characters each rendered part may have. */
  maxChars: number;
}

export const DEFAULT_RENDER_LIMITS: RenderLimits = { timeMs: 250, maxChars: 1_000_000 };
/** Output nodes (tags, text, values) one part may render: bounds loops whatever the machine's speed. */
const TEMPLATE_LIMIT = 200_000;
const MEMORY_LIMIT = 20_000_000;

/** Renders every part for one recipient; never returns text containing Liquid syntax. */
export function renderForRecipient(compiled: CompiledTemplates, scope: RenderScope, limits: RenderLimits = DEFAULT_RENDER_LIMITS): RenderOutcome {
  const context: Record<string, unknown> = { ...scope.tokens };
  // The assistant's own tokens are part of the approved content; record values (contact, client, event…) are capped.
  for (const [root, data] of Object.entries(scope)) context[root] = new RecordDrop(root, data ?? {}, root !== 'tokens');
  const FIELD_OF = compiled.fields;
  const parts: Record<string, string> = {};
  for (const key of ['subject', 'text', 'html'] as const) {
    const tpl = compiled[key];
    if (!tpl) continue;
    try {
      parts[key] = engineFor(key, compiled.slack).renderSync(tpl, context, {
        renderLimit: Math.max(1, limits.timeMs),
        templateLimit: TEMPLATE_LIMIT,
        memoryLimit: MEMORY_LIMIT,
      }) as string;
    } catch (err) {
      const missing = findMissing(err);
      if (missing) return { ok: false, reason: 'missing_value', missing: [missing], detail: `${FIELD_OF[key]} needs ${missing}, which is empty for this recipient (add | fallback: "…" to send anyway)` };
      return { ok: false, reason: 'render_error', missing: [], detail: `${FIELD_OF[key]}: ${(err as Error).message.split('\n')[0]}` };
    }
    if (parts[key]!.length > limits.maxChars) {
      return { ok: false, reason: 'render_error', missing: [], detail: `${FIELD_OF[key]} renders to more than ${limits.maxChars} characters for this recipient` };
    }
    if (LEFTOVER_SYNTAX.test(parts[key]!)) {
      return { ok: false, reason: 'unrendered_template_syntax', missing: [], detail: `${FIELD_OF[key]} would show raw template syntax to the customer` };
    }
  }
  // A subject is one header line: line breaks from a contact's value must never reach the provider.
  const subject = (parts.subject ?? '').replace(/[\r\n]+/g, ' ').trim();
  if (subject === '') {
    return { ok: false, reason: 'missing_value', missing: [], detail: `${FIELD_OF.subject} renders empty for this contact` };
  }
  if (subject.length > 998) {
    return { ok: false, reason: 'render_error', missing: [], detail: `${FIELD_OF.subject} renders to more than 998 characters for this contact` };
  }
  return { ok: true, subject, text: parts.text ?? '', html: parts.html };
}

function findMissing(err: unknown): string | undefined {
  for (let e: unknown = err, depth = 0; e && depth < 6; depth++) {
    if (e instanceof MissingValueUsed) return e.path;
    e = (e as { originalError?: unknown; cause?: unknown }).originalError ?? (e as { cause?: unknown }).cause;
  }
  const m = /missing value: ([\w.[\]-]+(?: \([^)]*\))?)/.exec(String((err as Error)?.message ?? ''));
  return m?.[1];
}
