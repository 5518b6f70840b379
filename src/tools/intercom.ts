import { z } from 'zod';
import { defineTool, type ToolContext, SEND_OR_OVERRIDE } from '../mcp/tool.js';
import type { IntercomContact, RecipientSpec } from '../providers/intercom/service.js';
import { invalidInput } from '../result.js';
import type { ActivityInput } from '../store/index.js';
import { normalizeAddress } from '../store/suppressions.js';
import { emailAddress } from '../validation.js';
import { recordForRecipient, refuseRosterEvent } from './events.js';
import { idempotencyKey, overrideConsent, replayed } from './safety-fields.js';

/** Exactly one of these names the recipient; the service checks and explains. */
const recipient = {
  user_email: emailAddress.optional().describe("the contact's email"),
  user_id: z.string().min(1).max(255).optional().describe('your own user id for the contact (Intercom external_id)'),
  contact_id: z.string().min(1).max(64).optional().describe("Intercom's contact id"),
};

const recipientOut = z.object({ contact_id: z.string(), email: z.string().nullable(), user_id: z.string().nullable(), role: z.enum(['user', 'lead']) });
const toRecipient = (c: IntercomContact) => ({ contact_id: c.id, email: c.email, user_id: c.external_id, role: c.role });

/** Writes to the roster timeline when the contact is a known customer. Best effort: never fails the tool. */
async function recordActivity(ctx: ToolContext, c: IntercomContact, entry: Omit<ActivityInput, 'channel' | 'outcome'>): Promise<void> {
  const { store } = ctx.services;
  const ref = { email: c.email ?? undefined, external_user_id: c.external_id ?? undefined, intercom_contact_id: c.id };
  try {
    await store.linkIntercomContact(ref, c.id, c.role);
    await store.recordActivityForRecipient(ref, { ...entry, channel: 'intercom', outcome: 'success' });
  } catch (err) {
    ctx.log.warn({ err }, 'recording Intercom activity in the roster timeline failed');
  }
}

const spec = (i: RecipientSpec): RecipientSpec => ({ user_email: i.user_email, user_id: i.user_id, contact_id: i.contact_id });

export const intercomTools = [
  defineTool({
    name: 'intercom_send_message',
    title: 'Send an Intercom message',
    description:
      'Sends one message from an admin to one Intercom contact: in-app (message_type "inapp") or email ("email", needs subject). ' +
      'Name the contact by exactly one of user_email, user_id or contact_id. Returns the message id. COST: a real person receives it. ' +
      'Refused for a contact who unsubscribed (in the roster, or from emails in Intercom). Pass idempotency_key and reuse it on retries: ' +
      'a repeat returns the first result and sends nothing. It is never re-sent automatically: if the outcome is unknown the error says so.',
    kind: 'send',
    scope: SEND_OR_OVERRIDE,
    toolset: 'intercom',
    openWorld: true,
    input: z.strictObject({
      ...recipient,
      message_type: z.enum(['inapp', 'email']),
      subject: z.string().min(1).max(998).regex(/^[^\r\n]*$/, 'one line: no line breaks').optional().describe('required for email'),
      body: z.string().min(1).max(100_000).describe('HTML or plain text'),
      from_admin_id: z.string().min(1).optional().describe('sending admin; default INTERCOM_ADMIN_ID or the token owner'),
      template: z.enum(['plain', 'personal']).optional().describe('email style; default plain'),
      idempotency_key: idempotencyKey,
      override_consent: overrideConsent,
    }),
    output: { message_id: z.string(), message_type: z.enum(['inapp', 'email']), recipient: recipientOut, replayed },
    async handle(input, ctx) {
      if (input.message_type === 'email' && !input.subject) {
        throw invalidInput('subject is required when message_type is "email". Add a subject and call again.', { fields: [{ field: 'subject', problem: 'required for email' }] });
      }
      const { services } = ctx;
      const intercom = services.intercom;
      services.runtimes.intercom.requireConfigured();
      const { idempotency_key, override_consent, ...rest } = input;
      const request = { ...rest, ...(rest.user_email ? { user_email: normalizeAddress(rest.user_email) } : {}) };
      return services.directSends.run(
        { tool: 'intercom_send_message', idempotencyKey: idempotency_key, request, summary: `Intercom ${input.message_type} to ${input.user_email ?? input.user_id ?? input.contact_id}${input.subject ? `: ${input.subject}` : ''}`, override: override_consent, approve: ctx.approve, audit: ctx.audit },
        async (gate) => {
          const contact = await intercom.resolveContact(spec(input));
          const email = input.message_type === 'email';
          const from = input.from_admin_id ?? (await intercom.defaultAdminId());
          await gate.clear({
            recipients: [
              {
                email: contact.email,
                user_id: contact.external_id,
                intercom_contact_id: contact.id,
                provider_block: email && contact.unsubscribed_from_emails ? `${contact.email ?? contact.id} unsubscribed from emails in Intercom` : undefined,
              },
            ],
            emailChannel: email,
            approval: {
              channel: `Intercom ${email ? 'email' : 'in-app message'}`,
              sender: { intercom_admin: from },
              when: 'now',
              // Intercom bodies are HTML or plain text: read as HTML either way (plain text reads the same).
              copies: [{ to: contact.email ?? contact.name ?? contact.id, subject: input.subject, html: input.body }],
              full_at: "this tool call's arguments (your client shows them)",
            },
          });
          const { message_id } = await intercom.sendMessage({
            to: { id: contact.id, type: contact.role },
            message_type: input.message_type,
            subject: input.subject,
            body: input.body,
            from_admin_id: from,
            template: input.template,
          });
          ctx.audit.message_id = message_id;
          await recordActivity(ctx, contact, {
            type: 'message',
            summary: `Intercom ${input.message_type} message${input.subject ? `: ${input.subject}` : ''}`,
            provider_ids: { message_id },
            data: { message_type: input.message_type, subject: input.subject, from_admin_id: from },
          });
          return { message_id, message_type: input.message_type, recipient: toRecipient(contact) };
        },
      );
    },
  }),
  defineTool({
    name: 'intercom_create_note',
    title: 'Add a note to an Intercom contact',
    description: 'Adds an internal note (visible to your team, not the customer) to an Intercom contact. Returns the note id.',
    kind: 'write',
    toolset: 'intercom',
    idempotent: false,
    openWorld: true,
    input: z.strictObject({
      ...recipient,
      body: z.string().min(1).max(65_000),
      admin_id: z.string().min(1).optional().describe('author; default the sending admin'),
      idempotency_key: idempotencyKey.describe('your own key for this note: a repeat with it returns the first note and adds nothing'),
    }),
    output: { note_id: z.string(), user_id: z.string().describe("Intercom contact id the note is on"), body: z.string(), replayed },
    async handle({ idempotency_key, ...input }, ctx) {
      const intercom = ctx.services.intercom;
      return ctx.services.idempotency.once('intercom_create_note', idempotency_key, input, `note on ${input.user_email ?? input.user_id ?? input.contact_id}`, async () => {
        const contact = await intercom.resolveContact(spec(input));
        const admin = input.admin_id ?? (await intercom.defaultAdminId());
        const { note_id } = await intercom.createNote(contact.id, input.body, admin);
        await recordActivity(ctx, contact, { type: 'note', summary: `Intercom note: ${input.body.slice(0, 120)}`, provider_ids: { note_id } });
        return { note_id, user_id: contact.id, body: input.body };
      });
    },
  }),
  defineTool({
    name: 'intercom_track_event',
    title: 'Track an Intercom event',
    description:
      'Records an event (e.g. "renewal-call-held") on an Intercom contact, with up to 10 flat metadata values (text, number or boolean). ' +
      'created_at defaults to now. Intercom counts the same (event, time, contact) once.',
    kind: 'write',
    toolset: 'intercom',
    idempotent: true,
    openWorld: true,
    input: z.strictObject({
      ...recipient,
      event_name: z.string().min(1).max(255).describe('past-tense verb-noun, e.g. "upgraded-plan"'),
      metadata: z
        .record(z.string().min(1).max(255), z.union([z.string().max(255), z.number(), z.boolean()]))
        .refine((m) => Object.keys(m).length <= 10, { message: 'at most 10 metadata keys (Intercom drops the rest); send fewer keys' })
        .optional(),
      created_at: z.number().int().positive().optional().describe('epoch seconds; default now'),
      idempotency_key: idempotencyKey.describe('your own key for this event: a repeat with it records nothing more'),
    }),
    output: { event_name: z.string(), user: recipientOut, metadata: z.record(z.string(), z.unknown()), replayed },
    async handle({ idempotency_key, ...input }, ctx) {
      refuseRosterEvent(input.event_name, 'event_name');
      return ctx.services.idempotency.once('intercom_track_event', idempotency_key, input, `event ${input.event_name}`, async () => {
        const contact = await ctx.services.intercom.resolveContact(spec(input));
        await ctx.services.intercom.trackEvent({ contact_id: contact.id, event_name: input.event_name, created_at: input.created_at, metadata: input.metadata });
        await recordActivity(ctx, contact, { type: 'event', summary: `Intercom event ${input.event_name}`, data: { metadata: input.metadata ?? {} } });
        await recordForRecipient(
          ctx,
          { email: contact.email ?? undefined, external_user_id: contact.external_id ?? undefined, intercom_contact_id: contact.id },
          { name: input.event_name, properties: input.metadata ?? {}, occurred_at: input.created_at ? new Date(input.created_at * 1000).toISOString() : undefined, source: 'tool:intercom_track_event' },
        );
        return { event_name: input.event_name, user: toRecipient(contact), metadata: input.metadata ?? {} };
      });
    },
  }),
  defineTool({
    name: 'intercom_get_user',
    title: 'Look up an Intercom contact',
    description: "Reads one Intercom contact's profile: ids, email, name, role, phone, custom attributes, tags and dates (epoch seconds). Read-only.",
    kind: 'read',
    toolset: 'intercom',
    openWorld: true,
    input: z.strictObject(recipient),
    output: {
      user: z.object({
        id: z.string(),
        email: z.string().nullable(),
        name: z.string().nullable(),
        user_id: z.string().nullable(),
        role: z.enum(['user', 'lead']),
        phone: z.string().nullable(),
        custom_attributes: z.record(z.string(), z.unknown()),
        tags: z.array(z.string()),
        created_at: z.number().nullable(),
        signed_up_at: z.number().nullable(),
        last_seen_at: z.number().nullable(),
      }),
    },
    async handle(input, { services }) {
      const c = await services.intercom.resolveContact(spec(input));
      const tags = await services.intercom.tagsOf(c.id);
      return {
        user: {
          id: c.id,
          email: c.email,
          name: c.name,
          user_id: c.external_id,
          role: c.role,
          phone: c.phone,
          custom_attributes: c.custom_attributes,
          tags: tags.map((t) => t.name),
          created_at: c.created_at,
          signed_up_at: c.signed_up_at,
          last_seen_at: c.last_seen_at,
        },
      };
    },
  }),
  defineTool({
    name: 'intercom_create_user',
    title: 'Create or update an Intercom contact',
    description:
      'Creates an Intercom user with this email, or updates the existing contact with this email / user_id — never a duplicate. ' +
      'Returns whether it was created.',
    kind: 'write',
    toolset: 'intercom',
    idempotent: true,
    openWorld: true,
    input: z.strictObject({
      email: emailAddress,
      user_id: z.string().min(1).max(255).optional().describe('your own user id (external_id)'),
      name: z.string().min(1).max(255).optional(),
      phone: z.string().min(1).max(50).optional(),
      custom_attributes: z.record(z.string(), z.union([z.string(), z.number(), z.boolean(), z.null()])).optional().describe('must already exist as data attributes in Intercom'),
      signed_up_at: z.number().int().positive().optional().describe('epoch seconds'),
    }),
    output: { created: z.boolean(), user: z.object({ id: z.string(), email: z.string().nullable(), user_id: z.string().nullable(), name: z.string().nullable() }) },
    async handle(input, ctx) {
      const { created, contact } = await ctx.services.intercom.upsertContact(input);
      await recordActivity(ctx, contact, { type: 'profile_change', summary: `Intercom contact ${created ? 'created' : 'updated'}`, provider_ids: { contact_id: contact.id } });
      return { created, user: { id: contact.id, email: contact.email, user_id: contact.external_id, name: contact.name } };
    },
  }),
  tagTool('add'),
  tagTool('remove'),
];

/** intercom_add_tag / intercom_remove_tag: the same shape, opposite directions. */
function tagTool(direction: 'add' | 'remove') {
  const add = direction === 'add';
  return defineTool({
    name: `intercom_${direction}_tag`,
    title: add ? 'Tag an Intercom contact' : 'Untag an Intercom contact',
    description: add
      ? 'Adds a tag to an Intercom contact, creating the tag if it does not exist yet. changed is false if the contact already had it.'
      : 'Removes a tag from an Intercom contact. Succeeds with changed: false if the contact did not have it.',
    kind: add ? 'write' : 'destructive',
    toolset: 'intercom',
    idempotent: true,
    openWorld: true,
    input: z.strictObject({ ...recipient, tag_name: z.string().min(1).max(255) }),
    output: { tag_name: z.string(), user_id: z.string(), changed: z.boolean() },
    async handle(input, ctx) {
      const intercom = ctx.services.intercom;
      const contact = await intercom.resolveContact(spec(input));
      const { changed } = add ? await intercom.addTag(contact.id, input.tag_name) : await intercom.removeTag(contact.id, input.tag_name);
      if (changed) await recordActivity(ctx, contact, { type: 'tag', summary: `${add ? 'Tagged' : 'Removed tag'} ${input.tag_name} in Intercom` });
      return { tag_name: input.tag_name, user_id: contact.id, changed };
    },
  });
}
