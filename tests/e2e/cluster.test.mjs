// The front end's code path on a Redis Cluster (ROLLCALL_REDIS_CLUSTER):
// two rollcall nodes on three masters with a replica each, Laravel Echo
// over pusher-js on one node, webhooks that LiveKit's SDK signed posted to
// the other. The update travels by sharded pub/sub (SPUBLISH from the
// commit script, SSUBSCRIBE by the node that serves the channel), and
// presence members are shared across the nodes.

import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { after, before, test } from 'node:test';
import Echo from 'laravel-echo';
import Pusher from 'pusher-js';
import {
  CHANNEL,
  EventQueue,
  channelAuthAs,
  echoOptions,
  freePort,
  participantJoined,
  postWebhook,
  startServer,
} from './harness.mjs';

const run = promisify(execFile);
const here = path.dirname(fileURLToPath(import.meta.url));
const REDIS_CONF = path.resolve(here, '../../redis.conf');
const CLUSTER_GUARD_MS = 30_000;

const nodes = [];
const servers = [];
const clients = [];
let dir;

/** `redis-cli -p <port> <args…>`'s output. */
async function cli(port, ...args) {
  const { stdout } = await run('redis-cli', ['-p', String(port), ...args], { timeout: 5000 });
  return stdout;
}

async function until(what, check) {
  const deadline = Date.now() + CLUSTER_GUARD_MS;
  for (;;) {
    try {
      if (await check()) return;
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) throw new Error(`${what} within ${CLUSTER_GUARD_MS} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A port whose cluster bus port (+10000) is free too. */
async function clusterPort() {
  for (;;) {
    const port = await freePort();
    if (port + 10000 > 65535) continue;
    const bus = await new Promise((resolve) => {
      const srv = net.createServer();
      srv.once('error', () => resolve(false));
      srv.listen(port + 10000, '127.0.0.1', () => srv.close(() => resolve(true)));
    });
    if (bus) return port;
  }
}

/** 3 masters + 3 replicas from the repository's redis.conf. */
async function startCluster() {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rollcall-e2e-cluster-'));
  for (let i = 0; i < 6; i++) {
    const port = await clusterPort();
    const nodeDir = path.join(dir, String(port));
    fs.mkdirSync(nodeDir);
    const child = spawn(
      'redis-server',
      [
        REDIS_CONF,
        '--port', String(port),
        '--dir', nodeDir,
        '--cluster-enabled', 'yes',
        '--cluster-config-file', path.join(nodeDir, 'nodes.conf'),
        '--cluster-node-timeout', '1000',
        '--cluster-require-full-coverage', 'no',
        '--repl-diskless-sync-delay', '0',
      ],
      { stdio: 'ignore' },
    );
    nodes.push({ port, child });
    await until(`redis-server on ${port}`, async () => (await cli(port, 'ping')).trim() === 'PONG');
  }
  await run(
    'redis-cli',
    ['--cluster', 'create', ...nodes.map((n) => `127.0.0.1:${n.port}`), '--cluster-replicas', '1', '--cluster-yes'],
    { timeout: CLUSTER_GUARD_MS },
  );
  for (const { port } of nodes) {
    await until(`cluster_state:ok on ${port}`, async () => (await cli(port, 'cluster', 'info')).includes('cluster_state:ok'));
  }
  // Every master's replica online, so WAIT 1 is answered.
  await until('every master with an online replica', async () => {
    let masters = 0;
    for (const { port } of nodes) {
      const info = await cli(port, 'info', 'replication');
      if (info.includes('role:master')) {
        if (!/slave0:.*state=online/.test(info)) return false;
        masters += 1;
      }
    }
    return masters === 3;
  });
  return nodes.map((n) => `redis://127.0.0.1:${n.port}`).join(',');
}

before(async () => {
  const seeds = await startCluster();
  for (let i = 0; i < 2; i++) {
    servers.push(await startServer({ ROLLCALL_REDIS_CLUSTER: seeds }));
  }
});

after(async () => {
  for (const echo of clients) echo.disconnect();
  for (const s of servers) await s.stop();
  for (const { child } of nodes) child.kill('SIGKILL');
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

function page(port, user) {
  const echo = new Echo({ ...echoOptions(port), Pusher, ...channelAuthAs(user) });
  clients.push(echo);
  return echo;
}

function withTimeout(promise, ms, what) {
  let timer;
  const guard = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no ${what} within ${ms} ms`)), ms);
  });
  return Promise.race([promise, guard]).finally(() => clearTimeout(timer));
}

test('on a cluster, Echo on one node gets the update of a webhook posted to the other', async () => {
  const [a, b] = servers;
  const updates = new EventQueue();
  const channel = page(b.port, { id: '9', name: 'Teacher' }).channel(CHANNEL).listen('.attendance.updated', updates.push);
  await withTimeout(new Promise((resolve) => channel.subscribed(resolve)), 5000, 'subscription_succeeded');

  const person = { sid: 'PA_cluster01', identity: '1_Ameer_Maher', name: 'Ameer Maher', joinedAtMs: Date.now() - 5000 };
  const res = await postWebhook(a.url, participantJoined(person));
  assert.equal(res.status, 200, `webhook answered ${res.status}: ${res.text}`);
  const update = await updates.next(5000, 'attendance.updated on the other node');
  assert.equal(update.attendance.identity, '1_Ameer_Maher');
  assert.equal(update.attendance.is_currently_in_meeting, true);
});

test('on a cluster, presence members are shared by both nodes', async () => {
  const [a, b] = servers;
  const joining = new EventQueue();
  const onA = await withTimeout(
    new Promise((resolve) => {
      page(a.port, { id: '1', name: 'Ada' }).join('class.3').here(resolve).joining(joining.push);
    }),
    5000,
    'here on node A',
  );
  assert.deepEqual(onA.map((u) => u.name), ['Ada']);
  const onB = await withTimeout(
    new Promise((resolve) => {
      page(b.port, { id: '2', name: 'Bo' }).join('class.3').here(resolve);
    }),
    5000,
    'here on node B',
  );
  assert.deepEqual(onB.map((u) => u.name).sort(), ['Ada', 'Bo']);
  const joined = await joining.next(5000, 'joining on node A');
  assert.equal(joined.name, 'Bo');
});
