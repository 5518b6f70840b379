/**
 * What every view shares: the connection to the host (the extension's App class over postMessage), DOM
 * building that never parses strings as HTML (every value is set as text, so everything shown is
 * escaped by construction), and small SVG charts.
 *
 * Charts are plain SVG rather than a charting library: the views draw bars, a funnel and one line, each
 * a few dozen lines here; uPlot or Chart.js would add 50-200 KB to every view for that, and SVG prints
 * its numbers as attributes the browser tests read back.
 */
import { App } from '@modelcontextprotocol/ext-apps';

export type Json = Record<string, any>;

type Child = Node | string | number | null | undefined | false;

/** An element with attributes and children; strings become text nodes (never HTML). */
export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, string | number | boolean | ((e: Event) => void) | undefined> = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === false) continue;
    if (typeof v === 'function') el.addEventListener(k.replace(/^on/, ''), v as EventListener);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el: Element, children: Child[]) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    el.append(typeof c === 'string' || typeof c === 'number' ? document.createTextNode(String(c)) : c);
  }
}

const SVG = 'http://www.w3.org/2000/svg';
export function s(tag: string, attrs: Record<string, string | number> = {}, ...children: Child[]): SVGElement {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  append(el, children);
  return el;
}

/** Replaces the children of the element with the given id. */
export function fill(id: string, ...children: Child[]): HTMLElement {
  const el = document.getElementById(id)!;
  el.replaceChildren();
  append(el, children);
  return el;
}

export const COLORS: Record<string, string> = {
  sent: '#2f9e44',
  delivered: '#2f9e44',
  queued: '#868e96',
  sending: '#1c7ed6',
  failed: '#e03131',
  unknown: '#f08c00',
  cancelled: '#adb5bd',
  skipped: '#ced4da',
  opened: '#1971c2',
  clicked: '#6741d9',
  bounced: '#e8590c',
  unsubscribed: '#c2255c',
  dropped: '#fa5252',
  spam_reported: '#a61e4d',
  replied: '#0b7285',
};

export interface Bar {
  label: string;
  value: number;
  color?: string;
}

/** Horizontal bars, one per value, labelled with the number. `name` marks the chart for tests (data-chart). */
export function barChart(name: string, bars: Bar[], width = 420): SVGElement {
  const row = 24;
  const labelW = 120;
  const max = Math.max(1, ...bars.map((b) => b.value));
  const svg = s('svg', { width, height: bars.length * row + 4, viewBox: `0 0 ${width} ${bars.length * row + 4}`, 'data-chart': name, role: 'img' });
  bars.forEach((b, i) => {
    const y = i * row + 2;
    const w = Math.round(((width - labelW - 60) * b.value) / max);
    const g = s('g', { 'data-label': b.label, 'data-value': b.value });
    g.append(
      s('text', { x: 0, y: y + 15, 'font-size': 12 }, b.label),
      s('rect', { x: labelW, y: y + 3, width: Math.max(w, b.value > 0 ? 2 : 0), height: row - 8, rx: 3, fill: b.color ?? COLORS[b.label] ?? '#495057' }),
      s('text', { x: labelW + w + 6, y: y + 15, 'font-size': 12 }, String(b.value)),
    );
    svg.append(g);
  });
  return svg;
}

/** One bar split into parts (e.g. a campaign's messages by state), with a legend. */
export function stackedBar(name: string, parts: Bar[], width = 420): HTMLElement {
  const total = parts.reduce((n, p) => n + p.value, 0);
  const svg = s('svg', { width, height: 22, viewBox: `0 0 ${width} 22`, 'data-chart': name, 'data-total': total, role: 'img' });
  let x = 0;
  for (const p of parts) {
    const w = total ? (width * p.value) / total : 0;
    svg.append(s('rect', { x, y: 0, width: w, height: 22, fill: p.color ?? COLORS[p.label] ?? '#495057', 'data-label': p.label, 'data-value': p.value }));
    x += w;
  }
  const legend = h('div', { class: 'legend' }, ...parts.filter((p) => p.value > 0).map((p) => h('span', {}, h('i', { style: `background:${p.color ?? COLORS[p.label] ?? '#495057'}` }), `${p.label} ${p.value}`)));
  return h('div', {}, svg as unknown as Node, legend);
}

/** A line over time (x: ISO dates, y: 0..100). */
export function lineChart(name: string, points: Array<{ at: string; value: number }>, width = 420, height = 120): SVGElement {
  const svg = s('svg', { width, height, viewBox: `0 0 ${width} ${height}`, 'data-chart': name, 'data-points': points.length, role: 'img' });
  if (!points.length) return svg;
  const times = points.map((p) => Date.parse(p.at));
  const t0 = Math.min(...times);
  const t1 = Math.max(...times);
  const x = (t: number) => 30 + (t1 === t0 ? (width - 40) / 2 : ((t - t0) / (t1 - t0)) * (width - 40));
  const y = (v: number) => height - 16 - (Math.max(0, Math.min(100, v)) / 100) * (height - 26);
  svg.append(s('line', { x1: 30, y1: y(0), x2: width - 10, y2: y(0), stroke: '#ced4da' }), s('text', { x: 0, y: y(100) + 4, 'font-size': 10 }, '100'), s('text', { x: 8, y: y(0) + 4, 'font-size': 10 }, '0'));
  svg.append(s('polyline', { points: points.map((p, i) => `${x(times[i]!)},${y(p.value)}`).join(' '), fill: 'none', stroke: '#1c7ed6', 'stroke-width': 2 }));
  points.forEach((p, i) => svg.append(s('circle', { cx: x(times[i]!), cy: y(p.value), r: 3, fill: '#1c7ed6', 'data-at': p.at, 'data-value': p.value }, s('title', {}, `${p.at}: ${p.value}`))));
  return svg;
}

/** A table of rows; every cell is text. */
export function table(name: string, head: string[], rows: Array<Array<string | number | null | undefined>>): HTMLTableElement {
  return h(
    'table',
    { 'data-table': name },
    h('thead', {}, h('tr', {}, ...head.map((c) => h('th', {}, c)))),
    h('tbody', {}, ...rows.map((r) => h('tr', {}, ...r.map((c) => h('td', {}, c === null || c === undefined ? '—' : String(c)))))),
  );
}

export interface ViewHooks {
  /** The arguments of the tool call the view belongs to. */
  onInput?(args: Json): void;
  /** The tool's result (structuredContent), or its error. */
  onResult(result: Json, isError: boolean): void;
}

/** Connects to the host and hands the view its tool input and result. */
export async function connectView(name: string, hooks: ViewHooks): Promise<App> {
  const app = new App({ name, version: '1.0.0' }, {}, { autoResize: true });
  app.ontoolinput = (p) => hooks.onInput?.((p.arguments ?? {}) as Json);
  app.ontoolresult = (r) => hooks.onResult((r.structuredContent ?? {}) as Json, r.isError === true);
  await app.connect();
  return app;
}

/** Calls a server tool through the host; returns structuredContent, throwing the tool's error message. */
export async function callTool(app: App, name: string, args: Json): Promise<Json> {
  const r = await app.callServerTool({ name, arguments: args });
  const sc = (r.structuredContent ?? {}) as Json;
  if (r.isError || sc.success === false) throw new ToolCallError(sc.error?.message ?? 'the tool call failed', sc.error?.details ?? {});
  return sc;
}

/** A tool's error result: its message, and its details (e.g. a refused confirmation's fresh preview). */
export class ToolCallError extends Error {
  constructor(
    message: string,
    readonly details: Json,
  ) {
    super(message);
  }
}

export const when = (iso: string | null | undefined) => (iso ? new Date(iso).toLocaleString('en-GB', { timeZone: 'UTC', dateStyle: 'medium', timeStyle: 'short' }) + ' UTC' : '—');
