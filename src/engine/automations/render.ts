import type { Kysely } from 'kysely';
import type { ContactsTable, Database } from '../../store/schema.js';
import { audienceOf, matchingClients, type AudienceClient, type Exclusion } from '../audience.js';
import { clientScope, contactScope } from '../recipient-scope.js';
import type { RenderScope } from '../templating.js';
import type { WorkflowDefinition } from './definition.js';

/**
 * Who a step is about and who it reaches, read from the roster when the step runs (not when the
 * subject entered: a wait of three days sees today's data), and the template variables for them.
 */

export interface StepSubject {
  client: AudienceClient;
  /** The enrolled contact (contact-level triggers). */
  contact?: ContactsTable;
}

/** What the enrolment recorded about its trigger occurrence. */
export interface OccurrenceContext {
  fired_at: string;
  event?: { name: string; occurred_at: string; properties: Record<string, unknown> };
  /** A run's previewed recipients (contact ids) for this subject: message steps reach these only. */
  recipients?: string[];
}

export async function loadSubject(db: Kysely<Database>, e: { client_id: string; contact_id: string | null }): Promise<StepSubject | undefined> {
  const { clients } = await matchingClients(db, { client_ids: [e.client_id] });
  const client = clients[0];
  if (!client) return undefined;
  if (!e.contact_id) return { client };
  const contact = await db.selectFrom('contacts').selectAll().where('contact_id', '=', e.contact_id).executeTakeFirst();
  return contact ? { client, contact } : undefined;
}

/**
 * The contacts a step reaches: the enrolled contact, or the client's contacts with the audience's
 * roles. Contacts who must not be messaged come back as exclusions with the reason.
 */
export async function recipientsOf(db: Kysely<Database>, def: WorkflowDefinition, s: StepSubject): Promise<{ members: ContactsTable[]; excluded: Exclusion[] }> {
  if (s.contact) {
    const c = s.contact;
    if (c.unsubscribed) return { members: [], excluded: [{ contact_id: c.contact_id, client_id: c.client_id, email: c.email, reason: 'unsubscribed' }] };
    return { members: [c], excluded: [] };
  }
  const a = await audienceOf(db, [s.client], def.audience.contact_roles);
  return { members: a.members.map((m) => m.contact), excluded: a.excluded.filter((x) => x.reason !== 'role_not_targeted') };
}

/** The contact non-message steps (notes, tasks, tickets) are about: the enrolled one, else the first with the audience's roles. */
export async function primaryContact(db: Kysely<Database>, def: WorkflowDefinition, s: StepSubject): Promise<ContactsTable | undefined> {
  if (s.contact) return s.contact;
  const a = await audienceOf(db, [s.client], def.audience.contact_roles);
  const roles = def.audience.contact_roles;
  const rank = (c: ContactsTable) => (roles ? roles.indexOf((c.role ?? '').toLowerCase()) : 0);
  return a.members.map((m) => m.contact).sort((x, y) => rank(x) - rank(y))[0];
}

export function scopeFor(def: WorkflowDefinition, workflowId: string, ctx: OccurrenceContext, client: AudienceClient, contact?: ContactsTable): RenderScope {
  return {
    contact: contact ? contactScope(contact) : {},
    client: clientScope(client),
    sender: { email: def.sender.email, name: def.sender.name },
    workflow: { id: workflowId, name: def.name, trigger_type: def.trigger.type, fired_at: ctx.fired_at },
    event: ctx.event ? { name: ctx.event.name, occurred_at: ctx.event.occurred_at, properties: ctx.event.properties } : {},
  };
}
