//! `GET /api/sessions` and `GET /api/sessions/{room}/schedule`, on the
//! memory store and on a real `redis-server`; and the warning when two
//! rooms feed one channel.

use serde_json::{Value, json};

use crate::helpers::*;
use crate::redis_server::RedisServer;

const MIN: i64 = 60_000;

async fn get(app: &TestApp, path: &str) -> (u16, Value) {
    let res = app.api_get(path).await;
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn sessions_newest_first_with_who_is_here(app: &TestApp) {
    let (status, empty) = get(app, "/api/sessions").await;
    assert_eq!(status, 200);
    assert_eq!(empty, json!({"sessions": []}));
    let now = rollcall::domain::now_millis();
    let older = "x-academic-session-7";
    let res = app
        .post_webhook(&joined(
            older,
            "1_Ameer_Maher",
            "PA_1",
            now - 5 * MIN,
            &event_id(),
        ))
        .await;
    assert_eq!(res.status(), 200);
    let res = app
        .post_webhook(&left(
            older,
            "1_Ameer_Maher",
            "PA_1",
            now - 5 * MIN,
            now / 1000 - 60,
            &event_id(),
        ))
        .await;
    assert_eq!(res.status(), 200);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let res = app
        .post_webhook(&joined(
            ROOM,
            "1_Ameer_Maher",
            "PA_2",
            now - MIN,
            &event_id(),
        ))
        .await;
    assert_eq!(res.status(), 200);
    let schedule = json!({"starts_at": rollcall::domain::Timestamp(now - 2 * MIN).to_rfc3339(), "duration_minutes": 60, "expected": ["2_Sara_Ali"]});
    assert_eq!(app.put_schedule(ROOM, &schedule).await.status(), 200);

    let (status, body) = get(app, "/api/sessions").await;
    assert_eq!(status, 200);
    let list = body["sessions"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{body}");
    let newest = &list[0];
    assert_eq!(newest["room"], ROOM);
    assert_eq!(newest["session_id"], "121");
    assert_eq!(newest["session_type"], "quran");
    assert_eq!(newest["channel"], CHANNEL);
    assert_eq!(newest["in_meeting"], true);
    assert_eq!(newest["people_in_meeting"], 1);
    assert_eq!(newest["participants"], 2, "the expected absentee counts");
    assert_eq!(newest["schedule"]["duration_minutes"], 60);
    assert_eq!(newest["is_final"], false);
    let older_entry = &list[1];
    assert_eq!(older_entry["room"], older);
    assert_eq!(older_entry["in_meeting"], false);
    assert_eq!(older_entry["participants"], 1);
    assert_eq!(older_entry["schedule"], Value::Null);
    assert!(newest["updated_at"].as_str() >= older_entry["updated_at"].as_str());

    let (_, one) = get(app, "/api/sessions?limit=1").await;
    assert_eq!(one["sessions"].as_array().unwrap().len(), 1);
    for bad in ["0", "501", "x"] {
        let (status, body) = get(app, &format!("/api/sessions?limit={bad}")).await;
        assert_eq!(status, 400, "limit={bad}");
        assert_eq!(body["error"], "invalid_query");
    }
    let res = app.http.get(app.url("/api/sessions")).send().await.unwrap();
    assert_eq!(res.status(), 401);

    // The schedule in force, and where it came from.
    let (status, body) = get(app, &format!("/api/sessions/{ROOM}/schedule")).await;
    assert_eq!(status, 200);
    assert_eq!(body["source"], "api");
    assert_eq!(body["schedule"], schedule);
    let (status, body) = get(app, &format!("/api/sessions/{older}/schedule")).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"], "not_found");
    let (status, _) = get(app, "/api/sessions/x-quran-session-999/schedule").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn sessions_are_listed_newest_first_on_memory() {
    let app = spawn_app().await;
    sessions_newest_first_with_who_is_here(&app).await;
    app.shutdown().await;
}

#[tokio::test]
async fn sessions_are_listed_newest_first_on_redis() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let app = spawn_app_with(move |s| s.redis_url = Some(url)).await;
    sessions_newest_first_with_who_is_here(&app).await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_schedule_from_room_metadata_says_so() {
    let app = spawn_app().await;
    let now = rollcall::domain::now_millis();
    let starts = rollcall::domain::Timestamp(now).to_rfc3339();
    let metadata = json!({"starts_at": starts, "duration_minutes": 45}).to_string();
    let body = json!({
        "event": "room_started", "id": event_id(), "createdAt": (now / 1000).to_string(),
        "room": {"sid": "RM_m", "name": ROOM, "metadata": metadata},
    });
    assert_eq!(app.post_webhook(&body.to_string()).await.status(), 200);
    let (status, body) = get(&app, &format!("/api/sessions/{ROOM}/schedule")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["source"], "metadata");
    assert_eq!(body["schedule"]["duration_minutes"], 45);
    app.shutdown().await;
}

#[tokio::test]
async fn two_rooms_feeding_one_channel_are_counted() {
    // Under the default `session.{id}`, quran 121 and academic 121 share
    // `session.121`.
    let app = spawn_app().await;
    let now = rollcall::domain::now_millis();
    for room in [ROOM, "itqan-academy-academic-session-121", ROOM] {
        let res = app
            .post_webhook(&joined(
                room,
                "1_Ameer_Maher",
                &format!("PA_{}", event_id()),
                now,
                &event_id(),
            ))
            .await;
        assert_eq!(res.status(), 200);
    }
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("rollcall_channel_collisions_total 1"),
        "{metrics}"
    );
    app.shutdown().await;
}
