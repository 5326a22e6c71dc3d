// The live attendance dashboard: a plain WebSocket speaking just enough of
// the Pusher protocol v7 to subscribe to one channel and render its
// `attendance.snapshot` / `attendance.updated` events, ticking between them
// as rule 28 says (static/ticking.mjs). No build step, no CDN.
//
// Query string:
//   channel   the channel to watch (`session.121`; `session=121` for short)
//   room      the LiveKit room (with `viewer`: its channel is looked up)
//   viewer    a viewer link token (src/viewer.rs): reads the API, signs
//             private-channel subscriptions; `room: "*"` lists sessions
//   lang      `ar` for Arabic (right to left), `en`
//   tz        an IANA time zone for times (default: the browser's)
//   key       the Pusher app key (default: the server's, from /api/dashboard)
import {
  DEFAULT_RULES, ServerClock, hms, percentage, phaseAt, shownMs, verdictAt, windowOf,
} from './ticking.mjs';
import { STRINGS, localeFor, pickLanguage, translator } from './i18n.mjs';

const params = new URLSearchParams(location.search);
const lang = pickLanguage(params.get('lang'), navigator.languages || []);
const t = translator(lang);
const locale = localeFor(lang);
const viewer = params.get('viewer') || '';
const room = params.get('room') || '';
let channel = params.get('channel') || (params.get('session') ? `session.${params.get('session')}` : '');
let timeZone = params.get('tz') || undefined;
try {
  new Intl.DateTimeFormat('en', { timeZone });
} catch {
  timeZone = undefined; // an unknown zone: the browser's own
}

const $ = (id) => document.getElementById(id);

/** identity → {a: attendance, at: server ms at which `a` was exact}. */
const people = new Map();
const clock = new ServerClock();
let settings = { ...DEFAULT_RULES, app_key: params.get('key') || '' };
/** Session-wide facts: from the snapshot, the API, or the updates. */
const session = { room: '', schedule: null, isFinal: false, revision: 0 };
/** Server time at which the numbers stopped being live (disconnected). */
let frozenAt = null;
/** Subscribed, and the first snapshot (if any) not yet here. */
let snapshotPending = false;
let query = '';

// ---------------------------------------------------------------- helpers

const serverNow = () => (frozenAt ?? clock.now(Date.now()));

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('data-')) e.setAttribute(k, v);
    else e[k] = v;
  }
  e.append(...children.filter((c) => c !== null && c !== undefined));
  return e;
}

const timeFormat = new Intl.DateTimeFormat(locale, {
  hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false, timeZone,
});
const dateTimeFormat = new Intl.DateTimeFormat(locale, {
  weekday: 'short', day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit',
  hour12: false, timeZone, timeZoneName: 'short',
});
const shortTimeFormat = new Intl.DateTimeFormat(locale, {
  hour: '2-digit', minute: '2-digit', hour12: false, timeZone, timeZoneName: 'short',
});
const zoneName = timeZone || Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';

function timeEl(iso, format = timeFormat) {
  if (!iso) return null;
  const d = new Date(iso);
  return el('time', { dateTime: iso, title: iso, dir: 'auto', text: format.format(d) });
}

function authHeaders() {
  return viewer ? { Authorization: `Bearer ${viewer}` } : {};
}

async function api(path, init = {}) {
  const res = await fetch(path, { ...init, headers: { ...authHeaders(), ...(init.headers || {}) } });
  if (!res.ok) {
    let message = `${res.status}`;
    try { message = (await res.json()).message || message; } catch { /* not JSON */ }
    const err = new Error(message);
    err.status = res.status;
    throw err;
  }
  return res;
}

// ---------------------------------------------------------------- connection

const PONG_TIMEOUT_MS = 30_000;
const MAX_BACKOFF_MS = 30_000;

let socket = null;
let attempt = 0; // failed connections in a row, for the backoff
let activityMs = 120_000; // the server's activity_timeout, once known
let idleTimer = 0;
let retryAt = 0; // local ms of the next reconnection, while waiting

function setState(state, text) {
  const c = $('conn');
  c.dataset.state = state;
  c.textContent = text;
}

function connect() {
  retryAt = 0;
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const url = `${scheme}://${location.host}/app/${encodeURIComponent(settings.app_key || 'rollcall-key')}` +
    '?protocol=7&client=rollcall-dashboard&version=2';
  setState('connecting', attempt ? t('conn_reconnecting') : t('conn_connecting'));
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
    onFrame(ws, frame.event, frame.channel, data).catch((e) => console.warn('rollcall:', e));
  };
  ws.onclose = (ev) => {
    clearTimeout(idleTimer);
    if (socket !== ws) return;
    socket = null;
    // Rule 28: while disconnected nothing is known to be current; stop
    // ticking at the moment the feed stopped and mark the rows stale.
    if (frozenAt === null && people.size) frozenAt = clock.now(Date.now());
    render();
    console.info(`rollcall: socket closed (${ev.code}${ev.reason ? ` ${ev.reason}` : ''})`);
    // Pusher close codes: 4000–4099 and 4300–4399 mean "don't come back",
    // 4200–4299 "come back at once", anything else: back off and retry.
    if ((ev.code >= 4000 && ev.code < 4100) || (ev.code >= 4300 && ev.code < 4400)) {
      setState('stopped', t('conn_stopped', { reason: ev.reason || 'refused by the server', code: ev.code }));
      return;
    }
    const delay = ev.code >= 4200 && ev.code < 4300
      ? 0
      : Math.min(MAX_BACKOFF_MS, 1000 * 2 ** attempt) * (0.75 + Math.random() / 2);
    attempt += 1;
    retryAt = Date.now() + delay;
    showRetry();
    setTimeout(connect, delay);
  };
}

function showRetry() {
  if (!retryAt) return;
  setState('waiting', t('conn_retry', { s: Math.max(0, Math.ceil((retryAt - Date.now()) / 1000)) }));
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

/** The subscription's `auth` for a private channel, from the viewer link. */
async function channelAuth(socketId) {
  const res = await api('/api/channel-auth', {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ socket_id: socketId, channel_name: channel }),
  });
  return (await res.json()).auth;
}

async function onFrame(ws, event, chan, data) {
  const receivedAt = Date.now();
  switch (event) {
    case 'pusher:connection_established': {
      if (data && data.activity_timeout > 0) activityMs = data.activity_timeout * 1000;
      resetIdle();
      setState('connecting', t('conn_subscribing'));
      const subscribe = { channel };
      if (channel.startsWith('private-')) {
        if (!viewer) {
          setState('stopped', t('conn_private'));
          ws.close(1000);
          socket = null;
          return;
        }
        try {
          subscribe.auth = await channelAuth(data.socket_id);
        } catch (e) {
          setState('stopped', t('conn_link_refused', { message: e.message }));
          ws.close(1000);
          socket = null;
          return;
        }
      }
      send(ws, 'pusher:subscribe', subscribe);
      break;
    }
    case 'pusher_internal:subscription_succeeded':
      if (chan !== channel) break;
      attempt = 0;
      // Live again: what we show is replaced by the snapshot that follows
      // (one per room feeding the channel, none when no room does).
      snapshotPending = true;
      frozenAt = null;
      setState('live', t('conn_live'));
      render();
      break;
    case 'pusher:ping':
      send(ws, 'pusher:pong', {});
      break;
    case 'pusher:error':
      setState('error', t('conn_error', {
        message: `${(data && data.message) || 'unknown'}${data && data.code ? ` (${data.code})` : ''}`,
      }));
      break;
    case 'attendance.snapshot': {
      if (chan !== channel || !data) break;
      // Two rooms can feed one channel (a misconfigured template): follow
      // the room the page was opened for, else the first one seen.
      if (room && data.room && data.room !== room) break;
      clock.observe(data.timestamp, receivedAt);
      const at = Date.parse(data.timestamp);
      if (snapshotPending) people.clear();
      snapshotPending = false;
      for (const a of data.participants || []) people.set(a.identity, { a, at });
      session.room = data.room || session.room;
      if ('schedule' in data) session.schedule = data.schedule;
      if ('is_final' in data) session.isFinal = data.is_final;
      if ('revision' in data) session.revision = data.revision;
      render();
      break;
    }
    case 'attendance.updated': {
      if (chan !== channel || !data || !data.attendance) break;
      const a = data.attendance;
      if (room && a.room && a.room !== room) break;
      clock.observe(data.timestamp, receivedAt);
      // No snapshot came: no room fed this channel when we subscribed.
      if (snapshotPending) people.clear();
      snapshotPending = false;
      people.set(a.identity, { a, at: Date.parse(data.timestamp), userId: data.user_id });
      session.room = a.room || session.room;
      const wasFinal = session.isFinal;
      session.isFinal = a.is_final;
      if (a.is_final && !wasFinal) refreshRevision();
      render();
      break;
    }
  }
}

/** The revision is on the roster and the snapshot, not on updates: when a
 *  session turns final, ask the API (with a viewer link) or subscribe
 *  again for a fresh snapshot, after a random pause so that every open
 *  page does not ask in the same instant. */
async function refreshRevision() {
  await new Promise((r) => setTimeout(r, Math.random() * 2000));
  if (viewer && session.room) {
    try {
      const roster = await (await api(`/api/sessions/${encodeURIComponent(session.room)}/attendance`)).json();
      session.revision = roster.revision;
      session.schedule = roster.schedule;
      render();
    } catch { /* keep what we have */ }
    return;
  }
  const ws = socket;
  if (!ws || channel.startsWith('private-')) return;
  send(ws, 'pusher:unsubscribe', { channel });
  send(ws, 'pusher:subscribe', { channel });
}

// ---------------------------------------------------------------- rendering

function sessionWindow() {
  for (const { a } of people.values()) {
    const w = windowOf(a);
    if (w) return w;
  }
  const s = session.schedule;
  if (!s) return null;
  const start = Date.parse(s.starts_at);
  return { start, end: start + s.duration_minutes * 60_000 };
}

function renderHeader(now) {
  const w = sessionWindow();
  const phase = phaseAt(w, now, session.isFinal);
  const all = people.size;
  const here = [...people.values()].filter((p) => p.a.is_currently_in_meeting).length;
  $('room').textContent = session.room || room || '';
  $('channel-name').textContent = channel;
  $('counts').textContent = all ? t('people_in', { here, all }) : '';
  const badge = $('phase');
  badge.dataset.phase = phase;
  badge.textContent = t(`phase_${phase}`);
  let detail = '';
  if (phase === 'preparation') detail = t('starts_in', { t: hms(w.start - now) });
  else if (phase === 'in_session') detail = `${t('elapsed', { t: hms(now - w.start) })} · ${t('left', { t: hms(w.end - now) })}`;
  else if (phase === 'ended') {
    const due = w.end + settings.finalize_delay_ms - now;
    detail = due > 0 ? t('final_in', { t: hms(due) }) : t('final_due');
  } else if (phase === 'final' && session.revision) detail = t('revision', { n: session.revision });
  $('phase-detail').textContent = detail;
  const sched = $('schedule');
  const key = w ? `${w.start}/${w.end}` : '';
  if (sched.dataset.key !== key) {
    sched.dataset.key = key;
    sched.replaceChildren();
    if (w) {
      sched.append(timeEl(new Date(w.start).toISOString(), dateTimeFormat), ' – ',
        timeEl(new Date(w.end).toISOString(), shortTimeFormat));
    }
  }
  $('tz').textContent = t('times_in', { tz: zoneName });
  const stale = $('stale');
  stale.hidden = frozenAt === null;
  if (frozenAt !== null) stale.textContent = t('stale', { time: timeFormat.format(new Date(frozenAt)) });
}

function verdictCell(p, now) {
  const { a } = p;
  const v = verdictAt(a, p.at, now, settings);
  const td = el('td', { class: 'verdict', 'data-kind': v.kind });
  const label = (status) => t(status);
  if (v.kind === 'final') {
    td.classList.add(v.status || '');
    td.append(el('span', { class: 'word', text: label(v.status) }),
      el('span', { class: 'final-mark', text: `✓ ${t('final_mark')}`, title: t('final_mark') }));
  } else if (v.kind === 'so_far') {
    td.classList.add(v.status, 'provisional');
    td.append(el('span', { class: 'word', text: t('so_far', { status: label(v.status) }) }));
  } else if (v.kind === 'can_reach') {
    td.classList.add('provisional');
    td.append(el('span', { class: 'word', text: t('can_reach', { status: label(v.status) }) }));
  } else if (v.kind === 'in_progress') {
    td.classList.add('provisional');
    td.append(el('span', { class: 'word', text: t('in_progress') }));
  } else if (v.kind === 'not_started') {
    td.classList.add('provisional');
    td.append(el('span', { class: 'word', text: t('not_started') }));
  }
  if (a.is_late) {
    const m = a.late_minutes ?? 0;
    td.append(el('span', { class: 'late-badge', text: m >= 1 ? t('late_by', { m }) : t('late_badge') }));
  }
  return td;
}

/** One bar per cycle across the session's axis; the window shaded. */
function timelineCell(p, axis, w, now) {
  const td = el('td', { class: 'timeline-cell' });
  if (!axis) return td;
  const span = axis.end - axis.start;
  const pos = (ms) => `${(((Math.min(Math.max(ms, axis.start), axis.end) - axis.start) / span) * 100).toFixed(3)}%`;
  const width = (from, to) => `${((Math.max(0, Math.min(to, axis.end) - Math.max(from, axis.start)) / span) * 100).toFixed(3)}%`;
  const bar = el('div', { class: 'timeline', role: 'img' });
  if (w) {
    bar.append(el('div', { class: 'zone prep', title: t('tl_prep') }));
    const counted = el('div', { class: 'zone counted', title: t('tl_window') });
    counted.style.insetInlineStart = pos(w.start);
    counted.style.width = width(w.start, w.end);
    bar.append(counted);
  }
  const words = [];
  for (const c of p.a.cycles || []) {
    const from = Date.parse(c.joined_at);
    const to = c.left_at ? Date.parse(c.left_at) : Math.max(from, now);
    const text = `${timeFormat.format(new Date(from))} ${t(`opened_by_${c.opened_by || 'webhook'}`)} → ${
      c.left_at ? `${timeFormat.format(new Date(to))} ${t(`closed_by_${c.closed_by}`)}` : t('still_in')}`;
    // Time outside the window is drawn, but pale: it does not count.
    const parts = w
      ? [[from, Math.min(to, w.start), 'uncounted'], [Math.max(from, w.start), Math.min(to, w.end), 'counted'],
        [Math.max(from, w.end), to, 'uncounted']]
      : [[from, to, 'counted']];
    for (const [a0, a1, kind] of parts) {
      if (a1 <= a0 && !(kind === 'counted' && a1 === a0 && from === to)) continue;
      const seg = el('div', { class: `cycle ${kind} opened-${c.opened_by || 'webhook'} closed-${c.closed_by || 'open'}` });
      seg.style.insetInlineStart = pos(a0);
      seg.style.width = width(a0, a1);
      seg.title = text;
      bar.append(seg);
    }
    words.push(text);
  }
  bar.setAttribute('aria-label', words.join('; ') || t('status_never'));
  td.append(bar);
  return td;
}

/** The common time axis of every timeline: the window, widened to every
 *  cycle and to now while someone is in. */
function axisOf(w, now) {
  let start = w ? w.start : Infinity;
  let end = w ? w.end : -Infinity;
  for (const { a } of people.values()) {
    for (const c of a.cycles || []) {
      start = Math.min(start, Date.parse(c.joined_at));
      end = Math.max(end, c.left_at ? Date.parse(c.left_at) : now);
    }
  }
  if (!Number.isFinite(start) || !Number.isFinite(end) || end <= start) return null;
  return { start, end };
}

function matches(a) {
  if (!query) return true;
  const q = query.toLocaleLowerCase();
  return String(a.name || '').toLocaleLowerCase().includes(q) || String(a.identity).toLocaleLowerCase().includes(q);
}

/** identity → the cells `tick` updates between full renders. */
const rowCells = new Map();

function pctText(a, ms) {
  const pct = a.is_final ? a.attendance_percentage : percentage(ms, windowOf(a));
  return pct === null || pct === undefined ? '' : `${Number(pct).toFixed(1)} %`;
}

function verdictKey(p, now) {
  const v = verdictAt(p.a, p.at, now, settings);
  return `${v.kind}:${v.status || ''}`;
}

/** Five times a second: the numbers that tick, so a shown second is never
 *  more than 200 ms late; a verdict that changes re-renders everything. */
function tick() {
  if (!channel) return;
  const now = serverNow();
  for (const [identity, cells] of rowCells) {
    const p = people.get(identity);
    if (!p) continue;
    if (verdictKey(p, now) !== cells.verdict) {
      render();
      return;
    }
    const ms = shownMs(p.a, p.at, now);
    const d = hms(ms);
    if (cells.duration.textContent !== d) cells.duration.textContent = d;
    const pct = pctText(p.a, ms);
    if (cells.pct.textContent !== pct) cells.pct.textContent = pct;
  }
  renderHeader(now);
}

function render() {
  if (!channel) return;
  rowCells.clear();
  const now = serverNow();
  renderHeader(now);
  const w = sessionWindow();
  const axis = axisOf(w, now);
  if (w && axis) {
    // The preparation zone starts at the axis start and ends at the window.
    document.documentElement.style.setProperty('--prep-width', `${((w.start - axis.start) / (axis.end - axis.start)) * 100}%`);
  }
  const rows = [...people.values()].sort((x, y) =>
    (y.a.is_currently_in_meeting - x.a.is_currently_in_meeting) ||
    String(x.a.name || x.a.identity).localeCompare(String(y.a.name || y.a.identity), locale));
  const tbody = $('roster').tBodies[0];
  const shown = rows.filter((p) => matches(p.a));
  const out = [];
  if (!rows.length || !shown.length) {
    const tr = el('tr', { class: 'empty' });
    tr.append(el('td', { colSpan: 10, text: rows.length ? t('no_match', { q: query }) : t('nobody') }));
    out.push(tr);
  }
  for (const p of shown) {
    const { a } = p;
    const never = !a.is_currently_in_meeting && !a.join_count;
    const tr = el('tr', {
      'data-identity': a.identity,
      'data-status': a.status,
      'data-in-meeting': String(a.is_currently_in_meeting),
      class: frozenAt !== null ? 'stale' : null,
    });
    tr.append(el('td', { class: 'name', text: a.name || a.identity }));
    tr.append(el('td', { class: 'identity', text: a.identity }));
    const status = el('td', { class: 'status', title: never ? t('status_never') : t(`status_${a.status}`) });
    status.append(el('span', { class: `dot ${never ? 'never' : a.status}`, 'aria-hidden': 'true' }),
      never ? t('status_never') : t(`status_${a.status}`));
    if (frozenAt !== null) status.append(el('span', { class: 'stale-mark', text: t('stale_row') }));
    tr.append(status);
    const ms = shownMs(a, p.at, now);
    const duration = el('td', { class: 'num duration', text: hms(ms) });
    tr.append(duration);
    tr.append(el('td', { class: 'num joins', text: String(a.join_count ?? 0) }));
    tr.append(el('td', { class: 'first' }, timeEl(a.first_join_time)));
    tr.append(el('td', { class: 'last' }, timeEl(a.last_leave_time)));
    tr.append(verdictCell(p, now));
    const pctCell = el('td', { class: 'num percentage' });
    pctCell.append(el('span', { dir: 'ltr', text: pctText(a, ms) }));
    tr.append(pctCell);
    rowCells.set(a.identity, { duration, pct: pctCell.firstChild, verdict: verdictKey(p, now) });
    tr.append(timelineCell(p, axis, w, now));
    out.push(tr);
  }
  tbody.replaceChildren(...out);
}

// ---------------------------------------------------------------- CSV

const CSV_HEADER = ['identity', 'user_id', 'name', 'first_join_time', 'last_leave_time', 'duration_seconds',
  'duration_minutes', 'attendance_percentage', 'attendance_status', 'is_late', 'join_count'];

/** A CSV cell that a spreadsheet shows as text, never runs as a formula. */
function csvCell(v) {
  let s = v === null || v === undefined ? '' : String(v);
  if (/^[=+\-@\t\r\n]/.test(s)) s = `'${s}`;
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

function download(name, blob) {
  const a = el('a', { href: URL.createObjectURL(blob), download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
}

async function exportCsv() {
  const name = `attendance-${(session.room || channel).replace(/[^A-Za-z0-9_-]/g, '_')}.csv`;
  if (viewer && session.room) {
    // The server's report, exactly as the main app gets it.
    try {
      const res = await api(`/api/sessions/${encodeURIComponent(session.room)}/attendance?format=csv`);
      download(name, await res.blob());
      return;
    } catch (e) {
      console.warn('rollcall: server CSV unavailable, exporting what this page shows', e);
    }
  }
  // No viewer link: the same columns, from what this page shows now.
  const now = serverNow();
  const lines = [CSV_HEADER.join(',')];
  for (const p of people.values()) {
    const { a } = p;
    const ms = shownMs(a, p.at, now);
    const pct = a.is_final ? a.attendance_percentage : percentage(ms, windowOf(a));
    const v = verdictAt(a, p.at, now, settings);
    lines.push([a.identity, p.userId ?? a.identity.split('_')[0], a.name, a.first_join_time, a.last_leave_time,
      Math.floor(ms / 1000), Math.floor(ms / 60_000), pct === null ? '' : pct.toFixed(1),
      v.kind === 'final' || v.kind === 'so_far' ? v.status : '', a.is_late ?? '', a.join_count].map(csvCell).join(','));
  }
  download(name, new Blob([`${lines.join('\n')}\n`], { type: 'text/csv;charset=utf-8' }));
}

// ---------------------------------------------------------------- start page

async function renderStart() {
  $('start').hidden = false;
  $('conn').hidden = true; // no socket on the start page
  const list = $('sessions');
  if (!viewer) {
    $('start-note').textContent = `${t('choose')} ${t('list_needs_link')}`;
    return;
  }
  $('start-note').textContent = t('loading');
  let body;
  try {
    body = await (await api('/api/sessions?limit=100')).json();
  } catch (e) {
    $('start-note').textContent = t('conn_link_refused', { message: e.message });
    return;
  }
  $('start-note').textContent = body.sessions.length ? '' : t('no_sessions');
  $('start-search').hidden = !body.sessions.length;
  const live = body.sessions.filter((s) => s.in_meeting);
  const recent = body.sessions.filter((s) => !s.in_meeting);
  list.replaceChildren();
  for (const [title, group] of [[t('live_sessions'), live], [t('recent_sessions'), recent]]) {
    if (!group.length) continue;
    list.append(el('h2', { text: title }));
    const ul = el('ul', { class: 'session-list' });
    for (const s of group.filter((x) => !query || x.room.toLowerCase().includes(query.toLowerCase()))) {
      const href = `?${new URLSearchParams({ room: s.room, channel: s.channel, viewer, ...(params.get('lang') ? { lang } : {}) })}`;
      const li = el('li', { 'data-room': s.room });
      li.append(el('a', { href, class: 'session-link', text: s.room }));
      const meta = [`${s.session_type || ''} ${s.session_id || ''}`.trim(),
        t('people_in', { here: s.people_in_meeting, all: s.participants })];
      if (s.is_final) meta.push(`${t('phase_final')} · ${t('revision', { n: s.revision })}`);
      li.append(el('span', { class: 'meta', text: meta.join(' · ') }));
      if (s.schedule) li.append(el('span', { class: 'meta' }, timeEl(s.schedule.starts_at, dateTimeFormat)));
      ul.append(li);
    }
    list.append(ul);
  }
}

// ---------------------------------------------------------------- start

function applyLanguage() {
  document.documentElement.lang = lang;
  document.documentElement.dir = STRINGS[lang].dir;
  for (const node of document.querySelectorAll('[data-i18n]')) node.textContent = t(node.dataset.i18n);
  for (const node of document.querySelectorAll('[data-i18n-placeholder]')) node.placeholder = t(node.dataset.i18nPlaceholder);
  const other = new URLSearchParams(location.search);
  other.set('lang', t('lang_other_code'));
  const switcher = $('lang');
  switcher.textContent = t('lang_other');
  switcher.href = `?${other}`;
  switcher.lang = t('lang_other_code');
}

async function main() {
  applyLanguage();
  setState('idle', t('conn_idle'));
  $('search').addEventListener('input', (e) => {
    query = e.target.value.trim();
    render();
  });
  $('start-search').addEventListener('input', (e) => {
    query = e.target.value.trim();
    renderStart();
  });
  $('csv').addEventListener('click', () => exportCsv().catch((e) => console.warn('rollcall:', e)));
  try {
    const s = await (await fetch('/api/dashboard')).json();
    settings = { ...settings, ...s, app_key: params.get('key') || s.app_key };
  } catch { /* defaults */ }
  if (!channel && room && viewer) {
    // A viewer link names the room: the roster says which channel.
    try {
      const roster = await (await api(`/api/sessions/${encodeURIComponent(room)}/attendance`)).json();
      channel = roster.channel;
      session.revision = roster.revision;
      session.schedule = roster.schedule;
    } catch (e) {
      $('start').hidden = false;
      $('start-note').textContent = t('conn_link_refused', { message: e.message });
      return;
    }
  }
  $('channel').value = channel;
  if (!channel) {
    await renderStart();
    // Live sessions come and go: refresh the list while it is open.
    if (viewer) setInterval(renderStart, 15_000);
    return;
  }
  $('session').hidden = false;
  document.title = `${room || channel} · ${t('title')} · rollcall`;
  render();
  connect();
  setInterval(tick, 200);
  setInterval(() => {
    render();
    showRetry();
  }, 1000);
}

main();
