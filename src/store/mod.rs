//! Where attendance state lives: traits split by concern — rooms
//! ([`RoomStore`]), cross-node broadcasts ([`Broker`]), people's signals
//! outside webhooks ([`Signals`]), background jobs' indexes and leases
//! ([`Jobs`]); [`Store`] is all four, as the application holds it — with
//! an in-memory implementation (the embedded default) and, in production,
//! Redis. Presence channels and the node registry are their own traits in
//! [`presence`].
//!
//! Invariants every implementation keeps:
//! - `commit` is atomic: the event-id check (rule 7), the log append
//!   (rule 22), the state write and the publication of its broadcasts
//!   happen together or not at all, and a commit whose `expected_version`
//!   is stale changes nothing (`Conflict`), so concurrent writers — tasks
//!   or whole nodes — never lose an update.
//! - Broadcasts of one room are published in commit order.
//! - A commit that returned `Committed` is durable as far as the store can
//!   make it; only then may the webhook be acknowledged.

pub mod bus;
mod cache;
pub mod conn;
pub mod event_cache;
pub mod memory;
pub mod presence;
pub mod redis;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::domain::{EventId, ParticipantSid, RoomName, UnixMillis, UserId};
use crate::engine::RoomState;
use crate::pusher::{Halt, SocketId};

pub use event_cache::{EventCache, MemoryEventCache};
pub use memory::MemoryStore;
pub use redis::{RedisOptions, RedisStore};

/// One entry of a room's immutable log (rules 22, 27): an accepted webhook
/// as it arrived, or a RoomService listing that changed the room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedEvent {
    pub id: EventId,
    pub received_at: UnixMillis,
    /// A webhook's raw body, byte for byte as LiveKit signed it; a
    /// listing's record (`reconcile::ListingRecord`) as JSON.
    pub body: String,
    #[serde(default)]
    pub kind: LogKind,
}

/// What a log entry is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogKind {
    #[default]
    Webhook,
    /// A RoomService listing that changed the room (rule 27).
    LivekitListing,
}

impl LogKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::LivekitListing => "livekit_listing",
        }
    }

    /// The kind a stored name stands for; entries written before kinds
    /// existed have none and are webhooks.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "" | "webhook" => Some(Self::Webhook),
            "livekit_listing" => Some(Self::LivekitListing),
            _ => None,
        }
    }
}

/// A room's state and the version a commit must name to replace it. The
/// state is shared, not copied: readers (snapshots, reports, heartbeats)
/// never pay for a clone; a writer clones once to mutate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRecord {
    pub state: Arc<RoomState>,
    pub version: u64,
}

/// A Pusher frame for every socket subscribed to `channel`, on every node.
/// Serialized once; cloning `frame` shares the bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Broadcast {
    pub channel: String,
    pub frame: Utf8Bytes,
    /// The one socket that must not get it (the HTTP API's `socket_id`):
    /// carried with the broadcast because that socket may be on any node.
    pub except: Option<SocketId>,
    /// Instead of a frame, stop every subscriber of `channel` with this
    /// halt (`terminate_connections` on a user's `#server-to-user-<id>`).
    /// Only the server makes these ([`Broadcast::halt`]); nothing a client
    /// or the HTTP API sends can become one, whatever its frame holds.
    pub halt: Option<Halt>,
}

impl Broadcast {
    /// A broadcast to every subscriber of `channel`.
    pub fn new(channel: impl Into<String>, frame: Utf8Bytes) -> Self {
        Self {
            channel: channel.into(),
            frame,
            except: None,
            halt: None,
        }
    }

    /// Halts every socket subscribed to `channel`, on every node.
    pub fn halt(channel: impl Into<String>, why: Halt) -> Self {
        Self {
            halt: Some(why),
            ..Self::new(channel, Utf8Bytes::from_static(""))
        }
    }

    /// Hands the broadcast to this node's sockets.
    pub fn hand_to(self, delivery: &dyn LocalDelivery) {
        match self.halt {
            Some(why) => delivery.halt(&self.channel, why),
            None => delivery.deliver(&self.channel, self.frame, self.except.as_ref()),
        }
    }
}

/// Which channels a channel query asks about (the Pusher HTTP API's
/// `GET /channels/{name}` and `GET /channels?filter_by_prefix=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelQuery {
    /// Exactly these channels.
    Names(Vec<String>),
    /// Every channel whose name starts with this (`""`: all channels).
    Prefix(String),
}

impl ChannelQuery {
    /// Users' `#server-to-user-` channels are never listed, as on Pusher:
    /// they are the server's, not channels a client subscribed to.
    pub fn matches(&self, channel: &str) -> bool {
        if channel.starts_with(crate::pusher::channel::USER_CHANNEL_PREFIX) {
            return false;
        }
        match self {
            Self::Names(names) => names.iter().any(|n| n == channel),
            Self::Prefix(prefix) => channel.starts_with(prefix.as_str()),
        }
    }
}

/// Channel → number of subscribed sockets; only occupied channels appear.
pub type SubscriptionCounts = BTreeMap<String, usize>;

/// One atomic step: remember and log `event`, replace the state, publish.
#[derive(Debug, Clone)]
pub struct Commit {
    /// The version read; `0` when the room had no record.
    pub expected_version: u64,
    /// The webhook behind this change, if any; schedule changes, sweeps and
    /// recalculations have none (they are not LiveKit's events).
    pub event: Option<LoggedEvent>,
    /// The new state, or `None` when the event changed nothing (it is still
    /// logged and its id remembered).
    pub state: Option<Arc<RoomState>>,
    pub broadcasts: Vec<Broadcast>,
    /// Lower the room's due time in the sweeper's index to this, before
    /// the commit and in the same round trip (see `due_no_later_than`).
    pub due: Option<UnixMillis>,
    /// Keep the room in the live-room index until at least this instant
    /// (see `live_until`), before the commit and in the same round trip.
    pub live_until: Option<UnixMillis>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitOutcome {
    Committed {
        version: u64,
    },
    /// The event id was already applied: nothing changed (rule 7).
    Duplicate,
    /// Someone committed since `expected_version` was read: reload, retry.
    Conflict,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
}

/// This node's sockets as stores see them. Implemented by the Pusher hub;
/// stores call `deliver` for every broadcast they publish or receive, and
/// `subscriptions` to answer channel queries (from any node, on Redis).
pub trait LocalDelivery: Send + Sync + 'static {
    /// Queues `frame` for every local subscriber of `channel` but `except`.
    fn deliver(&self, channel: &str, frame: Utf8Bytes, except: Option<&SocketId>);

    /// Halts every local subscriber of `channel` (a [`Broadcast::halt`]).
    fn halt(&self, channel: &str, why: Halt);

    /// Local subscriptions of the channels `query` names.
    fn subscriptions(&self, query: &ChannelQuery) -> SubscriptionCounts;

    /// The hub behind this delivery, whose first/last local subscribers
    /// decide which channels the Redis bus subscribes to. `None` (a
    /// delivery that keeps no channel registry, such as a test recorder):
    /// the bus hears every channel.
    fn hub(&self) -> Option<&crate::pusher::hub::Hub> {
        None
    }

    /// For a delivery without a hub: the channels it hears. `None`: every
    /// channel, by pattern, on one Redis. Sharded pub/sub (Redis Cluster)
    /// has no patterns, so there such a delivery must name its channels.
    fn fixed_channels(&self) -> Option<Vec<String>> {
        None
    }
}

/// Rooms: their state, the optimistic commit, their event log (rules 7,
/// 22) and which channels their updates go to.
#[async_trait]
pub trait RoomStore: Send + Sync + 'static {
    async fn load_room(&self, room: &RoomName) -> Result<Option<RoomRecord>, StoreError>;

    /// The record this node last loaded or committed for `room`, without
    /// asking the store, if it still has one: possibly stale (another node
    /// may have committed since), never wrong about what was stored at its
    /// version — a commit over it either applies to exactly that state or
    /// answers `Conflict` (or `Duplicate`). For an optimistic first attempt
    /// only; reload after a conflict. Stores that read cheaply keep none.
    fn cached_room(&self, _room: &RoomName) -> Option<RoomRecord> {
        None
    }

    /// The room's state with only what `user`'s attendance depends on: the
    /// room-level facts and that person (others may be left out). `None`
    /// when nothing is known about the room. For cheap per-person reads
    /// (heartbeats); never commit over it.
    async fn load_room_for_user(
        &self,
        room: &RoomName,
        _user: &UserId,
    ) -> Result<Option<Arc<RoomState>>, StoreError> {
        Ok(self.load_room(room).await?.map(|r| r.state))
    }

    /// `load_room` and `is_applied` together: what a webhook needs before
    /// it can apply. Stores that can answer both in one round trip do.
    async fn load_room_for_event(
        &self,
        room: &RoomName,
        id: &EventId,
    ) -> Result<(Option<RoomRecord>, bool), StoreError> {
        let applied = self.is_applied(room, id).await?;
        Ok((self.load_room(room).await?, applied))
    }

    /// Whether `id` was already applied to `room`: a cheap early answer for
    /// retries. `commit` checks again atomically.
    async fn is_applied(&self, room: &RoomName, id: &EventId) -> Result<bool, StoreError>;

    async fn commit(&self, room: &RoomName, commit: Commit) -> Result<CommitOutcome, StoreError>;

    /// Records that `room`'s updates go to `channel`, so a new subscriber
    /// of the channel can be sent the room's snapshot. Idempotent.
    async fn link_channel(&self, channel: &str, room: &RoomName) -> Result<(), StoreError>;

    async fn rooms_of_channel(&self, channel: &str) -> Result<Vec<RoomName>, StoreError>;

    /// The room's event log, oldest first.
    async fn event_log(&self, room: &RoomName) -> Result<Vec<LoggedEvent>, StoreError>;

    /// The rooms this store knows, most recently written first, each with
    /// its last commit instant (`GET /api/sessions`); at most `limit`.
    /// Every commit with a state marks its room.
    async fn recent_rooms(&self, limit: usize) -> Result<Vec<(RoomName, UnixMillis)>, StoreError>;
}

/// Broadcasts to every node's sockets, and channel counts summed over
/// every node.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Publishes broadcasts that are not tied to a state change (the
    /// Pusher HTTP API's events), to the sockets of every node.
    async fn publish(&self, broadcasts: Vec<Broadcast>) -> Result<(), StoreError>;

    /// Subscriptions of the channels `query` names, summed over every node
    /// (on memory: this node's). Fails rather than under-count when a node
    /// does not answer.
    async fn channel_subscriptions(
        &self,
        query: &ChannelQuery,
    ) -> Result<SubscriptionCounts, StoreError>;
}

/// What a room's people were last seen doing outside webhooks: page
/// heartbeats (rule 13) and RoomService listings (rule 25). Kept apart from
/// the room state so recording one writes no state and no log entry.
#[async_trait]
pub trait Signals: Send + Sync + 'static {
    /// Records `user`'s latest heartbeat in `room` (rule 13's record).
    async fn record_heartbeat(
        &self,
        room: &RoomName,
        user: &UserId,
        at: UnixMillis,
    ) -> Result<(), StoreError>;

    /// The latest heartbeat of every person who sent one in `room`.
    async fn heartbeats(&self, room: &RoomName)
    -> Result<BTreeMap<UserId, UnixMillis>, StoreError>;

    /// Records that RoomService listings had these sids in the room at
    /// these instants (rule 25's "last listing that contained the sid").
    /// Keeps the latest per sid; not part of the room state, so a listing
    /// that only confirms who is there writes no state and no log entry.
    async fn record_sightings(
        &self,
        room: &RoomName,
        sightings: &[(ParticipantSid, UnixMillis)],
    ) -> Result<(), StoreError>;

    /// The latest listing instant of each sid seen in the room.
    async fn sightings(
        &self,
        room: &RoomName,
    ) -> Result<BTreeMap<ParticipantSid, UnixMillis>, StoreError>;
}

/// Background jobs' bookkeeping: the sweeper's due index, the live-room
/// index reconciliation asks LiveKit about, and leases.
#[async_trait]
pub trait Jobs: Send + Sync + 'static {
    /// Keeps `room` in the live-room index (rooms reconciliation asks
    /// LiveKit about, rule 23) until at least `until`: only ever raised, so
    /// a hint from a commit that then lost its race errs towards one more
    /// room checked, never one missed.
    async fn live_until(&self, room: &RoomName, until: UnixMillis) -> Result<(), StoreError>;

    /// Rooms whose live-room entry has not lapsed at `now`, at most `limit`;
    /// lapsed entries are pruned.
    async fn live_rooms(&self, now: UnixMillis, limit: usize) -> Result<Vec<RoomName>, StoreError>;

    /// Lowers `room`'s due time in the sweeper's index to `at` (never
    /// raises it): a change that may need the sweeper sooner.
    async fn due_no_later_than(&self, room: &RoomName, at: UnixMillis) -> Result<(), StoreError>;

    /// Sets `room`'s due time, raising it if need be, or removes the room
    /// from the index (`None`). Only the sweeper calls this, for a room it
    /// just processed; see `sweeper` for why that is safe.
    async fn set_due(&self, room: &RoomName, at: Option<UnixMillis>) -> Result<(), StoreError>;

    /// Rooms whose due time is at or before `now`, earliest first.
    async fn due_rooms(&self, now: UnixMillis, limit: usize) -> Result<Vec<RoomName>, StoreError>;

    /// Takes the named lease for `ttl` if nobody holds it; `true` if taken.
    /// Leases make one node do a job other nodes would only repeat
    /// (a sweep, a report); correctness never depends on them.
    async fn try_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError>;

    /// Gives the lease back if `holder` still holds it (never someone
    /// else's that replaced an expired one).
    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError>;
}

/// The whole room-side store, as the application holds it. Presence and
/// the node registry are their own traits (`presence`).
#[async_trait]
pub trait Store: RoomStore + Broker + Signals + Jobs + Send + Sync + 'static {
    /// A short name for logs and `/readyz` (`memory`, `redis`).
    fn kind(&self) -> &'static str;

    /// Succeeds when the store can take writes (`/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;
}
