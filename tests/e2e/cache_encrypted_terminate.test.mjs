// pusher-js against a real server for the rest of issue 12's channel kinds
// and user controls: a cache channel's replay and `pusher:cache_miss`, an
// end-to-end encrypted channel (the npm `pusher` library encrypts with
// `encryptionMasterKeyBase64` and signs the shared secret, pusher-js
// decrypts; the server only relays), and `terminateUserConnections`,
// with the close code pusher-js sees and what it does next.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import Pusher from 'pusher-js';
import { APP, EventQueue, pusherServer, startServer } from './harness.mjs';

let server;
let rest;
const clients = [];
// The app's own key for encrypted channels: never given to rollcall.
const encryptionMasterKeyBase64 = randomBytes(32).toString('base64');

before(async () => {
  server = await startServer();
  rest = pusherServer(server.port, { encryptionMasterKeyBase64 });
});

after(async () => {
  for (const client of clients) client.disconnect();
  await server?.stop();
});

/** A pusher-js client whose auth endpoints are the `pusher` library, in-process. */
function newClient(userId) {
  const client = new Pusher(APP.key, {
    wsHost: '127.0.0.1',
    wsPort: server.port,
    forceTLS: false,
    enabledTransports: ['ws'],
    cluster: 'mt1',
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, callback) =>
        callback(null, rest.authorizeChannel(socketId, channelName)),
    },
    userAuthentication: {
      customHandler: ({ socketId }, callback) =>
        callback(null, rest.authenticateUser(socketId, { id: userId ?? 'nobody' })),
    },
  });
  clients.push(client);
  return client;
}

function within(ms, what, promise) {
  return Promise.race([
    promise,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`no ${what} within ${ms} ms`)), ms)),
  ]);
}

function subscribed(channel) {
  return within(
    5000,
    `subscription to ${channel.name}`,
    new Promise((resolve, reject) => {
      channel.bind('pusher:subscription_succeeded', resolve);
      channel.bind('pusher:subscription_error', (e) => reject(new Error(JSON.stringify(e))));
    }),
  );
}

test('a cache channel answers a miss first, then replays its last event', async () => {
  for (const name of ['cache-scores', 'private-cache-scores']) {
    const first = newClient().subscribe(name);
    const misses = new EventQueue();
    first.bind('pusher:cache_miss', misses.push);
    await subscribed(first);
    await misses.next(5000, `pusher:cache_miss on ${name}`);

    await rest.trigger(name, 'score', { home: 1 });
    await rest.trigger(name, 'score', { home: 2 });
    const late = newClient().subscribe(name);
    const scores = new EventQueue();
    const lateMisses = new EventQueue();
    late.bind('score', scores.push);
    late.bind('pusher:cache_miss', lateMisses.push);
    assert.deepEqual(await scores.next(5000, `the replay on ${name}`), { home: 2 });
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(scores.size, 0, 'only the last event is replayed');
    assert.equal(lateMisses.size, 0, 'no miss when there is an event');
  }
});

test('an encrypted channel round trip: the library encrypts, pusher-js decrypts', async () => {
  const name = 'private-encrypted-grades';
  const channel = newClient().subscribe(name);
  const grades = new EventQueue();
  channel.bind('grade', grades.push);
  await subscribed(channel);
  await rest.trigger(name, 'grade', { student: 'Sara', grade: 'A' });
  assert.deepEqual(await grades.next(5000, 'a decrypted event'), { student: 'Sara', grade: 'A' });

  // An encrypted cache channel replays the sealed event, which pusher-js
  // decrypts like a live one.
  const cached = 'private-encrypted-cache-grades';
  await rest.trigger(cached, 'grade', { student: 'Ameer', grade: 'B' });
  const late = newClient().subscribe(cached);
  const replayed = new EventQueue();
  late.bind('grade', replayed.push);
  assert.deepEqual(await replayed.next(5000, 'a decrypted replay'), { student: 'Ameer', grade: 'B' });

  // The library refuses several channels with an encrypted one before
  // asking; the server refuses such a request too (see tests/it).
  await assert.rejects(async () => rest.trigger([name, 'session.1'], 'grade', {}), /multiple channels/);
});

test('terminateUserConnections closes the user with 4009 and pusher-js stays disconnected', async () => {
  const sara = newClient('12');
  const other = newClient('13');
  const errors = new EventQueue();
  const states = [];
  sara.connection.bind('error', errors.push);
  sara.connection.bind('state_change', ({ current }) => states.push(current));
  for (const client of [sara, other]) {
    const signedIn = new Promise((resolve) => client.bind('pusher:signin_success', resolve));
    client.signin();
    await within(5000, 'signin_success', signedIn);
  }

  const answer = await rest.terminateUserConnections('12');
  assert.equal(answer.status, 200);
  assert.deepEqual(await answer.json(), {});

  // pusher-js reports the pusher:error frame, then the close code.
  const codes = [];
  while (!codes.includes(4009) || codes.length < 2) {
    const err = await errors.next(5000, 'an error event');
    codes.push(err.data?.code ?? err.error?.data?.code);
  }
  assert.deepEqual(codes, [4009, 4009]);
  // 4000–4099 is "refused": no reconnect.
  await new Promise((r) => setTimeout(r, 1500));
  assert.equal(sara.connection.state, 'disconnected', `states: ${states.join(' → ')}`);
  assert.ok(!states.slice(states.indexOf('disconnected')).includes('connecting'), `states: ${states.join(' → ')}`);
  assert.equal(other.connection.state, 'connected', 'another user is untouched');
});
