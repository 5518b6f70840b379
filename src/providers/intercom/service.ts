import { IntercomClient, IntercomError } from 'intercom-client';
import { invalidInput, ToolError } from '../../result.js';
import type { ProviderDeps } from '../deps.js';
import type { SendCall } from '../../resilience/request-hooks.js';
import { normalizeAddress } from '../../store/suppressions.js';
import { jsonPostFetcher } from './message-fetcher.js';

/** A recipient as the tools name one: exactly one of these. */
export interface RecipientSpec {
  contact_id?: string;
  user_email?: string;
  /** Your own user id: Intercom's external_id. */
  user_id?: string;
}

export interface IntercomContact {
  id: string;
  role: 'user' | 'lead';
  email: string | null;
  external_id: string | null;
  name: string | null;
  phone: string | null;
  custom_attributes: Record<string, unknown>;
  created_at: number | null;
  signed_up_at: number | null;
  last_seen_at: number | null;
  /** Intercom's own email consent flag for the contact. */
  unsubscribed_from_emails: boolean;
}

export interface UpsertContactInput {
  email: string;
  user_id?: string;
  name?: string;
  phone?: string;
  custom_attributes?: Record<string, unknown>;
  signed_up_at?: number;
}

type SdkContact = {
  id: string;
  role?: string;
  email?: string | null;
  external_id?: string | null;
  name?: string | null;
  phone?: string | null;
  custom_attributes?: Record<string, unknown>;
  created_at?: number;
  signed_up_at?: number | null;
  last_seen_at?: number | null;
  unsubscribed_from_emails?: boolean;
};

/** Pulls Intercom's own words out of an error body ({type:"error.list", errors:[{code,message}]}). */
export function describeIntercomError(err: unknown): string | undefined {
  const body = err instanceof IntercomError ? err.body : undefined;
  const errors = (body as { errors?: Array<{ code?: string; message?: string }> } | undefined)?.errors;
  if (!Array.isArray(errors) || !errors.length) return undefined;
  return errors.map((e) => [e.message, e.code && `(${e.code})`].filter(Boolean).join(' ')).join('; ');
}

/** The id in Intercom's 409 "A contact matching those details already exists with id=…". */
export function existingIdFromConflict(message: string | undefined): string | undefined {
  return /id=([A-Za-z0-9]+)/.exec(message ?? '')?.[1];
}

/** Emails per `IN` search: with a lead beside each user, a search's matches still fit one page. */
const EMAILS_PER_SEARCH = 50;
const SEARCH_PAGE_SIZE = 150; // Intercom's maximum per_page
/** Pages followed per search, so a pathological result (hundreds of contacts on one address) stays bounded. */
const MAX_PAGES_PER_SEARCH = 5;

/**
 * The one contact a search means, by a documented rule: only results whose field equals the value we
 * searched (compared normalised: a search result for another address is never used); a user over a lead
 * sharing its email (the user is the customer); several users (or, without a user, several leads) are
 * ambiguous, a conflict: guessing could message the wrong person. undefined: nobody has it.
 */
function chooseContact(hits: SdkContact[], field: 'email' | 'external_id', value: string): IntercomContact | ToolError | undefined {
  const same = hits.filter((c) => (field === 'email' ? normalizeAddress(c.email ?? '') === normalizeAddress(value) : c.external_id === value));
  const users = same.filter((c) => c.role !== 'lead');
  const candidates = users.length ? users : same;
  if (candidates.length > 1) {
    return new ToolError(
      'conflict',
      `Several Intercom ${users.length ? 'users' : 'leads'} have ${field === 'email' ? 'email' : 'user_id'} ${value} (contact ids ${candidates.map((c) => c.id).join(', ')}). ` +
        'Nothing was sent. Name the one you mean with contact_id.',
      { provider: 'intercom', details: { contact_ids: candidates.map((c) => c.id) } },
    );
  }
  return candidates[0] ? toContact(candidates[0]) : undefined;
}

function notFound(field: 'email' | 'external_id', value: string): ToolError {
  return new ToolError(
    'not_found',
    `No Intercom contact with ${field === 'email' ? 'email' : 'user_id'} ${value}. Create it with intercom_create_user (a contact created minutes ago may not be searchable yet).`,
    { provider: 'intercom' },
  );
}

function toContact(c: SdkContact): IntercomContact {
  return {
    id: c.id,
    role: c.role === 'lead' ? 'lead' : 'user',
    email: c.email ?? null,
    external_id: c.external_id ?? null,
    name: c.name ?? null,
    phone: c.phone ?? null,
    custom_attributes: c.custom_attributes ?? {},
    created_at: c.created_at ?? null,
    signed_up_at: c.signed_up_at ?? null,
    last_seen_at: c.last_seen_at ?? null,
    unsubscribed_from_emails: c.unsubscribed_from_emails === true,
  };
}

/**
 * Intercom through its official SDK (API 2.14), with the SDK's own retries off: every call runs under
 * the shared policy, and the SDK's requests go through the runtime's observed fetch.
 */
export class IntercomService {
  private clientInstance?: IntercomClient;
  private messagingInstance?: IntercomClient;
  private adminId?: Promise<string>;

  constructor(readonly deps: ProviderDeps) {}

  private options() {
    return {
      token: this.deps.config.intercom.accessToken,
      baseUrl: this.deps.config.intercom.baseUrl,
      version: '2.14' as const,
      fetch: this.deps.runtime.fetch,
      maxRetries: 0, // retrying a POST /messages on 5xx could message a customer twice; our policy decides
      // Our per-attempt timeout (observed fetch) fires first; this is only a backstop.
      timeoutInSeconds: Math.ceil(this.deps.config.resilience.timeoutMs / 1000) * 2 + 1,
    };
  }

  private get client(): IntercomClient {
    this.deps.runtime.requireConfigured();
    this.clientInstance ??= new IntercomClient(this.options());
    return this.clientInstance;
  }

  /** The same SDK over a lean transport, for the call made once per message (see jsonPostFetcher). */
  private get messaging(): IntercomClient {
    this.deps.runtime.requireConfigured();
    this.messagingInstance ??= new IntercomClient({ ...this.options(), fetcher: jsonPostFetcher(this.deps.runtime.fetch) });
    return this.messagingInstance;
  }

  private call<T>(
    operation: string,
    idempotent: boolean,
    fn: (opts: { maxRetries: 0; abortSignal?: AbortSignal; headers: Record<string, string> }) => Promise<T>,
    send: SendCall = {},
  ): Promise<T> {
    // The attempt header lets the runtime's fetch, which the SDK calls, record what this attempt saw.
    return this.deps.runtime.call({ operation, idempotent, describeError: describeIntercomError, beforeSend: send.beforeSend }, ({ signal, attemptHeaders }) =>
      fn({ maxRetries: 0, abortSignal: signal, headers: attemptHeaders }),
    );
  }

  /** The sending admin: INTERCOM_ADMIN_ID, else GET /me once (concurrent callers share the lookup). */
  defaultAdminId(): Promise<string> {
    if (this.deps.config.intercom.adminId) return Promise.resolve(this.deps.config.intercom.adminId);
    this.adminId ??= this.call('identify_admin', true, (o) => this.client.admins.identify(o)).then(
      (me) => {
        if (!me?.id) throw new ToolError('provider_error', 'Intercom GET /me returned no admin id. Set INTERCOM_ADMIN_ID to the sending admin.', { provider: 'intercom' });
        return String(me.id);
      },
      (err: unknown) => {
        this.adminId = undefined; // do not cache a failure
        throw err;
      },
    );
    return this.adminId;
  }

  private async searchOne(field: 'email' | 'external_id', value: string): Promise<IntercomContact | undefined> {
    const page = await this.call('search_contacts', true, (o) =>
      this.client.contacts.search({ query: { field, operator: '=', value }, pagination: { per_page: 5 } }, o),
    );
    const chosen = chooseContact(page.data as SdkContact[], field, value);
    if (chosen instanceof ToolError) throw chosen;
    return chosen;
  }

  /**
   * Finds the contacts for many emails in as few searches as Intercom allows: one `email IN [...]` search
   * per EMAILS_PER_SEARCH addresses (its pages followed), instead of one search per recipient. Each email
   * (normalised: trimmed, lower-cased) maps to its contact, or to the error a single lookup would have
   * given (not_found, or conflict when several users share it). A failed search rejects as a whole.
   */
  async resolveEmails(emails: string[]): Promise<Map<string, IntercomContact | ToolError>> {
    const wanted = [...new Set(emails.map(normalizeAddress))];
    const hits = new Map<string, SdkContact[]>(wanted.map((e) => [e, []]));
    for (let i = 0; i < wanted.length; i += EMAILS_PER_SEARCH) {
      const chunk = wanted.slice(i, i + EMAILS_PER_SEARCH);
      let startingAfter: string | undefined;
      for (let pageNo = 0; pageNo < MAX_PAGES_PER_SEARCH; pageNo++) {
        const page = await this.call('search_contacts', true, (o) =>
          this.client.contacts.search(
            { query: { field: 'email', operator: 'IN', value: chunk }, pagination: { per_page: SEARCH_PAGE_SIZE, ...(startingAfter ? { starting_after: startingAfter } : {}) } },
            o,
          ),
        );
        for (const c of page.data as SdkContact[]) hits.get(normalizeAddress(c.email ?? ''))?.push(c);
        startingAfter = (page.response as { pages?: { next?: { starting_after?: string } } }).pages?.next?.starting_after ?? undefined;
        if (!startingAfter) break;
      }
    }
    return new Map(wanted.map((e) => [e, chooseContact(hits.get(e)!, 'email', e) ?? notFound('email', e)]));
  }

  async findContact(id: string): Promise<IntercomContact> {
    const c = await this.call('find_contact', true, (o) => this.client.contacts.find({ contact_id: id }, o));
    return toContact(c as unknown as SdkContact);
  }

  /** Resolves exactly one of contact_id / user_email / user_id to an Intercom contact. */
  async resolveContact(spec: RecipientSpec): Promise<IntercomContact> {
    const given = (['contact_id', 'user_email', 'user_id'] as const).filter((k) => spec[k] !== undefined && spec[k] !== '');
    if (given.length !== 1) {
      throw invalidInput(
        given.length === 0
          ? 'Name the recipient with exactly one of user_email, user_id (your external id) or contact_id (Intercom id).'
          : `Give only one of user_email, user_id, contact_id (got ${given.join(', ')}).`,
        { fields: [{ field: 'user_email', problem: 'exactly one of user_email, user_id, contact_id' }] },
      );
    }
    if (spec.contact_id) return this.findContact(spec.contact_id);
    const [field, value] = spec.user_email ? (['email', spec.user_email.trim().toLowerCase()] as const) : (['external_id', spec.user_id!] as const);
    const found = await this.searchOne(field, value);
    if (!found) throw notFound(field, value);
    return found;
  }

  async sendMessage(msg: {
    to: { id: string; type: 'user' | 'lead' };
    message_type: 'inapp' | 'email';
    subject?: string;
    body: string;
    from_admin_id: string;
    template?: 'plain' | 'personal';
  }, send?: SendCall): Promise<{ message_id: string }> {
    const request = {
      message_type: msg.message_type,
      body: msg.body,
      // GET /me returns admin ids as strings and the API accepts them (the SDK's `number` type is the description's defect).
      from: { type: 'admin' as const, id: msg.from_admin_id as unknown as number },
      to: msg.to,
      ...(msg.message_type === 'email' ? { subject: msg.subject ?? '', template: msg.template ?? 'plain' } : msg.subject ? { subject: msg.subject } : {}),
      ...(msg.message_type === 'inapp' && msg.template ? { template: msg.template } : {}),
    };
    const created = await this.call('send_message', false, (o) => this.messaging.messages.create(request as never, o), send);
    return { message_id: String((created as { id?: string }).id ?? '') };
  }

  async createNote(contactId: string, body: string, adminId: string): Promise<{ note_id: string }> {
    const note = await this.call('create_note', false, (o) => this.client.notes.create({ contact_id: contactId, body, admin_id: adminId }, o));
    return { note_id: String(note.id) };
  }

  /**
   * A ticket of the configured type (INTERCOM_TICKET_TYPE_ID) for one contact. Intercom accepts no
   * idempotency key for tickets, so this is never retried once it may have arrived.
   */
  async createTicket(t: { ticket_type_id: string; contact_id: string; title: string; description?: string }): Promise<{ ticket_id: string }> {
    const request = {
      ticket_type_id: t.ticket_type_id,
      contacts: [{ id: t.contact_id }],
      ticket_attributes: { _default_title_: t.title, ...(t.description ? { _default_description_: t.description } : {}) },
    };
    const ticket = await this.call('create_ticket', false, (o) => this.client.tickets.create(request as never, o));
    const id = (ticket as { ticket_id?: string; id?: string } | undefined)?.ticket_id ?? (ticket as { id?: string } | undefined)?.id;
    return { ticket_id: String(id ?? '') };
  }

  async trackEvent(ev: { contact_id: string; event_name: string; created_at?: number; metadata?: Record<string, unknown> }): Promise<void> {
    const request = {
      event_name: ev.event_name,
      created_at: ev.created_at ?? Math.floor(Date.now() / 1000),
      id: ev.contact_id,
      ...(ev.metadata && Object.keys(ev.metadata).length ? { metadata: ev.metadata } : {}),
    };
    // Intercom de-duplicates events on (event_name, created_at, contact): a retried POST counts once.
    await this.call('track_event', true, (o) => this.client.events.create(request as never, o));
  }

  async tagsOf(contactId: string): Promise<Array<{ id: string; name: string }>> {
    const list = await this.call('list_contact_tags', true, (o) => this.client.contacts.listAttachedTags({ contact_id: contactId }, o));
    return ((list as { data?: Array<{ id: string; name: string }> }).data ?? []).map((t) => ({ id: String(t.id), name: t.name }));
  }

  /** Creates the tag if needed (POST /tags is create-or-update by name), then attaches it. */
  async addTag(contactId: string, tagName: string): Promise<{ changed: boolean }> {
    const already = (await this.tagsOf(contactId)).some((t) => t.name === tagName);
    const tag = await this.call('create_tag', true, (o) => this.client.tags.create({ name: tagName }, o));
    await this.call('tag_contact', true, (o) => this.client.tags.tagContact({ contact_id: contactId, id: String(tag.id) }, o));
    return { changed: !already };
  }

  async removeTag(contactId: string, tagName: string): Promise<{ changed: boolean }> {
    const tag = (await this.tagsOf(contactId)).find((t) => t.name === tagName);
    if (!tag) return { changed: false };
    await this.call('untag_contact', true, (o) => this.client.tags.untagContact({ contact_id: contactId, tag_id: tag.id }, o));
    return { changed: true };
  }

  /**
   * Creates the contact, or updates the one with this email / external id: never a duplicate. Search can
   * lag creation by minutes, so the create itself is the check: a 409 names the existing id to update.
   */
  async upsertContact(input: UpsertContactInput): Promise<{ created: boolean; contact: IntercomContact }> {
    const fields = {
      email: input.email.trim().toLowerCase(),
      ...(input.user_id ? { external_id: input.user_id } : {}),
      ...(input.name ? { name: input.name } : {}),
      ...(input.phone ? { phone: input.phone } : {}),
      ...(input.custom_attributes ? { custom_attributes: input.custom_attributes } : {}),
      ...(input.signed_up_at ? { signed_up_at: input.signed_up_at } : {}),
    };
    const existing = (await this.searchOne('email', fields.email)) ?? (input.user_id ? await this.searchOne('external_id', input.user_id) : undefined);
    if (existing) return { created: false, contact: await this.updateContact(existing.id, fields) };
    try {
      const created = await this.call('create_contact', false, (o) => this.client.contacts.create({ role: 'user', ...fields } as never, o));
      return { created: true, contact: toContact(created as unknown as SdkContact) };
    } catch (err) {
      const id = err instanceof ToolError && err.code === 'conflict' ? existingIdFromConflict(err.message) : undefined;
      if (!id) throw err;
      return { created: false, contact: await this.updateContact(id, fields) };
    }
  }

  private async updateContact(id: string, fields: Record<string, unknown>): Promise<IntercomContact> {
    const updated = await this.call('update_contact', true, (o) => this.client.contacts.update({ contact_id: id, ...fields } as never, o));
    return toContact(updated as unknown as SdkContact);
  }
}
