//! End-to-end tests of the Pusher endpoint: a real axum server on
//! 127.0.0.1:0 and tokio-tungstenite clients. Timeouts are guards only;
//! every wait is on an observable event (a frame, a close, the tracker).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::auth::sign_channel;
use super::client::{ServerEvent, watch};
use super::frame;
use super::{ChannelName, Hub, NoHook, PusherConfig, PusherState, SubscribeHook, routes};

const KEY: &str = "test-key";
const SECRET: &str = "test-secret";
const GUARD: Duration = Duration::from_secs(10);

async fn guard<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(GUARD, f).await.expect("timed out")
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

struct TestServer {
    addr: SocketAddr,
    state: PusherState,
}

fn config() -> PusherConfig {
    PusherConfig::new(KEY, SECRET)
}

async fn spawn(config: PusherConfig) -> TestServer {
    spawn_with(config, |_| Arc::new(NoHook)).await
}

/// Starts a server; `hook` gets the server's hub (so a hook can publish).
async fn spawn_with(
    config: PusherConfig,
    hook: impl FnOnce(Hub) -> Arc<dyn SubscribeHook>,
) -> TestServer {
    let hub = Hub::new();
    let state = PusherState::new(config, hub.clone(), hook(hub));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = routes(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    TestServer { addr, state }
}

impl TestServer {
    async fn raw(&self, path_and_query: &str) -> Ws {
        let url = format!("ws://{}{path_and_query}", self.addr);
        guard(tokio_tungstenite::connect_async(url))
            .await
            .unwrap()
            .0
    }

    /// A connected client that has read `connection_established`.
    async fn client(&self) -> Client {
        let mut ws = self
            .raw(&format!("/app/{KEY}?protocol=7&client=js&version=8.4.0"))
            .await;
        let established = next_event(&mut ws).await;
        assert_eq!(established.event, "pusher:connection_established");
        let data: Value = serde_json::from_str(&established.data).unwrap();
        let socket_id = data["socket_id"].as_str().unwrap().to_owned();
        Client { ws, socket_id }
    }

    fn publish(&self, channel: &str, event: &str, data: &str) -> usize {
        self.state
            .hub
            .publish(channel, frame::event(event, Some(channel), data), None)
    }
}

async fn next_event(ws: &mut Ws) -> ServerEvent {
    loop {
        match guard(ws.next()).await {
            Some(Ok(Message::Text(t))) => return ServerEvent::parse(&t).expect("pusher frame"),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// Reads until the server's close frame and the end of the stream; returns
/// the close code. Text frames
/// before it are returned too, for assertions.
async fn close_code(ws: &mut Ws) -> (u16, Vec<ServerEvent>) {
    let mut before = Vec::new();
    loop {
        match guard(ws.next()).await {
            Some(Ok(Message::Text(t))) => before.push(ServerEvent::parse(&t).unwrap()),
            Some(Ok(Message::Close(Some(f)))) => {
                // Complete the handshake: our reply goes out on this read,
                // then the server ends the connection.
                while let Some(Ok(_)) = guard(ws.next()).await {}
                return (u16::from(f.code), before);
            }
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

struct Client {
    ws: Ws,
    socket_id: String,
}

impl Client {
    async fn send(&mut self, v: Value) {
        guard(self.ws.send(Message::text(v.to_string())))
            .await
            .unwrap();
    }

    async fn next(&mut self) -> ServerEvent {
        next_event(&mut self.ws).await
    }

    async fn subscribe(&mut self, channel: &str) -> ServerEvent {
        self.send(json!({"event":"pusher:subscribe","data":{"channel":channel}}))
            .await;
        self.next().await
    }

    /// Round-trips a ping: everything sent before it has been processed.
    async fn barrier(&mut self) {
        self.send(json!({"event":"pusher:ping","data":{}})).await;
        let pong = self.next().await;
        assert_eq!(pong.event, "pusher:pong", "{pong:?}");
    }

    async fn close_code(&mut self) -> (u16, Vec<ServerEvent>) {
        close_code(&mut self.ws).await
    }
}

fn error_code(e: &ServerEvent) -> Value {
    assert_eq!(e.event, "pusher:error", "{e:?}");
    serde_json::from_str::<Value>(&e.data).unwrap()["code"].clone()
}

fn succeeded(e: &ServerEvent, channel: &str) {
    assert_eq!(e.event, "pusher_internal:subscription_succeeded", "{e:?}");
    assert_eq!(e.channel.as_deref(), Some(channel));
    assert_eq!(e.data, "{}");
}

/// Sends a snapshot and a second frame; optionally publishes an update to
/// the channel while "computing" the snapshot.
struct SnapshotHook {
    hub: Option<Hub>,
}

#[async_trait]
impl SubscribeHook for SnapshotHook {
    async fn after_subscribe(&self, channel: &ChannelName) -> Vec<Utf8Bytes> {
        let ch = channel.as_str();
        if let Some(hub) = &self.hub {
            let sent = hub.publish(
                ch,
                frame::event("attendance.updated", Some(ch), "raced"),
                None,
            );
            assert_eq!(sent, 1, "the socket is registered before the hook runs");
            tokio::task::yield_now().await;
        }
        vec![
            frame::event("attendance.snapshot", Some(ch), r#"{"participants":[]}"#),
            frame::event("after.snapshot", Some(ch), "{}"),
        ]
    }
}

#[tokio::test]
async fn connection_established_has_the_wire_shape() {
    let server = spawn(config()).await;
    let mut ws = server.raw(&format!("/app/{KEY}?protocol=7")).await;
    let Some(Ok(Message::Text(text))) = guard(ws.next()).await else {
        panic!("no first frame");
    };
    let frame: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(frame["event"], "pusher:connection_established");
    let data: Value =
        serde_json::from_str(frame["data"].as_str().expect("data is a string")).unwrap();
    let socket_id = data["socket_id"].as_str().unwrap();
    let (a, b) = socket_id.split_once('.').unwrap();
    assert!(!a.is_empty() && !b.is_empty());
    assert!(
        a.bytes().chain(b.bytes()).all(|c| c.is_ascii_digit()),
        "{socket_id}"
    );
    assert_eq!(data["activity_timeout"], 120);
}

#[tokio::test]
async fn ping_gets_pong() {
    let server = spawn(config()).await;
    let mut c = server.client().await;
    c.send(json!({"event":"pusher:ping","data":{}})).await;
    let pong = c.next().await;
    assert_eq!(
        (pong.event.as_str(), pong.data.as_str()),
        ("pusher:pong", "{}")
    );
}

#[tokio::test]
async fn subscribe_replies_succeeded_then_hook_frames_in_order() {
    let server = spawn_with(config(), |_| Arc::new(SnapshotHook { hub: None })).await;
    let mut c = server.client().await;
    succeeded(&c.subscribe("session.121").await, "session.121");
    assert_eq!(c.next().await.event, "attendance.snapshot");
    assert_eq!(c.next().await.event, "after.snapshot");
    assert_eq!(server.state.hub.subscription_count("session.121"), 1);
}

#[tokio::test]
async fn update_published_while_the_hook_runs_arrives_after_the_snapshot() {
    let server = spawn_with(config(), |hub| Arc::new(SnapshotHook { hub: Some(hub) })).await;
    let mut c = server.client().await;
    succeeded(&c.subscribe("session.7").await, "session.7");
    assert_eq!(c.next().await.event, "attendance.snapshot");
    assert_eq!(c.next().await.event, "after.snapshot");
    let update = c.next().await;
    assert_eq!(
        (update.event.as_str(), update.data.as_str()),
        ("attendance.updated", "raced")
    );
}

#[tokio::test]
async fn publish_reaches_subscribers_once_and_honours_except() {
    let server = spawn(config()).await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    let mut other = server.client().await;
    succeeded(&a.subscribe("session.1").await, "session.1");
    succeeded(&b.subscribe("session.1").await, "session.1");
    // Subscribing twice answers again but registers once.
    succeeded(&a.subscribe("session.1").await, "session.1");
    succeeded(&other.subscribe("session.2").await, "session.2");
    assert_eq!(server.state.hub.subscription_count("session.1"), 2);

    assert_eq!(
        server.publish("session.1", "attendance.updated", r#"{"n":1}"#),
        2
    );
    let except = super::SocketId::parse(&b.socket_id).unwrap();
    let f = frame::event("attendance.updated", Some("session.1"), r#"{"n":2}"#);
    assert_eq!(server.state.hub.publish("session.1", f, Some(&except)), 1);

    for (client, expected) in [
        (&mut a, vec![r#"{"n":1}"#, r#"{"n":2}"#]),
        (&mut b, vec![r#"{"n":1}"#]),
    ] {
        for data in expected {
            let e = client.next().await;
            assert_eq!(e.event, "attendance.updated");
            assert_eq!(e.channel.as_deref(), Some("session.1"));
            assert_eq!(e.data, data);
        }
        // Nothing else was queued: the next frame is the barrier's pong.
        client.barrier().await;
    }
    other.barrier().await;
}

#[tokio::test]
async fn unsubscribed_sockets_get_nothing_and_channel_entries_go_away() {
    let server = spawn(config()).await;
    let hub = &server.state.hub;
    let mut a = server.client().await;
    let mut b = server.client().await;
    succeeded(&a.subscribe("session.1").await, "session.1");
    succeeded(&b.subscribe("session.1").await, "session.1");
    succeeded(&b.subscribe("session.9").await, "session.9");
    assert_eq!((hub.channel_count(), hub.socket_count()), (2, 2));

    a.send(json!({"event":"pusher:unsubscribe","data":{"channel":"session.1"}}))
        .await;
    a.barrier().await;
    assert_eq!(server.publish("session.1", "x", "1"), 1);
    assert_eq!(b.next().await.data, "1");
    a.barrier().await; // a got nothing before its pong

    b.send(json!({"event":"pusher:unsubscribe","data":{"channel":"session.1"}}))
        .await;
    b.barrier().await;
    assert_eq!(
        hub.channel_count(),
        1,
        "session.1 removed with its last subscriber"
    );

    // Disconnect: b's remaining channel goes too.
    b.ws.close(None).await.unwrap();
    while let Some(Ok(_)) = guard(b.ws.next()).await {}
    a.ws.close(None).await.unwrap();
    while let Some(Ok(_)) = guard(a.ws.next()).await {}
    server.state.tracker.close();
    guard(server.state.tracker.wait()).await;
    assert_eq!((hub.channel_count(), hub.socket_count()), (0, 0));
    assert_eq!(server.state.connection_count(), 0);
}

#[tokio::test]
async fn unknown_app_key_is_closed_with_4001() {
    let server = spawn(config()).await;
    let mut ws = server.raw("/app/nope?protocol=7").await;
    let (code, before) = close_code(&mut ws).await;
    assert_eq!(code, 4001);
    assert_eq!(before.len(), 1);
    assert_eq!(error_code(&before[0]), 4001);
}

#[tokio::test]
async fn protocol_parameter_is_checked() {
    let server = spawn(config()).await;
    for (query, expected) in [
        ("", 4008),
        ("?client=js", 4008),
        ("?protocol=seven", 4006),
        ("?protocol=", 4006),
        ("?protocol=4", 4007),
        ("?protocol=8", 4007),
    ] {
        let mut ws = server.raw(&format!("/app/{KEY}{query}")).await;
        let (code, before) = close_code(&mut ws).await;
        assert_eq!(code, expected, "{query}");
        assert_eq!(error_code(&before[0]), expected, "{query}");
    }
    for ok in ["5", "6", "7"] {
        let mut ws = server.raw(&format!("/app/{KEY}?protocol={ok}")).await;
        assert_eq!(
            next_event(&mut ws).await.event,
            "pusher:connection_established"
        );
    }
}

#[tokio::test]
async fn private_channels_need_a_valid_signature() {
    let server = spawn(config()).await;
    let mut c = server.client().await;
    let bad = format!("{KEY}:{}", sign_channel(SECRET, "1.1", "private-x", None));
    c.send(json!({"event":"pusher:subscribe","data":{"channel":"private-x","auth":bad}}))
        .await;
    assert_eq!(error_code(&c.next().await), 4009);
    c.send(json!({"event":"pusher:subscribe","data":{"channel":"private-x"}}))
        .await;
    assert_eq!(error_code(&c.next().await), 4009);
    assert_eq!(server.state.hub.subscription_count("private-x"), 0);

    let good = format!(
        "{KEY}:{}",
        sign_channel(SECRET, &c.socket_id, "private-x", None)
    );
    c.send(json!({"event":"pusher:subscribe","data":{"channel":"private-x","auth":good}}))
        .await;
    succeeded(&c.next().await, "private-x");
    assert_eq!(server.publish("private-x", "e", "d"), 1);
    assert_eq!(c.next().await.event, "e");
}

#[tokio::test]
async fn bad_requests_get_errors_and_the_socket_stays_open() {
    let server = spawn(config()).await;
    let mut c = server.client().await;
    let cases = [
        json!({"event":"pusher:subscribe","data":{"channel":"bad channel!"}}),
        json!({"event":"pusher:subscribe","data":{"channel":"a".repeat(201)}}),
        json!({"event":"pusher:subscribe","data":{}}),
        json!({"event":"client-typing","channel":"private-x","data":{}}),
    ];
    for case in cases {
        c.send(case.clone()).await;
        assert_eq!(error_code(&c.next().await), Value::Null, "{case}");
    }
    for text in ["{not json", "[1,2]", r#"{"event":42}"#] {
        guard(c.ws.send(Message::text(text))).await.unwrap();
        assert_eq!(error_code(&c.next().await), Value::Null, "{text}");
    }
    guard(c.ws.send(Message::binary(vec![1, 2, 3])))
        .await
        .unwrap();
    assert_eq!(error_code(&c.next().await), Value::Null);
    // Unknown pusher events are ignored.
    c.send(json!({"event":"pusher:whatever","data":{}})).await;
    c.barrier().await;
    assert_eq!(server.state.hub.channel_count(), 0);
}

#[tokio::test]
async fn oversized_messages_are_closed_with_4100() {
    let mut cfg = config();
    cfg.max_message_bytes = 1024;
    let server = spawn(cfg).await;
    let mut c = server.client().await;
    // Just under the limit is fine.
    let padding = "x".repeat(900);
    c.send(json!({"event":"pusher:ping","data":{"p":padding}}))
        .await;
    assert_eq!(c.next().await.event, "pusher:pong");

    let padding = "x".repeat(2000);
    c.send(json!({"event":"pusher:ping","data":{"p":padding}}))
        .await;
    let (code, before) = c.close_code().await;
    assert_eq!(code, 4100);
    assert_eq!(error_code(&before[0]), 4100);
}

#[tokio::test]
async fn client_frames_larger_than_the_read_buffer_arrive_whole() {
    // The default limit (10 KiB) is well above the 512 B read buffer.
    let server = spawn(config()).await;
    let mut c = server.client().await;
    let padding = "x".repeat(9_500);
    c.send(json!({"event":"pusher:subscribe","data":{"channel":"big","pad":padding}}))
        .await;
    succeeded(&c.next().await, "big");
    // Several frames, large and small, in one write: the buffer carries the
    // rest of one read into the next frame.
    for i in 0..3 {
        let padding = "y".repeat(3_000 * i + 10);
        guard(c.ws.feed(Message::text(
            json!({"event":"pusher:ping","data":{"p":padding}}).to_string(),
        )))
        .await
        .unwrap();
    }
    guard(c.ws.flush()).await.unwrap();
    for _ in 0..3 {
        assert_eq!(c.next().await.event, "pusher:pong");
    }
    c.barrier().await;
    assert_eq!(server.publish("big", "e", "after"), 1);
    assert_eq!(c.next().await.data, "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_queued_frames_arrives_complete_and_in_order() {
    let server = spawn(config()).await;
    let mut c = server.client().await;
    succeeded(&c.subscribe("c").await, "c");
    // Published faster than the task writes, so it takes and writes them in
    // batches; fewer than the queue bound (512), so nothing is dropped.
    let n = 400;
    for i in 0..n {
        assert_eq!(server.publish("c", "e", &i.to_string()), 1);
    }
    for i in 0..n {
        assert_eq!(c.next().await.data, i.to_string());
    }
    c.barrier().await;
}

#[tokio::test]
async fn idle_socket_is_pinged_then_closed_with_4201() {
    let mut cfg = config();
    cfg.activity_timeout = Duration::from_millis(100);
    cfg.pong_timeout = Duration::from_millis(100);
    let server = spawn(cfg).await;
    let mut c = server.client().await;
    let ping = c.next().await;
    assert_eq!(
        (ping.event.as_str(), ping.data.as_str()),
        ("pusher:ping", "{}")
    );
    let (code, before) = c.close_code().await;
    assert_eq!(code, 4201);
    assert!(before.is_empty(), "{before:?}");
}

#[tokio::test]
async fn answering_pings_keeps_the_socket_open() {
    let mut cfg = config();
    cfg.activity_timeout = Duration::from_millis(50);
    // Far longer than the guard: an answered ping must re-arm the idle
    // timer, not leave the next ping waiting for the pong deadline.
    cfg.pong_timeout = Duration::from_secs(60);
    let server = spawn(cfg).await;
    let mut c = server.client().await;
    for _ in 0..4 {
        assert_eq!(c.next().await.event, "pusher:ping");
        c.send(json!({"event":"pusher:pong","data":{}})).await;
    }
    c.barrier().await;
}

#[tokio::test]
async fn shutdown_closes_every_socket_with_4200_and_drains_the_tracker() {
    let server = spawn(config()).await;
    let mut clients = Vec::new();
    for i in 0..3 {
        let mut c = server.client().await;
        succeeded(
            &c.subscribe(&format!("session.{i}")).await,
            &format!("session.{i}"),
        );
        clients.push(c);
    }
    let state = server.state.clone();
    let shutdown = tokio::spawn(async move { state.shutdown().await });
    for c in &mut clients {
        assert_eq!(c.close_code().await.0, 4200);
    }
    guard(shutdown).await.unwrap();
    assert_eq!(server.state.hub.socket_count(), 0);
    assert_eq!(server.state.hub.channel_count(), 0);
    assert_eq!(server.state.connection_count(), 0);

    // A late upgrade is told to reconnect (elsewhere) at once.
    let mut ws = server.raw(&format!("/app/{KEY}?protocol=7")).await;
    assert_eq!(close_code(&mut ws).await.0, 4200);
}

#[tokio::test]
async fn connections_over_the_limit_are_closed_with_4100() {
    let mut cfg = config();
    cfg.max_connections = 1;
    let server = spawn(cfg).await;
    let mut first = server.client().await;
    let mut ws = server.raw(&format!("/app/{KEY}?protocol=7")).await;
    let (code, before) = close_code(&mut ws).await;
    assert_eq!(code, 4100);
    assert_eq!(error_code(&before[0]), 4100);
    first.barrier().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_closed_with_4100_while_others_keep_receiving() {
    let mut cfg = config();
    cfg.outbound_queue = 4;
    let server = spawn(cfg).await;
    let hub = server.state.hub.clone();
    let mut slow = server.client().await;
    let mut fast = server.client().await;
    succeeded(&slow.subscribe("c").await, "c");
    succeeded(&fast.subscribe("c").await, "c");

    // `slow` never reads: once the kernel buffers are full its task cannot
    // write, its queue fills, and the hub cancels it. `fast` reads each
    // frame before the next is published, so its queue never fills.
    let payload = "x".repeat(64 * 1024);
    let mut published = 0;
    guard(async {
        while hub.subscription_count("c") == 2 {
            let data = format!("{published}:{payload}");
            assert!(hub.publish("c", frame::event("big", Some("c"), &data), None) >= 1);
            let got = fast.next().await;
            assert!(got.data.starts_with(&format!("{published}:")));
            published += 1;
        }
    })
    .await;
    assert_eq!(hub.subscription_count("c"), 1);

    let (code, before) = slow.close_code().await;
    assert_eq!(code, 4100);
    assert!(before.len() < published, "the slow socket missed frames");

    assert_eq!(server.publish("c", "after", "ok"), 1);
    assert_eq!(fast.next().await.data, "ok");
}

#[tokio::test]
async fn watch_client_subscribes_answers_pings_and_reports_the_close_code() {
    let mut cfg = config();
    cfg.activity_timeout = Duration::from_millis(50);
    let server = spawn(cfg).await;
    let state = server.state.clone();
    let url = format!("ws://{}/app/{KEY}", server.addr);
    let mut seen = Vec::new();
    let mut pings = 0;
    let closed = guard(watch(&url, &["session.5".to_owned()], |e| {
        match e.event.as_str() {
            "pusher_internal:subscription_succeeded" => {
                state.hub.publish(
                    "session.5",
                    frame::event("attendance.updated", Some("session.5"), "{}"),
                    None,
                );
            }
            // Two answered server pings prove the watcher keeps the socket
            // alive; then stop the server.
            "pusher:ping" => {
                pings += 1;
                if pings == 2 {
                    state.shutdown.cancel();
                }
            }
            _ => {}
        }
        seen.push(e.event);
    }))
    .await
    .unwrap();
    assert_eq!(closed.map(|c| c.0), Some(4200));
    assert_eq!(
        seen,
        [
            "pusher:connection_established",
            "pusher_internal:subscription_succeeded",
            "attendance.updated",
            "pusher:ping",
            "pusher:ping",
        ]
    );
}

#[tokio::test]
async fn a_repeated_subscribe_skips_the_snapshot_but_a_fresh_one_gets_it() {
    let server = spawn_with(config(), |_| Arc::new(SnapshotHook { hub: None })).await;
    let mut c = server.client().await;
    succeeded(&c.subscribe("session.3").await, "session.3");
    assert_eq!(c.next().await.event, "attendance.snapshot");
    assert_eq!(c.next().await.event, "after.snapshot");

    // Already subscribed, snapshot just sent: succeeded again, nothing more.
    succeeded(&c.subscribe("session.3").await, "session.3");
    c.barrier().await;
    assert_eq!(server.state.hub.subscription_count("session.3"), 1);

    // After an unsubscribe the socket may have missed updates: a new
    // subscribe always gets the snapshot.
    c.send(json!({"event":"pusher:unsubscribe","data":{"channel":"session.3"}}))
        .await;
    succeeded(&c.subscribe("session.3").await, "session.3");
    assert_eq!(c.next().await.event, "attendance.snapshot");
    assert_eq!(c.next().await.event, "after.snapshot");
}

#[tokio::test]
async fn subscribe_requests_over_the_rate_are_closed_with_4301() {
    let mut config = config();
    config.subscribe_rate = Some(crate::config::Rate {
        count: 3,
        per: Duration::from_secs(60),
    });
    let server = spawn(config).await;
    let mut c = server.client().await;
    succeeded(&c.subscribe("a").await, "a");
    c.send(json!({"event":"pusher:unsubscribe","data":{"channel":"a"}}))
        .await;
    succeeded(&c.subscribe("b").await, "b");
    c.send(json!({"event":"pusher:subscribe","data":{"channel":"c"}}))
        .await;
    let (code, before) = c.close_code().await;
    assert_eq!(code, 4301);
    assert_eq!(error_code(&before[0]), 4301);
    assert_eq!(
        server
            .state
            .metrics
            .rate_limited_count(crate::metrics::RateLimit::Subscribes),
        1
    );
}

/// Subscribes `c` to presence channel `channel` as `channel_data`, signed.
async fn join_presence(c: &mut Client, channel: &str, channel_data: &str) -> ServerEvent {
    let auth = format!(
        "{KEY}:{}",
        sign_channel(SECRET, &c.socket_id, channel, Some(channel_data))
    );
    c.send(json!({"event":"pusher:subscribe","data":{"channel":channel,"auth":auth,"channel_data":channel_data}}))
        .await;
    c.next().await
}

/// The `presence` object of a presence `subscription_succeeded`.
fn presence_of(e: &ServerEvent) -> Value {
    assert_eq!(e.event, "pusher_internal:subscription_succeeded", "{e:?}");
    serde_json::from_str::<Value>(&e.data).unwrap()["presence"].clone()
}

#[tokio::test]
async fn presence_members_come_and_go_per_user_not_per_connection() {
    let server = spawn(config()).await;
    let ch = "presence-room";
    let mut a = server.client().await;
    let joined = join_presence(&mut a, ch, r#"{"user_id":"1","user_info":{"name":"Ada"}}"#).await;
    assert_eq!(
        presence_of(&joined),
        json!({"ids":["1"],"hash":{"1":{"name":"Ada"}},"count":1})
    );

    let mut b = server.client().await;
    let joined = join_presence(&mut b, ch, r#"{"user_id":"2"}"#).await;
    assert_eq!(presence_of(&joined)["count"], 2);
    let added = a.next().await;
    assert_eq!(added.event, "pusher_internal:member_added");
    assert_eq!(
        serde_json::from_str::<Value>(&added.data).unwrap(),
        json!({"user_id":"2","user_info":null})
    );

    // A second tab of user 2 is a connection, not a member.
    let mut b2 = server.client().await;
    let joined = join_presence(&mut b2, ch, r#"{"user_id":"2"}"#).await;
    assert_eq!(presence_of(&joined)["ids"], json!(["1", "2"]));
    a.barrier().await;
    // Closing one tab: user 2 is still there; nothing is announced.
    drop(b2);
    b.barrier().await;
    // The last tab leaves: one member_removed.
    b.send(json!({"event":"pusher:unsubscribe","data":{"channel":ch}}))
        .await;
    let removed = a.next().await;
    assert_eq!(
        removed.event, "pusher_internal:member_removed",
        "{removed:?}"
    );
    assert_eq!(
        serde_json::from_str::<Value>(&removed.data).unwrap(),
        json!({"user_id":"2"})
    );
    // A disconnect is a leave too.
    let mut c = server.client().await;
    join_presence(&mut c, ch, r#"{"user_id":3}"#).await;
    assert_eq!(a.next().await.event, "pusher_internal:member_added");
    drop(c);
    let removed = a.next().await;
    assert_eq!(removed.data, r#"{"user_id":"3"}"#);
}

#[tokio::test]
async fn presence_refusals_use_pusher_codes() {
    let mut cfg = config();
    cfg.max_presence_members = 1;
    let server = spawn(cfg).await;
    let ch = "presence-small";
    let mut a = server.client().await;
    join_presence(&mut a, ch, r#"{"user_id":"1"}"#).await;

    // A second user over the member limit: LimitReached, status 4100.
    let mut b = server.client().await;
    let refused = join_presence(&mut b, ch, r#"{"user_id":"2"}"#).await;
    assert_eq!(refused.event, "pusher:subscription_error", "{refused:?}");
    let data: Value = serde_json::from_str(&refused.data).unwrap();
    assert_eq!(
        (data["type"].as_str(), data["status"].as_u64()),
        (Some("LimitReached"), Some(4100))
    );
    // ...while the member's own second tab still fits.
    let joined = join_presence(&mut b, ch, r#"{"user_id":"1"}"#).await;
    assert_eq!(presence_of(&joined)["count"], 1);

    // user_info over 1 KB, a user id over 128 characters: 4301.
    let big = format!(r#"{{"user_id":"9","user_info":"{}"}}"#, "x".repeat(1100));
    let long = format!(r#"{{"user_id":"{}"}}"#, "u".repeat(129));
    for data in [big, long] {
        let refused = join_presence(&mut b, "presence-other", &data).await;
        assert_eq!(refused.event, "pusher:subscription_error");
        let data: Value = serde_json::from_str(&refused.data).unwrap();
        assert_eq!(data["status"], 4301);
    }
    // A bad signature, or channel_data that is not what was signed: 4009.
    b.send(json!({"event":"pusher:subscribe","data":{"channel":ch,"auth":format!("{KEY}:00"),"channel_data":r#"{"user_id":"1"}"#}}))
        .await;
    assert_eq!(error_code(&b.next().await), 4009);
    // Signed, but no user_id: 4009 too.
    assert_eq!(
        error_code(&join_presence(&mut b, ch, r#"{"name":"x"}"#).await),
        4009
    );
    // Nobody refused was left in the channel.
    assert_eq!(server.state.hub.subscription_count("presence-other"), 0);
}

#[tokio::test]
async fn client_events_on_presence_channels_carry_the_senders_user_id() {
    let mut cfg = config();
    cfg.client_events = true;
    let server = spawn(cfg).await;
    let ch = "presence-chat";
    let mut a = server.client().await;
    join_presence(&mut a, ch, r#"{"user_id":"alice"}"#).await;
    let mut b = server.client().await;
    join_presence(&mut b, ch, r#"{"user_id":"bob"}"#).await;
    assert_eq!(a.next().await.event, "pusher_internal:member_added");
    b.send(json!({"event":"client-typing","channel":ch,"data":{"on":true}}))
        .await;
    let raw = match guard(a.ws.next()).await {
        Some(Ok(Message::Text(t))) => serde_json::from_str::<Value>(&t).unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(raw["event"], "client-typing");
    assert_eq!(raw["user_id"], "bob");
    assert_eq!(raw["data"], r#"{"on":true}"#);
}
