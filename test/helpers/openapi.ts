import fs from 'node:fs';
import path from 'node:path';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import YAML from 'yaml';

/** The provider API descriptions shipped beside the repository (../shared/contracts). */
export const CONTRACTS_DIR = path.resolve(import.meta.dirname, '../../../shared/contracts');

export interface ValidationResult {
  valid: boolean;
  errors: string[];
}

type Doc = {
  openapi: string;
  paths: Record<string, Record<string, any>>;
  components?: Record<string, any>;
};

const pointer = (parts: string[]) => parts.map((p) => p.replace(/~/g, '~0').replace(/\//g, '~1')).join('/');

/**
 * A provider's published OpenAPI description, used to check that our requests (and our stand-ins'
 * expectations) agree with it. `patch` edits the loaded document before compiling, for the known
 * defects listed in shared/contracts/README.md; each caller says which it patches and why.
 */
export class OpenApiContract {
  private readonly ajv: Ajv;
  private readonly compiled = new Map<string, ValidateFunction>();
  private readonly templates: Array<{ template: string; regex: RegExp }>;

  constructor(
    readonly doc: Doc,
    readonly name: string,
  ) {
    const is31 = doc.openapi.startsWith('3.1');
    this.ajv = is31
      ? (new Ajv2020({ strict: false, allErrors: true, validateFormats: true }) as unknown as Ajv)
      : new Ajv({ strict: false, allErrors: true, validateFormats: true });
    (addFormats as unknown as (a: Ajv) => void)(this.ajv);
    this.ajv.addSchema(doc as object, name);
    this.templates = Object.keys(doc.paths).map((template) => ({
      template,
      regex: new RegExp(`^${template.replace(/[.*+?^$()|[\]\\]/g, '\\$&').replace(/\\?\{[^}]+\\?\}/g, '[^/]+')}$`),
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
    // Prefer the template with the fewest parameters (literal segments beat {params}).
    const hits = this.templates.filter((t) => t.regex.test(p));
    hits.sort((a, b) => (a.template.match(/\{/g)?.length ?? 0) - (b.template.match(/\{/g)?.length ?? 0));
    return hits[0]?.template;
  }

  operation(method: string, template: string): any {
    return this.doc.paths[template]?.[method.toLowerCase()];
  }

  /** Validates a JSON request body against the operation's declared request schema. */
  validateRequestBody(method: string, actualPath: string, body: unknown, contentType = 'application/json'): ValidationResult {
    // Exact keys first: some descriptions (Mixpanel) key paths with a #fragment per operation.
    const template = this.doc.paths[actualPath] ? actualPath : this.matchPath(actualPath);
    if (!template) return { valid: false, errors: [`${this.name}: no path matches ${actualPath}`] };
    const op = this.operation(method, template);
    if (!op) return { valid: false, errors: [`${this.name}: ${method.toUpperCase()} ${template} is not an operation`] };
    const bodyRef: string | undefined = op.requestBody?.$ref;
    const content = bodyRef ? this.resolve(bodyRef)?.content : op.requestBody?.content;
    if (!content) {
      return body === undefined || body === null || body === ''
        ? { valid: true, errors: [] }
        : { valid: false, errors: [`${method.toUpperCase()} ${template} declares no request body`] };
    }
    const mediaType = Object.keys(content).find((m) => m.startsWith(contentType)) ?? Object.keys(content)[0]!;
    const key = `${method.toLowerCase()} ${template} ${mediaType}`;
    let validate = this.compiled.get(key);
    if (!validate) {
      const base = bodyRef ? bodyRef.replace(/^#\//, '') : pointer(['paths', template, method.toLowerCase(), 'requestBody']);
      const ref = `${this.name}#/${base}/${pointer(['content', mediaType, 'schema'])}`;
      validate = this.ajv.compile({ $ref: ref });
      this.compiled.set(key, validate);
    }
    const valid = validate(body) as boolean;
    return { valid, errors: valid ? [] : formatErrors(validate.errors) };
  }

  /** Validates any value against a named component schema (e.g. a response object). */
  validateComponent(schemaName: string, value: unknown): ValidationResult {
    const key = `component ${schemaName}`;
    let validate = this.compiled.get(key);
    if (!validate) {
      validate = this.ajv.compile({ $ref: `${this.name}#/components/schemas/${schemaName}` });
      this.compiled.set(key, validate);
    }
    const valid = validate(value) as boolean;
    return { valid, errors: valid ? [] : formatErrors(validate.errors) };
  }

  private resolve(ref: string): any {
    const parts = ref.replace(/^#\//, '').split('/');
    let node: any = this.doc;
    for (const p of parts) node = node?.[p.replace(/~1/g, '/').replace(/~0/g, '~')];
    return node;
  }
}

function formatErrors(errors: ErrorObject[] | null | undefined): string[] {
  return (errors ?? []).map((e) => `${e.instancePath || '(body)'} ${e.message ?? ''} ${JSON.stringify(e.params)}`.trim());
}
