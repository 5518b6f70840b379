/**
 * Proactive pacing from the budget a provider reports (`X-RateLimit-Limit/Remaining/Reset`).
 *
 * Providers count requests in fixed windows, but they do not say where a window begins, and they
 * round the reset time up to whole seconds. Some windows start on the clock (every whole second),
 * others at the first request after the last window ended. A pacer that bursts its budget and then
 * waits for the reported reset idles for up to a second per window: half the rate at 1-second windows.
 *
 * So the pacer learns the windows instead of trusting the rounded reset:
 * - a window is known by its reset value; when the value moves on, a new window has begun, no later
 *   than the moment the answer that shows it arrived (its start, an upper bound);
 * - the window length is the smallest step between successive reset values: never shorter than the
 *   real length, and equal to it after a window or two of steady sending;
 * - a window ends at min(start + length, reported reset): never earlier than it really does.
 * Within a window the remaining budget is spread evenly up to that end (a process alone ends it one
 * turnaround sooner, so its last requests count in the window that paid for them: `spreadEnd`), rather
 * than sent in a burst, which suits either kind of window and keeps room for latency. While a window's
 * end is in doubt (the first, before its length is known), a process alone spreads all but a few units
 * up to the earliest end and those few over the doubt, so the next window begins when it may
 * (`doubtfulEnd`). Requests whose slots fall within 100 ms of each other leave together
 * (GROUP_SLACK_MS; 25 ms when processes share the budget): one wake-up serves them. When the end has
 * passed, the next window is spent at the learned rate until its first answer places it.
 *
 * Several processes using one account share the budget: `shareWith()` says how many are sending now
 * (they meet in the database: budget-peers.ts); each spends its share of what the provider reports
 * as left, so together they spend it all, and none assumes the whole remainder is its own.
 * A wait longer than RETRY_MAX_DELAY_MS is not imposed: the request fails at once with rate_limited
 * and retry_after_ms. Providers that report nothing are not paced; a 429 stops everything until its Retry-After (or
 * reset) has passed, then one request goes first to find out where the budget stands.
 */

import { PROVIDER_LABEL, ToolError, type ProviderName } from '../result.js';
import { header, resetToEpochMs, retryAfterMs, type HeaderSource } from './http-errors.js';

export interface RateBudgetSnapshot {
  limit?: number;
  remaining?: number;
  reset_at?: string;
  /** The window length learned from the provider's answers, when known. */
  window_ms?: number;
  observed_at?: string;
  /** Processes sharing this budget now (this one included). */
  sharing: number;
  waiting: number;
  in_flight: number;
  paced_waits: number;
}

export interface RateBudgetOptions {
  /** Requests left in each window for other clients of the same app (a dashboard, another integration). */
  reserve?: number;
  /** Longest wait a request accepts (RETRY_MAX_DELAY_MS); beyond it acquire() fails with rate_limited. */
  maxWaitMs?: number;
  /** Names the provider in that error. */
  provider?: ProviderName;
}

/** The processes sharing one provider account's budget (budget-peers.ts). */
export interface BudgetSharing {
  /** How many send with it now, this one included (≥ 1). */
  count(): number;
  /** Told on every request, so this process counts as one of them while it sends. */
  touch(): void;
}

/** A window of the provider's, as far as its answers have placed it. */
interface Window {
  /** The reported reset (epoch ms); undefined for a window no answer has shown yet. */
  resetMs?: number;
  /** It began after this moment (-Infinity: unknown) and no later than `startHiMs`. */
  startLoMs: number;
  startHiMs?: number;
  /** When we may treat it as over: never before its real end. Undefined: not placed yet. */
  endMs?: number;
  /**
   * For a window whose length is not certain yet: the earliest it may really end, when that is sooner
   * than `endMs` (the rounded reset leaves up to a second of doubt), and how many units are kept to
   * probe that doubt (`probes`, see `doubtfulEnd`).
   */
  earliestEndMs?: number;
  probes?: number;
  /** The latest send time of a request whose answer showed this window. */
  lastSentMs: number;
  /** What is left in it, counting our own requests as they leave. */
  remaining: number;
}

interface Waiter {
  resolve: (takenAt: number) => void;
  reject: (err: unknown) => void;
  signal?: AbortSignal;
  onAbort?: () => void;
}

/** Two reset values this close are the same window (a provider may recompute it per answer). */
const SAME_RESET_MS = 500;
/** Until the window length is known, the reported reset is the end, plus this for clock skew. */
const FIRST_WINDOW_MARGIN_MS = 50;
/**
 * Requests due within this long of the one leaving now leave with it, at most GROUP_MAX together: one
 * wake-up (and one commit of their outbox rows) serves several instead of one each. Each keeps its own
 * place in the even spread (the next is paced from the slot of the last in the group, not from now).
 * Only a place in the spread of a window with budget left may be taken early (`spreading`): a request
 * waiting for a spent window to end, or for a 429's pause, never joins, so none counts in a window
 * that has no room for it. The slack bounds how early a request leaves (at 100/s: ten together, a
 * wake-up every 100 ms); the cap bounds a group at high rates (at 1,000/s: sixteen within 16 ms).
 * Each wake-up costs far more than the request it serves on a virtual machine (bench:campaign's
 * yardstick), so groups are as large as the spread allows without leaving much early.
 */
const GROUP_SLACK_MS = 100;
/**
 * Processes sharing a budget see each other's requests only in later answers, and each keeps just one
 * request in hand per peer for that: a peer's group of ten could pass it. Shared, groups stay small.
 */
const SHARED_GROUP_SLACK_MS = 25;
const GROUP_MAX = 16;
/** Turnarounds (unit taken → answer) remembered for `spreadEnd`, and the most of a window it may take. */
const TURNAROUNDS_KEPT = 32;
const TAIL_SHARE_MAX = 0.1;

export class RateBudget {
  private limit?: number;
  /** The window length: learned, never shorter than the real one. */
  private windowMs?: number;
  private lengthLoMs = Number.NEGATIVE_INFINITY;
  private lengthHiMs = Number.POSITIVE_INFINITY;
  private window?: Window;
  /** The last window an answer placed: a window we rolled past is remembered here. */
  private lastPlaced?: Window;
  private observedAtMs?: number;
  private lastSendMs?: number;
  /** Nothing may be sent before this (a 429's Retry-After). */
  private blockedUntilMs = 0;
  /** True until an answer tells where the budget stands: one request at a time. */
  private probing = true;
  /** Send times of our requests still waiting for an answer. */
  private readonly inFlightSent: number[] = [];
  private pacedWaits = 0;
  /** How long our latest requests took from taking their unit to their answer (newest last). */
  private readonly turnarounds: number[] = [];
  /** The longest of them: a request sent later than this before a window's end may count in the next. */
  private tailMs = 0;
  /**
   * Set by waitNeeded: its wait is a place in the even spread of a window with budget left (not the end
   * of a spent window, a 429's pause or a probe). Only such a wait may be cut short by joining a group:
   * the request still counts in the window it leaves in, which has begun and has room for it.
   */
  private spreading = false;
  private readonly queue: Waiter[] = [];
  private timer?: NodeJS.Timeout;
  private timerAt = 0;
  private readonly reserve: number;
  private readonly maxWaitMs: number;
  private readonly provider?: ProviderName;
  private sharing?: BudgetSharing;

  constructor(opts: RateBudgetOptions = {}) {
    this.reserve = opts.reserve ?? 0;
    this.maxWaitMs = opts.maxWaitMs ?? 60_000;
    this.provider = opts.provider;
  }

  /** Shares this budget with the other processes that use the same account. */
  shareWith(sharing: BudgetSharing): void {
    this.sharing = sharing;
  }

  private peers(): number {
    return this.sharing ? Math.max(1, this.sharing.count()) : 1;
  }

  /**
   * Waits until a request may be sent within the budget, then takes one unit. First come, first
   * served. Resolves with the moment it was taken: hand it to observe() and release().
   */
  acquire(signal?: AbortSignal): Promise<number> {
    this.sharing?.touch();
    if (signal?.aborted) return Promise.reject(signal.reason ?? new Error('aborted'));
    const wait = this.waitNeeded();
    if (this.queue.length === 0 && wait <= 0) return Promise.resolve(this.take());
    if (Number.isFinite(wait) && wait > this.maxWaitMs) {
      // Every wait the server imposes honours the configured maximum: past it, say how long instead.
      const who = this.provider ? PROVIDER_LABEL[this.provider] : 'The provider';
      return Promise.reject(
        new ToolError('rate_limited', `${who}'s rate budget is spent for about ${Math.ceil(wait / 1000)} s, longer than a call may wait (RETRY_MAX_DELAY_MS). Try again after that.`, {
          provider: this.provider,
          retryAfterMs: wait,
          retryable: true,
        }),
      );
    }
    this.pacedWaits += 1;
    return new Promise<number>((resolve, reject) => {
      const w: Waiter = { resolve, reject, signal };
      if (signal) {
        w.onAbort = () => {
          const i = this.queue.indexOf(w);
          if (i >= 0) this.queue.splice(i, 1);
          reject(signal.reason ?? new Error('aborted'));
          this.pump();
        };
        signal.addEventListener('abort', w.onAbort, { once: true });
      }
      this.queue.push(w);
      this.pump();
    });
  }

  /** Call once for each acquire(), when its response (or failure) has arrived, with its send time. */
  release(sentAtMs?: number): void {
    const i = sentAtMs === undefined ? -1 : this.inFlightSent.indexOf(sentAtMs);
    if (i >= 0) this.inFlightSent.splice(i, 1);
    else this.inFlightSent.shift();
    if (sentAtMs !== undefined) this.noteTurnaround(Date.now() - sentAtMs);
    this.pump();
  }

  private noteTurnaround(ms: number): void {
    this.turnarounds.push(ms);
    if (this.turnarounds.length > TURNAROUNDS_KEPT) this.turnarounds.shift();
    this.tailMs = Math.max(...this.turnarounds);
  }

  /** Requests queued for budget now (cheaper than snapshot() on a hot path). */
  get waiting(): number {
    return this.queue.length;
  }

  private get inFlight(): number {
    return this.inFlightSent.length;
  }

  /** Reads the rate-limit headers (and a 429's Retry-After) of a response. */
  observe(headers: HeaderSource, status?: number, sentAtMs?: number): void {
    const get = (name: string) => header(headers, name);
    const now = Date.now();
    const limit = num(get('x-ratelimit-limit'));
    const remaining = num(get('x-ratelimit-remaining'));
    const reset = num(get('x-ratelimit-reset'));
    if (limit !== undefined) this.limit = limit;
    if (status === 429) {
      // Refused: the provider's explicit wait wins over a reset that may belong to another window.
      const retry = retryAfterMs(headers, now, false);
      const resetAt = reset === undefined ? undefined : resetToEpochMs(reset, now);
      this.exhaustFor(retry ?? (resetAt !== undefined && resetAt > now ? resetAt - now : 1000));
      // A refusal of the budget itself means what we learned about the windows is wrong (a bare 429,
      // SendGrid's occasional one, says nothing about them).
      if (remaining === 0 && this.windowMs !== undefined) this.forgetLength();
      return;
    }
    if (remaining === undefined || reset === undefined) {
      // Nothing to pace by (Mixpanel): the answer still ends a probe.
      if (this.probing) {
        this.probing = false;
        this.pump();
      }
      return;
    }
    this.observedAtMs = now;
    const resetMs = resetToEpochMs(reset, now);
    const sent = sentAtMs ?? now;
    // Our requests sent after this one are still in flight: the header does not know them yet (those
    // sent before it were counted before it). Peers have about as many in flight as we do.
    const later = sentAtMs === undefined ? this.inFlight - 1 : this.inFlightSent.filter((t) => t >= sent).length - 1;
    const adjusted = Math.max(0, remaining - Math.max(0, later) * this.peers());
    const w = this.window;
    const shown = w?.resetMs ?? this.lastPlaced?.resetMs;
    if (shown !== undefined && resetMs < shown - SAME_RESET_MS) return; // a late answer from a window already over
    if (w?.resetMs !== undefined && Math.abs(resetMs - w.resetMs) <= SAME_RESET_MS) {
      // After a refusal the answer to the probe is the news; otherwise the lowest count is the truth.
      w.remaining = this.probing ? adjusted : Math.min(w.remaining, adjusted);
      w.lastSentMs = Math.max(w.lastSentMs, sent);
    } else if (w?.resetMs === undefined && shown !== undefined && Math.abs(resetMs - shown) <= SAME_RESET_MS) {
      return; // the window we rolled past, answering for a request sent before its end
    } else {
      this.placeWindow(resetMs, adjusted, sent, now);
    }
    this.probing = false;
    this.pump();
  }

  /**
   * An answer shows a window we have not seen: it began after the last request the previous window
   * answered for was sent, and before this answer arrived. Those bounds, the previous window's own
   * start, and the reset (rounded up to whole seconds: the end lies within the second before it)
   * narrow the window's length; providers use whole seconds, so the length is the largest whole number
   * of seconds the bounds allow (never shorter than the real one).
   */
  private placeWindow(resetMs: number, remaining: number, sentMs: number, now: number): void {
    const prev = this.window?.resetMs !== undefined ? this.window : this.lastPlaced;
    const startLoMs = prev ? prev.lastSentMs : Number.NEGATIVE_INFINITY;
    const startHiMs = now;
    if (prev) {
      // The previous window ended between its last request and this answer.
      if (prev.startHiMs !== undefined) this.narrow(prev.lastSentMs - prev.startHiMs, now - prev.startLoMs);
      this.narrow(resetMs - 1000 - startHiMs, resetMs - startLoMs);
    }
    const learned = this.windowMs !== undefined && prev;
    const endMs = learned ? startHiMs + this.windowMs! : resetMs + FIRST_WINDOW_MARGIN_MS;
    this.window = { resetMs, startLoMs, startHiMs: prev ? startHiMs : undefined, endMs, lastSentMs: sentMs, remaining };
    Object.assign(this.window, this.doubtfulEnd(this.window, now, Boolean(learned)));
    this.lastPlaced = this.window;
  }

  /**
   * Where a window placed before its length is certain may really end. Its reset is rounded up to whole
   * seconds, so it ends in the second before it; a window whose length is not learned yet (or learned
   * only as "one second or two") may end a good deal sooner than `endMs`, which must allow for the
   * longest. Spread up to `endMs`, as before, its budget went out at half speed when the window really
   * ended a second sooner, and the rest was lost: about half of a 1,000-a-second window
   * (bench:campaign's anchored windows). Spread up to the earliest end instead, the process would
   * idle until `endMs` when the window really ended later. So all but a few units are spread up to the
   * earliest end, and those few (`probes`) over the doubt after it: a probe that arrives after the
   * real end begins the next window, whose answer places it. No more than the reported budget is
   * spent, and the window is never taken as over before `endMs`.
   * The earliest end: a second before the reset; for a first window our request began (all but one
   * unit left), a second after it was sent (windows are whole seconds, and an anchored one begins with
   * a request); for one whose learned length may still be a second too long, its earliest start plus
   * the shortest length the answers allow. As many probes as balance the two losses, the units left
   * unspent when the window ends at its earliest and the sending lost between two probes: about
   * √(pace × doubt).
   */
  private doubtfulEnd(w: Window, now: number, learned: boolean): Pick<Window, 'earliestEndMs' | 'probes'> {
    const endMs = w.endMs!;
    const remaining = w.remaining;
    if (this.peers() > 1 || this.limit === undefined || w.resetMs === undefined || endMs <= now) return {};
    let earliestEndMs = w.resetMs - 1000;
    if (!learned) {
      // Just placed, the window's last send is the request this answer is for.
      if (remaining >= this.limit - 1) earliestEndMs = Math.max(earliestEndMs, w.lastSentMs + 1000);
    } else {
      const shortest = Math.max(1000, (Math.floor(this.lengthLoMs / 1000) + 1) * 1000);
      if (!(shortest < this.windowMs!)) return {};
      earliestEndMs = Math.max(earliestEndMs, w.startLoMs + shortest);
    }
    // An earliest end already past says nothing the even spread to `endMs` does not allow for.
    if (earliestEndMs <= now || earliestEndMs >= endMs) return {};
    const probes = Math.min(remaining - 1, Math.round(Math.sqrt((remaining / (endMs - now)) * (endMs - earliestEndMs))));
    return probes >= 1 ? { earliestEndMs, probes } : {};
  }

  private narrow(lo: number, hi: number): void {
    this.lengthLoMs = Math.max(this.lengthLoMs, lo);
    this.lengthHiMs = Math.min(this.lengthHiMs, hi);
    if (this.lengthLoMs >= this.lengthHiMs) {
      // Inconsistent (a clock jump, a provider that changed its limits): learn again from scratch.
      this.forgetLength();
      return;
    }
    if (!Number.isFinite(this.lengthHiMs)) return;
    const whole = Math.floor(this.lengthHiMs / 1000) * 1000;
    this.windowMs = whole > this.lengthLoMs && whole >= 1000 ? whole : Math.ceil(this.lengthHiMs);
  }

  private forgetLength(): void {
    this.lengthLoMs = Number.NEGATIVE_INFINITY;
    this.lengthHiMs = Number.POSITIVE_INFINITY;
    this.windowMs = undefined;
  }

  /** Spend nothing for `ms` (a 429 with Retry-After, or a bare 429); then one request goes first. */
  exhaustFor(ms: number): void {
    this.blockedUntilMs = Math.max(this.blockedUntilMs, Date.now() + ms);
    this.probing = true;
    this.pump();
  }

  /** Milliseconds until the budget allows another request (0: now). */
  waitNeeded(): number {
    const now = Date.now();
    this.spreading = false;
    if (now < this.blockedUntilMs) return this.blockedUntilMs - now;
    // Unknown budget: one request at a time until an answer says more. Its answer wakes the queue.
    if (this.probing) return this.inFlight > 0 ? Number.POSITIVE_INFINITY : 0;
    let w = this.window;
    if (!w) return 0; // a provider that reports no budget
    if (w.endMs !== undefined && now >= w.endMs) {
      // The window is over. The next is spent at the learned rate until its first answer places it;
      // without a learned length, one request finds out.
      if (this.limit === undefined || this.windowMs === undefined) {
        this.window = undefined;
        this.probing = true;
        return this.inFlight > 0 ? Number.POSITIVE_INFINITY : 0;
      }
      w = this.window = { startLoMs: w.lastSentMs, lastSentMs: w.lastSentMs, remaining: this.limit };
    }
    // Peers see each other's requests only in the next answers: each extra peer keeps one in hand.
    const peers = this.peers();
    const share = (w.remaining - this.reserve - (peers - 1)) / peers;
    if (share < 1) {
      if (w.endMs === undefined) return Number.POSITIVE_INFINITY; // wait for an answer to place the window
      return w.endMs - now + 1;
    }
    if (this.lastSendMs === undefined) return 0;
    // Spread what is left evenly up to the window's end: the k remaining requests take k+1 equal gaps
    // from the last one sent. A window not yet placed is spent at the learned steady rate.
    let nextAt =
      w.endMs !== undefined
        ? (share * this.lastSendMs + this.spreadEnd(w.endMs, now, peers)) / (share + 1)
        : this.lastSendMs + (this.windowMs! * peers) / Math.max(1, this.limit! - this.reserve);
    // A window of doubtful end (doubtfulEnd): all but the probes up to its earliest end, the probes after it.
    let probing = false;
    if (w.probes !== undefined && w.earliestEndMs !== undefined && peers === 1) {
      const early = this.spreadEnd(w.earliestEndMs, now, peers);
      if (now < early && share > w.probes) nextAt = ((share - w.probes) * this.lastSendMs + early) / (share - w.probes + 1);
      else if (share <= w.probes) {
        // A probe keeps its own time: gone early with a group, several would look for the end at once.
        nextAt = Math.max(early, nextAt);
        probing = true;
      }
    }
    // Gaps under a millisecond are not worth a timer (a timer cannot wait less than one anyway).
    const wait = nextAt - now;
    this.spreading = !probing;
    return wait < 1 ? 0 : Math.ceil(wait);
  }

  /**
   * Where the even spread of a window ends: a turnaround before the window does. A request's unit is
   * charged to the window it leaves in, but the provider counts it only when it gets there (or, as the
   * stand-ins do, when it answers): sent in the window's last tens of milliseconds, it counts in the
   * next window, where it takes a place that window's own requests then lack, and the place it held in
   * this window goes unused. At 1,000 a second that was some 60 places a window (6 %). Ending the spread
   * a turnaround early sends the window's budget where it counts; nothing is charged to the next window
   * any earlier than before. Bounded to a tenth of the window (a slow answer must not crowd a window's
   * budget into a fraction of it), and not applied once the spread is already past that point (the rest
   * is spread up to the end, as before, not sent at once).
   * Not when processes share the budget: each sees the others' requests only in later answers, and a
   * spread crowded into less of the window let three of them pass the limit (resilience.test.ts).
   */
  private spreadEnd(endMs: number, now: number, peers: number): number {
    if (peers > 1) return endMs;
    const tail = Math.min(this.tailMs, (this.windowMs ?? 1000) * TAIL_SHARE_MAX);
    return now < endMs - tail ? endMs - tail : endMs;
  }

  snapshot(): RateBudgetSnapshot {
    const w = this.window;
    return {
      limit: this.limit,
      remaining: w?.remaining,
      reset_at: w?.endMs === undefined ? undefined : new Date(w.endMs).toISOString(),
      window_ms: this.windowMs,
      observed_at: this.observedAtMs === undefined ? undefined : new Date(this.observedAtMs).toISOString(),
      sharing: this.peers(),
      waiting: this.waiting,
      in_flight: this.inFlight,
      paced_waits: this.pacedWaits,
    };
  }

  /** Takes one unit now; `slotMs`: the even spread's time for it, when that is a little later (a group). */
  private take(slotMs?: number): number {
    if (this.window) this.window.remaining -= 1;
    const now = Date.now();
    this.lastSendMs = Math.max(now, slotMs ?? now);
    this.inFlightSent.push(now);
    return now;
  }

  /** Lets waiters go in order while the budget allows; otherwise sleeps until it will (or an answer comes). */
  private pump(): void {
    let group = 0;
    const slack = this.peers() > 1 ? SHARED_GROUP_SLACK_MS : GROUP_SLACK_MS;
    while (this.queue.length > 0) {
      const wait = this.waitNeeded();
      // After one that is due, those due within the slack join it (see GROUP_SLACK_MS).
      const joins = group > 0 && group < GROUP_MAX && wait <= slack && this.spreading;
      if (wait > 0 && !joins) {
        if (Number.isFinite(wait)) this.schedule(wait);
        return; // an answer (observe/release) pumps again
      }
      const w = this.queue.shift()!;
      if (w.onAbort) w.signal?.removeEventListener('abort', w.onAbort);
      w.resolve(this.take(Date.now() + Math.max(0, wait)));
      group += 1;
    }
  }

  private schedule(ms: number): void {
    const at = Date.now() + ms;
    if (this.timer && this.timerAt <= at) return;
    if (this.timer) clearTimeout(this.timer);
    this.timerAt = at;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.pump();
    }, ms); // not unref'd: a request is waiting on it
  }
}

function num(v: string | undefined): number | undefined {
  if (v === undefined || v.trim() === '') return undefined;
  const n = Number(v);
  return Number.isFinite(n) ? n : undefined;
}
