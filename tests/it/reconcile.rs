//! Reconciliation with LiveKit (rules 23–27) end to end: real servers (on
//! the memory store and on a real `redis-server`) ask the RoomService test
//! double (`livekit_double.rs`, LiveKit's Twirp answers) who is in a room.

use std::time::{Duration, Instant};

use rollcall::config::LiveKitApi;
use rollcall::config::Settings;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::livekit_double::{
    DOUBLE_KEY, DOUBLE_SECRET, FakeParticipant, FakeRoom, Fault, LivekitDouble, Method,
};
use crate::redis_server::RedisServer;

const IDENTITY: &str = "1_Ameer_Maher";
const MIN: i64 = 60_000;

/// Reconciliation against `double`: on demand only unless `interval`.
fn livekit(double: &LivekitDouble, interval: Option<Duration>) -> impl FnOnce(&mut Settings) {
    let url = double.url();
    move |s: &mut Settings| {
        s.livekit_api = Some(LiveKitApi {
            url,
            api_key: DOUBLE_KEY.into(),
            api_secret: DOUBLE_SECRET.into(),
            reconcile_interval: interval,
            call_timeout: Duration::from_millis(500),
        })
    }
}

/// `IDENTITY` joined `ROOM` as `sid` at `joined_at`: the webhook came, and
/// LiveKit lists them.
async fn joined_and_listed(app: &TestApp, double: &LivekitDouble, sid: &str, joined_at: i64) {
    let res = app
        .post_webhook(&joined(ROOM, IDENTITY, sid, joined_at, &event_id()))
        .await;
    assert_eq!(res.status(), 200);
    double.put_room(FakeRoom::new(ROOM).with(FakeParticipant::new(IDENTITY, joined_at).sid(sid)));
}

async fn reconcile(app: &TestApp, room: &str, query: &str) -> reqwest::Response {
    app.api(
        reqwest::Method::POST,
        &format!("/api/sessions/{room}/reconcile{query}"),
    )
    .send()
    .await
    .expect("server answers")
}

async fn reconcile_ok(app: &TestApp, room: &str, query: &str) -> Value {
    let res = reconcile(app, room, query).await;
    assert_eq!(res.status(), 200, "reconcile {room}{query}");
    res.json().await.expect("JSON")
}

async fn events(app: &TestApp, room: &str) -> Vec<Value> {
    let res = app.api_get(&format!("/api/sessions/{room}/events")).await;
    if res.status() == 404 {
        return Vec::new();
    }
    let body: Value = res.json().await.unwrap();
    body["events"].as_array().cloned().unwrap()
}

fn person(roster: &Value, identity: &str) -> Value {
    roster["participants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["identity"] == identity)
        .cloned()
        .unwrap_or_else(|| panic!("{identity} in {roster}"))
}

#[tokio::test]
async fn rule24_a_join_whose_webhook_was_lost_is_recovered_once() {
    let double = LivekitDouble::start().await;
    let app = spawn_app_with(livekit(&double, None)).await;
    let joined_at = rollcall::domain::now_millis() - 3 * MIN;
    let student = FakeParticipant::new(IDENTITY, joined_at)
        .sid("PA_lost")
        .name("Ameer Maher");
    // One room, one sid: LiveKit's listing and its webhooks agree on it
    // (`joined` sends `RM_test`). With a random sid the late webhook would
    // move the cycle's room sid to the smaller one, an internal change the
    // engine counts as a change and broadcasts (an update with the same
    // numbers): noted, not this test's subject.
    double.put_room(FakeRoom::new(ROOM).sid("RM_test").with(student));
    let mut watcher = app.subscriber(CHANNEL).await;

    // A dry run says what would change and changes nothing.
    let dry = reconcile_ok(&app, ROOM, "?dry_run=true").await;
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["changed"], true);
    assert_eq!(dry["opened"][0]["participant_sid"], "PA_lost");
    assert_eq!(
        app.api_get(&format!("/api/sessions/{ROOM}/attendance"))
            .await
            .status(),
        404,
        "a dry run writes nothing"
    );

    let done = reconcile_ok(&app, ROOM, "").await;
    assert_eq!(done["changed"], true);
    assert_eq!(done["room_exists"], true);
    assert_eq!(done["listed"], 1);
    let update = watcher.next_event("attendance.updated").await;
    let a = &update.data["attendance"];
    assert_eq!(a["is_currently_in_meeting"], true);
    assert_eq!(a["cycles"][0]["opened_by"], "reconciliation");
    assert_eq!(a["name"], "Ameer Maher");
    assert!(a["duration_ms"].as_i64().unwrap() >= 3 * MIN - 1_000);

    // The log keeps the listing as LiveKit returned it (rule 27).
    let log = events(&app, ROOM).await;
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0]["kind"], "livekit_listing");

    // The real webhook, late: the same fact again, so nothing changes and
    // nothing is broadcast.
    let before = person(&app.get_attendance(ROOM).await, IDENTITY);
    let res = app
        .post_webhook(&joined(ROOM, IDENTITY, "PA_lost", joined_at, &event_id()))
        .await;
    assert_eq!(res.status(), 200);
    let after = person(&app.get_attendance(ROOM).await, IDENTITY);
    assert_eq!(after["join_count"], 1);
    assert_eq!(after["cycles"], before["cycles"]);
    assert_eq!(after["cycles"][0]["opened_by"], "reconciliation");
    let extra = watcher.frame_within(Duration::from_millis(300)).await;
    assert!(
        extra.is_none(),
        "the late webhook broadcasts nothing, but: {extra:?}"
    );

    // Asking again changes nothing and logs nothing (rule 26).
    let again = reconcile_ok(&app, ROOM, "").await;
    assert_eq!(again["changed"], false);
    assert_eq!(
        events(&app, ROOM).await.len(),
        2,
        "the listing and the webhook only"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn rule25_a_lost_leave_is_closed_at_the_last_listing_that_had_the_sid_on_redis() {
    let redis = RedisServer::start().await;
    let double = LivekitDouble::start().await;
    let url = redis.url();
    let configure = livekit(&double, None);
    let app = spawn_app_with(move |s| {
        s.redis_url = Some(url);
        configure(s);
    })
    .await;
    let joined_at = rollcall::domain::now_millis() - 10 * MIN;
    joined_and_listed(&app, &double, "PA_x", joined_at).await;

    // Still there: nothing changes, but the sighting is kept.
    let seen = reconcile_ok(&app, ROOM, "").await;
    assert_eq!(seen["changed"], false);
    let seen_at = seen["taken_at"].as_str().unwrap().to_string();

    // LiveKit's participant_left never arrives.
    double.leave(ROOM, "PA_x");
    let gone = reconcile_ok(&app, ROOM, "").await;
    assert_eq!(gone["closed"][0]["participant_sid"], "PA_x");
    assert_eq!(gone["closed"][0]["left_at"], seen_at.as_str());
    let p = person(&app.get_attendance(ROOM).await, IDENTITY);
    assert_eq!(p["is_currently_in_meeting"], false);
    assert_eq!(p["cycles"][0]["closed_by"], "reconciliation");
    assert_eq!(p["cycles"][0]["left_at"], seen_at.as_str());

    // The real leave replaces the estimate (rule 15).
    let left_s = joined_at / 1000 + 9 * 60;
    let res = app
        .post_webhook(&left(
            ROOM,
            IDENTITY,
            "PA_x",
            joined_at,
            left_s,
            &event_id(),
        ))
        .await;
    assert_eq!(res.status(), 200);
    let p = person(&app.get_attendance(ROOM).await, IDENTITY);
    assert_eq!(p["cycles"][0]["closed_by"], "webhook");
    assert_eq!(p["duration_seconds"], (left_s * 1000 - joined_at) / 1000);

    // Recalculation reproduces the state from the log (rules 22, 27).
    let recalc = app
        .api(
            reqwest::Method::POST,
            &format!("/api/sessions/{ROOM}/recalculate"),
        )
        .send()
        .await
        .unwrap();
    let recalc: Value = recalc.json().await.unwrap();
    assert_eq!(recalc["changed"], false, "{recalc}");
    app.shutdown().await;
}

#[tokio::test]
async fn rule25_a_room_livekit_no_longer_has_closes_every_open_cycle() {
    let double = LivekitDouble::start().await;
    let app = spawn_app_with(livekit(&double, None)).await;
    let joined_at = rollcall::domain::now_millis() - 5 * MIN;
    for (identity, sid) in [(IDENTITY, "PA_1"), ("2_Sara_Ali", "PA_2")] {
        let res = app
            .post_webhook(&joined(ROOM, identity, sid, joined_at, &event_id()))
            .await;
        assert_eq!(res.status(), 200);
    }
    let outcome = reconcile_ok(&app, ROOM, "").await;
    assert_eq!(outcome["room_exists"], false);
    assert_eq!(outcome["closed"].as_array().unwrap().len(), 2);
    let roster = app.get_attendance(ROOM).await;
    for p in roster["participants"].as_array().unwrap() {
        assert_eq!(p["cycles"][0]["closed_by"], "reconciliation", "{p}");
        assert_eq!(p["is_currently_in_meeting"], false);
    }
    app.shutdown().await;
}

#[tokio::test]
async fn rule24_a_recorder_a_stranger_and_someone_still_joining_are_not_attendees() {
    use rollcall::livekit::{ParticipantKind, ParticipantState};
    let double = LivekitDouble::start().await;
    let app = spawn_app_with(livekit(&double, None)).await;
    let t = rollcall::domain::now_millis() - MIN;
    double.put_room(
        FakeRoom::new(ROOM)
            .with(FakeParticipant::new("EG_recorder", t).kind(ParticipantKind::Egress))
            .with(FakeParticipant::new("9_Bot", t).kind(ParticipantKind::Agent))
            .with(FakeParticipant::new("not-a-student", t))
            .with(FakeParticipant::new("3_Joining", t).state(ParticipantState::Joining))
            .with(FakeParticipant::new("4_Gone", t).state(ParticipantState::Disconnected))
            .with(FakeParticipant::new("5_Here", t).state(ParticipantState::Joined)),
    );
    let outcome = reconcile_ok(&app, ROOM, "").await;
    let opened: Vec<&str> = outcome["opened"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["identity"].as_str().unwrap())
        .collect();
    assert_eq!(opened, ["5_Here"]);
    app.shutdown().await;
}

#[tokio::test]
async fn rule26_a_livekit_that_fails_or_hangs_changes_nothing_and_delays_no_webhook() {
    let double = LivekitDouble::start().await;
    let app = spawn_app_with(livekit(&double, None)).await;
    let joined_at = rollcall::domain::now_millis() - 5 * MIN;
    joined_and_listed(&app, &double, "PA_x", joined_at).await;

    // An error: 502, nothing changed (the open cycle is not closed).
    double.fail(
        Method::ListParticipants,
        Fault::twirp("unavailable", "overloaded"),
    );
    let res = reconcile(&app, ROOM, "").await;
    assert_eq!(res.status(), 502);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "livekit_unavailable");
    assert!(person(&app.get_attendance(ROOM).await, IDENTITY)["is_currently_in_meeting"] == true);

    // Hanging: the call times out (500 ms here), and a webhook posted
    // meanwhile is answered at once.
    double.heal_all();
    double.set_delay(Method::ListRooms, Duration::from_secs(30));
    let started = Instant::now();
    let slow = {
        let http = app.http.clone();
        let url = app.url(&format!("/api/sessions/{ROOM}/reconcile"));
        tokio::spawn(async move { http.post(url).bearer_auth(APP_SECRET).send().await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let webhook_started = Instant::now();
    let res = app
        .post_webhook(&joined(ROOM, "2_Sara_Ali", "PA_y", joined_at, &event_id()))
        .await;
    assert_eq!(res.status(), 200);
    let webhook_took = webhook_started.elapsed();
    let slow = slow.await.unwrap();
    assert_eq!(slow.status(), 504);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "bounded by the call timeout: {took:?}"
    );
    assert!(
        webhook_took < took,
        "the webhook did not wait: {webhook_took:?} vs {took:?}"
    );
    assert!(person(&app.get_attendance(ROOM).await, IDENTITY)["is_currently_in_meeting"] == true);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("rollcall_livekit_errors_total{kind=\"twirp\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("rollcall_livekit_errors_total{kind=\"timeout\"} 1"),
        "{metrics}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn the_reconcile_endpoint_refuses_clearly() {
    let plain = spawn_app().await;
    let res = reconcile(&plain, ROOM, "").await;
    assert_eq!(res.status(), 409);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "reconciliation_disabled");
    plain.shutdown().await;

    let double = LivekitDouble::start().await;
    let app = spawn_app_with(livekit(&double, None)).await;
    let res = reconcile(&app, ROOM, "?dry_run=maybe").await;
    assert_eq!(res.status(), 400);
    let res = reconcile(&app, "not-a-session-room", "").await;
    assert_eq!(res.status(), 404);
    let res = app
        .http
        .post(app.url(&format!("/api/sessions/{ROOM}/reconcile")))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    // A room neither side knows: 200, nothing to do.
    let nothing = reconcile_ok(&app, ROOM, "").await;
    assert_eq!(
        nothing,
        json!({
            "room": ROOM, "dry_run": false, "taken_at": nothing["taken_at"], "room_exists": false,
            "listed": 0, "opened": [], "closed": [], "schedule_from_metadata": false, "changed": false,
        })
    );
    app.shutdown().await;
}

#[tokio::test]
async fn rule23_two_nodes_reconcile_every_interval_once_and_find_unknown_rooms() {
    let redis = RedisServer::start().await;
    let double = LivekitDouble::start().await;
    let joined_at = rollcall::domain::now_millis() - 2 * MIN;
    // A room rollcall never heard of, with a schedule in its metadata.
    let starts = rollcall::domain::Timestamp(joined_at - MIN).to_rfc3339();
    double.put_room(
        FakeRoom::new(ROOM)
            .metadata(&json!({"starts_at": starts, "duration_minutes": 60}).to_string())
            .with(FakeParticipant::new(IDENTITY, joined_at).sid("PA_1")),
    );
    double
        .put_room(FakeRoom::new("some-other-room").with(FakeParticipant::new(IDENTITY, joined_at)));
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let url = redis.url();
        let configure = livekit(&double, Some(Duration::from_millis(500)));
        nodes.push(
            spawn_app_with(move |s| {
                s.redis_url = Some(url);
                configure(s);
            })
            .await,
        );
    }
    // Found without any webhook, once, with the schedule from metadata.
    let deadline = Instant::now() + GUARD;
    loop {
        let res = nodes[1]
            .api_get(&format!("/api/sessions/{ROOM}/attendance"))
            .await;
        if res.status() == 200 {
            let roster: Value = res.json().await.unwrap();
            let p = person(&roster, IDENTITY);
            assert_eq!(p["cycles"][0]["opened_by"], "reconciliation");
            assert_eq!(p["counting_window"]["starts_at"], starts.as_str());
            break;
        }
        assert!(Instant::now() < deadline, "the room was never reconciled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Four more intervals: still one cycle and one listing in the log, and
    // about one ListRooms per interval across both nodes (not two).
    double.reset_counters();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let calls = double.calls(Method::ListRooms);
    assert!(
        (1..=6).contains(&calls),
        "{calls} ListRooms in 4 intervals of 2 nodes (8 without the lease)"
    );
    assert_eq!(events(&nodes[0], ROOM).await.len(), 1);
    assert_eq!(
        double.room_calls(Method::ListParticipants, "some-other-room"),
        0,
        "not a session room"
    );
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test]
async fn rule23_joins_lost_in_a_redis_outage_are_recovered_when_it_comes_back() {
    let mut redis = RedisServer::start().await;
    let double = LivekitDouble::start().await;
    let url = redis.url();
    // A long interval: only the startup pass and the recovery pass run.
    let configure = livekit(&double, Some(Duration::from_secs(3600)));
    let app = spawn_app_with(move |s| {
        s.redis_url = Some(url);
        configure(s);
    })
    .await;
    double.put_room(FakeRoom::new(ROOM));
    redis.stop().await;
    let joined_at = rollcall::domain::now_millis();
    let body = joined(ROOM, IDENTITY, "PA_x", joined_at, &event_id());
    let res = app.post_webhook(&body).await;
    assert_eq!(res.status(), 503, "not stored, so not acknowledged");
    // LiveKit gives up on the webhook; the person is in the room.
    double.join(ROOM, FakeParticipant::new(IDENTITY, joined_at).sid("PA_x"));
    redis.restart().await;
    let deadline = Instant::now() + GUARD * 2;
    loop {
        let res = app
            .api_get(&format!("/api/sessions/{ROOM}/attendance"))
            .await;
        if res.status() == 200 {
            let roster: Value = res.json().await.unwrap();
            let p = person(&roster, IDENTITY);
            assert_eq!(p["is_currently_in_meeting"], true);
            assert_eq!(p["cycles"][0]["opened_by"], "reconciliation");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never recovered after the outage"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_pass_asks_at_most_eight_rooms_at_once_and_a_slow_livekit_delays_no_webhook() {
    let double = LivekitDouble::start().await;
    let joined_at = rollcall::domain::now_millis() - 2 * MIN;
    let rooms: Vec<String> = (0..20).map(|i| format!("x-quran-session-{i}")).collect();
    for room in &rooms {
        double.put_room(FakeRoom::new(room).with(FakeParticipant::new(IDENTITY, joined_at)));
    }
    // Every answer takes 1 s: a pass over 20 rooms, 8 at a time, takes 3.
    double.set_delay(Method::ListParticipants, Duration::from_secs(1));
    let configure = livekit(&double, Some(Duration::from_secs(3600)));
    let app = spawn_app_with(move |s| {
        configure(s);
        s.livekit_api.as_mut().unwrap().call_timeout = Duration::from_secs(10);
    })
    .await;
    // While the startup pass is asking, a webhook is answered at once.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let res = app
        .post_webhook(&joined(ROOM, IDENTITY, "PA_w", joined_at, &event_id()))
        .await;
    assert_eq!(res.status(), 200);
    assert!(
        app.metrics()
            .await
            .contains("rollcall_reconcile_passes_total 0"),
        "the webhook was answered before the pass ended, not after it"
    );
    app.metric_reaches("rollcall_reconcile_passes_total", 1)
        .await;
    assert_eq!(double.calls(Method::ListParticipants), 20);
    let most = double.max_in_flight();
    assert!((2..=8).contains(&most), "{most} calls at once (bound: 8)");
    for room in &rooms {
        let roster = app.get_attendance(room).await;
        assert_eq!(
            person(&roster, IDENTITY)["cycles"][0]["opened_by"],
            "reconciliation"
        );
    }
    app.shutdown().await;
}

/// `rollcall reconcile <room> [--dry-run]`, the operators' tool.
async fn reconcile_tool(app: &TestApp, args: &[&str]) -> std::process::Output {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .arg("reconcile")
        .args(args)
        .args(["--url", &app.url("")])
        .env("ROLLCALL_APP_SECRET", APP_SECRET)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(GUARD, output)
        .await
        .expect("the tool exits")
        .unwrap()
}

#[tokio::test]
async fn operators_see_what_reconciliation_did_in_the_tool_metrics_and_logs() {
    let double = LivekitDouble::start().await;
    let app = spawn_app_with(livekit(&double, None)).await;
    let joined_at = rollcall::domain::now_millis() - 3 * MIN;
    double
        .put_room(FakeRoom::new(ROOM).with(FakeParticipant::new(IDENTITY, joined_at).sid("PA_t")));

    let dry = reconcile_tool(&app, &[ROOM, "--dry-run"]).await;
    assert!(
        dry.status.success(),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    let text = String::from_utf8_lossy(&dry.stdout);
    assert!(text.contains("LiveKit has the room, 1 in it"), "{text}");
    assert!(
        text.contains(&format!("would be opened  {IDENTITY} PA_t")),
        "{text}"
    );
    assert_eq!(
        app.api_get(&format!("/api/sessions/{ROOM}/attendance"))
            .await
            .status(),
        404
    );

    let done = reconcile_tool(&app, &[ROOM]).await;
    assert!(done.status.success());
    let text = String::from_utf8_lossy(&done.stdout);
    assert!(
        text.contains(&format!("  opened  {IDENTITY} PA_t")),
        "{text}"
    );
    let again = reconcile_tool(&app, &[ROOM]).await;
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to change"));

    // A refusal is an error exit with the server's reason.
    let refused = reconcile_tool(&app, &["not-a-session-room"]).await;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("404 not_found"));

    let metrics = app.metrics().await;
    for line in [
        "rollcall_reconcile_listings_total 3",
        "rollcall_reconcile_rooms_changed_total 1",
        "rollcall_reconcile_cycles_opened_total 1",
        "rollcall_reconcile_cycles_closed_total 0",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    // On demand is not a pass: no age until this node finished one.
    assert!(!metrics.contains("rollcall_reconcile_last_success_age_seconds"));
    app.shutdown().await;
}

#[tokio::test]
async fn a_pass_reports_its_age_and_livekit_never_makes_the_server_unready() {
    let double = LivekitDouble::start().await;
    double.fail(Method::ListRooms, Fault::twirp("unavailable", "down"));
    let app = spawn_app_with(livekit(&double, Some(Duration::from_millis(200)))).await;
    app.metric_reaches("rollcall_livekit_errors_total{kind=\"twirp\"}", 1)
        .await;
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(
        ready.status(),
        200,
        "LiveKit is not rollcall's dependency for readiness"
    );
    assert!(
        !app.metrics()
            .await
            .contains("rollcall_reconcile_last_success_age_seconds")
    );
    double.heal_all();
    app.metric_reaches("rollcall_reconcile_passes_total", 1)
        .await;
    let metrics = app.metrics().await;
    let age: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("rollcall_reconcile_last_success_age_seconds "))
        .expect("an age once a pass succeeded")
        .parse()
        .unwrap();
    assert!((0.0..5.0).contains(&age), "{age}");
    app.shutdown().await;
}

#[tokio::test]
async fn rule25_a_lost_leave_closes_at_the_last_heartbeat_when_it_is_later_than_any_listing() {
    let double = LivekitDouble::start().await;
    let app = spawn_app_with(livekit(&double, None)).await;
    let joined_at = rollcall::domain::now_millis() - 10 * MIN;
    joined_and_listed(&app, &double, "PA_h", joined_at).await;
    let listed = reconcile_ok(&app, ROOM, "").await;
    assert_eq!(listed["changed"], false);
    // The page keeps beating after that listing; then the person is gone
    // and LiveKit's participant_left is lost.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let token = rollcall::livekit::sign_access_token(
        "devkey",
        "secret",
        IDENTITY,
        ROOM,
        rollcall::domain::now_millis() / 1000,
        600,
    );
    let before = rollcall::domain::now_millis();
    let res = app.heartbeat(&token).await;
    let after = rollcall::domain::now_millis();
    assert_eq!(res.status(), 200);
    double.leave(ROOM, "PA_h");
    let gone = reconcile_ok(&app, ROOM, "").await;
    let left_at =
        rollcall::domain::Timestamp::parse_rfc3339(gone["closed"][0]["left_at"].as_str().unwrap())
            .unwrap()
            .0;
    assert!(
        (before..=after).contains(&left_at),
        "closed at the heartbeat: {gone}"
    );
    let p = person(&app.get_attendance(ROOM).await, IDENTITY);
    assert_eq!(p["cycles"][0]["closed_by"], "reconciliation");
    assert_eq!(p["duration_ms"], left_at - joined_at);
    app.shutdown().await;
}
