//! The app's connection quota across nodes (`ROLLCALL_MAX_APP_CONNECTIONS`):
//! past it a new connection gets `pusher:error` 4004 and a 4004 close, after
//! which pusher-js stops retrying (unlike a node's own capacity, 4100).

use std::time::Duration;

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;
use crate::redis_server::RedisServer;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects and reports how the server answered: `Ok(socket)` once
/// established, or `Err(close code)` after the error frame it sent.
async fn connect(app: &TestApp) -> Result<Socket, u16> {
    let (mut ws, _) = tokio_tungstenite::connect_async(app.ws_url("rollcall-key"))
        .await
        .expect("ws connects");
    let first = tokio::time::timeout(GUARD, ws.next())
        .await
        .expect("a first frame")
        .expect("open")
        .expect("a frame");
    let Message::Text(text) = first else {
        panic!("{first:?}")
    };
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    if v["event"] == "pusher:connection_established" {
        return Ok(ws);
    }
    assert_eq!(v["event"], "pusher:error", "{v}");
    let code = v["data"]["code"].as_u64().unwrap() as u16;
    loop {
        match tokio::time::timeout(GUARD, ws.next())
            .await
            .expect("closes")
        {
            Some(Ok(Message::Close(Some(frame)))) => {
                assert_eq!(u16::from(frame.code), code);
                return Err(code);
            }
            Some(Ok(_)) => {}
            other => panic!("expected a close, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn connections_past_the_apps_quota_across_nodes_get_4004() {
    let redis = RedisServer::start().await;
    let node = || {
        spawn_app_with(|s| {
            s.redis_url = Some(redis.url());
            s.max_app_connections = 3;
            s.node_ttl = Duration::from_secs(1);
        })
    };
    let (one, two) = (node().await, node().await);
    let _a = connect(&one).await.expect("within the quota");
    let _b = connect(&two).await.expect("within the quota");
    let _c = connect(&two).await.expect("within the quota");
    // Node one learns of node two's connections at its next renewal
    // (every 250 ms here); from then on it refuses.
    let refused = tokio::time::timeout(GUARD, async {
        loop {
            match connect(&one).await {
                Err(code) => return code,
                Ok(extra) => {
                    drop(extra);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })
    .await
    .expect("refused once the renewal counted node two");
    assert_eq!(refused, 4004);
    // Room again once a connection leaves.
    drop(_b);
    tokio::time::timeout(GUARD, async {
        while connect(&one).await.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("admitted again after a connection left");
}
