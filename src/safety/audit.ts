import { createHash } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { Logger } from '../log.js';
import { invalidInput, ToolError } from '../result.js';
import { scrubValue } from '../secrets.js';
import type { Database } from '../store/schema.js';
import { BackgroundWrites, writeWithRetry } from './durable-write.js';

/**
 * The audit log: every tool call that writes or sends, and every refusal by policy, with when, which
 * tool, which MCP client and session, the arguments (secrets scrubbed; message bodies redacted unless
 * CS_MCP_AUDIT_BODIES=full) and the outcome. Kept CS_MCP_AUDIT_RETENTION_DAYS days.
 *
 * A send is audited before it goes out (its intent: an entry with outcome `in_progress`) and after (the
 * entry updated with its outcome). If the intent cannot be written the send does not happen: nothing
 * reaches a customer unaudited. Every other write (an outcome, an entry of a write tool or a refusal)
 * is retried briefly, then kept in memory and retried in the background until stored; how many wait is
 * in integrations_status (`pending_writes.audit`).
 */

export interface AuditEntry {
  tool: string;
  kind: string;
  client?: { name?: string; version?: string };
  session_id?: string;
  /** The signed-in person (sign-in only). */
  actor?: string;
  arguments: unknown;
  /** success, or the error code. */
  outcome: string;
  message?: string;
  policy?: string;
  details?: Record<string, unknown>;
  duration_ms: number;
}

export interface AuditRecord {
  audit_id: number;
  at: string;
  tool: string;
  kind: string;
  client_name: string | null;
  client_version: string | null;
  session_id: string | null;
  actor: string | null;
  arguments: unknown;
  outcome: string;
  message: string | null;
  policy: string | null;
  details: Record<string, unknown>;
  duration_ms: number;
}

export interface AuditFilter {
  tool?: string;
  outcome?: 'success' | 'error' | string;
  policy?: string;
  session_id?: string;
  since?: string;
  until?: string;
}

/** Argument names whose value is message content: redacted to a length and a hash by default. */
const BODY_FIELDS = new Set(['body', 'body_text', 'body_html', 'text', 'html', 'substitutions', 'dynamic_template_data', 'properties', 'metadata', 'custom_attributes']);
/** Stored arguments are cut to this many characters of JSON. */
const MAX_ARGUMENT_CHARS = 16_000;

export class AuditLog {
  private pending = new Set<Promise<void>>();
  /** Entries (and outcomes) waiting for the database. */
  readonly waiting: BackgroundWrites;
  private seq = 0;

  constructor(
    private readonly db: Kysely<Database>,
    private readonly cfg: { auditRetentionDays: number; auditBodies: 'redact' | 'full' },
    private readonly log: Logger,
  ) {
    this.waiting = new BackgroundWrites('audit entry', log, { cap: 10_000 });
  }

  /** Records an entry. Never fails the call it describes: a write that fails is retried, then kept and retried in the background. */
  record(entry: AuditEntry): Promise<void> {
    const at = new Date().toISOString();
    return this.durably(entry.tool, () => this.insert(entry, at).then(() => undefined));
  }

  /**
   * Writes the intent of a send before it goes out: an entry with outcome `in_progress`, completed by
   * `outcome()`. Retried briefly; when it still cannot be written, throws a retryable error and the
   * send must not happen.
   */
  async intent(entry: Omit<AuditEntry, 'outcome' | 'duration_ms'>): Promise<number> {
    const at = new Date().toISOString();
    let id = 0;
    let failure: unknown;
    const ok = await writeWithRetry(
      async () => {
        id = await this.insert({ ...entry, outcome: 'in_progress', duration_ms: 0 }, at);
      },
      (err) => (failure = err),
    );
    if (!ok) {
      this.log.error({ err: failure, tool: entry.tool }, 'writing the audit intent of a send failed: the send was not made');
      throw new ToolError(
        'provider_unavailable',
        `Nothing was sent: this server could not write the audit entry that every send needs before it goes out (its database failed). ` +
          'Try again in a moment; if it persists, check the server logs and the database.',
        { retryable: true, retryAfterMs: 5_000, details: { policy: 'audit' } },
      );
    }
    return id;
  }

  /** Completes a send's intent with its outcome (never fails the call: retried, then in the background). */
  outcome(auditId: number, entry: AuditEntry): Promise<void> {
    return this.durably(entry.tool, async () => {
      const row = this.row(entry, '');
      await this.db
        .updateTable('audit_log')
        .set({ outcome: row.outcome, message: row.message, policy: row.policy, details: row.details, duration_ms: row.duration_ms })
        .where('audit_id', '=', auditId)
        .execute();
    });
  }

  private durably(tool: string, write: () => Promise<void>): Promise<void> {
    let failure: unknown;
    const p = writeWithRetry(write, (err) => {
      failure = err;
      this.log.error({ err, tool }, 'writing the audit log failed: kept, and written once the database answers');
    })
      .then((stored) => {
        if (!stored) this.waiting.add(`a${++this.seq}`, { write }, failure);
      })
      .finally(() => this.pending.delete(p));
    this.pending.add(p);
    return p;
  }

  /** Waits for entries still being written, and tries once more those waiting (before the store closes). */
  async flush(): Promise<void> {
    await Promise.allSettled([...this.pending]);
    this.waiting.stop();
    if (this.waiting.size) await this.waiting.drain();
    this.waiting.stop();
    if (this.waiting.size) this.log.error({ entries: this.waiting.size }, 'audit entries could not be written before shutdown');
  }

  private row(e: AuditEntry, at: string) {
    let args = JSON.stringify(scrubValue(this.cfg.auditBodies === 'full' ? e.arguments : redactBodies(e.arguments)));
    if (args.length > MAX_ARGUMENT_CHARS) args = JSON.stringify({ truncated: true, chars: args.length, head: args.slice(0, MAX_ARGUMENT_CHARS) });
    return {
      at,
      tool: e.tool,
      kind: e.kind,
      client_name: e.client?.name ?? null,
      client_version: e.client?.version ?? null,
      session_id: e.session_id ?? null,
      actor: e.actor ?? null,
      arguments: args,
      outcome: e.outcome,
      message: e.message ? scrubValue(e.message).slice(0, 2000) : null,
      policy: e.policy ?? null,
      details: JSON.stringify(scrubValue(e.details ?? {})).slice(0, MAX_ARGUMENT_CHARS),
      duration_ms: Math.round(e.duration_ms),
    };
  }

  private async insert(e: AuditEntry, at: string): Promise<number> {
    const r = await this.db.insertInto('audit_log').values(this.row(e, at)).returning('audit_id').executeTakeFirstOrThrow();
    return Number(r.audit_id);
  }

  async list(f: AuditFilter, limit: number, cursor?: string): Promise<{ entries: AuditRecord[]; next_cursor?: string }> {
    let q = this.db.selectFrom('audit_log').selectAll();
    if (f.tool) q = q.where('tool', '=', f.tool);
    if (f.outcome === 'error') q = q.where('outcome', '!=', 'success');
    else if (f.outcome) q = q.where('outcome', '=', f.outcome);
    if (f.policy) q = q.where('policy', '=', f.policy);
    if (f.session_id) q = q.where('session_id', '=', f.session_id);
    if (f.since) q = q.where('at', '>=', f.since);
    if (f.until) q = q.where('at', '<=', f.until);
    if (cursor !== undefined) {
      if (!/^\d{1,15}$/.test(cursor)) throw invalidInput('cursor is not one this server returned; call get_audit_log again without it.', { field: 'cursor' });
      q = q.where('audit_id', '<', Number(cursor));
    }
    const rows = await q.orderBy('audit_id', 'desc').limit(limit + 1).execute();
    const entries = rows.slice(0, limit).map((r) => ({
      ...r,
      audit_id: Number(r.audit_id),
      duration_ms: Number(r.duration_ms),
      arguments: JSON.parse(r.arguments) as unknown,
      details: JSON.parse(r.details) as Record<string, unknown>,
    }));
    const last = entries[entries.length - 1];
    return { entries, next_cursor: rows.length > limit && last ? String(last.audit_id) : undefined };
  }

  /** Deletes up to `limit` entries older than the retention (oldest first); returns how many. */
  async prune(now = Date.now(), limit = 10_000): Promise<number> {
    const before = new Date(now - this.cfg.auditRetentionDays * 86_400_000).toISOString();
    const ids = this.db.selectFrom('audit_log').select('audit_id').where('at', '<', before).orderBy('at').limit(limit);
    const r = await this.db.deleteFrom('audit_log').where('audit_id', 'in', ids).executeTakeFirst();
    return Number(r.numDeletedRows);
  }
}

/** Message content becomes `[redacted: N characters, sha256 …]`: the audit shows that and what was sent, not the text. */
export function redactBodies(value: unknown, depth = 0): unknown {
  if (depth > 8 || value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map((v) => redactBodies(v, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    if (BODY_FIELDS.has(k) && v !== undefined && v !== null) {
      const text = typeof v === 'string' ? v : JSON.stringify(v);
      out[k] = `[redacted: ${text.length} characters, sha256 ${createHash('sha256').update(text).digest('hex').slice(0, 16)}]`;
    } else out[k] = redactBodies(v, depth + 1);
  }
  return out;
}
