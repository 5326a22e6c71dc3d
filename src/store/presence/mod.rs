//! Presence channels' members and the node registry, store-side: beside the
//! room store ([`super::Store`]), not part of it. Rooms change through one
//! optimistic commit; presence changes on every subscribe and disconnect of
//! a `presence-` channel, from every node, and must be exact across them.
//!
//! Model: a *connection* is one socket on one node (`"<node> <socket_id>"`)
//! subscribed as one user; a *member* is a user with at least one
//! connection. A second tab adds a connection, not a member; a member
//! leaves with their last connection, on whichever node it was.
//!
//! Invariants every implementation keeps:
//! - `join` and `leave` are atomic, and publish `member_added` /
//!   `member_removed` in the same step as the change, so every subscriber
//!   on every node sees a user's additions and removals in the order they
//!   happened (two nodes publishing after the fact could reorder them and
//!   leave a ghost on screen).
//! - A node's connections are recorded under its id in the node's index
//!   *before* they are joined and removed from it only *after* they left,
//!   so a node that dies can always be cleaned up completely
//!   ([`PresenceStore::remove_node`]) by any other node.

pub mod memory;
pub mod redis;

use std::time::Duration;

use async_trait::async_trait;

use super::{Broadcast, StoreError};
use crate::domain::UnixMillis;

pub use memory::MemoryPresence;
pub use redis::RedisPresence;

/// One connection joining a presence channel.
#[derive(Debug, Clone, Copy)]
pub struct Joining<'a> {
    pub channel: &'a str,
    pub node: &'a str,
    pub socket: &'a str,
    pub user_id: &'a str,
    /// The member's `user_info` as JSON text (`null` when none).
    pub user_info: &'a str,
}

/// A member as stored: the user id and its `user_info` JSON text.
pub type Member = (String, String);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinOutcome {
    /// The connection is a member; every member now, this one included;
    /// `added` when this was the user's first connection (a new member).
    Joined { members: Vec<Member>, added: bool },
    /// The channel already has `max_members` other users: nothing changed.
    Full,
}

/// What a node's lease renewal found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Renewal {
    /// Whether the node was still registered: `false` on the first renewal,
    /// and after another node declared it dead and removed its members.
    pub was_registered: bool,
    /// The lease had already lapsed: other nodes may be removing this
    /// node's members right now. Nothing was renewed; the node must stop,
    /// clean up after itself, and register afresh.
    pub lapsed: bool,
    /// Open connections reported by every live node, this one included.
    pub cluster_connections: u64,
}

/// The member frames a store publishes, built by the caller (the Pusher
/// layer owns frame formats); `removed` is needed by the store's own
/// cleanup of dead nodes, so the store builds that one.
#[async_trait]
pub trait PresenceStore: Send + Sync + 'static {
    /// Records `joining`. When it is the user's first connection anywhere,
    /// publishes `added` (the `member_added` frame, excluding the joining
    /// socket) atomically with the change. A repeated join of the same
    /// connection changes nothing. A new user on a channel that already has
    /// `max_members` users is refused (`Full`).
    async fn join(
        &self,
        joining: Joining<'_>,
        max_members: usize,
        added: &Broadcast,
    ) -> Result<JoinOutcome, StoreError>;

    /// Removes the connection; when it was the user's last, publishes
    /// `member_removed` and returns that user's id.
    async fn leave(
        &self,
        channel: &str,
        node: &str,
        socket: &str,
    ) -> Result<Option<String>, StoreError>;

    /// The channel's members, in user-id order.
    async fn members(&self, channel: &str) -> Result<Vec<Member>, StoreError>;

    /// How many members each channel has.
    async fn user_counts(&self, channels: &[String]) -> Result<Vec<usize>, StoreError>;

    /// Removes every connection `node` recorded, on every channel,
    /// publishing `member_removed` for each user who had no other
    /// connection; returns those (channel, user id) pairs. For a node that
    /// is dead: calling it twice removes nothing the second time.
    async fn remove_node(&self, node: &str) -> Result<Vec<(String, String)>, StoreError>;
}

/// Which nodes are alive: each renews a lease; one whose lease lapsed is
/// dead, and any other node cleans up after it.
#[async_trait]
pub trait NodeRegistry: Send + Sync + 'static {
    /// Extends `node`'s lease to `now + ttl` and records its open
    /// connection count — unless the lease already lapsed (`lapsed`), which
    /// it never revives: the node is dead to the others until forgotten.
    async fn renew_node(
        &self,
        node: &str,
        ttl: Duration,
        now: UnixMillis,
        connections: u64,
    ) -> Result<Renewal, StoreError>;

    /// Nodes whose lease lapsed before `now`.
    async fn expired_nodes(&self, now: UnixMillis) -> Result<Vec<String>, StoreError>;

    /// Drops `node` from the registry if its lease is still lapsed at `now`
    /// (a node that came back and renewed meanwhile stays).
    async fn forget_node(&self, node: &str, now: UnixMillis) -> Result<(), StoreError>;
}

/// The `member_removed` frame for `user_id` on `channel`, as the stores
/// publish it (the Redis scripts build the same JSON).
pub fn member_removed_frame(channel: &str, user_id: &str) -> String {
    let data = serde_json::json!({ "user_id": user_id }).to_string();
    serde_json::json!({
        "event": "pusher_internal:member_removed",
        "channel": channel,
        "data": data,
    })
    .to_string()
}
