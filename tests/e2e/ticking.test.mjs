// Rule 28's arithmetic (static/ticking.mjs), the very module the dashboard
// imports: tables, no browser.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  DEFAULT_RULES, ServerClock, hms, overlapMs, percentage, phaseAt, shownMs, statusFor, verdictAt,
} from '../../static/ticking.mjs';

const MIN = 60_000;
const T0 = Date.parse('2026-03-01T10:00:00.000Z'); // the window's start
const window = { starts_at: new Date(T0).toISOString(), ends_at: new Date(T0 + 60 * MIN).toISOString() };

function person(over = {}) {
  return {
    is_currently_in_meeting: true, duration_ms: 0, is_final: false, is_late: false,
    attendance_status: null, attendance_percentage: null, counting_window: window, ...over,
  };
}

test('time ticks only while in the meeting and inside the counting window', () => {
  const at = T0 - 5 * MIN; // the frame was made in preparation
  const cases = [
    // [now, in meeting, duration_ms at `at`, shown]
    [T0 - 1 * MIN, true, 0, 0], // preparation does not count
    [T0, true, 0, 0],
    [T0 + 90_000, true, 0, 90_000], // ticks from the start
    [T0 + 90_000, false, 0, 0], // out of the meeting: frozen
    [T0 + 70 * MIN, true, 0, 60 * MIN], // never past the window
  ];
  for (const [now, inMeeting, ms, want] of cases) {
    assert.equal(shownMs(person({ is_currently_in_meeting: inMeeting, duration_ms: ms }), at, now), want, `${now - T0}`);
  }
  // A frame inside the window adds only what came after it.
  assert.equal(shownMs(person({ duration_ms: 10 * MIN }), T0 + 20 * MIN, T0 + 21 * MIN), 11 * MIN);
  // Without a schedule every moment counts.
  assert.equal(shownMs(person({ counting_window: null, duration_ms: 5 }), 1000, 4000), 3005);
  assert.equal(overlapMs(0, 10, null), 10);
  assert.equal(overlapMs(10, 0, null), 0);
});

test('the percentage rounds as the server does and is capped', () => {
  const w = { start: 0, end: 60 * MIN };
  assert.equal(percentage(0, w), 0);
  assert.equal(percentage(30 * MIN, w), 50);
  assert.equal(percentage(60 * MIN + 1, w), 100);
  assert.equal(percentage(2_970, { start: 0, end: 60_000 }), 5); // 4.95 → 5.0, half up
  assert.equal(percentage(2_969, { start: 0, end: 60_000 }), 4.9);
  assert.equal(percentage(5, null), null);
});

test('statuses follow rule 18 with the configured thresholds', () => {
  const r = DEFAULT_RULES;
  assert.equal(statusFor(9.9, false, r), 'absent');
  assert.equal(statusFor(10, false, r), 'partial');
  assert.equal(statusFor(50, false, r), 'present');
  assert.equal(statusFor(50, true, r), 'late');
  assert.equal(statusFor(75, true, r), 'present');
  assert.equal(statusFor(60, false, { ...r, present_from: 50, partial_below: 70 }), 'partial');
});

test('before final a verdict is so far, and no one in the meeting is absent', () => {
  const r = DEFAULT_RULES;
  // Preparation: not started.
  assert.deepEqual(verdictAt(person(), T0 - MIN, T0 - 30_000, r), { kind: 'not_started', pct: 0 });
  // Five minutes in: 8.3 % — absent by the numbers, but in the meeting.
  const early = verdictAt(person(), T0, T0 + 5 * MIN, r);
  assert.equal(early.kind, 'can_reach');
  assert.equal(early.status, 'present');
  assert.equal(early.pct, 8.3);
  // Joined late, staying cannot lift them out of absent: still not absent.
  const hopeless = verdictAt(person({ is_late: true }), T0 + 57 * MIN, T0 + 57 * MIN + 1000, r);
  assert.equal(hopeless.kind, 'in_progress');
  // Out of the meeting, absent so far is the truth.
  assert.deepEqual(verdictAt(person({ is_currently_in_meeting: false, duration_ms: MIN }), T0, T0 + 30 * MIN, r),
    { kind: 'so_far', status: 'absent', pct: 1.7 });
  // In the meeting long enough: present so far.
  assert.deepEqual(verdictAt(person({ duration_ms: 40 * MIN }), T0 + 40 * MIN, T0 + 45 * MIN, r),
    { kind: 'so_far', status: 'present', pct: 75 });
  // Final: the server's verdict as it is.
  const final = verdictAt(person({ is_final: true, is_currently_in_meeting: false, attendance_status: 'late', attendance_percentage: 60 }), T0, T0 + 90 * MIN, r);
  assert.deepEqual(final, { kind: 'final', status: 'late', pct: 60 });
  // No schedule, no verdict.
  assert.equal(verdictAt(person({ counting_window: null }), 0, 1, r).kind, 'none');
});

test('no one in the meeting is ever shown absent, at any second of a session', () => {
  const r = DEFAULT_RULES;
  for (let joinedMin = -10; joinedMin < 60; joinedMin += 7) {
    for (let s = Math.max(joinedMin, -10) * 60; s <= 65 * 60; s += 13) {
      const at = T0 + joinedMin * MIN;
      const v = verdictAt(person({ is_late: joinedMin > 15 }), at, T0 + s * 1000, r);
      assert.notEqual(v.status === 'absent' || v.kind === 'absent', true, `joined ${joinedMin} min, at ${s} s`);
    }
  }
});

test('phases, h:mm:ss and the server clock', () => {
  const w = { start: 100, end: 200 };
  assert.equal(phaseAt(w, 99, false), 'preparation');
  assert.equal(phaseAt(w, 100, false), 'in_session');
  assert.equal(phaseAt(w, 200, false), 'ended');
  assert.equal(phaseAt(w, 150, true), 'final');
  assert.equal(phaseAt(null, 150, false), 'unscheduled');
  assert.equal(hms(0), '0:00:00');
  assert.equal(hms(3_723_999), '1:02:03');
  assert.equal(hms(-5), '0:00:00');
  const clock = new ServerClock();
  assert.equal(clock.now(1000), 1000, 'no frame yet: the local clock');
  clock.observe(new Date(10_000).toISOString(), 4000); // server 6 s ahead, this frame was quick
  clock.observe(new Date(10_500).toISOString(), 5000); // a slower one: ignored
  assert.equal(clock.now(6000), 12_000);
});
