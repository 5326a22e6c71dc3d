// Every refusal code as pusher-js sees it, against a real server: 4009 (bad
// channel auth, bad sign-in: no reconnect after a 4009 close), 4301 (client
// events over 10 a second: closed, no reconnect), 4004 (the app's
// connection quota: no retry), and presence's LimitReached 4301 for an
// oversized user_info. What pusher-js then does is part of the contract:
// codes 4000–4099 and 4300–4399 must stop it from reconnecting.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import Pusher from 'pusher-js';
import { APP, EventQueue, pusherServer, startServer } from './harness.mjs';

const signer = pusherServer();
const servers = [];
const clients = [];
let server;

before(async () => {
  server = await startServer({ ROLLCALL_CLIENT_EVENTS: 'on' });
  servers.push(server);
});

after(async () => {
  for (const c of clients) c.disconnect();
  for (const s of servers) await s.stop();
});

/** A pusher-js client on `port`; `errors` gets each `pusher:error` code,
 *  `states` each connection state change. */
function client(port, options = {}) {
  const pusher = new Pusher(APP.key, {
    wsHost: '127.0.0.1',
    wsPort: port,
    forceTLS: false,
    enabledTransports: ['ws'],
    cluster: 'mt1',
    ...options,
  });
  clients.push(pusher);
  const errors = new EventQueue();
  const states = [];
  pusher.connection.bind('error', (e) => {
    const code = e?.data?.code ?? e?.error?.data?.code;
    if (code) errors.push(code);
  });
  pusher.connection.bind('state_change', ({ current }) => states.push(current));
  return { pusher, errors, states };
}

const connected = (pusher) =>
  new Promise((resolve) => (pusher.connection.state === 'connected' ? resolve() : pusher.connection.bind('connected', resolve)));
const settle = (ms = 1500) => new Promise((r) => setTimeout(r, ms));

test('a bad private-channel signature is pusher:error 4009 and the connection stays', async () => {
  const c = client(server.port, {
    channelAuthorization: { customHandler: (_, cb) => cb(null, { auth: `${APP.key}:0000` }) },
  });
  await connected(c.pusher);
  c.pusher.subscribe('private-secret');
  assert.equal(await c.errors.next(5000, 'a 4009'), 4009);
  await settle(300);
  assert.equal(c.pusher.connection.state, 'connected');
});

test('a refused sign-in is 4009 and pusher-js does not reconnect', async () => {
  const c = client(server.port, {
    userAuthentication: { customHandler: (_, cb) => cb(null, { auth: `${APP.key}:0000`, user_data: '{"id":"1"}' }) },
  });
  await connected(c.pusher);
  c.pusher.signin();
  assert.equal(await c.errors.next(5000, 'a 4009'), 4009);
  await settle();
  assert.notEqual(c.pusher.connection.state, 'connected');
  assert.equal(c.states.filter((s) => s === 'connected').length, 1, `states: ${c.states}`);
});

test('more than 10 client events a second is 4301 and pusher-js does not reconnect', async () => {
  const c = client(server.port, {
    channelAuthorization: { customHandler: ({ socketId, channelName }, cb) => cb(null, signer.authorizeChannel(socketId, channelName)) },
  });
  await connected(c.pusher);
  const channel = c.pusher.subscribe('private-chat');
  await new Promise((r) => channel.bind('pusher:subscription_succeeded', r));
  for (let i = 0; i < 12; i++) channel.trigger('client-typing', { i });
  assert.equal(await c.errors.next(5000, 'a 4301'), 4301);
  await settle();
  assert.equal(c.states.filter((s) => s === 'connected').length, 1, `states: ${c.states}`);
});

test('an oversized presence user_info is subscription_error LimitReached 4301', async () => {
  const info = { bio: 'x'.repeat(1100) };
  const c = client(server.port, {
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, cb) => cb(null, signer.authorizeChannel(socketId, channelName, { user_id: '1', user_info: info })),
    },
  });
  const channel = c.pusher.subscribe('presence-big');
  const err = await new Promise((resolve) => channel.bind('pusher:subscription_error', resolve));
  assert.equal(err.type, 'LimitReached');
  assert.equal(err.status, 4301);
});

test('past the app connection quota pusher-js gets 4004 and stops retrying', async () => {
  const small = await startServer({ ROLLCALL_MAX_APP_CONNECTIONS: '1' });
  servers.push(small);
  const first = client(small.port);
  await connected(first.pusher);
  const second = client(small.port);
  assert.equal(await second.errors.next(5000, 'a 4004'), 4004);
  const seen = second.states.length;
  await settle(2500);
  const later = second.states.slice(seen);
  assert.ok(!later.includes('connecting') && !later.includes('connected'), `it retried: ${second.states}`);
  assert.notEqual(second.pusher.connection.state, 'connected');
});
