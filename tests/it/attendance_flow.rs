//! Webhooks in, `attendance.updated` and `attendance.snapshot` out.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn join_then_leave_reach_a_subscriber_with_exact_numbers() {
    let app = spawn_app().await;
    let mut socket = app.subscriber(CHANNEL).await;

    // The fixtures' cycle: joined at .456 of a second, left 58.544 s later.
    let joined_at = 1_763_719_201_456;
    let res = app
        .post_webhook(&joined(
            ROOM,
            "1_Ameer_Maher",
            "PA_a",
            joined_at,
            &event_id(),
        ))
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap()["status"],
        "applied"
    );

    let first = socket.next_event("attendance.updated").await;
    assert_eq!(first.channel.as_deref(), Some(CHANNEL));
    assert_eq!(first.data["user_id"], json!(1));
    let a = &first.data["attendance"];
    assert_eq!(a["room"], ROOM);
    assert_eq!(a["session_id"], "121");
    assert_eq!(a["session_type"], "quran");
    assert_eq!(a["identity"], "1_Ameer_Maher");
    assert_eq!(a["name"], "Ameer Maher");
    assert_eq!(a["is_currently_in_meeting"], true);
    assert_eq!(a["status"], "joined");
    assert_eq!(a["join_count"], 1);
    assert_eq!(a["leave_count"], 0);
    assert_eq!(a["current_cycle_started_at"], "2025-11-21T10:00:01.456Z");
    assert_eq!(a["cycles"][0]["left_at"], json!(null));
    // An open cycle counts up to the message's timestamp (rule 11).
    let ts = rollcall::domain::Timestamp::parse_rfc3339(first.data["timestamp"].as_str().unwrap())
        .unwrap();
    assert_eq!(a["duration_ms"], json!(ts.0 - joined_at));

    let res = app
        .post_webhook(&left(
            ROOM,
            "1_Ameer_Maher",
            "PA_a",
            joined_at,
            1_763_719_260,
            &event_id(),
        ))
        .await;
    assert_eq!(res.status(), 200);
    let second = socket.next_event("attendance.updated").await;
    let a = &second.data["attendance"];
    assert_eq!(a["status"], "left");
    assert_eq!(a["is_currently_in_meeting"], false);
    assert_eq!(a["duration_ms"], 58_544);
    assert_eq!(a["duration_seconds"], 58);
    assert_eq!(a["duration_minutes"], 0);
    assert_eq!(a["join_count"], 1);
    assert_eq!(a["leave_count"], 1);
    assert_eq!(a["last_leave_time"], "2025-11-21T10:01:00.000Z");
    assert_eq!(
        a["cycles"],
        json!([{
            "participant_sid": "PA_a",
            "joined_at": "2025-11-21T10:00:01.456Z",
            "left_at": "2025-11-21T10:01:00.000Z",
            "opened_by": "webhook",
            "closed_by": "webhook"
        }])
    );
}

#[tokio::test]
async fn the_fixture_bodies_flow_end_to_end() {
    let app = spawn_app().await;
    let mut socket = app.subscriber(CHANNEL).await;
    assert_eq!(
        app.post_webhook(&fixture("egress_participant_joined.json"))
            .await
            .status(),
        200
    );
    assert_eq!(
        app.post_webhook(&fixture("participant_joined.json"))
            .await
            .status(),
        200
    );
    // The recorder was ignored: the first update is Ameer's.
    let joined = socket.next_event("attendance.updated").await;
    assert_eq!(joined.data["attendance"]["identity"], "1_Ameer_Maher");
    assert_eq!(
        app.post_webhook(&fixture("participant_left.json"))
            .await
            .status(),
        200
    );
    let left = socket.next_event("attendance.updated").await;
    assert_eq!(left.data["attendance"]["duration_ms"], 58_544);
    // room_finished with nobody left open changes nobody: no frame. The
    // next frame is the marker below, which proves it.
    assert_eq!(
        app.post_webhook(&fixture("room_finished.json"))
            .await
            .status(),
        200
    );
    let marker = joined_body("2_Sara_Ali", "PA_marker");
    app.post_webhook(&marker).await;
    let next = socket.next_event("attendance.updated").await;
    assert_eq!(next.data["attendance"]["identity"], "2_Sara_Ali");
}

fn joined_body(identity: &str, sid: &str) -> String {
    joined(
        ROOM,
        identity,
        sid,
        rollcall::domain::now_millis() - 5_000,
        &event_id(),
    )
}

#[tokio::test]
async fn a_duplicate_delivery_is_acknowledged_and_broadcasts_nothing() {
    let app = spawn_app().await;
    let mut socket = app.subscriber(CHANNEL).await;
    let body = joined_body("1_Ameer_Maher", "PA_a");
    assert_eq!(app.post_webhook(&body).await.status(), 200);
    socket.next_event("attendance.updated").await;

    // The same event again, freshly signed as a LiveKit retry would be.
    let res = app.post_webhook(&body).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap()["status"],
        "duplicate"
    );

    // Had the duplicate broadcast, its frame would come before this one.
    app.post_webhook(&joined_body("2_Sara_Ali", "PA_b")).await;
    let next = socket.next_event("attendance.updated").await;
    assert_eq!(next.data["attendance"]["identity"], "2_Sara_Ali");
}

#[tokio::test]
async fn a_new_subscriber_first_receives_the_snapshot() {
    let app = spawn_app().await;
    app.post_webhook(&joined_body("1_Ameer_Maher", "PA_a"))
        .await;
    app.post_webhook(&joined_body("2_Sara_Ali", "PA_b")).await;

    let mut late = app.subscriber(CHANNEL).await;
    let snap = late.next_event("attendance.snapshot").await;
    assert_eq!(snap.channel.as_deref(), Some(CHANNEL));
    assert_eq!(snap.data["room"], ROOM);
    let people = snap.data["participants"].as_array().unwrap();
    let identities: Vec<&str> = people
        .iter()
        .map(|p| p["identity"].as_str().unwrap())
        .collect();
    assert_eq!(identities, ["1_Ameer_Maher", "2_Sara_Ali"]);
    assert!(people.iter().all(|p| p["status"] == "joined"));
    assert!(snap.data["timestamp"].is_string());

    // A channel with no room state gets no snapshot, only the success.
    let mut other = app.subscriber("session.999").await;
    app.post_webhook(&joined(
        "x-quran-session-999",
        "3_Omar",
        "PA_c",
        rollcall::domain::now_millis(),
        &event_id(),
    ))
    .await;
    let first = other.next_frame().await.unwrap();
    assert_eq!(first.event, "attendance.updated");
}

#[tokio::test]
async fn events_outside_attendance_are_acknowledged_and_ignored() {
    let app = spawn_app().await;
    let mut socket = app.subscriber(CHANNEL).await;
    let cases = [
        // Unknown event type from a newer LiveKit.
        r#"{"event":"agent_job_started", "room":{"name":"itqan-academy-quran-session-121"}, "id":"EV_agent000001", "createdAt":"1"}"#.to_string(),
        // Track event without a room.
        r#"{"event":"track_published", "id":"EV_track0000001", "createdAt":"1"}"#.to_string(),
        // Rooms that are not sessions (this one and room_started.json's).
        joined("mytestroom", "1_Ameer_Maher", "PA_z", 1_000, &event_id()),
        // An identity outside the pattern.
        joined(ROOM, "guest_without_id", "PA_y", 1_000, &event_id()),
        fixture("room_started.json"),
    ];
    for body in &cases {
        let res = app.post_webhook(body).await;
        assert_eq!(res.status(), 200, "{body}");
        assert_eq!(
            res.json::<serde_json::Value>().await.unwrap()["status"],
            "ignored",
            "{body}"
        );
    }
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("rollcall_rooms_unmatched_total 2"),
        "{metrics}"
    );
    // None of them broadcast: the next frame is this marker's.
    app.post_webhook(&joined_body("2_Sara_Ali", "PA_b")).await;
    let next = socket.next_event("attendance.updated").await;
    assert_eq!(next.data["attendance"]["identity"], "2_Sara_Ali");
}
