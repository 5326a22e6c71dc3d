// The meeting page's heartbeat client (`static/rollcall-heartbeat.js`) in a
// real browser, on a page of *another origin* than rollcall's (as the main
// app's meeting page is), driving a real livekit-client `Room` against a
// real rollcall server.
//
// No LiveKit server can run here, so the Room never connects for real: the
// tests set `room.state` and emit the events on the real Room object exactly
// as livekit-client's own Room does on a connection change
// (`setAndEmitConnectionState` sets `state`, emits `connectionStateChanged`,
// then `connected` / `reconnecting` / `reconnected` / `disconnected`).
// rollcall's side is real: webhooks signed by LiveKit's SDK, tokens minted
// by it, and the attendance API read back.
//
// Every request the page makes is recorded by a wrapper around `fetch`
// (installed before any script runs): when, where, and the answer.

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { AccessToken } from 'livekit-server-sdk';
import { chromium } from 'playwright-core';
import { APP, LIVEKIT, ROOM, freePort, participantJoined, postWebhook, startServer } from './harness.mjs';

const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const here = path.dirname(fileURLToPath(import.meta.url));
const LIVEKIT_UMD = path.join(here, 'node_modules/livekit-client/dist/livekit-client.umd.js');

// Short enough to watch a cycle closed by the sweeper within a test.
const HEARTBEAT_TIMEOUT_MS = 1500;

let server; // heartbeat timeout 1.5 s, sweeps every 100 ms
let limited; // one heartbeat per person per 2 s: 429 with Retry-After
let pages; // the meeting page's origin
let faulty; // another origin that answers 503 until told otherwise, then forwards to `server`
let browser;

/** A tiny HTTP server on a free loopback port; resolves to `{url, close()}`. */
async function listen(handler) {
  const port = await freePort();
  const srv = http.createServer(handler);
  await new Promise((resolve) => srv.listen(port, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${port}`,
    close: () => new Promise((resolve) => srv.close(resolve)),
    srv,
  };
}

/** The meeting page: livekit-client from node_modules, the heartbeat from `rollcallUrl`. */
function meetingPage(rollcallUrl) {
  return `<!doctype html><meta charset="utf-8"><title>meeting</title>
<script src="/livekit-client.umd.js"></script>
<script src="${rollcallUrl}/rollcall-heartbeat.js"></script>
<p>meeting page</p>`;
}

before(async () => {
  const env = { ROLLCALL_HEARTBEAT_TIMEOUT: `${HEARTBEAT_TIMEOUT_MS}ms`, ROLLCALL_SWEEP_INTERVAL: '100ms' };
  [server, limited] = await Promise.all([startServer(env), startServer({ ROLLCALL_RATE_HEARTBEATS: '1/2s' })]);
  const livekitUmd = await readFile(LIVEKIT_UMD);

  pages = await listen((req, res) => {
    const url = new URL(req.url, 'http://x');
    if (url.pathname === '/livekit-client.umd.js') {
      res.writeHead(200, { 'Content-Type': 'text/javascript' }).end(livekitUmd);
    } else if (url.pathname === '/') {
      const rollcall = url.searchParams.get('rollcall') ?? server.url;
      res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' }).end(meetingPage(rollcall));
    } else {
      res.writeHead(404).end();
    }
  });

  // A stand-in for rollcall behind a failing load balancer: 503 to the
  // first `faulty.failures` heartbeats (preflights pass, so the page sees
  // the 503 itself), then forwards everything to the real server.
  faulty = await listen((req, res) => {
    const cors = { 'Access-Control-Allow-Origin': '*' };
    if (req.method === 'POST' && faulty.failures > 0) {
      faulty.failures -= 1;
      res.writeHead(503, { ...cors, 'Content-Type': 'application/json' });
      res.end('{"error":"unavailable","message":"try later"}');
      return;
    }
    const target = new URL(server.url);
    const upstream = http.request(
      { host: target.hostname, port: target.port, path: req.url, method: req.method, headers: req.headers },
      (answer) => {
        res.writeHead(answer.statusCode, answer.headers);
        answer.pipe(res);
      },
    );
    upstream.on('error', () => res.writeHead(502, cors).end());
    req.pipe(upstream);
  });
  faulty.failures = 0;

  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking'],
  });
});

after(async () => {
  await browser?.close();
  await pages?.close();
  await faulty?.close();
  await Promise.all([server?.stop(), limited?.stop()]);
});

/** A participant access token minted by LiveKit's SDK, as the main app mints it. */
async function participantToken(identity, { room = ROOM, roomJoin = true, ttl = '10m' } = {}) {
  const at = new AccessToken(LIVEKIT.key, LIVEKIT.secret, { identity, ttl });
  at.addGrant({ roomJoin, room });
  return at.toJwt();
}

async function join(identity, name) {
  const res = await postWebhook(server.url, participantJoined({ identity, name, joinedAtMs: Date.now() - 3000 }));
  assert.equal(res.status, 200, res.text);
}

async function attendance(of = server) {
  const res = await fetch(`${of.url}/api/sessions/${ROOM}/attendance`, {
    headers: { Authorization: `Bearer ${APP.secret}` },
  });
  assert.equal(res.status, 200);
  const roster = await res.json();
  return Object.fromEntries(roster.participants.map((p) => [p.identity, p]));
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * A fresh browser context (its own preflight cache) with the meeting page
 * open, recording every fetch, page error, unhandled rejection and warning.
 */
async function openMeetingPage(rollcallUrl = server.url) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const problems = [];
  const warnings = [];
  page.on('pageerror', (err) => problems.push(`pageerror: ${err.message}`));
  page.on('console', (msg) => msg.type() === 'warning' && warnings.push(msg.text()));
  await page.addInitScript(() => {
    window.__requests = [];
    window.__rejections = [];
    window.addEventListener('unhandledrejection', (e) => window.__rejections.push(String(e.reason)));
    const original = window.fetch;
    window.fetch = function (input, init) {
      const auth = (init && init.headers && init.headers.Authorization) || '';
      const keepalive = Boolean(init && init.keepalive);
      const record = { url: String(input), at: Date.now(), who: auth.slice(-12), keepalive, status: null, body: null };
      window.__requests.push(record);
      return original.apply(this, arguments).then(
        (response) => {
          record.status = response.status;
          response.clone().json().then((b) => (record.body = b), () => {});
          return response;
        },
        (err) => {
          record.status = 'network-error';
          throw err;
        },
      );
    };
    // What livekit-client's Room does on a connection change, on the real Room.
    window.goTo = (room, state, event) => {
      room.state = state;
      room.emit('connectionStateChanged', state);
      room.emit(event);
    };
  });
  await page.goto(`${pages.url}/?rollcall=${encodeURIComponent(rollcallUrl)}`);
  assert.equal(await page.evaluate(() => typeof LivekitClient.Room), 'function', 'livekit-client loaded');
  assert.equal(await page.evaluate(() => typeof RollcallHeartbeat.start), 'function', 'heartbeat script loaded');
  assert.notEqual(new URL(pages.url).origin, new URL(rollcallUrl).origin, 'the page is another origin');

  const requests = (who) =>
    page.evaluate((w) => window.__requests.filter((r) => !w || r.who === w), who ?? null);
  const finish = async () => {
    const rejections = await page.evaluate(() => window.__rejections);
    await context.close();
    assert.deepEqual([...problems, ...rejections], [], 'no page errors, no unhandled rejections');
  };
  return { page, requests, warnings, finish };
}

/** In the page: a real Room, connected, with a heartbeat started on it. */
async function startBeating(page, name, { token, url, ...options }) {
  await page.evaluate(
    ([name, token, url, options]) => {
      const room = new LivekitClient.Room();
      const handle = RollcallHeartbeat.start({ url, room, token: () => token, ...options });
      window[name] = { room, handle };
      goTo(room, 'connected', 'connected');
    },
    [name, token, url, options],
  );
}

test('heartbeats while connected, pauses on reconnecting, stops on disconnect; a silent page is closed heartbeat_timeout', async () => {
  const { page, requests, warnings, finish } = await openMeetingPage();
  await join('1_Ameer_Maher', 'Ameer Maher');
  await join('2_Sara_Ali', 'Sara Ali');
  const tokenA = await participantToken('1_Ameer_Maher');
  const tokenB = await participantToken('2_Sara_Ali');
  const A = tokenA.slice(-12);
  const B = tokenB.slice(-12);

  const connectedAt = Date.now();
  await startBeating(page, 'a', { token: tokenA, url: server.url, interval: 300 });
  await startBeating(page, 'b', { token: tokenB, url: server.url, interval: 300 });

  // One at once on connect, then every 300 ms; the server says they are in.
  await page.waitForFunction(() => window.__requests.filter((r) => r.status === 200).length >= 4, null, { timeout: 5000 });
  const first = (await requests(A))[0];
  assert.ok(first.at - connectedAt < 500, `first heartbeat ${first.at - connectedAt} ms after connect`);
  await sleep(100); // the recorder reads bodies asynchronously
  for (const r of await requests()) {
    assert.equal(r.url, `${server.url}/api/heartbeat`);
    assert.equal(r.status, 200);
    assert.equal(r.keepalive, true, 'keepalive works with the preflight');
    assert.deepEqual(r.body, { in_meeting: true });
  }

  // Sara's page loses the room (and LiveKit's participant_left is lost).
  await page.evaluate(() => goTo(b.room, 'disconnected', 'disconnected'));
  const disconnectedAt = Date.now();
  assert.equal(await page.evaluate(() => b.handle.state), 'paused');

  // Past the timeout (+ sweeps): Sara is closed at her last heartbeat,
  // Ameer, still heartbeating, is in.
  await sleep(HEARTBEAT_TIMEOUT_MS + 1000);
  const people = await attendance();
  const sara = people['2_Sara_Ali'];
  const ameer = people['1_Ameer_Maher'];
  assert.equal(sara.is_currently_in_meeting, false, JSON.stringify(sara));
  assert.equal(sara.cycles.at(-1).closed_by, 'heartbeat_timeout');
  const lastB = (await requests(B)).at(-1);
  assert.ok(lastB.at <= disconnectedAt, 'no heartbeat after the disconnect');
  assert.ok(Math.abs(Date.parse(sara.cycles.at(-1).left_at) - lastB.at) < 300, 'closed at the last heartbeat');
  assert.equal(ameer.is_currently_in_meeting, true, JSON.stringify(ameer));
  assert.equal(ameer.cycles.at(-1).left_at, null);
  const beatsA = (await requests(A)).filter((r) => r.at > disconnectedAt).length;
  assert.ok(beatsA >= 5, `Ameer kept heartbeating (${beatsA} since)`);

  // Ameer's room reconnects: no heartbeats while reconnecting, one at once after.
  await page.evaluate(() => goTo(a.room, 'reconnecting', 'reconnecting'));
  await sleep(50);
  const pausedCount = (await requests(A)).length;
  await sleep(800);
  assert.equal((await requests(A)).length, pausedCount, 'paused while reconnecting');
  const reconnectedAt = Date.now();
  await page.evaluate(() => goTo(a.room, 'connected', 'reconnected'));
  await page.waitForFunction((n) => window.__requests.length > n, (await requests()).length, { timeout: 2000 });
  const resumed = (await requests(A)).find((r) => r.at >= reconnectedAt);
  assert.ok(resumed.at - reconnectedAt < 200, `resumed ${resumed.at - reconnectedAt} ms after reconnect`);

  // stop() ends it for good; so does the room going away.
  await page.evaluate(() => a.handle.stop());
  await sleep(100);
  const stoppedCount = (await requests()).length;
  await page.evaluate(() => goTo(a.room, 'connected', 'reconnected'));
  await sleep(700);
  assert.equal((await requests()).length, stoppedCount, 'nothing after stop()');
  assert.equal(await page.evaluate(() => a.handle.state), 'stopped');
  assert.deepEqual(warnings, []);
  await finish();
});

test('401 (expired token) and 403 (a token for no room) stop it for good after one request, with one warning each', async () => {
  const { page, requests, warnings, finish } = await openMeetingPage();
  const expired = await participantToken('1_Ameer_Maher', { ttl: '-2m' });
  const noRoom = await participantToken('2_Sara_Ali', { roomJoin: false });
  await startBeating(page, 'c', { token: expired, url: server.url, interval: 100, backoffBase: 100 });
  await startBeating(page, 'd', { token: noRoom, url: server.url, interval: 100, backoffBase: 100 });
  await sleep(1000);
  // Reconnects do not restart a heartbeat rollcall refused.
  await page.evaluate(() => {
    for (const x of [c, d]) {
      goTo(x.room, 'reconnecting', 'reconnecting');
      goTo(x.room, 'connected', 'reconnected');
    }
  });
  await sleep(500);
  assert.deepEqual(
    (await requests(expired.slice(-12))).map((r) => r.status),
    [401],
  );
  assert.deepEqual(
    (await requests(noRoom.slice(-12))).map((r) => r.status),
    [403],
  );
  assert.deepEqual(await page.evaluate(() => [c.handle.state, d.handle.state]), ['stopped', 'stopped']);
  assert.equal(warnings.length, 2, warnings.join('\n'));
  assert.match(warnings.join('\n'), /401/);
  assert.match(warnings.join('\n'), /403/);
  await finish();
});

test('a 401 for a token the page has since refreshed is retried with the new one', async () => {
  const { page, requests, warnings, finish } = await openMeetingPage();
  const expired = await participantToken('4_Huda_Nasser', { ttl: '-2m' });
  const fresh = await participantToken('4_Huda_Nasser');
  await page.evaluate(
    ([url, expired, fresh]) => {
      const room = new LivekitClient.Room();
      let calls = 0;
      // The page's token source: the old token once, then the refreshed one.
      const token = () => (calls++ === 0 ? expired : fresh);
      window.h = { room, handle: RollcallHeartbeat.start({ url, room, token, interval: 200 }) };
      goTo(room, 'connected', 'connected');
    },
    [server.url, expired, fresh],
  );
  await page.waitForFunction(() => window.__requests.filter((r) => r.status === 200).length >= 2, null, { timeout: 5000 });
  await page.evaluate(() => h.handle.stop());
  const statuses = (await requests()).map((r) => r.status);
  assert.deepEqual(statuses.slice(0, 3), [401, 200, 200], statuses.join(','));
  assert.deepEqual(warnings, []);
  await finish();
});

test('network errors back off exponentially instead of hammering', async () => {
  const closed = `http://127.0.0.1:${await freePort()}`; // nothing listens there
  const { page, requests, finish } = await openMeetingPage();
  const token = await participantToken('1_Ameer_Maher');
  await startBeating(page, 'e', { token, url: closed, interval: 100, backoffBase: 100, maxBackoff: 800 });
  await sleep(3000);
  await page.evaluate(() => e.handle.stop());
  const attempts = await requests();
  assert.ok(attempts.every((r) => r.status === 'network-error'), JSON.stringify(attempts));
  // Without backoff: ~30 attempts. With it (jittered to 50–100 % of
  // 100, 200, 400, 800, 800, ... ms): at most ~10.
  assert.ok(attempts.length >= 3 && attempts.length <= 11, `${attempts.length} attempts`);
  attempts.slice(1).forEach((r, i) => {
    const gap = r.at - attempts[i].at;
    const floor = Math.min(800, 100 * 2 ** i) / 2;
    assert.ok(gap >= floor - 20, `attempt ${i + 2} came ${gap} ms after the previous (at least ${floor} expected)`);
  });
  await finish();
});

test('5xx backs off exponentially, then heartbeats resume at the normal pace', async () => {
  await join('3_Omar_Said', 'Omar Said');
  const token = await participantToken('3_Omar_Said');
  faulty.failures = 4;
  const { page, requests, finish } = await openMeetingPage(faulty.url);
  await startBeating(page, 'f', { token, url: faulty.url, interval: 200, backoffBase: 200, maxBackoff: 1600 });
  await page.waitForFunction(() => window.__requests.filter((r) => r.status === 200).length >= 4, null, { timeout: 8000 });
  await page.evaluate(() => f.handle.stop());
  await sleep(100);
  const attempts = await requests();
  assert.deepEqual(
    attempts.slice(0, 5).map((r) => r.status),
    [503, 503, 503, 503, 200],
  );
  const gaps = attempts.slice(1).map((r, i) => r.at - attempts[i].at);
  // After the n-th 503: 50–100 % of 200 · 2^(n-1) ms.
  gaps.slice(0, 4).forEach((gap, i) => {
    const floor = (200 * 2 ** i) / 2;
    assert.ok(gap >= floor - 20, `retry ${i + 1} after ${gap} ms (at least ${floor})`);
  });
  // Recovered: the real server hears it (in_meeting), every 200 ms again.
  assert.deepEqual(attempts[4].body, { in_meeting: true });
  for (const gap of gaps.slice(4)) assert.ok(gap >= 180 && gap < 400, `normal pace, got ${gap} ms`);
  await finish();
});

test('429 from rollcall: the next heartbeat waits for Retry-After', async () => {
  const token = await participantToken('1_Ameer_Maher');
  const { page, requests, finish } = await openMeetingPage(limited.url);
  // Every 100 ms would be 20 times the server's allowance of one per 2 s.
  await startBeating(page, 'g', { token, url: limited.url, interval: 100, backoffBase: 100 });
  await sleep(4500);
  await page.evaluate(() => g.handle.stop());
  const attempts = await requests();
  const statuses = attempts.map((r) => r.status);
  assert.deepEqual(statuses.slice(0, 3), [200, 429, 200], statuses.join(','));
  attempts.forEach((r, i) => {
    if (r.status === 429 && attempts[i + 1]) {
      const waited = attempts[i + 1].at - r.at;
      assert.ok(waited >= 1900, `waited ${waited} ms after a 429 with Retry-After: 2`);
    }
  });
  assert.ok(attempts.length <= 6, `${attempts.length} attempts in 4.5 s`);
  await finish();
});

test('the script also loads as a cross-origin ES module import', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (err) => problems.push(err.message));
  await page.goto(`${pages.url}/?rollcall=${encodeURIComponent(server.url)}`);
  const kind = await page.evaluate(async (url) => {
    delete globalThis.RollcallHeartbeat;
    await import(`${url}/rollcall-heartbeat.js?as-module`);
    return typeof globalThis.RollcallHeartbeat.start;
  }, server.url);
  assert.equal(kind, 'function');
  // A bad call warns and returns an inert handle instead of throwing.
  const state = await page.evaluate(() => RollcallHeartbeat.start({}).state);
  assert.equal(state, 'stopped');
  await context.close();
  assert.deepEqual(problems, []);
});
