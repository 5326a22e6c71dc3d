//! The Pusher endpoint as the whole server wires it, and shutdown.

use crate::helpers::*;

#[tokio::test]
async fn an_unknown_app_key_is_closed_with_4001() {
    let app = spawn_app().await;
    let (mut ws, _) = tokio_tungstenite::connect_async(app.ws_url("wrong-key"))
        .await
        .unwrap();
    use futures_util::StreamExt;
    let mut code = None;
    while let Some(Ok(msg)) = tokio::time::timeout(GUARD, ws.next()).await.unwrap() {
        if let tokio_tungstenite::tungstenite::Message::Close(Some(frame)) = msg {
            code = Some(u16::from(frame.code));
            break;
        }
    }
    assert_eq!(code, Some(4001));
}

#[tokio::test]
async fn health_readiness_and_the_dashboard() {
    let app = spawn_app().await;
    let res = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let res = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap()["store"],
        "memory"
    );
    let res = app.http.get(app.url("/")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("<html"));
    let res = app.http.get(app.url("/no-such-page")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap()["error"],
        "not_found"
    );
}

#[tokio::test]
async fn shutdown_closes_sockets_with_4200_so_clients_reconnect() {
    let app = spawn_app().await;
    let mut a = app.subscriber(CHANNEL).await;
    let mut b = app.subscriber("session.7").await;
    let shutdown = tokio::spawn(app.shutdown());
    for client in [&mut a, &mut b] {
        let frame = client.closed().await.expect("a close frame");
        assert_eq!(u16::from(frame.code), 4200);
    }
    shutdown.await.unwrap();
}
