import { sql, type Kysely } from 'kysely';
import { consentBlock, describeBlock, suppressionBlock } from '../../store/consent.js';
import { activeSuppressions, blockingSuppression, normalizeAddress, type SuppressionRow } from '../../store/suppressions.js';
import type { ContactsTable, Database } from '../../store/schema.js';
import type { DailySendLimit } from '../../safety/daily-limit.js';
import { isEmailChannel, type Channel, type SourceKind } from './message.js';
import { parsePolicy, type OutboxRepository, type OutboxRow } from './outbox.js';
import { underSavepoint } from '../../store/savepoint.js';
import { prepared } from '../../store/prepared.js';
import { nextWindowOpening } from './send-window.js';
import type { RidingSettlements } from './settlement.js';

/**
 * What is checked at the moment a message is sent, whoever produced it: consent (the contact may have
 * unsubscribed since the message was queued), the send window, the per-contact frequency cap, and the
 * daily send limit. `admit` re-checks inside the transaction that marks the row `sending`, so an
 * unsubscribe committed before that transaction is always honoured, and two instances can never both
 * take the last place under a cap or limit.
 */

export interface FrequencyCap {
  perDay: number;
  perWeek: number;
  /** Which producers' messages count (automations always; campaigns when configured). */
  kinds: SourceKind[];
}

export type Admission =
  | { kind: 'send'; day: string }
  /** Never to be sent (consent, contact removed, over the cap with cap_action skip): settled as `skipped`. */
  | { kind: 'skip'; code: string; message: string }
  /** Not now: back to the queue until `until`; costs no attempt. */
  | { kind: 'defer'; until: number; code: string; message: string }
  /** Cancelled or taken by someone else meanwhile. */
  | { kind: 'withdrawn' };

const DAY = 86_400_000;

/** The roster rows of a group's contacts (run once per admitted group). */
const contactsById = prepared([] as const, (db, p) => db.selectFrom('contacts').selectAll().where('contact_id', 'in', p.ids), ['ids'] as const);

/** The rows already admitted in one decision, per contact: they go out together and count against each other's cap. */
class Together {
  private readonly times = new Map<string, number[]>();
  constructor(private readonly kinds: SourceKind[]) {}
  of(row: OutboxRow): number[] {
    return this.times.get(row.contact_id) ?? [];
  }
  add(row: OutboxRow, at: number): void {
    if (!this.kinds.includes(row.source_kind as SourceKind)) return;
    const list = this.times.get(row.contact_id) ?? [];
    list.push(at);
    this.times.set(row.contact_id, list);
  }
}

/** Most rows decided in one transaction (a batched request's rows are never split). */
const MAX_GROUP_ROWS = 1000;

interface WaitingAdmission {
  rows: OutboxRow[];
  owner: string;
  leaseMs: number;
  resolve: (d: Admission[]) => void;
  reject: (err: unknown) => void;
}

export class SendAdmission {
  private readonly waiting: WaitingAdmission[] = [];
  private deciding = false;
  private scheduled = false;
  /** Settlements that ride in admission transactions (settlement.ts `board`): set by the dispatcher. */
  riders?: () => RidingSettlements | undefined;

  constructor(
    private readonly repo: OutboxRepository,
    private readonly dailyLimit: DailySendLimit,
    private readonly cap: FrequencyCap,
  ) {}

  /** A read-only pre-check, before any lookup a delivery costs (e.g. an Intercom contact search). */
  async check(row: OutboxRow, now = Date.now()): Promise<Admission> {
    return (await this.checkMany([row], now))[0]!;
  }

  /**
   * `check` for several rows, with one read of their contacts. `together`: the rows go out in one
   * request, so those of one contact count against each other's frequency cap; otherwise each row is
   * checked as if it were alone (rows that will leave one by one, at different times).
   */
  async checkMany(rows: OutboxRow[], now = Date.now(), together = true): Promise<Admission[]> {
    const contacts = await this.contactsOf(this.repo.db, rows);
    const suppressed = await activeSuppressions(this.repo.db, rows.map((r) => r.recipient_email));
    const group = new Together(this.cap.kinds);
    const out: Admission[] = [];
    for (const row of rows) {
      const d = (await this.rules(this.repo.db, row, now, contacts.get(row.contact_id) ?? null, suppressed, together ? group.of(row) : [])) ?? { kind: 'send', day: '' };
      if (d.kind === 'send' && together) group.add(row, now);
      out.push(d);
    }
    return out;
  }

  /** The authoritative check: in one transaction, decide and (if sending) take a daily place and mark the row `sending`. */
  async admit(row: OutboxRow, owner: string, leaseMs: number): Promise<Admission> {
    return (await this.admitMany([row], owner, leaseMs))[0]!;
  }

  /**
   * `admit` for rows that go out in one request (a batched send): one transaction decides every row,
   * takes as many daily places as are left for them, and marks the admitted rows `sending`.
   *
   * Group commit: requests that arrive in the same turn of the event loop (the pacer lets several leave
   * together), or while a decision is being written, are decided together in one transaction; under
   * load one commit serves many. A failed transaction fails every request in it, before any of them is
   * sent.
   */
  admitMany(rows: OutboxRow[], owner: string, leaseMs: number): Promise<Admission[]> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ rows, owner, leaseMs, resolve, reject });
      if (this.deciding || this.scheduled) return;
      // Decided once this turn's other arrivals are in: the requests a pacer released together each reach
      // here a few promise steps apart. An immediate runs in the same turn, so it costs no wake-up.
      this.scheduled = true;
      setImmediate(() => {
        this.scheduled = false;
        void this.decideWaiting();
      });
    });
  }

  private async decideWaiting(): Promise<void> {
    this.deciding = true;
    try {
      while (this.waiting.length) {
        // One group: the requests of one holder, in arrival order, up to MAX_GROUP_ROWS rows.
        const { owner, leaseMs } = this.waiting[0]!;
        const group: WaitingAdmission[] = [];
        let size = 0;
        for (let i = 0; i < this.waiting.length && size < MAX_GROUP_ROWS; ) {
          const w = this.waiting[i]!;
          if (w.owner === owner && w.leaseMs === leaseMs && (group.length === 0 || size + w.rows.length <= MAX_GROUP_ROWS)) {
            group.push(...this.waiting.splice(i, 1));
            size += w.rows.length;
          } else i += 1;
        }
        try {
          const decisions = await this.decide(group.flatMap((w) => w.rows), owner, leaseMs, Date.now());
          let at = 0;
          for (const w of group) {
            w.resolve(decisions.slice(at, at + w.rows.length));
            at += w.rows.length;
          }
        } catch (err) {
          for (const w of group) w.reject(err);
        }
      }
    } finally {
      this.deciding = false;
    }
  }

  /** Decides `rows` (of one or several requests) in one transaction. */
  private async decide(rows: OutboxRow[], owner: string, leaseMs: number, now: number): Promise<Admission[]> {
    const riding = this.riders?.();
    let wrote = false;
    let committed = false;
    try {
      // Under a savepoint of their own: if their part fails it is rolled back alone and the decisions still commit.
      const ride = riding && (async (trx: Kysely<Database>) => (wrote = (await underSavepoint(trx, 'riding_settlements', () => riding.write(trx))).ok));
      const decisions = await this.decideIn(rows, owner, leaseMs, now, ride);
      committed = true;
      return decisions;
    } finally {
      // Settled only if their part was written and the transaction committed.
      if (riding) {
        if (wrote && committed) riding.committed();
        else riding.missed();
      }
    }
  }

  private decideIn(rows: OutboxRow[], owner: string, leaseMs: number, now: number, alsoWrite?: (trx: Kysely<Database>) => Promise<unknown>): Promise<Admission[]> {
    return this.repo.db.transaction().execute(async (trx) => {
      const capped = [...new Set(rows.filter((r) => parsePolicy(r)?.frequency_cap).map((r) => r.contact_id))].sort();
      if (this.repo.dialect === 'postgres') {
        // Serializes the cap checks of a contact across instances (SQLite transactions already are
        // serial); in a fixed order, so two batches never wait on each other.
        for (const contactId of capped) await sql`select pg_advisory_xact_lock(hashtext(${contactId}))`.execute(trx);
      }
      const contacts = await this.contactsOf(trx, rows);
      const suppressed = await activeSuppressions(trx, rows.map((r) => r.recipient_email));
      // Rows of one contact admitted together count against each other's frequency cap.
      const together = new Together(this.cap.kinds);
      const decisions: Admission[] = [];
      for (const row of rows) {
        const d = (await this.rules(trx, row, now, contacts.get(row.contact_id) ?? null, suppressed, together.of(row))) ?? { kind: 'send', day: '' };
        if (d.kind === 'send') together.add(row, now);
        decisions.push(d);
      }
      const wanted = decisions.filter((d) => d.kind === 'send').length;
      const place = await this.dailyLimit.reserveUpTo(trx, wanted, now);
      let granted = place.granted;
      for (let i = 0; i < rows.length; i++) {
        if (decisions[i]!.kind !== 'send') continue;
        if (granted === 0) {
          decisions[i] = {
            kind: 'defer',
            until: place.resetsAt,
            code: 'daily_limit',
            message: `The daily send limit (CS_MCP_DAILY_SEND_LIMIT=${this.dailyLimit.limit}) is reached; this message waits until ${new Date(place.resetsAt).toISOString()}.`,
          };
          continue;
        }
        granted -= 1;
        decisions[i] = { kind: 'send', day: place.day };
      }
      const admitted = rows.filter((_, i) => decisions[i]!.kind === 'send');
      const marked = new Set(await this.repo.markSendingMany(trx, admitted, owner, leaseMs, now));
      let withdrawn = 0;
      for (let i = 0; i < rows.length; i++) {
        if (decisions[i]!.kind === 'send' && !marked.has(rows[i]!.outbox_id)) {
          decisions[i] = { kind: 'withdrawn' };
          withdrawn += 1;
        }
      }
      await this.dailyLimit.release(trx, withdrawn, place.day);
      await alsoWrite?.(trx);
      return decisions;
    });
  }

  private async contactsOf(db: Kysely<Database>, rows: OutboxRow[]): Promise<Map<string, ContactsTable>> {
    const ids = [...new Set(rows.map((r) => r.contact_id))];
    // One statement, as before: a group holds at most MAX_GROUP_ROWS contacts, well under either database's parameter limit.
    const found = (await contactsById(db, { ids })).rows as ContactsTable[];
    return new Map(found.map((c) => [c.contact_id, c]));
  }

  /** Returns the daily places of messages that provably did not go out. */
  async giveBack(day: string, n = 1): Promise<void> {
    await this.dailyLimit.release(this.repo.db, n, day);
  }

  /**
   * `suppressed`: the suppression list's entries for these rows' addresses. `admittedWith`: when the rows
   * decided before this one in the same request (same contact, counted kinds) go out.
   */
  private async rules(
    db: Kysely<Database>,
    row: OutboxRow,
    now: number,
    known: ContactsTable | null | undefined,
    suppressed: Map<string, SuppressionRow[]>,
    admittedWith: number[] = [],
  ): Promise<Admission | undefined> {
    const contact = known === undefined ? await db.selectFrom('contacts').selectAll().where('contact_id', '=', row.contact_id).executeTakeFirst() : known;
    if (!contact) {
      return { kind: 'skip', code: 'contact_removed', message: `${row.recipient_email} was removed from the roster after this message was queued; it was not sent.` };
    }
    // The suppression list is the authority: it holds for the address whatever roster row carries it.
    const listed = blockingSuppression(suppressed.get(normalizeAddress(row.recipient_email)), isEmailChannel(row.channel as Channel));
    const block = consentBlock(contact, isEmailChannel(row.channel as Channel)) ?? (listed && suppressionBlock(listed));
    if (block) {
      return { kind: 'skip', code: block.reason, message: `Not sent: ${describeBlock(row.recipient_email, block)}.` };
    }
    const policy = parsePolicy(row);
    if (policy?.send_window) {
      const opens = nextWindowOpening(policy.send_window, now, contact.timezone ?? policy.send_window.timezone);
      if (opens > now) {
        return { kind: 'defer', until: opens, code: 'send_window', message: `Outside the send window; waits until ${new Date(opens).toISOString()}.` };
      }
    }
    if (policy?.frequency_cap) {
      const times = [...(await this.repo.recentSendTimes(db, row.contact_id, this.cap.kinds, now - 7 * DAY)), ...admittedWith].sort((a, b) => a - b);
      const lastDay = times.filter((t) => t > now - DAY);
      let until = 0;
      if (lastDay.length >= this.cap.perDay) until = Math.max(until, lastDay[lastDay.length - this.cap.perDay]! + DAY);
      if (times.length >= this.cap.perWeek) until = Math.max(until, times[times.length - this.cap.perWeek]! + 7 * DAY);
      if (until > now) {
        const cap = `${this.cap.perDay} a day, ${this.cap.perWeek} a week`;
        return policy.cap_action === 'skip'
          ? { kind: 'skip', code: 'frequency_cap', message: `Skipped: ${row.recipient_email} already got the most automated messages allowed (${cap}).` }
          : { kind: 'defer', until, code: 'frequency_cap', message: `Waits for the frequency cap (${cap}) until ${new Date(until).toISOString()}.` };
      }
    }
    return undefined;
  }
}
