//! The store side of app webhooks: the pending-webhook queue and the
//! cluster-wide occupancy record. Two traits, implemented together by the
//! memory store (`memory.rs`, one node) and the Redis store (`redis.rs`,
//! shared by every node), because an occupancy change and the webhook it
//! causes are written in one atomic step: a crash between the two can
//! neither lose the webhook nor send it twice.
//!
//! **Queue.** Each event gets an id (increasing) and a due time. A worker
//! *claims* due events: their due time moves to the end of a visibility
//! timeout, so no other worker takes them meanwhile, and if the claimer dies
//! they become due again and another node delivers them. Delivered events
//! are acknowledged (deleted); failed ones get a later due time
//! (`retry`). The queue holds at most `max_len` events: past it new events
//! are refused and counted (a receiver down for long must not fill Redis).
//!
//! **Hold** (a page reload sends nothing): an event with `Hold::Held` is
//! due only `hold` after it was queued and is remembered under its key
//! while it waits; an event with `Hold::Cancels` under the same key that
//! arrives while it still waits deletes it and is itself dropped. Once the
//! held event is due (or claimed) it is no longer cancellable, and a later
//! return is queued as a fresh event after it.

use std::time::Duration;

use async_trait::async_trait;

use super::event::Queued;
use crate::domain::UnixMillis;
use crate::store::StoreError;

/// Settings of a webhook store.
#[derive(Debug, Clone)]
pub struct QueueOptions {
    /// How long departures wait for a matching return.
    pub hold: Duration,
    /// Most events queued at once (across the cluster, on Redis).
    pub max_len: usize,
}

/// One claimed event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub id: String,
    /// The event object's JSON text.
    pub json: String,
    /// When it was queued (expiry counts from here).
    pub queued_at: UnixMillis,
    /// Failed deliveries so far.
    pub tries: u32,
}

/// What a claim found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claim {
    /// Due events, oldest due first, now claimed by the caller.
    pub events: Vec<Claimed>,
    /// When nothing was due: the earliest due time of what is queued.
    pub next_due: Option<UnixMillis>,
}

#[async_trait]
pub trait WebhookQueue: Send + Sync + 'static {
    /// Queues `events` durably (applying the hold) before returning; answers
    /// how many were refused because the queue is full.
    async fn enqueue(&self, events: Vec<Queued>, now: UnixMillis) -> Result<usize, StoreError>;

    /// Claims up to `max` events due at `now` until `until` (the
    /// visibility timeout).
    async fn claim(
        &self,
        max: usize,
        now: UnixMillis,
        until: UnixMillis,
    ) -> Result<Claim, StoreError>;

    /// Deletes delivered (or expired) events.
    async fn ack(&self, ids: &[String]) -> Result<(), StoreError>;

    /// Makes claimed events due again at `due`, counting one more failure.
    /// Events already acknowledged stay gone.
    async fn retry(&self, ids: &[String], due: UnixMillis) -> Result<(), StoreError>;
}

/// The cluster-wide occupancy record: per channel, the nodes with at least
/// one local subscriber. Each transition of the record to or from empty
/// queues `channel_occupied` / `channel_vacated` in the same atomic step.
#[async_trait]
pub trait Occupancy: Send + Sync + 'static {
    /// Records that `node` has subscribers of `channel`. `true` when no node
    /// had: `channel_occupied` was queued.
    async fn occupy(&self, channel: &str, node: &str, now: UnixMillis) -> Result<bool, StoreError>;

    /// Records that `node` has no subscriber of `channel` left. `true` when
    /// it was the last node: `channel_vacated` was queued (held).
    async fn vacate(&self, channel: &str, node: &str, now: UnixMillis) -> Result<bool, StoreError>;

    /// Forgets a dead node: every channel it held whose record becomes empty
    /// is returned, and `channel_vacated` (held) is already queued for each.
    async fn vacate_node(&self, node: &str, now: UnixMillis) -> Result<Vec<String>, StoreError>;
}
