import { z } from 'zod';
import { defineTool } from '../mcp/tool.js';
import { importClientsCsv } from '../store/csv-import.js';
import { ToolError } from '../result.js';
import { SORT_FIELDS } from '../store/roster.js';
import { describeSuppression } from '../store/consent.js';
import { activeSuppressions, listSuppressions, normalizeAddress, PERMANENT_KINDS, toSuppressionView } from '../store/suppressions.js';
import {
  clientFieldsSchema,
  clientIdSchema,
  contactFieldsSchema,
  emailSchema,
  LIFECYCLE_STAGES,
  newClientSchema,
  TIERS,
} from '../store/roster-model.js';

const clientView = z.object({
  client_id: z.string(),
  name: z.string(),
  tier: z.enum(TIERS),
  segments: z.array(z.string()),
  lifecycle_stage: z.enum(LIFECYCLE_STAGES),
  health_score: z.number().nullable(),
  mrr: z.number().nullable(),
  renewal_date: z.string().nullable(),
  owner_email: z.string().nullable(),
  custom_attributes: z.record(z.string(), z.unknown()),
  created_at: z.string(),
  updated_at: z.string(),
});

const contactView = z.object({
  contact_id: z.string(),
  client_id: z.string(),
  email: z.string(),
  name: z.string().nullable(),
  first_name: z.string().nullable(),
  role: z.string().nullable(),
  phone: z.string().nullable(),
  external_user_id: z.string().nullable(),
  intercom_contact_id: z.string().nullable(),
  linked_to_intercom: z.boolean(),
  unsubscribed: z.boolean(),
  unsubscribed_at: z.string().nullable(),
  unsubscribe_source: z.string().nullable(),
  unsubscribe_reason: z.string().nullable(),
  email_status: z.string().nullable().describe('email-only suppression: unsubscribed, group_unsubscribed, bounced, spam_report, dropped (email channels skip the contact)'),
  email_status_at: z.string().nullable(),
  email_status_source: z.string().nullable(),
  timezone: z.string().nullable(),
});

const suppressionView = z.object({
  address: z.string(),
  scope: z.string().describe('all (every channel), email (every email), sendgrid_group:<id>, intercom'),
  source: z.string().describe('who set it: sendgrid, intercom:<contact id>, or the source given to set_contact_subscription'),
  kind: z.string().describe('unsubscribed, group_unsubscribed, bounced, spam_report, dropped'),
  reason: z.string().nullable(),
  set_at: z.string(),
  set_by: z.string().nullable(),
  liftable_by_tool: z.boolean().describe('false for spam reports, hard bounces and drops: only the recipient can undo them, through the provider'),
  lifted_at: z.string().nullable(),
  lifted_by: z.string().nullable(),
  lift_reason: z.string().nullable(),
});

const timelineEntry = z.object({
  entry_id: z.number(),
  client_id: z.string(),
  contact_id: z.string().nullable(),
  occurred_at: z.string(),
  type: z.string(),
  channel: z.string(),
  actor: z.string().nullable(),
  summary: z.string(),
  outcome: z.string(),
  provider_ids: z.record(z.string(), z.string()),
  data: z.record(z.string(), z.unknown()),
});

const actor = z.string().max(200).optional().describe('who is making the change (a CSM email or name), recorded in the timeline');

export const clientTools = [
  defineTool({
    name: 'register_client',
    title: 'Register a client',
    description:
      'Adds a client (an account) to the customer roster: id, name, tier, segments, lifecycle stage, health score, MRR, renewal date, owner. ' +
      'Fails with conflict if the client_id is taken (use update_client_info then). Local only; contacts no one.',
    kind: 'write',
    toolset: 'roster',
    idempotent: false,
    openWorld: false,
    input: newClientSchema.extend({ actor }),
    output: { client: clientView },
    async handle({ actor, ...input }, { services }) {
      return { client: await services.store.roster.createClient(input, actor) };
    },
  }),
  defineTool({
    name: 'update_client_info',
    title: 'Update a client',
    description:
      'Changes some fields of a roster client (only the fields given). The before → after of each change is recorded in the client timeline. ' +
      'Returns the client and the changes. segments replaces the whole set.',
    kind: 'write',
    toolset: 'roster',
    idempotent: true,
    openWorld: false,
    input: clientFieldsSchema.partial().extend({ client_id: clientIdSchema, actor }),
    output: { client: clientView, changes: z.record(z.string(), z.object({ from: z.unknown(), to: z.unknown() })) },
    async handle({ client_id, actor, ...patch }, { services }) {
      const r = await services.store.roster.updateClient(client_id, patch, actor);
      if (Object.keys(r.changes).length) services.automations.wake(); // a health, stage or renewal change may trigger automations
      return r;
    },
  }),
  defineTool({
    name: 'upsert_contact',
    title: 'Add or update a contact',
    description:
      'Adds a person to a roster client, or updates the contact with that email at that client (email is unique per client). ' +
      'Fields left out keep their value. Recorded in the timeline. Local only.',
    kind: 'write',
    toolset: 'roster',
    idempotent: true,
    openWorld: false,
    input: contactFieldsSchema.extend({ client_id: clientIdSchema, actor }),
    output: { created: z.boolean(), contact: contactView },
    async handle({ client_id, actor, ...contact }, { services }) {
      return services.store.roster.upsertContact(client_id, contact, actor);
    },
  }),
  defineTool({
    name: 'remove_contact',
    title: 'Remove a contact',
    description: 'Deletes a contact from a roster client (by email). Their past timeline entries stay. Local only.',
    kind: 'destructive',
    toolset: 'roster',
    openWorld: false,
    input: z.strictObject({ client_id: clientIdSchema, email: emailSchema, actor }),
    output: { removed: contactView },
    async handle({ client_id, email, actor }, { services }) {
      return { removed: await services.store.roster.removeContact(client_id, email, actor) };
    },
  }),
  defineTool({
    name: 'set_contact_subscription',
    title: 'Unsubscribe or resubscribe an address',
    description:
      'Unsubscribes an email address from every message on every channel (subscribed: false), or resubscribes it (subscribed: true). Consent belongs ' +
      'to the address: it covers every roster contact with it, at every client, and contacts added later; removing or re-adding a contact never ' +
      'clears it. The address need not be in the roster. Resubscribing lifts an opt-out the person or a provider recorded: a consent override that ' +
      'a person must approve (asked through the client). A spam report, hard bounce or provider drop can never be lifted here: only the recipient ' +
      'can undo it, through the provider. Recorded in the timeline and the audit log; list_suppressions shows the list.',
    kind: 'write',
    scope: { any: ['cs:write', 'cs:admin'], of: (args) => (args.subscribed === false ? 'cs:write' : 'cs:admin') },
    toolset: 'roster',
    idempotent: true,
    openWorld: false,
    input: z.strictObject({
      email: emailSchema,
      subscribed: z.boolean().describe('false: unsubscribe; true: resubscribe (a person must approve)'),
      reason: z.string().max(500).optional(),
      client_id: clientIdSchema.optional().describe('the client whose contact asked (checked to exist); consent still covers the whole address'),
      source: z.string().max(100).default('csm_request').describe('where the request came from, e.g. "customer_email", "phone"'),
      actor,
    }),
    output: {
      contacts: z.array(contactView).describe('the roster contacts with this address'),
      changed: z.number().describe('suppressions added or lifted by this call'),
      suppressions: z.array(suppressionView).describe('what still suppresses the address after this call'),
    },
    async handle({ email, subscribed, reason, client_id, source, actor }, ctx) {
      const { store } = ctx.services;
      const address = normalizeAddress(email);
      const checkedAt = new Date().toISOString();
      if (subscribed) {
        const active = (await activeSuppressions(store.db, [address])).get(address) ?? [];
        const permanent = active.filter((r) => PERMANENT_KINDS.has(r.kind));
        if (permanent.length) {
          throw new ToolError(
            'forbidden',
            `${address} cannot be resubscribed by any tool: ${permanent.map(describeSuppression).join('; ')}. Nothing changed. ` +
              'Only the recipient can undo a spam report, a hard bounce or a provider drop, through the provider (e.g. by writing to you from that address ' +
              'and being removed from SendGrid\'s suppression list there).',
            { details: { policy: 'consent', suppressions: permanent.map(toSuppressionView) } },
          );
        }
        if (active.length) {
          const lifts = active.map(describeSuppression);
          ctx.audit.consent_override = { address, lifts, reason: reason ?? null };
          await ctx.approve({
            action: 'consent_override',
            recipients: 1,
            messages: 0,
            examples: [address],
            channel: 'every channel',
            when: 'now',
            consent_override: `lifts the opt-out of ${address}`,
            notes: lifts.map((l) => `Lifts: ${l}`),
            written: [{ label: 'Reason', value: reason }],
            always: true,
          });
        }
      }
      const r = await store.roster.setSubscription(address, { subscribed, reason, client_id, source, actor, liftNotAfter: checkedAt });
      const left = (await activeSuppressions(store.db, [address])).get(address) ?? [];
      return { contacts: r.contacts, changed: r.changed.length, suppressions: left.map(toSuppressionView) };
    },
  }),
  defineTool({
    name: 'list_suppressions',
    title: 'List the suppression list',
    description:
      'The addresses that must not be messaged, newest first: each with its scope (all = every channel; email; sendgrid_group:<id>; intercom), ' +
      'source (who set it: sendgrid, intercom:<contact id>, or the roster tool\'s source), kind (unsubscribed, group_unsubscribed, bounced, ' +
      'spam_report, dropped), reason, when, and whether a tool may lift it. Filter by email; include_lifted shows lifted ones too. Read-only.',
    kind: 'read',
    toolset: 'roster',
    openWorld: false,
    input: z.strictObject({
      email: z.string().min(1).max(320).optional().describe('one address (case and spaces do not matter)'),
      include_lifted: z.boolean().default(false),
      limit: z.number().int().min(1).max(200).default(50),
      cursor: z.string().max(200).optional(),
    }),
    output: { suppressions: z.array(suppressionView), total: z.number(), next_cursor: z.string().optional() },
    async handle({ email, include_lifted, limit, cursor }, { services }) {
      return listSuppressions(services.store.db, { address: email, include_lifted, limit, cursor });
    },
  }),
  defineTool({
    name: 'list_clients',
    title: 'List clients',
    description:
      'Finds roster clients by tier, segment, lifecycle stage, health range, renewal within N days, owner, or text (name, or a contact email). ' +
      'Sorted and paginated (pass next_cursor back for the next page); total counts every match. Read-only.',
    kind: 'read',
    toolset: 'roster',
    openWorld: false,
    input: z.strictObject({
      tier: z.array(z.enum(TIERS)).optional(),
      segment: z.string().optional(),
      lifecycle_stage: z.array(z.enum(LIFECYCLE_STAGES)).optional(),
      health_min: z.number().min(0).max(100).optional(),
      health_max: z.number().min(0).max(100).optional(),
      renewal_within_days: z.number().int().min(0).max(3650).optional(),
      owner_email: z.string().optional(),
      search: z.string().min(1).max(200).optional(),
      sort_by: z.enum(SORT_FIELDS).default('name'),
      sort_direction: z.enum(['asc', 'desc']).default('asc'),
      limit: z.number().int().min(1).max(200).default(50),
      cursor: z.string().optional(),
    }),
    output: {
      clients: z.array(clientView.extend({ contact_count: z.number() })),
      total: z.number().describe('clients matching the filters, across all pages'),
      next_cursor: z.string().optional(),
    },
    async handle({ sort_by, sort_direction, limit, cursor, ...filter }, { services }) {
      return services.store.roster.listClients(filter, { field: sort_by, direction: sort_direction }, limit, cursor);
    },
  }),
  defineTool({
    name: 'get_client_overview',
    title: 'Client overview',
    description:
      'Everything about one roster client: profile, health, renewal (and days until it), contacts (each with whether it is linked to Intercom ' +
      'and subscribed), and the last 20 timeline entries. Read-only.',
    kind: 'read',
    toolset: 'roster',
    openWorld: false,
    input: z.strictObject({ client_id: clientIdSchema }),
    output: {
      client: clientView,
      renewal: z.object({ date: z.string().nullable(), days_until: z.number().nullable() }),
      contacts: z.array(contactView),
      recent_timeline: z.array(timelineEntry),
    },
    async handle({ client_id }, { services }) {
      return clientOverview(services.store, client_id);
    },
  }),
  defineTool({
    name: 'get_client_timeline',
    title: 'Client timeline',
    description:
      'The record of everything that happened to a client through this server — profile changes, messages, notes, tags, events, emails, ' +
      'campaign deliveries — newest first, filtered by type, channel, contact or date range, paginated. Read-only.',
    kind: 'read',
    toolset: 'roster',
    openWorld: false,
    input: z.strictObject({
      client_id: clientIdSchema,
      types: z.array(z.string()).optional().describe('e.g. profile_change, contact_change, subscription, message, note, tag, event, email'),
      channels: z.array(z.string()).optional().describe('roster, intercom, sendgrid, mixpanel'),
      contact_id: z.string().optional(),
      since: z.string().datetime({ offset: true }).optional(),
      until: z.string().datetime({ offset: true }).optional(),
      limit: z.number().int().min(1).max(200).default(50),
      cursor: z.string().optional(),
    }),
    output: { entries: z.array(timelineEntry), next_cursor: z.string().optional() },
    async handle({ client_id, limit, cursor, since, until, ...f }, { services }) {
      await services.store.roster.requireClient(client_id);
      return services.store.timeline.list(
        { client_id, ...f, since: since && new Date(since).toISOString(), until: until && new Date(until).toISOString() },
        limit,
        cursor,
      );
    },
  }),
  defineTool({
    name: 'import_clients',
    title: 'Import clients from CSV',
    description:
      'Imports clients and their contacts from a CSV file on the server machine (one row per contact; columns in the README, sample in ' +
      'examples/clients.csv). Every row is validated first. A file with row errors imports nothing (unless skip_invalid is true) and is ' +
      'refused as invalid_input with the row errors in error.details.errors (row, field, problem; the first 200). Re-importing is safe: clients upsert by client_id, contacts by (client_id, email). Local only.',
    kind: 'write',
    scope: 'cs:admin',
    toolset: 'roster',
    idempotent: true,
    openWorld: false,
    input: z.strictObject({
      file_path: z.string().min(1).describe('absolute path of the CSV file'),
      skip_invalid: z.boolean().default(false).describe('import the valid rows even if some rows are invalid'),
      actor,
    }),
    output: {
      imported: z.boolean(),
      rows: z.number(),
      clients_created: z.number(),
      clients_updated: z.number(),
      contacts_created: z.number(),
      contacts_updated: z.number(),
      rows_skipped: z.number(),
      errors: z.array(z.object({ row: z.number(), field: z.string(), problem: z.string() })),
      errors_truncated: z.boolean(),
    },
    async handle({ file_path, skip_invalid, actor }, { services, progress, log }) {
      const r = await importClientsCsv(services.store, file_path, {
        skipInvalid: skip_invalid,
        actor,
        onProgress: (n, phase) => progress(n, undefined, `${phase} row ${n}`),
        log,
      });
      if (r.imported) services.automations.wake(); // health, stage and renewal changes may trigger automations
      return r;
    },
  }),
];

export async function clientOverview(store: import('../store/index.js').Store, clientId: string) {
  const client = await store.roster.requireClient(clientId);
  const contacts = await store.roster.contactsOf(clientId);
  const { entries } = await store.timeline.list({ client_id: clientId }, 20);
  const days = client.renewal_date ? Math.ceil((Date.parse(`${client.renewal_date}T00:00:00Z`) - Date.now()) / 86_400_000) : null;
  return { client, renewal: { date: client.renewal_date, days_until: days }, contacts, recent_timeline: entries };
}
