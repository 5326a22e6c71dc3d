// The live attendance dashboard: a plain WebSocket speaking just enough of the
// Pusher protocol v7 to subscribe to one public channel and render its
// `attendance.snapshot` / `attendance.updated` events. No build, no CDN.
//
// Query string: `channel` (e.g. `session.121`, or `session=121` for short)
// and `key` (the Pusher app key, default `rollcall-key`).
'use strict';

const params = new URLSearchParams(location.search);
const appKey = params.get('key') || 'rollcall-key';
const channel = params.get('channel') || (params.get('session') ? `session.${params.get('session')}` : '');

const $ = (id) => document.getElementById(id);
const tbody = $('roster').tBodies[0];

/** identity → {a: attendance, at: local ms when `a.duration_ms` was true}. */
const people = new Map();
let roomName = '';

// ---------------------------------------------------------------- connection

const PONG_TIMEOUT_MS = 30_000;
const MAX_BACKOFF_MS = 30_000;

let socket = null;
let attempt = 0; // failed connections in a row, for the backoff
let activityMs = 120_000; // the server's activity_timeout, once known
let idleTimer = 0;

function setState(state, text) {
  const el = $('conn');
  el.dataset.state = state;
  el.textContent = text;
}

function connect() {
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const url = `${scheme}://${location.host}/app/${encodeURIComponent(appKey)}` +
    '?protocol=7&client=rollcall-dashboard&version=1';
  setState('connecting', attempt ? 'Reconnecting…' : 'Connecting…');
  const ws = new WebSocket(url);
  socket = ws;
  ws.onmessage = (msg) => {
    resetIdle();
    let frame;
    try {
      frame = JSON.parse(msg.data);
    } catch {
      return;
    }
    // Server frames carry `data` as a JSON string; tolerate an object too.
    let data = frame.data;
    if (typeof data === 'string') {
      try { data = JSON.parse(data); } catch { /* leave it a string */ }
    }
    onFrame(ws, frame.event, frame.channel, data);
  };
  ws.onclose = (ev) => {
    clearTimeout(idleTimer);
    if (socket !== ws) return;
    socket = null;
    console.info(`rollcall: socket closed (${ev.code}${ev.reason ? ` ${ev.reason}` : ''})`);
    // Pusher close codes: 4000–4099 and 4300–4399 mean "don't come back",
    // 4200–4299 "come back at once", anything else: back off and retry.
    if ((ev.code >= 4000 && ev.code < 4100) || (ev.code >= 4300 && ev.code < 4400)) {
      setState('stopped', `Disconnected: ${ev.reason || 'refused by the server'} (${ev.code}). Not retrying.`);
      return;
    }
    const delay = ev.code >= 4200 && ev.code < 4300
      ? 0
      : Math.min(MAX_BACKOFF_MS, 1000 * 2 ** attempt) * (0.75 + Math.random() / 2);
    attempt += 1;
    setState('waiting', `Connection lost. Retrying in ${Math.round(delay / 1000)} s…`);
    setTimeout(connect, delay);
  };
}

function send(ws, event, data) {
  if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ event, data }));
}

/** After `activity_timeout` of silence ping; if still silent, drop and reconnect. */
function resetIdle() {
  clearTimeout(idleTimer);
  idleTimer = setTimeout(() => {
    const ws = socket;
    if (!ws) return;
    send(ws, 'pusher:ping', {});
    idleTimer = setTimeout(() => ws.close(), PONG_TIMEOUT_MS);
  }, activityMs);
}

function onFrame(ws, event, chan, data) {
  switch (event) {
    case 'pusher:connection_established':
      if (data && data.activity_timeout > 0) activityMs = data.activity_timeout * 1000;
      resetIdle();
      setState('connecting', 'Subscribing…');
      send(ws, 'pusher:subscribe', { channel });
      break;
    case 'pusher_internal:subscription_succeeded':
      if (chan !== channel) break;
      attempt = 0;
      setState('live', 'Live');
      break;
    case 'pusher:ping':
      send(ws, 'pusher:pong', {});
      break;
    case 'pusher:error':
      setState('error', `Server error: ${(data && data.message) || 'unknown'}${data && data.code ? ` (${data.code})` : ''}`);
      break;
    case 'attendance.snapshot':
      if (chan !== channel || !data) break;
      people.clear();
      for (const a of data.participants || []) people.set(a.identity, { a, at: Date.now() });
      roomName = data.room || roomName;
      render();
      break;
    case 'attendance.updated':
      if (chan !== channel || !data || !data.attendance) break;
      people.set(data.attendance.identity, { a: data.attendance, at: Date.now() });
      roomName = data.attendance.room || roomName;
      render();
      break;
  }
}

// ---------------------------------------------------------------- rendering

/** Attended ms now: the server's exact figure, ticked forward on our own clock
 *  while in the meeting (measured from receipt, so clock skew doesn't matter). */
function attendedMs({ a, at }) {
  return a.duration_ms + (a.is_currently_in_meeting ? Date.now() - at : 0);
}

function hms(ms) {
  const s = Math.floor(Math.max(0, ms) / 1000);
  const mm = String(Math.floor(s / 60) % 60).padStart(2, '0');
  const ss = String(s % 60).padStart(2, '0');
  return `${Math.floor(s / 3600)}:${mm}:${ss}`;
}

function cell(row, text, className) {
  const td = row.insertCell();
  if (text !== null && text !== undefined) td.textContent = String(text);
  if (className) td.className = className;
  return td;
}

function timeCell(row, isoString) {
  const td = row.insertCell();
  if (!isoString) return;
  const t = document.createElement('time');
  t.dateTime = isoString;
  t.title = isoString;
  t.textContent = new Date(isoString).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  td.append(t);
}

function render() {
  const rows = [...people.values()].sort((x, y) =>
    (y.a.is_currently_in_meeting - x.a.is_currently_in_meeting) ||
    String(x.a.name || x.a.identity).localeCompare(String(y.a.name || y.a.identity)));
  const here = rows.filter((p) => p.a.is_currently_in_meeting).length;
  $('room').textContent = [roomName ? `Room ${roomName}` : '', `channel ${channel}`,
    rows.length ? `${here} of ${rows.length} in the meeting` : ''].filter(Boolean).join(' · ');
  tbody.replaceChildren();
  if (!rows.length) {
    cell(tbody.insertRow(), 'No one has joined yet.').colSpan = 9;
    tbody.rows[0].className = 'empty';
    return;
  }
  for (const p of rows) {
    const { a } = p;
    const tr = tbody.insertRow();
    tr.dataset.identity = a.identity;
    tr.dataset.status = a.status;
    cell(tr, a.name || a.identity, 'name');
    cell(tr, a.identity, 'identity');
    const status = cell(tr, null, 'status');
    const dot = document.createElement('span');
    dot.className = `dot ${a.status}`;
    dot.setAttribute('aria-hidden', 'true');
    status.append(dot, a.status);
    cell(tr, hms(attendedMs(p)), 'num duration');
    cell(tr, a.join_count, 'num joins');
    timeCell(tr, a.first_join_time);
    timeCell(tr, a.last_leave_time);
    cell(tr, a.attendance_status, `verdict ${a.attendance_status || ''}`);
    cell(tr, a.attendance_percentage === null || a.attendance_percentage === undefined
      ? null : `${Number(a.attendance_percentage).toFixed(1)} %`, 'num percentage');
  }
}

function tick() {
  for (const tr of tbody.rows) {
    const p = people.get(tr.dataset.identity);
    if (p && p.a.is_currently_in_meeting) tr.querySelector('.duration').textContent = hms(attendedMs(p));
  }
}

// ---------------------------------------------------------------- start

$('key').value = appKey;
$('channel').value = channel;
if (channel) {
  render();
  document.title = `${channel} · Attendance · rollcall`;
  connect();
  setInterval(tick, 1000);
}
