import { createRequire } from 'node:module';
import type { HtmlToTextOptions } from 'html-to-text';

/**
 * What a message carries, read the way a person (and a mail program) would: the words of the HTML as
 * text (html-to-text), every link target and image source in it, and the link targets (URLs, email
 * addresses) of any text. The approval dialog shows these; delivery compares them with what was
 * approved (see linkGuard).
 */

export interface HtmlView {
  /** The HTML's own words, as text, links shown as [target]. */
  text: string;
  /** Every href (a, area), in order, without duplicates. */
  links: string[];
  /** Every image source. */
  images: string[];
}

const HTML_LIMITS: HtmlToTextOptions['limits'] = { maxInputLength: 2_000_000, ellipsis: '…' };

/**
 * html-to-text (and its HTML parser) is loaded on the first message that has HTML, not when this module
 * is: the configuration and the MCP wiring import this module, and loading the parser with them cost a
 * stdio client some 65 ms before `initialize` was answered.
 */
const requireFromHere = createRequire(import.meta.url);
let convertHtml: typeof import('html-to-text').convert | undefined;
const convert: typeof import('html-to-text').convert = (html, options) => {
  convertHtml ??= (requireFromHere('html-to-text') as typeof import('html-to-text')).convert;
  return convertHtml(html, options);
};

/** A faithful text rendering of an HTML body, with the link targets and image sources it carries. */
export function viewHtml(html: string): HtmlView {
  const links: string[] = [];
  const images: string[] = [];
  const add = (list: string[], v: unknown) => {
    if (typeof v === 'string' && v.trim() && !list.includes(v.trim())) list.push(v.trim());
  };
  const text = convert(html, {
    wordwrap: false,
    limits: HTML_LIMITS,
    formatters: {
      csLink(elem, walk, builder) {
        walk(elem.children, builder);
        const href = (elem.attribs as Record<string, string> | undefined)?.href;
        add(links, href);
        if (href) builder.addInline(` [${href.trim()}]`, { noWordTransform: true });
      },
      csImage(elem, _walk, builder) {
        const a = (elem.attribs ?? {}) as Record<string, string>;
        add(images, a.src);
        builder.addInline(`[image${a.alt ? ` "${a.alt}"` : ''}${a.src ? `: ${a.src.trim()}` : ''}]`, { noWordTransform: true });
      },
    },
    selectors: [
      { selector: 'a', format: 'csLink' },
      { selector: 'area', format: 'csLink' },
      { selector: 'img', format: 'csImage' },
    ],
  });
  // Links a mail program would make of the words themselves (a bare URL, an address).
  for (const t of linkTargetsIn(text)) if (!links.includes(t) && !images.includes(t)) add(links, t);
  return { text, links, images };
}

// Each pattern may start only where a run of its characters starts (the lookbehinds): tried at every
// position of a long run instead, a scan cost time quadratic in the run (a 40,000-letter rendered body
// stalled the event loop for seconds; a customer's record could do it on purpose).
const URL_RE = /(?<![a-z0-9+.-])(?:[a-z][a-z0-9+.-]*:\/\/|www\.)[^\s<>"'`]+/gi;
const MAILTO_RE = /(?<![a-z0-9+.-])mailto:[^\s<>"'`]+/gi;
const EMAIL_RE = /(?<![a-z0-9._%+-])[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}/gi;
/** A bare domain, as mail programs turn "evil.example/login" into a link. */
const DOMAIN_RE = /(?<![@\w.-])(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z]{2,24}(?:\/[^\s<>"'`]*)?(?![\w@-])/gi;

const trimTail = (s: string) => s.replace(/[.,;:!?)\]}>]+$/, '');

/** Every URL and email address a text carries (as written, trailing punctuation removed). */
export function linkTargetsIn(text: string): string[] {
  const out = new Set<string>();
  let rest = text;
  for (const re of [MAILTO_RE, URL_RE, EMAIL_RE, DOMAIN_RE]) {
    for (const m of rest.matchAll(re)) out.add(trimTail(m[0]));
    rest = rest.replace(re, ' '); // a URL's host is not also a bare domain, an address not also a domain
  }
  return [...out].filter(Boolean);
}

/** The comparable identity of a link target: a host (for URLs and bare domains), or an email address. */
export function targetKey(target: string): string {
  const t = target.trim().toLowerCase();
  if (t.startsWith('mailto:')) return `addr:${decodeURIComponent(t.slice(7).split('?')[0]!)}`;
  if (/^[^/:@\s]+@[^@\s]+$/.test(t)) return `addr:${t}`;
  const m = /^(?:[a-z][a-z0-9+.-]*:\/\/)?(?:[^@/\s]*@)?([^/:?#\s]+)/.exec(t);
  return `host:${(m?.[1] ?? t).replace(/^www\./, '')}`;
}

/** A name stored as one line: line breaks, control and invisible formatting characters become a space. */
export function singleLine(value: string): string {
  return value
    .replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]+/g, ' ')
    .replace(/\s+/g, ' ')
    .trim();
}
