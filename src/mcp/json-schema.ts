/**
 * The published tool schemas must be read by every major client: some accept only one `type` per schema
 * (Gemini's dialect; Ajv in strict mode without allowUnionTypes), while zod writes a nullable field as
 * `type: ["string", "null"]`. Every `type` array is rewritten, recursively, into `anyOf` of single-type
 * schemas, each carrying the keywords that apply to its type. What validates is unchanged.
 */

type Json = Record<string, unknown>;

/** Keywords that only constrain values of one JSON type. */
const KEYWORDS_OF: Record<string, string[]> = {
  string: ['minLength', 'maxLength', 'pattern', 'format', 'contentEncoding', 'contentMediaType'],
  number: ['minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum', 'multipleOf'],
  integer: ['minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum', 'multipleOf'],
  array: ['items', 'prefixItems', 'minItems', 'maxItems', 'uniqueItems', 'contains', 'minContains', 'maxContains', 'unevaluatedItems'],
  object: ['properties', 'required', 'additionalProperties', 'patternProperties', 'propertyNames', 'minProperties', 'maxProperties', 'dependentRequired', 'dependentSchemas', 'unevaluatedProperties'],
  boolean: [],
  null: [],
};

function jsonTypeOf(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number') return Number.isInteger(v) ? 'integer' : 'number';
  return typeof v;
}

const matchesType = (value: unknown, type: string) => {
  const t = jsonTypeOf(value);
  return t === type || (type === 'number' && t === 'integer');
};

function splitTypeArray(node: Json): Json {
  const types = node.type as string[];
  if (types.length === 1) return { ...node, type: types[0] };
  if (node.anyOf !== undefined || node.oneOf !== undefined) throw new Error('a schema with both a type array and anyOf/oneOf cannot be published');
  const typed = new Set(types.flatMap((t) => KEYWORDS_OF[t] ?? []));
  const parent: Json = {};
  for (const [k, v] of Object.entries(node)) if (k !== 'type' && k !== 'enum' && k !== 'const' && !typed.has(k)) parent[k] = v;
  const branches = types
    .map((t) => {
      const branch: Json = { type: t };
      for (const k of KEYWORDS_OF[t] ?? []) if (k in node) branch[k] = node[k];
      if (Array.isArray(node.enum)) {
        const values = node.enum.filter((v) => matchesType(v, t));
        if (!values.length) return undefined;
        branch.enum = values;
      }
      if ('const' in node) {
        if (!matchesType(node.const, t)) return undefined;
        branch.const = node.const;
      }
      return branch;
    })
    .filter((b): b is Json => b !== undefined);
  return { ...parent, anyOf: branches };
}

/** A copy of the schema with no `type` array anywhere. */
export function withoutTypeArrays<T>(schema: T): T {
  if (Array.isArray(schema)) return schema.map((s) => withoutTypeArrays(s)) as T;
  if (!schema || typeof schema !== 'object') return schema;
  const node = Object.fromEntries(Object.entries(schema as Json).map(([k, v]) => [k, k === 'enum' || k === 'const' || k === 'default' || k === 'examples' ? v : withoutTypeArrays(v)]));
  return (Array.isArray(node.type) ? splitTypeArray(node) : node) as T;
}
