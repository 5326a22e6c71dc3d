//! The Pusher HTTP API against a real server: requests signed as Pusher's
//! server libraries sign them, subscribers that are real WebSocket clients,
//! and on Redis two nodes (publish on one, sockets on the other) and an
//! outage. The official `pusher` npm client is in `tests/e2e/`.

use std::time::Duration;

use rollcall::pusher::auth::{body_md5_hex, sign_http_api};
use serde_json::{Value, json};

use crate::helpers::*;
use crate::redis_server::RedisServer;
use crate::shared_redis::Shared;

const APP_KEY: &str = "rollcall-key";

fn now() -> i64 {
    rollcall::domain::now_millis() / 1000
}

/// Builds signed Pusher HTTP API requests; each field can be spoiled to
/// test one failure at a time.
struct Signed {
    key: String,
    secret: String,
    timestamp: i64,
    version: &'static str,
    /// `Some(x)`: send `x` as body_md5 whatever the body.
    body_md5: Option<String>,
    /// Query parameters left out (after signing).
    omit: Vec<&'static str>,
    /// Replaces the computed signature.
    signature: Option<String>,
}

impl Default for Signed {
    fn default() -> Self {
        Self {
            key: APP_KEY.into(),
            secret: APP_SECRET.into(),
            timestamp: now(),
            version: "1.0",
            body_md5: None,
            omit: Vec::new(),
            signature: None,
        }
    }
}

impl Signed {
    /// The query string for `method path` with `params` and `body`.
    fn query(&self, method: &str, path: &str, params: &[(&str, &str)], body: &str) -> String {
        let timestamp = self.timestamp.to_string();
        let md5 = self
            .body_md5
            .clone()
            .unwrap_or_else(|| body_md5_hex(body.as_bytes()));
        let mut pairs: Vec<(&str, &str)> = vec![
            ("auth_key", &self.key),
            ("auth_timestamp", &timestamp),
            ("auth_version", self.version),
        ];
        if !body.is_empty() || self.body_md5.is_some() {
            pairs.push(("body_md5", &md5));
        }
        pairs.extend_from_slice(params);
        let signature = self
            .signature
            .clone()
            .unwrap_or_else(|| sign_http_api(&self.secret, method, path, &pairs));
        pairs.push(("auth_signature", &signature));
        pairs.retain(|(k, _)| !self.omit.contains(k));
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            query.append_pair(k, v);
        }
        query.finish()
    }

    async fn post(&self, app: &TestApp, path: &str, body: &str) -> (u16, Value) {
        let query = self.query("POST", path, &[], body);
        let res = app
            .http
            .post(app.url(&format!("{path}?{query}")))
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("server answers");
        answer(res).await
    }

    async fn get(&self, app: &TestApp, path: &str, params: &[(&str, &str)]) -> (u16, Value) {
        let query = self.query("GET", path, params, "");
        let res = app
            .http
            .get(app.url(&format!("{path}?{query}")))
            .send()
            .await
            .expect("server answers");
        answer(res).await
    }
}

async fn answer(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    let text = res.text().await.expect("a body");
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("JSON body: {text}"));
    (status, body)
}

pub async fn trigger(app: &TestApp, body: &Value) -> (u16, Value) {
    Signed::default()
        .post(app, "/apps/rollcall/events", &body.to_string())
        .await
}

/// `POST path` with `body`, signed as Pusher's server libraries sign it.
pub async fn post_signed(app: &TestApp, path: &str, body: &str) -> (u16, Value) {
    Signed::default().post(app, path, body).await
}

/// `GET /apps/rollcall/channels`, signed.
pub async fn get_channels(app: &TestApp) -> (u16, Value) {
    get(app, "/apps/rollcall/channels", &[]).await
}

async fn get(app: &TestApp, path: &str, params: &[(&str, &str)]) -> (u16, Value) {
    Signed::default().get(app, path, params).await
}

/// An error answer with this status and code.
#[track_caller]
fn assert_error(answer: &(u16, Value), status: u16, code: &str, what: &str) {
    assert_eq!(answer.0, status, "{what}: {}", answer.1);
    assert_eq!(answer.1["error"], code, "{what}: {}", answer.1);
    assert!(
        answer.1["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: {}",
        answer.1
    );
}

/// Proves that nothing else was queued for `client` before `marker` (an
/// event published after the one that must not arrive).
async fn next_is_marker(client: &mut PusherClient, marker: &str) {
    let frame = client.next_frame().await.expect("a frame");
    assert_eq!(frame.event, marker, "{frame:?}");
}

#[tokio::test]
async fn a_published_event_reaches_subscribers_exactly_as_pusher_frames_it() {
    let app = spawn_app().await;
    let mut client = app.subscriber("news.1").await;
    let mut other = app.subscriber("news.2").await;

    let data = r#"{"some":"data"}"#;
    let res = trigger(
        &app,
        &json!({"name": "story.published", "channels": ["news.1", "news.2"], "data": data}),
    )
    .await;
    assert_eq!(res, (200, json!({})));
    for (client, channel) in [(&mut client, "news.1"), (&mut other, "news.2")] {
        let frame = client.next_frame().await.expect("the event");
        assert_eq!(frame.event, "story.published");
        assert_eq!(frame.channel.as_deref(), Some(channel));
        assert_eq!(frame.data, json!({"some": "data"}));
    }
    // `data` is passed through as the string given, JSON or not; `channel`
    // (singular) works too.
    let res = trigger(
        &app,
        &json!({"name": "plain", "channel": "news.1", "data": "not json, kept as is"}),
    )
    .await;
    assert_eq!(res.0, 200, "{}", res.1);
    let frame = client.next_frame().await.expect("the event");
    assert_eq!(frame.data, json!("not json, kept as is"));
    app.metric_reaches("rollcall_api_messages_published_total", 3)
        .await;
}

#[tokio::test]
async fn socket_id_excludes_that_socket_only() {
    let app = spawn_app().await;
    let mut sender = app.subscriber("chat.1").await;
    let mut receiver = app.subscriber("chat.1").await;
    let body =
        json!({"name": "said", "channel": "chat.1", "data": "hi", "socket_id": sender.socket_id});
    assert_eq!(trigger(&app, &body).await.0, 200);
    assert_eq!(receiver.next_event("said").await.data, json!("hi"));
    let marker = json!({"name": "marker", "channel": "chat.1", "data": "{}"});
    assert_eq!(trigger(&app, &marker).await.0, 200);
    next_is_marker(&mut sender, "marker").await;
    next_is_marker(&mut receiver, "marker").await;
}

#[tokio::test]
async fn batch_events_are_published_in_order_and_answer_info() {
    let app = spawn_app().await;
    let mut a = app.subscriber("batch-a").await;
    let mut b = app.subscriber("batch-b").await;
    let _also_b = app.subscriber("batch-b").await;
    let batch = json!({"batch": [
        {"name": "one", "channel": "batch-a", "data": "1"},
        {"name": "two", "channel": "batch-b", "data": "2", "info": "subscription_count"},
        {"name": "three", "channel": "batch-a", "data": "3"},
    ]});
    let res = Signed::default()
        .post(&app, "/apps/rollcall/batch_events", &batch.to_string())
        .await;
    assert_eq!(
        res,
        (200, json!({"batch": [{}, {"subscription_count": 2}, {}]}))
    );
    assert_eq!(a.next_event("one").await.data, json!(1));
    assert_eq!(a.next_event("three").await.data, json!(3));
    assert_eq!(
        b.next_event("two").await.channel.as_deref(),
        Some("batch-b")
    );

    // Without info: `{}`.
    let plain = json!({"batch": [{"name": "four", "channel": "batch-a", "data": "4"}]});
    let res = Signed::default()
        .post(&app, "/apps/rollcall/batch_events", &plain.to_string())
        .await;
    assert_eq!(res, (200, json!({})));
    a.next_event("four").await;
}

#[tokio::test]
async fn channel_queries_report_occupancy_and_subscription_counts() {
    let app = spawn_app().await;
    let _one = app.subscriber("session.1").await;
    let _two = app.subscriber("session.1").await;
    let _three = app.subscriber("session.2").await;

    let (status, body) = get(&app, "/apps/rollcall/channels", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"channels": {"session.1": {}, "session.2": {}}})
    );

    let (status, body) = get(
        &app,
        "/apps/rollcall/channels",
        &[
            ("filter_by_prefix", "session.1"),
            ("info", "subscription_count"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"channels": {"session.1": {"subscription_count": 2}}})
    );

    let res = get(
        &app,
        "/apps/rollcall/channels/session.1",
        &[("info", "subscription_count")],
    )
    .await;
    assert_eq!(
        res,
        (200, json!({"occupied": true, "subscription_count": 2}))
    );
    let res = get(&app, "/apps/rollcall/channels/session.9", &[]).await;
    assert_eq!(res, (200, json!({"occupied": false})));

    // The trigger's own info.
    let res = trigger(
        &app,
        &json!({"name": "e", "channels": ["session.1", "session.9"], "data": "{}", "info": "subscription_count"}),
    )
    .await;
    assert_eq!(
        res,
        (
            200,
            json!({"channels": {"session.1": {"subscription_count": 2}, "session.9": {"subscription_count": 0}}})
        )
    );

    // user_count and users are presence-only (an empty presence channel has
    // no users; members are tested in presence.rs).
    let res = get(
        &app,
        "/apps/rollcall/channels/session.1",
        &[("info", "user_count")],
    )
    .await;
    assert_error(
        &res,
        400,
        "invalid_request",
        "user_count on a public channel",
    );
    let res = get(&app, "/apps/rollcall/channels", &[("info", "user_count")]).await;
    assert_error(&res, 400, "invalid_request", "user_count without presence-");
    let res = get(&app, "/apps/rollcall/channels/session.1/users", &[]).await;
    assert_error(&res, 400, "invalid_request", "users of a public channel");
    assert!(
        res.1["message"]
            .as_str()
            .unwrap()
            .contains("only available for presence channels")
    );
    let res = get(&app, "/apps/rollcall/channels/presence-room/users", &[]).await;
    assert_eq!(res, (200, json!({"users": []})));
    let res = get(
        &app,
        "/apps/rollcall/channels/presence-room",
        &[("info", "user_count,subscription_count")],
    )
    .await;
    assert_eq!(
        res,
        (
            200,
            json!({"occupied": false, "user_count": 0, "subscription_count": 0})
        )
    );
    let res = get(&app, "/apps/rollcall/channels/bad%20name", &[]).await;
    assert_error(&res, 400, "invalid_request", "invalid channel name");
}

#[tokio::test]
async fn every_authentication_failure_is_401() {
    let app = spawn_app().await;
    let mut client = app.subscriber("guarded").await;
    let body = json!({"name": "e", "channel": "guarded", "data": "x"}).to_string();
    let path = "/apps/rollcall/events";
    let cases: Vec<(&str, Signed, &str)> = vec![
        (
            "wrong key",
            Signed {
                key: "not-the-key".into(),
                ..Signed::default()
            },
            "invalid_key",
        ),
        (
            "signed with another secret",
            Signed {
                secret: "not-the-secret".into(),
                ..Signed::default()
            },
            "invalid_signature",
        ),
        (
            "garbage signature",
            Signed {
                signature: Some("zz".into()),
                ..Signed::default()
            },
            "invalid_signature",
        ),
        (
            "timestamp 605 s old",
            Signed {
                timestamp: now() - 605,
                ..Signed::default()
            },
            "stale_timestamp",
        ),
        (
            "timestamp 605 s ahead",
            Signed {
                timestamp: now() + 605,
                ..Signed::default()
            },
            "stale_timestamp",
        ),
        (
            "body_md5 of another body",
            Signed {
                body_md5: Some(body_md5_hex(b"{}")),
                ..Signed::default()
            },
            "invalid_body_md5",
        ),
        (
            "auth_version 2.0",
            Signed {
                version: "2.0",
                ..Signed::default()
            },
            "invalid_auth_version",
        ),
    ];
    // Timestamps are taken when the cases are built, so a case sent a
    // second later is a second closer: a few seconds' margin over the
    // 600 s bound (its exact edge is `auth.rs`'s unit test).
    for (what, signed, code) in cases {
        let res = signed.post(&app, path, &body).await;
        assert_error(&res, 401, code, what);
    }
    for param in [
        "auth_key",
        "auth_timestamp",
        "auth_version",
        "auth_signature",
        "body_md5",
    ] {
        let signed = Signed {
            omit: vec![param],
            ..Signed::default()
        };
        let res = signed.post(&app, path, &body).await;
        assert_error(&res, 401, "missing_auth_params", param);
        assert!(res.1["message"].as_str().unwrap().contains(param));
    }
    // No query at all, and a GET signed for another path.
    let res = answer(
        app.http
            .post(app.url(path))
            .body(body.clone())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(&res, 401, "missing_auth_params", "no query");
    let query = Signed::default().query("GET", "/apps/rollcall/channels/x", &[], "");
    let res = answer(
        app.http
            .get(app.url(&format!("/apps/rollcall/channels?{query}")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(&res, 401, "invalid_signature", "signed for another path");
    // A body tampered with after signing: the md5 no longer matches.
    let query = Signed::default().query("POST", path, &[], &body);
    let tampered = body.replace("\"x\"", "\"y\"");
    let res = answer(
        app.http
            .post(app.url(&format!("{path}?{query}")))
            .body(tampered)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(&res, 401, "invalid_body_md5", "tampered body");

    // None of them was published: the next frame is a valid one.
    let res = Signed::default()
        .post(
            &app,
            path,
            &json!({"name": "marker", "channel": "guarded", "data": "{}"}).to_string(),
        )
        .await;
    assert_eq!(res.0, 200);
    next_is_marker(&mut client, "marker").await;
}

#[tokio::test]
async fn malformed_requests_and_requests_over_limits_are_400() {
    let app = spawn_app().await;
    let many: Vec<String> = (0..101).map(|i| format!("c{i}")).collect();
    let cases: Vec<(&str, String)> = vec![
        ("not JSON", "{nope".into()),
        ("not an object", "[]".into()),
        ("no name", json!({"channel": "c", "data": "x"}).to_string()),
        (
            "empty name",
            json!({"name": "", "channel": "c", "data": "x"}).to_string(),
        ),
        (
            "name too long",
            json!({"name": "e".repeat(201), "channel": "c", "data": "x"}).to_string(),
        ),
        (
            "reserved name",
            json!({"name": "pusher:x", "channel": "c", "data": "x"}).to_string(),
        ),
        ("no data", json!({"name": "e", "channel": "c"}).to_string()),
        ("no channel", json!({"name": "e", "data": "x"}).to_string()),
        (
            "no channels",
            json!({"name": "e", "channels": [], "data": "x"}).to_string(),
        ),
        (
            "both",
            json!({"name": "e", "channel": "c", "channels": ["c"], "data": "x"}).to_string(),
        ),
        (
            "bad channel",
            json!({"name": "e", "channel": "a b", "data": "x"}).to_string(),
        ),
        (
            "long channel",
            json!({"name": "e", "channel": "c".repeat(201), "data": "x"}).to_string(),
        ),
        (
            "101 channels",
            json!({"name": "e", "channels": many, "data": "x"}).to_string(),
        ),
        (
            "bad socket_id",
            json!({"name": "e", "channel": "c", "data": "x", "socket_id": "1-2"}).to_string(),
        ),
        (
            "unknown info",
            json!({"name": "e", "channel": "c", "data": "x", "info": "nope"}).to_string(),
        ),
        (
            "channels not a list",
            json!({"name": "e", "channels": "c", "data": "x"}).to_string(),
        ),
    ];
    for (what, body) in cases {
        let res = Signed::default()
            .post(&app, "/apps/rollcall/events", &body)
            .await;
        assert_eq!(res.0, 400, "{what}: {}", res.1);
        assert!(
            res.1["error"].is_string() && res.1["message"].is_string(),
            "{what}"
        );
    }
    let event = json!({"name": "e", "channel": "c", "data": "x"});
    let batches = [
        ("11 events", json!({"batch": vec![event.clone(); 11]})),
        ("no batch", json!({"events": [event.clone()]})),
        (
            "two channels in a batch event",
            json!({"batch": [{"name": "e", "channels": ["a", "b"], "data": "x"}]}),
        ),
        (
            "one bad event",
            json!({"batch": [event.clone(), {"name": "e", "channel": "a b", "data": "x"}]}),
        ),
    ];
    for (what, body) in batches {
        let res = Signed::default()
            .post(&app, "/apps/rollcall/batch_events", &body.to_string())
            .await;
        assert_eq!(res.0, 400, "{what}: {}", res.1);
    }
    let res = Signed::default()
        .post(
            &app,
            "/apps/rollcall/batch_events",
            &json!({"batch": [event.clone(), {"name": "e", "channel": "a b", "data": "x"}]})
                .to_string(),
        )
        .await;
    assert!(res.1["message"].as_str().unwrap().starts_with("batch[1]"));
}

#[tokio::test]
async fn oversized_bodies_and_data_are_413() {
    let app = spawn_app().await;
    let data = "x".repeat(10 * 1024 + 1);
    let res = trigger(&app, &json!({"name": "e", "channel": "c", "data": data})).await;
    assert_error(&res, 413, "payload_too_large", "data over 10 KiB");
    let res = trigger(
        &app,
        &json!({"name": "e", "channel": "c", "data": "x".repeat(10 * 1024)}),
    )
    .await;
    assert_eq!(res.0, 200, "10 KiB of data is allowed: {}", res.1);
    let huge = json!({"name": "e", "channel": "c", "data": "x".repeat(600 * 1024)}).to_string();
    let res = Signed::default()
        .post(&app, "/apps/rollcall/events", &huge)
        .await;
    assert_error(&res, 413, "payload_too_large", "body over the limit");
}

#[tokio::test]
async fn another_app_id_is_404() {
    let app = spawn_app().await;
    let body = json!({"name": "e", "channel": "c", "data": "x"}).to_string();
    let res = Signed::default()
        .post(&app, "/apps/other/events", &body)
        .await;
    assert_error(&res, 404, "not_found", "another app's events");
    let res = get(&app, "/apps/42/channels", &[]).await;
    assert_error(&res, 404, "not_found", "another app's channels");
}

/// Two nodes on one Redis: an event published on A reaches B's sockets
/// (but not the excluded one, which is on B), and channel counts seen from
/// either node include the other's sockets.
#[tokio::test]
async fn on_redis_events_and_channel_counts_span_nodes() {
    events_and_channel_counts_span_nodes(Shared::one().await).await;
}

/// The same on a Redis Cluster: events travel by sharded pub/sub, and the
/// counts stay exact (the channel query is `SPUBLISH`ed on the one shard
/// every node's bus subscribes it on).
#[tokio::test]
async fn on_a_cluster_events_and_channel_counts_span_nodes() {
    events_and_channel_counts_span_nodes(Shared::cluster().await).await;
}

async fn events_and_channel_counts_span_nodes(shared: Shared) {
    let node = || {
        spawn_app_with(|s| {
            shared.configure(s, Duration::from_millis(500));
        })
    };
    let (a, b) = (node().await, node().await);
    let mut on_a = a.subscriber("room.7").await;
    let mut on_b = b.subscriber("room.7").await;
    let mut excluded_on_b = b.subscriber("room.7").await;
    let _elsewhere = b.subscriber("lobby").await;

    let body = json!({"name": "note", "channel": "room.7", "data": "from A", "socket_id": excluded_on_b.socket_id});
    assert_eq!(trigger(&a, &body).await, (200, json!({})));
    assert_eq!(on_b.next_event("note").await.data, json!("from A"));
    assert_eq!(on_a.next_event("note").await.data, json!("from A"));
    let marker = json!({"name": "marker", "channel": "room.7", "data": "{}"});
    assert_eq!(trigger(&b, &marker).await.0, 200);
    next_is_marker(&mut excluded_on_b, "marker").await;
    next_is_marker(&mut on_a, "marker").await;

    for node in [&a, &b] {
        let res = get(
            node,
            "/apps/rollcall/channels/room.7",
            &[("info", "subscription_count")],
        )
        .await;
        assert_eq!(
            res,
            (200, json!({"occupied": true, "subscription_count": 3}))
        );
        let res = get(
            node,
            "/apps/rollcall/channels",
            &[("info", "subscription_count")],
        )
        .await;
        assert_eq!(
            res,
            (
                200,
                json!({"channels": {"lobby": {"subscription_count": 1}, "room.7": {"subscription_count": 3}}})
            )
        );
    }
    // A node that goes away stops counting.
    drop(on_a);
    b.shutdown().await;
    let deadline = tokio::time::Instant::now() + GUARD;
    loop {
        let res = get(&a, "/apps/rollcall/channels", &[]).await;
        if res == (200, json!({"channels": {}})) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{res:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn on_redis_a_store_outage_is_503() {
    let mut redis = RedisServer::start().await;
    let app = spawn_app_with(|s| {
        s.redis_url = Some(redis.url());
        s.redis.command_timeout = Duration::from_millis(500);
    })
    .await;
    let _client = app.subscriber("c").await;
    assert_eq!(get(&app, "/apps/rollcall/channels", &[]).await.0, 200);
    redis.stop().await;
    let res = trigger(&app, &json!({"name": "e", "channel": "c", "data": "x"})).await;
    assert_error(
        &res,
        503,
        "store_unavailable",
        "publish while Redis is down",
    );
    let res = get(&app, "/apps/rollcall/channels", &[]).await;
    assert_error(
        &res,
        503,
        "store_unavailable",
        "channels while Redis is down",
    );
    let res = get(&app, "/apps/rollcall/channels/c", &[]).await;
    assert_error(
        &res,
        503,
        "store_unavailable",
        "channel while Redis is down",
    );
}

/// A resharding moves a channel's slot to another master: Redis drops the
/// node's sharded subscription of it (`sunsubscribe`), and the bus must
/// notice, reconnect and subscribe it on its new master, or the channel's
/// sockets would hear nothing more.
#[tokio::test]
async fn on_a_cluster_a_channel_whose_slot_moves_keeps_its_subscribers() {
    let shared = Shared::cluster().await;
    let Shared::Cluster(cluster) = &shared else {
        unreachable!("a cluster")
    };
    let (a, b) = (
        spawn_app_with(|s| shared.configure(s, Duration::from_millis(500))).await,
        spawn_app_with(|s| shared.configure(s, Duration::from_millis(500))).await,
    );
    let mut on_b = b.subscriber("room.9").await;
    let first = json!({"name": "note", "channel": "room.9", "data": "before"});
    assert_eq!(trigger(&a, &first).await.0, 200);
    assert_eq!(on_b.next_event("note").await.data, json!("before"));

    cluster
        .move_slot_of(&rollcall::store::redis::bus_channel("room.9"))
        .await;
    // Sent until it arrives: the bus resubscribes on the slot's new
    // master a moment after Redis dropped the old subscription.
    let deadline = tokio::time::Instant::now() + GUARD;
    let mut n = 0;
    loop {
        n += 1;
        let after = json!({"name": "note", "channel": "room.9", "data": format!("after {n}")});
        assert_eq!(trigger(&a, &after).await.0, 200);
        if let Some(frame) = on_b.frame_within(Duration::from_millis(200)).await {
            assert_eq!(frame.event, "note");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "B's socket never heard the channel again after its slot moved"
        );
    }
}
