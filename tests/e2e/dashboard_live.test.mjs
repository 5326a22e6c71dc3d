// The dashboard through a real schedule, in Debian's Chromium: rule 28
// second by second (preparation shows 0:00:00, then time and percentage
// tick with no event; no one in the meeting is ever shown absent; the final
// mark comes with the verdict), phone width, Arabic right to left, stale
// rows while disconnected, and viewer links (private channel, session
// list, CSV). Screenshots go to tests/e2e/artifacts/ for a human to look at.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { APP, participantJoined, participantLeft, postWebhook, repoRoot, startServer } from './harness.mjs';

const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const artifacts = path.join(path.dirname(fileURLToPath(import.meta.url)), 'artifacts');
const BIN = process.env.ROLLCALL_BIN ? path.resolve(process.env.ROLLCALL_BIN) : path.join(repoRoot, 'target/debug/rollcall');
const DESKTOP = { width: 1280, height: 720 };
const PHONE = { width: 390, height: 844 };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Finalization a second after the window ends, found within a second.
// Late after a 2 s grace, so a test can see lateness appear.
const FAST = { ROLLCALL_FINALIZE_DELAY: '1s', ROLLCALL_SWEEP_INTERVAL: '1s', ROLLCALL_LATE_GRACE: '2s' };

let server;
let browser;

before(async () => {
  await mkdir(artifacts, { recursive: true });
  server = await startServer(FAST);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
  });
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

async function deliver(srv, body) {
  const res = await postWebhook(srv.url, body);
  assert.equal(res.status, 200, `webhook answered ${res.status}: ${res.text}`);
}

async function putSchedule(srv, room, schedule) {
  const res = await fetch(`${srv.url}/api/sessions/${room}/schedule`, {
    method: 'PUT',
    headers: { Authorization: `Bearer ${APP.secret}`, 'Content-Type': 'application/json' },
    body: JSON.stringify(schedule),
  });
  assert.equal(res.status, 200, await res.text());
}

/** A page that fails the test on any script error. */
async function open(url, viewport = DESKTOP, options = {}) {
  const context = await browser.newContext({ viewport, ...options });
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (err) => problems.push(err.message));
  page.on('console', (msg) => msg.type() === 'error' && problems.push(msg.text()));
  await page.goto(url);
  return { page, problems, close: () => context.close() };
}

const row = (page, identity) => page.locator(`tr[data-identity="${identity}"]`);
const seconds = (text) => text.split(':').reduce((acc, part) => acc * 60 + Number(part), 0);

async function readRow(page, identity) {
  return row(page, identity).evaluate((tr) => ({
    duration: tr.querySelector('.duration').textContent,
    pct: tr.querySelector('.percentage').textContent,
    verdict: tr.querySelector('.verdict').textContent,
    kind: tr.querySelector('.verdict').dataset.kind,
    classes: tr.querySelector('.verdict').className,
    inMeeting: tr.dataset.inMeeting,
    stale: tr.classList.contains('stale'),
  }));
}

async function noHorizontalScroll(page) {
  const [scroll, inner] = await page.evaluate(() => [document.documentElement.scrollWidth, innerWidth]);
  assert.ok(scroll <= inner, `page is ${scroll} px wide in a ${inner} px viewport`);
}

test('rule 28 through a real schedule: preparation, ticking, never absent in the meeting', async () => {
  const room = 'itqan-academy-quran-session-301';
  const startsAt = Date.now() + 6000;
  await putSchedule(server, room, {
    starts_at: new Date(startsAt).toISOString(),
    duration_minutes: 1,
    expected: ['1_Ameer_Maher', '2_Sara_Ali', '3_Omar_Khalid'],
  });
  // In preparation time, before the window.
  await deliver(server, participantJoined({ room, identity: '1_Ameer_Maher', name: 'Ameer Maher', joinedAtMs: Date.now() - 500 }));
  const { page, problems, close } = await open(`${server.url}/?channel=session.301`);
  await page.locator('#conn[data-state="live"]').waitFor({ timeout: 5000 });
  await row(page, '1_Ameer_Maher').waitFor({ timeout: 5000 });
  assert.equal(await page.locator('#phase').getAttribute('data-phase'), 'preparation');
  assert.match(await page.locator('#phase-detail').textContent(), /^starts in 0:00:0\d$/);
  // The expected absentee who never came has a name from the identity.
  assert.equal(await row(page, '3_Omar_Khalid').locator('.name').textContent(), 'Omar Khalid');

  const samples = [];
  while (Date.now() < startsAt + 4500) {
    samples.push({ t: Date.now(), ...(await readRow(page, '1_Ameer_Maher')) });
    await sleep(250);
  }
  for (const s of samples) {
    // Give the page 400 ms either side of the start for clocks and rendering.
    if (s.t < startsAt - 400) {
      assert.equal(s.duration, '0:00:00', 'preparation does not count');
      assert.equal(s.kind, 'not_started');
    }
    // Second by second: the time since the start (he joined before it),
    // within a second either way for rendering and the two clocks.
    const expected = Math.max(0, (s.t - startsAt) / 1000);
    assert.ok(Math.abs(seconds(s.duration) - expected) <= 1.2, `${s.duration} at ${expected.toFixed(1)} s`);
    assert.equal(s.inMeeting, 'true');
    assert.ok(!/absent/.test(s.verdict) && !/\babsent\b/.test(s.classes), `in the meeting, shown ${s.verdict}`);
  }
  const last = samples.at(-1);
  assert.ok(seconds(last.duration) >= 3, `ticked to ${last.duration} 4.5 s after the start`);
  assert.ok(seconds(last.duration) <= 5, `ticked to ${last.duration}: more than the window allows`);
  // The percentage rose between events (none was sent).
  const pcts = samples.filter((s) => s.t > startsAt + 500).map((s) => parseFloat(s.pct));
  assert.ok(pcts.at(-1) > pcts[0], `percentage ${pcts[0]} → ${pcts.at(-1)}`);
  assert.ok(pcts.every((p, i) => i === 0 || p >= pcts[i - 1]), 'never falls');
  assert.match(last.verdict, /can still be present|so far/);
  assert.equal(await page.locator('#phase').getAttribute('data-phase'), 'in_session');
  // Someone who never came is absent so far: that is the truth.
  assert.match((await readRow(page, '2_Sara_Ali')).verdict, /absent so far/);
  // A second person arrives mid-session and ticks from their join.
  await deliver(server, participantJoined({ room, identity: '2_Sara_Ali', name: 'Sara Ali', joinedAtMs: Date.now() }));
  await page.locator('tr[data-identity="2_Sara_Ali"][data-status="joined"]').waitFor({ timeout: 5000 });
  await sleep(1200);
  const sara = await readRow(page, '2_Sara_Ali');
  assert.ok(seconds(sara.duration) >= 1, JSON.stringify(sara));
  // Joined past start + grace: lateness shows once known; Ameer is on time.
  assert.equal(await row(page, '2_Sara_Ali').locator('.late-badge').textContent(), 'joined late');
  assert.equal(await row(page, '1_Ameer_Maher').locator('.late-badge').count(), 0);
  await page.screenshot({ path: path.join(artifacts, 'dashboard-desktop.png'), fullPage: true });
  await noHorizontalScroll(page);

  // A phone: one card per person, name, status, time and verdict on screen.
  const phone = await open(`${server.url}/?channel=session.301`, PHONE, { isMobile: true, hasTouch: true });
  await row(phone.page, '1_Ameer_Maher').waitFor({ timeout: 5000 });
  await noHorizontalScroll(phone.page);
  for (const cls of ['name', 'status', 'duration', 'verdict', 'percentage']) {
    const box = await row(phone.page, '1_Ameer_Maher').locator(`.${cls}`).boundingBox();
    assert.ok(box && box.width > 0 && box.x >= 0 && box.x + box.width <= PHONE.width + 0.5, `.${cls} fits: ${JSON.stringify(box)}`);
  }
  await phone.page.screenshot({ path: path.join(artifacts, 'dashboard-phone.png'), fullPage: true });

  // Arabic, right to left, on a phone.
  const ar = await open(`${server.url}/?channel=session.301&lang=ar`, PHONE, { isMobile: true });
  await row(ar.page, '1_Ameer_Maher').waitFor({ timeout: 5000 });
  assert.deepEqual(await ar.page.evaluate(() => [document.documentElement.dir, document.documentElement.lang]), ['rtl', 'ar']);
  assert.equal(await ar.page.locator('#conn').textContent(), 'مباشر');
  assert.equal(await ar.page.locator('th[data-i18n="col_name"]').textContent(), 'الاسم');
  await noHorizontalScroll(ar.page);
  await ar.page.screenshot({ path: path.join(artifacts, 'dashboard-phone-ar.png'), fullPage: true });

  assert.deepEqual([...problems, ...phone.problems, ...ar.problems], []);
  await Promise.all([close(), phone.close(), ar.close()]);
});

test('the final mark appears with the verdict once the session is finalized', async () => {
  const room = 'itqan-academy-quran-session-302';
  const now = Date.now();
  // A one-minute window that ended 8 s ago; finalized a second after.
  await putSchedule(server, room, { starts_at: new Date(now - 68_000).toISOString(), duration_minutes: 1 });
  const { page, problems, close } = await open(`${server.url}/?channel=session.302`);
  await page.locator('#conn[data-state="live"]').waitFor({ timeout: 5000 });
  const sid = 'PA_final1';
  await deliver(server, participantJoined({ room, sid, identity: '5_Huda_Nasser', name: 'Huda Nasser', joinedAtMs: now - 66_000, createdAt: Math.floor((now - 66_000) / 1000) }));
  await deliver(server, participantLeft({ room, sid, identity: '5_Huda_Nasser', name: 'Huda Nasser', joinedAtMs: now - 66_000, createdAt: Math.floor((now - 14_000) / 1000) }));
  await page.locator('tr[data-identity="5_Huda_Nasser"] .verdict[data-kind="final"]').waitFor({ timeout: 10_000 });
  const r = await readRow(page, '5_Huda_Nasser');
  assert.match(r.verdict, /^present✓ final$/);
  assert.match(r.pct, /^(8\d|9\d)\.\d %$/);
  await page.locator('#phase[data-phase="final"]').waitFor({ timeout: 5000 });
  // The revision is not on updates: the page fetches a fresh snapshot.
  await page.waitForFunction(() => document.getElementById('phase-detail').textContent === 'revision 1', null, { timeout: 5000 });
  await page.screenshot({ path: path.join(artifacts, 'dashboard-final.png'), fullPage: true });
  assert.deepEqual(problems, []);
  await close();
});

test('while disconnected rows stop ticking and are marked stale; the retry countdown counts', async () => {
  const srv = await startServer();
  const room = 'itqan-academy-quran-session-303';
  await deliver(srv, participantJoined({ room, identity: '7_Yusuf_Amin', name: 'Yusuf Amin' }));
  const { page, close } = await open(`${srv.url}/?channel=session.303`);
  await page.locator('tr[data-identity="7_Yusuf_Amin"][data-status="joined"]').waitFor({ timeout: 5000 });
  const { port } = srv;
  assert.equal(await srv.stop(), 0);
  await page.locator('tr[data-identity="7_Yusuf_Amin"].stale').waitFor({ timeout: 5000 });
  assert.equal(await page.locator('#stale').isVisible(), true);
  const frozen = (await readRow(page, '7_Yusuf_Amin')).duration;
  // Waiting for a backoff of a few seconds: the text counts down.
  await page.locator('#conn[data-state="waiting"]').waitFor({ timeout: 5000 });
  const texts = new Set();
  for (let i = 0; i < 8; i++) {
    texts.add(await page.locator('#conn').textContent());
    await sleep(400);
  }
  assert.equal((await readRow(page, '7_Yusuf_Amin')).duration, frozen, 'stale rows do not tick');
  assert.ok([...texts].some((t) => /Retrying in \d+ s/.test(t)), [...texts].join(' | '));
  assert.ok(texts.size >= 2, `the countdown counts: ${[...texts].join(' | ')}`);
  await page.screenshot({ path: path.join(artifacts, 'dashboard-stale.png'), fullPage: true });
  const again = await startServer({}, { port });
  await page.locator('#conn[data-state="live"]').waitFor({ timeout: 40_000 });
  // The memory store started empty: the snapshot replaced the stale rows.
  await deliver(again, participantJoined({ room, identity: '7_Yusuf_Amin', name: 'Yusuf Amin' }));
  await page.locator('tr[data-identity="7_Yusuf_Amin"]:not(.stale)').waitFor({ timeout: 5000 });
  assert.equal(await page.locator('#stale').isVisible(), false);
  await close();
  await again.stop();
});

async function link(srv, args) {
  const { stdout } = await promisify(execFile)(BIN, ['link', '--url', srv.url, ...args], {
    env: { ...process.env, ROLLCALL_APP_SECRET: APP.secret },
  });
  return stdout.trim();
}

test('a viewer link opens a private channel, lists sessions, searches and exports CSV', async () => {
  const srv = await startServer({ ROLLCALL_CHANNEL_TEMPLATE: 'private-session.{type}.{id}' });
  const room = 'itqan-academy-quran-session-304';
  for (const [identity, name] of [['1_Ameer_Maher', 'Ameer Maher'], ['2_Sara_Ali', 'Sara Ali']]) {
    await deliver(srv, participantJoined({ room, identity, name }));
  }
  // Without a link, the page says why it cannot show a private channel.
  const bare = await open(`${srv.url}/?channel=private-session.quran.304`);
  await bare.page.locator('#conn[data-state="stopped"]').waitFor({ timeout: 5000 });
  assert.match(await bare.page.locator('#conn').textContent(), /private/);
  await bare.close();

  const { page, problems, close } = await open(await link(srv, ['--room', room]), DESKTOP, { acceptDownloads: true });
  await page.locator('#conn[data-state="live"]').waitFor({ timeout: 5000 });
  await row(page, '2_Sara_Ali').waitFor({ timeout: 5000 });
  await page.locator('#search').fill('sara');
  await page.waitForFunction(() => document.querySelectorAll('tr[data-identity]').length === 1, null, { timeout: 3000 });
  assert.equal(await row(page, '2_Sara_Ali').count(), 1);
  await page.locator('#search').fill('');
  const [download] = await Promise.all([page.waitForEvent('download'), page.locator('#csv').click()]);
  const csv = await readFile(await download.path(), 'utf8');
  assert.equal(csv.split('\n')[0], 'identity,user_id,name,first_join_time,last_leave_time,duration_seconds,duration_minutes,attendance_percentage,attendance_status,is_late,join_count');
  assert.equal(csv.trim().split('\n').length, 3);
  assert.equal(download.suggestedFilename(), `attendance-${room}.csv`);

  // The admin link lists sessions; a click opens one.
  const start = await open(await link(srv, ['--all']));
  const entry = start.page.locator(`li[data-room="${room}"] a`);
  await entry.waitFor({ timeout: 5000 });
  await start.page.screenshot({ path: path.join(artifacts, 'start-page.png'), fullPage: true });
  await entry.click();
  await start.page.locator('#conn[data-state="live"]').waitFor({ timeout: 5000 });
  await row(start.page, '1_Ameer_Maher').waitFor({ timeout: 5000 });
  assert.deepEqual([...problems, ...start.problems], []);
  await Promise.all([close(), start.close()]);
  await srv.stop();
});
