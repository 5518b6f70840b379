import fs from 'node:fs';
import { z } from 'zod';
import { withoutTypeArrays } from './json-schema.js';
import { annotationsFor, publishedOutputSchema, type AnyToolDefinition, type ToolKind } from './tool.js';

/**
 * What tools/list publishes, and how it is answered before the tools themselves are loaded.
 *
 * Input schemas are published in full: the model reads them, so their descriptions stay. Output schemas
 * are published compact (see compactOutput): the server checks every result against the tool's exact
 * zod shape before it leaves (register.ts), so the published one only has to hold for every result a
 * client can receive, and repeating the campaign-status, workflow and error shapes with their prose in
 * many tools made the list 184 KB, 64 % of it output schemas.
 */

type Json = Record<string, unknown>;

/** JSON Schema every major client reads (no `type` arrays: see json-schema.ts). */
export function jsonSchema(schema: z.ZodType, io: 'input' | 'output') {
  const out = withoutTypeArrays(z.toJSONSchema(schema, { io, unrepresentable: 'any' }) as Json);
  delete out.$schema;
  return withoutRestatements(out) as { type: 'object'; [k: string]: unknown };
}

/**
 * Keywords zod writes that only restate what the schema already says, left out of the listing:
 * - ±(2^53 − 1) on every `.int()`: bounds any JSON number already has, 50 bytes each;
 * - its own regex beside every `format` it knows (`email`, `date-time`): the format names the
 *   constraint and clients check it by name (the date-time regex alone is 330 bytes, eleven times).
 * The server still validates every argument and result with the zod schema itself.
 */
function withoutRestatements<T>(node: T): T {
  if (Array.isArray(node)) return node.map(withoutRestatements) as T;
  if (!node || typeof node !== 'object') return node;
  const hasFormat = typeof (node as Json).format === 'string';
  const out: Json = {};
  for (const [k, v] of Object.entries(node as Json)) {
    if ((k === 'minimum' && v === Number.MIN_SAFE_INTEGER) || (k === 'maximum' && v === Number.MAX_SAFE_INTEGER)) continue;
    if (k === 'pattern' && hasFormat) continue;
    out[k] = k === 'enum' || k === 'const' || k === 'default' || k === 'examples' ? v : withoutRestatements(v);
  }
  return out as T;
}

/** Objects and arrays nested deeper than this under a result's top-level fields are published as their type alone. */
export const OUTPUT_SCHEMA_DEPTH = 1;

/**
 * The published output schema, compact: types, required fields and enums down to OUTPUT_SCHEMA_DEPTH,
 * no prose, and no `additionalProperties: false` (a client validates against it; it does not have to
 * reject what it does not know). Everything it leaves out is still checked server-side, exactly.
 */
export function compactOutput(schema: Json, depth = 0): Json {
  const out: Json = {};
  const container = schema.type === 'object' || schema.type === 'array';
  if (container && depth > OUTPUT_SCHEMA_DEPTH) return { type: schema.type };
  for (const [k, v] of Object.entries(schema)) {
    if (k === 'description' || k === 'title' || (k === 'additionalProperties' && v === false)) continue;
    if (k === 'propertyNames') continue; // JSON object keys are strings already
    if (k === 'required' && depth > 0) continue; // nested fields: their types, not which are present
    if (k === 'properties') out[k] = Object.fromEntries(Object.entries(v as Json).map(([p, s]) => [p, compactOutput(s as Json, depth + 1)]));
    else if ((k === 'items' || k === 'additionalProperties') && v && typeof v === 'object') out[k] = compactOutput(v as Json, depth + 1);
    else if (k === 'anyOf' || k === 'oneOf' || k === 'allOf') out[k] = (v as Json[]).map((s) => compactOutput(s, depth));
    else out[k] = v;
  }
  return out;
}

/** The error body every tool can return, once, short: the fields a client needs to tell what happened. */
const ERROR_OUTPUT: Json = {
  type: 'object',
  properties: { code: { type: 'string' }, message: { type: 'string' }, retryable: { type: 'boolean' } },
  required: ['code', 'message', 'retryable'],
};

export function outputSchemaOf(tool: AnyToolDefinition): { type: 'object'; [k: string]: unknown } {
  const full = compactOutput(jsonSchema(publishedOutputSchema(tool), 'output'));
  const properties = full.properties as Json;
  properties.error = ERROR_OUTPUT;
  properties.result_truncated = { type: 'object' };
  return full as { type: 'object'; [k: string]: unknown };
}

export interface ListedTool {
  name: string;
  title: string;
  description: string;
  inputSchema: { type: 'object'; [k: string]: unknown };
  outputSchema: { type: 'object'; [k: string]: unknown };
  annotations: ReturnType<typeof annotationsFor>;
  /** Only for clients that show views (see views.ts listingFor). */
  _meta?: Record<string, unknown>;
}

export function listedTool(t: AnyToolDefinition): ListedTool {
  return {
    name: t.name,
    title: t.title,
    description: t.description,
    inputSchema: jsonSchema(t.input, 'input'),
    outputSchema: outputSchemaOf(t),
    annotations: annotationsFor(t),
  };
}

/** What `npm run build` writes beside the code, so tools/list needs neither the tool modules nor the services. */
export interface PrebuiltEntry {
  toolset: string;
  kind: ToolKind;
  listed: ListedTool;
}

export const PREBUILT_LISTING_FILE = new URL('../tool-listing.json', import.meta.url);

export function prebuiltEntries(tools: AnyToolDefinition[]): PrebuiltEntry[] {
  return tools.map((t) => ({ toolset: t.toolset, kind: t.kind, listed: listedTool(t) }));
}

/** The listing written at build time, or undefined when there is none (a build without the listing step). */
export function readPrebuiltListing(file: URL = PREBUILT_LISTING_FILE): PrebuiltEntry[] | undefined {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as PrebuiltEntry[];
  } catch {
    return undefined;
  }
}
