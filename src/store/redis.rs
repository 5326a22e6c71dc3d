//! The production store: all state in Redis, shared by any number of
//! rollcall nodes.
//!
//! Key layout (every key of a room carries the hash tag `{room}`, so a room
//! lives in one Redis Cluster slot and the commit script may touch all of
//! them):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `rollcall:{<room>}:state` | hash | `v` (version), `t` (the last write's random tag), `room` (room-level facts, JSON), `p:<user id>` (one person, JSON) per person |
//! | `rollcall:{<room>}:applied` | set | event ids already applied (rule 7) |
//! | `rollcall:{<room>}:log` | stream | the event log: `id`, `received_at`, `body`, and `kind` when not a webhook (rules 22, 27) |
//! | `rollcall:{<room>}:heartbeats` | hash | user id → last heartbeat (ms), rule 13's record |
//! | `rollcall:{<room>}:seen` | hash | participant sid → the last RoomService listing that had it (ms), rule 25 |
//! | `rollcall:{<room>}:lease:<job>` | string | a short lease (report delivery) |
//! | `rollcall:channel:{<channel>}` | set | rooms whose updates go to the channel |
//! | `rollcall:due` | sorted set | room → when the sweeper next has work there (ms) |
//! | `rollcall:rooms` | sorted set | room → its last commit (ms): the rooms rollcall knows, newest first |
//! | `rollcall:live` | sorted set | room → until when it is live: open cycles or inside its window (ms); what reconciliation checks |
//! | `rollcall:lease:<job>` | string | a short lease for node-wide jobs (the sweep) |
//!
//! **On Redis Cluster** (`ROLLCALL_REDIS_CLUSTER`) the same keys are laid
//! out so that every script stays in one slot and nothing global is one
//! slot that the whole deployment writes:
//!
//! | key | instead of |
//! |---|---|
//! | `rollcall:{<channel>}:room:<room>:<what>` | `rollcall:{<room>}:<what>`: a room's keys carry its *channel's* tag (`RoomChannel`, from the naming template; the room itself when it has none), so the commit script can `SPUBLISH` on `rollcall:c:{<channel>}` — the same slot — in the same step, and a room's broadcasts leave in commit order as on one server |
//! | `rollcall:{ix<n>}:due`, `…:live`, `…:rooms`, n < 32 | the three global indexes, split into buckets by a stable hash of the room name ([`Indexes`]); readers query every bucket and merge |
//!
//! Leases (`rollcall:lease:<job>`), channel links and the event cache are
//! single keys already; the channel-query reply keys are random. A commit's
//! index hints are their own round trip there (another slot), still before
//! the commit. The bus subscribes with `SSUBSCRIBE` (`bus.rs`), and the
//! channel query is `SPUBLISH`ed, so its receiver count is every node (all
//! of them subscribe it on the shard that owns its slot).
//!
//! Broadcasts travel on one pub/sub channel per Pusher channel,
//! `rollcall:c:{<channel>}` ([`bus_channel`]), as
//! `<channel>[ <excluded socket id>]\n<frame>`; a node's bus is subscribed
//! to exactly the channels its sockets are on (`bus.rs`), so a node hears
//! only what it serves, and every node that serves a channel (the
//! committing one included) delivers its broadcasts to its own sockets,
//! each socket getting each update exactly once. The hash tag keeps the
//! name ready for sharded pub/sub (`SPUBLISH`/`SSUBSCRIBE`) on Cluster.
//!
//! Channel queries (how many sockets are subscribed, over all nodes) are a
//! request/response on pub/sub: the asker PUBLISHes
//! `<reply key>\n<query>` on `rollcall:channels:query` (PUBLISH answers how
//! many nodes' buses received it), each node's bus RPUSHes its local counts
//! to `rollcall:channels:reply:<id>` (expiring in seconds), and the asker
//! BLPOPs that many answers, bounded in time.
//!
//! Room keys expire `retention` after the room's last write.
//!
//! A commit writes only what changed: the people whose `Arc<Person>` is
//! not the one (or equal to the one) in the state it replaces, `room` if
//! the room-level facts changed, and deletions of people who are gone. That
//! needs the replaced state: each node caches the last state it loaded or
//! committed per room (`cache.rs`), named by `(t, v)`; a commit diffs
//! against the cached state only when it is at the commit's expected
//! version, and the script then checks the tag as well as the version, so
//! the diff applies to exactly that state. Otherwise the commit rewrites
//! the whole hash. Every commit writes a fresh tag.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::AsyncCommands;
use redis::cluster_routing::Slot;

use super::cache::{Cached, StateCache};
use super::conn::{Redis, RedisTarget};
use super::{
    Broadcast, Broker, ChannelQuery, Commit, CommitOutcome, Jobs, LocalDelivery, LogKind,
    LoggedEvent, RoomRecord, RoomStore, Signals, Store, StoreError, SubscriptionCounts, bus,
};
use crate::domain::{EventId, ParticipantSid, RoomName, UnixMillis, UserId};
use crate::engine::RoomState;
use crate::pusher::Halt;

/// Prefix of the per-channel pub/sub channels ([`bus_channel`]).
const BUS_CHANNEL_PREFIX: &str = "rollcall:c:";

/// Every per-channel pub/sub channel, for a bus whose delivery keeps no
/// channel registry (it hears everything, as every node did before
/// subscribe-on-demand).
pub(crate) const BUS_CHANNEL_PATTERN: &str = "rollcall:c:*";

/// The pub/sub channel that carries `channel`'s broadcasts. Channel names
/// contain no braces, so the hash tag is exactly the channel.
pub fn bus_channel(channel: &str) -> String {
    format!("{BUS_CHANNEL_PREFIX}{{{channel}}}")
}

/// The pub/sub channel on which every node answers channel queries.
pub const CHANNELS_QUERY_CHANNEL: &str = "rollcall:channels:query";

/// Longest wait for every node's answer to a channel query. Nodes answer
/// from memory in one round trip; a node that takes this long is treated
/// as unavailable (the query fails with 503 rather than under-count).
const CHANNELS_ANSWER_TIMEOUT: Duration = Duration::from_secs(1);

/// One BLPOP waits at most this long: below the client's 500 ms response
/// timeout, so a blocked connection is never abandoned mid-command.
const BLPOP_SLICE: Duration = Duration::from_millis(300);

/// Answers nobody collected (a late node) vanish after this.
pub(crate) const CHANNELS_ANSWER_TTL_MS: u64 = 10_000;

#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// Room keys expire this long after the room's last write.
    pub retention: Duration,
    /// Longest wait for any Redis command (and for a pooled connection);
    /// past it the request fails with 503 instead of stalling LiveKit's
    /// per-room webhook queue.
    pub command_timeout: Duration,
    /// Rooms whose parsed state each node keeps to commit without a load
    /// round trip (`0`: none).
    pub state_cache_rooms: usize,
    /// Replicas that must have a commit before it counts as committed
    /// (`WAIT`); `0`: the master's fsync is enough.
    pub wait_replicas: usize,
    /// How long a commit waits for them before it fails (Unavailable: the
    /// webhook is answered 503, and its retry is a recognized duplicate).
    pub wait_timeout: Duration,
    /// Where the bus counts what it hears (the application's `Metrics::bus`).
    pub bus_metrics: Arc<crate::metrics::BusMetrics>,
    /// On Cluster, the channel a room's updates go to: its keys carry that
    /// channel's hash tag, so the commit script can `SPUBLISH` them in the
    /// same step (see "Cluster" above). Unused on one server.
    pub room_channel: RoomChannel,
}

/// The channel a room's updates go to, if any (the naming's template).
#[derive(Clone, Default)]
pub struct RoomChannel(Option<Arc<ChannelOf>>);

type ChannelOf = dyn Fn(&RoomName) -> Option<String> + Send + Sync;

impl RoomChannel {
    pub fn new(f: impl Fn(&RoomName) -> Option<String> + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(f)))
    }

    fn of(&self, room: &RoomName) -> Option<String> {
        self.0.as_ref().and_then(|f| f(room))
    }
}

impl std::fmt::Debug for RoomChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "RoomChannel(..)"
        } else {
            "RoomChannel(none)"
        })
    }
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(30 * 24 * 3600),
            command_timeout: Duration::from_secs(2),
            state_cache_rooms: 2048,
            wait_replicas: 0,
            wait_timeout: Duration::from_millis(500),
            bus_metrics: Arc::default(),
            room_channel: RoomChannel::default(),
        }
    }
}

pub struct RedisStore {
    /// Commits and the heartbeat's small repeatable commands ride the
    /// shared multiplexed connection (`Redis::run_shared`): concurrent
    /// commits leave in one write and their replies come back in one read,
    /// where a pooled connection each costs a write, a read and a Redis
    /// event-loop turn per commit (and deadpool's check-out PING: another
    /// round trip). Long replies (a room's whole event log) and blocking
    /// commands use connections of their own, so they never hold commits up.
    redis: Redis,
    options: RedisOptions,
    indexes: Indexes,
    commit_script: redis::Script,
    keep_latest_script: redis::Script,
    release_script: redis::Script,
    bus: bus::BusHandle,
    cache: StateCache,
    /// On Cluster: slots whose shard had no replica that could be promoted
    /// (see `confirmed`), until when that is trusted without asking again.
    /// Writes there skip the `WAIT` no replica could answer.
    unreplicated: std::sync::Mutex<HashMap<Slot, std::time::Instant>>,
}

/// How long a shard found without a promotable replica is trusted to stay
/// so before a write waits for a replica again: a replica that rejoins is
/// used within this long.
const UNREPLICATED_RECHECK: Duration = Duration::from_secs(1);

/// Keeps the latest instant per field: a delayed, older heartbeat or
/// sighting (from another node) must not move it back. KEYS: the hash.
/// ARGV: retention ms, then field/instant pairs.
const KEEP_LATEST_LUA: &str = r#"
for i = 2, #ARGV, 2 do
  local current = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '-1')
  if tonumber(ARGV[i + 1]) > current then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
"#;

/// The atomic commit (see `Store::commit`). Only bookkeeping runs here;
/// the attendance rules stay in Rust, which computed the fields to write.
///
/// KEYS: state, applied, log, heartbeats. ARGV: [1] expected version,
/// [2] event id ('' = no event), [3] received_at, [4] body, [5] retention
/// ms, [6] log cap, [7] expected tag ('' = not checked), [8] '1' to replace
/// the whole hash, [9] the new tag, [10] how many field/value pairs to set,
/// [11] how many fields to delete, [12] the log entry's kind ('' for a
/// webhook, the common case, which stores no kind field), then the pairs,
/// the fields, and the broadcasts to publish as (bus channel, message)
/// pairs, published in order. Returns the new version, -1 for a duplicate,
/// -2 for a conflict.
const COMMIT_LUA: &str = r#"
local has_event = ARGV[2] ~= ''
if has_event and redis.call('SISMEMBER', KEYS[2], ARGV[2]) == 1 then
  -- A replicated write even so: a WAIT after it then also covers the
  -- first, possibly unconfirmed, application of this event.
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
  return -1
end
local current = redis.call('HMGET', KEYS[1], 'v', 't')
local v = tonumber(current[1] or '0')
if v ~= tonumber(ARGV[1]) then return -2 end
if ARGV[7] ~= '' and current[2] ~= ARGV[7] then return -2 end
if has_event then
  redis.call('SADD', KEYS[2], ARGV[2])
  if ARGV[12] == '' then
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', 'id', ARGV[2], 'received_at', ARGV[3], 'body', ARGV[4])
  else
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', 'id', ARGV[2], 'received_at', ARGV[3], 'body', ARGV[4], 'kind', ARGV[12])
  end
end
if ARGV[8] == '1' then redis.call('DEL', KEYS[1]) end
redis.call('HSET', KEYS[1], 'v', v + 1, 't', ARGV[9])
local i = 13
local sets_end = i + 2 * tonumber(ARGV[10])
while i < sets_end do
  local last = math.min(i + 399, sets_end - 1)
  redis.call('HSET', KEYS[1], unpack(ARGV, i, last))
  i = last + 1
end
local dels_end = i + tonumber(ARGV[11])
while i < dels_end do
  local last = math.min(i + 399, dels_end - 1)
  redis.call('HDEL', KEYS[1], unpack(ARGV, i, last))
  i = last + 1
end
for k = 1, 4 do redis.call('PEXPIRE', KEYS[k], ARGV[5]) end
for k = i, #ARGV - 1, 2 do redis.call('PUBLISH', ARGV[k], ARGV[k + 1]) end
return v + 1
"#;

/// Fields of a room's state hash (see the key layout above).
const VERSION_FIELD: &str = "v";
const TAG_FIELD: &str = "t";
const ROOM_FIELD: &str = "room";
const PERSON_PREFIX: &str = "p:";
/// The whole state as one JSON, as rollcall before the per-person layout
/// wrote it: still read; the next commit rewrites the hash without it.
const LEGACY_STATE_FIELD: &str = "state";

/// Most log entries kept per room: far above any real session, a bound
/// against a runaway sender.
const LOG_CAP: usize = 100_000;

/// A room's key on one server: `rollcall:{<room>}:<what>`.
fn room_key(room: &RoomName, what: &str) -> String {
    format!("rollcall:{{{room}}}:{what}")
}

/// A room's key on Cluster: `rollcall:{<tag>}:room:<room>:<what>`, the tag
/// being the room's channel (or the room, when it has none).
fn cluster_room_key(tag: &str, room: &RoomName, what: &str) -> String {
    format!("rollcall:{{{tag}}}:room:{room}:{what}")
}

fn channel_key(channel: &str) -> String {
    format!("rollcall:channel:{{{channel}}}")
}

/// `<channel>[ <excluded socket id>]\n<frame>`: channel names and socket
/// ids contain neither a space nor a newline. A halt is
/// `<channel> !<halt>\n`: `!` starts no socket id, so no frame's header can
/// be read as one (and a node that does not know halts drops it as a
/// malformed id).
pub fn encode_broadcast(b: &Broadcast) -> Vec<u8> {
    if let Some(halt) = b.halt {
        return format!("{} !{}\n", b.channel, halt_name(halt)).into_bytes();
    }
    let except = b.except.as_ref().map_or("", |s| s.as_str());
    let mut out = Vec::with_capacity(b.channel.len() + 2 + except.len() + b.frame.len());
    out.extend_from_slice(b.channel.as_bytes());
    if !except.is_empty() {
        out.push(b' ');
        out.extend_from_slice(except.as_bytes());
    }
    out.push(b'\n');
    out.extend_from_slice(b.frame.as_bytes());
    out
}

/// A halt's name on the bus.
fn halt_name(halt: Halt) -> &'static str {
    match halt {
        Halt::SlowConsumer => "slow_consumer",
        Halt::Shutdown => "shutdown",
        Halt::Terminated => "terminated",
    }
}

/// The halt `name` stands for ([`halt_name`]).
pub(crate) fn parse_halt(name: &str) -> Option<Halt> {
    [Halt::SlowConsumer, Halt::Shutdown, Halt::Terminated]
        .into_iter()
        .find(|h| halt_name(*h) == name)
}

/// `<reply key>\n=<channel>[\n<channel>…]` or `<reply key>\n^<prefix>`.
pub(crate) fn encode_channel_query(reply_key: &str, query: &ChannelQuery) -> String {
    match query {
        ChannelQuery::Names(names) => format!("{reply_key}\n={}", names.join("\n")),
        ChannelQuery::Prefix(prefix) => format!("{reply_key}\n^{prefix}"),
    }
}

/// The inverse of [`encode_channel_query`].
pub(crate) fn decode_channel_query(message: &str) -> Option<(&str, ChannelQuery)> {
    let (reply_key, query) = message.split_once('\n')?;
    let query = if let Some(names) = query.strip_prefix('=') {
        ChannelQuery::Names(names.split('\n').map(str::to_string).collect())
    } else {
        ChannelQuery::Prefix(query.strip_prefix('^')?.to_string())
    };
    reply_key
        .starts_with("rollcall:channels:reply:")
        .then_some((reply_key, query))
}

/// Redis restarted (or failed over) and does not know the script.
fn is_noscript(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
}

impl RedisStore {
    /// A store on one Redis at `url` (see [`RedisStore::connect_to`]).
    pub async fn connect(
        url: &str,
        delivery: Arc<dyn LocalDelivery>,
        options: RedisOptions,
    ) -> Result<Self, StoreError> {
        Self::connect_to(&RedisTarget::Single(url.to_string()), delivery, options).await
    }

    /// A store on `target`. Does not fail when Redis is down: commands fail
    /// (503) until it is back, `ping` says so, and the bus reconnects.
    pub async fn connect_to(
        target: &RedisTarget,
        delivery: Arc<dyn LocalDelivery>,
        options: RedisOptions,
    ) -> Result<Self, StoreError> {
        let redis = Redis::open(target, options.command_timeout)?;
        let bus = bus::spawn(
            redis.clone(),
            delivery,
            options.command_timeout,
            Arc::clone(&options.bus_metrics),
        );
        // Until the bus is subscribed, this node's sockets would miss
        // broadcasts, its own commits' included: wait for it, bounded, so
        // a node that starts while Redis is up never has that gap.
        let mut connections = bus.connections();
        if tokio::time::timeout(options.command_timeout, connections.wait_for(|n| *n > 0))
            .await
            .is_err()
        {
            tracing::warn!("the broadcast bus is not subscribed yet; continuing (Redis down?)");
        }
        Ok(Self {
            commit_script: redis.script(COMMIT_LUA),
            keep_latest_script: redis.script(KEEP_LATEST_LUA),
            release_script: redis.script(RELEASE_LUA),
            indexes: Indexes {
                buckets: if redis.is_cluster() { INDEX_BUCKETS } else { 1 },
            },
            redis,
            bus,
            cache: StateCache::new(options.state_cache_rooms),
            options,
            unreplicated: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The Redis handle this store runs on (the other Redis-backed stores
    /// share it).
    pub fn redis(&self) -> &Redis {
        &self.redis
    }

    /// The index updates a commit makes (before it: see `commit`).
    fn index_hints(&self, pipe: &mut redis::Pipeline, room: &RoomName, commit: &Commit) {
        let bucket = self.indexes.bucket(room);
        if let Some(due) = commit.due {
            pipe.cmd("ZADD")
                .arg(self.indexes.due(bucket))
                .arg("LT")
                .arg(due)
                .arg(room.as_str())
                .ignore();
        }
        if let Some(until) = commit.live_until {
            pipe.cmd("ZADD")
                .arg(self.indexes.live(bucket))
                .arg("GT")
                .arg(until)
                .arg(room.as_str())
                .ignore();
        }
        if commit.state.is_some() {
            pipe.cmd("ZADD")
                .arg(self.indexes.rooms(bucket))
                .arg(crate::domain::now_millis())
                .arg(room.as_str())
                .ignore();
        }
        if commit.state.is_some() || commit.live_until.is_some() {
            self.indexes.prune(pipe, bucket, self.options.retention);
        }
    }

    /// The key `what` of `room` (see the key layouts above).
    fn room_key(&self, room: &RoomName, what: &str) -> String {
        if !self.redis.is_cluster() {
            return room_key(room, what);
        }
        match self.options.room_channel.of(room) {
            Some(channel) => cluster_room_key(&channel, room, what),
            None => cluster_room_key(room.as_str(), room, what),
        }
    }

    /// With `wait_replicas`, a duplicate is acknowledged like a commit:
    /// only once replicas have the event's first application, which may be
    /// the very one whose confirmation failed. A replicated no-op write (the
    /// applied set's expiry, refreshed) and a `WAIT` after it on the same
    /// connection prove that, replication being in order.
    async fn confirm_applied(&self, room: &RoomName) -> Result<(), StoreError> {
        let key = self.room_key(room, "applied");
        let wanted = self.replicas_for(&key).await;
        if wanted == 0 {
            return Ok(());
        }
        let ttl = self.options.retention.as_millis() as i64;
        let wait = self.options.wait_timeout.as_millis() as u64;
        let (acked,): (i64,) = self
            .redis
            .run_blocking(|mut c| async move {
                redis::pipe()
                    .pexpire(&key, ttl)
                    .ignore()
                    .cmd("WAIT")
                    .arg(wanted)
                    .arg(wait)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        if !self.confirmed(acked, &self.room_key(room, "applied")).await {
            return Err(StoreError::Unavailable(format!(
                "not confirmed by {wanted} replica(s) within {:?}",
                self.options.wait_timeout
            )));
        }
        Ok(())
    }

    /// Whether `acked` replicas (a `WAIT`'s answer after a write to `key`)
    /// are enough: `wait_replicas`, or on Cluster fewer when the shard that
    /// owns `key` has fewer replicas that could ever be promoted. A shard
    /// whose replicas have all failed (its replica was just promoted after
    /// its master died, and nothing has rejoined yet) cannot fail over and
    /// lose the write: its master's fsync (`appendfsync always`) is then
    /// the acknowledgement, as on one Redis, instead of refusing every
    /// webhook of its rooms until a replica is back. A replica that is
    /// alive but cut off from its master still counts (it could be promoted
    /// with the write missing), and so does one whose health is unknown.
    async fn confirmed(&self, acked: i64, key: &str) -> bool {
        let wanted = self.options.wait_replicas as i64;
        if acked >= wanted {
            return true;
        }
        if !self.redis.is_cluster() {
            return false;
        }
        match self.promotable_replicas(key).await {
            Ok(promotable) => {
                if promotable == 0 {
                    let until = std::time::Instant::now() + UNREPLICATED_RECHECK;
                    self.lock_unreplicated().insert(Slot::for_key(key), until);
                }
                acked >= wanted.min(promotable as i64)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot tell a shard's replicas; the write stays unconfirmed");
                false
            }
        }
    }

    /// How many replicas must confirm a write to `key`: `wait_replicas`, or
    /// 0 while its shard is known to have none that could be promoted. Once
    /// found so (by a `WAIT` that fell short), the shard is asked again
    /// (`CLUSTER SHARDS`, one round trip) every `UNREPLICATED_RECHECK`
    /// rather than made to time out a `WAIT` each time.
    async fn replicas_for(&self, key: &str) -> usize {
        let wanted = self.options.wait_replicas;
        if wanted == 0 || !self.redis.is_cluster() {
            return wanted;
        }
        let slot = Slot::for_key(key);
        let known = self.lock_unreplicated().get(&slot).copied();
        match known {
            None => wanted,
            Some(until) if until > std::time::Instant::now() => 0,
            Some(_) => match self.promotable_replicas(key).await {
                Ok(0) => {
                    let until = std::time::Instant::now() + UNREPLICATED_RECHECK;
                    self.lock_unreplicated().insert(slot, until);
                    0
                }
                _ => {
                    self.lock_unreplicated().remove(&slot);
                    wanted
                }
            },
        }
    }

    fn lock_unreplicated(&self) -> std::sync::MutexGuard<'_, HashMap<Slot, std::time::Instant>> {
        // A map replaced entry by entry: never inconsistent.
        self.unreplicated
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The replicas of the shard that owns `key`, by `CLUSTER SHARDS`,
    /// that are not marked failed.
    async fn promotable_replicas(&self, key: &str) -> Result<usize, StoreError> {
        let key = key.to_string();
        let (slot, shards): (i64, redis::Value) = self
            .run(|mut c| async move {
                redis::pipe()
                    .cmd("CLUSTER")
                    .arg("KEYSLOT")
                    .arg(&key)
                    .cmd("CLUSTER")
                    .arg("SHARDS")
                    .query_async(&mut c)
                    .await
            })
            .await?;
        promotable_in(&shards, slot)
            .ok_or_else(|| StoreError::Unavailable(format!("no shard serves slot {slot}")))
    }

    /// Presence and the node registry on the same Redis and pool.
    pub fn presence(&self) -> super::presence::RedisPresence {
        super::presence::RedisPresence::new(self.redis.clone())
    }

    /// Counts (re)connections of the pub/sub subscriber. A change after the
    /// first means broadcasts may have been missed while it was down, so
    /// local subscribers should be re-sent snapshots.
    pub fn bus_connections(&self) -> tokio::sync::watch::Receiver<u64> {
        self.bus.connections()
    }

    /// What a new local subscriber awaits before its snapshot: this node's
    /// subscription to the channel's broadcasts (`Services::feed`).
    pub fn feed(&self) -> Arc<bus::Feed> {
        self.bus.feed()
    }

    /// Parses a state hash just read and remembers it for later commits.
    fn remember_loaded(
        &self,
        room: &RoomName,
        fields: HashMap<String, String>,
    ) -> Result<Option<RoomRecord>, StoreError> {
        let Some(cached) = parse_hash(room, fields)? else {
            // Nothing there (never written, or expired): nothing to keep.
            self.cache.remove(room);
            return Ok(None);
        };
        let record = RoomRecord {
            state: Arc::clone(&cached.state),
            version: cached.version,
        };
        self.cache.put(room, cached);
        Ok(Some(record))
    }

    async fn run_shared<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: Fn(super::conn::Conn) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        self.redis.run_shared(f).await
    }

    /// Runs `f` on a connection for ordinary commands, bounded by the
    /// command timeout.
    pub(super) async fn run<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(super::conn::Conn) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        self.redis.run(f).await
    }
}

#[async_trait]
impl Store for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.run(|mut c| async move { redis::cmd("PING").query_async::<()>(&mut c).await })
            .await
    }
}

#[async_trait]
impl RoomStore for RedisStore {
    async fn load_room(&self, room: &RoomName) -> Result<Option<RoomRecord>, StoreError> {
        let key = self.room_key(room, "state");
        let fields: HashMap<String, String> = self
            .run(|mut c| async move { c.hgetall(&key).await })
            .await?;
        self.remember_loaded(room, fields)
    }

    fn cached_room(&self, room: &RoomName) -> Option<RoomRecord> {
        let cached = self.cache.get(room)?;
        cached.tag.as_ref()?;
        Some(RoomRecord {
            state: cached.state,
            version: cached.version,
        })
    }

    async fn load_room_for_user(
        &self,
        room: &RoomName,
        user: &UserId,
    ) -> Result<Option<Arc<RoomState>>, StoreError> {
        let key = self.room_key(room, "state");
        let person_field = format!("{PERSON_PREFIX}{user}");
        let (version, room_json, person_json, legacy): (
            Option<u64>,
            Option<String>,
            Option<String>,
            Option<String>,
        ) = self
            .run_shared(|mut c| {
                let mut cmd = redis::cmd("HMGET");
                cmd.arg(&key)
                    .arg(VERSION_FIELD)
                    .arg(ROOM_FIELD)
                    .arg(&person_field)
                    .arg(LEGACY_STATE_FIELD);
                async move { cmd.query_async(&mut c).await }
            })
            .await?;
        if version.filter(|v| *v > 0).is_none() {
            return Ok(None);
        }
        if let Some(legacy) = legacy {
            return Ok(Some(Arc::new(parse_json(room, &legacy)?)));
        }
        let mut state = match room_json {
            Some(json) => parse_json::<RoomState>(room, &json)?,
            None => RoomState::default(),
        };
        if let Some(json) = person_json {
            state
                .people
                .insert(user.clone(), Arc::new(parse_json(room, &json)?));
        }
        Ok(Some(Arc::new(state)))
    }

    async fn load_room_for_event(
        &self,
        room: &RoomName,
        id: &EventId,
    ) -> Result<(Option<RoomRecord>, bool), StoreError> {
        let (state_key, applied_key) =
            (self.room_key(room, "state"), self.room_key(room, "applied"));
        let id = id.to_string();
        let (fields, applied): (HashMap<String, String>, bool) = self
            .run(|mut c| async move {
                redis::pipe()
                    .hgetall(&state_key)
                    .sismember(&applied_key, &id)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        if applied {
            self.confirm_applied(room).await?;
        }
        Ok((self.remember_loaded(room, fields)?, applied))
    }

    async fn is_applied(&self, room: &RoomName, id: &EventId) -> Result<bool, StoreError> {
        let key = self.room_key(room, "applied");
        let id = id.to_string();
        self.run(|mut c| async move { c.sismember(&key, &id).await })
            .await
    }

    async fn commit(&self, room: &RoomName, commit: Commit) -> Result<CommitOutcome, StoreError> {
        // The state the hash holds at the expected version, if this node
        // knows it by its tag: then only the difference is written.
        let base = self
            .cache
            .get(room)
            .filter(|c| c.version == commit.expected_version && c.tag.is_some());
        let mut write = StateWrite::default();
        if let Some(new) = &commit.state {
            match &base {
                Some(base) => write.diff(&base.state, new)?,
                None => write.replace(new)?,
            }
        }
        let expected_tag = base.as_ref().and_then(|b| b.tag.clone());
        let new_tag = format!("{:016x}", rand::random::<u64>());
        let (event_id, received_at, body, kind) = match &commit.event {
            Some(e) => (
                e.id.as_str(),
                e.received_at,
                e.body.as_str(),
                match e.kind {
                    LogKind::Webhook => "",
                    other => other.as_str(),
                },
            ),
            None => ("", 0, "", ""),
        };
        // The index hints go first, so an index never lags a commit: a
        // commit that then loses its race only makes the room look due or
        // written a little early. On one server they share the commit's
        // round trip; on Cluster they live in another slot (an index
        // bucket), so they are their own round trip before it.
        let mut hints = redis::pipe();
        self.index_hints(&mut hints, room, &commit);
        // On Cluster: the hints, sent on their own first (None on one
        // server, where they lead the commit's own pipeline).
        let (mut pipe, hints) = if self.redis.is_cluster() && !hints.is_empty() {
            (redis::pipe(), Some(hints))
        } else if self.redis.is_cluster() {
            (redis::pipe(), None)
        } else {
            (hints, None)
        };
        let state_key = self.room_key(room, "state");
        // On Cluster a script may only publish on its own slot: the room's
        // channel shares it (its hash tag); a broadcast to another channel
        // (none today) is published right after the commit instead.
        let (in_script, after): (Vec<&Broadcast>, Vec<&Broadcast>) =
            commit.broadcasts.iter().partition(|b| {
                !self.redis.is_cluster()
                    || Slot::for_key(bus_channel(&b.channel)) == Slot::for_key(&state_key)
            });
        pipe.cmd("EVALSHA")
            .arg(self.commit_script.get_hash())
            .arg(4)
            .arg(&state_key)
            .arg(self.room_key(room, "applied"))
            .arg(self.room_key(room, "log"))
            .arg(self.room_key(room, "heartbeats"))
            .arg(commit.expected_version)
            .arg(event_id)
            .arg(received_at)
            .arg(body)
            .arg(self.options.retention.as_millis() as u64)
            .arg(LOG_CAP)
            .arg(expected_tag.as_deref().unwrap_or(""))
            .arg(if write.replace { "1" } else { "0" })
            .arg(&new_tag)
            .arg(write.sets.len())
            .arg(write.deletes.len())
            .arg(kind);
        for (field, value) in &write.sets {
            pipe.arg(field).arg(value);
        }
        for field in &write.deletes {
            pipe.arg(field);
        }
        for b in in_script {
            pipe.arg(bus_channel(&b.channel)).arg(encode_broadcast(b));
        }
        let after: Vec<Broadcast> = after.into_iter().cloned().collect();
        // Whether the hints' replicas fell short (only with `wait_replicas`).
        let mut hints_unconfirmed = false;
        let bucket_key = self.indexes.due(self.indexes.bucket(room));
        let wanted = self.replicas_for(&state_key).await;
        let hints_wanted = self.replicas_for(&bucket_key).await;
        let result = match &hints {
            None => self.send_commit(&mut pipe, wanted).await,
            // Applied before the commit, like the hints on one server. With
            // `wait_replicas` they must reach a replica too before the
            // webhook is acknowledged (a failover that lost them would
            // leave an acknowledged room unswept): a `WAIT` on their
            // connection, running while the commit does.
            Some(hints) if hints_wanted > 0 => {
                let wait = self.options.wait_timeout.as_millis() as u64;
                let pipe = &mut pipe;
                let sent = self
                    .redis
                    .run_blocking(|mut c| async move {
                        hints.query_async::<()>(&mut c).await?;
                        let mut confirm = redis::cmd("WAIT");
                        confirm.arg(hints_wanted).arg(wait);
                        let (hints_acked, sent) = tokio::join!(
                            confirm.query_async::<i64>(&mut c),
                            self.send_commit(pipe, wanted)
                        );
                        Ok((hints_acked?, sent))
                    })
                    .await;
                match sent {
                    Ok((hints_acked, sent)) => {
                        hints_unconfirmed = !self.confirmed(hints_acked, &bucket_key).await;
                        sent
                    }
                    Err(e) => Err(e),
                }
            }
            Some(hints) => {
                self.run_shared(|mut c| async move { hints.query_async::<()>(&mut c).await })
                    .await?;
                self.send_commit(&mut pipe, wanted).await
            }
        };
        let (result, acked) = match result {
            Ok(result) => result,
            Err(e) => {
                // Whether it was applied is unknown: forget the room.
                self.cache.remove(room);
                return Err(e);
            }
        };
        let confirmed = match acked {
            Some(n) => self.confirmed(n, &self.room_key(room, "state")).await,
            None => true,
        };
        self.settle(
            room,
            commit,
            base,
            new_tag,
            confirmed && !hints_unconfirmed,
            result,
            after,
        )
        .await
    }

    async fn link_channel(&self, channel: &str, room: &RoomName) -> Result<(), StoreError> {
        let key = channel_key(channel);
        let room = room.to_string();
        let ttl = self.options.retention.as_millis() as i64;
        self.run(|mut c| async move {
            redis::pipe()
                .sadd(&key, &room)
                .ignore()
                .pexpire(&key, ttl)
                .ignore()
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    async fn rooms_of_channel(&self, channel: &str) -> Result<Vec<RoomName>, StoreError> {
        let key = channel_key(channel);
        let mut rooms: Vec<String> = self
            .run(|mut c| async move { c.smembers(&key).await })
            .await?;
        rooms.sort_unstable();
        Ok(rooms.into_iter().map(RoomName::new).collect())
    }

    async fn event_log(&self, room: &RoomName) -> Result<Vec<LoggedEvent>, StoreError> {
        let key = self.room_key(room, "log");
        // Up to the whole log (`LOG_CAP` entries): on a connection of its
        // own, so a long reply holds up no commit sharing a connection.
        let entries: Vec<(String, Vec<(String, String)>)> = self
            .redis
            .run_blocking(|mut c| async move {
                redis::cmd("XRANGE")
                    .arg(&key)
                    .arg("-")
                    .arg("+")
                    .query_async(&mut c)
                    .await
            })
            .await?;
        entries
            .into_iter()
            .map(|(entry_id, fields)| {
                let mut id = None;
                let mut received_at = None;
                let mut body = None;
                let mut kind = Some(LogKind::Webhook);
                for (k, v) in fields {
                    match k.as_str() {
                        "id" => id = Some(v),
                        "received_at" => received_at = v.parse().ok(),
                        "body" => body = Some(v),
                        "kind" => kind = LogKind::parse(&v),
                        _ => {}
                    }
                }
                match (id, received_at, body, kind) {
                    (Some(id), Some(received_at), Some(body), Some(kind)) => Ok(LoggedEvent {
                        id: EventId::new(id),
                        received_at,
                        body,
                        kind,
                    }),
                    _ => Err(StoreError::Corrupt(format!(
                        "log entry {entry_id} of {room} lacks a field or has an unknown kind"
                    ))),
                }
            })
            .collect()
    }

    async fn recent_rooms(&self, limit: usize) -> Result<Vec<(RoomName, UnixMillis)>, StoreError> {
        // Rooms older than the retention have expired: drop their entries.
        let oldest = crate::domain::now_millis() - self.options.retention.as_millis() as i64;
        let expired = self.indexes.each(|b| {
            let mut cmd = redis::cmd("ZREMRANGEBYSCORE");
            cmd.arg(self.indexes.rooms(b))
                .arg("-inf")
                .arg(format!("({oldest}"));
            cmd
        });
        self.redis.query_each::<()>(expired).await?;
        // The newest first, over every bucket.
        let rooms = self
            .by_score(|b| self.indexes.rooms(b), "+inf", "-inf", limit, true)
            .await?;
        Ok(rooms
            .into_iter()
            .map(|(room, at)| (RoomName::new(room), at as UnixMillis))
            .collect())
    }
}

impl RedisStore {
    /// The first `limit` members of an index, with scores from `from` to
    /// `to` (`ZRANGE … BYSCORE`), over every bucket (`key` names bucket
    /// `n`'s key): lowest score first, or highest with `rev`.
    async fn by_score(
        &self,
        key: impl Fn(usize) -> String,
        from: impl redis::ToRedisArgs + Copy,
        to: impl redis::ToRedisArgs + Copy,
        limit: usize,
        rev: bool,
    ) -> Result<Vec<(String, f64)>, StoreError> {
        let ranges = self.indexes.each(|b| {
            let mut cmd = redis::cmd("ZRANGE");
            cmd.arg(key(b)).arg(from).arg(to).arg("BYSCORE");
            if rev {
                cmd.arg("REV");
            }
            cmd.arg("LIMIT").arg(0).arg(limit).arg("WITHSCORES");
            cmd
        });
        Ok(merge_ranges(
            self.redis.query_each(ranges).await?,
            limit,
            rev,
        ))
    }

    /// Sends the commit's pipeline (the script, and `WAIT` when replicas
    /// must confirm): the script's answer and how many replicas confirmed.
    async fn send_commit(
        &self,
        pipe: &mut redis::Pipeline,
        wanted: usize,
    ) -> Result<(i64, Option<i64>), StoreError> {
        let script = &self.commit_script;
        if wanted == 0 {
            let pipe = &pipe;
            self.run_shared(|mut c| async move {
                match pipe.query_async::<(i64,)>(&mut c).await {
                    // Redis restarted and forgot the script: load it, redo
                    // (the ZADD LT is idempotent, the script did not run).
                    Err(e) if is_noscript(&e) => {
                        script.prepare_invoke().load_async(&mut c).await?;
                        pipe.query_async(&mut c).await
                    }
                    other => other,
                }
            })
            .await
            .map(|(result,)| (result, None))
        } else {
            // `WAIT` right after the script, on the same connection: it
            // blocks that connection until replicas have every write made
            // on it, so it runs on a pooled connection of its own (on the
            // shared one it would hold every other commit up).
            pipe.cmd("WAIT")
                .arg(wanted)
                .arg(self.options.wait_timeout.as_millis() as u64);
            let pipe = &pipe;
            self.redis
                .run_blocking(|mut c| async move {
                    match pipe.query_async::<(i64, i64)>(&mut c).await {
                        Err(e) if is_noscript(&e) => {
                            script.prepare_invoke().load_async(&mut c).await?;
                            pipe.query_async(&mut c).await
                        }
                        other => other,
                    }
                })
                .await
                .map(|(result, acked)| (result, Some(acked)))
        }
    }

    /// What a commit's answer means: the outcome, the cache updated, the
    /// broadcasts outside the room's slot published, and an error when
    /// replicas did not confirm it.
    #[allow(clippy::too_many_arguments)]
    async fn settle(
        &self,
        room: &RoomName,
        commit: Commit,
        base: Option<Cached>,
        new_tag: String,
        confirmed: bool,
        result: i64,
        after: Vec<Broadcast>,
    ) -> Result<CommitOutcome, StoreError> {
        // Applied on the master but not (yet) on enough replicas: a
        // failover now could lose it, so it is not acknowledged. What the
        // master holds is still what this node caches below.
        let unconfirmed = !confirmed;
        let outcome = match result {
            -1 => CommitOutcome::Duplicate,
            -2 => {
                self.cache.remove(room);
                CommitOutcome::Conflict
            }
            v => {
                let version = v as u64;
                match commit.state.or(base.map(|b| b.state)) {
                    Some(state) => self.cache.put(
                        room,
                        Cached {
                            tag: Some(new_tag),
                            version,
                            state,
                        },
                    ),
                    // A version bump over a state this node does not know.
                    None => self.cache.remove(room),
                }
                CommitOutcome::Committed { version }
            }
        };
        if matches!(outcome, CommitOutcome::Committed { .. })
            && !after.is_empty()
            && let Err(e) = Broker::publish(self, after).await
        {
            // Committed: a retry would be a duplicate and publish nothing,
            // so the commit stands; subscribers catch up at the next update.
            tracing::warn!(room = %room, error = %e, "a broadcast outside the room's slot was not published");
        }
        if unconfirmed && outcome != CommitOutcome::Conflict {
            return Err(StoreError::Unavailable(format!(
                "the commit was not confirmed by {} replica(s) within {:?}",
                self.options.wait_replicas, self.options.wait_timeout
            )));
        }
        Ok(outcome)
    }
}

#[async_trait]
impl Broker for RedisStore {
    async fn publish(&self, broadcasts: Vec<Broadcast>) -> Result<(), StoreError> {
        if broadcasts.is_empty() {
            return Ok(());
        }
        let publish = self.redis.publish_command();
        // In order: one pipeline on one server; on Cluster one per slot
        // (a pipeline may not span slots), in order within each, so one
        // channel's broadcasts still leave in the order given.
        let mut by_slot: Vec<(Slot, redis::Pipeline)> = Vec::new();
        for b in &broadcasts {
            let name = bus_channel(&b.channel);
            let slot = if self.redis.is_cluster() {
                Slot::for_key(&name)
            } else {
                Slot::for_key("")
            };
            let pipe = match by_slot.iter_mut().find(|(s, _)| *s == slot) {
                Some((_, pipe)) => pipe,
                None => {
                    by_slot.push((slot, redis::pipe()));
                    &mut by_slot.last_mut().expect("just pushed").1
                }
            };
            pipe.cmd(publish)
                .arg(name)
                .arg(encode_broadcast(b))
                .ignore();
        }
        self.redis
            .pipelines(by_slot.into_iter().map(|(_, pipe)| pipe).collect())
            .await
    }

    async fn channel_subscriptions(
        &self,
        query: &ChannelQuery,
    ) -> Result<SubscriptionCounts, StoreError> {
        let reply_key = format!("rollcall:channels:reply:{:016x}", rand::random::<u64>());
        let message = encode_channel_query(&reply_key, query);
        // On Cluster a sharded publish: every node's bus subscribes the
        // query channel on the one shard that owns its slot, so the count
        // SPUBLISH answers is every node (a plain PUBLISH counts only the
        // subscribers of the cluster node it reached).
        let publish = self.redis.publish_command();
        let nodes: usize = self
            .run(|mut c| async move {
                redis::cmd(publish)
                    .arg(CHANNELS_QUERY_CHANNEL)
                    .arg(message)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let mut counts = SubscriptionCounts::new();
        let mut answered = 0;
        let deadline = tokio::time::Instant::now() + CHANNELS_ANSWER_TIMEOUT;
        let slice = BLPOP_SLICE.min(self.options.command_timeout / 2);
        while answered < nodes {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let wait = left.min(slice).as_secs_f64().max(0.01);
            let key = reply_key.clone();
            let popped: Option<(String, String)> = self
                .redis
                .run_blocking(|mut c| async move {
                    redis::cmd("BLPOP")
                        .arg(&key)
                        .arg(wait)
                        .query_async(&mut c)
                        .await
                })
                .await?;
            let Some((_, answer)) = popped else { continue };
            let local: SubscriptionCounts =
                serde_json::from_str(&answer).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            for (channel, n) in local {
                *counts.entry(channel).or_default() += n;
            }
            answered += 1;
        }
        if answered < nodes {
            let key = reply_key.clone();
            // Late answers would expire anyway; this only tidies up early.
            let _ = self
                .run(|mut c| async move { c.del::<_, ()>(&key).await })
                .await;
            return Err(StoreError::Unavailable(format!(
                "only {answered} of {nodes} nodes answered the channel query in time"
            )));
        }
        Ok(counts)
    }
}

#[async_trait]
impl Signals for RedisStore {
    async fn record_heartbeat(
        &self,
        room: &RoomName,
        user: &UserId,
        at: UnixMillis,
    ) -> Result<(), StoreError> {
        let key = self.room_key(room, "heartbeats");
        let retention = self.options.retention.as_millis() as u64;
        // Repeatable (the script keeps the later heartbeat), so it may ride
        // the shared connection.
        self.run_shared(|mut c| {
            let mut invocation = self.keep_latest_script.prepare_invoke();
            invocation
                .key(&key)
                .arg(retention)
                .arg(user.as_str())
                .arg(at);
            async move { invocation.invoke_async::<()>(&mut c).await }
        })
        .await
    }

    async fn heartbeats(
        &self,
        room: &RoomName,
    ) -> Result<BTreeMap<UserId, UnixMillis>, StoreError> {
        let key = self.room_key(room, "heartbeats");
        let beats: BTreeMap<String, UnixMillis> = self
            .run(|mut c| async move { c.hgetall(&key).await })
            .await?;
        Ok(beats
            .into_iter()
            .map(|(u, at)| (UserId::new(u), at))
            .collect())
    }

    async fn record_sightings(
        &self,
        room: &RoomName,
        sightings: &[(ParticipantSid, UnixMillis)],
    ) -> Result<(), StoreError> {
        if sightings.is_empty() {
            return Ok(());
        }
        let key = self.room_key(room, "seen");
        let retention = self.options.retention.as_millis() as u64;
        // Repeatable (the script keeps the later instant).
        self.run_shared(|mut c| {
            let mut invocation = self.keep_latest_script.prepare_invoke();
            invocation.key(&key).arg(retention);
            for (sid, at) in sightings {
                invocation.arg(sid.as_str()).arg(*at);
            }
            async move { invocation.invoke_async::<()>(&mut c).await }
        })
        .await
    }

    async fn sightings(
        &self,
        room: &RoomName,
    ) -> Result<BTreeMap<ParticipantSid, UnixMillis>, StoreError> {
        let key = self.room_key(room, "seen");
        let seen: BTreeMap<String, UnixMillis> = self
            .run(|mut c| async move { c.hgetall(&key).await })
            .await?;
        Ok(seen
            .into_iter()
            .map(|(sid, at)| (ParticipantSid::new(sid), at))
            .collect())
    }
}

#[async_trait]
impl Jobs for RedisStore {
    async fn due_no_later_than(&self, room: &RoomName, at: UnixMillis) -> Result<(), StoreError> {
        let key = self.indexes.due(self.indexes.bucket(room));
        let room = room.to_string();
        // Repeatable (ZADD LT only ever lowers), so on the shared connection.
        self.run_shared(|mut c| {
            let mut cmd = redis::cmd("ZADD");
            cmd.arg(&key).arg("LT").arg(at).arg(&room);
            async move { cmd.query_async::<()>(&mut c).await }
        })
        .await
    }

    async fn set_due(&self, room: &RoomName, at: Option<UnixMillis>) -> Result<(), StoreError> {
        let key = self.indexes.due(self.indexes.bucket(room));
        let room = room.to_string();
        self.run(|mut c| async move {
            match at {
                Some(at) => c.zadd::<_, _, _, ()>(&key, &room, at).await,
                None => c.zrem::<_, _, ()>(&key, &room).await,
            }
        })
        .await
    }

    async fn live_until(&self, room: &RoomName, until: UnixMillis) -> Result<(), StoreError> {
        let bucket = self.indexes.bucket(room);
        let key = self.indexes.live(bucket);
        let room = room.to_string();
        // Repeatable (ZADD GT only ever raises), so on the shared connection.
        let (indexes, retention) = (&self.indexes, self.options.retention);
        self.run_shared(|mut c| {
            let mut pipe = redis::pipe();
            pipe.cmd("ZADD")
                .arg(&key)
                .arg("GT")
                .arg(until)
                .arg(&room)
                .ignore();
            indexes.prune(&mut pipe, bucket, retention);
            async move { pipe.query_async::<()>(&mut c).await }
        })
        .await
    }

    async fn live_rooms(&self, now: UnixMillis, limit: usize) -> Result<Vec<RoomName>, StoreError> {
        let lapsed = self.indexes.each(|b| {
            let mut cmd = redis::cmd("ZREMRANGEBYSCORE");
            cmd.arg(self.indexes.live(b))
                .arg("-inf")
                .arg(format!("({now}"));
            cmd
        });
        self.redis.query_each::<()>(lapsed).await?;
        let rooms = self
            .by_score(|b| self.indexes.live(b), now, "+inf", limit, false)
            .await?;
        Ok(rooms
            .into_iter()
            .map(|(room, _)| RoomName::new(room))
            .collect())
    }

    async fn due_rooms(&self, now: UnixMillis, limit: usize) -> Result<Vec<RoomName>, StoreError> {
        // The earliest due first, over every bucket.
        let rooms = self
            .by_score(|b| self.indexes.due(b), "-inf", now, limit, false)
            .await?;
        Ok(rooms
            .into_iter()
            .map(|(room, _)| RoomName::new(room))
            .collect())
    }

    async fn try_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        let key = format!("rollcall:lease:{name}");
        let holder = holder.to_string();
        let ttl_ms = ttl.as_millis().max(1) as u64;
        let taken: Option<String> = self
            .run(|mut c| async move {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(&holder)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(taken.is_some())
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let mut invocation = self.release_script.prepare_invoke();
        invocation.key(format!("rollcall:lease:{name}")).arg(holder);
        self.run(|mut c| async move { invocation.invoke_async::<()>(&mut c).await })
            .await
    }
}

/// Deletes a lease only if its holder is still the caller.
const RELEASE_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
"#;

fn parse_json<T: serde::de::DeserializeOwned>(
    room: &RoomName,
    json: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("state of {room}: {e}")))
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// A room's state hash as read: the version, the tag, the state.
fn parse_hash(
    room: &RoomName,
    mut fields: HashMap<String, String>,
) -> Result<Option<Cached>, StoreError> {
    let version = match fields.remove(VERSION_FIELD) {
        Some(v) => v
            .parse::<u64>()
            .map_err(|e| StoreError::Corrupt(format!("version of {room}: {e}")))?,
        None => 0,
    };
    if version == 0 {
        return Ok(None);
    }
    let tag = fields.remove(TAG_FIELD);
    if let Some(legacy) = fields.remove(LEGACY_STATE_FIELD) {
        // Diffing against it would leave the legacy field behind: no tag,
        // so the next commit rewrites the hash.
        return Ok(Some(Cached {
            tag: None,
            version,
            state: Arc::new(parse_json(room, &legacy)?),
        }));
    }
    let mut state = match fields.remove(ROOM_FIELD) {
        Some(json) => parse_json::<RoomState>(room, &json)?,
        None => RoomState::default(),
    };
    for (field, json) in fields {
        if let Some(user) = field.strip_prefix(PERSON_PREFIX) {
            state
                .people
                .insert(UserId::new(user), Arc::new(parse_json(room, &json)?));
        }
    }
    Ok(Some(Cached {
        tag,
        version,
        state: Arc::new(state),
    }))
}

/// What a commit writes into the state hash.
#[derive(Default)]
struct StateWrite {
    /// Delete the hash first: `sets` is the whole state.
    replace: bool,
    sets: Vec<(String, String)>,
    deletes: Vec<String>,
}

impl StateWrite {
    fn replace(&mut self, new: &RoomState) -> Result<(), StoreError> {
        self.replace = true;
        self.sets.reserve(new.people.len() + 1);
        self.sets
            .push((ROOM_FIELD.into(), to_json(&room_part(new))?));
        for (user, person) in &new.people {
            self.sets
                .push((format!("{PERSON_PREFIX}{user}"), to_json(&**person)?));
        }
        Ok(())
    }

    /// The fields that turn `base` (what the hash holds) into `new`.
    fn diff(&mut self, base: &RoomState, new: &RoomState) -> Result<(), StoreError> {
        if !same_room_part(base, new) {
            self.sets
                .push((ROOM_FIELD.into(), to_json(&room_part(new))?));
        }
        for (user, person) in &new.people {
            let unchanged = base
                .people
                .get(user)
                .is_some_and(|old| Arc::ptr_eq(old, person) || old == person);
            if !unchanged {
                self.sets
                    .push((format!("{PERSON_PREFIX}{user}"), to_json(&**person)?));
            }
        }
        for user in base.people.keys() {
            if !new.people.contains_key(user) {
                self.deletes.push(format!("{PERSON_PREFIX}{user}"));
            }
        }
        Ok(())
    }
}

/// Whether the room-level facts (all but the people) are equal.
fn same_room_part(a: &RoomState, b: &RoomState) -> bool {
    let RoomState {
        people: _,
        finished,
        schedule,
        metadata_schedule,
        finalization,
    } = a;
    *finished == b.finished
        && *schedule == b.schedule
        && *metadata_schedule == b.metadata_schedule
        && *finalization == b.finalization
}

/// The room-level facts of a state, without the people: the `room` field.
/// Destructured so that a new field of `RoomState` must be placed here.
fn room_part(state: &RoomState) -> RoomState {
    let RoomState {
        people: _,
        finished,
        schedule,
        metadata_schedule,
        finalization,
    } = state;
    RoomState {
        people: Default::default(),
        finished: finished.clone(),
        schedule: schedule.clone(),
        metadata_schedule: metadata_schedule.clone(),
        finalization: finalization.clone(),
    }
}

/// Buckets of each global room index on Cluster: enough to spread them
/// over that many masters, few enough that a sweep (one command per bucket)
/// stays cheap.
const INDEX_BUCKETS: usize = 32;

/// The global room indexes, each a sorted set of room names:
///
/// - `due`: room → when the sweeper next has work there (ms)
///   (`Store::due_rooms`);
/// - `live`: room → until when it is live (open cycles, or inside its
///   window): the rooms reconciliation asks LiveKit about (rule 23);
/// - `rooms`: room → its last commit (ms): `GET /api/sessions`.
///
/// On one server each is one key (`rollcall:due`, `rollcall:live`,
/// `rollcall:rooms`). On Cluster one key would be one slot that every
/// commit and heartbeat of the whole deployment writes: each index is split
/// into [`INDEX_BUCKETS`] buckets (`rollcall:{ix<n>}:due`, …; a bucket's
/// three keys share a slot), a room always in the bucket its name hashes
/// to, and readers query every bucket and merge.
struct Indexes {
    buckets: usize,
}

impl Indexes {
    /// The bucket `room` lives in: FNV-1a of its name, stable across
    /// processes and versions (a room must not move between buckets).
    fn bucket(&self, room: &RoomName) -> usize {
        if self.buckets == 1 {
            return 0;
        }
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in room.as_str().bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        (hash % self.buckets as u64) as usize
    }

    fn key(&self, bucket: usize, index: &str) -> String {
        if self.buckets == 1 {
            format!("rollcall:{index}")
        } else {
            format!("rollcall:{{ix{bucket}}}:{index}")
        }
    }

    fn due(&self, bucket: usize) -> String {
        self.key(bucket, "due")
    }

    fn live(&self, bucket: usize) -> String {
        self.key(bucket, "live")
    }

    fn rooms(&self, bucket: usize) -> String {
        self.key(bucket, "rooms")
    }

    /// One command per bucket.
    fn each(&self, command: impl Fn(usize) -> redis::Cmd) -> Vec<redis::Cmd> {
        (0..self.buckets).map(command).collect()
    }

    /// Keeps a bucket's `live` and `rooms` bounded whoever reads them: a
    /// room's entry goes once it has lapsed (live) or outlived the
    /// retention (rooms), and each key expires after the retention like
    /// every room key. Cheap enough to ride every commit: `O(log n)` when
    /// there is nothing to remove.
    fn prune(&self, pipe: &mut redis::Pipeline, bucket: usize, retention: Duration) {
        let now = crate::domain::now_millis();
        let retention = retention.as_millis() as i64;
        let (live, rooms) = (self.live(bucket), self.rooms(bucket));
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(&live)
            .arg("-inf")
            .arg(format!("({now}"))
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&rooms)
            .arg("-inf")
            .arg(format!("({}", now - retention))
            .ignore();
        for key in [live, rooms] {
            pipe.cmd("PEXPIRE").arg(key).arg(retention).ignore();
        }
    }
}

/// The first `limit` of several ranges (`ZRANGE … WITHSCORES` of each
/// bucket), by score: ascending, or descending with `newest_first`.
fn merge_ranges(
    ranges: Vec<Vec<(String, f64)>>,
    limit: usize,
    newest_first: bool,
) -> Vec<(String, f64)> {
    let mut all: Vec<(String, f64)> = ranges.into_iter().flatten().collect();
    if newest_first {
        all.sort_by(|a, b| b.1.total_cmp(&a.1));
    } else {
        all.sort_by(|a, b| a.1.total_cmp(&b.1));
    }
    all.truncate(limit);
    all
}

/// In a `CLUSTER SHARDS` reply: the replicas not marked `failed` of the
/// shard whose slot ranges hold `slot` (`None`: no shard does).
fn promotable_in(shards: &redis::Value, slot: i64) -> Option<usize> {
    use redis::Value;
    /// A RESP2 map (an array of alternating keys and values) or a RESP3 one.
    fn field<'a>(map: &'a Value, name: &str) -> Option<&'a Value> {
        match map {
            Value::Array(items) => items.chunks(2).find_map(|kv| match kv {
                [k, v] if text(k).as_deref() == Some(name) => Some(v),
                _ => None,
            }),
            Value::Map(pairs) => pairs
                .iter()
                .find_map(|(k, v)| (text(k).as_deref() == Some(name)).then_some(v)),
            _ => None,
        }
    }
    fn text(v: &Value) -> Option<String> {
        redis::from_redis_value_ref::<String>(v).ok()
    }
    let Value::Array(shards) = shards else {
        return None;
    };
    for shard in shards {
        let ranges: Vec<i64> = field(shard, "slots")
            .and_then(|v| redis::from_redis_value_ref(v).ok())
            .unwrap_or_default();
        let owns = ranges.chunks(2).any(|r| match r {
            [start, end] => (*start..=*end).contains(&slot),
            _ => false,
        });
        if !owns {
            continue;
        }
        let Some(Value::Array(nodes)) = field(shard, "nodes") else {
            return Some(0);
        };
        let promotable = nodes
            .iter()
            .filter(|n| field(n, "role").and_then(text).as_deref() == Some("replica"))
            .filter(|n| field(n, "health").and_then(text).as_deref() != Some("failed"))
            .count();
        return Some(promotable);
    }
    None
}

#[cfg(test)]
mod index_tests {
    use super::*;

    #[test]
    fn one_server_keeps_one_key_per_index() {
        let one = Indexes { buckets: 1 };
        assert_eq!(one.bucket(&RoomName::new("any-quran-session-1")), 0);
        assert_eq!(one.due(0), "rollcall:due");
        assert_eq!(one.live(0), "rollcall:live");
        assert_eq!(one.rooms(0), "rollcall:rooms");
    }

    #[test]
    fn a_cluster_spreads_rooms_over_buckets_that_share_a_slot_each() {
        let cluster = Indexes {
            buckets: INDEX_BUCKETS,
        };
        let mut per_bucket = vec![0usize; INDEX_BUCKETS];
        for n in 0..32_000 {
            let room = RoomName::new(format!("academy-quran-session-{n}"));
            let bucket = cluster.bucket(&room);
            assert_eq!(bucket, cluster.bucket(&room), "stable");
            per_bucket[bucket] += 1;
        }
        // 1,000 expected per bucket: none starved, none hot.
        assert!(
            per_bucket.iter().all(|&n| (800..1_200).contains(&n)),
            "{per_bucket:?}"
        );
        // A bucket's three keys share a slot (one pipeline per bucket).
        for b in 0..INDEX_BUCKETS {
            let slot = Slot::for_key(cluster.due(b));
            assert_eq!(slot, Slot::for_key(cluster.live(b)));
            assert_eq!(slot, Slot::for_key(cluster.rooms(b)));
        }
        // FNV-1a of the name, fixed: a room never moves between buckets
        // from one version or process to the next.
        assert_eq!(
            cluster.bucket(&RoomName::new("a")),
            0xaf63_dc4c_8601_ec8c % 32
        );
    }

    #[test]
    fn a_shards_promotable_replicas_are_those_not_failed() {
        use redis::Value;
        let s = |t: &str| Value::BulkString(t.as_bytes().to_vec());
        let node = |role: &str, health: &str| {
            Value::Array(vec![
                s("id"),
                s("x"),
                s("role"),
                s(role),
                s("health"),
                s(health),
            ])
        };
        let shard = |from: i64, to: i64, nodes: Vec<Value>| {
            Value::Array(vec![
                s("slots"),
                Value::Array(vec![Value::Int(from), Value::Int(to)]),
                s("nodes"),
                Value::Array(nodes),
            ])
        };
        let shards = Value::Array(vec![
            shard(
                0,
                99,
                vec![node("master", "online"), node("replica", "online")],
            ),
            // Its master died, its replica took over: the old master is
            // a failed replica now.
            shard(
                100,
                199,
                vec![node("replica", "failed"), node("master", "online")],
            ),
            shard(
                200,
                299,
                vec![node("master", "online"), node("replica", "loading")],
            ),
        ]);
        assert_eq!(promotable_in(&shards, 50), Some(1));
        assert_eq!(promotable_in(&shards, 150), Some(0));
        assert_eq!(promotable_in(&shards, 299), Some(1), "loading still counts");
        assert_eq!(promotable_in(&shards, 500), None);
    }

    #[test]
    fn merged_ranges_keep_the_first_by_score_over_every_bucket() {
        let ranges = vec![
            vec![("a".to_string(), 5.0), ("b".to_string(), 9.0)],
            vec![],
            vec![("c".to_string(), 1.0), ("d".to_string(), 7.0)],
        ];
        let names = |v: Vec<(String, f64)>| v.into_iter().map(|(n, _)| n).collect::<Vec<_>>();
        assert_eq!(
            names(merge_ranges(ranges.clone(), 3, false)),
            ["c", "a", "d"]
        );
        assert_eq!(names(merge_ranges(ranges, 2, true)), ["b", "d"]);
    }
}
