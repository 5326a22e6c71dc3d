//! Issue 4 end to end, over HTTP against a real server: schedules and
//! verdicts, heartbeats, stale cycles closed by the sweeper, `room_finished`,
//! finalization with the signed report, CSV export, the event log and
//! replay, and two nodes sweeping one Redis.
//!
//! Durations are configured short (heartbeat timeout 300 ms, a sweep every
//! 50 ms, finalization 200 ms after the window) and every instant LiveKit
//! reports is written into the webhook bodies, so expected numbers are
//! exact to the millisecond. What the sweeper does is awaited as the
//! broadcast it makes, never slept for; the only timed waits assert that
//! nothing more arrives. Every scenario that touches the store runs against
//! the memory store and against Redis (`Backend`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use rollcall::config::Settings;
use rollcall::domain::{Timestamp, now_millis};
use rollcall::livekit::sign_access_token;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::mpsc;

use crate::helpers::*;
use crate::redis_server::RedisServer;

const MIN: i64 = 60_000;
const HEARTBEAT_TIMEOUT: Duration = Duration::from_millis(300);
const SWEEP_INTERVAL: Duration = Duration::from_millis(50);
const FINALIZE_DELAY: Duration = Duration::from_millis(200);
/// How long "nothing more is sent" is watched: several sweeps.
const QUIET: Duration = Duration::from_millis(300);
/// A report is due at once when final; a refused one is retried after
/// 500 ms, and a delivering node looks again within a second. Much more
/// than that is a delivery bug, not a slow machine.
const REPORT_WAIT: Duration = Duration::from_secs(3);

// ---------------------------------------------------------------------------
// Servers on either store.

#[derive(Debug, Clone, Copy)]
enum Backend {
    Memory,
    Redis,
}

/// A server on a backend, and the Redis it uses (dropped after it).
struct Server {
    app: TestApp,
    _redis: Option<RedisServer>,
}

impl std::ops::Deref for Server {
    type Target = TestApp;
    fn deref(&self) -> &TestApp {
        &self.app
    }
}

async fn serve(backend: Backend, configure: impl FnOnce(&mut Settings)) -> Server {
    let redis = match backend {
        Backend::Memory => None,
        Backend::Redis => Some(RedisServer::start().await),
    };
    let url = redis.as_ref().map(RedisServer::url);
    let app = spawn_app_with(|s| {
        s.redis_url = url;
        configure(s);
    })
    .await;
    Server { app, _redis: redis }
}

/// The short durations every scenario runs with.
fn fast(s: &mut Settings) {
    s.heartbeat_timeout = HEARTBEAT_TIMEOUT;
    s.sweep_interval = SWEEP_INTERVAL;
    s.finalize_delay = FINALIZE_DELAY;
}

/// Runs a scenario `fn(Backend)` as one test per backend.
macro_rules! on_both_stores {
    ($scenario:ident: $memory:ident, $redis:ident) => {
        #[tokio::test]
        async fn $memory() {
            $scenario(Backend::Memory).await
        }

        #[tokio::test]
        async fn $redis() {
            $scenario(Backend::Redis).await
        }
    };
}

// ---------------------------------------------------------------------------
// Webhook bodies, in LiveKit's protojson shape (spaces after commas, as its
// encoder writes them, so a re-serialized body would not match the log).

/// A person: the identity LiveKit sees and the display name.
struct Who {
    identity: &'static str,
    name: &'static str,
}

const AMEER: Who = Who {
    identity: "1_Ameer_Maher",
    name: "Ameer Maher",
};
const SARA: Who = Who {
    identity: "2_Sara_Ali",
    name: "Ali, Sara",
};
const OMAR: Who = Who {
    identity: "3_Omar_Hassan",
    name: "Omar Hassan",
};
/// Expected by the schedule; never joins.
const NOUR: &str = "4_Nour_Haddad";
const LAILA: Who = Who {
    identity: "5_Laila_Nasser",
    name: "Laila \"Lulu\" Nasser",
};
const YUSUF: Who = Who {
    identity: "6_Yusuf_Karim",
    name: "Yusuf Karim",
};

/// The room instance (`room.sid`) of every body unless said otherwise.
const RM: &str = "RM_test";

fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

fn room_json(room: &str, room_sid: &str, metadata: Option<&str>) -> String {
    let metadata = metadata
        .map(|m| format!(r#", "metadata":{}"#, json_string(m)))
        .unwrap_or_default();
    format!(r#"{{"sid":"{room_sid}", "name":"{room}"{metadata}}}"#)
}

/// `participant_joined`/`_left`/`_connection_aborted` for `who`'s
/// connection `sid`, which LiveKit says joined at `joined_at_ms`.
#[allow(clippy::too_many_arguments)]
fn participant_event(
    event: &str,
    room: &str,
    room_sid: &str,
    metadata: Option<&str>,
    who: &Who,
    sid: &str,
    joined_at_ms: i64,
    created_at_s: i64,
) -> String {
    let state = if event == "participant_joined" {
        "ACTIVE"
    } else {
        "DISCONNECTED"
    };
    format!(
        r#"{{"event":"{event}", "room":{}, "participant":{{"sid":"{sid}", "identity":"{}", "state":"{state}", "joinedAt":"{}", "joinedAtMs":"{joined_at_ms}", "name":{}}}, "id":"{}", "createdAt":"{created_at_s}"}}"#,
        room_json(room, room_sid, metadata),
        who.identity,
        joined_at_ms.div_euclid(1000),
        json_string(who.name),
        event_id(),
    )
}

fn join(who: &Who, sid: &str, joined_at_ms: i64) -> String {
    join_in(ROOM, RM, None, who, sid, joined_at_ms)
}

fn join_in(
    room: &str,
    room_sid: &str,
    metadata: Option<&str>,
    who: &Who,
    sid: &str,
    joined_at_ms: i64,
) -> String {
    let created_at_s = joined_at_ms.div_euclid(1000) + 1;
    participant_event(
        "participant_joined",
        room,
        room_sid,
        metadata,
        who,
        sid,
        joined_at_ms,
        created_at_s,
    )
}

/// `participant_left` at `left_at_s` (LiveKit's `createdAt`: whole seconds).
fn leave(who: &Who, sid: &str, joined_at_ms: i64, left_at_s: i64) -> String {
    leave_in(ROOM, None, who, sid, joined_at_ms, left_at_s)
}

fn leave_in(
    room: &str,
    metadata: Option<&str>,
    who: &Who,
    sid: &str,
    joined_at_ms: i64,
    left_at_s: i64,
) -> String {
    participant_event(
        "participant_left",
        room,
        RM,
        metadata,
        who,
        sid,
        joined_at_ms,
        left_at_s,
    )
}

fn room_finished(room_sid: &str, created_at_s: i64) -> String {
    format!(
        r#"{{"event":"room_finished", "room":{}, "id":"{}", "createdAt":"{created_at_s}"}}"#,
        room_json(ROOM, room_sid, None),
        event_id(),
    )
}

// ---------------------------------------------------------------------------
// Small helpers.

/// `ms` rounded down to a whole second.
fn whole_second(ms: i64) -> i64 {
    ms - ms.rem_euclid(1000)
}

fn ts(ms: i64) -> String {
    Timestamp(ms).to_rfc3339()
}

fn millis(value: &Value) -> i64 {
    Timestamp::parse_rfc3339(value.as_str().expect("an RFC 3339 string"))
        .expect("an RFC 3339 instant")
        .0
}

fn cycle(sid: &str, joined_at: i64, left_at: Option<i64>, closed_by: Option<&str>) -> Value {
    json!({
        "participant_sid": sid,
        "joined_at": ts(joined_at),
        "left_at": left_at.map(ts),
        // Every cycle here was opened by a webhook (reconciliation has its
        // own suite).
        "opened_by": "webhook",
        "closed_by": closed_by,
    })
}

/// The duration fields and verdict of an attendance object.
#[track_caller]
fn assert_numbers(
    a: &Value,
    duration_ms: i64,
    percentage: Option<f64>,
    status: Option<&str>,
    late: Option<bool>,
) {
    let who = &a["identity"];
    assert_eq!(a["duration_ms"], json!(duration_ms), "{who} duration_ms");
    assert_eq!(a["duration_seconds"], json!(duration_ms / 1000), "{who}");
    assert_eq!(a["duration_minutes"], json!(duration_ms / 60_000), "{who}");
    assert_eq!(a["attendance_percentage"], json!(percentage), "{who} %");
    assert_eq!(a["attendance_status"], json!(status), "{who} status");
    assert_eq!(a["is_late"], json!(late), "{who} is_late");
}

async fn post_ok(app: &TestApp, body: &str) {
    let res = app.post_webhook(body).await;
    assert_eq!(res.status(), 200, "{body}");
    let ack: Value = res.json().await.expect("a JSON ack");
    assert_eq!(ack["status"], "applied", "{body}");
}

/// Posts `body` and returns the one `attendance.updated` it causes.
async fn post_and_update(app: &TestApp, socket: &mut PusherClient, body: &str) -> Value {
    post_ok(app, body).await;
    socket.next_event("attendance.updated").await.data
}

/// The next `n` `attendance.updated` payloads, by identity; one each.
async fn updates(socket: &mut PusherClient, n: usize) -> BTreeMap<String, Value> {
    let mut by_identity = BTreeMap::new();
    for _ in 0..n {
        let frame = socket.next_event("attendance.updated").await;
        let identity = frame.data["attendance"]["identity"]
            .as_str()
            .expect("an identity")
            .to_string();
        if let Some(earlier) = by_identity.insert(identity.clone(), frame.data) {
            panic!("a second update for {identity} among {n}; the first: {earlier}");
        }
    }
    by_identity
}

async fn assert_quiet(socket: &mut PusherClient, what: &str) {
    if let Some(frame) = socket.frame_within(QUIET).await {
        panic!("nothing more was expected {what}, got {frame:?}");
    }
}

#[track_caller]
fn participant<'a>(roster: &'a Value, identity: &str) -> &'a Value {
    roster["participants"]
        .as_array()
        .expect("participants")
        .iter()
        .find(|p| p["identity"] == identity)
        .unwrap_or_else(|| panic!("{identity} is not in {roster}"))
}

async fn assert_error(res: reqwest::Response, status: u16, code: &str) {
    assert_eq!(res.status(), status, "status for {code}");
    let body: Value = res.json().await.expect("a JSON error body");
    assert_eq!(body["error"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

fn access_token(identity: &str, room: &str) -> String {
    sign_access_token("devkey", "secret", identity, room, now_millis() / 1000, 600)
}

/// `POST /api/heartbeat`, which must answer 200: its `in_meeting`.
async fn beat(app: &TestApp, token: &str) -> bool {
    let res = app.heartbeat(token).await;
    assert_eq!(res.status(), 200, "heartbeat");
    let body: Value = res.json().await.expect("JSON");
    assert_eq!(body.as_object().map(|o| o.len()), Some(1), "{body}");
    body["in_meeting"].as_bool().expect("in_meeting is a bool")
}

/// What a roster says that does not depend on when it is read.
fn facts(roster: &Value) -> Value {
    let people: Vec<Value> = roster["participants"]
        .as_array()
        .expect("participants")
        .iter()
        .map(|p| {
            json!([
                p["identity"],
                p["name"],
                p["cycles"],
                p["join_count"],
                p["leave_count"],
                p["first_join_time"],
                p["last_leave_time"],
                p["is_final"]
            ])
        })
        .collect();
    json!([
        roster["schedule"],
        roster["is_final"],
        roster["revision"],
        people
    ])
}

/// Rule 22: rebuilding the room from its log changes nothing.
async fn assert_replay_equals_live(app: &TestApp, room: &str) {
    let before = app.get_attendance(room).await;
    let res = app
        .api(
            reqwest::Method::POST,
            &format!("/api/sessions/{room}/recalculate"),
        )
        .send()
        .await
        .expect("server answers");
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["room"], room);
    assert_eq!(body["changed"], false, "replay differs from live: {body}");
    assert_eq!(body["revision"], before["revision"]);
    let after = app.get_attendance(room).await;
    assert_eq!(facts(&after), facts(&before));
}

// ---------------------------------------------------------------------------
// 1. The API's authentication and input checks.

#[tokio::test]
async fn the_session_api_checks_credentials_rooms_and_bodies() {
    let app = spawn_app().await;
    let schedule = json!({"starts_at": "2025-11-21T10:00:00Z", "duration_minutes": 60});
    let endpoints = [
        (reqwest::Method::PUT, "schedule"),
        (reqwest::Method::GET, "attendance"),
        (reqwest::Method::GET, "events"),
        (reqwest::Method::POST, "recalculate"),
    ];
    for (method, what) in &endpoints {
        let url = app.url(&format!("/api/sessions/{ROOM}/{what}"));
        let res = app
            .http
            .request(method.clone(), &url)
            .json(&schedule)
            .send()
            .await
            .unwrap();
        assert_error(res, 401, "missing_authorization").await;
        for wrong in ["Bearer not-the-secret", "Basic cm9sbGNhbGw6eA==", "Bearer "] {
            let res = app
                .http
                .request(method.clone(), &url)
                .header("Authorization", wrong)
                .json(&schedule)
                .send()
                .await
                .unwrap();
            assert_error(res, 401, "invalid_credentials").await;
        }
        // A room outside ROLLCALL_ROOM_PATTERN is not a session.
        let res = app
            .api(method.clone(), &format!("/api/sessions/mytestroom/{what}"))
            .json(&schedule)
            .send()
            .await
            .unwrap();
        assert_error(res, 404, "not_found").await;
    }

    // A session rollcall knows nothing about.
    for (method, what) in &endpoints[1..] {
        let res = app
            .api(method.clone(), &format!("/api/sessions/{ROOM}/{what}"))
            .send()
            .await
            .unwrap();
        assert_error(res, 404, "not_found").await;
    }

    let put = |body: String| {
        app.api(
            reqwest::Method::PUT,
            &format!("/api/sessions/{ROOM}/schedule"),
        )
        .header("Content-Type", "application/json")
        .body(body)
        .send()
    };
    let malformed = [
        r#"{"starts_at": "tomorrow at ten", "duration_minutes": 60}"#,
        r#"{"starts_at": "2025-11-21 10:00", "duration_minutes": 60}"#,
        r#"{"starts_at": "2025-11-21T10:00:00Z", "duration_minutes": 0}"#,
        r#"{"starts_at": "2025-11-21T10:00:00Z", "duration_minutes": -5}"#,
        r#"{"starts_at": "2025-11-21T10:00:00Z", "duration_minutes": 1441}"#,
        r#"{"starts_at": "2025-11-21T10:00:00Z", "duration_minutes": 60, "teacher": 7}"#,
        r#"{"starts_at": "2025-11-21T10:00:00Z", "duration_minutes": 60, "expected": [""]}"#,
        r#"{"starts_at": "2025-11-21T10:00:00Z"}"#,
        "starts_at=2025-11-21T10:00:00Z&duration_minutes=60",
        "",
    ];
    for body in malformed {
        let res = put(body.to_string()).await.unwrap();
        assert_eq!(res.status(), 400, "{body}");
        assert_error(res, 400, "invalid_schedule").await;
    }
    let huge = json!({
        "starts_at": "2025-11-21T10:00:00Z",
        "duration_minutes": 60,
        "expected": vec!["9".repeat(1000); 300],
    });
    let res = put(huge.to_string()).await.unwrap();
    assert_error(res, 413, "payload_too_large").await;

    // None of that created the session.
    let res = app
        .api_get(&format!("/api/sessions/{ROOM}/attendance"))
        .await;
    assert_error(res, 404, "not_found").await;

    // A valid schedule does, and an unknown export format is a 400.
    let res = put(schedule.to_string()).await.unwrap();
    assert_eq!(res.status(), 200);
    let res = app
        .api_get(&format!("/api/sessions/{ROOM}/attendance?format=xlsx"))
        .await;
    assert_error(res, 400, "invalid_format").await;
}

/// The schedule is a JSON object; the same values as a positional array
/// are malformed too (serde's derived `Deserialize` takes a struct from a
/// sequence unless told otherwise).
#[tokio::test]
async fn a_schedule_body_must_be_an_object() {
    let app = spawn_app().await;
    let res = app
        .api(
            reqwest::Method::PUT,
            &format!("/api/sessions/{ROOM}/schedule"),
        )
        .header("Content-Type", "application/json")
        .body(r#"["2025-11-21T10:00:00Z", 60]"#)
        .send()
        .await
        .unwrap();
    assert_error(res, 400, "invalid_schedule").await;
}

// ---------------------------------------------------------------------------
// 2. Schedules and verdicts (rules 9, 10, 16–19, 21).

/// The meeting of the verdict scenarios: a 60-minute schedule that started
/// 58 minutes ago (so its finalization is minutes away), and one person for
/// each verdict. Posts the webhooks, then the schedule; returns the
/// schedule's start and the updates the schedule broadcast.
async fn seed_verdicts(app: &TestApp, socket: &mut PusherClient) -> (i64, BTreeMap<String, Value>) {
    let start = whole_second(now_millis()) - 58 * MIN;
    let s = start / 1000;
    // Preparation: in the room 10 minutes before the start, until 50 in.
    let ameer_joined = start - 10 * MIN + 456;
    post_and_update(app, socket, &join(&AMEER, "PA_a", ameer_joined)).await;
    let before_schedule = post_and_update(
        app,
        socket,
        &leave(&AMEER, "PA_a", ameer_joined, s + 50 * 60),
    )
    .await;
    // Without a schedule every millisecond counts and there is no verdict.
    assert_numbers(
        &before_schedule["attendance"],
        60 * MIN - 456,
        None,
        None,
        None,
    );
    let hooks = [
        // Late: first joined 20 minutes in (grace 15), stays until 56.
        join(&SARA, "PA_s", start + 20 * MIN + 500),
        leave(&SARA, "PA_s", start + 20 * MIN + 500, s + 56 * 60),
        // Two tabs, 5–40 and 10–45 minutes in: counted once.
        join(&OMAR, "PA_o1", start + 5 * MIN + 100),
        join(&OMAR, "PA_o2", start + 10 * MIN),
        leave(&OMAR, "PA_o1", start + 5 * MIN + 100, s + 40 * 60),
        leave(&OMAR, "PA_o2", start + 10 * MIN, s + 45 * 60),
        // 30–48 minutes in, late.
        join(&LAILA, "PA_l", start + 30 * MIN),
        leave(&LAILA, "PA_l", start + 30 * MIN, s + 48 * 60),
        // 1–4 minutes in.
        join(&YUSUF, "PA_y", start + MIN),
        leave(&YUSUF, "PA_y", start + MIN, s + 4 * 60),
    ];
    for body in &hooks {
        let update = post_and_update(app, socket, body).await;
        assert_eq!(update["attendance"]["attendance_status"], Value::Null);
    }

    // Sent with an offset: the same instant.
    let starts_at = chrono::DateTime::from_timestamp_millis(start)
        .unwrap()
        .with_timezone(&chrono::FixedOffset::east_opt(2 * 3600).unwrap())
        .to_rfc3339();
    assert!(starts_at.ends_with("+02:00"), "{starts_at}");
    let res = app
        .put_schedule(
            ROOM,
            &json!({"starts_at": starts_at, "duration_minutes": 60, "expected": [NOUR]}),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"room": ROOM, "schedule": {
            "starts_at": ts(start), "duration_minutes": 60, "expected": [NOUR]
        }})
    );
    // Everyone is recomputed and broadcast, the expected absentee too.
    (start, updates(socket, 6).await)
}

async fn schedule_and_verdicts(backend: Backend) {
    let app = serve(backend, fast).await;
    let mut socket = app.subscriber(CHANNEL).await;
    let (start, updated) = seed_verdicts(&app, &mut socket).await;

    let ameer = &updated[AMEER.identity]["attendance"];
    // Rule 10: the 10 minutes of preparation do not count.
    assert_numbers(ameer, 50 * MIN, Some(83.3), Some("present"), Some(false));
    assert_eq!(ameer["first_join_time"], ts(start - 10 * MIN + 456));
    assert_eq!(ameer["is_final"], false);
    // Rule 17: late; rule 18: 50–75 % and late is "late".
    let sara = &updated[SARA.identity]["attendance"];
    assert_numbers(sara, 36 * MIN - 500, Some(60.0), Some("late"), Some(true));
    // Rule 9: two overlapping tabs are their union, 40 minutes, not 70.
    let omar = &updated[OMAR.identity]["attendance"];
    assert_numbers(
        omar,
        40 * MIN - 100,
        Some(66.7),
        Some("present"),
        Some(false),
    );
    assert_eq!(omar["join_count"], 2);
    assert_eq!(omar["leave_count"], 2);
    let laila = &updated[LAILA.identity]["attendance"];
    assert_numbers(laila, 18 * MIN, Some(30.0), Some("partial"), Some(true));
    let yusuf = &updated[YUSUF.identity]["attendance"];
    assert_numbers(yusuf, 3 * MIN, Some(5.0), Some("absent"), Some(false));
    // Rule 19: expected, never joined.
    let nour = &updated[NOUR];
    assert_eq!(nour["user_id"], 4);
    let nour = &nour["attendance"];
    assert_numbers(nour, 0, Some(0.0), Some("absent"), None);
    assert_eq!(nour["join_count"], 0);
    assert_eq!(nour["cycles"], json!([]));
    assert_eq!(nour["status"], "left");
    assert_eq!(updated[SARA.identity]["user_id"], 2);

    // The roster says the same.
    let roster = app.get_attendance(ROOM).await;
    assert_eq!(roster["room"], ROOM);
    assert_eq!(roster["session_id"], "121");
    assert_eq!(roster["session_type"], "quran");
    assert_eq!(
        roster["schedule"],
        json!({"starts_at": ts(start), "duration_minutes": 60, "expected": [NOUR]})
    );
    assert_eq!(roster["is_final"], false);
    assert_eq!(roster["revision"], 0);
    assert_eq!(roster["participants"].as_array().unwrap().len(), 6);
    for (identity, update) in &updated {
        assert_eq!(
            participant(&roster, identity),
            &update["attendance"],
            "{identity}"
        );
    }

    // The same schedule again changes nothing and broadcasts nothing; the
    // next frame is this join's.
    let same = json!({"starts_at": ts(start), "duration_minutes": 60, "expected": [NOUR]});
    assert_eq!(app.put_schedule(ROOM, &same).await.status(), 200);
    let marker = post_and_update(
        &app,
        &mut socket,
        &join(
            &Who {
                identity: "7_Marker",
                name: "",
            },
            "PA_m",
            start + 57 * MIN,
        ),
    )
    .await;
    assert_eq!(marker["attendance"]["identity"], "7_Marker");

    assert_replay_equals_live(&app, ROOM).await;
}

on_both_stores!(schedule_and_verdicts: schedule_and_verdicts_memory, schedule_and_verdicts_redis);

/// Rule 21: a schedule in the room's metadata applies until one is PUT.
async fn metadata_schedule_until_an_explicit_one(backend: Backend) {
    const ROOM_122: &str = "itqan-academy-quran-session-122";
    let app = serve(backend, fast).await;
    let mut socket = app.subscriber("session.122").await;
    let m = whole_second(now_millis()) - 30 * MIN;
    let metadata = json!({"starts_at": ts(m), "duration_minutes": 60, "teacher": "x"}).to_string();
    let joined = m - 5 * MIN;
    post_and_update(
        &app,
        &mut socket,
        &join_in(ROOM_122, RM, Some(&metadata), &AMEER, "PA_a", joined),
    )
    .await;
    let left = post_and_update(
        &app,
        &mut socket,
        &leave_in(
            ROOM_122,
            Some(&metadata),
            &AMEER,
            "PA_a",
            joined,
            m / 1000 + 15 * 60,
        ),
    )
    .await;
    // 15 of the metadata's 60 minutes.
    assert_numbers(
        &left["attendance"],
        15 * MIN,
        Some(25.0),
        Some("partial"),
        Some(false),
    );
    let roster = app.get_attendance(ROOM_122).await;
    assert_eq!(
        roster["schedule"],
        json!({"starts_at": ts(m), "duration_minutes": 60, "expected": []})
    );

    // The explicit schedule wins: 10–40 minutes after the metadata's start.
    let res = app
        .put_schedule(
            ROOM_122,
            &json!({"starts_at": ts(m + 10 * MIN), "duration_minutes": 30}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let recomputed = socket.next_event("attendance.updated").await.data;
    assert_numbers(
        &recomputed["attendance"],
        5 * MIN,
        Some(16.7),
        Some("partial"),
        Some(false),
    );
    // Later metadata does not displace it.
    let other = json!({"starts_at": ts(m - 60 * MIN), "duration_minutes": 600}).to_string();
    post_and_update(
        &app,
        &mut socket,
        &join_in(ROOM_122, RM, Some(&other), &SARA, "PA_s", m + 20 * MIN),
    )
    .await;
    let roster = app.get_attendance(ROOM_122).await;
    assert_eq!(
        roster["schedule"],
        json!({"starts_at": ts(m + 10 * MIN), "duration_minutes": 30, "expected": []})
    );
    assert_numbers(
        participant(&roster, AMEER.identity),
        5 * MIN,
        Some(16.7),
        Some("partial"),
        Some(false),
    );
    assert_replay_equals_live(&app, ROOM_122).await;
}

on_both_stores!(metadata_schedule_until_an_explicit_one: metadata_schedule_memory, metadata_schedule_redis);

// ---------------------------------------------------------------------------
// 3. Heartbeats (rule 12).

async fn heartbeats_authenticate_and_never_create_attendance(backend: Backend) {
    let app = serve(backend, |_| {}).await;
    let tokens: Value =
        serde_json::from_str(&fixture("sdk_tokens.json")).expect("the SDK fixture is JSON");
    // Minted by LiveKit's Python SDK for 1_Ameer_Maher in ROOM.
    let sdk_join = tokens["access_room_join"]["token"].as_str().unwrap();
    let sdk_claims = &tokens["access_room_join"]["claims"];
    assert_eq!(sdk_claims["sub"], AMEER.identity);
    assert_eq!(sdk_claims["video"]["room"], ROOM);
    let sdk_no_join = tokens["access_no_room_join"]["token"].as_str().unwrap();

    // 401: no token, not a JWT, wrong secret, unknown key, expired.
    let res = app
        .http
        .post(app.url("/api/heartbeat"))
        .send()
        .await
        .unwrap();
    assert_error(res, 401, "missing_authorization").await;
    assert_error(app.heartbeat("not-a-jwt").await, 401, "malformed_token").await;
    let now_s = now_millis() / 1000;
    let wrong = sign_access_token("devkey", "nope", AMEER.identity, ROOM, now_s, 600);
    assert_error(app.heartbeat(&wrong).await, 401, "bad_signature").await;
    let unknown = sign_access_token("otherkey", "othersecret", AMEER.identity, ROOM, now_s, 600);
    assert_error(app.heartbeat(&unknown).await, 401, "unknown_api_key").await;
    let expired = sign_access_token("devkey", "secret", AMEER.identity, ROOM, now_s - 3600, 600);
    assert_error(app.heartbeat(&expired).await, 401, "expired_token").await;
    // 403: valid, but no roomJoin grant.
    assert_error(app.heartbeat(sdk_no_join).await, 403, "no_room_join").await;
    // 404: a room that is not a session.
    let elsewhere = access_token(AMEER.identity, "mytestroom");
    assert_error(app.heartbeat(&elsewhere).await, 404, "not_found").await;

    // Before any join: not in the meeting, and nothing is created.
    assert!(!beat(&app, sdk_join).await);
    assert!(!beat(&app, &access_token(SARA.identity, ROOM)).await);
    let res = app
        .api_get(&format!("/api/sessions/{ROOM}/attendance"))
        .await;
    assert_error(res, 404, "not_found").await;

    let mut socket = app.subscriber(CHANNEL).await;
    let sara_joined = now_millis() - 2_000;
    post_and_update(&app, &mut socket, &join(&SARA, "PA_s", sara_joined)).await;
    assert!(!beat(&app, sdk_join).await, "Ameer has not joined");
    // A heartbeat broadcasts nothing and adds no one: the next frame is
    // Ameer's join, and the roster has only Sara.
    assert_eq!(
        app.get_attendance(ROOM).await["participants"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let ameer_joined = now_millis() - 1_000;
    let joined = post_and_update(&app, &mut socket, &join(&AMEER, "PA_a", ameer_joined)).await;
    assert_eq!(joined["attendance"]["identity"], AMEER.identity);
    assert!(beat(&app, sdk_join).await);
    assert!(beat(&app, &access_token(SARA.identity, ROOM)).await);
    // A guest outside the identity pattern is never in the meeting.
    assert!(!beat(&app, &access_token("guest", ROOM)).await);

    post_and_update(
        &app,
        &mut socket,
        &leave(&AMEER, "PA_a", ameer_joined, now_millis() / 1000),
    )
    .await;
    assert!(!beat(&app, sdk_join).await, "left");
    assert!(beat(&app, &access_token(SARA.identity, ROOM)).await);
    let roster = app.get_attendance(ROOM).await;
    assert_eq!(roster["participants"].as_array().unwrap().len(), 2);
    assert_quiet(&mut socket, "after heartbeats").await;
}

on_both_stores!(heartbeats_authenticate_and_never_create_attendance: heartbeats_memory, heartbeats_redis);

// ---------------------------------------------------------------------------
// 4. A lost leave: the heartbeat timeout, then the real leave (rules 13, 15).

async fn lost_leave_closed_by_heartbeat_timeout_then_corrected(backend: Backend) {
    let app = serve(backend, fast).await;
    let mut socket = app.subscriber(CHANNEL).await;
    let base = whole_second(now_millis());
    let ameer_joined = base - 5_000 + 321;
    post_and_update(&app, &mut socket, &join(&AMEER, "PA_a", ameer_joined)).await;
    // Sara's page sends no heartbeats: her cycle is never closed by them.
    post_and_update(&app, &mut socket, &join(&SARA, "PA_s", ameer_joined)).await;
    // Omar's join is stamped by a LiveKit clock 400 ms ahead of ours, so
    // his join is later than his heartbeat.
    let omar_joined = now_millis() + 400;
    post_and_update(&app, &mut socket, &join(&OMAR, "PA_o", omar_joined)).await;

    let ameer = access_token(AMEER.identity, ROOM);
    assert!(beat(&app, &ameer).await);
    let sent = now_millis();
    assert!(beat(&app, &ameer).await);
    let answered = now_millis();
    assert!(beat(&app, &access_token(OMAR.identity, ROOM)).await);
    assert!(
        now_millis() < omar_joined,
        "the test needs Omar's heartbeat answered before his join instant"
    );

    // Then silence: the sweeper closes both, each at the later of its join
    // and the last heartbeat.
    let closed = updates(&mut socket, 2).await;
    let a = &closed[AMEER.identity];
    let left_at = millis(&a["attendance"]["cycles"][0]["left_at"]);
    assert!(
        (sent..=answered).contains(&left_at),
        "closed at {left_at}, the last heartbeat was in [{sent}, {answered}]"
    );
    let waited = millis(&a["timestamp"]) - left_at;
    let timeout = HEARTBEAT_TIMEOUT.as_millis() as i64;
    assert!(waited > timeout, "closed {waited} ms after the heartbeat");
    assert!(
        waited < timeout + 1_500,
        "closed {waited} ms after the heartbeat: the sweeper is late"
    );
    let a = &a["attendance"];
    assert_eq!(
        a["cycles"],
        json!([cycle(
            "PA_a",
            ameer_joined,
            Some(left_at),
            Some("heartbeat_timeout")
        )])
    );
    assert_eq!(a["status"], "left");
    assert_eq!(a["is_currently_in_meeting"], false);
    assert_eq!(a["last_leave_time"], ts(left_at));
    assert_numbers(a, left_at - ameer_joined, None, None, None);
    let o = &closed[OMAR.identity];
    assert!(millis(&o["timestamp"]) - omar_joined > HEARTBEAT_TIMEOUT.as_millis() as i64);
    let o = &o["attendance"];
    assert_eq!(
        o["cycles"],
        json!([cycle(
            "PA_o",
            omar_joined,
            Some(omar_joined),
            Some("heartbeat_timeout")
        )])
    );
    assert_numbers(o, 0, None, None, None);

    // A heartbeat after the closure does not reopen it, and nothing is
    // broadcast again.
    assert!(!beat(&app, &ameer).await);
    assert_quiet(&mut socket, "after the heartbeat timeout").await;
    let roster = app.get_attendance(ROOM).await;
    let sara = participant(&roster, SARA.identity);
    assert_eq!(sara["is_currently_in_meeting"], true, "{sara}");
    assert_eq!(
        sara["cycles"],
        json!([cycle("PA_s", ameer_joined, None, None)])
    );

    // The real leaves arrive late and replace the estimates: Ameer's is
    // earlier than his, Omar's later.
    let real = post_and_update(
        &app,
        &mut socket,
        &leave(&AMEER, "PA_a", ameer_joined, base / 1000 - 2),
    )
    .await;
    let a = &real["attendance"];
    assert_eq!(
        a["cycles"],
        json!([cycle(
            "PA_a",
            ameer_joined,
            Some(base - 2_000),
            Some("webhook")
        )])
    );
    assert_numbers(a, 2_679, None, None, None);
    let omar_left = omar_joined / 1000 + 2;
    let real = post_and_update(
        &app,
        &mut socket,
        &leave(&OMAR, "PA_o", omar_joined, omar_left),
    )
    .await;
    let o = &real["attendance"];
    assert_eq!(
        o["cycles"],
        json!([cycle(
            "PA_o",
            omar_joined,
            Some(omar_left * 1000),
            Some("webhook")
        )])
    );
    assert_numbers(o, omar_left * 1000 - omar_joined, None, None, None);
    assert_eq!(o["leave_count"], 1);

    // Ameer's and Omar's cycles were closed by the sweeper; every answered
    // heartbeat was counted, the ones after the closure as ignored.
    app.metric_reaches("rollcall_stale_cycles_closed_total", 2)
        .await;
    app.metric_reaches("rollcall_heartbeats_recorded_total", 1)
        .await;
    app.metric_reaches("rollcall_heartbeats_ignored_total", 1)
        .await;
    assert_replay_equals_live(&app, ROOM).await;
}

on_both_stores!(lost_leave_closed_by_heartbeat_timeout_then_corrected: lost_leave_memory, lost_leave_redis);

// ---------------------------------------------------------------------------
// 5. room_finished (rules 1, 14, 15).

async fn room_finished_closes_open_cycles(backend: Backend) {
    let app = serve(backend, fast).await;
    let mut socket = app.subscriber(CHANNEL).await;
    let base = whole_second(now_millis()) - MIN;
    let s = base / 1000;
    let hooks = [
        join(&AMEER, "PA_a", base + 111),
        join(&SARA, "PA_s", base + 222),
        leave(&SARA, "PA_s", base + 222, s + 10),
        join(&OMAR, "PA_o1", base + 333),
        join(&OMAR, "PA_o2", base + 20_444),
    ];
    for body in &hooks {
        post_and_update(&app, &mut socket, body).await;
    }
    post_ok(&app, &room_finished(RM, s + 30)).await;
    let finished = base + 30_000;
    let closed = updates(&mut socket, 2).await;
    let a = &closed[AMEER.identity]["attendance"];
    assert_eq!(
        a["cycles"],
        json!([cycle(
            "PA_a",
            base + 111,
            Some(finished),
            Some("room_finished")
        )])
    );
    assert_numbers(a, 30_000 - 111, None, None, None);
    assert_eq!(a["status"], "left");
    let o = &closed[OMAR.identity]["attendance"];
    assert_eq!(
        o["cycles"],
        json!([
            cycle("PA_o1", base + 333, Some(finished), Some("room_finished")),
            cycle(
                "PA_o2",
                base + 20_444,
                Some(finished),
                Some("room_finished")
            ),
        ])
    );
    assert_numbers(o, 30_000 - 333, None, None, None);

    // Sara had left: no update for her. The next frame is this late leave,
    // which replaces the estimate with an earlier, real, leave.
    let real = post_and_update(
        &app,
        &mut socket,
        &leave(&AMEER, "PA_a", base + 111, s + 25),
    )
    .await;
    let a = &real["attendance"];
    assert_eq!(
        a["cycles"],
        json!([cycle(
            "PA_a",
            base + 111,
            Some(base + 25_000),
            Some("webhook")
        )])
    );
    assert_numbers(a, 25_000 - 111, None, None, None);

    // The session goes on in a new room instance (rule 1): the finish of
    // the old one does not close the new cycle.
    let rejoined = finished + 5_007;
    let again = post_and_update(
        &app,
        &mut socket,
        &join_in(ROOM, "RM_second", None, &AMEER, "PA_a2", rejoined),
    )
    .await;
    let a = &again["attendance"];
    assert_eq!(a["is_currently_in_meeting"], true);
    assert_eq!(a["join_count"], 2);
    assert_eq!(a["cycles"][1], cycle("PA_a2", rejoined, None, None));
    let at = millis(&again["timestamp"]);
    assert_numbers(a, 25_000 - 111 + (at - rejoined), None, None, None);

    assert_replay_equals_live(&app, ROOM).await;
}

on_both_stores!(room_finished_closes_open_cycles: room_finished_memory, room_finished_redis);

// ---------------------------------------------------------------------------
// 6. Finalization and the signed report (rule 20).

/// One request the report receiver got.
#[derive(Debug)]
struct Received {
    /// What the receiver answered.
    answered: u16,
    signature: Option<String>,
    body: Bytes,
    at: i64,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the report is JSON")
    }

    /// The signature is the hex HMAC-SHA256 of the raw body.
    #[track_caller]
    fn assert_signed(&self) {
        let mut mac = Hmac::<Sha256>::new_from_slice(APP_SECRET.as_bytes()).unwrap();
        mac.update(&self.body);
        let want = hex::encode(mac.finalize().into_bytes());
        assert_eq!(self.signature.as_deref(), Some(want.as_str()), "signature");
    }
}

/// `ROLLCALL_REPORT_WEBHOOK_URL`'s other end: records every request,
/// answers 500 to the first `failures` of them and 200 after.
struct ReportReceiver {
    url: String,
    received: mpsc::Receiver<Received>,
    server: tokio::task::JoinHandle<()>,
}

struct ReceiverState {
    failures: usize,
    count: AtomicUsize,
    sink: mpsc::Sender<Received>,
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let n = state.count.fetch_add(1, Ordering::SeqCst);
    let status = if n < state.failures {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    let received = Received {
        answered: status.as_u16(),
        signature: headers
            .get("X-Rollcall-Signature")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body,
        at: now_millis(),
    };
    state.sink.try_send(received).expect("the test keeps up");
    status
}

impl ReportReceiver {
    async fn start(failures: usize) -> Self {
        let (sink, received) = mpsc::channel(64);
        let state = Arc::new(ReceiverState {
            failures,
            count: AtomicUsize::new(0),
            sink,
        });
        let router = axum::Router::new()
            .route("/reports", axum::routing::post(receive))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/reports", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, router)
                .await
                .expect("receiver serves");
        });
        Self {
            url,
            received,
            server,
        }
    }

    /// The next request, which must come within `REPORT_WAIT`.
    async fn next(&mut self, what: &str) -> Received {
        tokio::time::timeout(REPORT_WAIT, self.received.recv())
            .await
            .unwrap_or_else(|_| panic!("no report request within {REPORT_WAIT:?}: {what}"))
            .expect("the receiver runs")
    }

    async fn assert_none_within(&mut self, window: Duration) {
        if let Ok(Some(extra)) = tokio::time::timeout(window, self.received.recv()).await {
            panic!("an unexpected report request: {}", extra.json());
        }
    }
}

impl Drop for ReportReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A one-minute schedule whose window ends at a whole second at least
/// `lead_ms` from now (and less than a second more); finalization is due
/// `FINALIZE_DELAY` after that. Returns its start.
fn schedule_ending_in(lead_ms: i64) -> i64 {
    let end = whole_second(now_millis() + lead_ms + 999);
    end - MIN
}

/// A server reporting to `receiver`, with one person who stays past the
/// end of a window ending soon and one who left early; returns the
/// schedule's start once the schedule's updates are consumed.
async fn finalizing_meeting(
    backend: Backend,
    receiver: &ReportReceiver,
) -> (Server, PusherClient, i64) {
    let url = receiver.url.parse().unwrap();
    let app = serve(backend, |s| {
        fast(s);
        s.report_webhook_url = Some(url);
    })
    .await;
    let mut socket = app.subscriber(CHANNEL).await;
    let start = schedule_ending_in(500);
    let s = start / 1000;
    // Ameer stays past the end; Sara came early and left 20 s in.
    post_and_update(&app, &mut socket, &join(&AMEER, "PA_a", start + 10_250)).await;
    post_and_update(&app, &mut socket, &join(&SARA, "PA_s", start - 5_000)).await;
    post_and_update(
        &app,
        &mut socket,
        &leave(&SARA, "PA_s", start - 5_000, s + 20),
    )
    .await;
    let res = app
        .put_schedule(
            ROOM,
            &json!({"starts_at": ts(start), "duration_minutes": 1}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let scheduled = updates(&mut socket, 2).await;
    assert_eq!(scheduled[AMEER.identity]["attendance"]["is_final"], false);
    (app, socket, start)
}

/// The final report's body, as `ROLLCALL_REPORT_WEBHOOK_URL` gets it.
#[track_caller]
fn assert_report(report: &Received, revision: u64, start: i64, people: &[&Value]) {
    report.assert_signed();
    let body = report.json();
    assert_eq!(body["event"], "attendance.finalized");
    assert_eq!(body["room"], ROOM);
    assert_eq!(body["session_id"], "121");
    assert_eq!(body["session_type"], "quran");
    assert_eq!(body["is_final"], true);
    assert_eq!(body["revision"], revision);
    assert_eq!(
        body["schedule"],
        json!({"starts_at": ts(start), "duration_minutes": 1, "expected": []})
    );
    assert_eq!(body["participants"].as_array().unwrap().len(), people.len());
    for person in people {
        let identity = person["identity"].as_str().unwrap();
        assert_eq!(participant(&body, identity), *person, "{identity}");
    }
}

async fn finalization_and_signed_reports(backend: Backend) {
    let mut receiver = ReportReceiver::start(0).await;
    let (app, mut socket, start) = finalizing_meeting(backend, &receiver).await;
    let end = start + MIN;
    let s = start / 1000;

    // At end + delay: one final update per person; open cycles end at the
    // window end.
    let finals = updates(&mut socket, 2).await;
    let a = &finals[AMEER.identity];
    assert!(
        millis(&a["timestamp"]) >= end + FINALIZE_DELAY.as_millis() as i64,
        "finalized at {}, before end + delay",
        a["timestamp"]
    );
    let a = &a["attendance"];
    assert_eq!(a["is_final"], true);
    assert_eq!(
        a["cycles"],
        json!([cycle(
            "PA_a",
            start + 10_250,
            Some(end),
            Some("session_end")
        )])
    );
    assert_eq!(a["is_currently_in_meeting"], false);
    assert_numbers(a, 49_750, Some(82.9), Some("present"), Some(false));
    let sara = &finals[SARA.identity]["attendance"];
    assert_eq!(sara["is_final"], true);
    assert_numbers(sara, 20_000, Some(33.3), Some("partial"), Some(false));

    let report = receiver.next("the final report").await;
    assert_eq!(report.answered, 200);
    assert_report(&report, 1, start, &[a, sara]);
    let roster = app.get_attendance(ROOM).await;
    assert_eq!(roster["is_final"], true);
    assert_eq!(roster["revision"], 1);

    // A leave that arrives after finalization: the next frame is its, so
    // there was no second final update, and the session is final again.
    let late = post_and_update(
        &app,
        &mut socket,
        &leave(&AMEER, "PA_a", start + 10_250, s + 40),
    )
    .await;
    let a = &late["attendance"];
    assert_eq!(a["is_final"], true);
    assert_eq!(
        a["cycles"],
        json!([cycle(
            "PA_a",
            start + 10_250,
            Some(start + 40_000),
            Some("webhook")
        )])
    );
    assert_numbers(a, 29_750, Some(49.6), Some("partial"), Some(false));
    let roster = app.get_attendance(ROOM).await;
    assert_eq!(roster["revision"], 2);
    assert_eq!(roster["is_final"], true);
    assert_eq!(participant(&roster, AMEER.identity), a);

    let second = receiver.next("the revision 2 report").await;
    assert_eq!(second.answered, 200);
    assert_report(&second, 2, start, &[a, sara]);

    assert_replay_equals_live(&app, ROOM).await;
    assert_quiet(&mut socket, "after re-finalization").await;
    receiver.assert_none_within(QUIET).await;
}

on_both_stores!(finalization_and_signed_reports: finalization_memory, finalization_redis);

/// A report the receiver refuses is retried, with backoff, until accepted.
async fn a_refused_report_is_retried(backend: Backend) {
    let mut receiver = ReportReceiver::start(1).await;
    let (app, mut socket, start) = finalizing_meeting(backend, &receiver).await;
    let finals = updates(&mut socket, 2).await;
    let people: Vec<&Value> = finals.values().map(|u| &u["attendance"]).collect();
    let refused = receiver.next("the final report").await;
    assert_eq!(refused.answered, 500);
    assert_report(&refused, 1, start, &people);
    let accepted = receiver.next("the retry of the refused report").await;
    assert_eq!(accepted.answered, 200);
    assert_report(&accepted, 1, start, &people);
    let pause = accepted.at - refused.at;
    assert!(pause >= 400, "retried after {pause} ms: no backoff");
    receiver.assert_none_within(QUIET).await;
    app.metric_reaches("rollcall_finalizations_total", 1).await;
    app.metric_reaches("rollcall_report_failures_total", 1)
        .await;
    app.metric_reaches("rollcall_reports_delivered_total", 1)
        .await;
}

on_both_stores!(a_refused_report_is_retried: report_retry_memory, report_retry_redis);

// ---------------------------------------------------------------------------
// 7. CSV export.

/// Splits one RFC 4180 line.
fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                fields.last_mut().unwrap().push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(String::new()),
            (c, _) => fields.last_mut().unwrap().push(c),
        }
    }
    fields
}

/// A JSON value as its CSV cell: `null` is empty, strings are bare.
fn cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Number(n) if n.is_f64() => format!("{:.1}", n.as_f64().unwrap()),
        other => other.to_string(),
    }
}

async fn csv_export_matches_the_roster(backend: Backend) {
    let app = serve(backend, fast).await;
    let mut socket = app.subscriber(CHANNEL).await;
    seed_verdicts(&app, &mut socket).await;
    let res = app
        .api_get(&format!("/api/sessions/{ROOM}/attendance?format=csv"))
        .await;
    assert_eq!(res.status(), 200);
    let content_type = res.headers()["content-type"].to_str().unwrap().to_string();
    assert!(content_type.starts_with("text/csv"), "{content_type}");
    let csv = res.text().await.unwrap();
    let roster = app.get_attendance(ROOM).await;

    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some(
            "identity,user_id,name,first_join_time,last_leave_time,duration_seconds,duration_minutes,attendance_percentage,attendance_status,is_late,join_count"
        )
    );
    let rows: Vec<&str> = lines.collect();
    let people = roster["participants"].as_array().unwrap();
    assert_eq!(rows.len(), people.len(), "{csv}");
    let columns = [
        "identity",
        "user_id",
        "name",
        "first_join_time",
        "last_leave_time",
        "duration_seconds",
        "duration_minutes",
        "attendance_percentage",
        "attendance_status",
        "is_late",
        "join_count",
    ];
    for (row, person) in rows.iter().zip(people) {
        let fields = csv_fields(row);
        assert_eq!(fields.len(), columns.len(), "{row}");
        for (column, field) in columns.iter().zip(&fields) {
            let want = match *column {
                // The envelope's, not the attendance object's: the
                // identity pattern's user_id group.
                "user_id" => cell(&person["identity"])
                    .split('_')
                    .next()
                    .unwrap()
                    .to_string(),
                _ => cell(&person[*column]),
            };
            assert_eq!(field, &want, "{column} of {row}");
        }
    }
    // Names with a comma or quotes are quoted, quotes doubled.
    assert!(
        csv.contains(r#","Ali, Sara","#),
        "a name with a comma is quoted: {csv}"
    );
    assert!(
        csv.contains(r#","Laila ""Lulu"" Nasser","#),
        "quotes are doubled: {csv}"
    );
    let sara = rows
        .iter()
        .find(|r| r.starts_with("2_Sara_Ali,"))
        .expect("Sara's row");
    assert_eq!(
        csv_fields(sara)[1..],
        [
            "2".to_string(),
            "Ali, Sara".into(),
            participant(&roster, SARA.identity)["first_join_time"]
                .as_str()
                .unwrap()
                .into(),
            participant(&roster, SARA.identity)["last_leave_time"]
                .as_str()
                .unwrap()
                .into(),
            "2159".into(),
            "35".into(),
            "60.0".into(),
            "late".into(),
            "true".into(),
            "1".into(),
        ]
    );
    let nour = rows
        .iter()
        .find(|r| r.starts_with(NOUR))
        .expect("the expected absentee's row");
    // Named from the identity, as LiveKit never gave a name.
    assert_eq!(*nour, format!("{NOUR},4,Nour Haddad,,,0,0,0.0,absent,,0"));
}

on_both_stores!(csv_export_matches_the_roster: csv_export_memory, csv_export_redis);

// ---------------------------------------------------------------------------
// 8. The event log and replay (rules 7, 8, 22).

async fn event_log_and_recalculation(backend: Backend) {
    let app = serve(backend, fast).await;
    let mut socket = app.subscriber(CHANNEL).await;
    let base = whole_second(now_millis()) - MIN;
    let s = base / 1000;
    let aborted = format!(
        r#"{{"event":"participant_connection_aborted", "room":{}, "participant":{{"sid":"PA_x", "identity":"{}", "state":"DISCONNECTED", "name":"Omar Hassan"}}, "id":"{}", "createdAt":"{}"}}"#,
        room_json(ROOM, RM, None),
        OMAR.identity,
        event_id(),
        s + 7
    );
    let bodies = [
        join(&AMEER, "PA_a", base + 5),
        leave(&AMEER, "PA_a", base + 5, s + 20),
        aborted,
        join(&SARA, "PA_s", base + 9_999),
        room_finished(RM, s + 40),
    ];
    let mut windows = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        let before = now_millis();
        post_ok(&app, body).await;
        windows.push((before, now_millis()));
        if i == 1 {
            // Rule 7: a retry is acknowledged and not logged again.
            let res = app.post_webhook(body).await;
            assert_eq!(res.status(), 200);
            assert_eq!(res.json::<Value>().await.unwrap()["status"], "duplicate");
        }
    }
    // Each event's update; the last one of each person is their state.
    let mut live = BTreeMap::new();
    for _ in &bodies {
        let frame = socket.next_event("attendance.updated").await;
        let identity = frame.data["attendance"]["identity"].clone();
        live.insert(identity.as_str().unwrap().to_string(), frame.data);
    }
    assert_eq!(live.len(), 3);
    let sara = &live[SARA.identity]["attendance"];
    assert_eq!(
        sara["cycles"],
        json!([cycle(
            "PA_s",
            base + 9_999,
            Some(base + 40_000),
            Some("room_finished")
        )])
    );
    let omar = &live[OMAR.identity]["attendance"];
    // Rule 8: a zero-length attempt, counted as a join.
    assert_eq!(
        omar["cycles"],
        json!([cycle(
            "PA_x",
            base + 7_000,
            Some(base + 7_000),
            Some("webhook")
        )])
    );
    assert_eq!(omar["join_count"], 1);
    assert_numbers(omar, 0, None, None, None);

    let res = app.api_get(&format!("/api/sessions/{ROOM}/events")).await;
    assert_eq!(res.status(), 200);
    let log: Value = res.json().await.unwrap();
    assert_eq!(log["room"], ROOM);
    let events = log["events"].as_array().unwrap();
    assert_eq!(events.len(), bodies.len(), "{log}");
    for ((event, body), (before, after)) in events.iter().zip(&bodies).zip(&windows) {
        let id = serde_json::from_str::<Value>(body).unwrap()["id"].clone();
        assert_eq!(event["id"], id);
        assert_eq!(event["body"].as_str(), Some(body.as_str()), "byte for byte");
        let received = millis(&event["received_at"]);
        assert!(
            (*before..=*after).contains(&received),
            "received at {received}, posted in [{before}, {after}]"
        );
    }
    assert_replay_equals_live(&app, ROOM).await;
    let roster = app.get_attendance(ROOM).await;
    for (identity, update) in &live {
        assert_eq!(
            participant(&roster, identity)["cycles"],
            update["attendance"]["cycles"]
        );
    }
}

on_both_stores!(event_log_and_recalculation: event_log_memory, event_log_redis);

// ---------------------------------------------------------------------------
// 9. Two nodes on one Redis: the sweeper and the finalizer act once.

#[tokio::test]
async fn two_nodes_close_and_finalize_exactly_once() {
    let mut receiver = ReportReceiver::start(0).await;
    let redis = RedisServer::start().await;
    let node = || {
        let url: reqwest::Url = receiver.url.parse().unwrap();
        let redis_url = redis.url();
        spawn_app_with(move |s| {
            fast(s);
            s.redis_url = Some(redis_url);
            s.report_webhook_url = Some(url);
        })
    };
    let (a, b) = (node().await, node().await);
    let mut on_a = a.subscriber(CHANNEL).await;
    let mut on_b = b.subscriber(CHANNEL).await;
    // Late enough for the heartbeat timeout to come first.
    let start = schedule_ending_in(1_200);
    let end = start + MIN;

    // Ameer (via node A) heartbeats then goes silent; Sara (via node B)
    // stays until the end. Every update reaches both sockets.
    let ameer_joined = start + 1_000;
    post_ok(&a, &join(&AMEER, "PA_a", ameer_joined)).await;
    post_ok(&b, &join(&SARA, "PA_s", start + 2_000)).await;
    let res = b
        .put_schedule(
            ROOM,
            &json!({"starts_at": ts(start), "duration_minutes": 1}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let sent = now_millis();
    assert!(beat(&a, &access_token(AMEER.identity, ROOM)).await);
    let answered = now_millis();

    for (name, socket) in [("A", &mut on_a), ("B", &mut on_b)] {
        let mut timeouts = 0;
        let mut finals = BTreeMap::new();
        // join, join, schedule ×2, timeout, finalization ×2
        for _ in 0..7 {
            let frame = socket.next_event("attendance.updated").await;
            let att = &frame.data["attendance"];
            let identity = att["identity"].as_str().unwrap().to_string();
            let closed_by = &att["cycles"][0]["closed_by"];
            if att["is_final"] == true {
                assert!(
                    finals.insert(identity.clone(), att.clone()).is_none(),
                    "a second final update for {identity} on node {name}"
                );
            } else if closed_by == "heartbeat_timeout" {
                timeouts += 1;
                let left = millis(&att["cycles"][0]["left_at"]);
                assert!((sent..=answered).contains(&left), "{att}");
            }
        }
        assert_eq!(timeouts, 1, "heartbeat_timeout updates on node {name}");
        assert_eq!(finals.len(), 2, "final updates on node {name}");
        let sara = &finals[SARA.identity];
        assert_eq!(
            sara["cycles"],
            json!([cycle("PA_s", start + 2_000, Some(end), Some("session_end"))])
        );
        assert_numbers(sara, 58_000, Some(96.7), Some("present"), Some(false));
        let ameer = &finals[AMEER.identity];
        assert_eq!(ameer["cycles"][0]["closed_by"], "heartbeat_timeout");
        assert_quiet(socket, &format!("on node {name} after finalization")).await;
    }

    let report = receiver.next("the final report").await;
    assert_eq!(report.answered, 200);
    report.assert_signed();
    assert_eq!(report.json()["revision"], 1);
    receiver
        .assert_none_within(Duration::from_millis(1_000))
        .await;
    for node in [&a, &b] {
        assert_eq!(node.get_attendance(ROOM).await["revision"], 1);
    }
}
