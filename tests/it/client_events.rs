//! Client events (`ROLLCALL_CLIENT_EVENTS=on`): a subscriber of a private
//! channel sends `client-*` to the channel's other subscribers, on every
//! node, never to itself; refusals for servers without them, public
//! channels and channels the socket is not on; 4301 past 10 a second.

use std::time::Duration;

use serde_json::json;

use crate::helpers::*;
use crate::redis_server::RedisServer;
use rollcall::pusher::auth::sign_channel;

const CHANNEL: &str = "private-chat.1";

async fn joined(app: &TestApp, channel: &str) -> PusherClient {
    let mut client = PusherClient::connect(&app.ws_url("rollcall-key")).await;
    let sig = sign_channel(APP_SECRET, &client.socket_id, channel, None);
    client
        .send(json!({"event": "pusher:subscribe", "data": {"channel": channel, "auth": format!("rollcall-key:{sig}")}}))
        .await;
    let ok = client
        .next_event("pusher_internal:subscription_succeeded")
        .await;
    assert_eq!(ok.channel.as_deref(), Some(channel));
    client
}

fn whisper(n: usize) -> serde_json::Value {
    json!({"event": "client-typing", "channel": CHANNEL, "data": {"user": "Sara", "n": n}})
}

async fn relays_to_the_others_never_back(a: &mut PusherClient, b: &mut PusherClient) {
    a.send(whisper(1)).await;
    let got = b.next_event("client-typing").await;
    assert_eq!(got.channel.as_deref(), Some(CHANNEL));
    assert_eq!(got.data, json!({"user": "Sara", "n": 1}));
    assert!(
        a.frame_within(Duration::from_millis(300)).await.is_none(),
        "the sender does not get its own event"
    );
}

#[tokio::test]
async fn a_client_event_reaches_the_other_subscribers_only() {
    let app = spawn_app_with(|s| s.client_events = true).await;
    let mut a = joined(&app, CHANNEL).await;
    let mut b = joined(&app, CHANNEL).await;
    relays_to_the_others_never_back(&mut a, &mut b).await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_client_event_crosses_nodes() {
    let redis = RedisServer::start().await;
    let node = || {
        spawn_app_with(|s| {
            s.redis_url = Some(redis.url());
            s.client_events = true;
        })
    };
    let (one, two) = (node().await, node().await);
    let mut a = joined(&one, CHANNEL).await;
    let mut b = joined(&two, CHANNEL).await;
    let mut c = joined(&one, CHANNEL).await;
    relays_to_the_others_never_back(&mut a, &mut b).await;
    assert_eq!(c.next_event("client-typing").await.data["n"], 1);
    one.shutdown().await;
    two.shutdown().await;
}

#[tokio::test]
async fn refusals_are_errors_and_the_socket_stays() {
    // Off by default.
    let off = spawn_app().await;
    let mut a = joined(&off, CHANNEL).await;
    a.send(whisper(1)).await;
    let err = a.next_event("pusher:error").await;
    assert!(
        err.data["message"]
            .as_str()
            .unwrap()
            .contains("not enabled"),
        "{:?}",
        err.data
    );
    off.shutdown().await;

    let app = spawn_app_with(|s| s.client_events = true).await;
    let mut a = joined(&app, CHANNEL).await;
    let mut public = PusherClient::connect(&app.ws_url("rollcall-key")).await;
    public.subscribe("session.121").await;
    let _snapshot_or_nothing = public.frame_within(Duration::from_millis(200)).await;
    public
        .send(json!({"event": "client-x", "channel": "session.121", "data": {}}))
        .await;
    let err = public.next_event("pusher:error").await;
    assert!(
        err.data["message"].as_str().unwrap().contains("private"),
        "{:?}",
        err.data
    );
    a.send(json!({"event": "client-x", "channel": "private-other", "data": {}}))
        .await;
    let err = a.next_event("pusher:error").await;
    assert!(
        err.data["message"]
            .as_str()
            .unwrap()
            .contains("not subscribed"),
        "{:?}",
        err.data
    );
    a.send(json!({"event": "client-x", "data": {}})).await;
    let err = a.next_event("pusher:error").await;
    assert!(
        err.data["message"].as_str().unwrap().contains("channel"),
        "{:?}",
        err.data
    );
    // Still usable.
    a.send(json!({"event": "pusher:ping", "data": {}})).await;
    a.next_event("pusher:pong").await;
    app.shutdown().await;
}

#[tokio::test]
async fn more_than_ten_a_second_closes_with_4301() {
    let app = spawn_app_with(|s| s.client_events = true).await;
    let mut a = joined(&app, CHANNEL).await;
    let mut b = joined(&app, CHANNEL).await;
    for n in 0..11 {
        a.send(whisper(n)).await;
    }
    let err = a.next_event("pusher:error").await;
    assert_eq!(err.data["code"], 4301);
    let close = a.closed().await.expect("a close frame");
    assert_eq!(u16::from(close.code), 4301);
    let mut relayed = 0;
    while let Some(f) = b.frame_within(Duration::from_millis(300)).await {
        if f.event == "client-typing" {
            relayed += 1;
        }
    }
    assert_eq!(relayed, 10, "the first ten went through");
    assert!(
        app.metrics()
            .await
            .contains(r#"rollcall_ws_closed_total{reason="client_event_rate"} 1"#)
    );
    app.shutdown().await;
}
