// App webhooks (ROLLCALL_APP_WEBHOOK_URL) as a Pusher app receives them: a
// Node receiver checks every POST with the npm `pusher` library's
// `webhook({headers, rawBody}).isValid()` (the key and the HMAC of the raw
// body) and reads `getEvents()`; pusher-js subscribes, leaves, reloads and
// sends a client event on a private channel authorized by the same library.

import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, test } from 'node:test';
import Pusher from 'pusher-js';
import { APP, EventQueue, echoOptions, pusherServer, startServer } from './harness.mjs';

const HOLD_MS = 1000;
const signer = pusherServer();
const events = new EventQueue();
const invalid = [];
let receiver;
let server;
const clients = [];

before(async () => {
  receiver = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const webhook = signer.webhook({ headers: req.headers, rawBody: Buffer.concat(chunks).toString('utf8') });
      if (!webhook.isValid()) {
        invalid.push(req.headers);
        res.writeHead(401).end();
        return;
      }
      assert.equal(req.headers['content-type'], 'application/json');
      assert.ok(webhook.getTime() instanceof Date);
      for (const e of webhook.getEvents()) events.push(e);
      res.writeHead(200).end();
    });
  });
  await new Promise((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  server = await startServer({
    ROLLCALL_APP_WEBHOOK_URL: `http://127.0.0.1:${receiver.address().port}/pusher/webhooks`,
    ROLLCALL_APP_WEBHOOK_HOLD: `${HOLD_MS}ms`,
    ROLLCALL_CLIENT_EVENTS: 'on',
  });
});

after(async () => {
  for (const p of clients) p.disconnect();
  await server?.stop();
  receiver?.close();
  assert.deepEqual(invalid, [], 'every webhook was valid');
});

function newPusher() {
  const { key, ...options } = echoOptions(server.port);
  const pusher = new Pusher(key, {
    ...options,
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, callback) =>
        callback(null, signer.authorizeChannel(socketId, channelName)),
    },
  });
  clients.push(pusher);
  return pusher;
}

function subscribed(pusher, name) {
  const channel = pusher.subscribe(name);
  return new Promise((resolve, reject) => {
    channel.bind('pusher:subscription_succeeded', () => resolve(channel));
    channel.bind('pusher:subscription_error', reject);
  });
}

test('subscribing sends channel_occupied; leaving sends channel_vacated after the hold', async () => {
  const pusher = newPusher();
  await subscribed(pusher, 'chat.1');
  assert.deepEqual(await events.next(5000, 'channel_occupied'), { name: 'channel_occupied', channel: 'chat.1' });
  const left = Date.now();
  pusher.unsubscribe('chat.1');
  assert.deepEqual(await events.next(5000, 'channel_vacated'), { name: 'channel_vacated', channel: 'chat.1' });
  assert.ok(Date.now() - left >= HOLD_MS - 50, 'held');
});

test('a reload within the hold sends neither vacated nor occupied', async () => {
  const first = newPusher();
  await subscribed(first, 'chat.2');
  assert.deepEqual(await events.next(5000, 'channel_occupied'), { name: 'channel_occupied', channel: 'chat.2' });
  // The page reloads: the old connection goes, a new one subscribes.
  first.disconnect();
  await subscribed(newPusher(), 'chat.2');
  await new Promise((r) => setTimeout(r, HOLD_MS * 2));
  // A marker proves nothing was sent before it.
  await subscribed(newPusher(), 'marker');
  assert.deepEqual(await events.next(5000, 'the marker'), { name: 'channel_occupied', channel: 'marker' });
});

test('a client event on a private channel is reported as client_event', async () => {
  const a = newPusher();
  const channel = await subscribed(a, 'private-chat.3');
  assert.deepEqual(await events.next(5000, 'channel_occupied'), { name: 'channel_occupied', channel: 'private-chat.3' });
  assert.ok(channel.trigger('client-typing', { user: 'Sara' }));
  assert.deepEqual(await events.next(5000, 'client_event'), {
    name: 'client_event',
    channel: 'private-chat.3',
    event: 'client-typing',
    data: JSON.stringify({ user: 'Sara' }),
    socket_id: a.connection.socket_id,
  });
});
