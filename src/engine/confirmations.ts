import { randomBytes } from 'node:crypto';
import type { Kysely } from 'kysely';
import { invalidInput, ToolError } from '../result.js';
import { currentActor } from '../safety/actor.js';
import type { Database } from '../store/schema.js';

/**
 * Confirmation tokens of the two-phase tools (campaigns, workflow activation / resume / run): a
 * preview issues a token bound to hashes of what it showed, by part (content, audience, schedule…);
 * the confirming call presents it, the tool recomputes, and only an unexpired, unused token whose
 * parts all match confirms. Consuming it is a conditional update inside the confirming transaction,
 * so two concurrent confirmations of one token create one thing.
 *
 * With sign-in a token is also bound to the person who previewed (the token's subject): another person
 * presenting it is refused and given a preview of their own, so nobody's approval stands in for another's.
 */

export type Fingerprint = Record<string, string>;
export type TokenKind = 'campaign' | 'workflow_activate' | 'workflow_resume' | 'workflow_run';

export interface TokenRecord {
  token: string;
  kind: string;
  label: string;
  parts: Fingerprint;
  expires_at: string;
  used_at: string | null;
  result_id: string | null;
}

export type TokenLookup = { state: 'unknown' } | { state: 'open' | 'expired' | 'used'; record: TokenRecord };

/** Unused tokens are kept a day past expiry (to explain "expired"), then dropped. */
const KEEP_EXPIRED_MS = 86_400_000;

export class ConfirmationTokens {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly ttlS: number,
  ) {}

  async issue(kind: TokenKind, label: string, parts: Fingerprint, now = Date.now()): Promise<{ token: string; expires_at: string }> {
    await this.db
      .deleteFrom('confirmation_tokens')
      .where('used_at', 'is', null)
      .where('expires_at', '<', new Date(now - KEEP_EXPIRED_MS).toISOString())
      .execute();
    const token = `cst_${randomBytes(24).toString('base64url')}`;
    const expires_at = new Date(now + this.ttlS * 1000).toISOString();
    await this.db
      .insertInto('confirmation_tokens')
      .values({ token, kind, fingerprint: JSON.stringify(parts), label, expires_at, used_at: null, result_id: null, created_at: new Date(now).toISOString() })
      .execute();
    return { token, expires_at };
  }

  /** A token of another kind (a campaign token given to a workflow tool) is unknown to the caller. */
  async lookup(token: string, kind: TokenKind, now = Date.now()): Promise<TokenLookup> {
    const row = await this.db.selectFrom('confirmation_tokens').selectAll().where('token', '=', token).where('kind', '=', kind).executeTakeFirst();
    if (!row) return { state: 'unknown' };
    const record: TokenRecord = { token: row.token, kind: row.kind, label: row.label, parts: parseParts(row.fingerprint), expires_at: row.expires_at, used_at: row.used_at, result_id: row.result_id };
    if (row.used_at && row.result_id) return { state: 'used', record };
    if (Date.parse(row.expires_at) <= now) return { state: 'expired', record };
    return { state: 'open', record };
  }

  /** The names of the parts that differ from what the preview showed (empty: it is the same). */
  changed(record: TokenRecord, parts: Fingerprint): string[] {
    const names = new Set([...Object.keys(record.parts), ...Object.keys(parts)]);
    return [...names].filter((n) => record.parts[n] !== parts[n]);
  }

  /** Marks the token used for `resultId`; false if another confirmation already did (run it in the confirming transaction). */
  async consume(db: Kysely<Database>, token: string, resultId: string, now = Date.now()): Promise<boolean> {
    const r = await db
      .updateTable('confirmation_tokens')
      .set({ used_at: new Date(now).toISOString(), result_id: resultId })
      .where('token', '=', token)
      .where('used_at', 'is', null)
      .executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  }
}

function parseParts(text: string): Fingerprint {
  try {
    const v = JSON.parse(text) as unknown;
    if (v && typeof v === 'object' && !Array.isArray(v)) return v as Fingerprint;
  } catch {
    // a token from before tokens were generalised: nothing matches, so a fresh preview is issued
  }
  return { legacy: text };
}

/** One two-phase tool call, as the shared flow needs it. `C` is what the tool computes each time. */
export interface TwoPhaseSpec<C> {
  kind: TokenKind;
  /** The tool to call again with the token (for messages). */
  tool: string;
  /** "Nothing was sent." / "Nothing was started.": what a refusal guarantees. */
  nothingDone: string;
  /** Computes what would happen now. `confirming`: an open token was presented (a producer may write staged work). */
  compute(confirming: boolean): Promise<C>;
  label(c: C): string;
  parts(c: C): Fingerprint;
  /** The preview's body (the token fields and next step are added here). */
  preview(c: C): Record<string, unknown>;
  /** Why there is nothing to confirm (no token is issued then), or undefined. */
  nothingToConfirm?(c: C): string | undefined;
  /** Asks for approval and acts once, consuming the token inside its commit; undefined if another call consumed it first. */
  confirm(c: C, consume: (db: Kysely<Database>, resultId: string) => Promise<boolean>): Promise<{ id: string; result: Record<string, unknown> } | undefined>;
  /** Undoes what compute(true) wrote, when the confirmation does not go ahead. */
  abandon?(c: C): Promise<void>;
  /** The answer to the same confirmation repeated: what the first one created. */
  replay(id: string, c: C): Promise<Record<string, unknown>>;
}

/**
 * The flow every two-phase tool shares: without a token, a preview and a token bound to it; with an
 * open token whose parts all match, approval and one commit; anything else — unknown, expired,
 * changed — a refusal carrying a fresh preview and token; a used token with the same parts, a report
 * of what it created.
 */
export async function twoPhase<C>(tokens: ConfirmationTokens, spec: TwoPhaseSpec<C>, token: string | undefined): Promise<Record<string, unknown>> {
  const issue = async (c: C): Promise<Record<string, unknown>> => {
    const body = { phase: 'preview', ...spec.preview(c) };
    const none = spec.nothingToConfirm?.(c);
    if (none) return { ...body, next_step: none };
    const t = await tokens.issue(spec.kind, spec.label(c), partsOf(c));
    return {
      ...body,
      confirmation_token: t.token,
      token_expires_at: t.expires_at,
      next_step:
        `${spec.nothingDone} Show this preview to the user. To go ahead, call ${spec.tool} again with exactly the same parameters ` +
        `plus confirmation_token "${t.token}" before ${t.expires_at}.`,
    };
  };
  // Every token is bound to the tool that issued it and (with sign-in) to the person it was issued to, besides what the tool binds.
  const actor = currentActor();
  const partsOf = (c: C): Fingerprint => ({ tool: spec.tool, ...(actor ? { actor: actor.subject } : {}), ...spec.parts(c) });
  const refuse = async (c: C, why: string) =>
    invalidInput(`${why} ${spec.nothingDone} Review the fresh preview in error.details.fresh_preview and confirm with its token.`, {
      field: 'confirmation_token',
      fresh_preview: await issue(c),
    });
  if (!token) return issue(await spec.compute(false));

  const found = await tokens.lookup(token, spec.kind);
  if (found.state !== 'open') {
    const c = await spec.compute(false);
    if (found.state === 'unknown') throw await refuse(c, `That confirmation_token is not one this server issued for ${spec.tool}.`);
    if (found.state === 'expired') throw await refuse(c, `That confirmation_token expired at ${found.record.expires_at}.`);
    if (tokens.changed(found.record, partsOf(c)).length) throw await refuse(c, `That confirmation_token was already used (${found.record.result_id}).`);
    return spec.replay(found.record.result_id!, c); // the same confirmation again (a retried call): nothing new
  }
  if (found.record.parts.actor !== actor?.subject) {
    const c = await spec.compute(false);
    throw new ToolError(
      'forbidden',
      `That confirmation_token was issued to another person's preview; it confirms nothing for you. ${spec.nothingDone} ` +
        'Review your own preview in error.details.fresh_preview and confirm with its token.',
      { details: { policy: 'actor', field: 'confirmation_token', fresh_preview: await issue(c) } },
    );
  }
  const c = await spec.compute(true);
  let done: { id: string; result: Record<string, unknown> } | undefined;
  try {
    const changed = tokens.changed(found.record, partsOf(c));
    if (changed.length) throw await refuse(c, `It changed since the preview (${changed.join(', ')}).`);
    const none = spec.nothingToConfirm?.(c);
    if (none) throw await refuse(c, none);
    done = await spec.confirm(c, (db, id) => tokens.consume(db, token, id));
  } finally {
    if (!done) await spec.abandon?.(c);
  }
  // Another confirmation of the same token won the race: report what it created.
  return done ? done.result : twoPhase(tokens, spec, token);
}
