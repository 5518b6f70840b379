import { randomBytes } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { Database } from '../store/schema.js';

/**
 * Confirmation tokens of the two-phase tools (campaigns, workflow activation / resume / run): a
 * preview issues a token bound to hashes of what it showed, by part (content, audience, schedule…);
 * the confirming call presents it, the tool recomputes, and only an unexpired, unused token whose
 * parts all match confirms. Consuming it is a conditional update inside the confirming transaction,
 * so two concurrent confirmations of one token create one thing.
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
