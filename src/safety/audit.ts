import { createHash } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { Logger } from '../log.js';
import { invalidInput } from '../result.js';
import { scrubValue } from '../secrets.js';
import type { Database } from '../store/schema.js';

/**
 * The audit log: every tool call that writes or sends, and every refusal by policy, with when, which
 * tool, which MCP client and session, the arguments (secrets scrubbed; message bodies redacted unless
 * CS_MCP_AUDIT_BODIES=full) and the outcome. Kept CS_MCP_AUDIT_RETENTION_DAYS days.
 */

export interface AuditEntry {
  tool: string;
  kind: string;
  client?: { name?: string; version?: string };
  session_id?: string;
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

  constructor(
    private readonly db: Kysely<Database>,
    private readonly cfg: { auditRetentionDays: number; auditBodies: 'redact' | 'full' },
    private readonly log: Logger,
  ) {}

  /** Records an entry. Never fails the call it describes: a write failure is logged. */
  record(entry: AuditEntry): Promise<void> {
    const p = this.write(entry)
      .catch((err: unknown) => this.log.error({ err, tool: entry.tool }, 'writing the audit log failed'))
      .finally(() => this.pending.delete(p));
    this.pending.add(p);
    return p;
  }

  /** Waits for entries still being written (before the store closes). */
  async flush(): Promise<void> {
    await Promise.allSettled([...this.pending]);
  }

  private async write(e: AuditEntry): Promise<void> {
    let args = JSON.stringify(scrubValue(this.cfg.auditBodies === 'full' ? e.arguments : redactBodies(e.arguments)));
    if (args.length > MAX_ARGUMENT_CHARS) args = JSON.stringify({ truncated: true, chars: args.length, head: args.slice(0, MAX_ARGUMENT_CHARS) });
    await this.db
      .insertInto('audit_log')
      .values({
        at: new Date().toISOString(),
        tool: e.tool,
        kind: e.kind,
        client_name: e.client?.name ?? null,
        client_version: e.client?.version ?? null,
        session_id: e.session_id ?? null,
        arguments: args,
        outcome: e.outcome,
        message: e.message ? scrubValue(e.message).slice(0, 2000) : null,
        policy: e.policy ?? null,
        details: JSON.stringify(scrubValue(e.details ?? {})).slice(0, MAX_ARGUMENT_CHARS),
        duration_ms: Math.round(e.duration_ms),
      })
      .execute();
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
