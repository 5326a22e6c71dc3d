//! Issue 9 against a real server: every limit answers the contract's 429
//! JSON with `Retry-After`, is counted in `/metrics` and recovers after its
//! window; failed credentials cap guessing per client address; the
//! per-address WebSocket cap and the origin allow-list refuse as the
//! contract says while other clients keep being served; `X-Forwarded-For`
//! counts only from trusted proxies. "Another address" is a client socket
//! bound to 127.0.0.2 (the server listens on 127.0.0.1; all of 127/8 is
//! loopback).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rollcall::config::{Rate, Settings};
use rollcall::http::client_ip::TrustedProxies;
use rollcall::limits::AllowedOrigins;
use rollcall::livekit::sign_access_token;
use serde_json::{Value, json};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::helpers::*;

const OTHER_ADDRESS: &str = "127.0.0.2";

/// 3 per 6 s: a burst of 3, then one every 2 s — slow enough that a loaded
/// machine still sends the 4th before a cell comes back, short enough to
/// wait out.
fn three_per_6s() -> Option<Rate> {
    Some(Rate {
        count: 3,
        per: Duration::from_secs(6),
    })
}

fn now_s() -> i64 {
    rollcall::domain::now_millis() / 1000
}

/// A server with every limit off but those `configure` sets.
async fn app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_with(|s| {
        s.limits.heartbeats = None;
        s.limits.auth_failures = None;
        s.limits.webhooks = None;
        s.limits.max_connections_per_ip = 0;
        configure(s);
    })
    .await
}

/// An HTTP client whose connections come from `ip`.
fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

/// The response must be the contract's 429: JSON `rate_limited` and a
/// `Retry-After` of whole seconds, at least 1.
async fn assert_rate_limited(res: reqwest::Response) -> u64 {
    assert_eq!(res.status(), 429);
    let retry_after: u64 = res
        .headers()
        .get("retry-after")
        .expect("Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .expect("whole seconds");
    assert!(retry_after >= 1);
    let body: Value = res.json().await.expect("a JSON body");
    assert_eq!(body["error"], "rate_limited");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    retry_after
}

/// Waits the `Retry-After` a refusal gave (the window is over by then).
async fn wait_out(retry_after: u64) {
    tokio::time::sleep(Duration::from_secs(retry_after) + Duration::from_millis(100)).await;
}

fn attendance_path() -> String {
    format!("/api/sessions/{ROOM}/attendance")
}

async fn get_attendance(
    app: &TestApp,
    client: &reqwest::Client,
    bearer: &str,
    forwarded_for: Option<&str>,
) -> reqwest::Response {
    let mut req = client.get(app.url(&attendance_path())).bearer_auth(bearer);
    if let Some(xff) = forwarded_for {
        req = req.header("X-Forwarded-For", xff);
    }
    req.send().await.expect("server answers")
}

/// Makes the room known, so a correct attendance request answers 200.
async fn a_known_room(app: &TestApp) {
    let now = rollcall::domain::now_millis();
    let res = app
        .post_webhook(&joined(ROOM, "42_ameer", "PA_1", now, &event_id()))
        .await;
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn heartbeats_over_the_rate_are_429_per_person_and_recover() {
    let app = app_with(|s| s.limits.heartbeats = three_per_6s()).await;
    let token = sign_access_token("devkey", "secret", "42_ameer", ROOM, now_s(), 600);
    for _ in 0..3 {
        assert_eq!(app.heartbeat(&token).await.status(), 200);
    }
    let retry_after = assert_rate_limited(app.heartbeat(&token).await).await;
    app.metric_reaches("rollcall_rate_limited_total{limit=\"heartbeats\"}", 1)
        .await;
    // Another person, and the same identity in another room, have their own.
    let other = sign_access_token("devkey", "secret", "43_omar", ROOM, now_s(), 600);
    assert_eq!(app.heartbeat(&other).await.status(), 200);
    let room2 = "itqan-academy-quran-session-122";
    let elsewhere = sign_access_token("devkey", "secret", "42_ameer", room2, now_s(), 600);
    assert_eq!(app.heartbeat(&elsewhere).await.status(), 200);
    wait_out(retry_after).await;
    assert_eq!(app.heartbeat(&token).await.status(), 200);
}

#[tokio::test]
async fn a_wrong_bearer_flood_caps_guessing_for_that_address_only() {
    let app = app_with(|s| s.limits.auth_failures = three_per_6s()).await;
    a_known_room(&app).await;
    let here = client_from("127.0.0.1");
    for _ in 0..3 {
        let res = get_attendance(&app, &here, "guess", None).await;
        assert_eq!(res.status(), 401);
    }
    // The address has no failure left: even the right secret waits.
    let mut retry_after = 0;
    for _ in 0..20 {
        retry_after = assert_rate_limited(get_attendance(&app, &here, "guess", None).await).await;
    }
    assert_rate_limited(get_attendance(&app, &here, APP_SECRET, None).await).await;
    app.metric_reaches("rollcall_rate_limited_total{limit=\"auth_failures\"}", 21)
        .await;
    // Another address is not affected.
    let there = client_from(OTHER_ADDRESS);
    let res = get_attendance(&app, &there, APP_SECRET, None).await;
    assert_eq!(res.status(), 200);
    // Refused requests spent nothing: once the last refusal's Retry-After
    // has passed, the flood of 429s has not pushed the wait any further.
    wait_out(retry_after).await;
    let res = get_attendance(&app, &here, APP_SECRET, None).await;
    assert_eq!(res.status(), 200);
    // Successes spend nothing.
    for _ in 0..10 {
        let res = get_attendance(&app, &here, APP_SECRET, None).await;
        assert_eq!(res.status(), 200);
    }
}

#[tokio::test]
async fn pusher_signatures_and_bearers_spend_the_same_failures_but_heartbeats_stay_open() {
    let app = app_with(|s| {
        s.limits.auth_failures = Some(Rate {
            count: 3,
            per: Duration::from_secs(60),
        })
    })
    .await;
    a_known_room(&app).await;
    // Forged heartbeat tokens are refused but spend nothing: a LiveKit
    // signature cannot be guessed, and the students behind the same NAT
    // must keep their heartbeats.
    let forged = sign_access_token("devkey", "guess", "42_ameer", ROOM, now_s(), 600);
    for _ in 0..5 {
        assert_eq!(app.heartbeat(&forged).await.status(), 401);
    }
    assert_eq!(app.get_attendance(ROOM).await["room"], ROOM);
    // A bad Pusher API signature and two wrong bearers.
    let signed_badly = format!(
        "/apps/rollcall/channels?auth_key=rollcall-key&auth_timestamp={}&auth_version=1.0&auth_signature=00",
        now_s()
    );
    let res = app.http.get(app.url(&signed_badly)).send().await.unwrap();
    assert_eq!(res.status(), 401);
    for _ in 0..2 {
        let res = get_attendance(&app, &app.http, "guess", None).await;
        assert_eq!(res.status(), 401);
    }
    // Both credential endpoints now refuse this address before checking...
    assert_rate_limited(get_attendance(&app, &app.http, APP_SECRET, None).await).await;
    let res = app.http.get(app.url(&signed_badly)).send().await.unwrap();
    assert_rate_limited(res).await;
    // ...while a valid heartbeat from it is still answered.
    let valid = sign_access_token("devkey", "secret", "42_ameer", ROOM, now_s(), 600);
    assert_eq!(app.heartbeat(&valid).await.status(), 200);
}

#[tokio::test]
async fn webhooks_over_the_rate_are_429_and_recover() {
    let app = app_with(|s| s.limits.webhooks = three_per_6s()).await;
    let now = rollcall::domain::now_millis();
    let body = |n: usize| {
        joined(
            ROOM,
            &format!("{n}_p"),
            &format!("PA_{n}"),
            now,
            &event_id(),
        )
    };
    for n in 0..3 {
        assert_eq!(app.post_webhook(&body(n)).await.status(), 200);
    }
    let retry_after = assert_rate_limited(app.post_webhook(&body(3)).await).await;
    app.metric_reaches("rollcall_rate_limited_total{limit=\"webhooks\"}", 1)
        .await;
    // Not counted as a webhook outcome (it was never looked at).
    let metrics = app.metrics().await;
    assert!(metrics.contains("rollcall_webhooks_total{outcome=\"malformed\"} 0"));
    wait_out(retry_after).await;
    assert_eq!(app.post_webhook(&body(4)).await.status(), 200);
}

/// A WebSocket from `local` (an address of this host), with `Origin` if
/// given, upgraded.
async fn ws_from(app: &TestApp, local: &str, origin: Option<&str>) -> Ws {
    ws_with(app, local, &[("Origin", origin)]).await
}

/// A WebSocket from `local` with extra `headers` (those given as `None`
/// are left out), upgraded.
async fn ws_with(app: &TestApp, local: &str, headers: &[(&'static str, Option<&str>)]) -> Ws {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(local.parse().unwrap(), 0))
        .unwrap();
    let stream = socket.connect(app.addr).await.expect("tcp connects");
    let mut request = app.ws_url("rollcall-key").into_client_request().unwrap();
    for (name, value) in headers {
        if let Some(value) = value {
            request.headers_mut().insert(*name, value.parse().unwrap());
        }
    }
    let (ws, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .expect("upgraded");
    Ws(ws)
}

struct Ws(tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>);

impl Ws {
    /// The next text frame as JSON (`data` decoded), or the close code.
    async fn next(&mut self) -> Result<Value, Option<u16>> {
        loop {
            let msg = tokio::time::timeout(GUARD, self.0.next())
                .await
                .expect("a frame within the guard time");
            match msg {
                Some(Ok(Message::Text(text))) => {
                    let mut v: Value = serde_json::from_str(text.as_str()).unwrap();
                    if let Some(data) = v["data"].as_str().map(str::to_owned) {
                        v["data"] = serde_json::from_str(&data).unwrap_or(Value::String(data));
                    }
                    return Ok(v);
                }
                Some(Ok(Message::Close(frame))) => return Err(frame.map(|f| f.code.into())),
                Some(Ok(_)) => continue,
                _ => return Err(None),
            }
        }
    }

    async fn established(&mut self) {
        let hello = self.next().await.expect("a frame");
        assert_eq!(hello["event"], "pusher:connection_established");
    }

    async fn subscribe(&mut self, channel: &str) {
        use futures_util::SinkExt;
        let frame = json!({"event": "pusher:subscribe", "data": {"channel": channel}});
        self.0.send(Message::text(frame.to_string())).await.unwrap();
        loop {
            let frame = self.next().await.expect("subscription answered");
            if frame["event"] == "pusher_internal:subscription_succeeded" {
                return;
            }
        }
    }

    /// Reads until `event` arrives.
    async fn event(&mut self, event: &str) -> Value {
        loop {
            let frame = self.next().await.expect("open");
            if frame["event"] == event {
                return frame;
            }
        }
    }

    /// The refusal: a `pusher:error` with `code`, then the close `code`.
    async fn refused_with(&mut self, code: u16) {
        let error = self.next().await.expect("an error frame first");
        assert_eq!(error["event"], "pusher:error");
        assert_eq!(error["data"]["code"], code);
        assert_eq!(self.next().await.unwrap_err(), Some(code));
    }
}

#[tokio::test]
async fn the_per_address_socket_cap_refuses_with_4100_and_frees_on_close() {
    let app = app_with(|s| s.limits.max_connections_per_ip = 2).await;
    let mut first = ws_from(&app, "127.0.0.1", None).await;
    first.established().await;
    let mut second = ws_from(&app, "127.0.0.1", None).await;
    second.established().await;
    let mut third = ws_from(&app, "127.0.0.1", None).await;
    third.refused_with(4100).await;
    app.metric_reaches("rollcall_connections_refused_total{reason=\"per_ip\"}", 1)
        .await;
    // Another address is served, and gets a webhook's update.
    let mut elsewhere = ws_from(&app, OTHER_ADDRESS, None).await;
    elsewhere.established().await;
    elsewhere.subscribe(CHANNEL).await;
    let now = rollcall::domain::now_millis();
    let res = app
        .post_webhook(&joined(ROOM, "42_ameer", "PA_1", now, &event_id()))
        .await;
    assert_eq!(res.status(), 200);
    let update = elsewhere.event("attendance.updated").await;
    assert_eq!(update["channel"], CHANNEL);
    // A socket that ends, however it ends, frees its slot.
    drop(first);
    let deadline = Instant::now() + GUARD;
    loop {
        let mut again = ws_from(&app, "127.0.0.1", None).await;
        let hello = again.next().await.expect("a frame");
        if hello["event"] == "pusher:connection_established" {
            break;
        }
        assert!(Instant::now() < deadline, "the slot was never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(second);
}

/// Upgrade headers, so the request reaches the WebSocket handler.
fn upgrade_request(app: &TestApp, origin: &str) -> reqwest::RequestBuilder {
    app.http
        .get(app.url("/app/rollcall-key?protocol=7"))
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("Origin", origin)
}

#[tokio::test]
async fn only_listed_origins_and_non_browsers_open_sockets() {
    let app = app_with(|s| {
        s.limits.allowed_origins =
            Some(AllowedOrigins::parse("https://app.example.com, http://localhost:3000").unwrap())
    })
    .await;
    let res = upgrade_request(&app, "https://evil.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "origin_not_allowed");
    assert!(body["message"].as_str().is_some());
    app.metric_reaches("rollcall_connections_refused_total{reason=\"origin\"}", 1)
        .await;
    let mut listed = ws_from(&app, "127.0.0.1", Some("https://app.example.com")).await;
    listed.established().await;
    let mut no_origin = ws_from(&app, "127.0.0.1", None).await;
    no_origin.established().await;
}

#[tokio::test]
async fn forwarded_for_counts_only_from_trusted_proxies_and_cannot_be_prepended() {
    let app = app_with(|s| {
        s.limits.auth_failures = Some(Rate {
            count: 3,
            per: Duration::from_secs(60),
        });
        s.limits.trusted_proxies = TrustedProxies::parse("127.0.0.1").unwrap();
    })
    .await;
    a_known_room(&app).await;
    let proxy = client_from("127.0.0.1");
    let attacker = "203.0.113.9";
    for _ in 0..3 {
        let res = get_attendance(&app, &proxy, "guess", Some(attacker)).await;
        assert_eq!(res.status(), 401);
    }
    assert_rate_limited(get_attendance(&app, &proxy, APP_SECRET, Some(attacker)).await).await;
    // Prepending another address changes nothing: the proxy appended the
    // real one last.
    let spoofed = format!("198.51.100.7, {attacker}");
    assert_rate_limited(get_attendance(&app, &proxy, APP_SECRET, Some(&spoofed)).await).await;
    // Another client behind the same proxy is served.
    let res = get_attendance(&app, &proxy, APP_SECRET, Some("198.51.100.7")).await;
    assert_eq!(res.status(), 200);

    // From an address that is not a trusted proxy the header is ignored:
    // changing it every time does not escape the limit.
    let direct = client_from(OTHER_ADDRESS);
    for n in 0..3 {
        let res = get_attendance(&app, &direct, "guess", Some(&format!("192.0.2.{n}"))).await;
        assert_eq!(res.status(), 401);
    }
    let res = get_attendance(&app, &direct, APP_SECRET, Some("192.0.2.200")).await;
    assert_rate_limited(res).await;
}

#[tokio::test]
async fn the_socket_cap_counts_the_client_behind_a_trusted_proxy() {
    let app = app_with(|s| {
        s.limits.max_connections_per_ip = 1;
        s.limits.trusted_proxies = TrustedProxies::parse("127.0.0.1").unwrap();
    })
    .await;
    let behind = |client| [("X-Forwarded-For", Some(client))];
    let mut first = ws_with(&app, "127.0.0.1", &behind("203.0.113.9")).await;
    first.established().await;
    let mut again = ws_with(&app, "127.0.0.1", &behind("203.0.113.9")).await;
    again.refused_with(4100).await;
    // Another client behind the same proxy has its own allowance.
    let mut other = ws_with(&app, "127.0.0.1", &behind("198.51.100.7")).await;
    other.established().await;
}
