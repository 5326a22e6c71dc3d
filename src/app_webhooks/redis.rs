//! The webhook store shared by every node: the queue and the occupancy
//! record in Redis, every change one Lua script (atomic, and replicated to
//! the AOF as one unit, which `redis.conf` fsyncs before replying).
//!
//! | key | type | holds |
//! |---|---|---|
//! | `rollcall:{webhooks}:due` | sorted set | event id → when it is due (ms); a claimed event's score is the end of its visibility timeout |
//! | `rollcall:{webhooks}:events` | hash | event id → `<queued at ms>\n<event object JSON>` |
//! | `rollcall:{webhooks}:tries` | hash | event id → failed deliveries |
//! | `rollcall:{webhooks}:held` | hash | hold key → the held event waiting under it |
//! | `rollcall:{webhooks}:holds` | hash | event id → its hold key (the reverse) |
//! | `rollcall:{webhooks}:seq` | string | the last event id (ids are zero-padded, so ties in `due` keep queue order) |
//! | `rollcall:occupancy:{<channel>}` | set | nodes with local subscribers of the channel |
//! | `rollcall:occupancy:node:{<node>}` | set | channels the node has subscribers of |
//!
//! The queue's keys share the hash tag `{webhooks}`: a claim must see every
//! due event at once. The occupancy sets are tagged by channel and node. On
//! one server the scripts that change them also queue the resulting
//! webhook in the same step, so a crash cannot separate the two. On Redis
//! Cluster a script must stay in one slot, so there a transition is three
//! steps, each one slot: the node's set, the channel's set (whose script
//! alone decides "occupied"/"vacated", so concurrent nodes still agree on
//! one transition), then the queue. Two consequences on Cluster, both
//! documented for operators: a node that dies between the channel's step
//! and the queue's loses that one webhook, and two nodes racing to occupy
//! and vacate one channel may queue the two events in the other order (the
//! events carry `time_ms`, as Pusher's do, for the app to order them).

use async_trait::async_trait;

use super::event::{Hold, Queued};
use super::queue::{Claim, Claimed, Occupancy, QueueOptions, WebhookQueue};
use crate::channel_events::ChannelEvent;
use crate::domain::UnixMillis;
use crate::store::StoreError;
use crate::store::conn::Redis;

const QUEUE_KEYS: [&str; 6] = [
    "rollcall:{webhooks}:due",
    "rollcall:{webhooks}:events",
    "rollcall:{webhooks}:tries",
    "rollcall:{webhooks}:held",
    "rollcall:{webhooks}:holds",
    "rollcall:{webhooks}:seq",
];

fn channel_key(channel: &str) -> String {
    format!("rollcall:occupancy:{{{channel}}}")
}

fn node_key(node: &str) -> String {
    format!("rollcall:occupancy:node:{{{node}}}")
}

/// Shared by every script: KEYS[1..6] are the queue's keys, in the order of
/// `QUEUE_KEYS`. `push` is the hold (see `queue.rs`): kind `n` plain, `h`
/// held, `c` cancels a waiting held event of the same key. It answers 0 when
/// the queue is full (the event is refused), else 1.
const PRELUDE_LUA: &str = r#"
local Q_DUE, Q_EVENTS, Q_TRIES, Q_HELD, Q_HOLDS, Q_SEQ = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local function release_hold(key)
  local id = redis.call('HGET', Q_HELD, key)
  if id then
    redis.call('HDEL', Q_HELD, key)
    redis.call('HDEL', Q_HOLDS, id)
  end
end
local function remove(id)
  redis.call('ZREM', Q_DUE, id)
  redis.call('HDEL', Q_EVENTS, id)
  redis.call('HDEL', Q_TRIES, id)
  local key = redis.call('HGET', Q_HOLDS, id)
  if key then
    redis.call('HDEL', Q_HOLDS, id)
    redis.call('HDEL', Q_HELD, key)
  end
end
local function push(kind, key, json, now_s, hold_ms, max_len)
  local now = tonumber(now_s)
  local due = now
  if kind == 'c' then
    local id = redis.call('HGET', Q_HELD, key)
    if id then
      local held_due = redis.call('ZSCORE', Q_DUE, id)
      if held_due and tonumber(held_due) > now then
        remove(id)
        return 1
      end
      release_hold(key)
    end
  elseif kind == 'h' then
    due = now + tonumber(hold_ms)
  end
  if redis.call('HLEN', Q_EVENTS) >= tonumber(max_len) then return 0 end
  local id = string.format('%016d', redis.call('INCR', Q_SEQ))
  if kind == 'h' then
    release_hold(key)
    redis.call('HSET', Q_HELD, key, id)
    redis.call('HSET', Q_HOLDS, id, key)
  end
  redis.call('HSET', Q_EVENTS, id, now_s .. '\n' .. json)
  redis.call('ZADD', Q_DUE, due, id)
  return 1
end
"#;

/// ARGV: now, hold ms, max length, then (kind, hold key, JSON) per event.
/// Returns how many were refused.
const ENQUEUE_LUA: &str = r#"
local refused = 0
for i = 4, #ARGV, 3 do
  if push(ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[1], ARGV[2], ARGV[3]) == 0 then refused = refused + 1 end
end
return refused
"#;

/// ARGV: now, max, visibility deadline. Returns `{next due or ''}` when
/// nothing is due, else `{'', id, value, tries, id, value, tries, …}`. A
/// claimed held event stops being cancellable: its departure is now being
/// reported, so a return after it is reported too.
const CLAIM_LUA: &str = r#"
local ids = redis.call('ZRANGEBYSCORE', Q_DUE, '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
if #ids == 0 then
  local first = redis.call('ZRANGE', Q_DUE, 0, 0, 'WITHSCORES')
  return {first[2] or ''}
end
local out = {''}
for _, id in ipairs(ids) do
  local value = redis.call('HGET', Q_EVENTS, id)
  if value then
    redis.call('ZADD', Q_DUE, ARGV[3], id)
    local key = redis.call('HGET', Q_HOLDS, id)
    if key then
      redis.call('HDEL', Q_HOLDS, id)
      if redis.call('HGET', Q_HELD, key) == id then redis.call('HDEL', Q_HELD, key) end
    end
    out[#out + 1] = id
    out[#out + 1] = value
    out[#out + 1] = redis.call('HGET', Q_TRIES, id) or '0'
  else
    redis.call('ZREM', Q_DUE, id)
  end
end
return out
"#;

/// ARGV: the ids.
const ACK_LUA: &str = r#"
for i = 1, #ARGV do remove(ARGV[i]) end
return 0
"#;

/// ARGV: due, then the ids; acknowledged ids stay gone.
const RETRY_LUA: &str = r#"
for i = 2, #ARGV do
  if redis.call('HEXISTS', Q_EVENTS, ARGV[i]) == 1 then
    redis.call('ZADD', Q_DUE, ARGV[1], ARGV[i])
    redis.call('HINCRBY', Q_TRIES, ARGV[i], 1)
  end
end
return 0
"#;

/// KEYS[7]: the channel's node set, KEYS[8]: the node's channel set.
/// ARGV: now, hold ms, max length, channel, node, event JSON, hold key.
const OCCUPY_LUA: &str = r#"
local added = redis.call('SADD', KEYS[7], ARGV[5])
redis.call('SADD', KEYS[8], ARGV[4])
if added == 1 and redis.call('SCARD', KEYS[7]) == 1 then
  push('c', ARGV[7], ARGV[6], ARGV[1], ARGV[2], ARGV[3])
  return 1
end
return 0
"#;

/// As `OCCUPY_LUA`.
const VACATE_LUA: &str = r#"
redis.call('SREM', KEYS[8], ARGV[4])
local removed = redis.call('SREM', KEYS[7], ARGV[5])
if removed == 1 and redis.call('SCARD', KEYS[7]) == 0 then
  push('h', ARGV[7], ARGV[6], ARGV[1], ARGV[2], ARGV[3])
  return 1
end
return 0
"#;

/// KEYS[7]: the node's channel set. ARGV: now, hold ms, max length, node.
/// The channel keys and the vacated event (as `event::vacated_json` writes
/// it; channel names need no JSON escaping, cjson does it anyway) are made
/// here from the node's set.
const VACATE_NODE_LUA: &str = r#"
local vacated = {}
for _, channel in ipairs(redis.call('SMEMBERS', KEYS[7])) do
  local key = 'rollcall:occupancy:{' .. channel .. '}'
  if redis.call('SREM', key, ARGV[4]) == 1 and redis.call('SCARD', key) == 0 then
    local json = '{"name":"channel_vacated","channel":' .. cjson.encode(channel) .. '}'
    push('h', 'c\n' .. channel, json, ARGV[1], ARGV[2], ARGV[3])
    vacated[#vacated + 1] = channel
  end
end
redis.call('DEL', KEYS[7])
return vacated
"#;

/// On Cluster, the channel's part of `occupy`: KEYS[1] the channel's node
/// set; ARGV[1] the node. 1 when the channel became occupied.
const OCCUPY_CHANNEL_LUA: &str = r#"
if redis.call('SADD', KEYS[1], ARGV[1]) == 1 and redis.call('SCARD', KEYS[1]) == 1 then return 1 end
return 0
"#;

/// On Cluster, the channel's part of `vacate`: 1 when it became vacant.
const VACATE_CHANNEL_LUA: &str = r#"
if redis.call('SREM', KEYS[1], ARGV[1]) == 1 and redis.call('SCARD', KEYS[1]) == 0 then return 1 end
return 0
"#;

fn script(body: &str) -> redis::Script {
    redis::Script::new(&format!("{PRELUDE_LUA}{body}"))
}

pub struct RedisWebhookStore {
    redis: Redis,
    options: QueueOptions,
    occupy_channel: redis::Script,
    vacate_channel: redis::Script,
    enqueue: redis::Script,
    claim: redis::Script,
    ack: redis::Script,
    retry: redis::Script,
    occupy: redis::Script,
    vacate: redis::Script,
    vacate_node: redis::Script,
}

impl RedisWebhookStore {
    /// A store on `redis` (the rooms' handle). Does not fail when Redis is
    /// down: calls fail until it is back, and their callers retry.
    pub fn new(redis: Redis, options: QueueOptions) -> Self {
        Self {
            redis,
            options,
            occupy_channel: redis::Script::new(OCCUPY_CHANNEL_LUA),
            vacate_channel: redis::Script::new(VACATE_CHANNEL_LUA),
            enqueue: script(ENQUEUE_LUA),
            claim: script(CLAIM_LUA),
            ack: script(ACK_LUA),
            retry: script(RETRY_LUA),
            occupy: script(OCCUPY_LUA),
            vacate: script(VACATE_LUA),
            vacate_node: script(VACATE_NODE_LUA),
        }
    }

    /// A store on one Redis at `url` (tests).
    pub fn connect(
        url: &str,
        command_timeout: std::time::Duration,
        options: QueueOptions,
    ) -> Result<Self, StoreError> {
        let target = crate::store::conn::RedisTarget::Single(url.to_string());
        Ok(Self::new(Redis::open(&target, command_timeout)?, options))
    }

    /// Runs `script` with the queue's keys, then `keys`, and `args`, bounded
    /// by the command timeout.
    async fn run<T: redis::FromRedisValue>(
        &self,
        script: &redis::Script,
        keys: &[String],
        args: Vec<String>,
    ) -> Result<T, StoreError> {
        let mut invocation = script.prepare_invoke();
        for key in QUEUE_KEYS {
            invocation.key(key);
        }
        for key in keys {
            invocation.key(key);
        }
        for arg in args {
            invocation.arg(arg);
        }
        self.redis
            .run(|mut conn| async move { invocation.invoke_async::<T>(&mut conn).await })
            .await
    }

    /// Runs a one-key script (Cluster's single-slot steps).
    async fn run_on(
        &self,
        script: &redis::Script,
        key: String,
        arg: &str,
    ) -> Result<bool, StoreError> {
        let mut invocation = script.prepare_invoke();
        invocation.key(key).arg(arg);
        let changed: i64 = self
            .redis
            .run(|mut conn| async move { invocation.invoke_async(&mut conn).await })
            .await?;
        Ok(changed == 1)
    }

    /// A node's own channel set, changed on its own (Cluster).
    async fn node_set(&self, node: &str, channel: &str, add: bool) -> Result<(), StoreError> {
        let (key, channel) = (node_key(node), channel.to_string());
        let command = if add { "SADD" } else { "SREM" };
        self.redis
            .run(|mut conn| async move {
                redis::cmd(command)
                    .arg(key)
                    .arg(channel)
                    .query_async::<()>(&mut conn)
                    .await
            })
            .await
    }

    /// An occupancy transition in single-slot steps (Cluster; see the
    /// module documentation): the node's set first when joining (so a dead
    /// node's cleanup finds the channel) and last when leaving.
    async fn transition_in_steps(
        &self,
        event: ChannelEvent,
        channel: &str,
        node: &str,
        now: UnixMillis,
    ) -> Result<bool, StoreError> {
        let occupied = matches!(event, ChannelEvent::Occupied { .. });
        let changed = if occupied {
            self.node_set(node, channel, true).await?;
            self.run_on(&self.occupy_channel, channel_key(channel), node)
                .await?
        } else {
            let vacated = self
                .run_on(&self.vacate_channel, channel_key(channel), node)
                .await?;
            self.node_set(node, channel, false).await?;
            vacated
        };
        if changed {
            self.enqueue(vec![Queued::of(&event)], now).await?;
        }
        Ok(changed)
    }

    /// now, hold ms, max length: the first arguments of every writing script.
    fn head(&self, now: UnixMillis) -> Vec<String> {
        vec![
            arg(now.to_string()),
            arg(self.options.hold.as_millis().to_string()),
            arg(self.options.max_len.to_string()),
        ]
    }

    async fn transition(
        &self,
        script: &redis::Script,
        event: ChannelEvent,
        channel: &str,
        node: &str,
        now: UnixMillis,
    ) -> Result<bool, StoreError> {
        if self.redis.is_cluster() {
            return self.transition_in_steps(event, channel, node, now).await;
        }
        let q = Queued::of(&event);
        let (Hold::Cancels(key) | Hold::Held(key)) = q.hold else {
            unreachable!("occupancy events are held or cancel a hold")
        };
        let mut args = self.head(now);
        args.extend([arg(channel), arg(node), arg(q.json), arg(key)]);
        let keys = [channel_key(channel), node_key(node)];
        let changed: i64 = self.run(script, &keys, args).await?;
        Ok(changed == 1)
    }
}

fn arg(s: impl Into<String>) -> String {
    s.into()
}

fn hold_arg(hold: &Hold) -> (&'static str, &str) {
    match hold {
        Hold::None => ("n", ""),
        Hold::Held(key) => ("h", key),
        Hold::Cancels(key) => ("c", key),
    }
}

#[async_trait]
impl WebhookQueue for RedisWebhookStore {
    async fn enqueue(&self, events: Vec<Queued>, now: UnixMillis) -> Result<usize, StoreError> {
        if events.is_empty() {
            return Ok(0);
        }
        let mut args = self.head(now);
        for q in events {
            let (kind, key) = hold_arg(&q.hold);
            args.extend([arg(kind), arg(key), arg(q.json)]);
        }
        let refused: i64 = self.run(&self.enqueue, &[], args).await?;
        Ok(refused.max(0) as usize)
    }

    async fn claim(
        &self,
        max: usize,
        now: UnixMillis,
        until: UnixMillis,
    ) -> Result<Claim, StoreError> {
        let args = vec![
            arg(now.to_string()),
            arg(max.to_string()),
            arg(until.to_string()),
        ];
        let reply: Vec<String> = self.run(&self.claim, &[], args).await?;
        let corrupt = |what: &str| StoreError::Corrupt(format!("webhook queue: {what}"));
        let (first, rest) = reply.split_first().ok_or_else(|| corrupt("empty reply"))?;
        if rest.is_empty() {
            let next_due = match first.as_str() {
                "" => None,
                score => Some(score.parse::<f64>().map_err(|_| corrupt("a due time"))? as i64),
            };
            return Ok(Claim {
                events: Vec::new(),
                next_due,
            });
        }
        let mut events = Vec::with_capacity(rest.len() / 3);
        for triple in rest.chunks(3) {
            let [id, value, tries] = triple else {
                return Err(corrupt("a claimed event"));
            };
            let (queued_at, json) = value
                .split_once('\n')
                .ok_or_else(|| corrupt("an event's value"))?;
            events.push(Claimed {
                id: id.clone(),
                json: json.to_string(),
                queued_at: queued_at.parse().map_err(|_| corrupt("a queue time"))?,
                tries: tries.parse().map_err(|_| corrupt("a try count"))?,
            });
        }
        Ok(Claim {
            events,
            next_due: None,
        })
    }

    async fn ack(&self, ids: &[String]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let args = ids.iter().map(|id| arg(id.as_str())).collect();
        self.run::<i64>(&self.ack, &[], args).await.map(drop)
    }

    async fn retry(&self, ids: &[String], due: UnixMillis) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut args = vec![arg(due.to_string())];
        args.extend(ids.iter().map(|id| arg(id.as_str())));
        self.run::<i64>(&self.retry, &[], args).await.map(drop)
    }
}

#[async_trait]
impl Occupancy for RedisWebhookStore {
    async fn occupy(&self, channel: &str, node: &str, now: UnixMillis) -> Result<bool, StoreError> {
        let event = ChannelEvent::Occupied {
            channel: channel.to_string(),
        };
        self.transition(&self.occupy, event, channel, node, now)
            .await
    }

    async fn vacate(&self, channel: &str, node: &str, now: UnixMillis) -> Result<bool, StoreError> {
        let event = ChannelEvent::Vacated {
            channel: channel.to_string(),
        };
        self.transition(&self.vacate, event, channel, node, now)
            .await
    }

    async fn vacate_node(&self, node: &str, now: UnixMillis) -> Result<Vec<String>, StoreError> {
        if self.redis.is_cluster() {
            return self.vacate_node_in_steps(node, now).await;
        }
        let mut args = self.head(now);
        args.push(arg(node));
        let mut vacated: Vec<String> = self.run(&self.vacate_node, &[node_key(node)], args).await?;
        vacated.sort();
        Ok(vacated)
    }
}

impl RedisWebhookStore {
    /// `vacate_node` in single-slot steps (Cluster): each channel of the
    /// node's set, then the vacated events in one enqueue, then the set.
    async fn vacate_node_in_steps(
        &self,
        node: &str,
        now: UnixMillis,
    ) -> Result<Vec<String>, StoreError> {
        let key = node_key(node);
        let channels: Vec<String> = self
            .redis
            .run(|mut conn| {
                let key = key.clone();
                async move { redis::cmd("SMEMBERS").arg(key).query_async(&mut conn).await }
            })
            .await?;
        let mut vacated = Vec::new();
        for channel in channels {
            if self
                .run_on(&self.vacate_channel, channel_key(&channel), node)
                .await?
            {
                vacated.push(channel);
            }
        }
        let events = vacated
            .iter()
            .map(|channel| {
                Queued::of(&ChannelEvent::Vacated {
                    channel: channel.clone(),
                })
            })
            .collect();
        self.enqueue(events, now).await?;
        self.redis
            .run(|mut conn| async move {
                redis::cmd("DEL")
                    .arg(key)
                    .query_async::<()>(&mut conn)
                    .await
            })
            .await?;
        vacated.sort();
        Ok(vacated)
    }
}
