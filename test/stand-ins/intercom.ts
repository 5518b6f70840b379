import { randomBytes, randomUUID } from 'node:crypto';
import { OpenApiContract } from '../helpers/openapi.js';
import { HttpStandIn, type RecordedRequest, type Reply, type StandInOptions } from './http-stand-in.js';

/**
 * A local Intercom (API 2.14) for tests: the endpoints the integration uses, in-memory state, answers
 * shaped like Intercom's, Bearer auth, X-RateLimit-* headers, fault injection, and every request and
 * answer validated against test/contracts/intercom-2.14.yaml. Contact search honours the description's
 * operators and AND/OR nesting (with its limits), pages with `starting_after` cursors, counts every
 * match, and lags creation (`searchLagMs`); a lead may share a user's email, as in Intercom.
 */

let contract: OpenApiContract | undefined;

/**
 * The published description with the defects test/contracts/README.md lists patched in this test copy
 * (the real API and intercom-client disagree with the file; our client must not bend to it):
 * 1. create_message_request.message_type: the real API uses `inapp`, not `in_app`;
 * 2. create_message_request.from.id: admin ids are strings (GET /me returns strings);
 * 3. POST /contacts/{contact_id}/notes contact_id: a hex string, not an integer (path parameter);
 * 4. create_data_event_request.metadata: values may be numbers and booleans too, not only strings.
 * 5. URLs the description itself calls relative (and shows as `/contacts/…/tags` in its examples) are
 *    typed `format: uri`, which requires an absolute URI: they are checked as `uri-reference`.
 * 6. addressable_list.type (`note`, `tag`, `company` in its own examples) is typed `format: uri`.
 */
export function intercomContract(): OpenApiContract {
  contract ??= OpenApiContract.load('intercom-2.14.yaml', (doc: any) => {
    const msg = doc.components.schemas.create_message_request.properties;
    msg.message_type.enum = ['inapp', 'email'];
    msg.from.properties.id = { type: 'string' };
    const notes = doc.paths['/contacts/{contact_id}/notes'].post.parameters.find((p: any) => p.name === 'contact_id');
    notes.schema = { type: 'string' };
    doc.components.schemas.create_data_event_request.properties.metadata.additionalProperties = {
      oneOf: [{ type: 'string' }, { type: 'number' }, { type: 'boolean' }],
    };
    relativeUrisAsReferences(doc.components.schemas);
    delete doc.components.schemas.addressable_list.properties.type.format;
  });
  return contract;
}

function relativeUrisAsReferences(node: any): void {
  if (!node || typeof node !== 'object') return;
  const relative = (typeof node.example === 'string' && node.example.startsWith('/')) || /relative/i.test(String(node.description ?? ''));
  if (node.format === 'uri' && relative) node.format = 'uri-reference';
  for (const child of Object.values(node)) relativeUrisAsReferences(child);
}

interface StoredContact {
  type: 'contact';
  id: string;
  workspace_id: string;
  external_id: string | null;
  role: 'user' | 'lead';
  email: string | null;
  phone: string | null;
  name: string | null;
  custom_attributes: Record<string, unknown>;
  created_at: number;
  updated_at: number;
  signed_up_at: number | null;
  last_seen_at: number | null;
  tags: string[];
  /** When it becomes visible to search (Intercom's search lags creation). */
  searchableAt: number;
}

const errorList = (status: number, code: string, message: string): Reply => ({
  status,
  body: { type: 'error.list', request_id: randomUUID(), errors: [{ code, message }] },
});

export interface IntercomStandInOptions extends Partial<StandInOptions> {
  token?: string;
  adminId?: string;
  /** How long a created contact stays invisible to POST /contacts/search. */
  searchLagMs?: number;
  /**
   * Email searches (`=`, `IN`) also return contacts whose email merely contains the value searched
   * (joann@… for ann@…), as a tokenised search may: a client must check what it gets back.
   */
  looseEmailSearch?: boolean;
  /**
   * The API version set in the app's settings (Developer Hub), which Intercom answers in when a request
   * names none. Default '2.11': an app made before 2.14, as most are.
   */
  appVersion?: string;
}

/** The versions the description lists (components.schemas.intercom_version); the stand-in speaks 2.14. */
let knownVersions: string[] | undefined;
const SPOKEN_VERSION = '2.14';

export class IntercomStandIn extends HttpStandIn {
  readonly contacts = new Map<string, StoredContact>();
  readonly tags = new Map<string, { type: 'tag'; id: string; name: string }>();
  readonly messages: Array<{ id: string; to: { id: string; type: string }; message_type: string; subject?: string; body: string; from: unknown }> = [];
  readonly notes: Array<{ id: string; contact_id: string; body: string; admin_id: string }> = [];
  readonly events: Array<Record<string, unknown>> = [];
  readonly tickets: Array<{ id: string; ticket_type_id: string; contact_id: string; attributes: Record<string, unknown> }> = [];
  searchLagMs: number;

  constructor(readonly options: IntercomStandInOptions = {}) {
    const token = options.token ?? 'intercom-test-token';
    super(
      {
        name: 'intercom',
        contracts: [intercomContract()],
        violationBody: (message) => errorList(422, 'contract_violation', message).body,
        authorize: (r) => (r.headers.authorization === `Bearer ${token}` ? undefined : errorList(401, 'unauthorized', 'Access Token Invalid')),
        rateLimitedBody: { type: 'error.list', request_id: randomUUID(), errors: [{ code: 'rate_limit_exceeded', message: 'Rate Limit Exceeded' }] },
        ...options,
      },
      (r) => this.routeRequest(r),
    );
    this.searchLagMs = options.searchLagMs ?? 0;
  }

  /** Adds a contact directly (test setup), searchable at once. */
  seedContact(c: { email: string; external_id?: string; name?: string; role?: 'user' | 'lead' }): StoredContact {
    const now = Math.floor(Date.now() / 1000);
    const contact: StoredContact = {
      type: 'contact',
      id: randomBytes(12).toString('hex'),
      workspace_id: 'ws1',
      external_id: c.external_id ?? null,
      role: c.role ?? 'user',
      email: c.email.toLowerCase(),
      phone: null,
      name: c.name ?? null,
      custom_attributes: {},
      created_at: now,
      updated_at: now,
      signed_up_at: null,
      last_seen_at: null,
      tags: [],
      searchableAt: 0,
    };
    this.contacts.set(contact.id, contact);
    return contact;
  }

  private view(c: StoredContact) {
    const { searchableAt: _hidden, tags, ...rest } = c;
    return { ...rest, tags: { type: 'list', data: tags.map((id) => ({ type: 'tag', id, url: `/tags/${id}` })), url: '/contacts/tags', total_count: tags.length, has_more: false } };
  }

  /**
   * POST /contacts/search as the description documents it: single filters and AND/OR groups (at most
   * 2 levels of nesting, 15 filters a group), each operator only on the field types it supports,
   * matches in creation order, `per_page` (default 50, at most 150) pages joined by `starting_after`.
   */
  private search(b: Record<string, any>): Reply {
    let matches: (c: StoredContact) => boolean;
    try {
      matches = compileQuery(b.query, 0, this.options.looseEmailSearch === true);
    } catch (err) {
      return errorList(400, 'invalid_query', (err as Error).message);
    }
    const perPage = b.pagination?.per_page ?? 50;
    if (!Number.isInteger(perPage) || perPage < 1 || perPage > 150) return errorList(400, 'parameter_invalid', 'per_page must be between 1 and 150');
    const all = [...this.contacts.values()].filter((c) => c.searchableAt <= Date.now() && matches(c));
    const offset = b.pagination?.starting_after ? Number(Buffer.from(String(b.pagination.starting_after), 'base64url').toString()) : 0;
    if (!Number.isInteger(offset) || offset < 0) return errorList(400, 'parameter_invalid', 'starting_after is not a cursor this API issued');
    const data = all.slice(offset, offset + perPage).map((c) => this.view(c));
    const totalPages = Math.ceil(all.length / perPage);
    const next = offset + perPage < all.length ? { per_page: perPage, starting_after: Buffer.from(String(offset + perPage)).toString('base64url') } : undefined;
    return {
      status: 200,
      body: { type: 'list', data, total_count: all.length, pages: { type: 'pages', page: Math.floor(offset / perPage) + 1, per_page: perPage, total_pages: totalPages, ...(next ? { next } : {}) } },
    };
  }

  /**
   * The `Intercom-Version` header as Intercom treats it: a version it does not know is refused (400,
   * `intercom_version_invalid`); no header means the app's own default version, whose shapes may differ
   * from 2.14's. The stand-in only speaks 2.14, so a request answered in another version (no header and
   * an older app default, or another listed version) is a recorded violation: our client would be reading
   * answers the vendored description does not describe.
   */
  private checkVersion(r: RecordedRequest): Reply | undefined {
    knownVersions ??= (intercomContract().doc as any).components.schemas.intercom_version.enum as string[];
    const header = r.headers['intercom-version'];
    const asked = Array.isArray(header) ? header[0] : header;
    if (asked !== undefined && !knownVersions.includes(asked)) {
      return errorList(400, 'intercom_version_invalid', `The requested version could not be recognized: ${JSON.stringify(asked)}`);
    }
    const effective = asked ?? this.options.appVersion ?? '2.11';
    if (effective === SPOKEN_VERSION) return undefined;
    const why = asked === undefined ? `no Intercom-Version header: Intercom answers in the app's default version ${effective}` : `Intercom-Version ${effective}`;
    const message = `${r.method} ${r.path}: ${why}, not the ${SPOKEN_VERSION} the vendored description (and this stand-in) describes`;
    this.violations.push({ kind: 'request', request: `${r.method} ${r.path}`, errors: [message] });
    return errorList(422, 'contract_violation', `Contract violation (stand-in intercom): ${message}`);
  }

  private routeRequest(r: RecordedRequest): Reply | undefined {
    const wrongVersion = this.checkVersion(r);
    if (wrongVersion) return wrongVersion;
    const b = (r.body ?? {}) as Record<string, any>;
    const now = Math.floor(Date.now() / 1000);
    let m: RegExpExecArray | null;
    if (r.method === 'GET' && r.path === '/me') {
      return { status: 200, body: { type: 'admin', id: this.options.adminId ?? '991', name: 'Test Admin', email: 'admin@ourco.test', email_verified: true, app: { type: 'app', id_code: 'abc123' } } };
    }
    if (r.method === 'POST' && r.path === '/contacts/search') return this.search(b);
    if (r.method === 'POST' && r.path === '/contacts') {
      const email = b.email ? String(b.email).toLowerCase() : null;
      const role = b.role === 'lead' ? 'lead' : 'user';
      // Users are unique by email and external_id; leads may share an email with a user or each other.
      const dup =
        role === 'user' &&
        [...this.contacts.values()].find((c) => c.role === 'user' && ((email && c.email === email) || (b.external_id && c.external_id === b.external_id)));
      if (dup) return errorList(409, 'conflict', `A contact matching those details already exists with id=${dup.id}`);
      const c: StoredContact = {
        type: 'contact',
        id: randomBytes(12).toString('hex'),
        workspace_id: 'ws1',
        external_id: b.external_id ?? null,
        role,
        email,
        phone: b.phone ?? null,
        name: b.name ?? null,
        custom_attributes: b.custom_attributes ?? {},
        created_at: now,
        updated_at: now,
        signed_up_at: b.signed_up_at ?? null,
        last_seen_at: null,
        tags: [],
        searchableAt: Date.now() + this.searchLagMs,
      };
      this.contacts.set(c.id, c);
      return { status: 200, body: this.view(c) };
    }
    if ((m = /^\/contacts\/([^/]+)$/.exec(r.path))) {
      const c = this.contacts.get(m[1]!);
      if (!c) return errorList(404, 'not_found', 'User Not Found');
      if (r.method === 'GET') return { status: 200, body: this.view(c) };
      if (r.method === 'PUT') {
        for (const k of ['email', 'external_id', 'name', 'phone', 'signed_up_at'] as const) if (b[k] !== undefined) (c as any)[k] = b[k];
        if (b.custom_attributes) c.custom_attributes = { ...c.custom_attributes, ...b.custom_attributes };
        c.updated_at = now;
        return { status: 200, body: this.view(c) };
      }
    }
    if ((m = /^\/contacts\/([^/]+)\/notes$/.exec(r.path)) && r.method === 'POST') {
      if (!this.contacts.has(m[1]!)) return errorList(404, 'not_found', 'User Not Found');
      const note = { id: String(this.notes.length + 1000), contact_id: m[1]!, body: b.body, admin_id: String(b.admin_id) };
      this.notes.push(note);
      return { status: 200, body: { type: 'note', id: note.id, created_at: now, contact: { type: 'contact', id: note.contact_id }, author: { type: 'admin', id: note.admin_id }, body: `<p>${note.body}</p>` } };
    }
    if (r.method === 'POST' && r.path === '/messages') {
      const to = b.to ?? {};
      if (!this.contacts.has(to.id)) return errorList(404, 'not_found', 'User Not Found');
      if (b.message_type === 'email' && (!b.subject || !b.template)) return errorList(400, 'parameter_invalid', 'Email messages need subject and template');
      const id = String(400_000 + this.messages.length);
      this.messages.push({ id, to, message_type: b.message_type, subject: b.subject, body: b.body, from: b.from });
      return { status: 200, body: { type: b.message_type === 'email' ? 'email' : 'inapp', id, created_at: now, subject: b.subject ?? '', body: b.body, message_type: b.message_type, conversation_id: `conv-${id}` } };
    }
    if (r.method === 'POST' && r.path === '/tickets') {
      const contactId = b.contacts?.[0]?.id;
      if (!this.contacts.has(contactId)) return errorList(404, 'not_found', 'User Not Found');
      const ticket = { id: String(600 + this.tickets.length), ticket_type_id: String(b.ticket_type_id), contact_id: contactId, attributes: b.ticket_attributes ?? {} };
      this.tickets.push(ticket);
      return {
        status: 200,
        body: { type: 'ticket', id: ticket.id, ticket_id: String(30 + this.tickets.length), ticket_attributes: ticket.attributes, ticket_state: { type: 'ticket_state', id: '1', category: 'submitted' }, contacts: { type: 'contact.list', contacts: [{ type: 'contact', id: contactId }] }, created_at: now, updated_at: now, open: true },
      };
    }
    if (r.method === 'POST' && r.path === '/events') {
      if (b.id && !this.contacts.has(b.id)) return errorList(404, 'not_found', 'User Not Found');
      this.events.push(b);
      return { status: 202 };
    }
    if (r.method === 'POST' && r.path === '/tags') {
      let tag = [...this.tags.values()].find((t) => t.name === b.name);
      if (!tag) {
        tag = { type: 'tag', id: String(7000 + this.tags.size), name: b.name };
        this.tags.set(tag.id, tag);
      }
      return { status: 200, body: tag };
    }
    if ((m = /^\/contacts\/([^/]+)\/tags$/.exec(r.path))) {
      const c = this.contacts.get(m[1]!);
      if (!c) return errorList(404, 'not_found', 'User Not Found');
      if (r.method === 'GET') return { status: 200, body: { type: 'list', data: c.tags.map((id) => this.tags.get(id)) } };
      if (r.method === 'POST') {
        const tag = this.tags.get(String(b.id));
        if (!tag) return errorList(404, 'tag_not_found', 'Tag not found');
        if (!c.tags.includes(tag.id)) c.tags.push(tag.id);
        return { status: 200, body: tag };
      }
    }
    if ((m = /^\/contacts\/([^/]+)\/tags\/([^/]+)$/.exec(r.path)) && r.method === 'DELETE') {
      const c = this.contacts.get(m[1]!);
      const tag = this.tags.get(m[2]!);
      if (!c || !tag) return errorList(404, 'not_found', 'Not Found');
      c.tags = c.tags.filter((t) => t !== tag.id);
      return { status: 200, body: tag };
    }
    return undefined;
  }
}

export async function startIntercomStandIn(options: IntercomStandInOptions = {}): Promise<IntercomStandIn> {
  return new IntercomStandIn(options).start();
}

const STRING_FIELDS = new Set(['id', 'role', 'name', 'email', 'email_domain', 'phone', 'external_id']);
const DATE_FIELDS = new Set(['created_at', 'updated_at', 'signed_up_at', 'last_seen_at']);
const STRING_OPERATORS = new Set(['=', '!=', 'IN', 'NIN', '~', '!~', '^', '$']);
const DATE_OPERATORS = new Set(['=', '<', '>']); // matched by calendar day (UTC here); !=, <=, >=, IN, NIN are errors

function fieldValue(c: StoredContact, field: string): unknown {
  if (field === 'email_domain') return c.email?.split('@')[1] ?? null;
  if (field.startsWith('custom_attributes.')) return c.custom_attributes[field.slice('custom_attributes.'.length)] ?? null;
  return (c as unknown as Record<string, unknown>)[field] ?? null;
}

/** Turns a search query into a predicate, refusing what Intercom refuses (with its reason). */
function compileQuery(q: any, depth: number, looseEmail = false): (c: StoredContact) => boolean {
  if (!q || typeof q !== 'object') throw new Error('query is required');
  if (q.operator === 'AND' || q.operator === 'OR') {
    if (depth >= 2) throw new Error('There is a limit of 2 nested filters');
    if (!Array.isArray(q.value) || q.value.length === 0) throw new Error(`${q.operator} needs an array of filters`);
    if (q.value.length > 15) throw new Error(`There is a limit of 15 filters for each ${q.operator} group`);
    const parts = q.value.map((f: unknown) => compileQuery(f, depth + 1, looseEmail));
    return q.operator === 'AND' ? (c) => parts.every((p: (c: StoredContact) => boolean) => p(c)) : (c) => parts.some((p: (c: StoredContact) => boolean) => p(c));
  }
  const { field, operator, value } = q as { field: string; operator: string; value: unknown };
  const isCustom = typeof field === 'string' && field.startsWith('custom_attributes.');
  if (DATE_FIELDS.has(field)) {
    if (!DATE_OPERATORS.has(operator)) throw new Error(`Operator ${operator} is not supported on date field ${field}`);
    const day = Math.floor(Number(value) / 86_400);
    if (!Number.isFinite(day)) throw new Error(`${field} needs a UNIX timestamp`);
    return (c) => {
      const v = fieldValue(c, field);
      if (v === null) return false;
      const d = Math.floor(Number(v) / 86_400);
      return operator === '=' ? d === day : operator === '<' ? d < day : d > day;
    };
  }
  if (!STRING_FIELDS.has(field) && !isCustom) throw new Error(`${String(field)} is not a searchable field`);
  if (!STRING_OPERATORS.has(operator)) throw new Error(`Operator ${operator} is not supported on string field ${field}`);
  const listOp = operator === 'IN' || operator === 'NIN';
  if (listOp !== Array.isArray(value)) throw new Error(listOp ? `${operator} needs an array value` : `${operator} needs a single value`);
  const norm = (v: unknown) => String(v).toLowerCase();
  const wanted = listOp ? (value as unknown[]).map(norm) : [norm(value)];
  const w = wanted[0]!;
  const loose = looseEmail && field === 'email';
  return (c) => {
    const raw = fieldValue(c, field);
    const v = raw === null ? null : norm(raw);
    if (loose && (operator === '=' || operator === 'IN')) return v !== null && wanted.some((x) => v.includes(x));
    switch (operator) {
      case '=':
        return v === w;
      case '!=':
        return v !== w;
      case 'IN':
        return v !== null && wanted.includes(v);
      case 'NIN':
        return v === null || !wanted.includes(v);
      case '~':
        return v !== null && v.includes(w);
      case '!~':
        return v === null || !v.includes(w);
      case '^':
        return v !== null && v.startsWith(w);
      default: // '$'
        return v !== null && v.endsWith(w);
    }
  };
}
