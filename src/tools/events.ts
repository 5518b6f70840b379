import { z } from 'zod';
import { defineTool, type ToolContext } from '../mcp/tool.js';
import { invalidInput } from '../result.js';
import { ROSTER_EVENT_NAMES, rosterEventRefusal, type CustomerEventInput } from '../store/customer-events.js';
import type { RecipientRef } from '../store/index.js';
import { clientIdSchema, emailSchema } from '../store/roster-model.js';

/**
 * Refuses the roster's own event names (recorded by the roster itself when the field changes): recording
 * them by hand would fire triggers on a change that did not happen. Called before any provider call.
 */
export function refuseRosterEvent(name: string, field: string): void {
  if (ROSTER_EVENT_NAMES.has(name)) throw invalidInput(rosterEventRefusal(name), { field });
}

const eventOut = z.object({
  event_id: z.number(),
  occurred_at: z.string(),
  recorded_at: z.string(),
  client_id: z.string().nullable(),
  contact_id: z.string().nullable(),
  name: z.string(),
  properties: z.record(z.string(), z.unknown()),
  source: z.string(),
  source_ref: z.string().nullable(),
});

/**
 * Records what a provider tool learned about a roster contact as a customer event (automations'
 * event triggers and goals read them), then wakes the scheduler. Best effort: never fails the tool.
 */
export async function recordForRecipient(ctx: ToolContext, ref: RecipientRef, event: Omit<CustomerEventInput, 'client_id' | 'contact_id'>): Promise<number> {
  try {
    const n = await ctx.services.store.recordEventForRecipient(ref, event);
    if (n) ctx.services.automations.wake();
    return n;
  } catch (err) {
    ctx.log.warn({ err }, 'recording the customer event failed');
    return 0;
  }
}

export const eventTools = [
  defineTool({
    name: 'record_customer_event',
    title: 'Record a customer event',
    description:
      'Records that something happened to a roster contact or client (e.g. "meeting_booked", "login", "report_exported", "milestone_first_value"). ' +
      'It lands in the client timeline and fires automations: event_based triggers, milestone events, goals (exit_when), usage and inactivity. ' +
      'Name the contact by contact_email (with client_id when the email is at several clients) or the client by client_id alone. ' +
      'dedup_key records the same occurrence once.',
    kind: 'write',
    toolset: 'events',
    idempotent: false,
    openWorld: false,
    input: z.strictObject({
      event: z.string().trim().min(1).max(100).regex(/^[A-Za-z0-9_.:-]+$/, 'letters, digits, "_", ".", ":" or "-"').describe('e.g. meeting_booked'),
      client_id: clientIdSchema.optional(),
      contact_email: emailSchema.optional(),
      properties: z
        .record(z.string().min(1).max(100), z.union([z.string().max(1_000), z.number(), z.boolean(), z.null()]))
        .refine((p) => Object.keys(p).length <= 50, 'at most 50 properties')
        .optional(),
      occurred_at: z.string().datetime({ offset: true }).optional().describe('when it happened; default now'),
      dedup_key: z.string().trim().min(1).max(200).optional().describe('your id for this occurrence: recording it again stores nothing'),
      actor: z.string().max(200).optional(),
    }),
    output: {
      recorded: z.number().describe('events stored (one per matching contact; 0 when dedup_key was already recorded)'),
      duplicate: z.boolean(),
      subjects: z.array(z.object({ client_id: z.string(), contact_id: z.string().nullable() })),
    },
    async handle(i, ctx) {
      const { store } = ctx.services;
      refuseRosterEvent(i.event, 'event');
      if (!i.client_id && !i.contact_email) throw invalidInput('Name who it happened to: contact_email, client_id, or both.', { field: 'client_id' });
      const occurred = i.occurred_at ? new Date(i.occurred_at) : new Date();
      if (occurred.getTime() > Date.now() + 3_600_000) throw invalidInput('occurred_at is more than an hour in the future.', { field: 'occurred_at' });
      let subjects: Array<{ client_id: string; contact_id: string | null }>;
      if (i.contact_email) {
        let q = store.db.selectFrom('contacts').select(['client_id', 'contact_id']).where('email', '=', i.contact_email);
        if (i.client_id) q = q.where('client_id', '=', i.client_id);
        subjects = await q.execute();
        if (!subjects.length) throw invalidInput(`No roster contact ${i.contact_email}${i.client_id ? ` at client "${i.client_id}"` : ''}. Add it with upsert_contact first.`, { field: 'contact_email' });
      } else {
        await store.roster.requireClient(i.client_id!);
        subjects = [{ client_id: i.client_id!, contact_id: null }];
      }
      const recorded = await store.db.transaction().execute(async (trx) => {
        const n = await store.events.record(
          trx,
          subjects.map((s, k) => ({
            name: i.event,
            ...s,
            properties: i.properties ?? {},
            occurred_at: occurred.toISOString(),
            source: 'tool:record_customer_event',
            dedup_key: i.dedup_key ? `${i.dedup_key}${k ? `#${k}` : ''}` : null,
          })),
        );
        if (n) {
          for (const s of subjects) {
            await store.timeline.append(trx, { ...s, type: 'event', channel: 'roster', actor: i.actor, summary: `Event "${i.event}" recorded`, outcome: 'success', data: { properties: i.properties ?? {}, occurred_at: occurred.toISOString() } });
          }
        }
        return n;
      });
      if (recorded) ctx.services.automations.wake();
      ctx.audit.recorded = recorded;
      return { recorded, duplicate: recorded === 0, subjects };
    },
  }),
  defineTool({
    name: 'list_customer_events',
    title: 'List customer events',
    description:
      'What happened to a client or contact, newest first: events recorded by tools, roster changes (health_score_changed…), automation steps, ' +
      'and provider webhooks. Filter by event names and time; pass next_cursor for more. Read-only.',
    kind: 'read',
    toolset: 'events',
    openWorld: false,
    input: z.strictObject({
      client_id: clientIdSchema.optional(),
      contact_email: emailSchema.optional(),
      names: z.array(z.string().min(1).max(100)).max(20).optional(),
      since: z.string().datetime({ offset: true }).optional(),
      limit: z.number().int().min(1).max(200).default(50),
      cursor: z.string().max(20).optional(),
    }),
    output: { events: z.array(eventOut), next_cursor: z.string().optional() },
    async handle({ client_id, contact_email, names, since, limit, cursor }, { services }) {
      if (!client_id && !contact_email) throw invalidInput('Give client_id or contact_email.', { field: 'client_id' });
      let contact_id: string | undefined;
      if (contact_email) {
        let q = services.store.db.selectFrom('contacts').select('contact_id').where('email', '=', contact_email);
        if (client_id) q = q.where('client_id', '=', client_id);
        const c = await q.executeTakeFirst();
        if (!c) throw invalidInput(`No roster contact ${contact_email}.`, { field: 'contact_email' });
        contact_id = c.contact_id;
      }
      const r = await services.store.events.list({ client_id, contact_id, names, since: since && new Date(since).toISOString() }, limit, cursor);
      return { events: r.events.map(({ depth: _d, dedup_key: _k, ...e }) => e), next_cursor: r.next_cursor };
    },
  }),
];
