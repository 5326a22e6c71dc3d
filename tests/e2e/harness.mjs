// Shared helpers for the end-to-end suite: run the real `rollcall` binary on a
// free loopback port, sign webhooks with LiveKit's own SDK, build webhook
// bodies in the protojson shape LiveKit sends, and await pushed events.

import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { AccessToken } from 'livekit-server-sdk';
import PusherServer from 'pusher';

const here = path.dirname(fileURLToPath(import.meta.url));

/** The repository root: the server runs from here so that `static/` resolves. */
export const repoRoot = path.resolve(here, '../..');

export const LIVEKIT = { key: 'devkey', secret: 'secret' };
export const APP = { id: 'rollcall', key: 'rollcall-key', secret: 'rollcall-secret' };
export const ROOM = 'itqan-academy-quran-session-121';
export const CHANNEL = 'session.121';

const HEALTH_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 10_000;
const LOG_LIMIT = 64 * 1024;

/** A port that was free a moment ago: bind port 0 on loopback, read it, close. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const running = new Set();
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

/**
 * Spawn `rollcall serve` with the dev credentials plus `env`, on a free
 * loopback port (or `opts.port`), and wait until `GET /healthz` answers 200.
 * Resolves to `{url, port, logs(), stop()}`; `stop()` sends SIGTERM and
 * resolves with the exit code once the process has exited.
 */
export async function startServer(env = {}, opts = {}) {
  const bin = process.env.ROLLCALL_BIN
    ? path.resolve(process.env.ROLLCALL_BIN)
    : path.resolve(here, '../../target/debug/rollcall');
  const port = opts.port ?? (await freePort());
  const url = `http://127.0.0.1:${port}`;

  const child = spawn(bin, ['serve'], {
    cwd: repoRoot,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      ...process.env,
      ROLLCALL_LISTEN: `127.0.0.1:${port}`,
      LIVEKIT_API_KEY: LIVEKIT.key,
      LIVEKIT_API_SECRET: LIVEKIT.secret,
      ROLLCALL_APP_ID: APP.id,
      ROLLCALL_APP_KEY: APP.key,
      ROLLCALL_APP_SECRET: APP.secret,
      ...env,
    },
  });
  running.add(child);

  let log = '';
  const keep = (chunk) => {
    log = (log + chunk).slice(-LOG_LIMIT);
  };
  child.stdout.setEncoding('utf8').on('data', keep);
  child.stderr.setEncoding('utf8').on('data', keep);

  const exited = new Promise((resolve) => {
    child.once('exit', (code, signal) => {
      running.delete(child);
      resolve(code ?? signal);
    });
    child.once('error', (err) => {
      running.delete(child);
      keep(`\n[spawn ${bin}: ${err.message}]\n`);
      resolve('spawn-error');
    });
  });

  const deadline = Date.now() + HEALTH_TIMEOUT_MS;
  let exitStatus;
  exited.then((s) => (exitStatus = s));
  for (;;) {
    if (exitStatus !== undefined) {
      throw new Error(`rollcall exited (${exitStatus}) before /healthz answered; its output:\n${log}`);
    }
    try {
      const res = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(1000) });
      await res.arrayBuffer();
      if (res.status === 200) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`rollcall did not answer GET /healthz 200 within ${HEALTH_TIMEOUT_MS} ms; its output:\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }

  return {
    url,
    port,
    logs: () => log,
    async stop() {
      if (exitStatus === undefined) child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
      const status = await exited;
      clearTimeout(timer);
      if (status === 'SIGKILL') {
        throw new Error(`rollcall did not exit within ${STOP_TIMEOUT_MS} ms of SIGTERM; its output:\n${log}`);
      }
      return status;
    },
  };
}

/** Standard padded base64 of SHA-256 over the exact body bytes. */
export function bodySha256(body) {
  return createHash('sha256').update(body).digest('base64');
}

/**
 * The `Authorization` value LiveKit sends with a webhook: a bare JWT minted by
 * LiveKit's own SDK with the body's hash in the `sha256` claim. `ttl` accepts
 * the SDK's (jose's) time spans, so a negative one (`'-2m'`) mints a token
 * that expired in the past.
 */
export async function signedWebhook(body, { key = LIVEKIT.key, secret = LIVEKIT.secret, ttl = '5m' } = {}) {
  const at = new AccessToken(key, secret, { ttl });
  at.sha256 = bodySha256(body);
  return at.toJwt();
}

/**
 * POST a webhook body to `<serverUrl>/webhooks/livekit`, signed like LiveKit
 * (see `signedWebhook` for `key`, `secret`, `ttl`). `authorization` replaces
 * the header value; `null` omits the header. Resolves to
 * `{status, contentType, text, json}` (`json` is undefined if not JSON).
 */
export async function postWebhook(serverUrl, body, opts = {}) {
  const headers = { 'Content-Type': 'application/webhook+json' };
  const authorization = 'authorization' in opts ? opts.authorization : await signedWebhook(body, opts);
  if (authorization !== null) headers.Authorization = authorization;
  const res = await fetch(`${serverUrl}/webhooks/livekit`, {
    method: 'POST',
    headers,
    body,
    signal: AbortSignal.timeout(10_000),
  });
  const text = await res.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, contentType: res.headers.get('content-type') ?? '', text, json };
}

// ---------------------------------------------------------------------------
// Webhook bodies, shaped like LiveKit's protojson: camelCase, int64 as strings,
// zero values omitted, and LiveKit's `", "` separators.

const ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

/** `n` random alphanumerics, like the suffixes of LiveKit's ids. */
export function randomId(n = 12) {
  return Array.from(randomBytes(n), (b) => ALNUM[b % ALNUM.length]).join('');
}

/** JSON with `", "` between members and elements, as LiveKit's encoder may write it. */
export function protojson(value) {
  if (Array.isArray(value)) return `[${value.map(protojson).join(', ')}]`;
  if (value !== null && typeof value === 'object') {
    const members = Object.entries(value)
      .filter(([, v]) => v !== undefined)
      .map(([k, v]) => `${JSON.stringify(k)}:${protojson(v)}`);
    return `{${members.join(', ')}}`;
  }
  return JSON.stringify(value);
}

const nowSeconds = () => Math.floor(Date.now() / 1000);

function roomInfo({ room = ROOM, roomSid = 'RM_hycBMAjmt6Ub', creationTime } = {}) {
  return {
    sid: roomSid,
    name: room,
    emptyTimeout: 300,
    creationTime: creationTime === undefined ? undefined : String(creationTime),
  };
}

function participantInfo(p, state) {
  const joinedAtMs = p.joinedAtMs ?? Date.now() - 3000;
  return {
    sid: p.sid ?? `PA_${randomId()}`,
    identity: p.identity ?? '1_Ameer_Maher',
    state,
    joinedAt: String(Math.floor(joinedAtMs / 1000)),
    joinedAtMs: String(joinedAtMs),
    name: p.name ?? 'Ameer Maher',
    metadata: p.metadata,
    kind: p.kind,
    permission: { canSubscribe: true, canPublish: true, canPublishData: true },
  };
}

/**
 * A `participant_joined` body. Options: room, roomSid, sid, identity, name,
 * joinedAtMs (default 3 s ago), createdAt (unix seconds, default now),
 * id (default `EV_` + 12 random chars), kind, metadata.
 */
export function participantJoined(p = {}) {
  return protojson({
    event: 'participant_joined',
    room: roomInfo(p),
    participant: participantInfo(p, 'ACTIVE'),
    id: p.id ?? `EV_${randomId()}`,
    createdAt: String(p.createdAt ?? nowSeconds()),
  });
}

/** A `participant_left` body; same options as `participantJoined`. */
export function participantLeft(p = {}) {
  return protojson({
    event: 'participant_left',
    room: roomInfo(p),
    participant: { ...participantInfo(p, 'DISCONNECTED'), disconnectReason: 'CLIENT_INITIATED' },
    id: p.id ?? `EV_${randomId()}`,
    createdAt: String(p.createdAt ?? nowSeconds()),
  });
}

/** A `room_finished` body. Options: room, roomSid, createdAt, id. */
export function roomFinished(p = {}) {
  return protojson({
    event: 'room_finished',
    room: roomInfo(p),
    id: p.id ?? `EV_${randomId()}`,
    createdAt: String(p.createdAt ?? nowSeconds()),
  });
}

// ---------------------------------------------------------------------------

/**
 * Pushed events in arrival order. `push` is the listener; `next()` resolves
 * with the oldest unread event, waiting for one up to `timeoutMs` (a guard,
 * not a sleep: it resolves as soon as an event is there).
 */
export class EventQueue {
  #items = [];
  #waiters = [];

  push = (item) => {
    const waiter = this.#waiters.shift();
    if (waiter) waiter(item);
    else this.#items.push(item);
  };

  next(timeoutMs = 5000, what = 'an event') {
    if (this.#items.length) return Promise.resolve(this.#items.shift());
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiters.splice(this.#waiters.indexOf(done), 1);
        reject(new Error(`no ${what} within ${timeoutMs} ms`));
      }, timeoutMs);
      const done = (item) => {
        clearTimeout(timer);
        resolve(item);
      };
      this.#waiters.push(done);
    });
  }

  get size() {
    return this.#items.length;
  }
}

/** Laravel Echo's options as a meeting page sets them for a rollcall on
 *  loopback `port` (pass `Pusher` and any auth handlers beside them). */
export function echoOptions(port) {
  return {
    broadcaster: 'pusher',
    key: APP.key,
    wsHost: '127.0.0.1',
    wsPort: port,
    forceTLS: false,
    enabledTransports: ['ws'],
    cluster: 'mt1',
  };
}

/** Echo's `channelAuthorization` for a page signed in as `user`
 *  (`{ id, name }`): what a Laravel app's /broadcasting/auth answers, signed
 *  by the npm `pusher` library (presence data included). */
export function channelAuthAs(user) {
  const signer = pusherServer();
  return {
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, callback) =>
        callback(null, signer.authorizeChannel(socketId, channelName, { user_id: user.id, user_info: { name: user.name } })),
    },
  };
}

/** `ms` as the ISO instant the contract writes (`2025-11-14T23:06:18.456Z`). */
export const iso = (ms) => new Date(ms).toISOString();

/** The app's own Pusher server library (the npm `pusher`), as a Laravel app
 *  holds it: pointed at a rollcall on loopback `port` for the HTTP API, or,
 *  without a port, only signing channel and user auth. `extra` overrides
 *  options (a wrong secret, an encryption master key). */
export function pusherServer(port, extra = {}) {
  const target = port ? { port: String(port), useTLS: false } : {};
  return new PusherServer({ appId: APP.id, key: APP.key, secret: APP.secret, host: '127.0.0.1', ...target, ...extra });
}
