//! One conformance suite for every `Store`: each test below is a function
//! of a `Backend` and runs once per implementation (`on_memory::*`,
//! `on_redis::*`), checking the invariants stated in `src/store/mod.rs`.
//! A few Redis-only tests at the end cover what only a shared, remote store
//! has: several handles on one Redis, an outage, expiry.
//!
//! Deliveries are observed through `Recorder`, a `LocalDelivery` that keeps
//! every (channel, frame) in order and wakes whoever waits for a count.
//! "Nothing was delivered" is proven with a marker: a later delivery that
//! must come next, never with a sleep.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rollcall::domain::{EventId, Identity, ParticipantSid, RoomName, RoomSid, UserId};
use rollcall::engine::{Fact, Observation, Participant, RoomState};
use rollcall::pusher::{Halt, SocketId};
use rollcall::store::conn::RedisTarget;
use rollcall::store::redis::RoomChannel;
use rollcall::store::{
    Broadcast, Broker, ChannelQuery, Commit, CommitOutcome, Jobs, LocalDelivery, LogKind,
    LoggedEvent, MemoryStore, RedisOptions, RedisStore, RoomRecord, RoomStore, Signals, Store,
    StoreError, SubscriptionCounts,
};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::helpers::{CHANNEL, GUARD, ROOM, fixture};
use crate::redis_cluster::RedisCluster;
use crate::redis_server::RedisServer;

/// A `LocalDelivery` that records what it is given, in order.
pub struct Recorder {
    frames: Mutex<Vec<(String, String)>>,
    count: watch::Sender<usize>,
    /// The channels it hears on Redis Cluster (sharded pub/sub has no
    /// patterns); `None`: every channel, by pattern, on one Redis.
    channels: Option<Vec<String>>,
}

impl Recorder {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            frames: Mutex::new(Vec::new()),
            count: watch::channel(0).0,
            channels: None,
        })
    }

    /// A recorder that hears `channels` (what a cluster test must name).
    pub fn hearing(channels: &[&str]) -> Arc<Self> {
        Arc::new(Self {
            frames: Mutex::new(Vec::new()),
            count: watch::channel(0).0,
            channels: Some(channels.iter().map(|c| c.to_string()).collect()),
        })
    }

    /// Waits (guarded) until at least `n` deliveries arrived; returns all.
    pub async fn wait_for(&self, n: usize) -> Vec<(String, String)> {
        let mut count = self.count.subscribe();
        tokio::time::timeout(GUARD, count.wait_for(|c| *c >= n))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "expected {n} deliveries, got {:?}",
                    self.frames.lock().unwrap()
                )
            })
            .expect("the recorder lives");
        self.frames.lock().unwrap().clone()
    }
}

impl LocalDelivery for Recorder {
    fn deliver(&self, channel: &str, frame: Utf8Bytes, _except: Option<&SocketId>) {
        self.frames
            .lock()
            .unwrap()
            .push((channel.to_string(), frame.as_str().to_string()));
        self.count.send_modify(|c| *c += 1);
    }

    /// Recorded as the frame `halt:<halt>`.
    fn halt(&self, channel: &str, why: Halt) {
        let entry = (channel.to_string(), format!("halt:{why:?}"));
        self.frames.lock().unwrap().push(entry);
        self.count.send_modify(|c| *c += 1);
    }

    /// The recorder stands for a node without sockets.
    fn subscriptions(&self, _query: &ChannelQuery) -> SubscriptionCounts {
        SubscriptionCounts::new()
    }

    fn fixed_channels(&self) -> Option<Vec<String>> {
        self.channels.clone()
    }
}

/// Every channel the conformance suite broadcasts on.
pub const SUITE_CHANNELS: &[&str] = &[
    CHANNEL,
    "session.other",
    "session.7",
    "session.8",
    "private-admin",
    "#server-to-user-12",
];

/// What a subscriber of each channel sees: `frames` split by channel, each
/// in its order. On Redis Cluster different channels travel through
/// different shards, so only each channel's own order is defined.
fn per_channel(frames: &[(String, String)]) -> BTreeMap<String, Vec<String>> {
    let mut channels: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (channel, frame) in frames {
        channels
            .entry(channel.clone())
            .or_default()
            .push(frame.clone());
    }
    channels
}

/// A store under test and what it delivers to "this node".
pub struct Backend {
    pub store: Arc<dyn Store>,
    pub delivered: Arc<Recorder>,
    pub kind: &'static str,
    /// On Redis Cluster: broadcasts of different channels arrive in no
    /// defined order relative to each other.
    pub sharded: bool,
    /// Keeps a Redis backend's server running for the test.
    _redis: Option<RedisServer>,
    /// Keeps a cluster backend's nodes running for the test.
    _cluster: Option<RedisCluster>,
}

impl Backend {
    pub fn memory() -> Self {
        let delivered = Recorder::new();
        Self {
            store: Arc::new(MemoryStore::new(delivered.clone())),
            delivered,
            kind: "memory",
            sharded: false,
            _redis: None,
            _cluster: None,
        }
    }

    /// A fresh Redis Cluster (3 masters + 3 replicas) and a store on it,
    /// acknowledging each commit once a replica has it, as on a cluster by
    /// default.
    pub async fn cluster() -> Self {
        let cluster = RedisCluster::start().await;
        let delivered = Recorder::hearing(SUITE_CHANNELS);
        // Generous timeouts, as `shared_redis` sets them: on a loaded 2-core
        // machine six Redis processes compete for CPU, and a replica's
        // acknowledgement past 500 ms failed a commit these tests expect.
        let options = RedisOptions {
            wait_replicas: 1,
            wait_timeout: Duration::from_millis(1_000),
            command_timeout: Duration::from_millis(2_000),
            ..RedisOptions::default()
        };
        let target = RedisTarget::Cluster(cluster.seeds());
        // As the server sets it: a room's keys carry its channel's tag.
        let naming = rollcall::config::Settings::for_tests().naming;
        let options = RedisOptions {
            room_channel: RoomChannel::new(move |room| {
                naming.session(room.as_str()).map(|s| s.channel)
            }),
            ..options
        };
        let store = RedisStore::connect_to(&target, delivered.clone(), options)
            .await
            .expect("RedisStore connects to the cluster");
        bus_subscribed(&store, 1).await;
        Self {
            store: Arc::new(store),
            delivered,
            kind: "redis",
            sharded: true,
            _redis: None,
            _cluster: Some(cluster),
        }
    }

    /// A fresh Redis and a store on it whose bus is subscribed (how fast a
    /// brand-new store subscribes is `a_new_store_delivers_its_own_first_commit`'s
    /// business, not every test's).
    pub async fn redis() -> Self {
        let server = RedisServer::start().await;
        let delivered = Recorder::new();
        let store = redis_store(&server, delivered.clone(), RedisOptions::default()).await;
        bus_subscribed(&store, 1).await;
        Self {
            store: Arc::new(store),
            delivered,
            kind: "redis",
            sharded: false,
            _redis: Some(server),
            _cluster: None,
        }
    }
}

async fn redis_store(
    server: &RedisServer,
    delivery: Arc<dyn LocalDelivery>,
    options: RedisOptions,
) -> RedisStore {
    RedisStore::connect(&server.url(), delivery, options)
        .await
        .expect("RedisStore connects")
}

/// Waits until the store's pub/sub bus has connected `n` times.
async fn bus_subscribed(store: &RedisStore, n: u64) {
    let mut connections = store.bus_connections();
    tokio::time::timeout(GUARD, connections.wait_for(|c| *c >= n))
        .await
        .unwrap_or_else(|_| panic!("bus connection #{n} within the guard time"))
        .expect("the bus lives");
}

// ---- builders ---------------------------------------------------------

fn room(name: &str) -> RoomName {
    RoomName::new(name)
}

fn logged(id: &str, body: &str) -> LoggedEvent {
    LoggedEvent {
        kind: LogKind::Webhook,
        id: EventId::new(id),
        received_at: 1_763_719_200_000,
        body: body.to_string(),
    }
}

/// A `participant_joined` of `sid` (user `user`), as the engine sees it.
fn joined_observation(id: &str, user: u32, sid: &str) -> Observation {
    let identity = format!("{user}_Person_{user}");
    Observation {
        id: EventId::new(id),
        created_at: 1_763_719_200_000 + i64::from(user),
        room_sid: RoomSid::new("RM_suite"),
        metadata_schedule: None,
        fact: Fact::Joined {
            participant: Participant {
                user_id: UserId::new(user.to_string()),
                sid: ParticipantSid::new(sid),
                identity: Identity::new(identity),
                name: format!("Person {user}"),
            },
            joined_at: 1_763_719_201_000,
        },
    }
}

/// A state in which `sids` have joined (user 1), each by event `EV_<sid>`.
fn state_of(sids: &[&str]) -> RoomState {
    let mut state = RoomState::default();
    for sid in sids {
        state.apply(&joined_observation(&format!("EV_{sid}"), 1, sid));
    }
    state
}

/// A state in which each `(user, sid)` has joined, by event `EV_<sid>`.
fn people_state(joins: &[(u32, &str)]) -> RoomState {
    let mut state = RoomState::default();
    for (user, sid) in joins {
        state.apply(&joined_observation(&format!("EV_{sid}"), *user, sid));
    }
    state
}

fn broadcast(channel: &str, text: &str) -> Broadcast {
    Broadcast::new(channel, Utf8Bytes::from(frame_text(channel, text)))
}

/// A Pusher frame as rollcall renders one, carrying `text`.
fn frame_text(channel: &str, text: &str) -> String {
    rollcall::pusher::frame::event(
        "attendance.updated",
        Some(channel),
        &serde_json::json!({ "marker": text }).to_string(),
    )
    .as_str()
    .to_string()
}

fn delivered(channel: &str, text: &str) -> (String, String) {
    (channel.to_string(), frame_text(channel, text))
}

fn commit(
    expected_version: u64,
    id: &str,
    state: Option<RoomState>,
    broadcasts: Vec<Broadcast>,
) -> Commit {
    Commit {
        expected_version,
        event: Some(logged(id, &format!(r#"{{"id":"{id}"}}"#))),
        state: state.map(Arc::new),
        broadcasts,
        due: None,
        live_until: None,
    }
}

async fn log_ids(store: &dyn Store, room: &RoomName) -> Vec<String> {
    store
        .event_log(room)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id.to_string())
        .collect()
}

// ---- the conformance suite ---------------------------------------------

macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod on_memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Backend::memory()).await;
                }
            )*
        }
        mod on_redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Backend::redis().await).await;
                }
            )*
        }
        mod on_cluster {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Backend::cluster().await).await;
                }
            )*
        }
    };
}

conformance!(
    an_unknown_room_has_no_record_log_or_applied_ids,
    commits_create_the_room_and_count_versions,
    a_stale_version_conflicts_and_changes_nothing,
    a_duplicate_id_is_refused_and_changes_nothing,
    an_event_without_a_state_change_is_still_logged_and_remembered,
    the_event_log_keeps_commit_order_and_raw_bodies_byte_for_byte,
    broadcasts_are_delivered_in_commit_order,
    channels_link_rooms_idempotently,
    publish_delivers_without_a_commit,
    a_halt_broadcast_halts_instead_of_delivering,
    ping_answers_and_kind_names_the_store,
    racing_writers_apply_every_event_exactly_once,
    a_commit_without_an_event_changes_state_but_not_the_log,
    heartbeats_keep_each_persons_latest,
    the_due_index_is_only_lowered_by_writers_and_set_by_the_sweeper,
    a_lease_has_one_holder_until_it_expires,
    loading_for_an_event_also_says_whether_it_was_applied,
    a_released_lease_is_free_at_once_but_only_its_holder_releases_it,
    a_commit_that_drops_people_removes_them,
    loading_for_a_user_gives_that_person_and_the_room_level_facts,
    sightings_keep_each_sids_latest_listing,
    the_live_index_is_only_raised_and_lapses,
    recent_rooms_are_the_rooms_written_newest_first,
);

/// `GET /api/sessions`: every commit with a state marks its room; a commit
/// that only logs (no state) does not.
async fn recent_rooms_are_the_rooms_written_newest_first(b: Backend) {
    let (r1, r2) = (room("a-quran-session-1"), room("a-quran-session-2"));
    assert!(b.store.recent_rooms(10).await.unwrap().is_empty());
    b.store
        .commit(&r1, commit(0, "EV_1", Some(state_of(&["PA_1"])), vec![]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(3)).await;
    b.store
        .commit(&r2, commit(0, "EV_2", Some(state_of(&["PA_1"])), vec![]))
        .await
        .unwrap();
    let recent = b.store.recent_rooms(10).await.unwrap();
    let names: Vec<&RoomName> = recent.iter().map(|(r, _)| r).collect();
    assert_eq!(names, vec![&r2, &r1]);
    assert!(recent[0].1 >= recent[1].1);
    assert_eq!(b.store.recent_rooms(1).await.unwrap().len(), 1);
    tokio::time::sleep(Duration::from_millis(3)).await;
    b.store
        .commit(
            &r1,
            commit(1, "EV_3", Some(state_of(&["PA_1", "PA_2"])), vec![]),
        )
        .await
        .unwrap();
    let recent = b.store.recent_rooms(10).await.unwrap();
    assert_eq!(recent[0].0, r1, "written again: newest");
}

/// Rule 25's "last listing that contained the sid": listings from two
/// nodes may be recorded out of order; the latest stays.
async fn sightings_keep_each_sids_latest_listing(b: Backend) {
    let (r, other) = (room(ROOM), room("x-quran-session-7"));
    let (a, c) = (ParticipantSid::new("PA_a"), ParticipantSid::new("PA_c"));
    assert!(b.store.sightings(&r).await.unwrap().is_empty());
    b.store.record_sightings(&r, &[]).await.unwrap();
    b.store
        .record_sightings(&r, &[(a.clone(), 3_000), (c.clone(), 1_000)])
        .await
        .unwrap();
    b.store
        .record_sightings(&r, &[(a.clone(), 2_000)])
        .await
        .unwrap();
    b.store
        .record_sightings(&other, &[(a.clone(), 9_000)])
        .await
        .unwrap();
    assert_eq!(
        b.store.sightings(&r).await.unwrap(),
        BTreeMap::from([(a.clone(), 3_000), (c, 1_000)])
    );
    assert_eq!(
        b.store.sightings(&other).await.unwrap(),
        BTreeMap::from([(a, 9_000)])
    );
}

/// The rooms reconciliation checks (rule 23): a hint only ever raises a
/// room's "live until" (a commit that lost its race errs towards one more
/// room checked), and a lapsed entry is dropped.
async fn the_live_index_is_only_raised_and_lapses(b: Backend) {
    // Instants in the future: writes also drop entries lapsed by the clock.
    let t = rollcall::domain::now_millis() + 3_600_000;
    let (r1, r2) = (room("a-quran-session-1"), room("a-quran-session-2"));
    assert!(b.store.live_rooms(t, 10).await.unwrap().is_empty());
    b.store.live_until(&r1, t + 5_000).await.unwrap();
    b.store.live_until(&r1, t + 2_000).await.unwrap();
    // Through a commit, as `Rooms::try_commit` sends it.
    let mut c = commit(0, "EV_1", Some(state_of(&["PA_1"])), vec![]);
    c.live_until = Some(t + 3_000);
    b.store.commit(&r2, c).await.unwrap();
    let mut live = b.store.live_rooms(t + 2_500, 10).await.unwrap();
    live.sort();
    assert_eq!(live, vec![r1.clone(), r2.clone()]);
    assert_eq!(
        b.store.live_rooms(t + 4_000, 10).await.unwrap(),
        vec![r1.clone()]
    );
    assert!(b.store.live_rooms(t + 6_000, 10).await.unwrap().is_empty());
    // Lapsed entries were pruned: an earlier instant no longer sees them.
    assert!(b.store.live_rooms(t, 10).await.unwrap().is_empty());
}

async fn an_unknown_room_has_no_record_log_or_applied_ids(b: Backend) {
    let r = room(ROOM);
    assert_eq!(b.store.load_room(&r).await.unwrap(), None);
    assert!(!b.store.is_applied(&r, &EventId::new("EV_1")).await.unwrap());
    assert!(b.store.event_log(&r).await.unwrap().is_empty());
    assert!(b.store.rooms_of_channel(CHANNEL).await.unwrap().is_empty());
}

async fn commits_create_the_room_and_count_versions(b: Backend) {
    let r = room(ROOM);
    let states = [
        state_of(&["PA_1"]),
        state_of(&["PA_1", "PA_2"]),
        state_of(&["PA_1", "PA_2", "PA_3"]),
    ];
    for (i, state) in states.iter().enumerate() {
        let expected = i as u64;
        let outcome = b
            .store
            .commit(
                &r,
                commit(expected, &format!("EV_{i}"), Some(state.clone()), vec![]),
            )
            .await
            .unwrap();
        assert_eq!(
            outcome,
            CommitOutcome::Committed {
                version: expected + 1
            }
        );
        assert_eq!(
            b.store.load_room(&r).await.unwrap(),
            Some(RoomRecord {
                state: state.clone().into(),
                version: expected + 1
            })
        );
        assert!(
            b.store
                .is_applied(&r, &EventId::new(format!("EV_{i}")))
                .await
                .unwrap()
        );
    }
    // Rooms are independent.
    let other = room("x-quran-session-7");
    assert_eq!(b.store.load_room(&other).await.unwrap(), None);
    assert!(
        !b.store
            .is_applied(&other, &EventId::new("EV_0"))
            .await
            .unwrap()
    );
    assert_eq!(
        b.store
            .commit(&other, commit(0, "EV_0", Some(state_of(&["PA_9"])), vec![]))
            .await
            .unwrap(),
        CommitOutcome::Committed { version: 1 }
    );
}

async fn a_stale_version_conflicts_and_changes_nothing(b: Backend) {
    let r = room(ROOM);
    let first = state_of(&["PA_1"]);
    let c = commit(
        0,
        "EV_1",
        Some(first.clone()),
        vec![broadcast(CHANNEL, "first")],
    );
    assert_eq!(
        b.store.commit(&r, c).await.unwrap(),
        CommitOutcome::Committed { version: 1 }
    );

    // A writer that read "no room", and versions that never existed.
    for expected in [0, 2, 7] {
        let stale = commit(
            expected,
            "EV_2",
            Some(state_of(&["PA_1", "PA_2"])),
            vec![broadcast(CHANNEL, "rejected")],
        );
        assert_eq!(
            b.store.commit(&r, stale).await.unwrap(),
            CommitOutcome::Conflict,
            "expected_version {expected}"
        );
    }
    assert_eq!(
        b.store.load_room(&r).await.unwrap(),
        Some(RoomRecord {
            state: first.into(),
            version: 1
        })
    );
    assert!(!b.store.is_applied(&r, &EventId::new("EV_2")).await.unwrap());
    assert_eq!(log_ids(&*b.store, &r).await, ["EV_1"]);

    // The id was not remembered: at the right version it commits. Had a
    // rejected commit published, its frame would come before this one.
    let c = commit(
        1,
        "EV_2",
        Some(state_of(&["PA_1", "PA_2"])),
        vec![broadcast(CHANNEL, "second")],
    );
    assert_eq!(
        b.store.commit(&r, c).await.unwrap(),
        CommitOutcome::Committed { version: 2 }
    );
    assert_eq!(
        b.delivered.wait_for(2).await,
        [delivered(CHANNEL, "first"), delivered(CHANNEL, "second")]
    );
}

async fn a_duplicate_id_is_refused_and_changes_nothing(b: Backend) {
    let r = room(ROOM);
    let first = state_of(&["PA_1"]);
    let original = commit(
        0,
        "EV_1",
        Some(first.clone()),
        vec![broadcast(CHANNEL, "first")],
    );
    let original_event = original.event.clone().expect("an event");
    assert_eq!(
        b.store.commit(&r, original).await.unwrap(),
        CommitOutcome::Committed { version: 1 }
    );

    // A retry of EV_1 (here with another body and state, to see that
    // neither is taken) at the current version.
    let mut retry = commit(
        1,
        "EV_1",
        Some(state_of(&["PA_1", "PA_2"])),
        vec![broadcast(CHANNEL, "duplicate")],
    );
    retry.event.as_mut().expect("an event").body = r#"{"id":"EV_1","retried":true}"#.into();
    assert_eq!(
        b.store.commit(&r, retry.clone()).await.unwrap(),
        CommitOutcome::Duplicate
    );
    // At a stale version it must not commit either (either answer makes
    // the ingest loop stop or reload, then find the duplicate).
    retry.expected_version = 0;
    let stale = b.store.commit(&r, retry).await.unwrap();
    assert!(
        matches!(stale, CommitOutcome::Duplicate | CommitOutcome::Conflict),
        "{stale:?}"
    );

    assert_eq!(
        b.store.load_room(&r).await.unwrap(),
        Some(RoomRecord {
            state: first.into(),
            version: 1
        })
    );
    assert_eq!(b.store.event_log(&r).await.unwrap(), [original_event]);
    let c = commit(1, "EV_2", None, vec![broadcast(CHANNEL, "second")]);
    assert!(matches!(
        b.store.commit(&r, c).await.unwrap(),
        CommitOutcome::Committed { .. }
    ));
    assert_eq!(
        b.delivered.wait_for(2).await,
        [delivered(CHANNEL, "first"), delivered(CHANNEL, "second")]
    );
}

async fn an_event_without_a_state_change_is_still_logged_and_remembered(b: Backend) {
    let r = room(ROOM);
    // The first event of a room changes nothing (e.g. a recorder joined).
    let CommitOutcome::Committed { version: v1 } = b
        .store
        .commit(&r, commit(0, "EV_bot", None, vec![]))
        .await
        .unwrap()
    else {
        panic!("a stateless first commit commits");
    };
    let record = b.store.load_room(&r).await.unwrap();
    assert_eq!(
        record.as_ref().map_or(0, |r| r.version),
        v1,
        "the version a writer must name next"
    );
    assert_eq!(
        record.map(|r| r.state).unwrap_or_default(),
        RoomState::default().into()
    );
    assert!(
        b.store
            .is_applied(&r, &EventId::new("EV_bot"))
            .await
            .unwrap()
    );
    assert_eq!(
        b.store
            .commit(&r, commit(v1, "EV_bot", None, vec![]))
            .await
            .unwrap(),
        CommitOutcome::Duplicate
    );

    // After a real change, a stateless commit keeps the state.
    let state = state_of(&["PA_1"]);
    let CommitOutcome::Committed { version: v2 } = b
        .store
        .commit(&r, commit(v1, "EV_1", Some(state.clone()), vec![]))
        .await
        .unwrap()
    else {
        panic!("EV_1 commits");
    };
    let CommitOutcome::Committed { version: v3 } = b
        .store
        .commit(&r, commit(v2, "EV_noop", None, vec![]))
        .await
        .unwrap()
    else {
        panic!("EV_noop commits");
    };
    assert!(v1 < v2 && v2 <= v3, "{v1} {v2} {v3}");
    assert_eq!(
        b.store.load_room(&r).await.unwrap(),
        Some(RoomRecord {
            state: state.into(),
            version: v3
        })
    );
    assert!(
        b.store
            .is_applied(&r, &EventId::new("EV_noop"))
            .await
            .unwrap()
    );
    assert_eq!(log_ids(&*b.store, &r).await, ["EV_bot", "EV_1", "EV_noop"]);
}

async fn the_event_log_keeps_commit_order_and_raw_bodies_byte_for_byte(b: Backend) {
    let r = room(ROOM);
    let bodies = [
        // LiveKit's protojson spacing (`", "`), exactly as it was signed.
        fixture("participant_joined.json"),
        fixture("participant_left.json"),
        // Non-ASCII, escapes, a raw newline, trailing whitespace.
        "{\"name\":\"Ameer M\u{101}her \u{2014} \u{639}\u{627}\u{645}\u{631}\", \"q\":\"a\\\"b\\\\c\\n\"}\n  ".to_string(),
        // An empty object and a body near the webhook size limit.
        "{}".to_string(),
        format!(r#"{{"pad":"{}"}}"#, "x".repeat(60 * 1024)),
    ];
    // received_at deliberately not increasing: the log is in commit order.
    let events: Vec<LoggedEvent> = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| LoggedEvent {
            // Every other entry a listing: the kind round-trips too.
            kind: if i % 2 == 1 {
                LogKind::LivekitListing
            } else {
                LogKind::Webhook
            },
            id: EventId::new(format!("EV_log{i}")),
            received_at: 1_763_719_300_000 - i as i64 * 1_000,
            body: body.clone(),
        })
        .collect();
    for (i, event) in events.iter().enumerate() {
        let c = Commit {
            expected_version: i as u64,
            event: Some(event.clone()),
            state: Some(state_of(&["PA_1"]).into()),
            broadcasts: vec![],
            due: None,
            live_until: None,
        };
        assert!(matches!(
            b.store.commit(&r, c).await.unwrap(),
            CommitOutcome::Committed { .. }
        ));
    }
    let log = b.store.event_log(&r).await.unwrap();
    assert_eq!(log, events);
    assert!(
        log[0]
            .body
            .contains(r#""room":{"sid":"RM_hycBMAjmt6Ub", "name""#)
    );
}

async fn broadcasts_are_delivered_in_commit_order(b: Backend) {
    let r = room(ROOM);
    let mut expected = Vec::new();
    for i in 0..30u64 {
        let texts = [format!("c{i}-a"), format!("c{i}-b")];
        let mut broadcasts: Vec<Broadcast> = texts.iter().map(|t| broadcast(CHANNEL, t)).collect();
        expected.extend(texts.iter().map(|t| delivered(CHANNEL, t)));
        if i % 3 == 0 {
            broadcasts.push(broadcast("session.other", &format!("c{i}-other")));
            expected.push(delivered("session.other", &format!("c{i}-other")));
        }
        let c = commit(i, &format!("EV_{i}"), Some(state_of(&["PA_1"])), broadcasts);
        assert_eq!(
            b.store.commit(&r, c).await.unwrap(),
            CommitOutcome::Committed { version: i + 1 }
        );
    }
    let got = b.delivered.wait_for(expected.len()).await;
    if b.sharded {
        assert_eq!(per_channel(&got), per_channel(&expected));
    } else {
        assert_eq!(got, expected);
    }
}

async fn channels_link_rooms_idempotently(b: Backend) {
    let (a, other, seven) = (
        room(ROOM),
        room("b-quran-session-121"),
        room("x-quran-session-7"),
    );
    for _ in 0..3 {
        b.store.link_channel(CHANNEL, &a).await.unwrap();
    }
    b.store.link_channel(CHANNEL, &other).await.unwrap();
    b.store.link_channel("session.7", &seven).await.unwrap();
    b.store.link_channel(CHANNEL, &a).await.unwrap();

    let mut rooms = b.store.rooms_of_channel(CHANNEL).await.unwrap();
    rooms.sort();
    assert_eq!(rooms, [other, a]);
    assert_eq!(
        b.store.rooms_of_channel("session.7").await.unwrap(),
        [seven]
    );
    assert!(
        b.store
            .rooms_of_channel("session.8")
            .await
            .unwrap()
            .is_empty()
    );
}

/// `terminate_connections`: a halt travels like a frame, in order, and
/// arrives as a halt, never as a frame.
async fn a_halt_broadcast_halts_instead_of_delivering(b: Backend) {
    b.store
        .publish(vec![
            broadcast("#server-to-user-12", "before"),
            Broadcast::halt("#server-to-user-12", Halt::Terminated),
        ])
        .await
        .unwrap();
    assert_eq!(
        b.delivered.wait_for(2).await,
        [
            delivered("#server-to-user-12", "before"),
            (
                "#server-to-user-12".to_string(),
                "halt:Terminated".to_string()
            ),
        ]
    );
}

async fn publish_delivers_without_a_commit(b: Backend) {
    b.store.publish(vec![]).await.unwrap();
    b.store
        .publish(vec![
            broadcast(CHANNEL, "one"),
            broadcast("private-admin", "two"),
            broadcast(CHANNEL, "three"),
        ])
        .await
        .unwrap();
    b.store
        .publish(vec![broadcast(CHANNEL, "four")])
        .await
        .unwrap();
    let expected = [
        delivered(CHANNEL, "one"),
        delivered("private-admin", "two"),
        delivered(CHANNEL, "three"),
        delivered(CHANNEL, "four"),
    ];
    let got = b.delivered.wait_for(4).await;
    if b.sharded {
        assert_eq!(per_channel(&got), per_channel(&expected));
    } else {
        assert_eq!(got, expected);
    }
    assert_eq!(b.store.load_room(&room(ROOM)).await.unwrap(), None);
}

async fn ping_answers_and_kind_names_the_store(b: Backend) {
    b.store.ping().await.unwrap();
    assert_eq!(b.store.kind(), b.kind);
}

/// Writers race the optimistic load → apply → commit loop on one room, each
/// trying every event in its own order, as nodes do with LiveKit's retries.
async fn racing_writers_apply_every_event_exactly_once(b: Backend) {
    const WRITERS: usize = 8;
    const EVENTS: u32 = 40;
    let r = room(ROOM);
    let observations: Vec<Observation> = (0..EVENTS)
        .map(|i| joined_observation(&format!("EV_race{i:02}"), i % 5 + 1, &format!("PA_{i:02}")))
        .collect();
    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        let store = Arc::clone(&b.store);
        let r = r.clone();
        let mut mine = observations.clone();
        mine.shuffle(&mut rand::rng());
        writers.push(tokio::spawn(async move {
            let mut committed = 0;
            let mut attempts = 0;
            for obs in mine {
                loop {
                    attempts += 1;
                    assert!(attempts < 20_000, "a writer is starved");
                    let (version, mut state) = match store.load_room(&r).await.unwrap() {
                        Some(record) => (record.version, RoomState::clone(&record.state)),
                        None => (0, RoomState::default()),
                    };
                    state.apply(&obs);
                    let c = Commit {
                        expected_version: version,
                        event: Some(logged(obs.id.as_str(), obs.id.as_str())),
                        state: Some(state.into()),
                        broadcasts: vec![broadcast(CHANNEL, obs.id.as_str())],
                        due: None,
                        live_until: None,
                    };
                    match store.commit(&r, c).await.unwrap() {
                        CommitOutcome::Committed { version: v } => {
                            assert_eq!(v, version + 1);
                            committed += 1;
                            break;
                        }
                        CommitOutcome::Duplicate => break,
                        CommitOutcome::Conflict => tokio::task::yield_now().await,
                    }
                }
            }
            committed
        }));
    }
    let mut committed = 0;
    for w in writers {
        committed += w.await.unwrap();
    }
    assert_eq!(
        committed, EVENTS,
        "each event commits exactly once, across writers"
    );

    let mut expected_state = RoomState::default();
    for obs in &observations {
        expected_state.apply(obs);
    }
    let record = b.store.load_room(&r).await.unwrap().unwrap();
    assert_eq!(record.version, u64::from(EVENTS));
    assert_eq!(record.state, expected_state.into(), "no update was lost");

    let log = log_ids(&*b.store, &r).await;
    let unique: BTreeSet<&String> = log.iter().collect();
    assert_eq!(
        (log.len(), unique.len()),
        (EVENTS as usize, EVENTS as usize)
    );
    // One frame per commit, in commit (= log) order, and none for the
    // refused attempts: the marker comes right after.
    let marker = commit(
        u64::from(EVENTS),
        "EV_marker",
        None,
        vec![broadcast(CHANNEL, "marker")],
    );
    assert!(matches!(
        b.store.commit(&r, marker).await.unwrap(),
        CommitOutcome::Committed { .. }
    ));
    let frames = b.delivered.wait_for(EVENTS as usize + 1).await;
    let mut expected: Vec<(String, String)> = log.iter().map(|id| delivered(CHANNEL, id)).collect();
    expected.push(delivered(CHANNEL, "marker"));
    assert_eq!(frames, expected);
}

/// Sweeps, schedule changes and recalculations commit without a webhook:
/// state and version move, the log and the applied ids do not, and the
/// compare-and-set still guards them.
async fn a_commit_without_an_event_changes_state_but_not_the_log(b: Backend) {
    let r = room(ROOM);
    let first = commit(0, "EV_1", Some(state_of(&["PA_1"])), vec![]);
    assert_eq!(
        b.store.commit(&r, first).await.unwrap(),
        CommitOutcome::Committed { version: 1 }
    );
    let sweep = |expected_version, sids: &[&str], text: &str| Commit {
        expected_version,
        event: None,
        state: Some(state_of(sids).into()),
        broadcasts: vec![broadcast(CHANNEL, text)],
        due: None,
        live_until: None,
    };
    assert_eq!(
        b.store
            .commit(&r, sweep(1, &["PA_1", "PA_2"], "swept"))
            .await
            .unwrap(),
        CommitOutcome::Committed { version: 2 }
    );
    // The same change again from a node that read version 1: refused.
    assert_eq!(
        b.store
            .commit(&r, sweep(1, &["PA_3"], "stale sweep"))
            .await
            .unwrap(),
        CommitOutcome::Conflict
    );
    assert_eq!(
        b.store.load_room(&r).await.unwrap(),
        Some(RoomRecord {
            state: state_of(&["PA_1", "PA_2"]).into(),
            version: 2
        })
    );
    assert_eq!(log_ids(&*b.store, &r).await, ["EV_1"]);
    let next = commit(2, "EV_2", None, vec![broadcast(CHANNEL, "next")]);
    assert_eq!(
        b.store.commit(&r, next).await.unwrap(),
        CommitOutcome::Committed { version: 3 }
    );
    assert_eq!(
        b.delivered.wait_for(2).await,
        [delivered(CHANNEL, "swept"), delivered(CHANNEL, "next")]
    );
}

/// Heartbeats of one person can reach different nodes out of order; the
/// record keeps the latest, so a late, older one never brings a person
/// closer to a heartbeat timeout.
async fn heartbeats_keep_each_persons_latest(b: Backend) {
    let (r, other) = (room(ROOM), room("x-quran-session-7"));
    let (one, two) = (UserId::new("1"), UserId::new("2"));
    assert!(b.store.heartbeats(&r).await.unwrap().is_empty());
    b.store.record_heartbeat(&r, &one, 1_000).await.unwrap();
    b.store.record_heartbeat(&r, &two, 500).await.unwrap();
    b.store.record_heartbeat(&r, &one, 3_000).await.unwrap();
    // A heartbeat answered earlier elsewhere, recorded late.
    b.store.record_heartbeat(&r, &one, 2_000).await.unwrap();
    b.store.record_heartbeat(&other, &one, 9_000).await.unwrap();
    assert_eq!(
        b.store.heartbeats(&r).await.unwrap(),
        BTreeMap::from([(one.clone(), 3_000), (two, 500)])
    );
    assert_eq!(
        b.store.heartbeats(&other).await.unwrap(),
        BTreeMap::from([(one, 9_000)])
    );
}

async fn the_due_index_is_only_lowered_by_writers_and_set_by_the_sweeper(b: Backend) {
    let (r1, r2, r3) = (
        room("a-quran-session-1"),
        room("a-quran-session-2"),
        room("a-quran-session-3"),
    );
    assert!(b.store.due_rooms(i64::MAX, 10).await.unwrap().is_empty());
    b.store.due_no_later_than(&r1, 500).await.unwrap();
    b.store.due_no_later_than(&r1, 700).await.unwrap(); // never raises
    b.store.due_no_later_than(&r2, 100).await.unwrap();
    b.store.due_no_later_than(&r3, 900).await.unwrap();
    b.store.due_no_later_than(&r3, 300).await.unwrap(); // lowers
    assert_eq!(
        b.store.due_rooms(99, 10).await.unwrap(),
        Vec::<RoomName>::new()
    );
    assert_eq!(
        b.store.due_rooms(100, 10).await.unwrap(),
        std::slice::from_ref(&r2)
    );
    assert_eq!(
        b.store.due_rooms(600, 10).await.unwrap(),
        [r2.clone(), r3.clone(), r1.clone()],
        "earliest first"
    );
    assert_eq!(
        b.store.due_rooms(600, 2).await.unwrap(),
        [r2.clone(), r3.clone()]
    );
    // The sweeper processed r2 (nothing left) and r3 (next due later).
    b.store.set_due(&r2, None).await.unwrap();
    b.store.set_due(&r3, Some(800)).await.unwrap();
    assert_eq!(
        b.store.due_rooms(600, 10).await.unwrap(),
        std::slice::from_ref(&r1)
    );
    assert_eq!(
        b.store.due_rooms(800, 10).await.unwrap(),
        [r1.clone(), r3.clone()]
    );
    // A writer brings r2 back.
    b.store.due_no_later_than(&r2, 50).await.unwrap();
    assert_eq!(
        b.store.due_rooms(800, 10).await.unwrap(),
        [r2, r1, r3.clone()]
    );
    // A commit carries its due time in the same step, and only lowers it.
    let mut c = commit(0, "EV_due_1", Some(RoomState::default()), vec![]);
    c.due = Some(10);
    assert!(matches!(
        b.store.commit(&r3, c).await.unwrap(),
        CommitOutcome::Committed { .. }
    ));
    assert_eq!(
        b.store.due_rooms(10, 10).await.unwrap(),
        std::slice::from_ref(&r3)
    );
    let mut c = commit(1, "EV_due_2", Some(RoomState::default()), vec![]);
    c.due = Some(5_000);
    assert!(matches!(
        b.store.commit(&r3, c).await.unwrap(),
        CommitOutcome::Committed { .. }
    ));
    assert_eq!(
        b.store.due_rooms(10, 10).await.unwrap(),
        [r3],
        "never raised by a commit"
    );
}

async fn a_released_lease_is_free_at_once_but_only_its_holder_releases_it(b: Backend) {
    let ttl = Duration::from_secs(60);
    assert!(b.store.try_lease("report:7", "node-a", ttl).await.unwrap());
    b.store.release_lease("report:7", "node-b").await.unwrap();
    assert!(
        !b.store.try_lease("report:7", "node-b", ttl).await.unwrap(),
        "someone else's release does nothing"
    );
    b.store.release_lease("report:7", "node-a").await.unwrap();
    assert!(b.store.try_lease("report:7", "node-b", ttl).await.unwrap());
    b.store.release_lease("report:7", "node-b").await.unwrap();
}

async fn loading_for_an_event_also_says_whether_it_was_applied(b: Backend) {
    let r = room("a-quran-session-42");
    let id = EventId::new("EV_load_for_1");
    assert_eq!(
        b.store.load_room_for_event(&r, &id).await.unwrap(),
        (None, false)
    );
    let c = commit(0, "EV_load_for_1", Some(RoomState::default()), vec![]);
    b.store.commit(&r, c).await.unwrap();
    let (record, applied) = b.store.load_room_for_event(&r, &id).await.unwrap();
    assert_eq!(record.map(|r| r.version), Some(1));
    assert!(applied);
    let other = EventId::new("EV_load_for_2");
    assert!(!b.store.load_room_for_event(&r, &other).await.unwrap().1);
}

async fn a_lease_has_one_holder_until_it_expires(b: Backend) {
    let ttl = Duration::from_millis(150);
    let taken_at = Instant::now();
    assert!(b.store.try_lease("sweep", "node-a", ttl).await.unwrap());
    assert!(!b.store.try_lease("sweep", "node-b", ttl).await.unwrap());
    assert!(!b.store.try_lease("sweep", "node-a", ttl).await.unwrap());
    assert!(
        b.store
            .try_lease("report:121", "node-b", ttl)
            .await
            .unwrap()
    );
    // Nobody else gets it before it expires; someone does after.
    loop {
        let taken = b.store.try_lease("sweep", "node-b", ttl).await.unwrap();
        if taken {
            assert!(
                taken_at.elapsed() >= ttl,
                "taken after {:?}",
                taken_at.elapsed()
            );
            break;
        }
        assert!(taken_at.elapsed() < GUARD, "the lease never expired");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!b.store.try_lease("sweep", "node-a", ttl).await.unwrap());
}

// ---- Redis only -----------------------------------------------------------

/// Two stores on one Redis are two nodes: a commit through either is seen by
/// both, a stale writer on the other conflicts, and each node delivers each
/// broadcast exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_redis_stores_share_state_and_each_delivers_every_broadcast_once() {
    let server = RedisServer::start().await;
    let (seen_a, seen_b) = (Recorder::new(), Recorder::new());
    let a = redis_store(&server, seen_a.clone(), RedisOptions::default()).await;
    let b = redis_store(&server, seen_b.clone(), RedisOptions::default()).await;
    bus_subscribed(&a, 1).await;
    bus_subscribed(&b, 1).await;
    let r = room(ROOM);

    let c = commit(
        0,
        "EV_1",
        Some(state_of(&["PA_1"])),
        vec![broadcast(CHANNEL, "from a")],
    );
    assert_eq!(
        a.commit(&r, c).await.unwrap(),
        CommitOutcome::Committed { version: 1 }
    );
    assert_eq!(
        b.load_room(&r).await.unwrap().unwrap().state,
        state_of(&["PA_1"]).into()
    );
    assert!(b.is_applied(&r, &EventId::new("EV_1")).await.unwrap());
    // B read nothing yet and writes: conflict, then duplicate of A's event.
    let stale = commit(
        0,
        "EV_2",
        Some(state_of(&["PA_2"])),
        vec![broadcast(CHANNEL, "stale")],
    );
    assert_eq!(b.commit(&r, stale).await.unwrap(), CommitOutcome::Conflict);
    let dup = commit(
        1,
        "EV_1",
        Some(state_of(&["PA_2"])),
        vec![broadcast(CHANNEL, "dup")],
    );
    assert_eq!(b.commit(&r, dup).await.unwrap(), CommitOutcome::Duplicate);
    let c = commit(
        1,
        "EV_2",
        Some(state_of(&["PA_1", "PA_2"])),
        vec![broadcast(CHANNEL, "from b")],
    );
    assert_eq!(
        b.commit(&r, c).await.unwrap(),
        CommitOutcome::Committed { version: 2 }
    );
    a.publish(vec![broadcast(CHANNEL, "published by a")])
        .await
        .unwrap();

    let expected = [
        delivered(CHANNEL, "from a"),
        delivered(CHANNEL, "from b"),
        delivered(CHANNEL, "published by a"),
    ];
    assert_eq!(seen_a.wait_for(3).await, expected);
    assert_eq!(seen_b.wait_for(3).await, expected);
    assert_eq!(log_ids(&a, &r).await, ["EV_1", "EV_2"]);
}

/// A node that just connected must not miss its own first broadcast: the
/// webhook that triggered it was acknowledged, and a socket of this node
/// that subscribed before it would otherwise never see the update. The
/// subscription is made slow (a proxy holds `SUBSCRIBE` back, as a busy
/// network might) so the race is lost every time, not 1 run in 100.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_store_delivers_its_own_first_commit_even_if_subscribing_is_slow() {
    let server = RedisServer::start().await;
    let proxy = slow_subscribe_proxy(&server, Duration::from_millis(300)).await;
    let seen = Recorder::new();
    let store = RedisStore::connect(&proxy, seen.clone(), RedisOptions::default())
        .await
        .expect("RedisStore connects");
    let c = commit(
        0,
        "EV_1",
        Some(state_of(&["PA_1"])),
        vec![broadcast(CHANNEL, "first")],
    );
    assert_eq!(
        store.commit(&room(ROOM), c).await.unwrap(),
        CommitOutcome::Committed { version: 1 }
    );
    assert_eq!(seen.wait_for(1).await, [delivered(CHANNEL, "first")]);
}

/// A TCP proxy to `server` that forwards everything at once, except that a
/// client's bytes containing `SUBSCRIBE` are held back for `delay`.
/// Returns the proxy's Redis URL.
async fn slow_subscribe_proxy(server: &RedisServer, delay: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("redis://{}", listener.local_addr().unwrap());
    let target = server.url().trim_start_matches("redis://").to_string();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let target = target.clone();
            tokio::spawn(async move {
                let Ok(outbound) = tokio::net::TcpStream::connect(&target).await else {
                    return;
                };
                let (mut from_client, mut to_client) = inbound.into_split();
                let (mut from_redis, mut to_redis) = outbound.into_split();
                let upstream = async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match from_client.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        let chunk = &buf[..n];
                        if chunk
                            .windows(9)
                            .any(|w| w.eq_ignore_ascii_case(b"SUBSCRIBE"))
                        {
                            tokio::time::sleep(delay).await;
                        }
                        if to_redis.write_all(chunk).await.is_err() {
                            return;
                        }
                    }
                };
                let downstream = async move {
                    let _ = tokio::io::copy(&mut from_redis, &mut to_client).await;
                };
                tokio::select! {
                    _ = upstream => {}
                    _ = downstream => {}
                }
            });
        }
    });
    url
}

/// Redis goes away: every operation fails as `Unavailable` within the
/// command timeout (never hangs, never pretends); Redis comes back on the
/// same address: the same store works again, with the data it had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_fails_fast_and_the_same_store_recovers() {
    let mut server = RedisServer::start().await;
    let timeout = Duration::from_millis(300);
    let seen = Recorder::new();
    let options = RedisOptions {
        command_timeout: timeout,
        ..RedisOptions::default()
    };
    let store = redis_store(&server, seen.clone(), options).await;
    bus_subscribed(&store, 1).await;
    let r = room(ROOM);
    let c = commit(
        0,
        "EV_1",
        Some(state_of(&["PA_1"])),
        vec![broadcast(CHANNEL, "before")],
    );
    assert_eq!(
        store.commit(&r, c).await.unwrap(),
        CommitOutcome::Committed { version: 1 }
    );
    seen.wait_for(1).await;

    server.stop().await;
    let bound = timeout + Duration::from_millis(700);
    for attempt in 0..3 {
        let started = Instant::now();
        let c = commit(1, "EV_2", Some(state_of(&["PA_1", "PA_2"])), vec![]);
        let results: [Result<(), StoreError>; 4] = [
            store.ping().await,
            store.load_room(&r).await.map(drop),
            store.commit(&r, c).await.map(drop),
            store.is_applied(&r, &EventId::new("EV_1")).await.map(drop),
        ];
        for result in results {
            assert!(
                matches!(result, Err(StoreError::Unavailable(_))),
                "attempt {attempt}: {result:?}"
            );
        }
        assert!(
            started.elapsed() < 4 * bound,
            "attempt {attempt} took {:?}",
            started.elapsed()
        );
    }

    server.restart().await;
    let deadline = Instant::now() + GUARD;
    while store.ping().await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the store never saw Redis come back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The data survived the restart (AOF), and the bus is back.
    assert_eq!(
        store.load_room(&r).await.unwrap().unwrap().state,
        state_of(&["PA_1"]).into()
    );
    bus_subscribed(&store, 2).await;
    let c = commit(
        1,
        "EV_2",
        Some(state_of(&["PA_1", "PA_2"])),
        vec![broadcast(CHANNEL, "after")],
    );
    assert_eq!(
        store.commit(&r, c).await.unwrap(),
        CommitOutcome::Committed { version: 2 }
    );
    assert_eq!(
        seen.wait_for(2).await,
        [delivered(CHANNEL, "before"), delivered(CHANNEL, "after")]
    );
}

/// Nothing rollcall writes lives forever: every key carries a TTL no longer
/// than the retention (room keys refreshed by each write). The one
/// exception is the sweeper's index of due rooms, a single key whose
/// entries the sweeper removes once a room has nothing left to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_rollcall_writes_expires_within_the_retention() {
    let server = RedisServer::start().await;
    let retention = Duration::from_secs(3600);
    let options = RedisOptions {
        retention,
        ..RedisOptions::default()
    };
    let store = redis_store(&server, Recorder::new(), options).await;
    let r = room(ROOM);
    store.link_channel(CHANNEL, &r).await.unwrap();
    store
        .commit(&r, commit(0, "EV_1", Some(state_of(&["PA_1"])), vec![]))
        .await
        .unwrap();
    store
        .commit(&r, commit(1, "EV_2", None, vec![]))
        .await
        .unwrap();
    store
        .commit(&room("x-quran-session-7"), commit(0, "EV_1", None, vec![]))
        .await
        .unwrap();
    store
        .record_heartbeat(&r, &UserId::new("1"), 1_000)
        .await
        .unwrap();
    store.due_no_later_than(&r, 1_000).await.unwrap();
    // The global room indexes (reconciliation's live rooms, the sessions
    // list) expire too, and drop lapsed entries as writes come.
    store
        .live_until(&r, rollcall::domain::now_millis() + 60_000)
        .await
        .unwrap();
    store
        .record_sightings(&r, &[(ParticipantSid::new("PA_1"), 1_000)])
        .await
        .unwrap();
    assert!(
        store
            .try_lease("sweep", "node-a", Duration::from_secs(10))
            .await
            .unwrap()
    );

    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut keys = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .query_async(&mut conn)
            .await
            .unwrap();
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    assert!(keys.len() >= 8, "{keys:?}");
    for key in keys.into_iter().filter(|k| k != "rollcall:due") {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(
            ttl > 0 && ttl <= retention.as_millis() as i64,
            "{key} has PTTL {ttl}"
        );
    }
}

// ---- per-person writes, the node's state cache ----------------------------

/// A commit whose state lacks people the stored state had (a recalculation
/// rebuilds rooms from the log) removes them; a later load has exactly the
/// committed state.
async fn a_commit_that_drops_people_removes_them(b: Backend) {
    let r = room(ROOM);
    let all = people_state(&[(1, "PA_1"), (2, "PA_2"), (3, "PA_3")]);
    b.store
        .commit(&r, commit(0, "EV_1", Some(all), vec![]))
        .await
        .unwrap();
    let only_two = people_state(&[(2, "PA_2")]);
    assert_eq!(
        b.store
            .commit(&r, commit(1, "EV_2", Some(only_two.clone()), vec![]))
            .await
            .unwrap(),
        CommitOutcome::Committed { version: 2 }
    );
    assert_eq!(
        b.store.load_room(&r).await.unwrap(),
        Some(RoomRecord {
            state: only_two.into(),
            version: 2
        })
    );
}

/// What a heartbeat reads: the room-level facts and the one person.
async fn loading_for_a_user_gives_that_person_and_the_room_level_facts(b: Backend) {
    let r = room(ROOM);
    let (one, two) = (UserId::new("1"), UserId::new("2"));
    assert_eq!(b.store.load_room_for_user(&r, &one).await.unwrap(), None);
    let mut state = people_state(&[(1, "PA_1"), (2, "PA_2")]);
    let mut finish = joined_observation("EV_fin", 1, "PA_1");
    finish.fact = Fact::RoomFinished;
    state.apply(&finish);
    b.store
        .commit(&r, commit(0, "EV_1", Some(state.clone()), vec![]))
        .await
        .unwrap();
    for user in [&one, &two, &UserId::new("9")] {
        let partial = b.store.load_room_for_user(&r, user).await.unwrap().unwrap();
        assert_eq!(partial.finished, state.finished);
        assert_eq!(partial.people.get(user), state.people.get(user));
        assert_eq!(partial.is_in_meeting(user), state.is_in_meeting(user));
    }
}

/// A raw connection to the test's Redis.
async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn state_fields(conn: &mut redis::aio::MultiplexedConnection) -> BTreeMap<String, String> {
    redis::cmd("HGETALL")
        .arg(format!("rollcall:{{{ROOM}}}:state"))
        .query_async(conn)
        .await
        .unwrap()
}

/// A commit sends only the people it changed: a person it did not touch
/// keeps its stored bytes exactly — here a byte-different but equal JSON
/// planted behind the store's back, which a rewrite would normalize.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_rewrites_only_the_people_it_changed() {
    let server = RedisServer::start().await;
    let store = redis_store(&server, Recorder::new(), RedisOptions::default()).await;
    let mut conn = raw(&server).await;
    let r = room(ROOM);
    let first = people_state(&[(1, "PA_1"), (2, "PA_2")]);
    store
        .commit(&r, commit(0, "EV_1", Some(first), vec![]))
        .await
        .unwrap();
    let planted = format!("{} ", state_fields(&mut conn).await["p:2"]);
    let _: () = redis::cmd("HSET")
        .arg(format!("rollcall:{{{ROOM}}}:state"))
        .arg("p:2")
        .arg(&planted)
        .query_async(&mut conn)
        .await
        .unwrap();
    let before = state_fields(&mut conn).await;

    // As `Rooms::update` does: the cached state, changed for person 1 only.
    let record = store.cached_room(&r).expect("the commit was cached");
    assert_eq!(record.version, 1);
    let mut next = RoomState::clone(&record.state);
    next.apply(&joined_observation("EV_2", 1, "PA_1b"));
    assert_eq!(
        store
            .commit(&r, commit(1, "EV_2", Some(next.clone()), vec![]))
            .await
            .unwrap(),
        CommitOutcome::Committed { version: 2 }
    );
    let after = state_fields(&mut conn).await;
    assert_eq!(after["p:2"], planted, "person 2 was rewritten");
    assert_eq!(after["room"], before["room"]);
    assert_ne!(after["p:1"], before["p:1"]);
    assert_ne!(after["t"], before["t"], "every commit writes a new tag");
    assert_eq!(
        store.load_room(&r).await.unwrap().unwrap().state,
        next.into()
    );

    // Another node, which never saw the room, rewrites the whole hash.
    let other = redis_store(&server, Recorder::new(), RedisOptions::default()).await;
    let mut last = people_state(&[(2, "PA_2"), (3, "PA_3")]);
    last.apply(&joined_observation("EV_3", 1, "PA_1"));
    assert_eq!(
        other
            .commit(&r, commit(2, "EV_3", Some(last.clone()), vec![]))
            .await
            .unwrap(),
        CommitOutcome::Committed { version: 3 }
    );
    let rewritten = state_fields(&mut conn).await;
    assert_eq!(format!("{} ", rewritten["p:2"]), planted);
    let fields: BTreeSet<&str> = rewritten.keys().map(String::as_str).collect();
    assert_eq!(
        fields,
        BTreeSet::from(["v", "t", "room", "p:1", "p:2", "p:3"])
    );
    assert_eq!(
        store.load_room(&r).await.unwrap().unwrap().state,
        last.into()
    );
}

/// Dropping people deletes their fields, through the cached diff and
/// through a full rewrite alike (`recalculate` can shrink a room).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_people_leave_no_field_behind() {
    let server = RedisServer::start().await;
    let a = redis_store(&server, Recorder::new(), RedisOptions::default()).await;
    let b = redis_store(&server, Recorder::new(), RedisOptions::default()).await;
    let mut conn = raw(&server).await;
    let r = room(ROOM);
    let fields = |m: BTreeMap<String, String>| m.into_keys().collect::<Vec<_>>();
    let all = people_state(&[(1, "PA_1"), (2, "PA_2"), (3, "PA_3")]);
    a.commit(&r, commit(0, "EV_1", Some(all), vec![]))
        .await
        .unwrap();
    // A diff: `a` committed version 1 itself.
    a.commit(
        &r,
        commit(1, "EV_2", Some(people_state(&[(1, "PA_1")])), vec![]),
    )
    .await
    .unwrap();
    assert_eq!(
        fields(state_fields(&mut conn).await),
        ["p:1", "room", "t", "v"]
    );
    // A rewrite: `b` has no cached state.
    assert!(b.cached_room(&r).is_none());
    b.commit(
        &r,
        commit(2, "EV_3", Some(people_state(&[(2, "PA_2")])), vec![]),
    )
    .await
    .unwrap();
    assert_eq!(
        fields(state_fields(&mut conn).await),
        ["p:2", "room", "t", "v"]
    );
    assert_eq!(
        a.load_room(&r).await.unwrap().unwrap().state,
        people_state(&[(2, "PA_2")]).into()
    );
}

/// Room keys expire (or are deleted) and the room starts again: versions
/// repeat, but a node's cached state of the old room must not be taken for
/// the new one — its commit conflicts, and a reload sees the new room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_state_is_not_trusted_once_the_room_started_again() {
    let server = RedisServer::start().await;
    let a = redis_store(&server, Recorder::new(), RedisOptions::default()).await;
    let b = redis_store(&server, Recorder::new(), RedisOptions::default()).await;
    let mut conn = raw(&server).await;
    let r = room(ROOM);
    a.commit(
        &r,
        commit(0, "EV_1", Some(people_state(&[(1, "PA_1")])), vec![]),
    )
    .await
    .unwrap();
    for what in ["state", "applied", "log"] {
        let _: () = redis::cmd("DEL")
            .arg(format!("rollcall:{{{ROOM}}}:{what}"))
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let fresh = people_state(&[(2, "PA_2")]);
    assert_eq!(
        b.commit(&r, commit(0, "EV_2", Some(fresh.clone()), vec![]))
            .await
            .unwrap(),
        CommitOutcome::Committed { version: 1 }
    );

    // `a` still has version 1 of the old room.
    let stale = a.cached_room(&r).expect("a cached its commit");
    assert_eq!(stale.version, 1);
    let mut next = RoomState::clone(&stale.state);
    next.apply(&joined_observation("EV_3", 3, "PA_3"));
    assert_eq!(
        a.commit(&r, commit(1, "EV_3", Some(next), vec![]))
            .await
            .unwrap(),
        CommitOutcome::Conflict
    );
    assert!(a.cached_room(&r).is_none(), "a conflict forgets the room");
    let record = a.load_room(&r).await.unwrap().unwrap();
    assert_eq!((record.state, record.version), (fresh.clone().into(), 1));
    let mut next = fresh;
    next.apply(&joined_observation("EV_3", 3, "PA_3"));
    assert_eq!(
        a.commit(&r, commit(1, "EV_3", Some(next.clone()), vec![]))
            .await
            .unwrap(),
        CommitOutcome::Committed { version: 2 }
    );
    assert_eq!(b.load_room(&r).await.unwrap().unwrap().state, next.into());
}

/// With the cache warm, a repeated event id is still refused before the
/// version is even compared, and nothing changes: not the hash, not the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_over_a_warm_cache_changes_nothing() {
    let server = RedisServer::start().await;
    let store = redis_store(&server, Recorder::new(), RedisOptions::default()).await;
    let mut conn = raw(&server).await;
    let r = room(ROOM);
    store
        .commit(
            &r,
            commit(0, "EV_1", Some(people_state(&[(1, "PA_1")])), vec![]),
        )
        .await
        .unwrap();
    store
        .commit(
            &r,
            commit(
                1,
                "EV_2",
                Some(people_state(&[(1, "PA_1"), (2, "PA_2")])),
                vec![],
            ),
        )
        .await
        .unwrap();
    let before = state_fields(&mut conn).await;
    let cached = store.cached_room(&r).expect("cached");
    assert_eq!(cached.version, 2);
    for expected in [2, 1] {
        let dup = commit(
            expected,
            "EV_1",
            Some(people_state(&[(3, "PA_3")])),
            vec![broadcast(CHANNEL, "dup")],
        );
        assert_eq!(
            store.commit(&r, dup).await.unwrap(),
            CommitOutcome::Duplicate
        );
    }
    assert_eq!(state_fields(&mut conn).await, before);
    assert_eq!(log_ids(&store, &r).await, ["EV_1", "EV_2"]);
    assert_eq!(store.cached_room(&r), Some(cached));
}

/// A hash written by an older rollcall (the whole state in one `state`
/// field) is read, and the next commit rewrites it in the new layout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_in_the_older_layout_is_read_and_rewritten() {
    let server = RedisServer::start().await;
    let store = redis_store(&server, Recorder::new(), RedisOptions::default()).await;
    let mut conn = raw(&server).await;
    let r = room(ROOM);
    let old = people_state(&[(1, "PA_1"), (2, "PA_2")]);
    let _: () = redis::cmd("HSET")
        .arg(format!("rollcall:{{{ROOM}}}:state"))
        .arg("v")
        .arg(3)
        .arg("state")
        .arg(serde_json::to_string(&old).unwrap())
        .query_async(&mut conn)
        .await
        .unwrap();
    let record = store.load_room(&r).await.unwrap().unwrap();
    assert_eq!(
        (record.state.clone(), record.version),
        (old.clone().into(), 3)
    );
    let partial = store
        .load_room_for_user(&r, &UserId::new("2"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        partial.people.get(&UserId::new("2")),
        old.people.get(&UserId::new("2"))
    );
    assert!(
        store.cached_room(&r).is_none(),
        "no tag: not for optimistic use"
    );
    let mut next = RoomState::clone(&record.state);
    next.apply(&joined_observation("EV_3", 3, "PA_3"));
    assert_eq!(
        store
            .commit(&r, commit(3, "EV_3", Some(next.clone()), vec![]))
            .await
            .unwrap(),
        CommitOutcome::Committed { version: 4 }
    );
    let fields: BTreeSet<String> = state_fields(&mut conn).await.into_keys().collect();
    assert!(!fields.contains("state"), "{fields:?}");
    assert_eq!(
        store.load_room(&r).await.unwrap().unwrap().state,
        next.into()
    );
}
