// What a page shows between two updates (rule 28 of docs/attendance-rules.md),
// as pure functions of the last attendance object, its frame's `timestamp`
// and the server's "now". No DOM, no clock: the dashboard and its tests
// (tests/e2e/ticking.test.mjs) share them.
//
// Invariants: a shown duration never runs ahead of the counting window and
// never moves while the person is out of the meeting; a shown status before
// `is_final` is never presented as the verdict; a person in the meeting is
// never shown absent.

/** `counting_window` as `{start, end}` in ms, or `null` (no schedule). */
export function windowOf(a) {
  const w = a && a.counting_window;
  if (!w) return null;
  const start = Date.parse(w.starts_at);
  const end = Date.parse(w.ends_at);
  return Number.isFinite(start) && Number.isFinite(end) ? { start, end } : null;
}

/** Length of [from, to] ∩ window (unbounded when `w` is null). */
export function overlapMs(from, to, w) {
  const lo = w ? Math.max(from, w.start) : from;
  const hi = w ? Math.min(to, w.end) : to;
  return Math.max(0, hi - lo);
}

/** Attended ms at server time `now`: `duration_ms` exact at `at` (the
 *  frame's timestamp, ms), plus the counted time since, while in the meeting. */
export function shownMs(a, at, now) {
  if (!a.is_currently_in_meeting) return a.duration_ms;
  return a.duration_ms + overlapMs(at, now, windowOf(a));
}

/** Rule 16: share of the window, capped at 100, rounded half up to 0.1
 *  as the server rounds it; `null` without a schedule. */
export function percentage(ms, w) {
  if (!w) return null;
  const scheduled = w.end - w.start;
  if (scheduled <= 0) return 0;
  const attended = Math.min(Math.max(ms, 0), scheduled);
  return Math.floor((attended * 2000 + scheduled) / (2 * scheduled)) / 10;
}

/** Rule 18 with the server's thresholds (`GET /api/dashboard`). */
export function statusFor(pct, late, rules) {
  if (pct < rules.absent_below) return 'absent';
  if (pct < rules.partial_below) return 'partial';
  if (pct >= rules.present_from || !late) return 'present';
  return 'late';
}

export const DEFAULT_RULES = Object.freeze({
  absent_below: 10,
  partial_below: 50,
  present_from: 75,
  late_grace_ms: 15 * 60_000,
  finalize_delay_ms: 5 * 60_000,
});

/**
 * What the verdict column says at server time `now`:
 * - `{kind: 'final', status, pct}`: the verdict (`is_final`);
 * - `{kind: 'none'}`: no schedule, so no verdict;
 * - `{kind: 'not_started', pct: 0}`: the window has not begun;
 * - `{kind: 'so_far', status, pct}`: as of now, may still change;
 * - `{kind: 'can_reach', status, pct}`: in the meeting and below the
 *   absent line so far: the best status still reachable by staying;
 * - `{kind: 'in_progress', pct}`: in the meeting, nothing better than
 *   absent reachable any more: still never shown as absent.
 */
export function verdictAt(a, at, now, rules) {
  const w = windowOf(a);
  const ms = shownMs(a, at, now);
  const pct = percentage(ms, w);
  if (a.is_final) {
    return { kind: 'final', status: a.attendance_status, pct: a.attendance_percentage ?? pct };
  }
  if (!w) return { kind: 'none', pct: null };
  if (now < w.start && ms === 0) return { kind: 'not_started', pct: 0 };
  const late = a.is_late === true;
  const status = statusFor(pct, late, rules);
  if (!a.is_currently_in_meeting || status !== 'absent') return { kind: 'so_far', status, pct };
  const reachable = statusFor(percentage(ms + Math.max(0, w.end - Math.max(now, w.start)), w), late, rules);
  return reachable === 'absent' ? { kind: 'in_progress', pct } : { kind: 'can_reach', status: reachable, pct };
}

/** Where the session stands at `now`: before, during or after its window. */
export function phaseAt(w, now, isFinal) {
  if (isFinal) return 'final';
  if (!w) return 'unscheduled';
  if (now < w.start) return 'preparation';
  if (now < w.end) return 'in_session';
  return 'ended';
}

/** `h:mm:ss`. */
export function hms(ms) {
  const s = Math.floor(Math.max(0, ms) / 1000);
  const mm = String(Math.floor(s / 60) % 60).padStart(2, '0');
  const ss = String(s % 60).padStart(2, '0');
  return `${Math.floor(s / 3600)}:${mm}:${ss}`;
}

/**
 * The server's clock as seen from here: every frame's `timestamp` was the
 * server's now when it was made, so `timestamp - receivedAt` bounds the
 * offset from below (transit only delays a frame); the largest such bound
 * is the best. Skewed client clocks then don't matter.
 */
export class ServerClock {
  constructor() { this.offset = null; }
  observe(timestampIso, receivedAt) {
    const t = Date.parse(timestampIso);
    if (!Number.isFinite(t)) return;
    const o = t - receivedAt;
    if (this.offset === null || o > this.offset) this.offset = o;
  }
  now(localNow) { return localNow + (this.offset ?? 0); }
}
