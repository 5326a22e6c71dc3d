//! Presence and the node registry on Redis.
//!
//! Keys (a channel's keys share the `{channel}` hash tag, so each script
//! touches one slot, as Redis Cluster needs):
//! - `rollcall:presence:{<channel>}:conns` — hash, `"<node> <socket>"` → user id;
//! - `rollcall:presence:{<channel>}:users` — hash, user id → `user_info` JSON;
//! - `rollcall:presence:{<channel>}:n` — hash, user id → connection count;
//! - `rollcall:node:{<node>}:presence` — hash, channel → this node's
//!   connections there (raised before a join, lowered after a leave, so it
//!   never under-counts: what a dead node's cleanup must visit);
//! - `rollcall:{nodes}` — sorted set, node → lease expiry (Unix ms);
//! - `rollcall:{nodes}:connections` — hash, node → its open connections.
//!
//! Empty hashes vanish by themselves, so a channel nobody is in costs
//! nothing.

use std::time::Duration;

use async_trait::async_trait;

use super::{JoinOutcome, Joining, Member, NodeRegistry, PresenceStore, Renewal};
use crate::domain::UnixMillis;
use crate::store::conn::{Conn, Redis, unavailable};
use crate::store::redis::{bus_channel, encode_broadcast};
use crate::store::{Broadcast, StoreError};

const NODES_KEY: &str = "rollcall:{nodes}";
const NODE_CONNECTIONS_KEY: &str = "rollcall:{nodes}:connections";

/// KEYS: conns, users, n. ARGV: connection, user id, user_info, max
/// members, bus channel, encoded `member_added` broadcast.
/// Returns `{0}` when full, else `{1, users hash as a flat list, added}`.
const JOIN_LUA: &str = r#"
local added = 0
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  local known = redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1
  if not known and redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[4]) then
    return {0}
  end
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('HINCRBY', KEYS[3], ARGV[2], 1)
  if not known then
    redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
    redis.call('PUBLISH', ARGV[5], ARGV[6])
    added = 1
  end
end
return {1, redis.call('HGETALL', KEYS[2]), added}
"#;

/// Removes connections and announces users who left. KEYS: conns, users,
/// n. ARGV: bus channel, channel name, then a mode: `one <connection>` or
/// `node <node id>` (every connection of that node). Returns the user ids
/// whose last connection went.
const LEAVE_LUA: &str = r#"
local doomed = {}
if ARGV[3] == 'one' then
  local user = redis.call('HGET', KEYS[1], ARGV[4])
  if user then doomed[1] = {ARGV[4], user} end
else
  local prefix = ARGV[4] .. ' '
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all, 2 do
    if string.sub(all[i], 1, #prefix) == prefix then
      doomed[#doomed + 1] = {all[i], all[i + 1]}
    end
  end
end
local gone = {}
for _, pair in ipairs(doomed) do
  redis.call('HDEL', KEYS[1], pair[1])
  local user = pair[2]
  if redis.call('HINCRBY', KEYS[3], user, -1) <= 0 then
    redis.call('HDEL', KEYS[3], user)
    redis.call('HDEL', KEYS[2], user)
    local data = cjson.encode({user_id = user})
    local frame = cjson.encode({event = 'pusher_internal:member_removed', channel = ARGV[2], data = data})
    redis.call('PUBLISH', ARGV[1], ARGV[2] .. '\n' .. frame)
    gone[#gone + 1] = user
  end
end
return gone
"#;

/// KEYS: the node's index. ARGV: channel, delta. Deletes the field at 0.
const NODE_INDEX_LUA: &str = r#"
if redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2]) <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
"#;

/// KEYS: nodes, node connections. ARGV: node, expiry, connections, now.
/// Returns {1 registered, 0 new, 2 lapsed (nothing renewed), connections of
/// live nodes}.
const RENEW_LUA: &str = r#"
local was = redis.call('ZSCORE', KEYS[1], ARGV[1])
if was and tonumber(was) < tonumber(ARGV[4]) then return {2, 0} end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
local live = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[4], '+inf')
local total = 0
for _, node in ipairs(live) do
  total = total + tonumber(redis.call('HGET', KEYS[2], node) or '0')
end
return {was and 1 or 0, total}
"#;

/// KEYS: nodes, node connections. ARGV: node, now. Returns 1 when the
/// node was dropped.
const FORGET_LUA: &str = r#"
local expiry = redis.call('ZSCORE', KEYS[1], ARGV[1])
if expiry and tonumber(expiry) < tonumber(ARGV[2]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  return 1
end
return 0
"#;

pub struct RedisPresence {
    redis: Redis,
    join: redis::Script,
    leave: redis::Script,
    node_index: redis::Script,
    renew: redis::Script,
    forget: redis::Script,
}

fn channel_keys(channel: &str) -> [String; 3] {
    [
        format!("rollcall:presence:{{{channel}}}:conns"),
        format!("rollcall:presence:{{{channel}}}:users"),
        format!("rollcall:presence:{{{channel}}}:n"),
    ]
}

fn node_index_key(node: &str) -> String {
    format!("rollcall:node:{{{node}}}:presence")
}

impl RedisPresence {
    /// Presence on `redis`. On Cluster the join and leave scripts
    /// `SPUBLISH` on the channel's bus channel, which shares the slot of
    /// the channel's presence keys (both carry the `{channel}` tag).
    pub fn new(redis: Redis) -> Self {
        Self {
            join: redis.script(JOIN_LUA),
            leave: redis.script(LEAVE_LUA),
            node_index: redis.script(NODE_INDEX_LUA),
            renew: redis.script(RENEW_LUA),
            forget: redis.script(FORGET_LUA),
            redis,
        }
    }

    /// Runs `f` on a connection for ordinary commands, bounded by the
    /// command timeout.
    async fn run<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        self.redis.run(f).await
    }

    async fn index(&self, node: &str, channel: &str, delta: i64) -> Result<(), StoreError> {
        let mut invocation = self.node_index.prepare_invoke();
        invocation.key(node_index_key(node)).arg(channel).arg(delta);
        self.run(|mut c| async move { invocation.invoke_async::<()>(&mut c).await })
            .await
    }

    async fn remove(
        &self,
        channel: &str,
        mode: &str,
        which: &str,
    ) -> Result<Vec<String>, StoreError> {
        let mut invocation = self.leave.prepare_invoke();
        for key in channel_keys(channel) {
            invocation.key(key);
        }
        invocation
            .arg(bus_channel(channel))
            .arg(channel)
            .arg(mode)
            .arg(which);
        self.run(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await
    }
}

fn pairs(flat: Vec<String>) -> Vec<Member> {
    let mut members: Vec<Member> = flat
        .chunks_exact(2)
        .map(|p| (p[0].clone(), p[1].clone()))
        .collect();
    members.sort();
    members
}

#[async_trait]
impl PresenceStore for RedisPresence {
    async fn join(
        &self,
        joining: Joining<'_>,
        max_members: usize,
        added: &Broadcast,
    ) -> Result<JoinOutcome, StoreError> {
        // Indexed first: a node that dies right after the join can still be
        // cleaned up (an index entry without a connection costs a no-op).
        self.index(joining.node, joining.channel, 1).await?;
        let mut invocation = self.join.prepare_invoke();
        for key in channel_keys(joining.channel) {
            invocation.key(key);
        }
        invocation
            .arg(format!("{} {}", joining.node, joining.socket))
            .arg(joining.user_id)
            .arg(joining.user_info)
            .arg(max_members)
            .arg(bus_channel(joining.channel))
            .arg(encode_broadcast(added));
        let reply: redis::Value = self
            .run(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await?;
        let outcome = match reply {
            redis::Value::Array(items) if items.len() == 3 => {
                let flat: Vec<String> =
                    redis::from_redis_value(items[1].clone()).map_err(unavailable)?;
                let added: i64 = redis::from_redis_value(items[2].clone()).map_err(unavailable)?;
                JoinOutcome::Joined {
                    members: pairs(flat),
                    added: added == 1,
                }
            }
            _ => JoinOutcome::Full,
        };
        if outcome == JoinOutcome::Full {
            self.index(joining.node, joining.channel, -1).await?;
        }
        Ok(outcome)
    }

    async fn leave(
        &self,
        channel: &str,
        node: &str,
        socket: &str,
    ) -> Result<Option<String>, StoreError> {
        let gone = self
            .remove(channel, "one", &format!("{node} {socket}"))
            .await?;
        // Lowered only after the leave: never under-counts.
        self.index(node, channel, -1).await?;
        Ok(gone.into_iter().next())
    }

    async fn members(&self, channel: &str) -> Result<Vec<Member>, StoreError> {
        let [_, users, _] = channel_keys(channel);
        let flat: Vec<String> = self
            .run(|mut c| async move { redis::cmd("HGETALL").arg(users).query_async(&mut c).await })
            .await?;
        Ok(pairs(flat))
    }

    async fn user_counts(&self, channels: &[String]) -> Result<Vec<usize>, StoreError> {
        if channels.is_empty() {
            return Ok(Vec::new());
        }
        let lengths = channels
            .iter()
            .map(|channel| {
                let [_, users, _] = channel_keys(channel);
                let mut cmd = redis::cmd("HLEN");
                cmd.arg(users);
                cmd
            })
            .collect();
        self.redis.query_each(lengths).await
    }

    async fn remove_node(&self, node: &str) -> Result<Vec<(String, String)>, StoreError> {
        let index = node_index_key(node);
        let channels: Vec<String> = self
            .run(|mut c| async move { redis::cmd("HKEYS").arg(index).query_async(&mut c).await })
            .await?;
        let mut removed = Vec::new();
        for channel in channels {
            for user in self.remove(&channel, "node", node).await? {
                removed.push((channel.clone(), user));
            }
        }
        Ok(removed)
    }
}

#[async_trait]
impl NodeRegistry for RedisPresence {
    async fn renew_node(
        &self,
        node: &str,
        ttl: Duration,
        now: UnixMillis,
        connections: u64,
    ) -> Result<Renewal, StoreError> {
        let mut invocation = self.renew.prepare_invoke();
        invocation
            .key(NODES_KEY)
            .key(NODE_CONNECTIONS_KEY)
            .arg(node)
            .arg(now + ttl.as_millis() as i64)
            .arg(connections)
            .arg(now);
        let (was, total): (i64, u64) = self
            .run(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await?;
        Ok(Renewal {
            was_registered: was == 1,
            lapsed: was == 2,
            cluster_connections: total,
        })
    }

    async fn expired_nodes(&self, now: UnixMillis) -> Result<Vec<String>, StoreError> {
        self.run(|mut c| async move {
            redis::cmd("ZRANGEBYSCORE")
                .arg(NODES_KEY)
                .arg("-inf")
                .arg(format!("({now}"))
                .arg("LIMIT")
                .arg(0)
                .arg(100)
                .query_async(&mut c)
                .await
        })
        .await
    }

    async fn forget_node(&self, node: &str, now: UnixMillis) -> Result<(), StoreError> {
        let mut invocation = self.forget.prepare_invoke();
        invocation
            .key(NODES_KEY)
            .key(NODE_CONNECTIONS_KEY)
            .arg(node)
            .arg(now);
        let dropped: i64 = self
            .run(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await?;
        if dropped == 1 {
            // Its index was emptied by `remove_node` (what is left are
            // counts of connections already removed).
            let index = node_index_key(node);
            self.run(|mut c| async move {
                redis::cmd("DEL").arg(index).query_async::<()>(&mut c).await
            })
            .await?;
        }
        Ok(())
    }
}
