// Presence channels through Laravel Echo and pusher-js, unchanged, against a
// real server: `Echo.join(…).here().joining().leaving()` with the auth the
// npm `pusher` library signs (`authorizeChannel` with presence data, what a
// Laravel app's /broadcasting/auth does), a user's second tab, a whisper
// that carries its sender's user id, and Pusher's member limit.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import Echo from 'laravel-echo';
import Pusher from 'pusher-js';
import { APP, EventQueue, channelAuthAs, echoOptions, startServer } from './harness.mjs';

const servers = [];
const clients = [];
let server;

before(async () => {
  server = await startServer({ ROLLCALL_CLIENT_EVENTS: 'on', ROLLCALL_MAX_PRESENCE_MEMBERS: '3' });
  servers.push(server);
});

after(async () => {
  for (const echo of clients) echo.disconnect();
  for (const s of servers) await s.stop();
});

/** A page signed in as `user` (`{ id, name }`), on `port`. */
function page(user, port = server.port) {
  const echo = new Echo({ ...echoOptions(port), Pusher, ...channelAuthAs(user) });
  clients.push(echo);
  return echo;
}

/** Joins `name` on `echo`; resolves with `here`'s users, and queues
 *  `joining` / `leaving` / errors for the caller. */
function join(echo, name) {
  const joining = new EventQueue();
  const leaving = new EventQueue();
  const errors = new EventQueue();
  let channel;
  const here = new Promise((resolve) => {
    channel = echo.join(name).here(resolve).joining(joining.push).leaving(leaving.push).error(errors.push);
  });
  return { here, joining, leaving, errors, channel };
}

const names = (users) => users.map((u) => u.name).sort();
const quiet = () => new Promise((r) => setTimeout(r, 400));

const ada = { id: '1', name: 'Ada' };
const bo = { id: '2', name: 'Bo' };

test('here, joining and leaving follow users, not tabs', async () => {
  const adaTab1 = page(ada);
  const a1 = join(adaTab1, 'class.7');
  assert.deepEqual(names(await a1.here), ['Ada']);

  const b = join(page(bo), 'class.7');
  assert.deepEqual(names(await b.here), ['Ada', 'Bo']);
  assert.deepEqual(await a1.joining.next(5000, 'Bo joining'), { name: 'Bo' });

  // Ada opens a second tab: one member still, nobody is told anything.
  const adaTab2 = page(ada);
  const a2 = join(adaTab2, 'class.7');
  assert.deepEqual(names(await a2.here), ['Ada', 'Bo']);
  await quiet();
  assert.equal(b.joining.size, 0, 'a second tab is not a new member');

  // Closing one of her tabs: she is still there.
  adaTab2.disconnect();
  await quiet();
  assert.equal(b.leaving.size, 0, 'a closed tab is not a departure while another is open');
  assert.equal(b.channel.subscription.members.count, 2);

  // Her last tab goes: Bo sees her leave, once.
  adaTab1.leave('class.7');
  assert.deepEqual(await b.leaving.next(5000, 'Ada leaving'), { name: 'Ada' });
  await quiet();
  assert.equal(b.leaving.size, 0);
  assert.equal(b.channel.subscription.members.count, 1);
});

test('a whisper on a presence channel says which user sent it', async () => {
  const sara = { id: '12', name: 'Sara' };
  const ameer = { id: '13', name: 'Ameer' };
  const s = join(page(sara), 'chat.9');
  const a = join(page(ameer), 'chat.9');
  await Promise.all([s.here, a.here]);

  const got = new EventQueue();
  // pusher-js hands presence client events a metadata argument with the
  // sender's user_id (Pusher adds it on the server).
  s.channel.subscription.bind('client-typing', (data, meta) => got.push({ data, meta }));
  a.channel.whisper('typing', { typing: true });
  const { data, meta } = await got.next(5000, 'a whisper');
  assert.deepEqual(data, { typing: true });
  assert.equal(meta?.user_id, '13');
});

test('past the member limit a new user gets subscription_error 4100, a member\'s tab does not', async () => {
  const users = [1, 2, 3].map((n) => ({ id: `u${n}`, name: `User ${n}` }));
  for (const user of users) await join(page(user), 'full.1').here;
  const late = join(page({ id: 'u4', name: 'Late' }), 'full.1');
  const err = await late.errors.next(5000, 'a subscription error');
  assert.equal(err.type, 'LimitReached');
  assert.equal(err.status, 4100);
  // Someone already in the channel opens another tab: fine.
  const again = join(page(users[0]), 'full.1');
  assert.equal((await again.here).length, 3);
});
