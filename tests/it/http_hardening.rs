//! The HTTP connection layer against hostile and slow clients, over raw
//! sockets: every phase of a connection has a deadline, every refusal is the
//! contract's JSON, caps leave room for others, and answers survive the
//! close (lingering). Limits are set low per test; bounds are measured with
//! timers and generous margins (a loaded 2-core box).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;
use crate::process::ServerProcess;

/// Slack allowed past a deadline before a test calls it missed.
const MARGIN: Duration = Duration::from_millis(1500);

/// A raw HTTP/1.1 client connection.
struct Conn {
    reader: OwnedReadHalf,
    /// `None` once handed to a task that writes on its own.
    writer: Option<OwnedWriteHalf>,
    /// Received and not yet returned as a reply.
    buf: Vec<u8>,
}

#[derive(Debug)]
struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("a JSON body: {}", String::from_utf8_lossy(&self.body)))
    }

    /// The contract's error shape with this code.
    fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        let json = self.json();
        assert_eq!(json["error"], code, "{json}");
        assert!(json["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(
            self.head
                .to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{}",
            self.head
        );
    }

    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

impl Conn {
    async fn open(addr: SocketAddr) -> Self {
        Self::from(TcpStream::connect(addr).await.expect("connect"))
    }

    /// A connection whose source address is `source` (another loopback
    /// address stands for another client).
    async fn open_from(source: Ipv4Addr, addr: SocketAddr) -> Self {
        let socket = TcpSocket::new_v4().unwrap();
        socket
            .bind(SocketAddr::new(IpAddr::V4(source), 0))
            .expect("bind the source address");
        Self::from(socket.connect(addr).await.expect("connect"))
    }

    fn from(stream: TcpStream) -> Self {
        let (reader, writer) = stream.into_split();
        Self {
            reader,
            writer: Some(writer),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        let writer = self.writer.as_mut().expect("the write half");
        writer.write_all(bytes).await.expect("send");
    }

    /// Sends `bytes` from a task of its own, in pieces of `piece` bytes
    /// `pause` apart, ignoring errors (the server may close first).
    fn send_in_background(&mut self, bytes: Vec<u8>, piece: usize, pause: Duration) {
        let mut writer = self.writer.take().expect("the write half");
        tokio::spawn(async move {
            for part in bytes.chunks(piece) {
                if writer.write_all(part).await.is_err() {
                    return;
                }
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
            }
            // Keep the connection open; the server is the one to close it.
            std::future::pending::<()>().await;
        });
    }

    /// Reads more; false at EOF or on an error.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout(GUARD, self.reader.read(&mut chunk))
            .await
            .expect("the server answers or closes within the guard time")
        {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// The next whole response (framed by its Content-Length).
    async fn reply(&mut self) -> Reply {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_string();
                let status = head
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .expect("a status line");
                let mut reply = Reply {
                    status,
                    head,
                    body: Vec::new(),
                };
                let len: usize = reply
                    .header("content-length")
                    .map(|v| v.parse().unwrap())
                    .unwrap_or(0);
                while self.buf.len() < end + 4 + len {
                    assert!(self.fill().await, "closed mid-body");
                }
                reply.body = self.buf[end + 4..end + 4 + len].to_vec();
                self.buf.drain(..end + 4 + len);
                return reply;
            }
            assert!(
                self.fill().await,
                "closed before a response; got {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        }
    }

    /// Waits for the server to close; true if it closed cleanly (EOF, not
    /// a reset).
    async fn closed(&mut self) -> bool {
        let mut chunk = [0u8; 1024];
        loop {
            match tokio::time::timeout(GUARD, self.reader.read(&mut chunk))
                .await
                .expect("closed within the guard time")
            {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(_) => return false,
            }
        }
    }
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: rollcall\r\n\r\n")
}

/// A signed `participant_joined` webhook as raw request bytes with `body`
/// framed as the caller says.
fn signed_joined() -> (String, String) {
    let body = joined(
        ROOM,
        "7_Ameer_Maher",
        "PA_1",
        rollcall::domain::now_millis() - 1000,
        &event_id(),
    );
    let now = rollcall::domain::now_millis() / 1000;
    let token = rollcall::livekit::sign_webhook("devkey", "secret", body.as_bytes(), now, 300);
    (body, token)
}

#[tokio::test]
async fn a_silent_connection_gets_a_408_and_is_closed_in_time() {
    let timeout = Duration::from_millis(400);
    let app = spawn_app_with(|s| s.http.header_timeout = timeout).await;
    let started = Instant::now();
    let mut conn = Conn::open(app.addr).await;
    let reply = conn.reply().await;
    let elapsed = started.elapsed();
    reply.assert_error(408, "request_timeout");
    assert!(conn.closed().await, "closed cleanly after the 408");
    assert!(elapsed >= timeout, "not before the timeout: {elapsed:?}");
    assert!(elapsed < timeout + MARGIN, "took {elapsed:?}");
    app.metric_reaches("rollcall_http_timeouts_total{phase=\"header\"}", 1)
        .await;
}

#[tokio::test]
async fn slowloris_gets_a_408_within_the_header_timeout() {
    let timeout = Duration::from_secs(1);
    let app = spawn_app_with(|s| s.http.header_timeout = timeout).await;
    let mut conn = Conn::open(app.addr).await;
    let started = Instant::now();
    // One byte every 200 ms: the head would take minutes.
    let head = get("/healthz").replace("\r\n\r\n", "\r\n") + &"X-Slow: a\r\n".repeat(100);
    conn.send_in_background(head.into_bytes(), 1, Duration::from_millis(200));
    let reply = conn.reply().await;
    let elapsed = started.elapsed();
    reply.assert_error(408, "request_timeout");
    assert!(conn.closed().await);
    assert!(elapsed < timeout + MARGIN, "took {elapsed:?}");
}

#[tokio::test]
async fn a_slow_body_gets_a_408() {
    let timeout = Duration::from_millis(500);
    let app = spawn_app_with(|s| s.http.body_timeout = timeout).await;
    let mut conn = Conn::open(app.addr).await;
    let started = Instant::now();
    conn.send(
        b"POST /webhooks/livekit HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789",
    )
    .await;
    let reply = conn.reply().await;
    let elapsed = started.elapsed();
    reply.assert_error(408, "request_timeout");
    assert!(conn.closed().await);
    assert!(elapsed >= timeout, "not before the timeout: {elapsed:?}");
    assert!(elapsed < timeout + MARGIN, "took {elapsed:?}");
    app.metric_reaches("rollcall_http_timeouts_total{phase=\"body\"}", 1)
        .await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_in_time() {
    let idle = Duration::from_millis(500);
    let app = spawn_app_with(|s| s.http.idle_timeout = idle).await;
    let mut conn = Conn::open(app.addr).await;
    conn.send(get("/healthz").as_bytes()).await;
    assert_eq!(conn.reply().await.status, 200);
    let answered = Instant::now();
    assert!(conn.closed().await, "closed silently, without a reset");
    let elapsed = answered.elapsed();
    assert!(conn.buf.is_empty(), "nothing sent on an idle close");
    assert!(elapsed >= idle - Duration::from_millis(50), "{elapsed:?}");
    assert!(elapsed < idle + MARGIN, "took {elapsed:?}");
    app.metric_reaches("rollcall_http_timeouts_total{phase=\"idle\"}", 1)
        .await;
}

#[tokio::test]
async fn a_keep_alive_client_slower_than_the_header_timeout_is_not_cut() {
    // Requests 600 ms apart: longer than the header timeout (which starts
    // at a head's first byte), shorter than the idle timeout.
    let app = spawn_app_with(|s| {
        s.http.header_timeout = Duration::from_millis(300);
        s.http.idle_timeout = Duration::from_secs(5);
    })
    .await;
    let mut conn = Conn::open(app.addr).await;
    for _ in 0..4 {
        conn.send(get("/healthz").as_bytes()).await;
        assert_eq!(conn.reply().await.status, 200);
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
}

#[tokio::test]
async fn oversized_and_malformed_heads_get_the_contracts_errors() {
    let app = spawn_app().await;
    // 64 KiB of headers.
    let mut conn = Conn::open(app.addr).await;
    let big = get("/healthz").replace("\r\n\r\n", "\r\n")
        + &format!("X-Big: {}\r\n", "a".repeat(1000)).repeat(64)
        + "\r\n";
    conn.send_in_background(big.into_bytes(), 64 * 1024, Duration::ZERO);
    conn.reply().await.assert_error(431, "headers_too_large");
    assert!(conn.closed().await);
    // More than 100 headers, each small.
    let mut conn = Conn::open(app.addr).await;
    let many = get("/healthz").replace("\r\n\r\n", "\r\n") + &"X-A: b\r\n".repeat(101) + "\r\n";
    conn.send(many.as_bytes()).await;
    conn.reply().await.assert_error(431, "headers_too_large");
    // A garbage request line, answered without waiting for more.
    let mut conn = Conn::open(app.addr).await;
    conn.send(b"GARBAGE\r\n").await;
    conn.reply().await.assert_error(400, "malformed_request");
    assert!(conn.closed().await);
    // TLS sent to the plain-text port (no line end at all), answered at once.
    let mut conn = Conn::open(app.addr).await;
    conn.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        .await;
    conn.reply().await.assert_error(400, "malformed_request");
    // Heads hyper would refuse with a bodyless 400.
    for head in [
        "GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
        "POST /webhooks/livekit HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        "POST /webhooks/livekit HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\nBad Header: x\r\n\r\n",
    ] {
        let mut conn = Conn::open(app.addr).await;
        conn.send(head.as_bytes()).await;
        conn.reply().await.assert_error(400, "malformed_request");
    }
}

#[tokio::test]
async fn pipelined_requests_and_chunked_bodies_are_served() {
    let app = spawn_app().await;
    let mut conn = Conn::open(app.addr).await;
    // Two requests in one write.
    conn.send(format!("{}{}", get("/healthz"), get("/no-such-page")).as_bytes())
        .await;
    assert_eq!(conn.reply().await.status, 200);
    assert_eq!(conn.reply().await.status, 404);
    // A chunked webhook body, and a request right behind it in the same
    // write: the chunks are framed, so the next head is still a head.
    let (body, token) = signed_joined();
    let (a, b) = body.split_at(body.len() / 2);
    let chunked = format!(
        "POST /webhooks/livekit HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\nContent-Type: application/webhook+json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x};ext=1\r\n{b}\r\n0\r\n\r\n{}",
        a.len(),
        b.len(),
        get("/healthz")
    );
    conn.send(chunked.as_bytes()).await;
    let reply = conn.reply().await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(conn.reply().await.status, 200);
}

#[tokio::test]
async fn expect_100_continue_and_http_1_0_are_served() {
    let app = spawn_app().await;
    let mut conn = Conn::open(app.addr).await;
    let (body, token) = signed_joined();
    conn.send(
        format!(
            "POST /webhooks/livekit HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\nContent-Type: application/webhook+json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(conn.reply().await.status, 100);
    conn.send(body.as_bytes()).await;
    assert_eq!(conn.reply().await.status, 200);
    conn.send(get("/healthz").as_bytes()).await;
    assert_eq!(conn.reply().await.status, 200, "still keep-alive");
    let mut old = Conn::open(app.addr).await;
    old.send(b"GET /healthz HTTP/1.0\r\n\r\n").await;
    assert_eq!(old.reply().await.status, 200);
    assert!(old.closed().await, "HTTP/1.0 closes after the answer");
}

#[tokio::test]
async fn every_request_carries_its_tcp_peer() {
    use axum::extract::ConnectInfo;
    let router = axum::Router::new().route(
        "/peer",
        axum::routing::get(
            |ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let drain = tokio_util::sync::CancellationToken::new();
    let served = tokio::spawn(rollcall::server::serve(
        listener,
        router,
        rollcall::server::HttpLimits::default(),
        rollcall::server::ConnectionBudget::unlimited(),
        std::sync::Arc::new(rollcall::metrics::Metrics::default()),
        drain.clone(),
    ));
    let mut conn = Conn::open_from(Ipv4Addr::new(127, 0, 0, 2), addr).await;
    let local = conn.reader.local_addr().unwrap();
    for _ in 0..2 {
        conn.send(get("/peer").as_bytes()).await;
        let reply = conn.reply().await;
        assert_eq!(String::from_utf8_lossy(&reply.body), local.to_string());
    }
    drain.cancel();
    tokio::time::timeout(GUARD, served)
        .await
        .expect("the accept loop drains")
        .unwrap();
}

#[tokio::test]
async fn the_http_cap_answers_503_with_retry_after() {
    let app = spawn_app_with(|s| s.http.max_connections = 2).await;
    let mut held = vec![Conn::open(app.addr).await, Conn::open(app.addr).await];
    for conn in &mut held {
        conn.send(get("/healthz").as_bytes()).await;
        assert_eq!(conn.reply().await.status, 200);
    }
    let mut over = Conn::open(app.addr).await;
    over.send(get("/healthz").as_bytes()).await;
    let reply = over.reply().await;
    reply.assert_error(503, "over_capacity");
    assert_eq!(reply.header("retry-after").as_deref(), Some("1"));
    assert!(over.closed().await);
    // One that sends nothing is refused too, without waiting for the
    // header timeout (10 s here).
    let started = Instant::now();
    let mut silent = Conn::open(app.addr).await;
    silent.reply().await.assert_error(503, "over_capacity");
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(2) + MARGIN,
        "took {elapsed:?}"
    );
    // A freed slot is usable again.
    drop(held.pop());
    let deadline = Instant::now() + GUARD;
    loop {
        let mut conn = Conn::open(app.addr).await;
        conn.send(get("/metrics").as_bytes()).await;
        let reply = conn.reply().await;
        if reply.status == 200 {
            let text = String::from_utf8_lossy(&reply.body).to_string();
            assert!(
                text.contains("rollcall_connections_refused_total{reason=\"http_cap\"} 2"),
                "{text}"
            );
            assert!(text.contains("rollcall_http_connections 2"), "{text}");
            break;
        }
        assert!(Instant::now() < deadline, "the slot was never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_per_address_cap_leaves_room_for_other_addresses() {
    let app = spawn_app_with(|s| s.http.max_connections_per_ip = 2).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut conn = Conn::open(app.addr).await;
        conn.send(get("/healthz").as_bytes()).await;
        assert_eq!(conn.reply().await.status, 200);
        held.push(conn);
    }
    let mut over = Conn::open(app.addr).await;
    over.send(get("/healthz").as_bytes()).await;
    let reply = over.reply().await;
    reply.assert_error(503, "over_capacity");
    assert_eq!(reply.header("retry-after").as_deref(), Some("1"));
    // Another client (a second loopback address) is still served.
    let mut other = Conn::open_from(Ipv4Addr::new(127, 0, 0, 2), app.addr).await;
    other.send(get("/healthz").as_bytes()).await;
    assert_eq!(other.reply().await.status, 200);
    drop(held);
    app.metric_reaches(
        "rollcall_connections_refused_total{reason=\"http_per_ip\"}",
        1,
    )
    .await;
}

#[tokio::test]
async fn the_fd_reserve_keeps_health_checks_and_webhooks_served() {
    const LIMIT: u64 = 256;
    let server = ServerProcess::spawn_with_fd_limit(&[("ROLLCALL_FD_RESERVE", "64")], LIMIT).await;
    let mut sockets = Vec::new();
    let refused = loop {
        assert!(sockets.len() < LIMIT as usize, "never refused");
        let (mut ws, _) = tokio_tungstenite::connect_async(server.ws_url("rollcall-key"))
            .await
            .expect("upgraded (refusals are upgraded too)");
        let first = tokio::time::timeout(GUARD, ws.next())
            .await
            .expect("a first frame")
            .expect("a frame")
            .expect("a frame");
        let text = first.into_text().expect("a text frame").to_string();
        if text.contains("pusher:connection_established") {
            sockets.push(ws);
            continue;
        }
        assert!(
            text.contains("pusher:error") && text.contains("4100"),
            "{text}"
        );
        let close = loop {
            match tokio::time::timeout(GUARD, ws.next())
                .await
                .expect("a close")
            {
                Some(Ok(Message::Close(frame))) => break frame,
                Some(Ok(_)) => continue,
                other => panic!("no close frame: {other:?}"),
            }
        };
        break close.map(|f| u16::from(f.code));
    };
    assert_eq!(refused, Some(4100));
    eprintln!(
        "fd reserve: {} WebSockets admitted under a limit of {LIMIT}",
        sockets.len()
    );
    assert!(sockets.len() >= 150, "refused early, at {}", sockets.len());
    let http = reqwest::Client::new();
    let res = http.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let (body, token) = signed_joined();
    let res = http
        .post(server.url("/webhooks/livekit"))
        .header("Authorization", token)
        .header("Content-Type", "application/webhook+json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let metrics = http
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !metrics.contains("rollcall_connections_refused_total{reason=\"fd_reserve\"} 0"),
        "{metrics}"
    );
    let open = server.open_fds();
    eprintln!("fd reserve: {open} descriptors open at the end");
    assert!(open < LIMIT as usize, "{open} descriptors open");
}

/// CPU time (user + system) the process has used, from `/proc/<pid>/stat`.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc stat");
    // Fields after the command (which may hold spaces), from field 3 on.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf only reads a constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / per_second)
}

#[tokio::test]
async fn out_of_descriptors_the_accept_loop_backs_off_and_recovers() {
    const LIMIT: u64 = 64;
    let server = ServerProcess::spawn_with_fd_limit(
        &[
            ("ROLLCALL_FD_RESERVE", "16"),
            ("ROLLCALL_HTTP_HEADER_TIMEOUT", "3s"),
        ],
        LIMIT,
    )
    .await;
    // More silent connections than descriptors: the rest wait in the
    // listen backlog while accept() fails with EMFILE.
    let mut silent = Vec::new();
    for _ in 0..LIMIT + 16 {
        silent.push(TcpStream::connect(server.addr).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = cpu_time(server.pid());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let used = cpu_time(server.pid()) - before;
    eprintln!("out of descriptors: {used:?} of CPU in 1 s");
    assert!(
        used < Duration::from_millis(300),
        "the accept loop spins: {used:?} of CPU in 1 s"
    );
    // The header timeout ends the silent ones; the server serves again.
    drop(silent);
    let http = reqwest::Client::new();
    let deadline = Instant::now() + GUARD;
    loop {
        let res = http.get(server.url("/healthz")).timeout(GUARD).send().await;
        if res.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "never served again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_websocket_outlives_every_http_timeout() {
    let app = spawn_app_with(|s| {
        s.http.header_timeout = Duration::from_millis(300);
        s.http.body_timeout = Duration::from_millis(300);
        s.http.idle_timeout = Duration::from_millis(300);
    })
    .await;
    let mut subscriber = app.subscriber(CHANNEL).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (body, _) = signed_joined();
    assert_eq!(app.post_webhook(&body).await.status(), 200);
    let update = subscriber.next_event("attendance.updated").await;
    assert_eq!(update.channel.as_deref(), Some(CHANNEL));
}

#[tokio::test]
async fn a_413_for_a_huge_body_reaches_the_client() {
    // A client that writes its whole request before reading, as simple
    // clients do: its writes must not be cut by a reset, and the 413 must
    // then be there to read.
    let app = spawn_app().await;
    let mut conn = Conn::open(app.addr).await;
    let mut request = b"POST /webhooks/livekit HTTP/1.1\r\nHost: x\r\nContent-Type: application/webhook+json\r\nContent-Length: 2097152\r\n\r\n".to_vec();
    request.extend(std::iter::repeat_n(b'a', 2 * 1024 * 1024));
    // Paced, so the body is still arriving when the server answers.
    let writer = conn.writer.as_mut().unwrap();
    for piece in request.chunks(64 * 1024) {
        tokio::time::timeout(GUARD, writer.write_all(piece))
            .await
            .expect("written within the guard time")
            .expect("the whole body is written: no reset");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    conn.reply().await.assert_error(413, "payload_too_large");
}

#[tokio::test]
async fn a_websocket_sending_a_huge_frame_receives_the_error_and_the_4100_close() {
    let app = spawn_app().await;
    let (mut ws, _) = tokio_tungstenite::connect_async(app.ws_url("rollcall-key"))
        .await
        .unwrap();
    let hello = ws.next().await.unwrap().unwrap();
    assert!(hello.to_text().unwrap().contains("connection_established"));
    // One 4 MiB frame, written whole before reading, as a browser would.
    tokio::time::timeout(GUARD, ws.send(Message::text("x".repeat(4 * 1024 * 1024))))
        .await
        .expect("sent within the guard time")
        .expect("the whole frame is written: no reset");
    let mut error = None;
    let close = loop {
        match tokio::time::timeout(GUARD, ws.next())
            .await
            .expect("frames in time")
        {
            Some(Ok(Message::Text(text))) if text.contains("pusher:error") => {
                error = Some(text.to_string())
            }
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            other => panic!(
                "the connection broke instead of closing: {other:?} (error frame: {error:?})"
            ),
        }
    };
    assert!(
        error.is_some_and(|e| e.contains("4100")),
        "a pusher:error with 4100"
    );
    assert_eq!(close, Some(4100));
}
