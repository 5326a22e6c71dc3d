//! App webhooks (`ROLLCALL_APP_WEBHOOK_URL`) against real servers: a test
//! receiver on a loopback port records every POST (and can refuse some),
//! clients subscribe over real WebSockets. Every post's signature is
//! checked as the app would check it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use rollcall::pusher::auth::{hmac_sha256_hex, sign_channel};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::helpers::*;
use crate::redis_server::RedisServer;

/// Short enough for tests, long enough for a reload on a loaded machine.
const HOLD: Duration = Duration::from_millis(1_000);

#[derive(Clone, Default)]
struct Received {
    /// Each accepted post's events.
    events: Arc<Mutex<Vec<Value>>>,
    /// Every post's raw body, refused ones too.
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
    count: Arc<Mutex<Option<watch::Sender<usize>>>>,
    /// Posts still to refuse with 500.
    refuse: Arc<AtomicUsize>,
}

struct Receiver {
    url: String,
    received: Received,
    events_seen: watch::Receiver<usize>,
}

async fn receive(State(r): State<Received>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    assert_eq!(header("content-type").as_deref(), Some("application/json"));
    assert_eq!(header("x-pusher-key").as_deref(), Some("rollcall-key"));
    assert_eq!(
        header("x-pusher-signature"),
        Some(hmac_sha256_hex(APP_SECRET, &body)),
        "signed with the app secret"
    );
    r.bodies.lock().unwrap().push(body.to_vec());
    if r.refuse
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let v: Value = serde_json::from_slice(&body).expect("a JSON body");
    assert!(v["time_ms"].as_i64().is_some_and(|t| t > 1_700_000_000_000));
    let events = v["events"].as_array().expect("events").clone();
    let total = {
        let mut all = r.events.lock().unwrap();
        all.extend(events);
        all.len()
    };
    if let Some(tx) = r.count.lock().unwrap().as_ref() {
        tx.send_replace(total);
    }
    StatusCode::OK
}

async fn receiver() -> Receiver {
    let received = Received::default();
    let (tx, rx) = watch::channel(0);
    *received.count.lock().unwrap() = Some(tx);
    let router = axum::Router::new()
        .route("/hooks", axum::routing::post(receive))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    Receiver {
        url: format!("http://{addr}/hooks"),
        received,
        events_seen: rx,
    }
}

impl Receiver {
    /// Waits (guarded) for at least `n` events in all; answers them all.
    async fn events(&mut self, n: usize) -> Vec<Value> {
        let got = tokio::time::timeout(GUARD, self.events_seen.wait_for(|c| *c >= n)).await;
        let all = self.received.events.lock().unwrap().clone();
        assert!(got.is_ok(), "expected {n} events, got {all:?}");
        all
    }

    fn so_far(&self) -> Vec<Value> {
        self.received.events.lock().unwrap().clone()
    }
}

async fn app_for(r: &Receiver, redis: Option<&RedisServer>) -> TestApp {
    spawn_app_with(|s| {
        s.app_webhook_url = Some(r.url.parse().unwrap());
        s.app_webhooks.hold = HOLD;
        s.client_events = true;
        if let Some(redis) = redis {
            s.redis_url = Some(redis.url());
        }
    })
    .await
}

fn occupied(c: &str) -> Value {
    json!({"name": "channel_occupied", "channel": c})
}

fn vacated(c: &str) -> Value {
    json!({"name": "channel_vacated", "channel": c})
}

async fn subscribed(app: &TestApp, channel: &str) -> PusherClient {
    let mut c = PusherClient::connect(&app.ws_url("rollcall-key")).await;
    c.subscribe(channel).await;
    c
}

async fn unsubscribe(c: &mut PusherClient, channel: &str) {
    c.send(json!({"event": "pusher:unsubscribe", "data": {"channel": channel}}))
        .await;
}

/// A channel subscribed and left once the events before it are settled:
/// its `channel_occupied` arriving proves everything before it was sent.
async fn marker(app: &TestApp, r: &mut Receiver, seen: usize) -> Vec<Value> {
    let _m = subscribed(app, "marker").await;
    let all = r.events(seen + 1).await;
    assert_eq!(all.last(), Some(&occupied("marker")), "{all:?}");
    all[..all.len() - 1].to_vec()
}

#[tokio::test]
async fn occupied_once_then_vacated_after_the_hold() {
    let mut r = receiver().await;
    let app = app_for(&r, None).await;
    let mut a = subscribed(&app, "chat.1").await;
    assert_eq!(r.events(1).await, [occupied("chat.1")]);
    let b = subscribed(&app, "chat.1").await;
    unsubscribe(&mut a, "chat.1").await;
    // `a` is gone from the channel, `b` is still on it: nothing to say.
    drop(b);
    let left = Instant::now();
    let all = r.events(2).await;
    assert_eq!(all, [occupied("chat.1"), vacated("chat.1")]);
    assert!(left.elapsed() >= HOLD - Duration::from_millis(50), "held");
    drop(a);
}

#[tokio::test]
async fn a_reload_within_the_hold_sends_neither_vacated_nor_occupied() {
    let mut r = receiver().await;
    let app = app_for(&r, None).await;
    let mut a = subscribed(&app, "chat.2").await;
    assert_eq!(r.events(1).await, [occupied("chat.2")]);
    unsubscribe(&mut a, "chat.2").await;
    a.subscribe("chat.2").await;
    // A reload: a new socket while the old one closes.
    let b = subscribed(&app, "chat.2").await;
    drop(a);
    tokio::time::sleep(HOLD * 2).await;
    assert_eq!(marker(&app, &mut r, 1).await, [occupied("chat.2")]);
    drop(b);
}

#[tokio::test]
async fn a_refused_post_is_retried_and_delivered() {
    let mut r = receiver().await;
    r.received.refuse.store(1, Ordering::SeqCst);
    let app = app_for(&r, None).await;
    let _a = subscribed(&app, "chat.3").await;
    assert_eq!(r.events(1).await, [occupied("chat.3")]);
    let bodies = r.received.bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 2, "refused once, then accepted");
    assert_eq!(bodies[0], bodies[1], "the same body, time_ms included");
    // Counted once the receiver's answer is in: wait for it.
    let deadline = Instant::now() + GUARD;
    loop {
        let metrics = app.metrics().await;
        if metrics.contains("rollcall_app_webhooks_delivered_total 1") {
            assert!(
                metrics.contains("rollcall_app_webhooks_retried_total 1"),
                "{metrics}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_client_event_is_reported() {
    let mut r = receiver().await;
    let app = app_for(&r, None).await;
    let channel = "private-chat.4";
    let mut a = PusherClient::connect(&app.ws_url("rollcall-key")).await;
    let sig = sign_channel(APP_SECRET, &a.socket_id, channel, None);
    a.send(json!({"event": "pusher:subscribe", "data": {"channel": channel, "auth": format!("rollcall-key:{sig}")}}))
        .await;
    a.next_event("pusher_internal:subscription_succeeded").await;
    assert_eq!(r.events(1).await, [occupied(channel)]);
    a.send(json!({"event": "client-typing", "channel": channel, "data": {"n": 1}}))
        .await;
    let all = r.events(2).await;
    assert_eq!(
        all[1],
        json!({"name": "client_event", "channel": channel, "event": "client-typing", "data": "{\"n\":1}", "socket_id": a.socket_id})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_send_one_occupied_per_channel_and_one_vacated() {
    let redis = RedisServer::start().await;
    let mut r = receiver().await;
    let (n1, n2) = (
        app_for(&r, Some(&redis)).await,
        app_for(&r, Some(&redis)).await,
    );
    let mut clients = Vec::new();
    for (i, node) in [&n1, &n2, &n1, &n2].into_iter().enumerate() {
        for channel in ["x", "y"] {
            clients.push(subscribed(node, &format!("{channel}.{i}")).await);
            clients.push(subscribed(node, channel).await);
        }
    }
    // x and y on both nodes; x.0 … y.3 on one each.
    let all = r.events(10).await;
    let mut names: Vec<String> = all
        .iter()
        .map(|e| {
            assert_eq!(e["name"], "channel_occupied", "{all:?}");
            e["channel"].as_str().unwrap().to_string()
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "x", "x.0", "x.1", "x.2", "x.3", "y", "y.0", "y.1", "y.2", "y.3"
        ]
    );
    // Everyone leaves x and y; the numbered channels stay.
    for (i, c) in clients.iter_mut().enumerate() {
        if i % 2 == 1 {
            let channel = if i % 4 == 1 { "x" } else { "y" };
            unsubscribe(c, channel).await;
        }
    }
    let all = r.events(12).await;
    let mut gone: Vec<&Value> = all[10..].iter().collect();
    gone.sort_by_key(|e| e["channel"].as_str().unwrap().to_string());
    assert_eq!(gone, [&vacated("x"), &vacated("y")]);
    tokio::time::sleep(HOLD).await;
    assert_eq!(
        marker(&n2, &mut r, 12).await.len(),
        12,
        "nothing more: {:?}",
        r.so_far()
    );
}

/// The crash scenario: two `rollcall` processes on one Redis, members and
/// channels on both, one killed with SIGKILL. What it held alone is
/// reported gone exactly once (by the survivor, after the lease lapses and
/// the hold); what the survivor still holds is not reported at all.
#[tokio::test]
async fn a_killed_nodes_members_and_channels_are_reported_gone_exactly_once() {
    use crate::presence::{CH, member};
    use crate::process::ServerProcess;

    let redis = RedisServer::start().await;
    let mut r = receiver().await;
    let redis_url = redis.url();
    let env = [
        ("ROLLCALL_REDIS_URL", redis_url.as_str()),
        ("ROLLCALL_APP_WEBHOOK_URL", r.url.as_str()),
        ("ROLLCALL_APP_WEBHOOK_HOLD", "1s"),
        ("ROLLCALL_NODE_TTL", "2s"),
    ];
    let (one, two) = (
        ServerProcess::spawn(&env).await,
        ServerProcess::spawn(&env).await,
    );
    let subscribe = |node: &ServerProcess, channel: &'static str| {
        let url = node.ws_url("rollcall-key");
        async move {
            let mut c = PusherClient::connect(&url).await;
            c.subscribe(channel).await;
            c
        }
    };
    let (_ada, _) = member(&one, "ada").await;
    let (_bo, _) = member(&two, "bo").await;
    let (_ada_tab, _) = member(&two, "ada").await;
    let _shared_one = subscribe(&one, "shared").await;
    let _shared_two = subscribe(&two, "shared").await;
    let _solo = subscribe(&two, "solo").await;
    let before = r.events(5).await;
    let mut expected = vec![
        occupied(CH),
        occupied("shared"),
        occupied("solo"),
        json!({"name": "member_added", "channel": CH, "user_id": "ada"}),
        json!({"name": "member_added", "channel": CH, "user_id": "bo"}),
    ];
    let sorted = |mut v: Vec<Value>| {
        v.sort_by_key(|e| e.to_string());
        v
    };
    assert_eq!(sorted(before), sorted(expected.clone()));

    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(two.pid() as libc::pid_t, libc::SIGKILL) };
    r.events(7).await;
    // A marker channel on the survivor: its occupied event coming next
    // proves nothing else was queued.
    let _marker = subscribe(&one, "marker").await;
    let all = r.events(8).await;
    assert_eq!(all.last(), Some(&occupied("marker")), "{all:?}");
    expected.extend([
        json!({"name": "member_removed", "channel": CH, "user_id": "bo"}),
        vacated("solo"),
        occupied("marker"),
    ]);
    assert_eq!(sorted(all), sorted(expected));
    drop(two);
}
