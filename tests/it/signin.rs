//! `pusher:signin` (Pusher's user authentication): always answered, with
//! `pusher:signin_success` or a 4009 error and close; a signed-in socket
//! gets events sent to its user (`#server-to-user-<id>`, Pusher's
//! `sendToUser`) on any node, and such channels are never listed.

use std::time::Duration;

use serde_json::json;

use crate::helpers::*;
use crate::pusher_api::trigger;
use crate::redis_server::RedisServer;
use rollcall::pusher::auth::sign_user;

const USER_DATA: &str = r#"{"id":"12","user_info":{"name":"Sara Ali"}}"#;

/// Sends a `pusher:signin` for `user_data`, signed as the app's user-auth
/// endpoint would sign it for this socket.
async fn send_signin(client: &mut PusherClient, user_data: &str) {
    let auth = format!(
        "rollcall-key:{}",
        sign_user(APP_SECRET, &client.socket_id, user_data)
    );
    client
        .send(json!({"event": "pusher:signin", "data": {"auth": auth, "user_data": user_data}}))
        .await;
}

pub async fn signed_in(app: &TestApp, user_data: &str) -> PusherClient {
    let mut client = PusherClient::connect(&app.ws_url("rollcall-key")).await;
    send_signin(&mut client, user_data).await;
    let ok = client.next_event("pusher:signin_success").await;
    // `data` is decoded once: its `user_data` is the JSON text as signed.
    assert_eq!(ok.data["user_data"], user_data);
    client
}

#[tokio::test]
async fn a_signed_in_user_gets_events_sent_to_them_on_any_node() {
    let redis = RedisServer::start().await;
    let node = || spawn_app_with(|s| s.redis_url = Some(redis.url()));
    let (one, two) = (node().await, node().await);
    let mut tab_one = signed_in(&one, USER_DATA).await;
    let mut tab_two = signed_in(&two, USER_DATA).await;
    let mut someone_else = signed_in(&one, r#"{"id":"13"}"#).await;

    let (status, body) = trigger(
        &two,
        &json!({"name": "note", "channel": "#server-to-user-12", "data": "{\"text\":\"hi\"}"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for tab in [&mut tab_one, &mut tab_two] {
        let got = tab.next_event("note").await;
        assert_eq!(got.channel.as_deref(), Some("#server-to-user-12"));
        assert_eq!(got.data, json!({"text": "hi"}));
    }
    assert!(
        someone_else
            .frame_within(Duration::from_millis(300))
            .await
            .is_none()
    );
    // The server's own channels are not listed.
    let (status, body) = crate::pusher_api::get_channels(&one).await;
    assert_eq!(status, 200);
    assert_eq!(body["channels"], json!({}), "{body}");
    one.shutdown().await;
    two.shutdown().await;
}

#[tokio::test]
async fn a_bad_signin_is_answered_4009_and_closed() {
    let app = spawn_app().await;
    for (auth, user_data) in [
        ("rollcall-key:00", USER_DATA.to_string()),
        ("", USER_DATA.to_string()),
        ("nonsense", USER_DATA.to_string()),
    ] {
        let mut client = PusherClient::connect(&app.ws_url("rollcall-key")).await;
        client
            .send(json!({"event": "pusher:signin", "data": {"auth": auth, "user_data": user_data}}))
            .await;
        let err = client.next_event("pusher:error").await;
        assert_eq!(err.data["code"], 4009, "{:?}", err.data);
        assert_eq!(u16::from(client.closed().await.unwrap().code), 4009);
    }
    // Signed, but no usable id.
    for user_data in [
        r#"{"name":"x"}"#,
        r#"{"id":12}"#,
        "not json",
        r#"{"id":""}"#,
    ] {
        let mut client = PusherClient::connect(&app.ws_url("rollcall-key")).await;
        send_signin(&mut client, user_data).await;
        let err = client.next_event("pusher:error").await;
        assert_eq!(err.data["code"], 4009, "{user_data}: {:?}", err.data);
        assert!(
            err.data["message"].as_str().unwrap().contains("id"),
            "{:?}",
            err.data
        );
    }
    app.shutdown().await;
}

#[tokio::test]
async fn signing_in_again_moves_the_socket_to_the_new_user() {
    let app = spawn_app().await;
    let mut client = signed_in(&app, USER_DATA).await;
    send_signin(&mut client, r#"{"id":"99"}"#).await;
    client.next_event("pusher:signin_success").await;
    for (user, expect) in [("12", false), ("99", true)] {
        let (status, _) = trigger(
            &app,
            &json!({"name": "n", "channel": format!("#server-to-user-{user}"), "data": "{}"}),
        )
        .await;
        assert_eq!(status, 200);
        let got = client.frame_within(Duration::from_millis(300)).await;
        assert_eq!(got.is_some(), expect, "user {user}: {got:?}");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_malformed_signin_is_answered_4009_and_closed() {
    let app = spawn_app().await;
    let auth = "rollcall-key:00";
    for data in [
        json!(null),
        json!("not an object"),
        json!(42),
        json!({}),
        json!({"auth": auth}),
        json!({"user_data": USER_DATA}),
        json!({"auth": 12, "user_data": USER_DATA}),
        json!({"auth": auth, "user_data": {"id": "12"}}),
    ] {
        let mut client = PusherClient::connect(&app.ws_url("rollcall-key")).await;
        client
            .send(json!({"event": "pusher:signin", "data": data}))
            .await;
        let err = client.next_event("pusher:error").await;
        assert_eq!(err.data["code"], 4009, "{data}: {:?}", err.data);
        let close = client.closed().await.expect("a close frame");
        assert_eq!(u16::from(close.code), 4009, "{data}");
    }
    // No data at all.
    let mut client = PusherClient::connect(&app.ws_url("rollcall-key")).await;
    client.send(json!({"event": "pusher:signin"})).await;
    assert_eq!(client.next_event("pusher:error").await.data["code"], 4009);
    app.shutdown().await;
}

#[tokio::test]
async fn signed_but_unusable_user_data_is_closed_too() {
    let app = spawn_app().await;
    for user_data in ["not json", r#"{"id":12}"#, "[]", r#"{"id":"a b"}"#] {
        let mut client = PusherClient::connect(&app.ws_url("rollcall-key")).await;
        send_signin(&mut client, user_data).await;
        assert_eq!(client.next_event("pusher:error").await.data["code"], 4009);
        let close = client.closed().await.expect("a close frame");
        assert_eq!(u16::from(close.code), 4009, "{user_data}");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_connection_not_signed_in_within_the_timeout_is_closed_4009() {
    let app = spawn_app_with(|s| s.signin_timeout = Some(Duration::from_millis(300))).await;
    let started = tokio::time::Instant::now();
    let mut idle = PusherClient::connect(&app.ws_url("rollcall-key")).await;
    // Activity does not count as signing in.
    idle.send(json!({"event": "pusher:ping", "data": {}})).await;
    idle.next_event("pusher:pong").await;
    let err = idle.next_event("pusher:error").await;
    assert_eq!(err.data["code"], 4009, "{:?}", err.data);
    assert_eq!(u16::from(idle.closed().await.unwrap().code), 4009);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(300), "{waited:?}");

    // Signed in in time: kept past the timeout.
    let mut signed = signed_in(&app, USER_DATA).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    signed
        .send(json!({"event": "pusher:ping", "data": {}}))
        .await;
    signed.next_event("pusher:pong").await;
    app.shutdown().await;
}

#[tokio::test]
async fn the_own_user_channel_is_confirmed_as_pusher_js_asks_and_no_other() {
    let app = spawn_app().await;
    let mut client = signed_in(&app, USER_DATA).await;
    // pusher-js subscribes to its user's channel after signin_success.
    client.subscribe("#server-to-user-12").await;
    let (status, _) = trigger(
        &app,
        &json!({"name": "note", "channel": "#server-to-user-12", "data": "{}"}),
    )
    .await;
    assert_eq!(status, 200);
    client.next_event("note").await;
    assert!(
        client
            .frame_within(Duration::from_millis(200))
            .await
            .is_none(),
        "still delivered once"
    );
    // Someone else's, or before signing in: refused, the socket stays.
    for (mut c, channel) in [
        (signed_in(&app, USER_DATA).await, "#server-to-user-13"),
        (
            PusherClient::connect(&app.ws_url("rollcall-key")).await,
            "#server-to-user-12",
        ),
    ] {
        c.send(json!({"event": "pusher:subscribe", "data": {"channel": channel}}))
            .await;
        assert_eq!(c.next_event("pusher:error").await.data["code"], 4009);
        c.send(json!({"event": "pusher:ping", "data": {}})).await;
        c.next_event("pusher:pong").await;
    }
    app.shutdown().await;
}
