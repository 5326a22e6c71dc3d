//! `spawn_app()` and typed helpers: a real server on an ephemeral loopback
//! port, a real WebSocket client, and webhooks signed as LiveKit signs them.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rand::distr::{Alphanumeric, SampleString};
use rollcall::config::Settings;
use rollcall::livekit::sign_webhook;
use rollcall::startup::Application;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A guard against hangs; never a way to wait for something.
pub const GUARD: Duration = Duration::from_secs(10);

pub const ROOM: &str = "itqan-academy-quran-session-121";
pub const CHANNEL: &str = "session.121";
/// The development app secret: the API's bearer token and the report's
/// signing key.
pub const APP_SECRET: &str = "rollcall-secret";

pub struct TestApp {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let mut settings = Settings::for_tests();
    configure(&mut settings);
    let app = Application::build(settings).await.expect("app builds");
    let addr = app.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    TestApp {
        addr,
        http: reqwest::Client::new(),
        stop: Some(stop),
        server: Some(server),
    }
}

/// The Pusher WebSocket URL of a server at `addr`, as pusher-js asks it.
pub fn pusher_ws_url(addr: SocketAddr, key: &str) -> String {
    format!("ws://{addr}/app/{key}?protocol=7&client=js&version=8.4.0&flash=false")
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self, key: &str) -> String {
        pusher_ws_url(self.addr, key)
    }

    /// Posts `body` with a valid LiveKit signature (key `devkey`).
    pub async fn post_webhook(&self, body: &str) -> reqwest::Response {
        let now = rollcall::domain::now_millis() / 1000;
        let token = sign_webhook("devkey", "secret", body.as_bytes(), now, 300);
        self.post_webhook_with(body, Some(&token)).await
    }

    pub async fn post_webhook_with(
        &self,
        body: &str,
        authorization: Option<&str>,
    ) -> reqwest::Response {
        let mut req = self
            .http
            .post(self.url("/webhooks/livekit"))
            .header("Content-Type", "application/webhook+json")
            .body(body.to_string());
        if let Some(auth) = authorization {
            req = req.header("Authorization", auth);
        }
        req.send().await.expect("server answers")
    }

    /// A request to the main app's API, with `Authorization: Bearer <app secret>`.
    pub fn api(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .bearer_auth(APP_SECRET)
    }

    /// `GET path` with the app secret.
    pub async fn api_get(&self, path: &str) -> reqwest::Response {
        self.api(reqwest::Method::GET, path)
            .send()
            .await
            .expect("server answers")
    }

    /// `PUT /api/sessions/{room}/schedule` with `schedule` as its JSON body.
    pub async fn put_schedule(&self, room: &str, schedule: &Value) -> reqwest::Response {
        self.api(
            reqwest::Method::PUT,
            &format!("/api/sessions/{room}/schedule"),
        )
        .json(schedule)
        .send()
        .await
        .expect("server answers")
    }

    /// `GET /api/sessions/{room}/attendance`, which must answer 200: the roster.
    pub async fn get_attendance(&self, room: &str) -> Value {
        let res = self
            .api_get(&format!("/api/sessions/{room}/attendance"))
            .await;
        assert_eq!(res.status(), 200, "GET attendance of {room}");
        res.json().await.expect("a JSON roster")
    }

    /// `POST /api/heartbeat` with `Authorization: Bearer <token>`.
    pub async fn heartbeat(&self, token: &str) -> reqwest::Response {
        self.http
            .post(self.url("/api/heartbeat"))
            .bearer_auth(token)
            .send()
            .await
            .expect("server answers")
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        let res = self
            .http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("server answers");
        res.text().await.expect("metrics text")
    }

    /// Waits until the counter `name` in `/metrics` is at least `at_least`
    /// (counters move just after the effect a test observes).
    pub async fn metric_reaches(&self, name: &str, at_least: u64) {
        let deadline = tokio::time::Instant::now() + GUARD;
        loop {
            let text = self.metrics().await;
            let value = text
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<u64>().ok())
                .unwrap_or(0);
            if value >= at_least {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} stayed at {value}:\n{text}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// A Pusher client subscribed to `channel` (subscription confirmed).
    pub async fn subscriber(&self, channel: &str) -> PusherClient {
        let mut client = PusherClient::connect(&self.ws_url("rollcall-key")).await;
        client.subscribe(channel).await;
        client
    }

    /// Stops the server the way SIGTERM does and waits for it to exit.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            tokio::time::timeout(GUARD, server)
                .await
                .expect("server exits in time")
                .expect("server task")
                .expect("server ran cleanly");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub struct PusherClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub socket_id: String,
}

/// One server frame, `data` decoded from its JSON string.
#[derive(Debug, Clone)]
pub struct Frame {
    pub event: String,
    pub channel: Option<String>,
    pub data: Value,
}

impl PusherClient {
    pub async fn connect(url: &str) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("ws connects");
        let mut client = Self {
            ws,
            socket_id: String::new(),
        };
        let hello = client.next_frame().await.expect("first frame");
        assert_eq!(hello.event, "pusher:connection_established");
        client.socket_id = hello.data["socket_id"]
            .as_str()
            .expect("socket_id")
            .to_string();
        client
    }

    pub async fn send(&mut self, frame: Value) {
        self.ws
            .send(Message::text(frame.to_string()))
            .await
            .expect("ws send");
    }

    pub async fn subscribe(&mut self, channel: &str) {
        self.send(json!({"event": "pusher:subscribe", "data": {"channel": channel}}))
            .await;
        let ok = self
            .next_event("pusher_internal:subscription_succeeded")
            .await;
        assert_eq!(ok.channel.as_deref(), Some(channel));
    }

    /// The next Pusher frame, or `None` once the socket is closed.
    pub async fn next_frame(&mut self) -> Option<Frame> {
        tokio::time::timeout(GUARD, self.read_frame())
            .await
            .expect("a frame within the guard time")
    }

    /// The next frame if one arrives within `window`: for asserting that
    /// nothing more is sent, where there is no event to wait for.
    pub async fn frame_within(&mut self, window: Duration) -> Option<Frame> {
        tokio::time::timeout(window, self.read_frame())
            .await
            .ok()
            .flatten()
    }

    async fn read_frame(&mut self) -> Option<Frame> {
        loop {
            let msg = self.ws.next().await?.ok()?;
            if let Message::Text(text) = msg {
                let v: Value = serde_json::from_str(text.as_str()).expect("frames are JSON");
                let data = match &v["data"] {
                    Value::String(s) => serde_json::from_str(s).unwrap_or(Value::String(s.clone())),
                    other => other.clone(),
                };
                return Some(Frame {
                    event: v["event"].as_str().unwrap_or_default().to_string(),
                    channel: v["channel"].as_str().map(str::to_string),
                    data,
                });
            }
            if let Message::Close(_) = msg {
                return None;
            }
        }
    }

    /// The next frame, which must be `event`. Waiting for an update, a
    /// snapshot is passed over: after a bus (re)connection the server
    /// re-sends snapshots by design (they carry full state, so an extra one
    /// is harmless), and a loaded machine may make that coincide with a test.
    pub async fn next_event(&mut self, event: &str) -> Frame {
        loop {
            let frame = self
                .next_frame()
                .await
                .unwrap_or_else(|| panic!("closed while waiting for {event}"));
            if event == "attendance.updated" && frame.event == "attendance.snapshot" {
                continue;
            }
            assert_eq!(frame.event, event, "unexpected frame {frame:?}");
            return frame;
        }
    }

    /// Reads until the server closes; returns the close frame.
    pub async fn closed(&mut self) -> Option<CloseFrame> {
        loop {
            match tokio::time::timeout(GUARD, self.ws.next())
                .await
                .expect("closed within the guard time")
            {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    }
}

pub fn event_id() -> String {
    format!("EV_{}", Alphanumeric.sample_string(&mut rand::rng(), 12))
}

/// A `participant_joined` body in LiveKit's protojson shape.
pub fn joined(room: &str, identity: &str, sid: &str, joined_at_ms: i64, id: &str) -> String {
    format!(
        r#"{{"event":"participant_joined", "room":{{"sid":"RM_test", "name":"{room}"}}, "participant":{{"sid":"{sid}", "identity":"{identity}", "state":"ACTIVE", "joinedAt":"{}", "joinedAtMs":"{joined_at_ms}", "name":"Ameer Maher"}}, "id":"{id}", "createdAt":"{}"}}"#,
        joined_at_ms / 1000,
        joined_at_ms / 1000 + 1
    )
}

/// A `participant_left` body; its payload carries `joinedAtMs` as LiveKit's does.
pub fn left(
    room: &str,
    identity: &str,
    sid: &str,
    joined_at_ms: i64,
    created_at_s: i64,
    id: &str,
) -> String {
    format!(
        r#"{{"event":"participant_left", "room":{{"sid":"RM_test", "name":"{room}"}}, "participant":{{"sid":"{sid}", "identity":"{identity}", "state":"DISCONNECTED", "joinedAt":"{}", "joinedAtMs":"{joined_at_ms}", "name":"Ameer Maher", "disconnectReason":"CLIENT_INITIATED"}}, "id":"{id}", "createdAt":"{created_at_s}"}}"#,
        joined_at_ms / 1000
    )
}

pub fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/livekit/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}
