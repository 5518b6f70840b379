import { z } from 'zod';
import { defineTool } from '../mcp/tool.js';
import type { FlushResult } from '../providers/mixpanel/service.js';
import { ToolError } from '../result.js';
import { recordForRecipient, refuseRosterEvent } from './events.js';
import { idempotencyKey, replayed } from './safety-fields.js';

/** A Mixpanel distinct_id names a roster contact by external user id, or by email when it is one. */
const distinctRef = (id: string) => ({ external_user_id: id, ...(id.includes('@') ? { email: id } : {}) });
/** Mixpanel times are epoch seconds or milliseconds. */
const eventTime = (t: number | undefined) => (t === undefined ? undefined : new Date(t < 1e11 ? t * 1000 : t).toISOString());

const properties = z.record(z.string().min(1).max(255), z.unknown()).optional();
const failure = z.object({ insert_id: z.string(), event: z.string(), field: z.string().optional(), message: z.string() });
const flushOut = {
  requests: z.number(),
  imported: z.number(),
  rejected: z.array(failure).describe('events Mixpanel refused (reported once, not retried)'),
  pending: z.number().describe('events still buffered because Mixpanel could not be reached; sent on a later flush'),
  error: z.object({ code: z.string(), message: z.string(), retryable: z.boolean() }).optional(),
};
/** A flush that delivered nothing because Mixpanel refused everything is a failure, with Mixpanel's reason. */
function shapeFlush(r: FlushResult): FlushResult {
  if (r.imported === 0 && r.pending === 0 && r.rejected.length > 0) {
    throw new ToolError('invalid_input', `Mixpanel rejected all ${r.rejected.length} event(s); none was imported. Mixpanel said: ${r.rejected[0]!.message}`, {
      provider: 'mixpanel',
      details: { rejected: r.rejected.slice(0, 20), rejected_total: r.rejected.length },
    });
  }
  return { ...r, rejected: r.rejected.slice(0, 100) };
}

export const analyticsTools = [
  defineTool({
    name: 'mixpanel_track_event',
    title: 'Track a Mixpanel event',
    description:
      'Records a product event for a user in Mixpanel. Events are buffered and sent in batches (every MIXPANEL_FLUSH_INTERVAL_MS, or at 2,000); ' +
      'flush: true waits for delivery and reports per-event rejections. A deterministic insert_id makes a repeated call count once.',
    kind: 'write',
    toolset: 'mixpanel',
    idempotent: true,
    openWorld: true,
    input: z.strictObject({
      distinct_id: z.string().min(1).max(255).describe('the user (your user id or email)'),
      event: z.string().min(1).max(255),
      properties,
      time: z.number().positive().optional().describe('epoch seconds or milliseconds; default now (at most 1 h in the future)'),
      insert_id: z.string().regex(/^[A-Za-z0-9-]{1,36}$/, '1–36 letters, digits or "-"').optional().describe('your own idempotency key'),
      flush: z.boolean().default(false),
    }),
    output: { event: z.string(), distinct_id: z.string(), insert_id: z.string(), queued: z.boolean(), imported: z.boolean().optional(), delivery: z.object(flushOut).optional() },
    async handle(i, ctx) {
      const { services } = ctx;
      refuseRosterEvent(i.event, 'event');
      const { insert_id } = await services.mixpanel.track(i);
      await recordForRecipient(ctx, distinctRef(i.distinct_id), { name: i.event, properties: i.properties ?? {}, occurred_at: eventTime(i.time), source: 'tool:mixpanel_track_event' });
      if (!i.flush) return { event: i.event, distinct_id: i.distinct_id, insert_id, queued: true };
      const delivery = await services.mixpanel.flush();
      const own = delivery.rejected.find((f) => f.insert_id === insert_id);
      if (own) {
        throw new ToolError('invalid_input', `Mixpanel rejected the event "${i.event}": ${own.message}${own.field ? ` (field ${own.field})` : ''}. It was not imported.`, {
          provider: 'mixpanel',
          details: { insert_id },
        });
      }
      return { event: i.event, distinct_id: i.distinct_id, insert_id, queued: delivery.pending > 0, imported: delivery.pending === 0, delivery: shapeFlush(delivery) };
    },
  }),
  defineTool({
    name: 'mixpanel_set_profile',
    title: 'Set Mixpanel profile properties',
    description: "Sets properties on a user's Mixpanel profile ($set), or only where not yet set with once: true ($set_once). Needs MIXPANEL_PROJECT_TOKEN.",
    kind: 'write',
    toolset: 'mixpanel',
    idempotent: true,
    openWorld: true,
    input: z.strictObject({ distinct_id: z.string().min(1), properties: z.record(z.string().min(1), z.unknown()), once: z.boolean().default(false) }),
    output: { distinct_id: z.string(), operation: z.enum(['$set', '$set_once']), properties: z.record(z.string(), z.unknown()) },
    async handle(i, { services }) {
      const operation = i.once ? ('$set_once' as const) : ('$set' as const);
      await services.mixpanel.engage(i.distinct_id, operation, i.properties);
      return { distinct_id: i.distinct_id, operation, properties: i.properties };
    },
  }),
  defineTool({
    name: 'mixpanel_increment',
    title: 'Increment Mixpanel profile counters',
    description: "Adds to numeric properties of a user's Mixpanel profile ($add), e.g. {\"logins\": 1}. Not idempotent: each call adds again.",
    kind: 'write',
    toolset: 'mixpanel',
    idempotent: false,
    openWorld: true,
    input: z.strictObject({
      distinct_id: z.string().min(1),
      increments: z.record(z.string().min(1), z.number()),
      idempotency_key: idempotencyKey.describe('your own key for this increment: a repeat with it adds nothing more'),
    }),
    output: { distinct_id: z.string(), increments: z.record(z.string(), z.number()), replayed },
    async handle({ idempotency_key, ...i }, { services }) {
      return services.idempotency.once('mixpanel_increment', idempotency_key, i, `increment ${Object.keys(i.increments).join(', ')} of ${i.distinct_id}`, async () => {
        await services.mixpanel.engage(i.distinct_id, '$add', i.increments);
        return { distinct_id: i.distinct_id, increments: i.increments };
      });
    },
  }),
  defineTool({
    name: 'mixpanel_flush',
    title: 'Flush buffered Mixpanel events',
    description: 'Sends every buffered Mixpanel event now and reports what was imported, what Mixpanel rejected (per event) and what is still pending.',
    kind: 'write',
    toolset: 'mixpanel',
    idempotent: true,
    openWorld: true,
    input: z.strictObject({}),
    output: flushOut,
    async handle(_i, { services }) {
      services.runtimes.mixpanel.requireConfigured();
      return shapeFlush(await services.mixpanel.flush());
    },
  }),
  defineTool({
    name: 'mixpanel_track_usage_engagement',
    title: 'Record feature usage',
    description:
      'Records that a user used a product feature: a "feature_used" event with feature, duration_seconds and client_id, and increments the ' +
      "profile's counters (feature_uses, usage_seconds, uses:<feature>). Use for customer-health signals.",
    kind: 'write',
    toolset: 'mixpanel',
    idempotent: false,
    openWorld: true,
    input: z.strictObject({
      distinct_id: z.string().min(1),
      feature: z.string().min(1).max(100),
      duration_seconds: z.number().min(0).max(86_400 * 7).default(0),
      client_id: z.string().max(64).optional().describe('the roster client (account) the user belongs to'),
      properties,
      time: z.number().positive().optional(),
      idempotency_key: idempotencyKey.describe('your own key for this usage record: a repeat with it records and adds nothing more'),
    }),
    output: { event: z.string(), distinct_id: z.string(), insert_id: z.string(), queued: z.boolean(), profile_incremented: z.boolean(), replayed },
    async handle({ idempotency_key, ...i }, ctx) {
      const { services, log } = ctx;
      return services.idempotency.once('mixpanel_track_usage_engagement', idempotency_key, i, `usage of ${i.feature} by ${i.distinct_id}`, async () => {
        const properties = { ...i.properties, feature: i.feature, duration_seconds: i.duration_seconds, ...(i.client_id ? { client_id: i.client_id } : {}) };
        const { insert_id } = await services.mixpanel.track({ event: 'feature_used', distinct_id: i.distinct_id, time: i.time, properties });
        const usage = { name: 'feature_used', properties, occurred_at: eventTime(i.time), source: 'tool:mixpanel_track_usage_engagement' };
        if (!(await recordForRecipient(ctx, distinctRef(i.distinct_id), usage)) && i.client_id) {
          // No contact with that id: the account's usage still counts (usage_pattern triggers are per client).
          const known = await services.store.roster.getClient(i.client_id).catch(() => undefined);
          if (known) {
            await services.store.events.record(services.store.db, [{ ...usage, client_id: i.client_id }]);
            services.automations.wake();
          }
        }
        let profile_incremented = false;
        if (services.config.mixpanel.projectToken) {
          await services.mixpanel.engage(i.distinct_id, '$add', { feature_uses: 1, usage_seconds: i.duration_seconds, [`uses:${i.feature}`]: 1 });
          profile_incremented = true;
        } else {
          log.info('no MIXPANEL_PROJECT_TOKEN: usage counters on the profile were not incremented');
        }
        return { event: 'feature_used', distinct_id: i.distinct_id, insert_id, queued: true, profile_incremented };
      });
    },
  }),
];
