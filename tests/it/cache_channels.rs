//! Cache channels and encrypted channels: the last event (HTTP API or
//! client event) replayed to a new subscriber right after
//! `subscription_succeeded`, or `pusher:cache_miss`, on one node and across
//! two on one Redis; the store-side cache on both stores; encrypted
//! channels relayed as they are, their client events refused, and the HTTP
//! API's one-channel rule for them.

use std::time::Duration;

use rollcall::pusher::auth::sign_channel;
use rollcall::store::{EventCache, MemoryEventCache, RedisOptions, RedisStore};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::helpers::*;
use crate::pusher_api::trigger;
use crate::redis_server::RedisServer;
use crate::store_suite::Recorder;

/// A client subscribed to `channel` (signed when it is private), with the
/// frame that followed `subscription_succeeded`.
async fn subscribed(app: &TestApp, channel: &str) -> (PusherClient, Frame) {
    let mut client = PusherClient::connect(&app.ws_url("rollcall-key")).await;
    let mut data = json!({ "channel": channel });
    if channel.starts_with("private-") || channel.starts_with("presence-") {
        let sig = sign_channel(APP_SECRET, &client.socket_id, channel, None);
        data["auth"] = json!(format!("rollcall-key:{sig}"));
    }
    client
        .send(json!({"event": "pusher:subscribe", "data": data}))
        .await;
    let ok = client
        .next_event("pusher_internal:subscription_succeeded")
        .await;
    assert_eq!(ok.channel.as_deref(), Some(channel));
    let first = client.next_frame().await.expect("a frame after succeeded");
    (client, first)
}

#[track_caller]
fn assert_miss(frame: &Frame, channel: &str) {
    assert_eq!(frame.event, "pusher:cache_miss", "{frame:?}");
    assert_eq!(frame.channel.as_deref(), Some(channel));
    assert_eq!(frame.data, Value::Null, "a miss carries no data");
}

async fn publish(app: &TestApp, channel: &str, name: &str, data: &Value) {
    let body = json!({"name": name, "channel": channel, "data": data.to_string()});
    let (status, answer) = trigger(app, &body).await;
    assert_eq!(status, 200, "{answer}");
}

#[tokio::test]
async fn a_new_subscriber_gets_the_last_event_or_a_miss() {
    let app = spawn_app().await;
    for channel in [
        "cache-weather",
        "private-cache-room.1",
        "private-encrypted-cache-x",
    ] {
        let (_, first) = subscribed(&app, channel).await;
        assert_miss(&first, channel);

        publish(&app, channel, "update", &json!({"n": 1})).await;
        publish(&app, channel, "update", &json!({"n": 2})).await;
        let (mut late, first) = subscribed(&app, channel).await;
        assert_eq!(first.event, "update");
        assert_eq!(first.channel.as_deref(), Some(channel));
        assert_eq!(first.data, json!({"n": 2}), "only the last one");
        assert!(
            late.frame_within(Duration::from_millis(200))
                .await
                .is_none()
        );
    }
    // An ordinary channel is never replayed, nor told of a miss.
    publish(&app, "session.999", "update", &json!({})).await;
    let mut plain = app.subscriber("session.999").await;
    assert!(
        plain
            .frame_within(Duration::from_millis(200))
            .await
            .is_none()
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_client_event_on_a_cache_channel_is_replayed_too() {
    let app = spawn_app_with(|s| s.client_events = true).await;
    let channel = "private-cache-chat.1";
    let (mut sender, first) = subscribed(&app, channel).await;
    assert_miss(&first, channel);
    sender
        .send(json!({"event": "client-typing", "channel": channel, "data": {"who": "Sara"}}))
        .await;
    // The relay has kept it once another subscriber can see it.
    let deadline = tokio::time::Instant::now() + GUARD;
    loop {
        let (_, first) = subscribed(&app, channel).await;
        if first.event == "client-typing" {
            assert_eq!(first.data, json!({"who": "Sara"}));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never cached");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.shutdown().await;
}

#[tokio::test]
async fn on_redis_the_last_event_is_replayed_on_another_node() {
    let redis = RedisServer::start().await;
    let node = || spawn_app_with(|s| s.redis_url = Some(redis.url()));
    let (one, two) = (node().await, node().await);
    let channel = "cache-scores";
    let (_, first) = subscribed(&two, channel).await;
    assert_miss(&first, channel);
    publish(&one, channel, "score", &json!({"home": 1})).await;
    for node in [&one, &two] {
        let (_, first) = subscribed(node, channel).await;
        assert_eq!(first.event, "score");
        assert_eq!(first.data, json!({"home": 1}));
    }
    one.shutdown().await;
    two.shutdown().await;
}

/// The store-side cache itself, on both implementations.
#[tokio::test]
async fn both_event_caches_keep_the_last_event_until_it_expires() {
    let server = RedisServer::start().await;
    let redis = RedisStore::connect(&server.url(), Recorder::new(), RedisOptions::default())
        .await
        .expect("RedisStore connects");
    let memory = MemoryEventCache::default();
    let caches: [(&str, &dyn EventCache); 2] = [("memory", &memory), ("redis", &redis)];
    for (kind, cache) in caches {
        let long = Duration::from_secs(1800);
        assert_eq!(cache.last_event("cache-a").await.unwrap(), None, "{kind}");
        for frame in ["one", "two"] {
            cache
                .put_last_event("cache-a", &Utf8Bytes::from(frame), long)
                .await
                .unwrap();
        }
        let last = cache.last_event("cache-a").await.unwrap();
        assert_eq!(last.as_deref(), Some("two"), "{kind}");
        assert_eq!(cache.last_event("cache-b").await.unwrap(), None, "{kind}");
        cache
            .put_last_event("cache-c", &Utf8Bytes::from("x"), Duration::from_millis(50))
            .await
            .unwrap();
        assert!(
            cache.last_event("cache-c").await.unwrap().is_some(),
            "{kind}"
        );
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(cache.last_event("cache-c").await.unwrap(), None, "{kind}");
    }
    // The key carries the channel as its hash tag and expires in Redis.
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg("rollcall:cache:{cache-a}")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((1..=1_800_000).contains(&ttl), "PTTL {ttl}");
}

#[tokio::test]
async fn encrypted_channels_need_private_auth_and_are_relayed_as_they_are() {
    let app = spawn_app_with(|s| s.client_events = true).await;
    let channel = "private-encrypted-notes";
    // Unsigned: refused like any private channel.
    let mut stranger = PusherClient::connect(&app.ws_url("rollcall-key")).await;
    stranger
        .send(json!({"event": "pusher:subscribe", "data": {"channel": channel}}))
        .await;
    assert_eq!(stranger.next_event("pusher:error").await.data["code"], 4009);

    let mut reader = PusherClient::connect(&app.ws_url("rollcall-key")).await;
    let sig = sign_channel(APP_SECRET, &reader.socket_id, channel, None);
    reader
        .send(json!({"event": "pusher:subscribe", "data": {"channel": channel, "auth": format!("rollcall-key:{sig}")}}))
        .await;
    reader
        .next_event("pusher_internal:subscription_succeeded")
        .await;
    // What the app encrypted arrives untouched.
    let sealed = json!({"nonce": "bm9uY2U=", "ciphertext": "c2VhbGVk"});
    publish(&app, channel, "note", &sealed).await;
    assert_eq!(reader.next_event("note").await.data, sealed);

    // Client events on it are refused; the socket stays.
    reader
        .send(json!({"event": "client-x", "channel": channel, "data": {}}))
        .await;
    let err = reader.next_event("pusher:error").await;
    assert!(
        err.data["message"].as_str().unwrap().contains("encrypted"),
        "{:?}",
        err.data
    );
    reader
        .send(json!({"event": "pusher:ping", "data": {}}))
        .await;
    reader.next_event("pusher:pong").await;

    // One event to several channels is refused when any is encrypted.
    let body = json!({"name": "n", "channels": [channel, "session.1"], "data": "{}"});
    let (status, answer) = trigger(&app, &body).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("multiple channels"),
        "{answer}"
    );
    let body = json!({"name": "n", "channels": ["session.1", "session.2"], "data": "{}"});
    assert_eq!(trigger(&app, &body).await.0, 200);
    app.shutdown().await;
}
