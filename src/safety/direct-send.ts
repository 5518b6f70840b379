import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import { toErrorBody, ToolError } from '../result.js';
import { consentBlock, describeBlock, suppressionBlock } from '../store/consent.js';
import { activeSuppressions, blockingSuppression, normalizeAddress, PERMANENT_KINDS } from '../store/suppressions.js';
import type { Store } from '../store/index.js';
import type { Approver, ApprovalRequest } from './approval.js';
import type { DailySendLimit } from './daily-limit.js';
import type { IdempotencyStore } from './idempotency.js';

/**
 * The promises of the direct send tools (intercom_send_message, sendgrid_send_*), the same ones the
 * outbox keeps for campaigns and automations: at most CS_MCP_MAX_RECIPIENTS_PER_SEND recipients (more
 * is a campaign), never to a contact the roster marks unsubscribed unless the call carries an
 * override a person approves, a person's approval where policy requires it, the daily send limit,
 * idempotency, and facts for the audit log.
 */

export interface DirectRecipient {
  email?: string | null;
  user_id?: string | null;
  intercom_contact_id?: string | null;
  /** The provider's own suppression (e.g. Intercom's unsubscribed_from_emails), when known. */
  provider_block?: string;
}

export interface ClearRequest {
  recipients: DirectRecipient[];
  /** Email channels honour email suppressions; in-app messages only a full unsubscribe. */
  emailChannel: boolean;
  approval: Omit<ApprovalRequest, 'action' | 'recipients' | 'messages' | 'examples' | 'always'> & { messages?: number };
}

export interface ConsentOverride {
  reason: string;
}

/** What a send tool does between its lookups and its request. */
export interface SendGate {
  /** Checks every rule for these recipients (throws a ToolError naming what refused) and takes their daily places. */
  clear(req: ClearRequest): Promise<void>;
  /** Gives back the daily places of recipients the provider provably did not receive. */
  unsent(n: number): void;
}

export interface DirectSendSpec {
  tool: string;
  idempotencyKey?: string;
  /** The arguments that make two calls "the same send" (without the key). */
  request: unknown;
  /** Shown in refusals of a repeat: "email to ann@acme.test: Renewal". */
  summary: string;
  override?: ConsentOverride;
  approve: Approver;
  /** Facts for the audit log (the adapter writes them with the call). */
  audit: Record<string, unknown>;
}

/** The idempotency scope every direct send shares. */
const SEND_SCOPE = 'send';
const SEND_TOOLS = ['sendgrid_send_email', 'sendgrid_send_bulk_emails', 'sendgrid_send_template_email', 'intercom_send_message'];

/** An address as every comparison sees it, and a recipient list as it is hashed: normalised, in a fixed order. */
export function normalizedRecipients<R extends { email: string }>(list: R[]): R[] {
  return list.map((r) => ({ ...r, email: normalizeAddress(r.email) })).sort((a, b) => (a.email < b.email ? -1 : a.email > b.email ? 1 : 0));
}

export class DirectSendGuard {
  constructor(private readonly deps: { config: Config; store: Store; dailyLimit: DailySendLimit; idempotency: IdempotencyStore; log?: Logger }) {}

  /**
   * Runs one direct send under every rule. `body` does its lookups, calls `gate.clear(...)` once before
   * its first send request, and returns the result the tool reports. A repeat of an earlier call
   * (same idempotency key) returns that call's result and runs nothing.
   */
  async run<T extends object>(spec: DirectSendSpec, body: (gate: SendGate) => Promise<T>): Promise<T & { replayed?: boolean }> {
    const { idempotency } = this.deps;
    if (spec.idempotencyKey) spec.audit.idempotency_key = spec.idempotencyKey;
    // One key space for every send tool: a key reused on another tool (or with other content) is a
    // conflict, never a second send. The request names its tool, so only the same call replays.
    if (spec.idempotencyKey) await this.refuseLegacyKey(spec);
    const begun = await idempotency.begin<T>(SEND_SCOPE, spec.idempotencyKey, { tool: spec.tool, request: spec.request }, `${spec.tool}: ${spec.summary}`);
    if (begun && 'replay' in begun) {
      spec.audit.replayed = true;
      return { ...begun.replay, replayed: true };
    }
    let reserved: { day: string; n: number } | undefined;
    let unsent = 0;
    const gate: SendGate = {
      clear: async (req) => {
        reserved = await this.clear(spec, req);
      },
      unsent: (n) => {
        unsent += n;
      },
    };
    let result: T;
    try {
      result = await body(gate);
      if (!reserved) throw new ToolError('provider_error', `Internal error: ${spec.tool} sent without clearing its recipients. This is a bug.`);
    } catch (err) {
      // Nothing left before the recipients were cleared, and a ToolError that does not say otherwise
      // means the provider did not act on it. Anything else after clearing may have reached the provider.
      const provablyUnsent = !reserved || (err instanceof ToolError && !err.outcomeUnknown);
      if (provablyUnsent) {
        if (begun) await idempotency.releaseSafely(begun.handle);
        if (reserved) await this.giveBack(reserved.n, reserved.day);
        throw err;
      }
      // It may have been sent: the key stays claimed and the daily place stays taken.
      const error = err instanceof ToolError ? err : idempotency.inDoubt({ scope: spec.tool, key: spec.idempotencyKey ?? '', explicit: spec.idempotencyKey !== undefined, at: new Date().toISOString() }, {}, err);
      if (begun) await idempotency.settle(begun.handle, { error: toErrorBody(error) });
      throw error;
    }
    if (begun && !(await idempotency.settle(begun.handle, { ok: result }))) {
      spec.audit.in_doubt = true;
      throw idempotency.inDoubt(begun.handle, { ok: result });
    }
    if (unsent) await this.giveBack(Math.min(unsent, reserved.n), reserved.day);
    return result;
  }

  /** Gives back daily places of messages that provably did not go out; a failure to do so only keeps them taken (logged). */
  private async giveBack(n: number, day: string): Promise<void> {
    try {
      await this.deps.dailyLimit.release(this.deps.store.db, n, day);
    } catch (err) {
      this.deps.log?.warn({ err, n, day }, 'could not give back daily send places (they stay counted for today)');
    }
  }

  /** A key a send tool stored under its own name (before sends shared one key space) still counts. */
  private async refuseLegacyKey(spec: DirectSendSpec): Promise<void> {
    const old = await this.deps.store.db
      .selectFrom('idempotency_records')
      .select(['scope', 'created_at', 'summary'])
      .where('scope', 'in', SEND_TOOLS)
      .where('key', '=', spec.idempotencyKey!)
      .where('expires_at', '>', new Date().toISOString())
      .executeTakeFirst();
    if (old) {
      throw new ToolError(
        'conflict',
        `idempotency_key "${spec.idempotencyKey}" was already used at ${old.created_at} by ${old.scope} (${old.summary ?? 'an earlier send'}). Nothing was sent. Use a new key for a new message.`,
        { details: { policy: 'idempotency', first_call_at: old.created_at } },
      );
    }
  }

  private async clear(spec: DirectSendSpec, req: ClearRequest): Promise<{ day: string; n: number }> {
    const { config, store, dailyLimit } = this.deps;
    const n = req.recipients.length;
    spec.audit.recipients = n;
    const max = config.safety.maxRecipientsPerSend;
    if (n > max) {
      throw new ToolError(
        'forbidden',
        `A direct send reaches at most ${max} recipients (CS_MCP_MAX_RECIPIENTS_PER_SEND); this call names ${n}. Nothing was sent. ` +
          'Send it as a campaign instead: put the recipients in the roster (import_clients / upsert_contact) and use send_personalized_email, ' +
          'which previews, asks for confirmation, and delivers each recipient exactly once at the providers\' pace.',
        { details: { policy: 'max_recipients', limit: max, recipients: n } },
      );
    }
    const refusals = await this.blockedRecipients(req);
    const blocked = refusals.map((b) => b.text);
    const permanent = refusals.filter((b) => b.permanent).map((b) => b.text);
    if (permanent.length) {
      throw new ToolError(
        'forbidden',
        `Not sent: ${permanent.slice(0, 5).join('; ')}${permanent.length > 5 ? `; and ${permanent.length - 5} more` : ''}. Nothing was sent to anyone in this call. ` +
          'A spam report, hard bounce or provider drop cannot be overridden: only the recipient can undo it, through the provider. Remove them and send again.',
        { details: { policy: 'consent', blocked: blocked.slice(0, 20), blocked_total: blocked.length, permanent: permanent.slice(0, 20) } },
      );
    }
    if (blocked.length && !spec.override) {
      throw new ToolError(
        'forbidden',
        `Not sent: ${blocked.slice(0, 5).join('; ')}${blocked.length > 5 ? `; and ${blocked.length - 5} more` : ''}. Nothing was sent to anyone in this call. ` +
          'Remove them, or — only if the person asked to be contacted about this — pass override_consent with the reason (recorded in the audit log; a person must approve it).',
        { details: { policy: 'consent', blocked: blocked.slice(0, 20), blocked_total: blocked.length } },
      );
    }
    if (blocked.length) spec.audit.consent_override = { reason: spec.override!.reason, contacts: blocked.slice(0, 20) };
    const examples = req.recipients.slice(0, 5).map((r) => r.email ?? r.user_id ?? r.intercom_contact_id ?? '?');
    await spec.approve({
      ...req.approval,
      action: 'direct_send',
      recipients: n,
      messages: req.approval.messages ?? n,
      examples,
      always: blocked.length > 0,
      ...(blocked.length ? { consent_override: `overrides the consent of ${blocked.join('; ')}` } : {}),
      written: [...(req.approval.written ?? []), ...(blocked.length ? [{ label: 'Reason given for the consent override', value: spec.override!.reason }] : [])],
    });
    const place = await dailyLimit.reserve(store.db, n);
    if (!place.ok) {
      throw new ToolError(
        'rate_limited',
        `The daily send limit (CS_MCP_DAILY_SEND_LIMIT=${dailyLimit.limit}) leaves ${place.remaining} message(s) today; this call needs ${n}. Nothing was sent. ` +
          `It resets at ${new Date(place.resetsAt).toISOString()}.`,
        { retryable: true, retryAfterMs: place.resetsAt - Date.now(), details: { policy: 'daily_send_limit', remaining: place.remaining } },
      );
    }
    return { day: place.day, n };
  }

  /**
   * The suppression list (by normalised address), roster contacts (matched by email, user id or Intercom
   * id) and provider flags that refuse these recipients. `permanent`: a spam report, hard bounce or drop,
   * which no override sends past.
   */
  private async blockedRecipients(req: ClearRequest): Promise<Array<{ text: string; permanent: boolean }>> {
    const out: Array<{ text: string; permanent: boolean }> = [];
    const listed = await activeSuppressions(this.deps.store.db, req.recipients.map((r) => r.email));
    for (const r of req.recipients) {
      const row = r.email ? blockingSuppression(listed.get(normalizeAddress(r.email)), req.emailChannel) : undefined;
      if (row) {
        out.push({ text: describeBlock(row.address, suppressionBlock(row)), permanent: PERMANENT_KINDS.has(row.kind) });
        continue;
      }
      if (r.provider_block) {
        out.push({ text: r.provider_block, permanent: false });
        continue;
      }
      const matches = await this.deps.store.roster.findContacts({
        email: r.email ?? undefined,
        external_user_id: r.user_id ?? undefined,
        intercom_contact_id: r.intercom_contact_id ?? undefined,
      });
      for (const c of matches) {
        const block = consentBlock(c, req.emailChannel);
        if (block) {
          out.push({ text: `${describeBlock(c.email, block)} [client ${c.client_id}]`, permanent: PERMANENT_KINDS.has(block.kind) });
          break;
        }
      }
    }
    return out;
  }
}

