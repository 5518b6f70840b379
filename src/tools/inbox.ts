import { z } from 'zod';
import { ENDPOINTS } from '../engine/inbox/index.js';
import { INBOX_STATES } from '../engine/inbox/repository.js';
import { defineTool } from '../mcp/tool.js';

/** A payload larger than this is shown as a preview string. */
const PAYLOAD_CHARS = 4000;

const inboundEvent = z.object({
  inbox_id: z.number(),
  provider: z.enum(ENDPOINTS),
  event_type: z.string().describe("SendGrid's event, Intercom's topic, or the product event's name"),
  email: z.string().nullable(),
  state: z.enum(INBOX_STATES),
  occurred_at: z.string(),
  received_at: z.string(),
  processed_at: z.string().nullable(),
  attempts: z.number(),
  note: z.string().nullable().describe('what processing did, or why it did nothing'),
  last_error: z.string().nullable(),
  payload: z.unknown().describe('the event as the provider sent it'),
  payload_truncated: z.boolean().optional(),
});

export const inboxTools = [
  defineTool({
    name: 'list_inbound_events',
    title: 'Inbound webhook events',
    description:
      'Lists the events the providers pushed to this server through its signed webhooks (SendGrid delivery/engagement events, Intercom ' +
      'notifications, your product\'s own events), newest first, with what processing did. Use state "unmatched" to see events about ' +
      'people who are not in the roster (kept, not dropped), "failed" for events that could not be processed, "pending" for the backlog. ' +
      'Read-only; calls no provider.',
    kind: 'read',
    toolset: 'events',
    openWorld: false,
    input: z.strictObject({
      provider: z.enum(ENDPOINTS).optional(),
      states: z.array(z.enum(INBOX_STATES)).max(5).optional(),
      event_type: z.string().max(100).optional().describe('e.g. bounce, open, contact.unsubscribed, login'),
      email: z.string().max(320).optional(),
      since: z.string().datetime({ offset: true }).optional().describe('received at or after'),
      limit: z.number().int().min(1).max(200).default(50),
      cursor: z.string().optional().describe('next_cursor from a previous call'),
    }),
    output: { events: z.array(inboundEvent), next_cursor: z.string().optional() },
    async handle({ limit, cursor, since, ...f }, { services }) {
      const { events, next_cursor } = await services.inbox.repo.list({ ...f, since: since && new Date(since).toISOString() }, limit, cursor);
      return {
        events: events.map((e) => {
          const big = e.payload.length > PAYLOAD_CHARS;
          return {
            inbox_id: e.inbox_id,
            provider: e.provider as (typeof ENDPOINTS)[number],
            event_type: e.event_type,
            email: e.email,
            state: e.state as (typeof INBOX_STATES)[number],
            occurred_at: e.occurred_at,
            received_at: e.received_at,
            processed_at: e.processed_at,
            attempts: e.attempts,
            note: e.note,
            last_error: e.last_error,
            payload: big ? `${e.payload.slice(0, PAYLOAD_CHARS)}…` : (JSON.parse(e.payload) as unknown),
            ...(big ? { payload_truncated: true } : {}),
          };
        }),
        next_cursor,
      };
    },
  }),
];
