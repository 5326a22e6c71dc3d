// The front end's real code path: Laravel Echo over pusher-js (node build)
// listening on `session.121`, fed by webhooks that LiveKit's SDK signed.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import Echo from 'laravel-echo';
import Pusher from 'pusher-js';
import {
  APP,
  CHANNEL,
  EventQueue,
  ROOM,
  iso,
  participantJoined,
  participantLeft,
  postWebhook,
  startServer,
  echoOptions,
} from './harness.mjs';

let server;
const clients = [];

before(async () => {
  server = await startServer();
});

after(async () => {
  for (const echo of clients) echo.disconnect();
  await server?.stop();
});

/** An Echo client configured exactly like the meeting page's. */
function newEcho() {
  const echo = new Echo({
    ...echoOptions(server.port),
    Pusher,
  });
  clients.push(echo);
  return echo;
}

/** Resolves once the channel's subscription succeeded; rejects on a subscription error. */
function subscribed(channel) {
  return withTimeout(
    new Promise((resolve, reject) => {
      channel.subscribed(resolve);
      channel.error((err) => reject(new Error(`subscription failed: ${JSON.stringify(err)}`)));
    }),
    5000,
    'subscription_succeeded',
  );
}

function withTimeout(promise, ms, what) {
  let timer;
  const guard = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no ${what} within ${ms} ms`)), ms);
  });
  return Promise.race([promise, guard]).finally(() => clearTimeout(timer));
}

async function deliver(body) {
  const res = await postWebhook(server.url, body);
  assert.equal(res.status, 200, `webhook answered ${res.status}: ${res.text}`);
}

test('Echo receives join and leave, duplicates are silent, late subscribers get a snapshot', async () => {
  const updates = new EventQueue();
  const channel = newEcho().channel(CHANNEL).listen('.attendance.updated', updates.push);
  await subscribed(channel);

  // One cycle shaped like the fixtures: joined at an exact second + 456 ms,
  // left (event createdAt) 59 whole seconds later: 58.544 s attended. The
  // join lies a minute back so that the leave, too, is in the past.
  const joinedSec = Math.floor(Date.now() / 1000) - 65;
  const joinedAtMs = joinedSec * 1000 + 456;
  const leftSec = joinedSec + 59;
  const person = { sid: 'PA_eU7nwP2s3FcN', identity: '1_Ameer_Maher', name: 'Ameer Maher', joinedAtMs };
  const joinBody = participantJoined({ ...person, createdAt: joinedSec + 1 });
  const leaveBody = participantLeft({ ...person, createdAt: leftSec });

  await deliver(joinBody);
  const joined = await updates.next(5000, 'attendance.updated after the join');
  assert.equal(joined.user_id, 1);
  const a1 = joined.attendance;
  assert.equal(a1.room, ROOM);
  assert.equal(a1.session_id, '121');
  assert.equal(a1.session_type, 'quran');
  assert.equal(a1.identity, '1_Ameer_Maher');
  assert.equal(a1.name, 'Ameer Maher');
  assert.equal(a1.is_currently_in_meeting, true);
  assert.equal(a1.status, 'joined');
  assert.equal(a1.join_count, 1);
  assert.equal(a1.leave_count, 0);
  assert.equal(a1.first_join_time, iso(joinedAtMs));
  assert.equal(a1.last_leave_time, null);
  assert.equal(a1.current_cycle_started_at, iso(joinedAtMs));
  assert.equal(a1.attendance_status, null);
  assert.equal(a1.attendance_percentage, null);
  assert.equal(a1.is_final, false);
  assert.equal(a1.late_minutes, null, 'no schedule: no lateness');
  assert.equal(a1.counting_window, null, 'no schedule: no window');
  assert.deepEqual(a1.cycles, [
    { participant_sid: person.sid, joined_at: iso(joinedAtMs), left_at: null, opened_by: 'webhook', closed_by: null },
  ]);
  // An open cycle counts up to the message's timestamp, exactly.
  assert.equal(a1.duration_ms, Date.parse(joined.timestamp) - joinedAtMs);
  assert.equal(a1.duration_seconds, Math.floor(a1.duration_ms / 1000));
  assert.equal(a1.duration_minutes, Math.floor(a1.duration_ms / 60000));

  await deliver(leaveBody);
  const left = await updates.next(5000, 'attendance.updated after the leave');
  assert.equal(left.user_id, 1);
  const a2 = left.attendance;
  assert.equal(a2.session_id, '121');
  assert.equal(a2.session_type, 'quran');
  assert.equal(a2.is_currently_in_meeting, false);
  assert.equal(a2.status, 'left');
  assert.equal(a2.duration_ms, 58_544);
  assert.equal(a2.duration_seconds, 58);
  assert.equal(a2.duration_minutes, 0);
  assert.equal(a2.join_count, 1);
  assert.equal(a2.leave_count, 1);
  assert.equal(a2.first_join_time, iso(joinedAtMs));
  assert.equal(a2.last_leave_time, iso(leftSec * 1000));
  assert.equal(a2.current_cycle_started_at, null);
  assert.deepEqual(a2.cycles, [
    { participant_sid: person.sid, joined_at: iso(joinedAtMs), left_at: iso(leftSec * 1000), opened_by: 'webhook', closed_by: 'webhook' },
  ]);
  assert.ok(Number.isFinite(Date.parse(left.timestamp)), `timestamp ${left.timestamp}`);

  // Redeliveries (same bodies, fresh tokens, as LiveKit's retries) are
  // answered 200 and broadcast nothing: the next event must be the marker.
  await deliver(leaveBody);
  await deliver(joinBody);
  const marker = { sid: 'PA_Sara0000000', identity: '2_Sara_Ali', name: 'Sara Ali', joinedAtMs: Date.now() - 2000 };
  await deliver(participantJoined(marker));
  const next = await updates.next(5000, 'attendance.updated for the marker');
  assert.equal(next.attendance.identity, '2_Sara_Ali', `expected the marker, got ${JSON.stringify(next)}`);
  assert.equal(next.user_id, 2);
  assert.equal(updates.size, 0);

  // A page that subscribes now is current at once.
  const snapshots = new EventQueue();
  const lateUpdates = new EventQueue();
  const late = newEcho()
    .channel(CHANNEL)
    .listen('.attendance.snapshot', snapshots.push)
    .listen('.attendance.updated', lateUpdates.push);
  await subscribed(late);
  const snap = await snapshots.next(5000, 'attendance.snapshot');
  assert.equal(snap.room, ROOM);
  assert.ok(Number.isFinite(Date.parse(snap.timestamp)), `timestamp ${snap.timestamp}`);
  const byIdentity = Object.fromEntries(snap.participants.map((p) => [p.identity, p]));
  assert.deepEqual(Object.keys(byIdentity).sort(), ['1_Ameer_Maher', '2_Sara_Ali']);
  assert.equal(byIdentity['1_Ameer_Maher'].status, 'left');
  assert.equal(byIdentity['1_Ameer_Maher'].duration_ms, 58_544);
  assert.equal(byIdentity['1_Ameer_Maher'].join_count, 1);
  assert.equal(byIdentity['2_Sara_Ali'].status, 'joined');
  assert.equal(byIdentity['2_Sara_Ali'].is_currently_in_meeting, true);
  assert.equal(byIdentity['2_Sara_Ali'].duration_ms, Date.parse(snap.timestamp) - marker.joinedAtMs);
  assert.equal(lateUpdates.size, 0);
});

test('a snapshot larger than one 8 KiB fragment arrives whole through pusher-js', async () => {
  // The server sends messages over 8 KiB as fragmented WebSocket messages;
  // pusher-js (node: the `ws` package) reassembles them.
  const room = 'itqan-academy-quran-session-122';
  const people = 40;
  for (let i = 0; i < people; i++) {
    await deliver(participantJoined({ room, identity: `${100 + i}_Student_Number_${i}`, name: `Student ${i}` }));
  }
  const snapshots = new EventQueue();
  const channel = newEcho().channel('session.122').listen('.attendance.snapshot', snapshots.push);
  await subscribed(channel);
  const snap = await snapshots.next(5000, 'attendance.snapshot');
  assert.equal(snap.room, room);
  assert.equal(snap.participants.length, people);
  assert.ok(JSON.stringify(snap).length > 16 * 1024, 'the snapshot spans several fragments');
});
