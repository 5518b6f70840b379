import type { SendWindow } from './message.js';

/**
 * When a message may go out under a send window (days and hours in a time zone). Local time comes
 * from Intl, so daylight-saving changes and half-hour zones are handled by the platform's tz database.
 */

const formatters = new Map<string, Intl.DateTimeFormat>();

function formatter(timezone: string): Intl.DateTimeFormat {
  let f = formatters.get(timezone);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', { timeZone: timezone, weekday: 'short', hour: 'numeric', hourCycle: 'h23' });
    formatters.set(timezone, f);
  }
  return f;
}

const WEEKDAY: Record<string, number> = { Mon: 1, Tue: 2, Wed: 3, Thu: 4, Fri: 5, Sat: 6, Sun: 7 };

/** ISO weekday (1–7) and hour (0–23) of an instant in a time zone. */
export function localDayHour(ms: number, timezone: string): { day: number; hour: number } {
  let day = 0;
  let hour = 0;
  for (const p of formatter(timezone).formatToParts(ms)) {
    if (p.type === 'weekday') day = WEEKDAY[p.value] ?? 0;
    else if (p.type === 'hour') hour = Number(p.value) % 24;
  }
  return { day, hour };
}

export function isValidTimezone(tz: string): boolean {
  try {
    formatter(tz);
    return true;
  } catch {
    return false;
  }
}

export function insideWindow(w: SendWindow, ms: number, timezone = w.timezone): boolean {
  const { day, hour } = localDayHour(ms, timezone);
  return w.days.includes(day) && hour >= w.start_hour && hour < w.end_hour;
}

const QUARTER_HOUR = 15 * 60_000;

/**
 * The first moment at or after `now` inside the window. Every zone's hour starts on a UTC quarter hour,
 * so stepping by quarter hours finds the exact opening; a week of steps covers every window.
 */
export function nextWindowOpening(w: SendWindow, now: number, timezone = w.timezone): number {
  if (insideWindow(w, now, timezone)) return now;
  let t = Math.ceil(now / QUARTER_HOUR) * QUARTER_HOUR;
  for (let i = 0; i < 8 * 24 * 4; i++, t += QUARTER_HOUR) if (insideWindow(w, t, timezone)) return t;
  // An empty window (no days): never open. The caller treats a far time as "wait", not "send".
  return now + 7 * 86_400_000;
}
