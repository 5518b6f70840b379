import { linkTargetsIn, targetKey, viewHtml } from '../safety/content-view.js';

/**
 * A message may carry only the link targets (URLs by host, email addresses) that the approved content
 * carries. A value substituted into a template (an event property, a client name changed after
 * approval) that adds one holds that message back (`unapproved_link`): the person approved the
 * template, not whatever a record says today.
 *
 * Besides the template's own targets, a message may name its recipient's and its sender's addresses
 * (and the sender's domain): `{{ contact.email }}` and `{{ sender.email }}` are fine.
 */

export const UNAPPROVED_LINK = 'unapproved_link';

export interface MessageParts {
  subject?: string;
  text?: string;
  html?: string;
}

/**
 * Every link target of a message's parts. `readHtml` also reads the HTML as a mail program does (entities
 * decoded); the guard does without (cheap on large audiences): values substituted into HTML are
 * escaped, so a value cannot hide a target in an entity, and both sides are read the same way.
 */
export function targetsOf(parts: MessageParts, readHtml = true): string[] {
  const out = new Set<string>();
  for (const t of linkTargetsIn(parts.subject ?? '')) out.add(t);
  for (const t of linkTargetsIn(parts.text ?? '')) out.add(t);
  if (parts.html) {
    for (const t of linkTargetsIn(parts.html)) out.add(t);
    if (readHtml) {
      const v = viewHtml(parts.html);
      for (const t of [...v.links, ...v.images]) out.add(t);
    }
  }
  return [...out];
}

const LIQUID = /\{\{[\s\S]*?\}\}|\{%[\s\S]*?%\}/g;
const PLACEHOLDER = 'csliquidvar';

export interface LinkGuard {
  /** The targets of a rendered message that the approved templates do not carry (empty: it may go). */
  unapproved(rendered: MessageParts, people: { recipient?: string | null; senders?: Array<string | undefined | null> }): string[];
}

/** A guard over the approved templates (Liquid sources: a value inside a link, e.g. a path, is allowed; a new host is not). */
export function linkGuard(templates: MessageParts[]): LinkGuard {
  const exact = new Set<string>();
  const patterns: RegExp[] = [];
  for (const t of templates) {
    const plain = (s?: string) => s?.replace(LIQUID, PLACEHOLDER);
    for (const target of targetsOf({ subject: plain(t.subject), text: plain(t.text), html: plain(t.html) }, false)) {
      const key = targetKey(target);
      if (!key.includes(PLACEHOLDER)) exact.add(key);
      else patterns.push(new RegExp(`^${key.split(PLACEHOLDER).map(escapeRe).join('[a-z0-9._%+-]+')}$`));
    }
  }
  return {
    unapproved(rendered, people) {
      const allowed = new Set(exact);
      if (people.recipient) allowed.add(targetKey(people.recipient));
      for (const a of people.senders ?? []) {
        if (!a) continue;
        allowed.add(targetKey(a));
        const domain = a.split('@')[1];
        if (domain) allowed.add(targetKey(domain));
      }
      return targetsOf(rendered, false).filter((t) => {
        const key = targetKey(t);
        return !allowed.has(key) && !patterns.some((p) => p.test(key));
      });
    },
  };
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
