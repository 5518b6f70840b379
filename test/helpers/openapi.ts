import fs from 'node:fs';
import path from 'node:path';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import YAML from 'yaml';

/** The provider API descriptions vendored with the tests (see test/contracts/README.md). */
export const CONTRACTS_DIR = path.resolve(import.meta.dirname, '../contracts');

export interface ValidationResult {
  valid: boolean;
  errors: string[];
}

type Doc = {
  openapi: string;
  paths: Record<string, Record<string, any>>;
  components?: Record<string, any>;
};

export interface RequestToValidate {
  method: string;
  /** The actual path, or the description's own key for it (Mixpanel keys /engage per operation: `/engage#profile-set`). */
  path: string;
  query?: URLSearchParams;
  body?: unknown;
  contentType?: string;
}

const pointer = (parts: string[]) => parts.map((p) => p.replace(/~/g, '~0').replace(/\//g, '~1')).join('/');
const ok: ValidationResult = { valid: true, errors: [] };

/**
 * A provider's published OpenAPI description, used to check that our requests — path, query and
 * body — agree with it, and that the stand-ins answer as it says the provider answers. `patch` edits
 * the loaded document before compiling, for the known defects listed in test/contracts/README.md;
 * each caller says which it patches and why.
 */
export class OpenApiContract {
  private readonly ajv: Ajv;
  private readonly compiled = new Map<string, ValidateFunction>();
  private readonly templates: Array<{ template: string; regex: RegExp; params: string[] }>;

  constructor(
    readonly doc: Doc,
    readonly name: string,
  ) {
    normalizeNullable(doc, doc.openapi.startsWith('3.1'));
    const options = { strict: false, allErrors: true, validateFormats: true, logger: false as const };
    this.ajv = doc.openapi.startsWith('3.1') ? (new Ajv2020(options) as unknown as Ajv) : new Ajv(options);
    (addFormats as unknown as (a: Ajv) => void)(this.ajv);
    this.ajv.addSchema(doc as object, name);
    this.templates = Object.keys(doc.paths).map((template) => ({
      template,
      regex: new RegExp(`^${template.replace(/[.*+?^$()|[\]\\]/g, '\\$&').replace(/\\?\{[^}]+\\?\}/g, '([^/]+)')}$`),
      params: [...template.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]!),
    }));
  }

  static load(file: string, patch?: (doc: Doc) => void): OpenApiContract {
    const doc = YAML.parse(fs.readFileSync(path.join(CONTRACTS_DIR, file), 'utf8'), { maxAliasCount: -1 }) as Doc;
    patch?.(doc);
    return new OpenApiContract(doc, file);
  }

  /** The path template (e.g. `/contacts/{contact_id}/tags`) an actual request path falls under. */
  matchPath(actualPath: string): string | undefined {
    const p = actualPath.split('?')[0]!;
    if (this.doc.paths[p]) return p; // exact keys first (literal segments, Mixpanel's #fragments)
    // Prefer the template with the fewest parameters (literal segments beat {params}).
    const hits = this.templates.filter((t) => t.regex.test(p));
    hits.sort((a, b) => a.params.length - b.params.length);
    return hits[0]?.template;
  }

  operation(method: string, template: string): any {
    return this.doc.paths[template]?.[method.toLowerCase()];
  }

  /** Whether the description has an operation for this method and path at all. */
  has(method: string, actualPath: string): boolean {
    const template = this.matchPath(actualPath);
    return template !== undefined && this.operation(method, template) !== undefined;
  }

  /** Validates a whole request: that the operation exists, its path and query parameters, and its JSON body. */
  validateRequest(req: RequestToValidate): ValidationResult {
    const method = req.method.toUpperCase();
    const template = this.matchPath(req.path);
    if (!template) return { valid: false, errors: [`${this.name}: no path matches ${req.path}`] };
    const op = this.operation(method, template);
    if (!op) return { valid: false, errors: [`${this.name}: ${method} ${template} is not an operation`] };
    const errors = [
      ...this.checkParameters(method, template, op, req.path, req.query ?? new URLSearchParams()),
      ...this.checkBody(method, template, op, req.body, req.contentType ?? 'application/json'),
    ];
    return { valid: errors.length === 0, errors };
  }

  /**
   * Validates a JSON response body against the schema the description declares for this operation
   * and status (exact status, then `4XX`-style ranges, then `default`). A status or body the
   * description says nothing about is not checked.
   */
  validateResponse(method: string, actualPath: string, status: number, body: unknown): ValidationResult {
    const template = this.matchPath(actualPath);
    const op = template && this.operation(method, template);
    if (!template || !op?.responses) return ok;
    const key = [String(status), `${String(status)[0]}XX`, 'default'].find((k) => op.responses[k] !== undefined);
    if (!key) return ok;
    let base = ['paths', template, method.toLowerCase(), 'responses', key];
    let response = op.responses[key];
    if (response.$ref) {
      base = response.$ref.replace(/^#\//, '').split('/').map(unescapePointer);
      response = this.resolve(response.$ref);
    }
    const mediaType = Object.keys(response?.content ?? {}).find((m) => /json/.test(m));
    if (!mediaType || !response.content[mediaType].schema) return ok;
    if (body === undefined || body === '') return { valid: false, errors: [`${status} must carry a JSON body (${mediaType})`] };
    return this.run(`response ${base.join('/')}`, `${pointer(base)}/${pointer(['content', mediaType, 'schema'])}`, body);
  }

  private checkBody(method: string, template: string, op: any, body: unknown, contentType: string): string[] {
    const bodyRef: string | undefined = op.requestBody?.$ref;
    const requestBody = bodyRef ? this.resolve(bodyRef) : op.requestBody;
    const content = requestBody?.content;
    const empty = body === undefined || body === null || body === '';
    if (!content) return empty ? [] : [`${method} ${template} declares no request body`];
    if (empty) return requestBody.required ? [`${method} ${template} requires a body`] : [];
    const mediaType = Object.keys(content).find((m) => m.startsWith(contentType)) ?? Object.keys(content)[0]!;
    const base = bodyRef ? pointer(bodyRef.replace(/^#\//, '').split('/').map(unescapePointer)) : pointer(['paths', template, method.toLowerCase(), 'requestBody']);
    return this.run(`${method} ${template} ${mediaType}`, `${base}/${pointer(['content', mediaType, 'schema'])}`, body).errors;
  }

  /** Path and query parameters: required ones present, each value of the declared type, no undeclared query names. */
  private checkParameters(method: string, template: string, op: any, actualPath: string, query: URLSearchParams): string[] {
    // Each parameter with the JSON pointer of its schema in the document, so nested $refs resolve.
    const at = (list: any[] | undefined, base: string[]) =>
      (list ?? []).map((p: any, i: number) => {
        const where = p.$ref ? p.$ref.replace(/^#\//, '').split('/').map(unescapePointer) : [...base, String(i)];
        return { p: p.$ref ? this.resolve(p.$ref) : p, schemaRef: pointer([...where, 'schema']) };
      });
    const declared = [
      ...at(this.doc.paths[template]!.parameters, ['paths', template, 'parameters']),
      ...at(op.parameters, ['paths', template, method.toLowerCase(), 'parameters']),
    ];
    const errors: string[] = [];
    const t = this.templates.find((x) => x.template === template)!;
    const pathValues = t.regex.exec(actualPath.split('?')[0]!);
    for (const { p, schemaRef } of declared) {
      if (p.in !== 'query' && p.in !== 'path') continue;
      let values: string[];
      if (p.in === 'path') {
        const i = t.params.indexOf(p.name);
        values = i >= 0 && pathValues?.[i + 1] !== undefined ? [decodeURIComponent(pathValues[i + 1]!)] : [];
      } else values = query.getAll(p.name);
      if (!values.length) {
        if (p.required) errors.push(`${p.in} parameter ${p.name} is required`);
        continue;
      }
      if (!p.schema) continue;
      const schema = p.schema.$ref ? { ...this.resolve(p.schema.$ref), ...p.schema } : p.schema;
      const candidates = schema.type === 'array' ? [values.map((v) => coerce(v, schema.items))] : values.map((v) => coerce(v, schema));
      for (const v of candidates) {
        const r = this.run(`parameter ${schemaRef}`, schemaRef, v);
        errors.push(...r.errors.map((e) => `${p.in} parameter ${p.name}=${JSON.stringify(v)}: ${e.replace(/^\(body\) /, '')}`));
      }
    }
    const known = new Set(declared.filter(({ p }) => p.in === 'query').map(({ p }) => p.name));
    for (const name of new Set(query.keys())) if (!known.has(name)) errors.push(`query parameter ${name} is not declared for ${method} ${template}`);
    return errors;
  }

  private run(key: string, ref: string, value: unknown): ValidationResult {
    let validate = this.compiled.get(key);
    if (!validate) {
      validate = this.ajv.compile({ $ref: `${this.name}#/${ref}` });
      this.compiled.set(key, validate);
    }
    const valid = validate(value) as boolean;
    return { valid, errors: valid ? [] : formatErrors(validate.errors) };
  }

  private resolve(ref: string): any {
    let node: any = this.doc;
    for (const p of ref.replace(/^#\//, '').split('/')) node = node?.[unescapePointer(p)];
    return node;
  }
}

/**
 * `nullable`, read as the authors meant it. OpenAPI 3.0.3 says `nullable: true` adds null to an
 * explicit `type` only, and means nothing without one (Ajv refuses to compile it there, so it is
 * removed). 3.1 has no `nullable` (null is a type), yet SendGrid's 3.1 files still use it: there it
 * becomes `type: [type, "null"]`.
 */
function normalizeNullable(node: any, is31: boolean): void {
  if (!node || typeof node !== 'object') return;
  if (!Array.isArray(node) && node.nullable !== undefined) {
    if (is31 && node.nullable === true && typeof node.type === 'string') node.type = [node.type, 'null'];
    if (is31 || node.type === undefined) delete node.nullable;
  }
  for (const child of Object.values(node)) normalizeNullable(child, is31);
}

const unescapePointer = (p: string) => p.replace(/~1/g, '/').replace(/~0/g, '~');

/** Query and path values arrive as strings: read them as the schema's type says. */
function coerce(value: string, schema: any): unknown {
  const type = Array.isArray(schema?.type) ? schema.type.find((t: string) => t !== 'null') : schema?.type;
  if ((type === 'integer' || type === 'number') && value.trim() !== '' && Number.isFinite(Number(value))) return Number(value);
  if (type === 'boolean' && (value === 'true' || value === 'false')) return value === 'true';
  return value;
}

function formatErrors(errors: ErrorObject[] | null | undefined): string[] {
  return (errors ?? []).map((e) => `${e.instancePath || '(body)'} ${e.message ?? ''} ${JSON.stringify(e.params)}`.trim());
}
