//! What happened to a channel, as the app's webhooks report it
//! (`ROLLCALL_APP_WEBHOOK_URL`): occupied and vacated, members added and
//! removed, client events, cache misses.
//!
//! Producers emit each event **once per cluster**: occupancy and membership
//! changes are decided by the store-side transition (the first node to
//! occupy a channel, the last connection of a user on any node), never by
//! one node's view, and a dead node's departures are emitted by the node
//! that reaps it. The sink makes them durable before `emit` returns, so a
//! node that dies after emitting loses nothing.

use async_trait::async_trait;

/// One app-webhook event, in Pusher's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelEvent {
    /// The channel's first subscriber on any node.
    Occupied { channel: String },
    /// The channel's last subscriber on any node left.
    Vacated { channel: String },
    /// A presence channel's user joined (their first connection).
    MemberAdded { channel: String, user_id: String },
    /// A presence channel's user left (their last connection, any node).
    MemberRemoved { channel: String, user_id: String },
    /// A `client-*` event a socket sent.
    ClientEvent {
        channel: String,
        event: String,
        /// The event's data as relayed (a string).
        data: String,
        socket_id: String,
        /// The sender's user id on presence channels.
        user_id: Option<String>,
    },
    /// A subscriber of a cache channel found no cached event.
    CacheMiss { channel: String },
}

/// Where channel events go. `emit` returns once they are stored durably
/// (or, with no webhook configured, at once).
#[async_trait]
pub trait ChannelEvents: Send + Sync + 'static {
    async fn emit(&self, events: Vec<ChannelEvent>);
}

/// No webhook configured: events go nowhere.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoChannelEvents;

#[async_trait]
impl ChannelEvents for NoChannelEvents {
    async fn emit(&self, _events: Vec<ChannelEvent>) {}
}
