//! `POST /apps/{app_id}/users/{user_id}/terminate_connections`: every
//! socket signed in as the user, on every node, gets `pusher:error` 4009
//! and a 4009 close; nobody else's socket is touched.

use std::time::Duration;

use serde_json::json;

use crate::helpers::*;
use crate::pusher_api::post_signed;
use crate::redis_server::RedisServer;
use crate::signin::signed_in;

async fn terminate(app: &TestApp, user: &str) -> (u16, serde_json::Value) {
    let path = format!("/apps/rollcall/users/{user}/terminate_connections");
    post_signed(app, &path, "{}").await
}

#[track_caller]
fn assert_terminated(err: &Frame) {
    assert_eq!(err.data["code"], 4009, "{:?}", err.data);
}

async fn is_terminated(client: &mut PusherClient) {
    let err = client.next_event("pusher:error").await;
    assert_terminated(&err);
    let close = client.closed().await.expect("a close frame");
    assert_eq!(u16::from(close.code), 4009);
}

async fn is_alive(client: &mut PusherClient) {
    client
        .send(json!({"event": "pusher:ping", "data": {}}))
        .await;
    client.next_event("pusher:pong").await;
}

#[tokio::test]
async fn on_two_nodes_every_socket_of_the_user_and_only_those_are_closed() {
    let redis = RedisServer::start().await;
    let node = || spawn_app_with(|s| s.redis_url = Some(redis.url()));
    let (one, two) = (node().await, node().await);
    let sara = r#"{"id":"12"}"#;
    let mut tab_one = signed_in(&one, sara).await;
    let mut tab_two = signed_in(&two, sara).await;
    let mut other_user = signed_in(&two, r#"{"id":"13"}"#).await;
    let mut anonymous = one.subscriber("session.121").await;

    let (status, body) = terminate(&one, "12").await;
    assert_eq!((status, body), (200, json!({})));
    for tab in [&mut tab_one, &mut tab_two] {
        is_terminated(tab).await;
    }
    for client in [&mut other_user, &mut anonymous] {
        is_alive(client).await;
    }
    // Nobody signed in as that user: still `{}`.
    assert_eq!(terminate(&two, "nobody").await, (200, json!({})));
    one.shutdown().await;
    two.shutdown().await;
}

#[tokio::test]
async fn terminate_is_signed_and_checks_the_user_id() {
    let app = spawn_app().await;
    let mut tab = signed_in(&app, r#"{"id":"12"}"#).await;
    // Unsigned: 401, nothing happens.
    let res = app
        .http
        .post(app.url("/apps/rollcall/users/12/terminate_connections"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert!(tab.frame_within(Duration::from_millis(200)).await.is_none());
    // Another app: 404; an id no user can have: 400.
    let (status, _) = post_signed(&app, "/apps/other/users/12/terminate_connections", "{}").await;
    assert_eq!(status, 404);
    let long = "x".repeat(129);
    assert_eq!(terminate(&app, &long).await.0, 400);
    is_alive(&mut tab).await;
    assert_eq!(terminate(&app, "12").await.0, 200);
    is_terminated(&mut tab).await;
    app.shutdown().await;
}
