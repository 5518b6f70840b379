/**
 * A provider stand-in in a process of its own, so a benchmark measures the server's CPU and memory
 * without the stand-in's. Started by bench/stand-in-client.ts with `node --import tsx` and an IPC
 * channel; the options arrive as JSON in argv[2]:
 *   { provider: 'sendgrid' | 'intercom', key, rateLimit: { limit, windowMs, style }, latencyMs }
 * It answers messages on the IPC channel (each carries an `id`, echoed in the reply):
 *   seed { emails }   Intercom only: adds a contact per address (searchable at once)
 *   mark              how many requests and deliveries there are so far (a starting point for stats)
 *   stats { since }   what happened since a mark: request timeline, statuses, deliveries, duplicates
 *   stop              stops serving and exits; replies with unreported contract violations
 */
import { startIntercomStandIn } from '../test/stand-ins/intercom.js';
import { startSendGridStandIn } from '../test/stand-ins/sendgrid.js';
import type { RateWindowOptions } from '../test/stand-ins/rate-window.js';
import type { HttpStandIn } from '../test/stand-ins/http-stand-in.js';
import type { IntercomStandIn } from '../test/stand-ins/intercom.js';
import type { SendGridStandIn } from '../test/stand-ins/sendgrid.js';

export interface StandInProcessOptions {
  provider: 'sendgrid' | 'intercom';
  key: string;
  rateLimit: RateWindowOptions;
  latencyMs: number;
}

export interface StandInMark {
  requests: number;
  /** SendGrid: recipients delivered (one per personalization address); Intercom: messages created. */
  deliveries: number;
  rejected: number;
  accepted: number;
  windows: number;
}

export interface StandInStats {
  mark: StandInMark;
  /** Per request since the mark, in arrival order: arrival, answer time (ms epoch) and status (0: none). */
  at: number[];
  answeredAt: number[];
  status: number[];
  /** Whether the request is a follow-up rather than part of delivering a message (Intercom's POST /events). */
  followUp: boolean[];
  /** `METHOD /path` → count, since the mark (Intercom ids collapsed to `:id`). */
  byRoute: Record<string, number>;
  deliveries: number;
  /** Recipients (addresses or Intercom contact ids) delivered to more than once since the mark. */
  duplicates: number;
  /** Recipients delivered to since the mark. */
  distinctRecipients: number;
  rejected: number;
  accepted: number;
  windows: number;
  /** When each window since the mark began (RateWindow.starts). */
  windowStarts: number[];
  violations: number;
}

type Request = { id: number; type: 'seed'; emails: string[] } | { id: number; type: 'mark' } | { id: number; type: 'stats'; since: StandInMark } | { id: number; type: 'stop' };

const opts = JSON.parse(process.argv[2] ?? '{}') as StandInProcessOptions;
const common = { rateLimit: opts.rateLimit, latencyMs: opts.latencyMs };
const standIn: HttpStandIn =
  opts.provider === 'sendgrid' ? await startSendGridStandIn({ apiKey: opts.key, ...common }) : await startIntercomStandIn({ token: opts.key, ...common });

/** Recipient of each delivery so far, in order. */
function recipients(): string[] {
  if (opts.provider === 'sendgrid') return (standIn as SendGridStandIn).delivered.map((d) => d.to);
  return (standIn as IntercomStandIn).messages.map((m) => m.to.id);
}

function mark(): StandInMark {
  return { requests: standIn.requests.length, deliveries: recipients().length, rejected: standIn.rate.rejected, accepted: standIn.rate.accepted, windows: standIn.rate.windows };
}

function stats(since: StandInMark): StandInStats {
  const reqs = standIn.requests.slice(since.requests);
  const byRoute: Record<string, number> = {};
  for (const r of reqs) {
    const key = `${r.method} ${r.path.replace(/\/contacts\/[0-9a-f]{24}/, '/contacts/:id')}`;
    byRoute[key] = (byRoute[key] ?? 0) + 1;
  }
  const all = recipients();
  const counts = new Map<string, number>();
  for (const to of all.slice(since.deliveries)) counts.set(to, (counts.get(to) ?? 0) + 1);
  return {
    mark: since,
    at: reqs.map((r) => r.at),
    answeredAt: reqs.map((r) => r.answeredAt ?? 0),
    status: reqs.map((r) => (typeof r.answer === 'number' ? r.answer : 0)),
    followUp: reqs.map((r) => r.method === 'POST' && r.path === '/events'),
    byRoute,
    deliveries: all.length - since.deliveries,
    duplicates: [...counts.values()].filter((n) => n > 1).length,
    distinctRecipients: counts.size,
    rejected: standIn.rate.rejected - since.rejected,
    accepted: standIn.rate.accepted - since.accepted,
    windows: standIn.rate.windows - since.windows,
    windowStarts: standIn.rate.starts.slice(since.windows),
    violations: standIn.violations.length,
  };
}

process.on('message', (msg: Request) => {
  const reply = (body: unknown) => process.send!({ id: msg.id, body });
  switch (msg.type) {
    case 'seed':
      reply(msg.emails.map((email) => (standIn as IntercomStandIn).seedContact({ email }).id));
      return;
    case 'mark':
      reply(mark());
      return;
    case 'stats':
      reply(stats(msg.since));
      return;
    case 'stop': {
      const violations = standIn.takeUnreportedViolations();
      void standIn.stop().then(() => {
        reply(violations);
        process.disconnect();
      });
      return;
    }
  }
});
process.on('disconnect', () => process.exit(0));
process.send!({ id: 0, body: standIn.url });
