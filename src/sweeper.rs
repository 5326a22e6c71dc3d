//! The sweeper: every `ROLLCALL_SWEEP_INTERVAL`, closes stale cycles
//! (rule 13), finalizes sessions that are due (rule 20) and hands pending
//! reports to the `Reporter`.
//!
//! Exactly once across nodes: every action is a `Rooms::update`, a
//! compare-and-set on the room's version, so if two nodes sweep the same
//! room one commit wins and the other, reloading, finds nothing left to
//! do. The sweep lease only saves the other nodes the work.
//!
//! The due index: writers only ever lower a room's due time
//! (`due_no_later_than`); the sweeper alone raises it (`set_due`) after
//! processing, then re-reads the room and lowers it again if a writer
//! committed meanwhile — so no deadline is ever lost, and an early one
//! costs one empty sweep.
//!
//! Known window: heartbeats are read before the room's compare-and-set, so
//! a heartbeat that lands between the two — after a silence of a whole
//! timeout — can still see its cycle closed at the previous heartbeat. Its
//! answer then says `in_meeting: true` once, the next says `false`.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::domain::{RoomName, UnixMillis};
use crate::metrics::Metrics;
use crate::report::Reporter;
use crate::rooms::{Rooms, UpdateError, Updated};

/// Rooms handled per sweep at most; the rest wait for the next tick.
const BATCH: usize = 1_000;

pub struct Sweeper {
    pub rooms: Rooms,
    pub reporter: Option<Reporter>,
    /// This node's name in leases.
    pub node: String,
    pub interval: Duration,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct SweepStats {
    pub rooms: usize,
    pub changed: usize,
}

impl Sweeper {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.sweep(crate::domain::now_millis()).await {
                Ok(stats) if stats.changed > 0 => {
                    tracing::info!(rooms = stats.rooms, changed = stats.changed, "sweep");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "sweep failed; retrying next interval"),
            }
        }
    }

    /// One pass over the rooms that are due at `now`.
    pub async fn sweep(&self, now: UnixMillis) -> Result<SweepStats, UpdateError> {
        let store = &self.rooms.store;
        let mut stats = SweepStats::default();
        // Shorter than the interval: this node's own next tick must find
        // its lease expired, or it would sweep every other tick.
        let lease = self.interval.mul_f64(0.75);
        if !store.try_lease("sweep", &self.node, lease).await? {
            return Ok(stats);
        }
        for room in store.due_rooms(now, BATCH).await? {
            stats.rooms += 1;
            if self.sweep_room(&room, now).await? {
                stats.changed += 1;
            }
        }
        Ok(stats)
    }

    async fn sweep_room(&self, room: &RoomName, now: UnixMillis) -> Result<bool, UpdateError> {
        let store = &self.rooms.store;
        let Some(session) = self.rooms.session(room.as_str()) else {
            // The room pattern changed since it was indexed.
            store.set_due(room, None).await?;
            return Ok(false);
        };
        let timing = self.rooms.timing;
        let (timeout, delay) = (timing.heartbeat_timeout_ms(), timing.finalize_delay_ms());
        let heartbeats = store.heartbeats(room).await?;
        // What the last attempt of the update did (it may be retried).
        let (mut closed, mut finalized) = (0, false);
        let updated = self
            .rooms
            .update(&session, None, |state| {
                let stale = state.stale_cycles(&heartbeats, now, timeout);
                closed = stale.len();
                let mut changes = state.close_stale(&stale);
                finalized = state.finalize_due(now, delay);
                if finalized {
                    changes.merge(state.finalize());
                }
                changes
            })
            .await?;
        let (state, changed) = match updated {
            Updated::Committed { state, .. } => {
                let metrics = &self.rooms.metrics;
                Metrics::add(&metrics.stale_cycles_closed, closed as u64);
                Metrics::add(&metrics.finalizations, u64::from(finalized));
                (state, true)
            }
            Updated::Unchanged { state } => (state, false),
            Updated::Duplicate => return Ok(false),
        };
        let mut next = state.next_due(&heartbeats, timeout, delay);
        if state.finalization.report_due()
            && let Some(reporter) = &self.reporter
        {
            reporter.deliver(session.clone());
            // Look again soon in case this node dies mid-delivery.
            next = Some(next.map_or(now + 60_000, |n| n.min(now + 60_000)));
        }
        store.set_due(room, next).await?;
        // A writer that committed after our read may have lowered the due
        // time before we raised it: lower it again from what is there now.
        if let Some(latest) = self.rooms.load(room).await?
            && latest != state
            && let Some(due) = self.rooms.due_hint(&latest, now)
        {
            store.due_no_later_than(room, due).await?;
        }
        Ok(changed)
    }
}
