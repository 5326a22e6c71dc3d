//! Viewer links (`src/viewer.rs`): what a page without the app secret may
//! read — its room's roster, CSV and schedule, the session list with an
//! every-room link, a signature for its room's private channel — and what
//! it may not: other rooms, writes, presence channels, expired links.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::*;
use rollcall::engine::Naming;
use rollcall::viewer::{self, Scope};

const OTHER_ROOM: &str = "itqan-academy-academic-session-7";

fn link(scope: Scope) -> String {
    viewer::sign(
        APP_SECRET,
        &scope,
        rollcall::domain::now_millis() / 1000,
        600,
    )
}

fn room_link(room: &str) -> String {
    link(Scope::Room(room.to_string()))
}

async fn send(app: &TestApp, method: Method, path: &str, bearer: &str) -> (u16, Value) {
    let res = app
        .http
        .request(method, app.url(path))
        .bearer_auth(bearer)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn seed(app: &TestApp) {
    let now = rollcall::domain::now_millis();
    for room in [ROOM, OTHER_ROOM] {
        let res = app
            .post_webhook(&joined(
                room,
                "1_Ameer_Maher",
                &event_id(),
                now,
                &event_id(),
            ))
            .await;
        assert_eq!(res.status(), 200);
    }
}

#[tokio::test]
async fn a_room_link_reads_its_room_and_nothing_else() {
    let app = spawn_app().await;
    seed(&app).await;
    let token = room_link(ROOM);

    let (status, roster) = send(
        &app,
        Method::GET,
        &format!("/api/sessions/{ROOM}/attendance"),
        &token,
    )
    .await;
    assert_eq!(status, 200, "{roster}");
    assert_eq!(roster["channel"], CHANNEL, "the page learns its channel");
    assert_eq!(roster["participants"][0]["identity"], "1_Ameer_Maher");
    let (status, csv) = send(
        &app,
        Method::GET,
        &format!("/api/sessions/{ROOM}/attendance?format=csv"),
        &token,
    )
    .await;
    assert_eq!(status, 200);
    assert!(csv.as_str().unwrap().starts_with("identity,user_id,name"));
    let (status, _) = send(
        &app,
        Method::GET,
        &format!("/api/sessions/{ROOM}/schedule"),
        &token,
    )
    .await;
    assert_eq!(status, 404, "no schedule yet, but the link may ask");

    // Another room, the list, and every write or admin endpoint: no.
    let (status, body) = send(
        &app,
        Method::GET,
        &format!("/api/sessions/{OTHER_ROOM}/attendance"),
        &token,
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")));
    let (status, body) = send(&app, Method::GET, "/api/sessions", &token).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")));
    for (method, path) in [
        (Method::GET, format!("/api/sessions/{ROOM}/events")),
        (Method::POST, format!("/api/sessions/{ROOM}/recalculate")),
        (Method::PUT, format!("/api/sessions/{ROOM}/schedule")),
    ] {
        let (status, body) = send(&app, method.clone(), &path, &token).await;
        assert_eq!(status, 401, "{method} {path}: {body}");
        assert_eq!(body["error"], "invalid_credentials");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn an_every_room_link_lists_sessions_and_reads_any_room() {
    let app = spawn_app().await;
    seed(&app).await;
    let token = link(Scope::All);
    let (status, body) = send(&app, Method::GET, "/api/sessions", &token).await;
    assert_eq!(status, 200);
    assert_eq!(body["sessions"].as_array().unwrap().len(), 2);
    for room in [ROOM, OTHER_ROOM] {
        let (status, _) = send(
            &app,
            Method::GET,
            &format!("/api/sessions/{room}/attendance"),
            &token,
        )
        .await;
        assert_eq!(status, 200);
    }
    app.shutdown().await;
}

#[tokio::test]
async fn expired_forged_and_foreign_links_are_refused() {
    let app = spawn_app().await;
    seed(&app).await;
    let path = format!("/api/sessions/{ROOM}/attendance");
    let now = rollcall::domain::now_millis() / 1000;
    let expired = viewer::sign(APP_SECRET, &Scope::Room(ROOM.into()), now - 3600, 60);
    let (status, body) = send(&app, Method::GET, &path, &expired).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("viewer_link_expired"))
    );
    let forged = viewer::sign("not-the-secret", &Scope::Room(ROOM.into()), now, 60);
    let (status, body) = send(&app, Method::GET, &path, &forged).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_credentials"))
    );
    // A LiveKit access token for the room is not a viewer link.
    let livekit = rollcall::livekit::sign_access_token("devkey", "secret", "1_A", ROOM, now, 60);
    let (status, _) = send(&app, Method::GET, &path, &livekit).await;
    assert_eq!(status, 401);
    app.shutdown().await;
}

async fn channel_auth(
    app: &TestApp,
    bearer: Option<&str>,
    socket_id: &str,
    channel: &str,
) -> (u16, Value) {
    let mut req = app
        .http
        .post(app.url("/api/channel-auth"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(
            form_urlencoded::Serializer::new(String::new())
                .append_pair("socket_id", socket_id)
                .append_pair("channel_name", channel)
                .finish(),
        );
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// The page's way into a private channel: a viewer link for the room gets
/// a signature the WebSocket accepts, and then the room's updates.
#[tokio::test]
async fn a_room_link_subscribes_to_its_private_channel_only() {
    let app = spawn_app_with(|s| {
        s.naming = Naming::new(
            rollcall::engine::naming::DEFAULT_ROOM_PATTERN,
            rollcall::engine::naming::DEFAULT_IDENTITY_PATTERN,
            "private-session.{type}.{id}",
        )
        .unwrap();
    })
    .await;
    seed(&app).await;
    let channel = "private-session.quran.121";
    let token = room_link(ROOM);

    let mut client = PusherClient::connect(&app.ws_url("rollcall-key")).await;
    let (status, body) = channel_auth(&app, Some(&token), &client.socket_id, channel).await;
    assert_eq!(status, 200, "{body}");
    client
        .send(json!({"event": "pusher:subscribe", "data": {"channel": channel, "auth": body["auth"]}}))
        .await;
    client
        .next_event("pusher_internal:subscription_succeeded")
        .await;
    let snapshot = client.next_event("attendance.snapshot").await;
    assert_eq!(snapshot.data["room"], ROOM);
    assert_eq!(snapshot.data["is_final"], false, "the header's fields");
    assert_eq!(snapshot.data["schedule"], Value::Null);

    // The other room's channel, a presence channel, no link, a public one.
    let other = "private-session.academic.7";
    let (status, body) = channel_auth(&app, Some(&token), &client.socket_id, other).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")));
    let (status, _) = channel_auth(&app, Some(&token), &client.socket_id, "presence-x").await;
    assert_eq!(status, 403);
    let (status, body) = channel_auth(&app, None, &client.socket_id, channel).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("missing_authorization"))
    );
    let (status, body) = channel_auth(&app, Some(&token), &client.socket_id, "session.121").await;
    assert_eq!((status, body["error"].as_str()), (400, Some("not_private")));
    let (status, body) = channel_auth(&app, Some(&token), "nope", channel).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_socket_id"))
    );
    // An every-room link may sign any private channel.
    let (status, _) = channel_auth(&app, Some(&link(Scope::All)), &client.socket_id, other).await;
    assert_eq!(status, 200);
    app.shutdown().await;
}

#[tokio::test]
async fn the_dashboard_settings_are_public_and_carry_the_rules() {
    let app = spawn_app().await;
    let body: Value = app
        .http
        .get(app.url("/api/dashboard"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["app_key"], "rollcall-key");
    assert_eq!(body["absent_below"], 10.0);
    assert_eq!(body["partial_below"], 50.0);
    assert_eq!(body["present_from"], 75.0);
    assert_eq!(body["late_grace_ms"], 15 * 60_000);
    assert!(body["finalize_delay_ms"].as_i64().is_some());
    app.shutdown().await;
}

/// An expected person who never came is named from the identity, like
/// anyone LiveKit gave no name.
#[tokio::test]
async fn expected_absentees_have_display_names() {
    let app = spawn_app().await;
    let starts = rollcall::domain::Timestamp(rollcall::domain::now_millis()).to_rfc3339();
    let res = app
        .put_schedule(
            ROOM,
            &json!({"starts_at": starts, "duration_minutes": 60, "expected": ["9_Fatima_Al_Zahra"]}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let roster = app.get_attendance(ROOM).await;
    assert_eq!(roster["participants"][0]["name"], "Fatima Al Zahra");
    app.shutdown().await;
}
