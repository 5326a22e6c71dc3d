//! Hostile WebSocket clients against a rollcall server in its own process
//! (issue 9): whatever a client does, the socket's memory and time stay
//! bounded, every refusal is a `pusher:error` plus a close code, and a
//! plain subscriber on the same server is still served afterwards.
//!
//! The server is a `ServerProcess` so its resident memory can be read from
//! `/proc`, and its settings come from the environment as in production.
//! Non-reading clients use a small receive buffer so that the TCP buffers
//! between them and the server fill after a few MiB.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rollcall::livekit::sign_webhook;
use rollcall::pusher::auth::{body_md5_hex, sign_http_api};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::{WebSocketStream, client_async, connect_async};

use crate::helpers::{APP_SECRET, CHANNEL, PusherClient, ROOM, event_id, joined};
use crate::process::ServerProcess;
use crate::redis_server::RedisServer;

const APP_KEY: &str = "rollcall-key";
/// `PusherConfig::max_message_bytes` (not configurable).
const MAX_MESSAGE_BYTES: usize = 10 * 1024;
/// The socket's close attempt after a decision (`CLOSE_GRACE`).
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Slack for a loaded 2-core machine on top of every stated bound.
const SLACK: Duration = Duration::from_secs(8);

type Raw = WebSocketStream<TcpStream>;

// --- a server process and what it shows -----------------------------------

async fn server(env: &[(&str, &str)]) -> ServerProcess {
    ServerProcess::spawn(env).await
}

async fn metric(server: &ServerProcess, series: &str) -> u64 {
    server.metric(series).await
}

/// Waits until `series` reaches `at_least`; returns how long that took, or
/// panics after `within`.
async fn metric_within(
    server: &ServerProcess,
    series: &str,
    at_least: u64,
    within: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        let value = metric(server, series).await;
        if value >= at_least {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "{series} stayed at {value} for {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn closed(reason: &str) -> String {
    format!("rollcall_ws_closed_total{{reason=\"{reason}\"}}")
}

async fn post_webhook(server: &ServerProcess, http: &reqwest::Client, body: &str) {
    let now = rollcall::domain::now_millis() / 1000;
    let token = sign_webhook("devkey", "secret", body.as_bytes(), now, 300);
    let res = http
        .post(server.url("/webhooks/livekit"))
        .header("Content-Type", "application/webhook+json")
        .header("Authorization", token)
        .body(body.to_string())
        .send()
        .await
        .expect("server answers");
    assert_eq!(res.status(), 200, "webhook accepted");
}

/// Fills `ROOM` with `people` participants, so its snapshot is large.
async fn crowd_the_room(server: &ServerProcess, people: usize) {
    let http = reqwest::Client::new();
    let at = rollcall::domain::now_millis() - 60_000;
    for i in 0..people {
        let identity = format!("{}_Student_Number_{i}", 1000 + i);
        let body = joined(ROOM, &identity, &format!("PA_{i}"), at, &event_id());
        post_webhook(server, &http, &body).await;
    }
}

/// Publishes `events` events of `data_bytes` each to `CHANNEL` in one
/// signed `batch_events` request (Pusher HTTP API).
async fn publish_batch(
    server: &ServerProcess,
    http: &reqwest::Client,
    events: usize,
    data_bytes: usize,
) {
    let data = "x".repeat(data_bytes);
    let batch: Vec<Value> = (0..events)
        .map(|_| json!({"name": "flood", "channel": CHANNEL, "data": data}))
        .collect();
    let body = json!({ "batch": batch }).to_string();
    let path = "/apps/rollcall/batch_events";
    let timestamp = (rollcall::domain::now_millis() / 1000).to_string();
    let md5 = body_md5_hex(body.as_bytes());
    let mut pairs: Vec<(&str, &str)> = vec![
        ("auth_key", APP_KEY),
        ("auth_timestamp", &timestamp),
        ("auth_version", "1.0"),
        ("body_md5", &md5),
    ];
    let signature = sign_http_api(APP_SECRET, "POST", path, &pairs);
    pairs.push(("auth_signature", &signature));
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        query.append_pair(k, v);
    }
    let res = http
        .post(server.url(&format!("{path}?{}", query.finish())))
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .expect("server answers");
    assert_eq!(res.status(), 200, "batch published");
}

/// After whatever a test did, a plain subscriber on the same server still
/// gets a webhook's `attendance.updated`.
async fn assert_still_serves(server: &ServerProcess) {
    let mut plain = PusherClient::connect(&server.ws_url(APP_KEY)).await;
    plain.subscribe(CHANNEL).await;
    let http = reqwest::Client::new();
    let at = rollcall::domain::now_millis() - 1_000;
    let body = joined(ROOM, "77_Plain_Subscriber", "PA_plain", at, &event_id());
    post_webhook(server, &http, &body).await;
    let update = plain.next_event("attendance.updated").await;
    assert_eq!(update.channel.as_deref(), Some(CHANNEL));
}

// --- raw clients -----------------------------------------------------------

/// A client whose socket has a small receive buffer (so a client that does
/// not read stops the server's writes soon), past the upgrade and the
/// `connection_established` frame.
async fn small_buffer_client(server: &ServerProcess) -> Raw {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let tcp = socket.connect(server.addr).await.expect("connects");
    let (mut ws, _) = client_async(server.ws_url(APP_KEY), tcp)
        .await
        .expect("upgrade");
    let hello = next_json(&mut ws).await.expect("connection_established");
    assert_eq!(hello["event"], "pusher:connection_established");
    ws
}

/// The next text frame as JSON, `None` on close or error.
async fn next_json<S>(ws: &mut S) -> Option<Value>
where
    S: StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let msg = tokio::time::timeout(SLACK, ws.next())
            .await
            .expect("a frame in time")?
            .ok()?;
        match msg {
            Message::Text(t) => return Some(serde_json::from_str(t.as_str()).expect("JSON")),
            Message::Close(_) => return None,
            _ => {}
        }
    }
}

fn subscribe_frame(channel: &str) -> Message {
    Message::text(json!({"event": "pusher:subscribe", "data": {"channel": channel}}).to_string())
}

fn unsubscribe_frame(channel: &str) -> Message {
    Message::text(json!({"event": "pusher:unsubscribe", "data": {"channel": channel}}).to_string())
}

/// Subscribes and reads up to `subscription_succeeded`.
async fn subscribe_raw(ws: &mut Raw, channel: &str) {
    ws.send(subscribe_frame(channel)).await.expect("send");
    loop {
        let frame = next_json(ws).await.expect("subscription_succeeded");
        if frame["event"] == "pusher_internal:subscription_succeeded" {
            return;
        }
    }
}

/// Reads until the server closes: the `pusher:error` frames seen, the close
/// code, and the bytes of every text frame received.
async fn read_to_close(
    ws: &mut (impl StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin),
) -> (Vec<Value>, Option<u16>, usize) {
    let (mut errors, mut bytes) = (Vec::new(), 0);
    loop {
        let msg = tokio::time::timeout(SLACK, ws.next())
            .await
            .expect("the server closes in time");
        match msg {
            Some(Ok(Message::Text(t))) => {
                bytes += t.len();
                let v: Value = serde_json::from_str(t.as_str()).expect("JSON");
                if v["event"] == "pusher:error" {
                    errors.push(v["data"].clone());
                }
            }
            Some(Ok(Message::Close(frame))) => {
                return (errors, frame.map(|f| u16::from(f.code)), bytes);
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return (errors, None, bytes),
        }
    }
}

// --- the probes -------------------------------------------------------------

/// A masked ping frame with a 125-byte payload (the largest control frame),
/// as a client sends it; mask key 0 leaves the payload as is.
fn ping_frames(count: usize) -> Vec<u8> {
    let mut one = vec![0x89, 0x80 | 125, 0, 0, 0, 0];
    one.extend_from_slice(&[b'p'; 125]);
    one.repeat(count)
}

#[tokio::test]
async fn a_ping_flood_without_reading_is_closed_with_bounded_memory() {
    // Bound: the server stops reading once the pongs it owes cannot be
    // written, and ends the socket `ROLLCALL_WRITE_TIMEOUT` later; its
    // memory never holds more than one pending pong.
    const FLOOD: usize = 256 << 20;
    const RSS_GROWTH_BOUND_KIB: u64 = 32 * 1024;
    let server = server(&[("ROLLCALL_WRITE_TIMEOUT", "1s")]).await;
    let mut ws = small_buffer_client(&server).await;
    let baseline = server.rss_kib();
    let chunk = ping_frames(512);
    let (mut sent, mut peak) = (0usize, baseline);
    let started = Instant::now();
    let ended = loop {
        if sent >= FLOOD {
            break None;
        }
        // A blocked write (the server stopped reading) is expected; the
        // flood ends when the server drops the socket.
        let write = ws.get_mut().write_all(&chunk);
        match tokio::time::timeout(Duration::from_secs(30), write).await {
            Ok(Ok(())) => sent += chunk.len(),
            Ok(Err(e)) => break Some(e),
            Err(_) => panic!("the server neither read nor closed for 30 s"),
        }
        if sent % (4 << 20) < chunk.len() {
            peak = peak.max(server.rss_kib());
        }
    };
    let took = started.elapsed();
    peak = peak.max(server.rss_kib());
    let growth = peak.saturating_sub(baseline);
    eprintln!(
        "ping flood: {} KiB of pings sent in {took:?} before the server ended the socket; \
         RSS {baseline} KiB -> peak {peak} KiB (+{growth} KiB)",
        sent >> 10
    );
    assert!(
        ended.is_some(),
        "the server read all {FLOOD} bytes of pings without ending the socket"
    );
    assert!(
        growth < RSS_GROWTH_BOUND_KIB,
        "RSS grew by {growth} KiB under a ping flood"
    );
    metric_within(&server, &closed("ping_flood"), 1, SLACK).await;
    metric_within(&server, "rollcall_websocket_connections", 0, SLACK).await;
    assert_still_serves(&server).await;
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_is_dropped_within_the_write_timeout() {
    // Bound: once its buffers are full, a subscriber that does not read is
    // dropped `ROLLCALL_WRITE_TIMEOUT` (1 s) after its write stopped moving,
    // before its 512-frame queue overflows at this publishing rate (200
    // frames of 10 KiB a second: 2.5 s to overflow), and the server holds
    // at most its queue (~5 MiB) for it.
    const RSS_GROWTH_BOUND_KIB: u64 = 32 * 1024;
    let server = server(&[("ROLLCALL_WRITE_TIMEOUT", "1s")]).await;
    let mut silent = small_buffer_client(&server).await;
    subscribe_raw(&mut silent, CHANNEL).await;
    let baseline = server.rss_kib();
    let http = reqwest::Client::new();
    let started = Instant::now();
    let (mut peak, mut batches) = (baseline, 0);
    while metric(&server, "rollcall_websocket_connections").await > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "a subscriber that does not read was kept for 30 s"
        );
        publish_batch(&server, &http, 10, 10 * 1024).await;
        batches += 1;
        peak = peak.max(server.rss_kib());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = started.elapsed();
    let growth = peak.saturating_sub(baseline);
    eprintln!(
        "non-reading subscriber: dropped after {took:?} ({} KiB published); RSS +{growth} KiB",
        batches * 100
    );
    // ~4 MiB of TCP buffers fill in ~2 s at this rate, then 1 s without
    // progress, then the close attempt (at most `CLOSE_GRACE`).
    let bound = Duration::from_secs(2 + 1) + CLOSE_GRACE + SLACK;
    assert!(took < bound, "dropped after {took:?} (bound {bound:?})");
    assert_eq!(metric(&server, &closed("write_timeout")).await, 1);
    assert_eq!(metric(&server, &closed("slow_consumer")).await, 0);
    assert!(growth < RSS_GROWTH_BOUND_KIB, "RSS grew by {growth} KiB");
    drop(silent);
    assert_still_serves(&server).await;
}

#[tokio::test]
async fn a_silent_client_with_full_buffers_still_gets_the_pong_timeout_in_time() {
    // The write that fills the buffers never completes and nothing is queued
    // behind it (snapshots are written by the socket's task itself), so only
    // the keepalive can end this socket: 4201 at activity + pong timeout
    // after the client's last frame, even though a write is pending (the
    // write timeout is set far beyond the test).
    let server = server(&[
        ("ROLLCALL_WRITE_TIMEOUT", "10m"),
        ("ROLLCALL_ACTIVITY_TIMEOUT", "1s"),
        ("ROLLCALL_PONG_TIMEOUT", "1s"),
        ("ROLLCALL_RATE_SUBSCRIBES", "0"),
    ])
    .await;
    crowd_the_room(&server, 150).await;
    let mut silent = small_buffer_client(&server).await;
    // Subscribe/unsubscribe pairs: each subscribe sends the whole snapshot,
    // ~16 MiB in all, far more than the buffers hold.
    for _ in 0..300 {
        silent.feed(subscribe_frame(CHANNEL)).await.expect("send");
        silent.feed(unsubscribe_frame(CHANNEL)).await.expect("send");
    }
    silent.flush().await.expect("flush");
    let last_frame = Instant::now();
    let took = metric_within(
        &server,
        &closed("pong_timeout"),
        1,
        Duration::from_secs(2) + SLACK,
    )
    .await;
    eprintln!("silent client, write blocked: 4201 decided {took:?} after its last frame");
    metric_within(
        &server,
        "rollcall_websocket_connections",
        0,
        CLOSE_GRACE + SLACK,
    )
    .await;
    assert!(last_frame.elapsed() >= Duration::from_secs(1));
    drop(silent);
    assert_still_serves(&server).await;
}

/// Sends `frames` from a task of its own (the server may stop reading and
/// reset), reads to the close, and checks the refusal.
async fn assert_refused_as_too_large(
    server: &ServerProcess,
    what: &str,
    frames: Vec<Message>,
    clean_end: bool,
) {
    let (ws, _) = connect_async(server.ws_url(APP_KEY))
        .await
        .expect("upgrade");
    let (mut sink, mut stream) = ws.split();
    let hello = next_json(&mut stream)
        .await
        .expect("connection_established");
    assert_eq!(hello["event"], "pusher:connection_established");
    let sender = tokio::spawn(async move {
        for frame in frames {
            if sink.feed(frame).await.is_err() {
                return;
            }
        }
        let _ = sink.flush().await;
        // Keep the write half open until the reader is done.
        std::future::pending::<()>().await;
    });
    let (errors, code, _) = read_to_close(&mut stream).await;
    // After the close frame the connection must end cleanly (EOF), not with
    // a reset, which can make a client lose the frames before it.
    let end = tokio::time::timeout(SLACK, async {
        loop {
            match stream.next().await {
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            }
        }
    })
    .await
    .expect("the connection ends in time");
    sender.abort();
    assert_eq!(
        errors.first().map(|e| e["code"].clone()),
        Some(json!(4100)),
        "{what}: a pusher:error with code 4100 first (got {errors:?})"
    );
    assert_eq!(code, Some(4100), "{what}: closed with 4100");
    if clean_end {
        assert!(
            end.is_ok(),
            "{what}: after the close frame the connection ended with {end:?}"
        );
    }
}

fn fragmented(total: usize, piece: usize) -> Vec<Message> {
    let count = total.div_ceil(piece);
    (0..count)
        .map(|i| {
            let opcode = if i == 0 {
                OpCode::Data(Data::Text)
            } else {
                OpCode::Data(Data::Continue)
            };
            Message::Frame(Frame::message(vec![b'x'; piece], opcode, i + 1 == count))
        })
        .collect()
}

/// Client messages over the limit, of every shape: whole and fragmented,
/// under and over twice the limit, up to 16 MiB in one frame.
fn oversized_messages() -> Vec<(&'static str, Vec<Message>)> {
    let text = |n: usize| vec![Message::text("x".repeat(n))];
    vec![
        ("1.5x the limit", text(MAX_MESSAGE_BYTES * 3 / 2)),
        (
            "1.5x the limit in 512-byte fragments",
            fragmented(MAX_MESSAGE_BYTES * 3 / 2, 512),
        ),
        ("2x the limit + 1", text(2 * MAX_MESSAGE_BYTES + 1)),
        ("1 MiB", text(1 << 20)),
        (SIXTEEN_MIB, text(16 << 20)),
        ("64 KiB in 512-byte fragments", fragmented(64 * 1024, 512)),
    ]
}

/// Past the lingering close's 8 MiB budget: the server stops draining and
/// the rest of the frame meets a reset, by design (no client may make us
/// read without end). The error and close code still arrive first.
const SIXTEEN_MIB: &str = "16 MiB in one frame";

#[tokio::test]
async fn oversized_messages_of_any_size_get_an_error_and_4100() {
    // Up to twice the limit a message is read whole and refused; beyond it
    // tungstenite stops reading at the frame header (or at the fragment
    // that crosses twice the limit). Either way: `pusher:error` 4100, then
    // a 4100 close frame (read here while the client is still sending).
    let server = server(&[]).await;
    let cases = oversized_messages();
    let count = cases.len() as u64;
    for (what, frames) in cases {
        assert_refused_as_too_large(&server, what, frames, false).await;
    }
    metric_within(&server, &closed("too_large"), count, SLACK).await;
    assert_still_serves(&server).await;
}

#[tokio::test]
async fn oversized_messages_end_in_a_clean_close_not_a_reset() {
    // Past twice the limit the rest of the message is never read, and a
    // socket closed with unread input sends a reset, which may make a client
    // lose the error and the close code before it. The connection layer's
    // lingering close drains that input first; this passes once it is in
    // (the `ws` branch alone resets from "2x the limit + 1" on).
    let server = server(&[]).await;
    for (what, frames) in oversized_messages() {
        // A 16 MiB frame outruns the drain budget: its reset may come after
        // the close frame (checked: error and code arrive), never before.
        let within_linger_budget = what != SIXTEEN_MIB;
        assert_refused_as_too_large(&server, what, frames, within_linger_budget).await;
    }
    assert_still_serves(&server).await;
}

#[tokio::test]
async fn resubscribe_floods_cost_one_snapshot_then_close_with_4301() {
    resubscribe_flood(&[]).await;
}

#[tokio::test]
async fn resubscribe_floods_cost_one_snapshot_then_close_with_4301_on_redis() {
    let redis = RedisServer::start().await;
    resubscribe_flood(&[("ROLLCALL_REDIS_URL", &redis.url())]).await;
}

async fn resubscribe_flood(env: &[(&str, &str)]) {
    let mut env = env.to_vec();
    env.push(("ROLLCALL_RATE_SUBSCRIBES", "100/10s"));
    let server = server(&env).await;
    crowd_the_room(&server, 150).await;

    // pusher-js re-subscribing to 100 channels at once fits the burst.
    let mut many = small_buffer_client(&server).await;
    for i in 0..100 {
        many.feed(subscribe_frame(&format!("session.{}", 5000 + i)))
            .await
            .expect("send");
    }
    many.flush().await.expect("flush");
    for _ in 0..100 {
        let frame = next_json(&mut many).await.expect("not closed");
        assert_eq!(frame["event"], "pusher_internal:subscription_succeeded");
    }

    // The first subscribe's snapshot is the unit of cost.
    let mut flood = small_buffer_client(&server).await;
    flood.send(subscribe_frame(CHANNEL)).await.expect("send");
    let mut snapshot_bytes = 0;
    while snapshot_bytes == 0 {
        let msg = flood.next().await.expect("open").expect("frame");
        if let Message::Text(t) = msg
            && t.as_str().contains("attendance.snapshot")
        {
            snapshot_bytes = t.len();
        }
    }
    // Then 1,000 repeats of that 71-byte subscribe, pipelined.
    let repeats = 1_000;
    let sender = {
        let frames: Vec<Message> = (0..repeats).map(|_| subscribe_frame(CHANNEL)).collect();
        let (mut sink, mut stream) = flood.split();
        let sender = tokio::spawn(async move {
            for frame in frames {
                if sink.feed(frame).await.is_err() {
                    break;
                }
            }
            let _ = sink.flush().await;
            std::future::pending::<()>().await;
        });
        let (errors, code, bytes) = read_to_close(&mut stream).await;
        eprintln!(
            "re-subscribe flood: snapshot {snapshot_bytes} B; {repeats} repeats answered with \
             {bytes} B before close {code:?}"
        );
        assert_eq!(code, Some(4301), "closed with 4301");
        assert_eq!(
            errors.last().map(|e| e["code"].clone()),
            Some(json!(4301)),
            "a pusher:error 4301 before the close: {errors:?}"
        );
        // At most one more snapshot (if the run took over 5 s) plus the
        // small `subscription_succeeded` answers within the burst.
        let bound = 2 * snapshot_bytes + 100 * 200;
        assert!(
            bytes <= bound,
            "{bytes} B sent for repeated subscribes (bound {bound} B)"
        );
        sender
    };
    sender.abort();
    assert!(
        metric(&server, "rollcall_rate_limited_total{limit=\"subscribes\"}").await >= 1,
        "counted"
    );
    metric_within(&server, &closed("subscribe_rate"), 1, SLACK).await;
    drop(many);
    assert_still_serves(&server).await;
}

// --- large frames ---------------------------------------------------------

/// People in the room of the large-snapshot tests: ~670 B each in the
/// snapshot, so ~130 KB, sixteen 8 KiB fragments.
const CROWD: usize = 200;

/// The fragment size of large messages (`FRAGMENT_BYTES`, the 8 KiB write
/// buffer).
const FRAGMENT_BYTES: usize = 8 * 1024;

/// A tokio-tungstenite subscriber of `CHANNEL`, past its snapshot (which
/// tokio-tungstenite hands over as one message, however it was framed);
/// returns the socket and the snapshot's text.
async fn past_the_snapshot(
    server: &ServerProcess,
) -> (
    WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
    String,
) {
    let (mut ws, _) = connect_async(server.ws_url(APP_KEY))
        .await
        .expect("connects");
    ws.send(subscribe_frame(CHANNEL)).await.expect("send");
    loop {
        let msg = tokio::time::timeout(SLACK, ws.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .expect("frame");
        if let Message::Text(t) = msg
            && t.as_str().contains("\"attendance.snapshot\"")
        {
            return (ws, t.as_str().to_owned());
        }
    }
}

#[tokio::test]
async fn sockets_sent_a_large_snapshot_keep_only_a_few_kib_each() {
    // tungstenite formats each frame into its write buffer, a Vec that keeps
    // the capacity of the largest frame it ever held: sent whole, a ~130 KB
    // snapshot stayed resident in every socket it went to. Measured (debug
    // build, 300 sockets, 134,553 B snapshot): +135 KiB per socket when sent
    // whole; +11 KiB per socket in 8 KiB fragments (an idle subscribed
    // socket's ~3 KiB plus the write buffer at its 8 KiB working size).
    const SOCKETS: usize = 300;
    const PER_SOCKET_BOUND_KIB: u64 = 24;
    let server = server(&[]).await;
    crowd_the_room(&server, CROWD).await;

    // Warm-up: the store, the snapshot path, allocator arenas.
    let mut sockets = Vec::new();
    let mut snapshot_bytes = 0;
    for _ in 0..20 {
        let (ws, snapshot) = past_the_snapshot(&server).await;
        snapshot_bytes = snapshot.len();
        sockets.push(ws);
    }
    assert!(
        snapshot_bytes > 100 * 1024,
        "the room's snapshot is large ({snapshot_bytes} B)"
    );
    let baseline = server.rss_kib();
    for _ in 0..SOCKETS {
        sockets.push(past_the_snapshot(&server).await.0);
    }
    let after = server.rss_kib();
    let per_socket = after.saturating_sub(baseline) / SOCKETS as u64;
    eprintln!(
        "{SOCKETS} sockets sent a {snapshot_bytes} B snapshot: RSS {baseline} KiB -> \
         {after} KiB (+{per_socket} KiB per socket)"
    );
    assert!(
        per_socket < PER_SOCKET_BOUND_KIB,
        "each socket kept {per_socket} KiB after its {snapshot_bytes} B snapshot"
    );
    drop(sockets);
    assert_still_serves(&server).await;
}

/// The frames of the first fragmented message a raw client subscribed to
/// `CHANNEL` receives (its snapshot), read off the wire with tungstenite's
/// frame codec (no reassembly). Blocking: run it off the runtime.
fn first_fragmented_message(server: std::net::SocketAddr) -> Vec<Frame> {
    use std::io::{Read, Write};
    use tokio_tungstenite::tungstenite::protocol::frame::FrameSocket;

    let mut tcp = std::net::TcpStream::connect(server).expect("connects");
    tcp.set_read_timeout(Some(SLACK)).expect("timeout");
    // RFC 6455's example key, whose accept value the RFC gives.
    write!(
        tcp,
        "GET /app/{APP_KEY}?protocol=7 HTTP/1.1\r\nHost: {server}\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    .expect("handshake sent");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0];
        tcp.read_exact(&mut byte).expect("response head");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head)
        .expect("ASCII head")
        .to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(
        head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=\r\n"),
        "{head}"
    );

    let mut socket = FrameSocket::new(tcp);
    let subscribe = json!({"event": "pusher:subscribe", "data": {"channel": CHANNEL}});
    let mut frame = Frame::message(subscribe.to_string(), OpCode::Data(Data::Text), true);
    // Client frames are masked; a zero key leaves the payload as is.
    frame.header_mut().mask = Some([0; 4]);
    socket.send(frame).expect("subscribe sent");
    let mut frames: Vec<Frame> = Vec::new();
    loop {
        let frame = socket.read(None).expect("read").expect("open");
        let fin = frame.header().is_final;
        // Whole messages before it (connection_established, succeeded).
        if frames.is_empty() && fin {
            continue;
        }
        frames.push(frame);
        if fin {
            return frames;
        }
    }
}

#[tokio::test]
async fn a_large_snapshot_is_sent_in_fragments_and_read_as_one_message() {
    let server = server(&[]).await;
    crowd_the_room(&server, CROWD).await;

    // A WebSocket client reassembles it: one message.
    let (_ws, whole) = past_the_snapshot(&server).await;
    let whole: Value = serde_json::from_str(&whole).expect("JSON");
    assert_eq!(whole["event"], "attendance.snapshot");

    // On the wire: Text with FIN=0, Continuation frames of at most 8 KiB,
    // the last with FIN=1.
    let addr = server.addr;
    let frames = tokio::task::spawn_blocking(move || first_fragmented_message(addr))
        .await
        .expect("raw client");
    let total: usize = frames.iter().map(|f| f.payload().len()).sum();
    eprintln!("a {total} B snapshot arrived in {} frames", frames.len());
    assert!(
        frames.len() >= total / FRAGMENT_BYTES,
        "{} frames",
        frames.len()
    );
    for (i, frame) in frames.iter().enumerate() {
        let expected = if i == 0 { Data::Text } else { Data::Continue };
        assert_eq!(frame.header().opcode, OpCode::Data(expected), "frame {i}");
        assert!(frame.payload().len() <= FRAGMENT_BYTES, "frame {i}");
    }
    let payload: Vec<u8> = frames.iter().flat_map(|f| f.payload().to_vec()).collect();
    let snapshot: Value = serde_json::from_slice(&payload).expect("fragments join into JSON");
    assert_eq!(snapshot["event"], "attendance.snapshot");
    assert_eq!(snapshot["channel"], whole["channel"]);
}

#[tokio::test]
async fn handshakes_we_cannot_accept_are_refused_with_json() {
    let server = server(&[]).await;
    let http = reqwest::Client::new();
    let request = |version: &str, key: Option<&str>| {
        let mut req = http
            .get(server.url(&format!("/app/{APP_KEY}?protocol=7")))
            .header("Connection", "Upgrade")
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", version);
        if let Some(key) = key {
            req = req.header("Sec-WebSocket-Key", key);
        }
        req.send()
    };
    // RFC 6455 §4.4: an unknown version is answered 426 with ours.
    let res = request("8", Some("dGhlIHNhbXBsZSBub25jZQ=="))
        .await
        .unwrap();
    assert_eq!(res.status(), 426);
    assert_eq!(res.headers()["sec-websocket-version"], "13");
    let body: Value = res.json().await.expect("JSON");
    assert_eq!(body["error"], "upgrade_required");

    let res = request("13", None).await.unwrap();
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.expect("JSON");
    assert_eq!(body["error"], "bad_request");
}
