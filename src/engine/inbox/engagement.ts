import type { Kysely } from 'kysely';
import type { Database } from '../../store/schema.js';
import { ENGAGEMENT_KINDS, type EngagementKind } from './interpret.js';

/**
 * What happened to the messages a campaign or workflow sent, from verified provider events: distinct
 * messages delivered, bounced, opened… per channel, and each as a percentage of the messages sent.
 */

export type EngagementCounts = Record<EngagementKind, number>;
export type Engagement = EngagementCounts & { rates: EngagementCounts };

export async function engagementBySource(db: Kysely<Database>, sourceKind: string, sourceId: string): Promise<Array<{ channel: string; kind: string; n: number }>> {
  const rows = await db
    .selectFrom('message_events')
    .select(['channel', 'kind', (eb) => eb.fn.countAll<number | string>().as('n')])
    .where('source_kind', '=', sourceKind)
    .where('source_id', '=', sourceId)
    .groupBy(['channel', 'kind'])
    .execute();
  return rows.map((r) => ({ channel: r.channel, kind: r.kind, n: Number(r.n) }));
}

const zero = (): EngagementCounts => Object.fromEntries(ENGAGEMENT_KINDS.map((k) => [k, 0])) as EngagementCounts;
const percent = (n: number, of: number) => (of ? Math.round((n / of) * 1000) / 10 : 0);

/** Counts per channel and overall, with rates against `sent` (per channel, and the total). */
export function summarizeEngagement(
  counts: Array<{ channel: string; kind: string; n: number }>,
  sent: { total: number; per_channel: Record<string, number> },
): { totals: Engagement; per_channel: Record<string, Engagement> } {
  const totals = zero();
  const perChannel: Record<string, EngagementCounts> = {};
  for (const { channel, kind, n } of counts) {
    if (!(ENGAGEMENT_KINDS as string[]).includes(kind)) continue;
    totals[kind as EngagementKind] += n;
    (perChannel[channel] ??= zero())[kind as EngagementKind] += n;
  }
  const withRates = (c: EngagementCounts, of: number): Engagement => ({ ...c, rates: Object.fromEntries(ENGAGEMENT_KINDS.map((k) => [k, percent(c[k], of)])) as EngagementCounts });
  for (const channel of Object.keys(sent.per_channel)) perChannel[channel] ??= zero();
  return {
    totals: withRates(totals, sent.total),
    per_channel: Object.fromEntries(Object.entries(perChannel).map(([ch, c]) => [ch, withRates(c, sent.per_channel[ch] ?? 0)])),
  };
}
