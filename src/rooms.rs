//! The application service: every change to a room — a webhook, a
//! schedule, a sweep, a finalization, a recalculation — goes through
//! `Rooms::update`, one optimistic load → mutate → commit loop, so the
//! store's atomicity covers them all and broadcasts leave in commit order.

use std::sync::Arc;
use std::time::Duration;

use crate::domain::{RoomName, UnixMillis, UserId};
use crate::engine::view::UPDATED_EVENT;
use crate::engine::{Attendance, Changes, Naming, RoomState, RoomView, Session, VerdictRules};
use crate::metrics::Metrics;
use crate::pusher::frame;
use crate::store::{Broadcast, Commit, CommitOutcome, LoggedEvent, Store, StoreError};

/// How far ahead a room with an open cycle stays in the live-room index;
/// every commit and every reconciliation that finds it still open pushes
/// it on, so only a room nothing touches for this long drops out.
pub const LIVE_HORIZON_MS: i64 = 6 * 3_600_000;

/// Until when a room is live (rule 23: reconciliation asks LiveKit about
/// rooms with an open cycle or inside their counting window), or `None`.
pub fn live_hint(state: &RoomState, now: UnixMillis) -> Option<UnixMillis> {
    let open = state.has_open_cycle().then_some(now + LIVE_HORIZON_MS);
    let window = state
        .effective_schedule()
        .map(|s| s.ends_at())
        .filter(|end| *end >= now);
    open.max(window)
}

/// How many times a commit is retried after losing a race to another
/// writer of the same room before the caller gets a 503 (LiveKit retries).
const MAX_COMMIT_ATTEMPTS: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the room is being written too fast: gave up after {MAX_COMMIT_ATTEMPTS} attempts")]
    Contention,
}

/// Timing rules the sweeper applies (rules 13 and 20).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub heartbeat_timeout: Duration,
    pub finalize_delay: Duration,
}

impl Timing {
    pub fn heartbeat_timeout_ms(&self) -> i64 {
        self.heartbeat_timeout.as_millis() as i64
    }

    pub fn finalize_delay_ms(&self) -> i64 {
        self.finalize_delay.as_millis() as i64
    }
}

#[derive(Debug)]
pub enum Updated {
    /// Committed; the state as stored and what changed.
    Committed {
        state: Arc<RoomState>,
        changes: Changes,
    },
    /// The event was already applied (rule 7): nothing changed.
    Duplicate,
    /// The mutation found nothing to do; nothing was written.
    Unchanged { state: Arc<RoomState> },
}

#[derive(Clone)]
pub struct Rooms {
    /// Striped per-room locks: updates of one room on this node queue up
    /// instead of racing each other's compare-and-set (only other nodes can
    /// still conflict). A fixed array, so nothing grows with the number of
    /// rooms and nothing needs cleaning up.
    locks: Arc<[tokio::sync::Mutex<()>]>,
    pub store: Arc<dyn Store>,
    pub naming: Naming,
    pub rules: VerdictRules,
    pub timing: Timing,
    /// Whether final reports are delivered (a report URL is configured).
    pub reports: bool,
    pub metrics: Arc<Metrics>,
    /// Channels already warned about as fed by several rooms (once each
    /// per process; the metric counts every new room).
    warned_channels: Arc<dashmap::DashSet<String>>,
}

/// Lock stripes; rooms that share one only queue behind each other.
const LOCK_STRIPES: usize = 256;

impl Rooms {
    pub fn new(
        store: Arc<dyn Store>,
        naming: Naming,
        rules: VerdictRules,
        timing: Timing,
        reports: bool,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            locks: (0..LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            store,
            naming,
            rules,
            timing,
            reports,
            metrics,
            warned_channels: Arc::new(dashmap::DashSet::new()),
        }
    }

    async fn lock(&self, room: &RoomName) -> tokio::sync::MutexGuard<'_, ()> {
        use std::collections::hash_map::DefaultHasher;
        use std::hash::{BuildHasher, BuildHasherDefault};
        // Fixed keys: the same room must map to the same stripe for the
        // life of the process; the hash need not resist anything.
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(room);
        self.locks[(hash as usize) % self.locks.len()].lock().await
    }

    /// Links a room's channel before the room's first commit (so a
    /// subscriber who sees its first update can find it), and says so once
    /// when another room already feeds that channel: under `session.{id}`
    /// a quran session 121 and an academic session 121 share one channel,
    /// and each page then shows the other's people.
    async fn link_new_room(&self, session: &Session) -> Result<(), StoreError> {
        self.store
            .link_channel(&session.channel, &session.room)
            .await?;
        let rooms = self.store.rooms_of_channel(&session.channel).await?;
        if rooms.iter().any(|r| *r != session.room) {
            Metrics::add(&self.metrics.channel_collisions, 1);
            if self.warned_channels.insert(session.channel.clone()) {
                tracing::warn!(
                    channel = %session.channel,
                    rooms = ?rooms,
                    "several rooms feed one channel, so its subscribers see each other's people; include the room's distinguishing groups in ROLLCALL_CHANNEL_TEMPLATE (e.g. session.{{type}}.{{id}})"
                );
            }
        }
        Ok(())
    }

    /// After losing a race to another node: wait a little, randomly, so the
    /// racers do not collide again in lockstep.
    async fn back_off(attempt: usize) {
        let cap_us = 200 * (1u64 << attempt.min(6));
        tokio::time::sleep(Duration::from_micros(rand::random_range(0..=cap_us))).await;
    }

    /// The session a room name stands for, if it is one of ours.
    pub fn session(&self, room: &str) -> Option<Session> {
        self.naming.session(room)
    }

    pub fn view<'a>(&'a self, session: &'a Session, state: &'a RoomState) -> RoomView<'a> {
        RoomView {
            session,
            state,
            naming: &self.naming,
            rules: &self.rules,
        }
    }

    /// Applies `mutate` to the room's current state and commits it with
    /// `event` (logged and deduplicated) and the `attendance.updated`
    /// broadcasts of whom it changed. Retries on a concurrent write;
    /// `mutate` must therefore be a function of the state it is given.
    /// Without an event, a mutation that changes nothing writes nothing.
    pub async fn update(
        &self,
        session: &Session,
        event: Option<LoggedEvent>,
        mut mutate: impl FnMut(&mut RoomState) -> Changes,
    ) -> Result<Updated, UpdateError> {
        let _room = self.lock(&session.room).await;
        let mut from_cache = false;
        for attempt in 0..MAX_COMMIT_ATTEMPTS {
            // A stale cached state is no race to back off from.
            if attempt > 0 && !from_cache {
                Self::back_off(attempt).await;
            }
            // A webhook first tries the state this node last saw, without a
            // load: its commit always writes (the event is logged), so the
            // store checks the version — and the event id — atomically.
            // Changes without an event may write nothing, so they never
            // decide on a state they have not just read.
            let cached = match &event {
                Some(_) if attempt == 0 => self.store.cached_room(&session.room),
                _ => None,
            };
            from_cache = cached.is_some();
            let record = match (cached, &event) {
                (Some(record), _) => Some(record),
                // The duplicate check rides along with the load.
                (None, Some(e)) => {
                    match self.store.load_room_for_event(&session.room, &e.id).await? {
                        (_, true) => return Ok(Updated::Duplicate),
                        (record, false) => record,
                    }
                }
                (None, None) => self.store.load_room(&session.room).await?,
            };
            let (version, before) = match record {
                Some(record) => (record.version, record.state),
                None => {
                    // Before the first commit, so that a subscriber who
                    // sees this room's first update can also find it.
                    self.link_new_room(session).await?;
                    (0, Arc::new(RoomState::default()))
                }
            };
            // The one copy an update makes.
            let mut state = RoomState::clone(&before);
            let changes = mutate(&mut state);
            if event.is_none() && state == *before {
                return Ok(Updated::Unchanged { state: before });
            }
            if let Some(done) = self
                .try_commit(session, version, event.clone(), state, changes)
                .await?
            {
                return Ok(done);
            }
        }
        Err(UpdateError::Contention)
    }

    /// Commits `state` over `expected_version` with its broadcasts; `None`
    /// when another writer got there first (reload and retry).
    pub async fn try_commit(
        &self,
        session: &Session,
        expected_version: u64,
        event: Option<LoggedEvent>,
        state: RoomState,
        changes: Changes,
    ) -> Result<Option<Updated>, UpdateError> {
        let now = crate::domain::now_millis();
        let broadcasts = self.broadcasts(session, &state, &changes, now);
        let n = broadcasts.len() as u64;
        let state = Arc::new(state);
        let commit = Commit {
            expected_version,
            event,
            state: Some(Arc::clone(&state)),
            broadcasts,
            // The sweeper's index goes first: if the commit then fails, a
            // sweep that finds nothing to do costs nothing.
            due: self.due_hint(&state, now),
            live_until: live_hint(&state, now),
        };
        Ok(match self.store.commit(&session.room, commit).await? {
            CommitOutcome::Committed { .. } => {
                Metrics::add(&self.metrics.attendance_updates, n);
                Some(Updated::Committed { state, changes })
            }
            CommitOutcome::Duplicate => Some(Updated::Duplicate),
            CommitOutcome::Conflict => {
                Metrics::add(&self.metrics.commit_conflicts, 1);
                None
            }
        })
    }

    /// One `attendance.updated` per changed person (the whole roster when
    /// everyone changed), each serialized once.
    pub fn broadcasts(
        &self,
        session: &Session,
        state: &RoomState,
        changes: &Changes,
        now: UnixMillis,
    ) -> Vec<Broadcast> {
        let view = self.view(session, state);
        let people: Vec<Attendance> = if changes.everyone {
            view.roster(now)
        } else {
            changes
                .people
                .iter()
                .filter_map(|user| view.attendance(user, now))
                .collect()
        };
        people
            .iter()
            .map(|a| {
                Broadcast::new(
                    session.channel.clone(),
                    frame::event(UPDATED_EVENT, Some(&session.channel), &a.updated_json(now)),
                )
            })
            .collect()
    }

    /// A conservative "look at this room by then" for the sweeper, from the
    /// state alone: an open cycle may go stale one timeout from now at the
    /// earliest; a schedule falls due at its end + delay; an undelivered
    /// report is due now. Earlier than needed is harmless (the sweep finds
    /// nothing and sets the exact time), later would not be.
    pub fn due_hint(&self, state: &RoomState, now: UnixMillis) -> Option<UnixMillis> {
        let stale = state
            .has_open_cycle()
            .then_some(now + self.timing.heartbeat_timeout_ms());
        let exact = state.next_due(&Default::default(), 0, self.timing.finalize_delay_ms());
        let report = (self.reports && state.finalization.report_due()).then_some(now);
        [stale, exact, report].into_iter().flatten().min()
    }

    /// Like `update`, for a change that decides inside `mutate` whether it
    /// is worth a log entry (a RoomService listing, rule 27) — the entry
    /// depends on the state it met, so it is made anew on every attempt.
    /// Nothing is written when `mutate` returns no entry and leaves the
    /// state as it was (rule 26), not even the channel link of a room
    /// rollcall has not seen.
    pub async fn update_deciding(
        &self,
        session: &Session,
        mut mutate: impl FnMut(&mut RoomState) -> (Changes, Option<LoggedEvent>),
    ) -> Result<Updated, UpdateError> {
        let _room = self.lock(&session.room).await;
        for attempt in 0..MAX_COMMIT_ATTEMPTS {
            if attempt > 0 {
                Self::back_off(attempt).await;
            }
            let record = self.store.load_room(&session.room).await?;
            let (version, before) = match record {
                Some(record) => (record.version, record.state),
                None => (0, Arc::new(RoomState::default())),
            };
            let mut state = RoomState::clone(&before);
            let (changes, event) = mutate(&mut state);
            if event.is_none() && state == *before {
                return Ok(Updated::Unchanged { state: before });
            }
            if version == 0 {
                self.link_new_room(session).await?;
            }
            if let Some(done) = self
                .try_commit(session, version, event, state, changes)
                .await?
            {
                return Ok(done);
            }
        }
        Err(UpdateError::Contention)
    }

    /// Rule 22: rebuilds the room from its log and the heartbeat record,
    /// atomically with respect to concurrent webhooks: the version is read
    /// before the log, so an event logged after it makes the commit
    /// conflict and the rebuild is redone. Returns whether anything changed.
    pub async fn recalculate(&self, session: &Session) -> Result<bool, UpdateError> {
        let _room = self.lock(&session.room).await;
        for attempt in 0..MAX_COMMIT_ATTEMPTS {
            if attempt > 0 {
                Self::back_off(attempt).await;
            }
            let Some(record) = self.store.load_room(&session.room).await? else {
                return Ok(false);
            };
            let log = self.store.event_log(&session.room).await?;
            let mut rebuilt = crate::ingest::replay(&log, &record.state, &self.naming);
            if rebuilt == *record.state {
                return Ok(false);
            }
            tracing::warn!(room = %session.room, "recalculation changed the state");
            if rebuilt.finalization.is_final() {
                rebuilt.finalization.revision += 1;
            }
            let changes = rebuilt.everyone();
            if self
                .try_commit(session, record.version, None, rebuilt, changes)
                .await?
                .is_some()
            {
                return Ok(true);
            }
        }
        Err(UpdateError::Contention)
    }

    /// The room's state, or `None` when nothing is known about it.
    pub async fn load(&self, room: &RoomName) -> Result<Option<Arc<RoomState>>, StoreError> {
        Ok(self.store.load_room(room).await?.map(|r| r.state))
    }

    /// The room's state with at least the room-level facts and `user`
    /// (others may be missing): enough for `user`'s attendance, cheaper to
    /// read than the whole room on Redis.
    pub async fn load_for(
        &self,
        room: &RoomName,
        user: &UserId,
    ) -> Result<Option<Arc<RoomState>>, StoreError> {
        self.store.load_room_for_user(room, user).await
    }
}
