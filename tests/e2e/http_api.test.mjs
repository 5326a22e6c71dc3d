// The main app's side of the Pusher protocol: the official `pusher` server
// library (pusher-http-node) signs and sends HTTP API requests; real
// pusher-js clients receive what it triggers.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import Pusher from 'pusher-js';
import { APP, EventQueue, pusherServer, startServer } from './harness.mjs';

let server;
let api;
const clients = [];

before(async () => {
  server = await startServer();
  api = pusherServer(server.port);
});

after(async () => {
  for (const client of clients) client.disconnect();
  await server?.stop();
});

/** A pusher-js client subscribed to `name`; resolves once subscribed. */
async function subscriber(name) {
  const client = new Pusher(APP.key, {
    wsHost: '127.0.0.1',
    wsPort: server.port,
    forceTLS: false,
    enabledTransports: ['ws'],
    cluster: 'mt1',
  });
  clients.push(client);
  const channel = client.subscribe(name);
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no subscription to ${name} within 5 s`)), 5000);
    channel.bind('pusher:subscription_succeeded', () => {
      clearTimeout(timer);
      resolve();
    });
  });
  const events = new EventQueue();
  channel.bind_global((event, data) => {
    if (!event.startsWith('pusher')) events.push({ event, data });
  });
  return { client, events, socketId: () => client.connection.socket_id };
}

test('trigger reaches pusher-js subscribers, and socket_id excludes its sender', async () => {
  const sender = await subscriber('orders');
  const watcher = await subscriber('orders');

  const res = await api.trigger('orders', 'order.created', { id: 7, total: '12.50' });
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), {});
  for (const { events } of [sender, watcher]) {
    const got = await events.next(5000, 'order.created');
    assert.deepEqual(got, { event: 'order.created', data: { id: 7, total: '12.50' } });
  }

  await api.trigger(['orders'], 'order.paid', { id: 7 }, { socket_id: sender.socketId() });
  assert.deepEqual(await watcher.events.next(5000, 'order.paid'), { event: 'order.paid', data: { id: 7 } });
  // The sender's next event is the marker: order.paid never reached it.
  await api.trigger('orders', 'marker', {});
  assert.equal((await sender.events.next(5000, 'the marker')).event, 'marker');
  assert.equal((await watcher.events.next(5000, 'the marker')).event, 'marker');
});

test('triggerBatch publishes every event, in order', async () => {
  const a = await subscriber('batch-a');
  const b = await subscriber('batch-b');
  const res = await api.triggerBatch([
    { channel: 'batch-a', name: 'first', data: { n: 1 } },
    { channel: 'batch-b', name: 'second', data: { n: 2 } },
    { channel: 'batch-a', name: 'third', data: 'plain text' },
  ]);
  assert.equal(res.status, 200);
  assert.deepEqual(await a.events.next(5000, 'first'), { event: 'first', data: { n: 1 } });
  assert.deepEqual(await a.events.next(5000, 'third'), { event: 'third', data: 'plain text' });
  assert.deepEqual(await b.events.next(5000, 'second'), { event: 'second', data: { n: 2 } });
});

test('channel queries through the library', async () => {
  await subscriber('stats.1');
  await subscriber('stats.1');
  await subscriber('stats.2');

  const all = await api.get({ path: '/channels', params: { filter_by_prefix: 'stats.', info: 'subscription_count' } });
  assert.equal(all.status, 200);
  assert.deepEqual(await all.json(), {
    channels: { 'stats.1': { subscription_count: 2 }, 'stats.2': { subscription_count: 1 } },
  });

  const one = await api.get({ path: '/channels/stats.1', params: { info: 'subscription_count' } });
  assert.deepEqual(await one.json(), { occupied: true, subscription_count: 2 });
  const empty = await api.get({ path: '/channels/stats.9' });
  assert.deepEqual(await empty.json(), { occupied: false });

  // users is for presence channels only: the library surfaces the 400.
  await assert.rejects(api.get({ path: '/channels/stats.1/users' }), (err) => {
    assert.equal(err.status, 400);
    assert.match(err.body, /presence/);
    return true;
  });
});

test('a client with the wrong secret is refused with 401', async () => {
  const wrong = pusherServer(server.port, { secret: 'not-the-secret' });
  await assert.rejects(wrong.trigger('orders', 'nope', {}), (err) => {
    assert.equal(err.status, 401);
    assert.equal(JSON.parse(err.body).error, 'invalid_signature');
    return true;
  });
});
