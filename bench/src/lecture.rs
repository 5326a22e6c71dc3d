//! B6 large lecture: one room whose every attendee watches its channel.
//! N subscribers on the room's attendance channel, then N signed
//! `participant_joined` webhooks spread over `--join-secs`; each join is
//! one `attendance.updated` to every subscriber, so N² deliveries. Then a
//! wave of page reloads (fresh subscribers, each sent the full room's
//! snapshot) and one heartbeat per attendee, to price those too. rollcall
//! only: the peers have no attendance path to drive.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use futures_util::StreamExt;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, Proto};
use crate::publish::{self, Plan, Publisher};
use crate::scenarios::{header, label, nonce};
use crate::servers::{Server, ServerArgs, Store, Target};
use crate::stats::{Latencies, Row, print_table};
use crate::sys;
use crate::track::Tracker;

#[derive(Debug, Clone, Args)]
pub struct B6Args {
    /// Attendees: each holds one socket subscribed to the room's channel
    /// and joins the room once.
    #[arg(long, default_value_t = 2000)]
    pub attendees: u64,
    /// The joins are spread evenly over this many seconds.
    #[arg(long, default_value_t = 60)]
    pub join_secs: u64,
    /// Fresh subscribers arriving at once after the joins (a wave of page
    /// reloads), each sent the whole room's `attendance.snapshot`.
    #[arg(long, default_value_t = 200)]
    pub reloads: u64,
    /// Heartbeats after the joins (round robin over the attendees, each
    /// with its own access token); 0 skips them.
    #[arg(long, default_value_t = 2000)]
    pub heartbeats: u64,
    /// Seconds the subscribed sockets are held idle before the joins (their
    /// server CPU while idle is measured over it).
    #[arg(long, default_value_t = 5)]
    pub idle_secs: u64,
    /// Longest wait, after the last join was sent, for every delivery.
    #[arg(long, default_value_t = 60)]
    pub drain_secs: u64,
    /// Source addresses 127.0.0.1..=127.0.0.N, round robin.
    #[arg(long, default_value_t = 16)]
    pub sources: u8,
    /// Handshakes in flight at once while connecting (and reloading).
    #[arg(long, default_value_t = 128)]
    pub connect_parallel: usize,
    /// Most webhooks outstanding at once.
    #[arg(long, default_value_t = 256)]
    pub in_flight: usize,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// `INFO commandstats` and the network totals of `INFO stats`, read with
/// redis-cli (the bench's Redis is on loopback, no auth).
#[derive(Debug, Default, Clone)]
struct RedisStats {
    /// command → (calls, microseconds).
    commands: BTreeMap<String, (u64, u64)>,
    net_in: u64,
    net_out: u64,
}

impl RedisStats {
    fn read(url: &str) -> anyhow::Result<Self> {
        let port = url.rsplit(':').next().context("redis url port")?;
        let out = std::process::Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", port, "INFO", "all"])
            .output()
            .context("redis-cli")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut s = RedisStats::default();
        for line in text.lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("cmdstat_") {
                let Some((name, fields)) = rest.split_once(':') else {
                    continue;
                };
                let field = |k: &str| {
                    fields
                        .split(',')
                        .find_map(|f| f.strip_prefix(k))
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0)
                };
                s.commands
                    .insert(name.to_string(), (field("calls="), field("usec=")));
            } else if let Some(v) = line.strip_prefix("total_net_input_bytes:") {
                s.net_in = v.parse().unwrap_or(0);
            } else if let Some(v) = line.strip_prefix("total_net_output_bytes:") {
                s.net_out = v.parse().unwrap_or(0);
            }
        }
        Ok(s)
    }

    /// What happened between `before` and `self`, per operation (`ops`
    /// of them): "evalsha 1.00 (24 us), …; in 1.2 kB, out 0.3 kB".
    fn per_op(&self, before: &RedisStats, ops: u64) -> String {
        let ops = ops.max(1) as f64;
        let mut parts: Vec<(u64, String)> = self
            .commands
            .iter()
            .filter_map(|(name, &(calls, usec))| {
                let (c0, u0) = before.commands.get(name).copied().unwrap_or((0, 0));
                let calls = calls.saturating_sub(c0);
                // The INFO commands we ask ourselves are not the server's.
                (calls > 0 && name != "info").then(|| {
                    (
                        calls,
                        format!(
                            "{name} {:.2} ({:.1} us)",
                            calls as f64 / ops,
                            usec.saturating_sub(u0) as f64 / ops
                        ),
                    )
                })
            })
            .collect();
        parts.sort_by_key(|p| std::cmp::Reverse(p.0));
        let total: u64 = parts.iter().map(|p| p.0).sum();
        format!(
            "{:.2} commands: {}; bytes in {:.0}, out {:.0}",
            total as f64 / ops,
            parts
                .into_iter()
                .map(|p| p.1)
                .collect::<Vec<_>>()
                .join(", "),
            self.net_in.saturating_sub(before.net_in) as f64 / ops,
            self.net_out.saturating_sub(before.net_out) as f64 / ops,
        )
    }
}

/// The server's `rollcall_ws_closed_total{reason="slow_consumer"}`.
async fn slow_consumer_closes(base: &str) -> Option<u64> {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(r#"rollcall_ws_closed_total{reason="slow_consumer"} "#))
        .and_then(|v| v.trim().parse().ok())
}

/// Samples the server's RSS every 100 ms until stopped; the peak.
struct PeakRss {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
}

impl PeakRss {
    fn start(pid: Option<u32>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak.clone());
        tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                if let Some(kib) = pid.and_then(sys::rss_kib) {
                    p.fetch_max(kib, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Self { stop, peak }
    }

    fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for PeakRss {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A fresh subscriber: how long from opening the socket to having read
/// the room's whole snapshot, and its size.
async fn reload(url: &str, src: u8, channel: &str) -> anyhow::Result<(Duration, usize)> {
    let t0 = Instant::now();
    let mut ws = client::subscribe(url, src, Proto::Pusher, channel).await?;
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(60), ws.next())
            .await
            .context("no snapshot within 60 s")?
            .context("closed before the snapshot")??;
        if let Message::Text(t) = msg
            && t.as_str().contains("attendance.snapshot")
        {
            return Ok((t0.elapsed(), t.len()));
        }
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

pub async fn b6(a: B6Args) -> anyhow::Result<()> {
    header("B6 large lecture");
    let t = Target::Rollcall;
    let server = Server::start(&a.server, t).await?;
    let target = label(&a.server, t);
    let n = a.attendees;
    let plan = Plan {
        rooms: 1,
        people_per_room: n,
        nonce: nonce(),
    };
    let channel = plan.channel(0);
    let redis = match a.server.store {
        Store::Redis => server.own_redis_url(),
        Store::Memory => None,
    };
    let redis_cpu = || {
        server
            .redis_pid()
            .and_then(sys::cpu_time)
            .unwrap_or_default()
    };

    // Idle baseline, then every attendee's socket on the channel.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_base = server.rss_kib();
    let cpu_c0 = server.cpu();
    let tracker = Arc::new(Tracker::new(n, vec![0]));
    let crowd = client::crowd(
        &server.ws_url(),
        Proto::Pusher,
        n as usize,
        a.sources,
        a.connect_parallel,
        |_| channel.clone(),
        tracker.clone(),
    )
    .await;
    println!("{target}: {}", crowd.summary());
    // Let the sockets settle (the connect burst's buffers returned).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_sockets = server.rss_kib();
    let connect_cpu = server.cpu().saturating_sub(cpu_c0);
    let per_socket_kib =
        rss_sockets.saturating_sub(rss_base) as f64 / crowd.connected.max(1) as f64;
    // Idle sockets: what holding them costs with nothing to send.
    let idle0 = server.cpu();
    tokio::time::sleep(Duration::from_secs(a.idle_secs)).await;
    let idle_cpu = server.cpu().saturating_sub(idle0);

    // The joins, N over join_secs, each an update to every subscriber.
    let publisher = Publisher::new(&server.base, t, plan, 0);
    let slow0 = slow_consumer_closes(&server.base).await.unwrap_or(0);
    let redis0 = redis.as_deref().map(RedisStats::read).transpose()?;
    let (cpu0, rcpu0, b0) = (
        server.cpu(),
        redis_cpu(),
        tracker.bytes.load(Ordering::Relaxed),
    );
    let peak = PeakRss::start(server.pid);
    let request_lat = Arc::new(Latencies::new());
    let start = Instant::now();
    let sent = publish::at_rate(
        &publisher,
        &tracker,
        0,
        n,
        n as f64 / a.join_secs.max(1) as f64,
        a.in_flight,
        Some(request_lat.clone()),
    )
    .await;
    let expected = sent.ok * crowd.connected;
    let drain_deadline = Instant::now() + Duration::from_secs(a.drain_secs);
    while tracker.received.load(Ordering::Relaxed) < expected && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let all_in = start.elapsed();
    let received = tracker.received.load(Ordering::Relaxed);
    let (cpu, rcpu) = (
        server.cpu().saturating_sub(cpu0),
        redis_cpu().saturating_sub(rcpu0),
    );
    let client_bytes = tracker.bytes.load(Ordering::Relaxed) - b0;
    let redis_joins = match (&redis, &redis0) {
        (Some(url), Some(before)) => Some(RedisStats::read(url)?.per_op(before, sent.ok)),
        _ => None,
    };
    let rss_peak = peak.peak().max(server.rss_kib());
    drop(peak);

    // Per update: from its webhook's send to its last subscriber's receipt.
    let complete = Latencies::new();
    let mut updates_complete = 0u64;
    for seq in 0..n {
        if u64::from(tracker.receipts(seq)) == crowd.connected
            && let Some(d) = tracker.completion(seq)
        {
            complete.record(seq as usize, d);
            updates_complete += 1;
        }
    }
    let complete = complete.merged();
    let deliveries = received.max(1) as f64;
    let slow = slow_consumer_closes(&server.base)
        .await
        .unwrap_or(0)
        .saturating_sub(slow0);
    let mut rows = vec![
        Row {
            scenario: "B6 lecture updates".into(),
            target: target.clone(),
            per_sec: received as f64 / secs(all_in),
            expected,
            received,
            send_errors: sent.errors + crowd.failed,
            rss_base_kib: rss_base,
            rss_peak_kib: rss_peak,
            server_cpu_ms: cpu.as_millis() as u64,
            note: format!(
                "{n} attendees ({} subscribed in {:.1} s), {} joins sent in {:.1} s (sender max lag {:.1} ms); \
                 every subscriber had every update {:.2} s after the first join ({:.2} s after the last was sent); \
                 per update, send -> last subscriber: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({updates_complete} of {n} complete); \
                 webhook request p50 {:.1} ms, p99 {:.1} ms; \
                 subscribers read {:.1} MB of WebSocket payload ({:.0} B per delivery; +2-4 B framing each); \
                 server CPU {:.2} s = {:.2} us per delivery (webhooks included){}; \
                 slow-consumer closes: {slow} (server), {} x 4100 seen, {} sockets ended early; \
                 RSS {:.1} MiB idle -> {:.1} MiB with {} sockets ({per_socket_kib:.2} KiB/socket) -> peak {:.1} MiB{}",
                crowd.connected,
                crowd.connect_secs,
                sent.ok,
                secs(sent.elapsed),
                secs(sent.max_lag) * 1000.0,
                secs(all_in),
                secs(all_in.saturating_sub(sent.elapsed)),
                complete.value_at_quantile(0.5) as f64 / 1000.0,
                complete.value_at_quantile(0.99) as f64 / 1000.0,
                complete.max() as f64 / 1000.0,
                request_lat.merged().value_at_quantile(0.5) as f64 / 1000.0,
                request_lat.merged().value_at_quantile(0.99) as f64 / 1000.0,
                client_bytes as f64 / 1e6,
                client_bytes as f64 / deliveries,
                secs(cpu),
                secs(cpu) * 1e6 / deliveries,
                if redis.is_some() {
                    format!(", redis-server CPU {:.2} s", secs(rcpu))
                } else {
                    String::new()
                },
                tracker.closed_4100.load(Ordering::Relaxed),
                tracker.ended.load(Ordering::Relaxed),
                rss_base as f64 / 1024.0,
                rss_sockets as f64 / 1024.0,
                crowd.connected,
                rss_peak as f64 / 1024.0,
                redis_joins
                    .as_deref()
                    .map(|r| format!("; Redis per webhook: {r}"))
                    .unwrap_or_default(),
            ),
            ..Row::default()
        }
        .with_latencies(&tracker.phase(0).merged()),
    ];
    println!(
        "{target}: connecting {} sockets cost {:.2} s server CPU ({:.1} us each); held idle {} s: {:.1} ms CPU/s",
        crowd.connected,
        secs(connect_cpu),
        secs(connect_cpu) * 1e6 / crowd.connected.max(1) as f64,
        a.idle_secs,
        secs(idle_cpu) * 1e3 / a.idle_secs.max(1) as f64
    );

    // Heartbeats: one per attendee, each with its own access token.
    if a.heartbeats > 0 {
        let now = rollcall::domain::now_millis() / 1000;
        let tokens: Vec<String> = (0..n)
            .map(|s| {
                let e = plan.event(s);
                let token = rollcall::livekit::sign_access_token(
                    publish::KEY,
                    publish::SECRET,
                    &format!("{}_Bench_User", e.uid),
                    &plan.room_name(e.room),
                    now,
                    3600,
                );
                format!("Bearer {token}")
            })
            .collect();
        let http = reqwest::Client::builder().tcp_nodelay(true).build()?;
        let url = format!("{}/api/heartbeat", server.base);
        let redis0 = redis.as_deref().map(RedisStats::read).transpose()?;
        let (cpu0, rcpu0) = (server.cpu(), redis_cpu());
        let lat = Latencies::new();
        let gate = Arc::new(Semaphore::new(16));
        let mut tasks = tokio::task::JoinSet::new();
        let t0 = Instant::now();
        for i in 0..a.heartbeats {
            let permit = gate.clone().acquire_owned().await?;
            let (http, url, token) = (http.clone(), url.clone(), tokens[(i % n) as usize].clone());
            tasks.spawn(async move {
                let t = Instant::now();
                let ok = http
                    .post(&url)
                    .header("Authorization", token)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                drop(permit);
                (ok, t.elapsed())
            });
        }
        let mut ok = 0u64;
        while let Some(r) = tasks.join_next().await {
            if let Ok((good, d)) = r {
                ok += u64::from(good);
                lat.record(0, d);
            }
        }
        let elapsed = t0.elapsed();
        let (cpu, rcpu) = (
            server.cpu().saturating_sub(cpu0),
            redis_cpu().saturating_sub(rcpu0),
        );
        let per_hb = match (&redis, &redis0) {
            (Some(url), Some(before)) => Some(RedisStats::read(url)?.per_op(before, ok)),
            _ => None,
        };
        rows.push(
            Row {
                scenario: "B6 heartbeats".into(),
                target: target.clone(),
                per_sec: ok as f64 / secs(elapsed),
                expected: a.heartbeats,
                received: ok,
                rss_base_kib: rss_base,
                rss_peak_kib: server.rss_kib(),
                server_cpu_ms: cpu.as_millis() as u64,
                note: format!(
                    "16 senders; {:.1} us server CPU per heartbeat{}{}",
                    secs(cpu) * 1e6 / ok.max(1) as f64,
                    if redis.is_some() {
                        format!(
                            ", redis-server {:.1} us",
                            secs(rcpu) * 1e6 / ok.max(1) as f64
                        )
                    } else {
                        String::new()
                    },
                    per_hb
                        .map(|r| format!("; Redis per heartbeat: {r}"))
                        .unwrap_or_default()
                ),
                ..Row::default()
            }
            .with_latencies(&lat.merged()),
        );
    }

    // The reload wave: fresh subscribers at once, each sent the snapshot.
    if a.reloads > 0 {
        let url = server.ws_url();
        let redis0 = redis.as_deref().map(RedisStats::read).transpose()?;
        let (cpu0, rcpu0) = (server.cpu(), redis_cpu());
        let peak = PeakRss::start(server.pid);
        let gate = Arc::new(Semaphore::new(a.connect_parallel.max(1)));
        let lat = Latencies::new();
        let mut tasks = tokio::task::JoinSet::new();
        let t0 = Instant::now();
        for i in 0..a.reloads {
            let permit = gate.clone().acquire_owned().await?;
            let (url, channel) = (url.clone(), channel.clone());
            let src = 1 + (i % a.sources.max(1) as u64) as u8;
            tasks.spawn(async move {
                let r = reload(&url, src, &channel).await;
                drop(permit);
                r
            });
        }
        let (mut ok, mut errors, mut size, mut total, mut first_error) =
            (0u64, 0u64, 0usize, 0u64, None);
        while let Some(r) = tasks.join_next().await {
            match r {
                Ok(Ok((d, bytes))) => {
                    ok += 1;
                    size = size.max(bytes);
                    total += bytes as u64;
                    lat.record(ok as usize, d);
                }
                Ok(Err(e)) => {
                    errors += 1;
                    first_error.get_or_insert(format!("{e:#}"));
                }
                Err(e) => {
                    errors += 1;
                    first_error.get_or_insert(format!("{e}"));
                }
            }
        }
        let elapsed = t0.elapsed();
        let (cpu, rcpu) = (
            server.cpu().saturating_sub(cpu0),
            redis_cpu().saturating_sub(rcpu0),
        );
        let per_reload = match (&redis, &redis0) {
            (Some(url), Some(before)) => Some(format!(
                "; redis-server {:.1} us per reload; Redis per reload: {}",
                secs(rcpu) * 1e6 / ok.max(1) as f64,
                RedisStats::read(url)?.per_op(before, ok)
            )),
            _ => None,
        };
        rows.push(
            Row {
                scenario: "B6 reload snapshots".into(),
                target: target.clone(),
                per_sec: ok as f64 / secs(elapsed),
                expected: a.reloads,
                received: ok,
                send_errors: errors,
                rss_base_kib: rss_base,
                rss_peak_kib: peak.peak().max(server.rss_kib()),
                server_cpu_ms: cpu.as_millis() as u64,
                note: format!(
                    "{} fresh subscribers at once ({} handshakes in flight), all served in {:.2} s; snapshot of {n} people: {:.0} kB; \
                     subscribers read {:.1} MB of snapshots; server CPU {:.1} ms per snapshot (connect and subscribe included){}{}",
                    a.reloads,
                    a.connect_parallel,
                    secs(elapsed),
                    size as f64 / 1e3,
                    total as f64 / 1e6,
                    secs(cpu) * 1e3 / ok.max(1) as f64,
                    per_reload.unwrap_or_default(),
                    first_error
                        .map(|e| format!("; first error {e}"))
                        .unwrap_or_default()
                ),
                ..Row::default()
            }
            .with_latencies(&lat.merged()),
        );
    }
    crowd.close().await;
    print_table(&rows);
    drop(server);
    Ok(())
}
