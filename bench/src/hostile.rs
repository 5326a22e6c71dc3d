//! Hostile clients for the soak, each kind bounded in count (connections
//! or workers) and rate, every operation under a timeout, loopback only.
//! They come from their own source address ([`SRC`]) as an attacker
//! would, and count what the server did to them — status codes, close
//! codes, resets, or nothing — in [`Outcomes`]. They run until aborted.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout};
use tokio_tungstenite::tungstenite::{self, Message};

use crate::client::{self, Proto, Ws};

/// Last octet of the hostile clients' source address (127.0.0.66): apart
/// from the subscribers' 127.0.0.1..=16, so per-address limits meet the
/// attacker, not the audience.
pub const SRC: u8 = 66;

/// Longest any single connect, send or handshake step may take.
const OP: Duration = Duration::from_secs(5);
/// Pause before a hostile client reconnects, so each stays within its rate.
const PAUSE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Args)]
pub struct HostileArgs {
    /// Connections (or HTTP workers) of each hostile kind; 0 = none.
    #[arg(long, default_value_t = 4)]
    pub hostile_conns: usize,
    /// Messages per second each ping flooder and re-subscribe flooder sends.
    #[arg(long, default_value_t = 100.0)]
    pub flood_rate: f64,
    /// Requests per second each wrong-bearer worker sends.
    #[arg(long, default_value_t = 20.0)]
    pub bearer_rate: f64,
    /// Seconds between a slowloris connection's header bytes.
    #[arg(long, default_value_t = 3)]
    pub slowloris_gap_secs: u64,
    /// Longest a hostile connection is kept before it gives up and
    /// reconnects (counted as "still open after ...").
    #[arg(long, default_value_t = 90)]
    pub hostile_hold_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    PingFlood,
    StalledReader,
    Slowloris,
    SilentTcp,
    Oversized,
    ResubscribeFlood,
    WrongBearer,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::PingFlood,
        Kind::StalledReader,
        Kind::Slowloris,
        Kind::SilentTcp,
        Kind::Oversized,
        Kind::ResubscribeFlood,
        Kind::WrongBearer,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::PingFlood => "ping-flood",
            Kind::StalledReader => "stalled-reader",
            Kind::Slowloris => "slowloris",
            Kind::SilentTcp => "silent-tcp",
            Kind::Oversized => "oversized-ws",
            Kind::ResubscribeFlood => "resubscribe-flood",
            Kind::WrongBearer => "wrong-bearer",
        }
    }
}

/// What the hostile clients got, and how many of their connections are
/// open right now (the server keeping them is what the soak watches).
#[derive(Default)]
pub struct Outcomes {
    counts: Mutex<BTreeMap<(Kind, String), u64>>,
    open: [AtomicI64; 7],
    /// Outcomes recorded so far (all kinds), for per-interval deltas.
    pub events: AtomicU64,
}

/// Counts one open hostile connection until dropped.
pub struct Open<'a>(&'a AtomicI64);

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Outcomes {
    pub fn record(&self, kind: Kind, outcome: impl Into<String>) {
        self.add(kind, outcome, 1);
        self.events.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n` to a tally that is not an outcome (e.g. messages sent).
    pub fn add(&self, kind: Kind, what: impl Into<String>, n: u64) {
        if n > 0 {
            *self
                .counts
                .lock()
                .unwrap()
                .entry((kind, what.into()))
                .or_default() += n;
        }
    }

    pub fn opened(&self, kind: Kind) -> Open<'_> {
        let gauge = &self.open[kind as usize];
        gauge.fetch_add(1, Ordering::Relaxed);
        Open(gauge)
    }

    pub fn open_now(&self, kind: Kind) -> i64 {
        self.open[kind as usize].load(Ordering::Relaxed)
    }

    /// Every tally, kind by kind.
    pub fn summary(&self) -> Vec<(Kind, Vec<(String, u64)>)> {
        let counts = self.counts.lock().unwrap();
        Kind::ALL
            .iter()
            .map(|&k| {
                let rows = counts
                    .iter()
                    .filter(|((kind, _), _)| *kind == k)
                    .map(|((_, what), n)| (what.clone(), *n))
                    .collect();
                (k, rows)
            })
            .collect()
    }
}

/// Where the hostile clients aim.
pub struct Target {
    /// `http://127.0.0.1:port`.
    pub base: String,
    pub ws_url: String,
    /// Channels of the soak's rooms (busy ones, for the stalled readers).
    pub channels: Vec<String>,
    /// A room name for the session API.
    pub room: String,
}

/// Starts every hostile kind; abort the returned set to stop them.
pub fn spawn(a: &HostileArgs, target: Arc<Target>, out: Arc<Outcomes>) -> JoinSet<()> {
    let mut set = JoinSet::new();
    let hold = Duration::from_secs(a.hostile_hold_secs.max(1));
    let flood_gap = Duration::from_secs_f64(1.0 / a.flood_rate.max(0.01));
    let bearer_gap = Duration::from_secs_f64(1.0 / a.bearer_rate.max(0.01));
    let slow_gap = Duration::from_secs(a.slowloris_gap_secs.max(1));
    for i in 0..a.hostile_conns {
        let (t, o) = (target.clone(), out.clone());
        set.spawn(async move { ping_flood(&t, flood_gap, hold, &o).await });
        let (t, o) = (target.clone(), out.clone());
        set.spawn(async move { stalled_reader(&t, hold, &o).await });
        let (t, o) = (target.clone(), out.clone());
        set.spawn(async move { slowloris(&t, slow_gap, hold, &o).await });
        let (t, o) = (target.clone(), out.clone());
        set.spawn(async move { silent_tcp(&t, hold, &o).await });
        let (t, o) = (target.clone(), out.clone());
        set.spawn(async move { oversized(&t, &o).await });
        let (t, o) = (target.clone(), out.clone());
        let channel = target.channels[i % target.channels.len()].clone();
        set.spawn(async move { resubscribe_flood(&t, &channel, flood_gap, hold, &o).await });
        let (t, o) = (target.clone(), out.clone());
        set.spawn(async move { wrong_bearer(&t, bearer_gap, &o).await });
    }
    set
}

// ------------------------------------------------------------ helpers

/// A coarse bucket for how long a connection lasted (keeps the number of
/// distinct outcomes small).
fn held(d: Duration) -> &'static str {
    match d.as_secs() {
        0..10 => "<10 s",
        10..30 => "10-30 s",
        30..60 => "30-60 s",
        _ => ">=60 s",
    }
}

/// One word for a WebSocket error.
fn ws_error(e: &tungstenite::Error) -> String {
    use tungstenite::Error as E;
    use tungstenite::error::ProtocolError as P;
    match e {
        E::Io(io) => io_error(io),
        E::ConnectionClosed | E::AlreadyClosed => "closed".into(),
        E::Protocol(P::ResetWithoutClosingHandshake) => "reset (no close frame)".into(),
        E::Protocol(p) => format!("protocol error: {p}"),
        E::Capacity(_) => "capacity error".into(),
        E::Http(r) => format!("HTTP {}", r.status().as_u16()),
        other => format!("error: {other}"),
    }
}

fn io_error(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionReset => "reset".into(),
        K::BrokenPipe => "broken pipe".into(),
        K::ConnectionRefused => "connection refused".into(),
        K::UnexpectedEof => "closed".into(),
        k => format!("io error: {k}"),
    }
}

/// Why a WebSocket connect failed, in a few words (the HTTP status when
/// the server refused the upgrade).
fn connect_error(e: &anyhow::Error) -> String {
    match e.downcast_ref::<tungstenite::Error>() {
        Some(w) => format!("connect refused: {}", ws_error(w)),
        None if e.to_string().contains("timed out") => "connect timed out".into(),
        None => match e.downcast_ref::<std::io::Error>() {
            Some(io) => format!("connect failed: {}", io_error(io)),
            None => "connect failed".into(),
        },
    }
}

async fn connect_ws(url: &str, rcvbuf: Option<u32>) -> anyhow::Result<Ws> {
    timeout(OP, client::open_with(url, SRC, rcvbuf))
        .await
        .map_err(|_| anyhow::anyhow!("timed out"))?
}

async fn connect_tcp(base: &str) -> std::io::Result<TcpStream> {
    let dest: SocketAddr = base
        .trim_start_matches("http://")
        .parse()
        .map_err(|_| std::io::Error::other("base must be http://ip:port"))?;
    assert!(dest.ip().is_loopback(), "loopback only");
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::new(127, 0, 0, SRC),
        0,
    )))?;
    timeout(OP, socket.connect(dest))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

/// Reads what is left on a socket (for at most `within`), looking for how
/// the server ended it: the last `pusher:error` code and the close code.
async fn how_it_ended(ws: &mut Ws, within: Duration) -> String {
    let deadline = tokio::time::Instant::now() + within;
    let mut error_code: Option<String> = None;
    let end = loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => break "no close within the wait".to_string(),
            Ok(None) => break "ended without close frame".into(),
            Ok(Some(Err(e))) => break ws_error(&e),
            Ok(Some(Ok(Message::Close(c)))) => {
                break match c {
                    Some(c) => format!("close {}", u16::from(c.code)),
                    None => "close (no code)".into(),
                };
            }
            Ok(Some(Ok(Message::Text(t)))) => {
                if t.as_str().contains("pusher:error") {
                    error_code = Some(pusher_error_code(t.as_str()));
                }
            }
            Ok(Some(Ok(_))) => {}
        }
    };
    match error_code {
        Some(code) => format!("pusher:error {code}, {end}"),
        None => end,
    }
}

/// The `code` of a `pusher:error` frame (its `data` may be an object or a
/// JSON string, depending on the server).
fn pusher_error_code(frame: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(frame).unwrap_or_default();
    let data = match &v["data"] {
        serde_json::Value::String(s) => serde_json::from_str(s).unwrap_or_default(),
        d => d.clone(),
    };
    match &data["code"] {
        serde_json::Value::Null => "(no code)".into(),
        c => c.to_string(),
    }
}

/// The status code of an HTTP response's first line, if it is one.
fn http_status(head: &[u8]) -> Option<u16> {
    let line = std::str::from_utf8(head).ok()?.lines().next()?;
    let mut parts = line.split_whitespace();
    parts.next()?.starts_with("HTTP/").then_some(())?;
    parts.next()?.parse().ok()
}

// ------------------------------------------------------------ the kinds

/// Sends `pusher:ping` at a fixed rate and never reads: the pongs pile up
/// in the server unless it stops reading or closes the socket.
async fn ping_flood(t: &Target, gap: Duration, hold: Duration, out: &Outcomes) {
    let kind = Kind::PingFlood;
    let ping = Message::text(r#"{"event":"pusher:ping","data":{}}"#);
    loop {
        let mut ws = match connect_ws(&t.ws_url, Some(4096)).await {
            Ok(ws) => ws,
            Err(e) => {
                out.record(kind, connect_error(&e));
                sleep(PAUSE).await;
                continue;
            }
        };
        let _open = out.opened(kind);
        let start = Instant::now();
        let mut tick = tokio::time::interval(gap);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stopped = loop {
            tick.tick().await;
            if start.elapsed() > hold {
                break format!("still open after {} s", hold.as_secs());
            }
            match timeout(OP, ws.send(ping.clone())).await {
                Err(_) => break "send stalled 5 s (server stopped reading)".to_string(),
                Ok(Err(e)) => break format!("send failed: {}", ws_error(&e)),
                Ok(Ok(())) => out.add(kind, "pings sent", 1),
            }
        };
        let ended = how_it_ended(&mut ws, Duration::from_secs(3)).await;
        out.record(
            kind,
            format!("{stopped}; then {ended} ({})", held(start.elapsed())),
        );
        drop(ws);
        sleep(PAUSE).await;
    }
}

/// Subscribes to every soak channel on one socket with a small receive
/// buffer, then stops reading: the updates back up into the server.
async fn stalled_reader(t: &Target, hold: Duration, out: &Outcomes) {
    let kind = Kind::StalledReader;
    loop {
        let mut ws = match connect_ws(&t.ws_url, Some(4096)).await {
            Ok(ws) => ws,
            Err(e) => {
                out.record(kind, connect_error(&e));
                sleep(PAUSE).await;
                continue;
            }
        };
        let _open = out.opened(kind);
        let first = &t.channels[0];
        match timeout(OP * 2, client::handshake(&mut ws, Proto::Pusher, first)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                out.record(kind, format!("subscribe refused: {}", short(&e)));
                sleep(PAUSE).await;
                continue;
            }
            Err(_) => {
                out.record(kind, "subscribe timed out");
                sleep(PAUSE).await;
                continue;
            }
        }
        let mut refused = None;
        for ch in &t.channels[1..] {
            let sub = serde_json::json!({"event":"pusher:subscribe","data":{"channel":ch}});
            if let Err(e) | Ok(Err(e)) = timeout(OP, ws.send(Message::text(sub.to_string())))
                .await
                .map_err(|_| tungstenite::Error::Io(std::io::ErrorKind::TimedOut.into()))
            {
                refused = Some(ws_error(&e));
                break;
            }
        }
        if let Some(e) = refused {
            out.record(kind, format!("subscribing failed: {e}"));
        } else {
            // Not reading: only the kernel's buffers take the updates.
            sleep(hold).await;
            let ended = how_it_ended(&mut ws, Duration::from_secs(5)).await;
            let ended = if ended == "no close within the wait" {
                format!("not closed in {} s of not reading", hold.as_secs())
            } else {
                format!("closed while not reading: {ended}")
            };
            out.record(kind, ended);
        }
        drop(ws);
        sleep(PAUSE).await;
    }
}

/// An HTTP request whose headers arrive one byte every `gap`, never ending.
async fn slowloris(t: &Target, gap: Duration, hold: Duration, out: &Outcomes) {
    let kind = Kind::Slowloris;
    let request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
    loop {
        let mut tcp = match connect_tcp(&t.base).await {
            Ok(s) => s,
            Err(e) => {
                out.record(kind, format!("connect failed: {}", io_error(&e)));
                sleep(PAUSE).await;
                continue;
            }
        };
        let _open = out.opened(kind);
        let start = Instant::now();
        let mut next = 0usize;
        let mut buf = [0u8; 512];
        let ended = loop {
            if start.elapsed() > hold {
                break format!("still open after {} s", hold.as_secs());
            }
            tokio::select! {
                r = tcp.read(&mut buf) => break match r {
                    Ok(0) => format!("closed, no response ({})", held(start.elapsed())),
                    Ok(n) => match http_status(&buf[..n]) {
                        Some(s) => format!("status {s} ({})", held(start.elapsed())),
                        None => "non-HTTP answer".into(),
                    },
                    Err(e) => format!("{} ({})", io_error(&e), held(start.elapsed())),
                },
                _ = sleep(gap) => {
                    let byte = [*request.get(next).unwrap_or(&b'a')];
                    next += 1;
                    match timeout(OP, tcp.write_all(&byte)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => break format!("write failed: {} ({})", io_error(&e), held(start.elapsed())),
                        Err(_) => break "write stalled".into(),
                    }
                }
            }
        };
        out.record(kind, ended);
        drop(tcp);
        sleep(PAUSE).await;
    }
}

/// A TCP connection that never sends a byte.
async fn silent_tcp(t: &Target, hold: Duration, out: &Outcomes) {
    let kind = Kind::SilentTcp;
    loop {
        let mut tcp = match connect_tcp(&t.base).await {
            Ok(s) => s,
            Err(e) => {
                out.record(kind, format!("connect failed: {}", io_error(&e)));
                sleep(PAUSE).await;
                continue;
            }
        };
        let _open = out.opened(kind);
        let start = Instant::now();
        let mut buf = [0u8; 512];
        let ended = match timeout(hold, tcp.read(&mut buf)).await {
            Err(_) => format!("still open after {} s", hold.as_secs()),
            Ok(Ok(0)) => format!("closed by server ({})", held(start.elapsed())),
            Ok(Ok(n)) => match http_status(&buf[..n]) {
                Some(s) => format!("status {s} ({})", held(start.elapsed())),
                None => "non-HTTP answer".into(),
            },
            Ok(Err(e)) => format!("{} ({})", io_error(&e), held(start.elapsed())),
        };
        out.record(kind, ended);
        drop(tcp);
        sleep(PAUSE).await;
    }
}

/// A 64 KiB WebSocket message (the contract's limit is far smaller), about
/// once a second per connection.
async fn oversized(t: &Target, out: &Outcomes) {
    let kind = Kind::Oversized;
    let channel = "x".repeat(64 * 1024);
    let big =
        serde_json::json!({"event":"pusher:subscribe","data":{"channel":channel}}).to_string();
    loop {
        let mut ws = match connect_ws(&t.ws_url, None).await {
            Ok(ws) => ws,
            Err(e) => {
                out.record(kind, connect_error(&e));
                sleep(PAUSE).await;
                continue;
            }
        };
        let _open = out.opened(kind);
        let ended = match timeout(OP, ws.send(Message::text(big.clone()))).await {
            Err(_) => "send stalled".to_string(),
            Ok(Err(e)) => format!("send failed: {}", ws_error(&e)),
            Ok(Ok(())) => how_it_ended(&mut ws, OP).await,
        };
        out.record(kind, ended);
        drop(ws);
        sleep(PAUSE).await;
    }
}

/// Unsubscribes and re-subscribes one channel at a fixed rate (each
/// subscribe asks the server for a fresh snapshot), reading what comes.
async fn resubscribe_flood(
    t: &Target,
    channel: &str,
    gap: Duration,
    hold: Duration,
    out: &Outcomes,
) {
    let kind = Kind::ResubscribeFlood;
    let unsub = Message::text(
        serde_json::json!({"event":"pusher:unsubscribe","data":{"channel":channel}}).to_string(),
    );
    let sub = Message::text(
        serde_json::json!({"event":"pusher:subscribe","data":{"channel":channel}}).to_string(),
    );
    loop {
        let mut ws = match connect_ws(&t.ws_url, None).await {
            Ok(ws) => ws,
            Err(e) => {
                out.record(kind, connect_error(&e));
                sleep(PAUSE).await;
                continue;
            }
        };
        let _open = out.opened(kind);
        let start = Instant::now();
        if let Err(e) | Ok(Err(e)) =
            timeout(OP * 2, client::handshake(&mut ws, Proto::Pusher, channel))
                .await
                .map_err(|_| anyhow::anyhow!("timed out"))
        {
            out.record(kind, format!("subscribe refused: {}", short(&e)));
            sleep(PAUSE).await;
            continue;
        }
        let (mut tx, mut rx) = ws.split();
        let mut tick = tokio::time::interval(gap);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let ended = loop {
            if start.elapsed() > hold {
                break format!("still open after {} s", hold.as_secs());
            }
            tokio::select! {
                _ = tick.tick() => {
                    let pair = async {
                        tx.feed(unsub.clone()).await?;
                        tx.send(sub.clone()).await
                    };
                    match timeout(OP, pair).await {
                        Ok(Ok(())) => out.add(kind, "re-subscribes sent", 1),
                        Ok(Err(e)) => break format!("send failed: {}", ws_error(&e)),
                        Err(_) => break "send stalled 5 s".into(),
                    }
                }
                msg = rx.next() => match msg {
                    None => break "ended without close frame".into(),
                    Some(Err(e)) => break ws_error(&e),
                    Some(Ok(Message::Close(c))) => break match c {
                        Some(c) => format!("close {}", u16::from(c.code)),
                        None => "close (no code)".into(),
                    },
                    Some(Ok(Message::Text(t))) => {
                        let t = t.as_str();
                        if t.contains("subscription_succeeded") {
                            out.add(kind, "subscriptions confirmed", 1);
                        } else if t.contains("attendance.snapshot") {
                            out.add(kind, "snapshots received", 1);
                        } else if t.contains("pusher:error") {
                            out.add(kind, format!("pusher:error {} frames", pusher_error_code(t)), 1);
                        }
                    }
                    Some(Ok(_)) => {}
                },
            }
        };
        out.record(kind, format!("{ended} ({})", held(start.elapsed())));
        sleep(PAUSE).await;
    }
}

/// `GET /api/sessions/{room}/attendance` with a wrong bearer, at a fixed
/// rate; counts statuses, and whether refusals carry the contract's JSON.
async fn wrong_bearer(t: &Target, gap: Duration, out: &Outcomes) {
    let kind = Kind::WrongBearer;
    let http = match reqwest::Client::builder()
        .local_address(std::net::IpAddr::V4(Ipv4Addr::new(127, 0, 0, SRC)))
        .timeout(OP)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            out.record(kind, format!("no HTTP client: {e}"));
            return;
        }
    };
    let url = format!("{}/api/sessions/{}/attendance", t.base, t.room);
    let mut tick = tokio::time::interval(gap);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for i in 0u64.. {
        tick.tick().await;
        let r = http
            .get(&url)
            .header("Authorization", format!("Bearer wrong-{i}"))
            .send()
            .await;
        let outcome = match r {
            Err(e) if e.is_timeout() => "timed out".to_string(),
            Err(e) if e.is_connect() => "connect failed".into(),
            Err(_) => "transport error".into(),
            Ok(r) => {
                let status = r.status().as_u16();
                let retry_after = r.headers().contains_key("retry-after");
                let body = timeout(OP, r.bytes()).await.ok().and_then(Result::ok);
                let contract = body
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                    .is_some_and(|v| v["error"].is_string() && v["message"].is_string());
                format!(
                    "status {status}{}{}",
                    if status == 429 && !retry_after {
                        " without Retry-After"
                    } else {
                        ""
                    },
                    if contract {
                        ""
                    } else {
                        " (body not the contract's JSON)"
                    }
                )
            }
        };
        out.record(kind, outcome);
    }
}

fn short(e: &anyhow::Error) -> String {
    let s = format!("{e:#}");
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pusher_error_codes_in_both_shapes() {
        let object = r#"{"event":"pusher:error","data":{"code":4100,"message":"x"}}"#;
        let string = r#"{"event":"pusher:error","data":"{\"code\":4301,\"message\":\"x\"}"}"#;
        assert_eq!(pusher_error_code(object), "4100");
        assert_eq!(pusher_error_code(string), "4301");
        assert_eq!(http_status(b"HTTP/1.1 408 Request Timeout\r\n"), Some(408));
        assert_eq!(http_status(b"garbage"), None);
    }
}
