//! Reconciliation with LiveKit (rules 23–27): a background job beside the
//! sweeper that asks LiveKit's RoomService who is really in each live room,
//! because LiveKit drops webhooks it cannot deliver.
//!
//! - **When:** every `ROLLCALL_RECONCILE_INTERVAL` (one node per interval:
//!   a store lease, which only saves work), at once when the store comes
//!   back from an outage (webhooks were refused meanwhile and LiveKit gave
//!   up on them), and on `POST /api/sessions/{room}/reconcile`.
//! - **Which rooms:** every room `ListRooms` has that matches the room
//!   pattern (joins rollcall never heard of), and every room of the
//!   live-room index (an open cycle, or inside its counting window).
//! - **Exactly once:** a listing is read into the engine's terms
//!   (`RawListing::read`), the engine decides (`RoomState::plan_listing`),
//!   and the decision is one `Rooms::update_deciding`: a compare-and-set
//!   that logs the listing (rule 27). Two nodes reconciling one room at
//!   once: the loser reloads and finds nothing left to do.
//! - **Bounded:** every call has a timeout, at most `CONCURRENCY` rooms
//!   are asked at once, a pass covers at most `MAX_ROOMS` rooms, and a
//!   LiveKit that is down or slow changes nothing (rule 26) and holds up
//!   nothing else: webhooks, heartbeats and sweeps never wait for it.

pub mod listing;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

pub use listing::{ListingRecord, RawListing};

use crate::domain::{EventId, ParticipantSid, Timestamp, UnixMillis, now_millis};
use crate::engine::{Changes, Fact, ListingPlan, Session};
use crate::livekit::{RoomService, RoomServiceError};
use crate::metrics::Metrics;
use crate::rooms::{LIVE_HORIZON_MS, Rooms, UpdateError, Updated};
use crate::store::{LogKind, LoggedEvent};

/// Rooms asked at once: LiveKit's API is shared with everything else the
/// deployment does, and a pass over many rooms need not be fast.
const CONCURRENCY: usize = 8;
/// Rooms per pass at most (each one `ListParticipants` call).
const MAX_ROOMS: usize = 10_000;
/// How often the job checks whether the store came back from an outage.
const OUTAGE_PROBE: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct Reconciler {
    inner: Arc<Inner>,
}

struct Inner {
    rooms: Rooms,
    livekit: RoomService,
    /// This node's name in leases.
    node: String,
    /// `None`: only on demand.
    interval: Option<Duration>,
}

/// What reconciling one room did (or, on a dry run, would do).
#[derive(Debug, Clone, Serialize)]
pub struct RoomOutcome {
    pub room: String,
    pub dry_run: bool,
    pub taken_at: Timestamp,
    /// Whether LiveKit has the room.
    pub room_exists: bool,
    /// Participants LiveKit lists as in the room (any kind).
    pub listed: usize,
    pub opened: Vec<OpenedCycle>,
    pub closed: Vec<ClosedCycle>,
    /// Whether the room's schedule was taken from LiveKit's room metadata.
    pub schedule_from_metadata: bool,
    /// Whether anything changed (or would change).
    pub changed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct OpenedCycle {
    pub user_id: serde_json::Value,
    pub identity: String,
    pub participant_sid: ParticipantSid,
    pub joined_at: Timestamp,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClosedCycle {
    pub user_id: serde_json::Value,
    pub participant_sid: ParticipantSid,
    pub left_at: Timestamp,
}

/// Totals of one pass over every live room.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassStats {
    pub rooms: usize,
    pub changed: usize,
    pub failed: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("LiveKit: {0}")]
    LiveKit(#[from] RoomServiceError),
    #[error(transparent)]
    Update(#[from] UpdateError),
}

impl From<crate::store::StoreError> for ReconcileError {
    fn from(e: crate::store::StoreError) -> Self {
        Self::Update(UpdateError::Store(e))
    }
}

impl Reconciler {
    pub fn new(
        rooms: Rooms,
        livekit: RoomService,
        node: String,
        interval: Option<Duration>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                rooms,
                livekit,
                node,
                interval,
            }),
        }
    }

    /// The background job: a pass every interval, and one at once when
    /// the store comes back from an outage. Returns at shutdown; does
    /// nothing when the interval is `None` (on demand only).
    pub async fn run(self, shutdown: CancellationToken) {
        let Some(interval) = self.inner.interval else {
            return;
        };
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut probe = tokio::time::interval(OUTAGE_PROBE);
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut store_was_down = false;
        loop {
            let lease = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {
                    // Shorter than the interval: this node's own next tick
                    // must find its lease expired.
                    Some(("reconcile", interval.mul_f64(0.75)))
                }
                _ = probe.tick() => {
                    let down = self.inner.rooms.store.ping().await.is_err();
                    let recovered = store_was_down && !down;
                    store_was_down = down;
                    // Every node sees the recovery at about the same time;
                    // one of them asks.
                    recovered.then_some(("reconcile:recovery", OUTAGE_PROBE * 5))
                }
            };
            let Some((lease, ttl)) = lease else { continue };
            let pass = tokio::select! {
                _ = shutdown.cancelled() => return,
                pass = self.pass_with_lease(lease, ttl) => pass,
            };
            match pass {
                Ok(Some(stats)) if stats.changed > 0 || stats.failed > 0 => {
                    tracing::info!(
                        rooms = stats.rooms,
                        changed = stats.changed,
                        failed = stats.failed,
                        trigger = lease,
                        "reconciled with LiveKit"
                    );
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, trigger = lease, "reconciliation skipped; nothing changed")
                }
            }
        }
    }

    async fn pass_with_lease(
        &self,
        lease: &str,
        ttl: Duration,
    ) -> Result<Option<PassStats>, ReconcileError> {
        let store = &self.inner.rooms.store;
        if !store.try_lease(lease, &self.inner.node, ttl).await? {
            return Ok(None);
        }
        self.pass().await.map(Some)
    }

    /// One pass over every live room (rule 23). An error listing rooms
    /// ends the pass having changed nothing; an error on one room skips
    /// that room only.
    pub async fn pass(&self) -> Result<PassStats, ReconcileError> {
        let metrics = &self.inner.rooms.metrics;
        // A room missing from this answer was gone at this instant.
        let listed_at = now_millis();
        let listed = match self.inner.livekit.list_rooms_raw(&[]).await {
            Ok(rooms) => rooms,
            Err(e) => {
                metrics.reconcile_error(e.kind());
                return Err(e.into());
            }
        };
        // Rooms LiveKit has (joins rollcall may never have heard of), then
        // the rooms rollcall knows to be live.
        let mut candidates: BTreeMap<String, Option<serde_json::Value>> = BTreeMap::new();
        for room in listed {
            let name = room
                .get("name")
                .and_then(|n| n.as_str())
                .unwrap_or_default()
                .to_string();
            if self.inner.rooms.session(&name).is_some() {
                candidates.insert(name, Some(room));
            }
        }
        let now = now_millis();
        for room in self.inner.rooms.store.live_rooms(now, MAX_ROOMS).await? {
            candidates.entry(room.to_string()).or_insert(None);
        }
        let mut stats = PassStats::default();
        let mut results = futures_util::stream::iter(candidates.into_iter().take(MAX_ROOMS))
            .map(|(name, room)| async move {
                let session = self.inner.rooms.session(&name)?;
                Some(self.reconcile(&session, room, listed_at, false).await)
            })
            .buffer_unordered(CONCURRENCY);
        while let Some(result) = results.next().await {
            let Some(result) = result else { continue };
            stats.rooms += 1;
            match result {
                Ok(outcome) if outcome.changed => stats.changed += 1,
                Ok(_) => {}
                Err(e) => {
                    stats.failed += 1;
                    tracing::warn!(error = %e, "a room was not reconciled");
                }
            }
        }
        Metrics::add(&metrics.reconcile_passes, 1);
        metrics.reconcile_last_success_ms.store(
            now_millis().max(0) as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(stats)
    }

    /// Asks LiveKit about one room now (the API's on-demand reconcile).
    pub async fn reconcile_now(
        &self,
        session: &Session,
        dry_run: bool,
    ) -> Result<RoomOutcome, ReconcileError> {
        // Whether LiveKit has the room, and its metadata (a schedule, rule
        // 21), come from ListRooms.
        let listed_at = now_millis();
        let room = match self
            .inner
            .livekit
            .list_rooms_raw(&[session.room.to_string()])
            .await
        {
            Ok(rooms) => rooms
                .into_iter()
                .find(|r| r.get("name").and_then(|n| n.as_str()) == Some(session.room.as_str())),
            Err(e) => {
                self.inner.rooms.metrics.reconcile_error(e.kind());
                return Err(e.into());
            }
        };
        self.reconcile(session, room, listed_at, dry_run).await
    }

    /// Lists one room's participants and applies what the listing means.
    /// `room` is the room as `ListRooms` answered it at `listed_at`, or
    /// `None` when it did not list it: LiveKit does not have the room
    /// (rule 25's last sentence). ListRooms decides that, not
    /// ListParticipants, which by default answers an unknown room with an
    /// empty list.
    async fn reconcile(
        &self,
        session: &Session,
        room: Option<serde_json::Value>,
        listed_at: UnixMillis,
        dry_run: bool,
    ) -> Result<RoomOutcome, ReconcileError> {
        let rooms = &self.inner.rooms;
        let store = &rooms.store;
        let heartbeats = store.heartbeats(&session.room).await?;
        let sightings = store.sightings(&session.room).await?;
        let (taken_at, raw) = match room {
            None => (listed_at, RawListing::default()),
            Some(room) => {
                // Taken when asked: a join after this instant is newer
                // than the listing and is never closed by it.
                let taken_at = now_millis();
                let participants = match self
                    .inner
                    .livekit
                    .list_participants_raw(session.room.as_str())
                    .await
                {
                    Ok(p) => p,
                    Err(e) => {
                        rooms.metrics.reconcile_error(e.kind());
                        return Err(e.into());
                    }
                };
                let raw = match participants {
                    Some(participants) => RawListing {
                        room: Some(room),
                        participants,
                    },
                    // Closed between the two calls.
                    None => RawListing::default(),
                };
                (taken_at, raw)
            }
        };
        Metrics::add(&rooms.metrics.reconcile_listings, 1);
        let listing = raw.read(taken_at, &rooms.naming);
        let present: Vec<(ParticipantSid, UnixMillis)> = listing
            .present
            .iter()
            .map(|sid| (sid.clone(), taken_at))
            .collect();
        let id = EventId::new(format!("LL_{}_{:016x}", taken_at, rand::random::<u64>()));
        let mut decided = None;
        let mutate = |state: &mut crate::engine::RoomState| {
            let plan = state.plan_listing(&listing, &heartbeats, &sightings);
            decided = Some(plan.clone());
            if plan.is_empty() || dry_run {
                return (Changes::default(), None);
            }
            let record = ListingRecord::new(&raw, taken_at, &plan);
            let observation = listing::live_observation(id.clone(), taken_at, &raw, plan);
            let changes = state.apply(&observation);
            let entry = LoggedEvent {
                id: id.clone(),
                received_at: now_millis(),
                body: serde_json::to_string(&record).expect("a listing record serializes"),
                kind: LogKind::LivekitListing,
            };
            (changes, Some(entry))
        };
        let updated = if dry_run {
            let record = store.load_room(&session.room).await?;
            let mut state = record.map(|r| (*r.state).clone()).unwrap_or_default();
            let mut mutate = mutate;
            mutate(&mut state);
            Updated::Unchanged {
                state: Arc::new(state),
            }
        } else {
            rooms.update_deciding(session, mutate).await?
        };
        // What a later listing needs for rule 25, and the live index kept
        // fresh while LiveKit still has people here.
        if !dry_run {
            store.record_sightings(&session.room, &present).await?;
            let state = match &updated {
                Updated::Committed { state, .. } | Updated::Unchanged { state } => Some(state),
                Updated::Duplicate => None,
            };
            if let Some(until) = state.and_then(|s| crate::rooms::live_hint(s, taken_at)) {
                store
                    .live_until(&session.room, until.min(taken_at + LIVE_HORIZON_MS))
                    .await?;
            }
        }
        let plan = decided.unwrap_or_default();
        let changed = !plan.is_empty();
        let committed = matches!(updated, Updated::Committed { .. });
        if committed {
            Metrics::add(&rooms.metrics.reconcile_rooms_changed, 1);
            log_changes(session, &plan, &updated);
        }
        if committed && let Some(Fact::Listing { opens, closes }) = &plan.fact {
            Metrics::add(&rooms.metrics.reconcile_opened, opens.len() as u64);
            Metrics::add(&rooms.metrics.reconcile_closed, closes.len() as u64);
        }
        let (opened, closed) = match &plan.fact {
            Some(Fact::Listing { opens, closes }) => (
                opens
                    .iter()
                    .map(|j| OpenedCycle {
                        user_id: j.participant.user_id.to_json(),
                        identity: j.participant.identity.to_string(),
                        participant_sid: j.participant.sid.clone(),
                        joined_at: Timestamp(j.joined_at),
                    })
                    .collect(),
                closes
                    .iter()
                    .map(|c| ClosedCycle {
                        user_id: c.user_id.to_json(),
                        participant_sid: c.sid.clone(),
                        left_at: Timestamp(c.at),
                    })
                    .collect(),
            ),
            _ => (Vec::new(), Vec::new()),
        };
        Ok(RoomOutcome {
            room: session.room.to_string(),
            dry_run,
            taken_at: Timestamp(taken_at),
            room_exists: raw.room.is_some(),
            listed: listing.present.len(),
            opened,
            closed,
            schedule_from_metadata: plan.metadata_schedule.is_some(),
            changed,
        })
    }
}

/// One INFO line per change a listing made, for operators.
fn log_changes(session: &Session, plan: &ListingPlan, updated: &Updated) {
    let Updated::Committed { state, .. } = updated else {
        return;
    };
    if let Some(Fact::Listing { opens, closes }) = &plan.fact {
        for j in opens {
            tracing::info!(
                room = %session.room,
                identity = %j.participant.identity,
                sid = %j.participant.sid,
                joined_at = %Timestamp(j.joined_at).to_rfc3339(),
                "reconciliation opened a cycle LiveKit lists but no webhook reported"
            );
        }
        for c in closes {
            let identity = state
                .people
                .get(&c.user_id)
                .map(|p| p.identity.value.to_string())
                .unwrap_or_default();
            tracing::info!(
                room = %session.room,
                identity = %identity,
                sid = %c.sid,
                left_at = %Timestamp(c.at).to_rfc3339(),
                "reconciliation closed a cycle LiveKit no longer lists"
            );
        }
    }
    if let Some(schedule) = &plan.metadata_schedule {
        tracing::info!(
            room = %session.room,
            starts_at = %schedule.starts_at.to_rfc3339(),
            duration_minutes = schedule.duration_minutes,
            "reconciliation took the schedule from LiveKit's room metadata"
        );
    }
}
