// Laravel Echo's whisper / listenForWhisper, and pusher-js's signin with
// events sent to its user, against a real
// server with ROLLCALL_CLIENT_EVENTS=on: private-channel auth signed by the
// npm `pusher` library (what a Laravel app's /broadcasting/auth does), the
// whisper reaching the other page and not the sender.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import Echo from 'laravel-echo';
import Pusher from 'pusher-js';
import { APP, EventQueue, echoOptions, pusherServer, startServer } from './harness.mjs';

let server;
const clients = [];
const signer = pusherServer();

before(async () => {
  server = await startServer({ ROLLCALL_CLIENT_EVENTS: 'on' });
});

after(async () => {
  for (const echo of clients) echo.disconnect();
  await server?.stop();
});

function newEcho() {
  const echo = new Echo({
    ...echoOptions(server.port),
    Pusher,
    // The app's auth endpoint, in-process: the same signature.
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, callback) =>
        callback(null, signer.authorizeChannel(socketId, channelName)),
    },
  });
  clients.push(echo);
  return echo;
}

function subscribed(channel) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no subscription_succeeded within 5 s')), 5000);
    channel.subscribed(() => {
      clearTimeout(timer);
      resolve();
    });
    channel.error((err) => reject(new Error(`subscription failed: ${JSON.stringify(err)}`)));
  });
}

test('a whisper reaches the other page, not the one that sent it', async () => {
  const toSara = new EventQueue();
  const toAmeer = new EventQueue();
  const ameer = newEcho().private('chat.1').listenForWhisper('typing', toAmeer.push);
  const sara = newEcho().private('chat.1').listenForWhisper('typing', toSara.push);
  await Promise.all([subscribed(ameer), subscribed(sara)]);

  ameer.whisper('typing', { name: 'Ameer Maher' });
  assert.deepEqual(await toSara.next(5000, 'a whisper'), { name: 'Ameer Maher' });
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(toAmeer.size, 0, 'not echoed to the sender');
});

test('pusher-js signs in and gets what the server library sends to its user', async () => {
  const client = new Pusher(APP.key, {
    wsHost: '127.0.0.1',
    wsPort: server.port,
    forceTLS: false,
    enabledTransports: ['ws'],
    cluster: 'mt1',
    userAuthentication: {
      customHandler: ({ socketId }, callback) =>
        callback(null, signer.authenticateUser(socketId, { id: '12', user_info: { name: 'Sara Ali' } })),
    },
  });
  clients.push({ disconnect: () => client.disconnect() });
  const notes = new EventQueue();
  client.user.bind('note', notes.push);
  const signedIn = new Promise((resolve) => client.bind('pusher:signin_success', resolve));
  client.signin();
  await Promise.race([signedIn, new Promise((_, reject) => setTimeout(() => reject(new Error('no signin_success')), 5000))]);
  // Pusher's own server library: `sendToUser` → `#server-to-user-12`.
  const rest = pusherServer(server.port);
  await rest.sendToUser('12', 'note', { text: 'your lesson starts in 5 minutes' });
  assert.deepEqual(await notes.next(5000, 'a user event'), { text: 'your lesson starts in 5 minutes' });
});
