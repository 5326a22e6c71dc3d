//! The cross-node bus: one dedicated pub/sub connection per node (not from
//! the command pool, which a subscribed connection would poison) that
//! hands broadcasts to this node's sockets. Reconnects with capped
//! exponential backoff and resubscribes; each (re)connection bumps a
//! counter so the node can re-send snapshots for what it may have missed.
//!
//! **Subscribe on demand.** Each Pusher channel's broadcasts travel on
//! their own pub/sub channel (`redis::bus_channel`), and the bus is
//! subscribed to exactly the channels the hub has local subscribers of, so
//! a node hears only what it serves. The hub tells [`Feed`] (an
//! `OccupancyWatch`) when a channel gains its first or loses its last local
//! socket; the bus task, level-triggered like the app webhooks' occupancy
//! task, reads the hub's count for each marked channel and makes Redis
//! match: SUBSCRIBE (batched; concurrent subscribers of a channel share
//! one) or UNSUBSCRIBE. `Feed::ready` (the pusher module's
//! `BroadcastFeed`) waits until Redis confirmed a channel's SUBSCRIBE; the
//! socket's subscribe path awaits it before the snapshot is read.
//!
//! Invariants:
//! - `on_bus` holds only channels whose SUBSCRIBE Redis confirmed on the
//!   current connection. A channel leaves it *before* its UNSUBSCRIBE is
//!   sent, and the hub count that decided the UNSUBSCRIBE is read under
//!   the same lock `ready` checks `on_bus` under. A socket registers in the
//!   hub before calling `ready`, so either the task saw its subscriber (no
//!   UNSUBSCRIBE) or `ready` finds the channel gone from `on_bus` and waits
//!   for the re-SUBSCRIBE that the hub's mark causes: a locally subscribed
//!   channel is never left unsubscribed, nor reported ready while leaving.
//! - Losing the connection empties `on_bus` before anything else; a new
//!   connection is announced (the counter bumped, snapshots re-sent) only
//!   after every channel with local subscribers is resubscribed. While the
//!   bus is down `ready` returns at once: the subscriber's channel is in
//!   the hub, so it is resubscribed before that announcement re-sends its
//!   snapshot.
//! - A `ready` that gave up waiting (Redis slow, or the connection dead but
//!   not yet known to be) marks the channel
//!   late; its confirmation, if it comes on the same connection, bumps the
//!   counter like a reconnection, since that subscriber's snapshot may
//!   predate the subscription.
//!
//! The same connection receives channel queries from any node on a fixed
//! channel and answers each with this node's subscription counts (see
//! `redis.rs`).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use redis::cluster_async::ClusterConnection;
use tokio::sync::{Notify, watch};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::LocalDelivery;
use super::conn::{Redis, cluster_client};
use super::redis::{
    BUS_CHANNEL_PATTERN, CHANNELS_ANSWER_TTL_MS, CHANNELS_QUERY_CHANNEL, bus_channel,
    decode_channel_query, parse_halt,
};
use crate::metrics::BusMetrics;
use crate::pusher::SocketId;
use crate::pusher::hub::{Hub, OccupancyWatch};
use crate::pusher::service::BroadcastFeed;

const BACKOFF_START: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Channels per SUBSCRIBE/UNSUBSCRIBE command: a resubscription of many
/// channels goes in a few commands, not one huge one or thousands.
const BATCH: usize = 256;

pub struct BusHandle {
    feed: Arc<Feed>,
    task: tokio::task::JoinHandle<()>,
}

impl BusHandle {
    pub fn connections(&self) -> watch::Receiver<u64> {
        self.feed.connections.subscribe()
    }

    /// What the subscribe path awaits (`Services::feed`).
    pub fn feed(&self) -> Arc<Feed> {
        Arc::clone(&self.feed)
    }
}

impl Drop for BusHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Which channels the bus is (to be) subscribed to, shared by the bus task,
/// the hub's watcher calls and the subscribers waiting in `ready`.
pub struct Feed {
    /// `None`: the delivery keeps no registry; the bus hears every channel
    /// by pattern and `ready` has nothing to wait for.
    hub: Option<Hub>,
    state: Mutex<FeedState>,
    /// Wakes the bus task: channels were marked.
    wake: Notify,
    /// Bumped whenever `on_bus` changes (waiters re-check).
    changes: watch::Sender<u64>,
    /// Bumped per (re)connection and per late confirmation: local
    /// subscribers may have missed broadcasts.
    connections: watch::Sender<u64>,
    /// Longest wait in `ready`.
    wait: Duration,
    /// Longest wait for one command on the bus connection; past it the
    /// connection is treated as lost.
    command_timeout: Duration,
    metrics: Arc<BusMetrics>,
}

#[derive(Default)]
struct FeedState {
    /// Channels whose local occupancy may differ from `on_bus`.
    dirty: HashSet<String>,
    /// Channels Redis confirmed a SUBSCRIBE of on the current connection,
    /// and not being unsubscribed.
    on_bus: HashSet<String>,
    /// Whether the current connection is up and resubscribed (announced).
    connected: bool,
    /// Channels whose `ready` gave up before their confirmation.
    late: HashSet<String>,
}

impl OccupancyWatch for Feed {
    fn changed(&self, channel: &str) {
        self.lock().dirty.insert(channel.to_owned());
        // A permit is stored if the task is busy: no mark is missed.
        self.wake.notify_one();
    }
}

#[async_trait]
impl BroadcastFeed for Feed {
    async fn ready(&self, channel: &str) {
        if self.hub.is_none() {
            // A bus without a registry hears every channel by pattern.
            return;
        }
        let mut changes = self.changes.subscribe();
        let deadline = tokio::time::Instant::now() + self.wait;
        {
            let mut s = self.lock();
            if s.covers(channel) {
                return;
            }
            // The hub marked it already; marking again costs nothing and
            // does not depend on that.
            s.dirty.insert(channel.to_owned());
        }
        self.wake.notify_one();
        loop {
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) if self.lock().covers(channel) => return,
                Ok(Ok(())) => continue,
                // The feed is being dropped with the store.
                Ok(Err(_)) => return,
                Err(_) => {
                    let mut s = self.lock();
                    if !s.covers(channel) {
                        s.late.insert(channel.to_owned());
                        tracing::warn!(
                            channel,
                            "the bus has not confirmed the channel's subscription; snapshot sent anyway, re-sent once it does"
                        );
                    }
                    return;
                }
            }
        }
    }
}

impl FeedState {
    /// Whether a subscriber registered in the hub may read its snapshot
    /// now: the channel's SUBSCRIBE is confirmed, or the bus is down, in
    /// which case the channel is resubscribed (it is in the hub) before the
    /// reconnection is announced, and the announcement re-sends snapshots.
    fn covers(&self, channel: &str) -> bool {
        !self.connected || self.on_bus.contains(channel)
    }
}

impl Feed {
    /// Channels whose subscription Redis confirmed on the current
    /// connection.
    pub fn subscribed(&self) -> usize {
        self.lock().on_bus.len()
    }

    fn lock(&self) -> MutexGuard<'_, FeedState> {
        // Nothing panics under this lock; a poisoned state is still sound.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The connection is gone: nothing is confirmed any more.
    pub(crate) fn disconnected(&self) {
        {
            let mut s = self.lock();
            s.on_bus.clear();
            s.connected = false;
            // The next connection is announced anyway: it covers them.
            s.late.clear();
        }
        self.metrics
            .subscriptions
            .store(0, std::sync::atomic::Ordering::Relaxed);
        self.changes.send_modify(|n| *n += 1);
    }

    /// One reconciliation round: for every marked channel, makes Redis
    /// match the hub's current count. An error means the connection is no
    /// longer usable.
    async fn sync(&self, sink: &mut Subscriber) -> redis::RedisResult<()> {
        let Some(hub) = &self.hub else {
            self.lock().dirty.clear();
            return Ok(());
        };
        let (subscribe, unsubscribe) = {
            let mut s = self.lock();
            let mut subscribe = Vec::new();
            let mut unsubscribe = Vec::new();
            for channel in std::mem::take(&mut s.dirty) {
                // Read under the lock `ready` checks under (see the module
                // invariants).
                let local = hub.subscription_count(&channel) > 0;
                let on_bus = s.on_bus.contains(&channel);
                if local && !on_bus {
                    subscribe.push(channel);
                } else if !local && on_bus {
                    s.on_bus.remove(&channel);
                    unsubscribe.push(channel);
                }
            }
            (subscribe, unsubscribe)
        };
        if !unsubscribe.is_empty() {
            self.count_subscriptions();
        }
        for batch in unsubscribe.chunks(BATCH) {
            let names: Vec<String> = batch.iter().map(|c| bus_channel(c)).collect();
            self.bounded(sink.unsubscribe(names)).await?;
        }
        for batch in subscribe.chunks(BATCH) {
            let names: Vec<String> = batch.iter().map(|c| bus_channel(c)).collect();
            self.bounded(sink.subscribe(names)).await?;
            let late = {
                let mut s = self.lock();
                let mut late = false;
                for channel in batch {
                    late |= s.late.remove(channel);
                    s.on_bus.insert(channel.clone());
                }
                late
            };
            self.count_subscriptions();
            self.changes.send_modify(|n| *n += 1);
            if late {
                tracing::info!("late channel subscription confirmed: re-sending snapshots");
                self.connections.send_modify(|n| *n += 1);
            }
        }
        Ok(())
    }

    fn count_subscriptions(&self) {
        let n = self.lock().on_bus.len() as u64;
        self.metrics
            .subscriptions
            .store(n, std::sync::atomic::Ordering::Relaxed);
    }

    async fn bounded<T>(
        &self,
        command: impl Future<Output = redis::RedisResult<T>>,
    ) -> redis::RedisResult<T> {
        tokio::time::timeout(self.command_timeout, command)
            .await
            .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "bus command timed out")))?
    }

    /// Serves one connection until it is lost.
    async fn serve(
        self: &Arc<Self>,
        redis: &Redis,
        delivery: &Arc<dyn LocalDelivery>,
        backoff: &mut Duration,
    ) -> redis::RedisResult<()> {
        let (mut sink, reader) = match redis.single_client() {
            Some(client) => {
                let pubsub = self.bounded(client.get_async_pubsub()).await?;
                let (sink, stream) = pubsub.split();
                let reader = tokio::spawn(read(
                    stream,
                    Arc::clone(delivery),
                    redis.clone(),
                    Arc::clone(&self.metrics),
                ));
                (Subscriber::Single(sink), reader)
            }
            None => {
                let seeds = redis.cluster_seeds().unwrap_or_default();
                let (push, pushes) = tokio::sync::mpsc::unbounded_channel();
                let client =
                    cluster_client(&seeds, self.command_timeout, Some(push)).map_err(|e| {
                        redis::RedisError::from((
                            redis::ErrorKind::Io,
                            "cluster client",
                            e.to_string(),
                        ))
                    })?;
                let conn = self.bounded(client.get_async_connection()).await?;
                let reader = tokio::spawn(read_sharded(
                    pushes,
                    Arc::clone(self),
                    Arc::clone(delivery),
                    redis.clone(),
                ));
                (Subscriber::Cluster(conn), reader)
            }
        };
        // Dropping the guard (any return) stops the reader and with it the
        // connection.
        let mut reader = AbortOnDrop(reader);
        self.bounded(sink.subscribe(vec![CHANNELS_QUERY_CHANNEL.to_string()]))
            .await?;
        match &self.hub {
            Some(hub) => {
                let channels = hub.channel_names();
                self.lock().dirty.extend(channels);
            }
            None => match delivery.fixed_channels() {
                Some(channels) if !channels.is_empty() => {
                    let names = channels.iter().map(|c| bus_channel(c)).collect();
                    self.bounded(sink.subscribe(names)).await?;
                }
                Some(_) => {}
                None => self.bounded(sink.subscribe_all()).await?,
            },
        }
        // Connected only once nothing is left to subscribe, decided under
        // the lock marks go in under: a subscriber whose `ready` saw the
        // bus down registered (and marked its channel) before this, so its
        // channel is confirmed before the announcement re-sends snapshots.
        loop {
            self.sync(&mut sink).await?;
            let mut s = self.lock();
            if s.dirty.is_empty() {
                s.connected = true;
                break;
            }
        }
        self.changes.send_modify(|n| *n += 1);
        *backoff = BACKOFF_START;
        self.metrics
            .connections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.connections.send_modify(|n| *n += 1);
        tracing::info!("broadcast bus subscribed");
        loop {
            tokio::select! {
                _ = &mut reader.0 => return Ok(()),
                _ = self.wake.notified() => {}
            }
            self.sync(&mut sink).await?;
        }
    }

    /// Whether Redis may have dropped this subscription on its own (a
    /// sharded subscription whose slot moved): it is one this node holds.
    fn holds(&self, bus_channel_name: &str) -> bool {
        match channel_of(bus_channel_name) {
            Some(channel) => self.lock().on_bus.contains(channel),
            None => bus_channel_name == CHANNELS_QUERY_CHANNEL,
        }
    }
}

/// The Pusher channel a bus channel (`rollcall:c:{<channel>}`) carries.
fn channel_of(bus_channel_name: &str) -> Option<&str> {
    bus_channel_name
        .strip_prefix("rollcall:c:{")?
        .strip_suffix('}')
}

/// The bus's subscribing side: a pub/sub connection to one server, or a
/// RESP3 cluster connection whose subscriptions are sharded
/// (`SSUBSCRIBE`), each on the master that owns its channel's slot.
enum Subscriber {
    Single(PubSubSink),
    Cluster(ClusterConnection),
}

impl Subscriber {
    async fn subscribe(&mut self, names: Vec<String>) -> redis::RedisResult<()> {
        match self {
            Self::Single(sink) => sink.subscribe(names).await,
            // One SSUBSCRIBE names channels of one slot only: one each,
            // sent together.
            Self::Cluster(conn) => {
                let all = names.into_iter().map(|name| {
                    let mut conn = conn.clone();
                    async move { conn.ssubscribe(name).await }
                });
                futures_util::future::try_join_all(all).await.map(drop)
            }
        }
    }

    async fn unsubscribe(&mut self, names: Vec<String>) -> redis::RedisResult<()> {
        match self {
            Self::Single(sink) => sink.unsubscribe(names).await,
            Self::Cluster(conn) => {
                let all = names.into_iter().map(|name| {
                    let mut conn = conn.clone();
                    async move { conn.sunsubscribe(name).await }
                });
                futures_util::future::try_join_all(all).await.map(drop)
            }
        }
    }

    /// Every channel, for a delivery that keeps no registry and names no
    /// channels: a pattern on one server. Sharded pub/sub has no patterns,
    /// so on Cluster such a bus hears no broadcasts.
    async fn subscribe_all(&mut self) -> redis::RedisResult<()> {
        match self {
            Self::Single(sink) => sink.psubscribe(BUS_CHANNEL_PATTERN).await,
            Self::Cluster(_) => {
                tracing::warn!(
                    "a bus without a channel registry or fixed channels hears no broadcasts on Cluster"
                );
                Ok(())
            }
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reads the connection's messages until it is lost.
async fn read(
    mut stream: PubSubStream,
    delivery: Arc<dyn LocalDelivery>,
    redis: Redis,
    metrics: Arc<BusMetrics>,
) {
    while let Some(msg) = stream.next().await {
        receive(
            msg.get_channel_name(),
            msg.get_payload_bytes(),
            &delivery,
            &redis,
            &metrics,
        );
    }
}

/// Reads a cluster connection's pushes until a node's connection is lost
/// or Redis drops a subscription on its own (its slot moved): either may
/// have lost broadcasts, so the whole connection is made anew, resubscribed
/// and announced (snapshots re-sent).
async fn read_sharded(
    mut pushes: tokio::sync::mpsc::UnboundedReceiver<redis::PushInfo>,
    feed: Arc<Feed>,
    delivery: Arc<dyn LocalDelivery>,
    redis: Redis,
) {
    while let Some(push) = pushes.recv().await {
        match push.kind {
            redis::PushKind::SMessage | redis::PushKind::Message => {
                let mut data = push.data.into_iter();
                let (Some(channel), Some(payload)) = (data.next(), data.next()) else {
                    continue;
                };
                let (Ok(channel), Ok(payload)) = (
                    redis::from_redis_value::<String>(channel),
                    redis::from_redis_value::<Vec<u8>>(payload),
                ) else {
                    tracing::warn!("malformed sharded message on the bus; dropped");
                    continue;
                };
                receive(&channel, &payload, &delivery, &redis, &feed.metrics);
            }
            redis::PushKind::Disconnection => {
                tracing::warn!("a cluster node's bus connection was lost");
                return;
            }
            redis::PushKind::SUnsubscribe => {
                let name = push
                    .data
                    .into_iter()
                    .next()
                    .and_then(|v| redis::from_redis_value::<String>(v).ok());
                if name.as_deref().is_some_and(|n| feed.holds(n)) {
                    tracing::warn!(
                        channel = name.as_deref().unwrap_or_default(),
                        "Redis dropped a sharded subscription (slot moved)"
                    );
                    return;
                }
            }
            _ => {}
        }
    }
}

/// One message from the bus: a channel query or a broadcast.
fn receive(
    channel: &str,
    payload: &[u8],
    delivery: &Arc<dyn LocalDelivery>,
    redis: &Redis,
    metrics: &BusMetrics,
) {
    if channel == CHANNELS_QUERY_CHANNEL {
        answer_query(delivery, redis, payload);
    } else {
        metrics
            .received
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        deliver(&**delivery, payload);
    }
}

pub fn spawn(
    redis: Redis,
    delivery: Arc<dyn LocalDelivery>,
    command_timeout: Duration,
    metrics: Arc<BusMetrics>,
) -> BusHandle {
    let hub = delivery.hub().cloned();
    let feed = Arc::new(Feed {
        hub: hub.clone(),
        state: Mutex::new(FeedState::default()),
        wake: Notify::new(),
        changes: watch::channel(0).0,
        connections: watch::channel(0).0,
        // Longer than a round of the bus task behind another one, so a
        // subscriber normally gets its confirmation; past it, see `late`.
        wait: command_timeout * 3,
        command_timeout,
        metrics,
    });
    if let Some(hub) = &hub {
        hub.watch_occupancy(Arc::clone(&feed) as Arc<dyn OccupancyWatch>);
    }
    let task_feed = Arc::clone(&feed);
    let task = tokio::spawn(async move {
        let feed = task_feed;
        let mut backoff = BACKOFF_START;
        loop {
            match feed.serve(&redis, &delivery, &mut backoff).await {
                Ok(()) => tracing::warn!("broadcast bus connection lost; reconnecting"),
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "broadcast bus cannot subscribe; reconnecting")
                }
            }
            feed.disconnected();
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    });
    BusHandle { feed, task }
}

fn deliver(delivery: &dyn LocalDelivery, payload: &[u8]) {
    let Some(split) = payload.iter().position(|&b| b == b'\n') else {
        tracing::warn!("malformed broadcast on the bus; dropped");
        return;
    };
    let (header, frame) = (&payload[..split], &payload[split + 1..]);
    let (Ok(header), Ok(frame)) = (
        std::str::from_utf8(header),
        Utf8Bytes::try_from(frame.to_vec()),
    ) else {
        tracing::warn!("non-UTF-8 broadcast on the bus; dropped");
        return;
    };
    match header.split_once(' ') {
        None => delivery.deliver(header, frame, None),
        Some((channel, halt)) if halt.starts_with('!') => match parse_halt(&halt[1..]) {
            Some(why) => delivery.halt(channel, why),
            None => tracing::warn!("unknown halt on the bus; dropped"),
        },
        Some((channel, except)) => match SocketId::parse(except) {
            Ok(except) => delivery.deliver(channel, frame, Some(&except)),
            Err(_) => tracing::warn!("malformed excluded socket id on the bus; dropped"),
        },
    }
}

/// Pushes this node's counts for the query to its reply key, off the bus
/// loop (broadcasts keep flowing while the answer is written).
fn answer_query(delivery: &Arc<dyn LocalDelivery>, redis: &Redis, payload: &[u8]) {
    let Some((reply_key, query)) = std::str::from_utf8(payload)
        .ok()
        .and_then(decode_channel_query)
    else {
        tracing::warn!("malformed channel query on the bus; ignored");
        return;
    };
    let answer = match serde_json::to_string(&delivery.subscriptions(&query)) {
        Ok(answer) => answer,
        Err(e) => return tracing::warn!(error = %e, "cannot encode a channel query answer"),
    };
    let (reply_key, redis) = (reply_key.to_string(), redis.clone());
    tokio::spawn(async move {
        let reply = redis
            .run(|mut conn| async move {
                redis::pipe()
                    .rpush(&reply_key, answer)
                    .ignore()
                    .pexpire(&reply_key, CHANNELS_ANSWER_TTL_MS as i64)
                    .ignore()
                    .query_async::<()>(&mut conn)
                    .await
            })
            .await;
        if let Err(e) = reply {
            tracing::warn!(error = %e, "cannot answer a channel query");
        }
    });
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::store::redis::{encode_broadcast, encode_channel_query};
    use crate::store::{Broadcast, ChannelQuery, SubscriptionCounts};

    /// Records what the bus hands to "this node" (a halt as its frame
    /// `halt:<halt>`).
    #[derive(Default)]
    struct Seen(Mutex<Vec<(String, String, Option<String>)>>);

    impl LocalDelivery for Seen {
        fn deliver(&self, channel: &str, frame: Utf8Bytes, except: Option<&SocketId>) {
            let except = except.map(|s| s.as_str().to_string());
            let entry = (channel.to_string(), frame.as_str().to_string(), except);
            self.0.lock().unwrap().push(entry);
        }

        fn halt(&self, channel: &str, why: crate::pusher::Halt) {
            let entry = (channel.to_string(), format!("halt:{why:?}"), None);
            self.0.lock().unwrap().push(entry);
        }

        fn subscriptions(&self, _query: &ChannelQuery) -> SubscriptionCounts {
            SubscriptionCounts::new()
        }
    }

    #[test]
    fn broadcasts_round_trip_with_and_without_an_excluded_socket() {
        let seen = Seen::default();
        let frame = r#"{"event":"e","channel":"a.b","data":"x\ny"}"#;
        let mut b = Broadcast::new("a.b", Utf8Bytes::from(frame));
        deliver(&seen, &encode_broadcast(&b));
        b.except = Some(SocketId::parse("12.34").unwrap());
        deliver(&seen, &encode_broadcast(&b));
        deliver(&seen, b"a.b not-a-socket\n{}");
        deliver(&seen, b"no newline");
        let halt = Broadcast::halt("#server-to-user-12", crate::pusher::Halt::Terminated);
        deliver(&seen, &encode_broadcast(&halt));
        deliver(&seen, b"#server-to-user-12 !nonsense\n");
        let seen = seen.0.into_inner().unwrap();
        assert_eq!(
            seen,
            [
                ("a.b".into(), frame.into(), None),
                ("a.b".into(), frame.into(), Some("12.34".into())),
                ("#server-to-user-12".into(), "halt:Terminated".into(), None),
            ]
        );
    }

    #[test]
    fn channel_queries_round_trip() {
        let key = "rollcall:channels:reply:00ff";
        for query in [
            ChannelQuery::Names(vec!["a".into()]),
            ChannelQuery::Names(vec!["a,b".into(), "c;d".into()]),
            ChannelQuery::Prefix(String::new()),
            ChannelQuery::Prefix("private-".into()),
        ] {
            let message = encode_channel_query(key, &query);
            assert_eq!(decode_channel_query(&message), Some((key, query)));
        }
        // Only reply keys in our namespace are ever written to.
        assert_eq!(decode_channel_query("rollcall:state\n=a"), None);
        assert_eq!(decode_channel_query(&format!("{key}\n?a")), None);
    }
}
