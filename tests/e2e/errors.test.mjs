// How `POST /webhooks/livekit` refuses what can never succeed: status and the
// contract's `{"error","message"}` body, and the server keeps serving after.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  participantJoined,
  postWebhook,
  protojson,
  randomId,
  signedWebhook,
  startServer,
} from './harness.mjs';

let server;

before(async () => {
  server = await startServer();
});

after(async () => {
  await server?.stop();
});

function assertError(res, status) {
  assert.equal(res.status, status, `expected ${status}, got ${res.status}: ${res.text}`);
  assert.match(res.contentType, /^application\/json/, `content-type of ${res.text}`);
  assert.ok(res.json && typeof res.json === 'object', `body is not JSON: ${res.text}`);
  assert.equal(typeof res.json.error, 'string', `no "error" code in ${res.text}`);
  assert.ok(res.json.error.length > 0, `empty "error" in ${res.text}`);
  assert.equal(typeof res.json.message, 'string', `no "message" in ${res.text}`);
  assert.ok(res.json.message.length > 0, `empty "message" in ${res.text}`);
}

/** A fresh, correctly signed webhook is still accepted. */
async function assertStillServes() {
  const res = await postWebhook(server.url, participantJoined({ identity: `9_Ok_${randomId(4)}` }));
  assert.equal(res.status, 200, `good webhook answered ${res.status}: ${res.text}`);
}

test('no Authorization header: 401', async () => {
  assertError(await postWebhook(server.url, participantJoined(), { authorization: null }), 401);
  await assertStillServes();
});

test('token signed with a wrong secret: 401', async () => {
  assertError(await postWebhook(server.url, participantJoined(), { secret: 'not-the-secret' }), 401);
  await assertStillServes();
});

test('token from an unknown API key: 401', async () => {
  assertError(await postWebhook(server.url, participantJoined(), { key: 'otherkey' }), 401);
  await assertStillServes();
});

test('token expired beyond the 60 s leeway: 401', async () => {
  // jose (under the SDK) takes negative spans: exp = now - 2 min.
  assertError(await postWebhook(server.url, participantJoined(), { ttl: '-2m' }), 401);
  await assertStillServes();
});

test('token expired within the 60 s leeway: accepted', async () => {
  const res = await postWebhook(server.url, participantJoined(), { ttl: '-20s' });
  assert.equal(res.status, 200, `answered ${res.status}: ${res.text}`);
});

test('Authorization with a "Bearer " prefix: accepted', async () => {
  const body = participantJoined();
  const res = await postWebhook(server.url, body, { authorization: `Bearer ${await signedWebhook(body)}` });
  assert.equal(res.status, 200, `answered ${res.status}: ${res.text}`);
});

test('not a JWT at all: 401', async () => {
  assertError(await postWebhook(server.url, participantJoined(), { authorization: 'garbage' }), 401);
  await assertStillServes();
});

test('body altered after signing: 401', async () => {
  const signed = participantJoined({ identity: '1_Ameer_Maher' });
  const altered = signed.replace('1_Ameer_Maher', '7_Ameer_Maher');
  assert.notEqual(altered, signed);
  const token = await signedWebhook(signed);
  assertError(await postWebhook(server.url, altered, { authorization: token }), 401);
  // The same bytes re-serialized (hash over parsed JSON) are also "altered".
  const compact = JSON.stringify(JSON.parse(signed));
  assert.notEqual(compact, signed);
  assertError(await postWebhook(server.url, compact, { authorization: token }), 401);
  await assertStillServes();
});

test('malformed JSON with a valid signature over it: 400', async () => {
  const body = participantJoined().slice(0, -7);
  assertError(await postWebhook(server.url, body), 400);
  await assertStillServes();
});

test('body over 64 KiB: 413', async () => {
  // Valid JSON, correctly signed, just too large (LiveKit's bodies are ~1 KiB).
  const body = participantJoined({ metadata: 'x'.repeat(70 * 1024) });
  assert.ok(body.length > 64 * 1024);
  assertError(await postWebhook(server.url, body), 413);
  await assertStillServes();
});

test('ignored events are still answered 200', async () => {
  const unknownEvent = protojson({ event: 'agent_job_started', id: `EV_${randomId()}`, createdAt: '1763719205' });
  const recorder = participantJoined({ identity: 'EG_recorder', kind: 'EGRESS' });
  const otherRoom = participantJoined({ room: 'mytestroom' });
  const oddIdentity = participantJoined({ identity: 'guest-without-user-id' });
  for (const body of [unknownEvent, recorder, otherRoom, oddIdentity]) {
    const res = await postWebhook(server.url, body);
    assert.equal(res.status, 200, `${body}\nanswered ${res.status}: ${res.text}`);
  }
});
