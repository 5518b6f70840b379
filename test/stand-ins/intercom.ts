import { randomBytes } from 'node:crypto';
import { OpenApiContract } from '../helpers/openapi.js';
import { HttpStandIn, type RecordedRequest, type Reply, type StandInOptions } from './http-stand-in.js';

/**
 * A local Intercom (API 2.14) for tests: the endpoints the integration uses, in-memory state, answers
 * shaped like Intercom's, Bearer auth, X-RateLimit-* headers, fault injection, and every request body
 * validated against shared/contracts/intercom-2.14.yaml.
 */

let contract: OpenApiContract | undefined;

/**
 * The published description with the four defects shared/contracts/README.md lists patched in this
 * test copy (the real API and intercom-client disagree with the file; our client must not bend to it):
 * 1. create_message_request.message_type: the real API uses `inapp`, not `in_app`;
 * 2. create_message_request.from.id: admin ids are strings (GET /me returns strings);
 * 3. POST /contacts/{contact_id}/notes contact_id: a hex string, not an integer (path parameter);
 * 4. create_data_event_request.metadata: values may be numbers and booleans too, not only strings.
 * Also, as the README notes, single_filter_search_request.value is `nullable` without a type, which a
 * validator cannot compile: it is given "any value" here (search bodies are effectively unvalidated).
 */
export function intercomContract(): OpenApiContract {
  contract ??= OpenApiContract.load('intercom-2.14.yaml', (doc: any) => {
    const msg = doc.components.schemas.create_message_request.properties;
    msg.message_type.enum = ['inapp', 'email'];
    msg.from.properties.id = { type: 'string' };
    const notes = doc.paths['/contacts/{contact_id}/notes'].post.parameters.find((p: any) => p.name === 'contact_id');
    notes.schema = { type: 'string' };
    doc.components.schemas.single_filter_search_request.properties.value = {};
    doc.components.schemas.create_data_event_request.properties.metadata.additionalProperties = {
      oneOf: [{ type: 'string' }, { type: 'number' }, { type: 'boolean' }],
    };
  });
  return contract;
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
  body: { type: 'error.list', request_id: randomBytes(8).toString('hex'), errors: [{ code, message }] },
});

export interface IntercomStandInOptions extends Partial<StandInOptions> {
  token?: string;
  adminId?: string;
  /** How long a created contact stays invisible to POST /contacts/search. */
  searchLagMs?: number;
}

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
        contract: intercomContract(),
        contractPath: (r) => r.path,
        authorize: (r) => (r.headers.authorization === `Bearer ${token}` ? undefined : errorList(401, 'unauthorized', 'Access Token Invalid')),
        rateLimitedBody: { type: 'error.list', errors: [{ code: 'rate_limit_exceeded', message: 'Rate Limit Exceeded' }] },
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

  private routeRequest(r: RecordedRequest): Reply | undefined {
    const b = (r.body ?? {}) as Record<string, any>;
    const now = Math.floor(Date.now() / 1000);
    let m: RegExpExecArray | null;
    if (r.method === 'GET' && r.path === '/me') {
      return { status: 200, body: { type: 'admin', id: this.options.adminId ?? '991', name: 'Test Admin', email: 'admin@ourco.test', email_verified: true, app: { type: 'app', id_code: 'abc123' } } };
    }
    if (r.method === 'POST' && r.path === '/contacts/search') {
      const q = b.query ?? {};
      const field = q.field === 'external_id' ? 'external_id' : 'email';
      const value = String(q.value ?? '').toLowerCase();
      const data = [...this.contacts.values()]
        .filter((c) => c.searchableAt <= Date.now() && String(c[field] ?? '').toLowerCase() === value)
        .map((c) => this.view(c));
      return { status: 200, body: { type: 'list', data, total_count: data.length, pages: { type: 'pages', page: 1, per_page: b.pagination?.per_page ?? 50, total_pages: 1 } } };
    }
    if (r.method === 'POST' && r.path === '/contacts') {
      const email = b.email ? String(b.email).toLowerCase() : null;
      const dup = [...this.contacts.values()].find((c) => (email && c.email === email) || (b.external_id && c.external_id === b.external_id));
      if (dup) return errorList(409, 'conflict', `A contact matching those details already exists with id=${dup.id}`);
      const c: StoredContact = {
        type: 'contact',
        id: randomBytes(12).toString('hex'),
        workspace_id: 'ws1',
        external_id: b.external_id ?? null,
        role: b.role === 'lead' ? 'lead' : 'user',
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
