// The dashboard at `GET /` in a real browser (Debian's chromium through
// playwright-core): rows appear and change as webhooks arrive.

import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { participantJoined, participantLeft, postWebhook, startServer } from './harness.mjs';

const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const artifacts = path.join(path.dirname(fileURLToPath(import.meta.url)), 'artifacts');

let server;
let profile;
let context;

before(async () => {
  server = await startServer();
  profile = await mkdtemp(path.join(tmpdir(), 'rollcall-chromium-'));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1180, height: 420 },
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
});

after(async () => {
  await context?.close();
  if (profile) await rm(profile, { recursive: true, force: true });
  await server?.stop();
});

async function deliver(body) {
  const res = await postWebhook(server.url, body);
  assert.equal(res.status, 200, `webhook answered ${res.status}: ${res.text}`);
}

test('dashboard shows a join live, ticks, then shows the leave and its duration', async () => {
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (err) => problems.push(err.message));
  page.on('console', (msg) => msg.type() === 'error' && problems.push(msg.text()));

  await page.goto(`${server.url}/?session=121`);
  await page.locator('#conn[data-state="live"]').waitFor({ timeout: 5000 });
  assert.equal(await page.locator('#conn').textContent(), 'Live');

  const joinedSec = Math.floor(Date.now() / 1000) - 65;
  const ameer = { sid: 'PA_eU7nwP2s3FcN', identity: '1_Ameer_Maher', name: 'Ameer Maher', joinedAtMs: joinedSec * 1000 + 456 };
  await deliver(participantJoined(ameer));

  const row = page.locator('tr[data-identity="1_Ameer_Maher"]');
  await page.locator('tr[data-identity="1_Ameer_Maher"][data-status="joined"]').waitFor({ timeout: 5000 });
  assert.equal(await row.locator('.name').textContent(), 'Ameer Maher');
  assert.equal(await row.locator('.status').textContent(), 'joined');
  assert.equal(await row.locator('.joins').textContent(), '1');

  // The time attended ticks forward on its own (about 65 s in so far).
  const shown = await row.locator('.duration').textContent();
  assert.match(shown, /^0:01:0\d$/);
  await page.waitForFunction(
    ([sel, text]) => document.querySelector(sel)?.textContent !== text,
    ['tr[data-identity="1_Ameer_Maher"] .duration', shown],
    { timeout: 3000 },
  );

  // Someone else stays in the meeting, for the picture.
  await deliver(participantJoined({ sid: 'PA_Sara0000000', identity: '2_Sara_Ali', name: 'Sara Ali', joinedAtMs: Date.now() - 754_000 }));
  await page.locator('tr[data-identity="2_Sara_Ali"]').waitFor({ timeout: 5000 });

  await deliver(participantLeft({ ...ameer, createdAt: joinedSec + 59 }));
  await page.locator('tr[data-identity="1_Ameer_Maher"][data-status="left"]').waitFor({ timeout: 5000 });
  assert.equal(await row.locator('.status').textContent(), 'left');
  assert.equal(await row.locator('.duration').textContent(), '0:00:58');
  assert.notEqual(await row.locator('td').nth(6).textContent(), '', 'last leave is shown');
  assert.equal(await row.locator('.verdict').textContent(), '', 'no verdict without a schedule');
  assert.equal(await row.locator('.percentage').textContent(), '');

  await mkdir(artifacts, { recursive: true });
  await page.screenshot({ path: path.join(artifacts, 'dashboard.png'), fullPage: true });

  // A fresh page load is current at once from the snapshot.
  const second = await context.newPage();
  await second.goto(`${server.url}/?channel=session.121&key=rollcall-key`);
  const again = second.locator('tr[data-identity="1_Ameer_Maher"][data-status="left"]');
  await again.waitFor({ timeout: 5000 });
  assert.equal(await again.locator('.duration').textContent(), '0:00:58');
  await second.locator('tr[data-identity="2_Sara_Ali"][data-status="joined"]').waitFor({ timeout: 5000 });

  assert.deepEqual(problems, []);
});

test('dashboard reconnects and resubscribes after the server restarts', async () => {
  const page = await context.newPage();
  await page.goto(`${server.url}/?channel=session.121`);
  await page.locator('#conn[data-state="live"]').waitFor({ timeout: 5000 });

  // A graceful shutdown exits 0 and closes sockets with 4200 ("reconnect").
  const closed = page.waitForEvent('console', {
    predicate: (msg) => msg.text().startsWith('rollcall: socket closed'),
    timeout: 15_000, // outlasts stop()'s own guard, so it never rejects unawaited
  });
  const { port } = server;
  assert.equal(await server.stop(), 0);
  assert.match((await closed).text(), /\(4200\b/);
  await page.locator('#conn:not([data-state="live"])').waitFor({ timeout: 5000 });
  server = await startServer({}, { port });
  await page.locator('#conn[data-state="live"]').waitFor({ timeout: 10_000 });

  await deliver(participantJoined({ identity: '3_Omar_Said', name: 'Omar Said' }));
  await page.locator('tr[data-identity="3_Omar_Said"][data-status="joined"]').waitFor({ timeout: 5000 });
});

test('dashboard shows a room whose snapshot spans several WebSocket fragments', async () => {
  // Over 8 KiB, the server sends a fragmented message; Chromium reassembles it.
  const room = 'itqan-academy-quran-session-123';
  const people = 40;
  for (let i = 0; i < people; i++) {
    await deliver(participantJoined({ room, identity: `${200 + i}_Student_Number_${i}`, name: `Student ${i}` }));
  }
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (err) => problems.push(err.message));
  await page.goto(`${server.url}/?channel=session.123`);
  await page.locator(`tr[data-identity="${200 + people - 1}_Student_Number_${people - 1}"]`).waitFor({ timeout: 5000 });
  assert.equal(await page.locator('tr[data-identity]').count(), people);
  assert.deepEqual(problems, []);
});
