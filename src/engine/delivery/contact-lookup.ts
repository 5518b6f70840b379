import { normalizeAddress } from '../../store/suppressions.js';

/**
 * Intercom contact ids for a campaign's recipients, found a page at a time.
 *
 * A first campaign to an audience knows emails, not Intercom ids, and Intercom's messages API needs the
 * id. One search per message halved the rate a campaign could reach (a search and a message per
 * recipient). Here the dispatcher hands over every claimed row at once (prefetch), and the emails are
 * looked up with Intercom's `email IN [...]` search, 50 addresses a search; single lookups made in the
 * same turn are gathered into one search too. An email is searched once however many channels (in-app
 * and email rows) a campaign sends it on: the answer is kept for a while (bounded in count and time).
 */

export interface ContactRef {
  id: string;
  role: 'user' | 'lead';
}

/** Per email (normalised): the contact, or the error a single lookup would have given (not found, ambiguous). */
export type ResolveEmails = (emails: string[]) => Promise<Map<string, ContactRef | Error>>;

interface Entry {
  at: number;
  ttlMs: number;
  value: Promise<ContactRef>;
}

export interface ContactLookupOptions {
  /** How long a found contact is reused. */
  ttlMs?: number;
  /** How long "not found" or "ambiguous" is kept (shorter: a contact just created becomes searchable). */
  negativeTtlMs?: number;
  /** Most emails remembered; the oldest go first. */
  maxEntries?: number;
  /** Emails per search (Intercom's IN search answers a page of them at once). */
  perSearch?: number;
  now?: () => number;
}

export class IntercomContactLookup {
  private readonly entries = new Map<string, Entry>();
  private pending = new Set<string>();
  private flushScheduled = false;
  private readonly ttlMs: number;
  private readonly negativeTtlMs: number;
  private readonly maxEntries: number;
  private readonly perSearch: number;
  private readonly now: () => number;

  constructor(
    private readonly resolve: ResolveEmails,
    opts: ContactLookupOptions = {},
  ) {
    this.ttlMs = opts.ttlMs ?? 10 * 60_000;
    this.negativeTtlMs = opts.negativeTtlMs ?? 30_000;
    this.maxEntries = opts.maxEntries ?? 20_000;
    this.perSearch = opts.perSearch ?? 50;
    this.now = opts.now ?? Date.now;
  }

  /** Starts the searches for these emails now, except those already known or being looked up. */
  prefetch(emails: string[]): void {
    for (const key of emails.map(normalizeAddress)) if (!this.fresh(key)) this.pending.add(key);
    this.flush();
  }

  /** The contact for one email: from a search made or under way, else from the next one (this turn's lookups share it). */
  lookup(email: string): Promise<ContactRef> {
    const key = normalizeAddress(email);
    const known = this.fresh(key);
    if (known) return known.value;
    this.pending.add(key);
    const entry = this.placeholder(key);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => {
        this.flushScheduled = false;
        this.flush();
      });
    }
    return entry.value;
  }

  /** How many emails are remembered (bounded by maxEntries). */
  get size(): number {
    return this.entries.size;
  }

  private fresh(key: string): Entry | undefined {
    const e = this.entries.get(key);
    if (!e) return undefined;
    if (this.now() - e.at > e.ttlMs) {
      this.entries.delete(key);
      return undefined;
    }
    return e;
  }

  /** An entry whose promise the next search settles. */
  private placeholder(key: string): Entry & { settle?: (v: ContactRef | Error) => void } {
    let settle!: (v: ContactRef | Error) => void;
    const value = new Promise<ContactRef>((resolve, reject) => {
      settle = (v) => (v instanceof Error ? reject(v) : resolve(v));
    });
    value.catch(() => undefined); // a prefetched email nobody ends up waiting for must not be an unhandled rejection
    const entry = { at: this.now(), ttlMs: this.ttlMs, value, settle };
    this.remember(key, entry);
    return entry;
  }

  private flush(): void {
    if (!this.pending.size) return;
    const all = [...this.pending];
    this.pending = new Set();
    // One search per page of addresses, each settling its own rows: the first messages need not wait
    // for every search of a large claim.
    for (let i = 0; i < all.length; i += this.perSearch) this.search(all.slice(i, i + this.perSearch));
  }

  private search(emails: string[]): void {
    const waiting = new Map(emails.map((e) => [e, (this.entries.get(e) as ReturnType<IntercomContactLookup['placeholder']> | undefined) ?? this.placeholder(e)]));
    this.resolve(emails).then(
      (found) => {
        for (const [email, entry] of waiting) {
          const result = found.get(email) ?? new Error(`Intercom's search gave no answer for ${email}`);
          if (result instanceof Error) entry.ttlMs = this.negativeTtlMs;
          entry.settle?.(result);
        }
      },
      (err: unknown) => {
        // The search itself failed (rate limit, outage): nothing is remembered, the next attempt searches again.
        for (const [email, entry] of waiting) {
          if (this.entries.get(email) === entry) this.entries.delete(email);
          entry.settle?.(err instanceof Error ? err : new Error(String(err)));
        }
      },
    );
  }

  private remember(key: string, entry: Entry): void {
    this.entries.delete(key);
    this.entries.set(key, entry);
    while (this.entries.size > this.maxEntries) this.entries.delete(this.entries.keys().next().value!);
  }
}
