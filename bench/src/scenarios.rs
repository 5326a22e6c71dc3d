//! The five scenarios. Each starts its servers, measures, prints a table
//! (and `RESULT {json}` lines), and stops what it started.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;

use crate::client::{self, Proto};
use crate::publish::{self, Plan, Publisher, Request, Via};
use crate::servers::{Server, ServerArgs, Target};
use crate::sharded;
use crate::stats::{Latencies, Row, print_table};
use crate::sys;
use crate::track::Tracker;

/// Flags every subscriber scenario shares.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Source addresses 127.0.0.1..=127.0.0.N, round robin (each gives
    /// ~28k ephemeral ports).
    #[arg(long, default_value_t = 16)]
    pub sources: u8,
    /// Handshakes in flight at once while connecting.
    #[arg(long, default_value_t = 128)]
    pub connect_parallel: usize,
    /// Bytes of filler in the peers' payload, to match rollcall's
    /// attendance.updated size.
    #[arg(long, default_value_t = 520)]
    pub pad: usize,
    /// Most publishes outstanding at once (past it the schedule slips).
    #[arg(long, default_value_t = 256)]
    pub in_flight: usize,
    /// Longest wait for deliveries after the last send.
    #[arg(long, default_value_t = 5)]
    pub drain_secs: u64,
}

pub fn header(name: &str) -> u64 {
    let fds = sys::raise_fd_limit();
    println!(
        "== {name} | {} | fd limit {fds} | unix time {}",
        sys::machine(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    );
    fds
}

pub fn nonce() -> u32 {
    (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        % 100_000) as u32
}

pub fn label(server: &ServerArgs, t: Target) -> String {
    match (t, server.store) {
        (Target::Bare, _) => "bare".into(),
        (_, crate::servers::Store::Memory) => format!("{t:?}-memory").to_lowercase(),
        (_, crate::servers::Store::Redis) => format!("{t:?}-redis").to_lowercase(),
    }
}

/// For rollcall rows: what drove the broadcast.
fn via_note(t: Target, via: Via) -> &'static str {
    match (t, via) {
        (Target::Rollcall, Via::Api) => "; rollcall via its Pusher HTTP API",
        (Target::Rollcall, Via::Webhook) => "; rollcall via signed webhooks",
        _ => "",
    }
}

/// Waits until `tracker` has `expected` receipts or `limit` passes.
pub async fn drain(tracker: &Tracker, expected: u64, limit: Duration) {
    let deadline = Instant::now() + limit;
    while tracker.received.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------- B1

#[derive(Debug, Clone, Args)]
pub struct B1Args {
    #[arg(long, default_value_t = 100)]
    pub rooms: u64,
    #[arg(long, default_value_t = 30)]
    pub subscribers: u64,
    /// Publishes (attendance-changing webhooks) per second, all rooms.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    #[arg(long, default_value_t = 30)]
    pub secs: u64,
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub server: ServerArgs,
}

pub async fn b1(a: B1Args) -> anyhow::Result<()> {
    header("B1 meeting fan-out");
    let mut rows = Vec::new();
    for &t in &a.server.target {
        let server = Server::start(&a.server, t).await?;
        let plan = Plan {
            rooms: a.rooms,
            people_per_room: a.subscribers.max(1),
            nonce: nonce(),
        };
        let count = (a.rate * a.secs as f64) as u64;
        let tracker = Arc::new(Tracker::new(count, vec![0]));
        let rss_base = server.rss_kib();
        let crowd = client::crowd(
            &server.ws_url(),
            Proto::from(t),
            (a.rooms * a.subscribers) as usize,
            a.client.sources,
            a.client.connect_parallel,
            |i| plan.channel(i as u64 % a.rooms),
            tracker.clone(),
        )
        .await;
        println!("{}: {}", label(&a.server, t), crowd.summary());
        let publisher = Publisher::new(&server.base, t, plan, a.client.pad);
        let cpu0 = server.cpu();
        let sent = publish::at_rate(
            &publisher,
            &tracker,
            0,
            count,
            a.rate,
            a.client.in_flight,
            None,
        )
        .await;
        let expected = sent.ok * a.subscribers;
        drain(&tracker, expected, Duration::from_secs(a.client.drain_secs)).await;
        let cpu = server.cpu().saturating_sub(cpu0);
        let rss_peak = server.rss_kib();
        let received = tracker.received.load(Ordering::Relaxed);
        let row = Row {
            scenario: "B1 fan-out".into(),
            target: label(&a.server, t),
            per_sec: received as f64 / sent.elapsed.as_secs_f64(),
            expected,
            received,
            send_errors: sent.errors,
            rss_base_kib: rss_base,
            rss_peak_kib: rss_peak,
            server_cpu_ms: cpu.as_millis() as u64,
            note: format!(
                "{} publishes/s offered, {} ok in {:.1} s, sender max lag {:.1} ms, {} connect failures{}",
                a.rate,
                sent.ok,
                sent.elapsed.as_secs_f64(),
                sent.max_lag.as_secs_f64() * 1000.0,
                crowd.failed,
                sent.first_error
                    .as_deref()
                    .map(|e| format!(", first error {e}"))
                    .unwrap_or_default()
            ),
            ..Row::default()
        }
        .with_latencies(&tracker.phase(0).merged());
        rows.push(row);
        crowd.close().await;
        drop(server);
    }
    print_table(&rows);
    Ok(())
}

// ---------------------------------------------------------------- B2

#[derive(Debug, Clone, Args)]
pub struct B2Args {
    #[arg(long, default_value_t = 100_000)]
    pub sockets: u64,
    /// How long the subscribed sockets are held idle before the broadcast.
    #[arg(long, default_value_t = 60)]
    pub hold_secs: u64,
    /// How rollcall is told to broadcast: its Pusher HTTP API (the same
    /// job as the peers' publish) or a signed LiveKit webhook.
    #[arg(long, value_enum, default_value_t = Via::Api)]
    pub via: Via,
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub server: ServerArgs,
}

pub async fn b2(a: B2Args) -> anyhow::Result<()> {
    let fds = header("B2 idle capacity");
    // The generator holds one fd per socket; the server too (it inherits
    // our limit when we start it).
    // Each process (server or generator) holds one fd per socket. Past the
    // limit, spread the sockets over several processes on both sides.
    let per_process = fds.saturating_sub(1000).max(1000);
    let nodes = a.sockets.div_ceil(per_process) as usize;
    let mut rows = Vec::new();
    if nodes > 1 {
        println!(
            "fd limit {fds} (hard limit; raising it needs CAP_SYS_RESOURCE): {} sockets over {nodes} server processes and {nodes} generator processes",
            a.sockets
        );
        for &t in &a.server.target {
            let row = sharded::b2_sharded(&a, t, nodes).await?;
            println!("{}: {}", row.target, row.note);
            rows.push(row);
        }
        print_table(&rows);
        return Ok(());
    }
    let sockets = a.sockets;
    for &t in &a.server.target {
        let server = Server::start(&a.server, t).await?;
        let plan = Plan {
            rooms: 1,
            people_per_room: 10,
            nonce: nonce(),
        };
        let tracker = Arc::new(Tracker::new(1, vec![0]));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let rss_base = server.rss_kib();
        let crowd = client::crowd(
            &server.ws_url(),
            Proto::from(t),
            sockets as usize,
            a.client.sources,
            a.client.connect_parallel,
            |_| plan.channel(0),
            tracker.clone(),
        )
        .await;
        println!("{}: {}", label(&a.server, t), crowd.summary());
        let rss_connected = server.rss_kib();
        let mut rss_peak = rss_connected;
        let hold_end = Instant::now() + Duration::from_secs(a.hold_secs);
        while Instant::now() < hold_end {
            tokio::time::sleep(Duration::from_millis(500)).await;
            rss_peak = rss_peak.max(server.rss_kib());
        }
        let publisher = Publisher::via(&server.base, t, a.via, plan, a.client.pad);
        let cpu0 = server.cpu();
        let sent = publish::at_rate(&publisher, &tracker, 0, 1, 1.0, 1, None).await;
        let expected = sent.ok * crowd.connected;
        drain(
            &tracker,
            expected,
            Duration::from_secs(a.client.drain_secs.max(10)),
        )
        .await;
        let received = tracker.received.load(Ordering::Relaxed);
        let cpu = server.cpu().saturating_sub(cpu0);
        let per_socket = rss_peak.saturating_sub(rss_base) as f64 / crowd.connected.max(1) as f64;
        rows.push(
            Row {
                scenario: "B2 idle capacity".into(),
                target: label(&a.server, t),
                // Deliveries per second of the whole broadcast: all
                // receipts over the time the last one took.
                per_sec: received as f64
                    / (tracker.phase(0).merged().max() as f64 / 1e6).max(1e-6),
                expected,
                received,
                send_errors: sent.errors + crowd.failed,
                rss_base_kib: rss_base,
                rss_peak_kib: rss_peak,
                server_cpu_ms: cpu.as_millis() as u64,
                note: format!(
                    "{} sockets held {} s; server RSS {:.2} KiB/socket above baseline; connect {:.1} s{}",
                    crowd.connected, a.hold_secs, per_socket, crowd.connect_secs, via_note(t, a.via)
                ),
                ..Row::default()
            }
            .with_latencies(&tracker.phase(0).merged()),
        );
        crowd.close().await;
        drop(server);
    }
    print_table(&rows);
    Ok(())
}

// ---------------------------------------------------------------- B3

#[derive(Debug, Clone, Args)]
pub struct B3Args {
    #[arg(long, default_value_t = 10_000)]
    pub subscribers: u64,
    /// First rate (publishes/s); each step multiplies it by --factor.
    #[arg(long, default_value_t = 10.0)]
    pub start_rate: f64,
    #[arg(long, default_value_t = 2.0)]
    pub factor: f64,
    #[arg(long, default_value_t = 8)]
    pub steps: u32,
    #[arg(long, default_value_t = 5)]
    pub step_secs: u64,
    /// The p99 a step must keep to count.
    #[arg(long, default_value_t = 50.0)]
    pub p99_ms: f64,
    /// How rollcall is told to broadcast: its Pusher HTTP API (the same
    /// job as the peers' publish) or a signed LiveKit webhook.
    #[arg(long, value_enum, default_value_t = Via::Api)]
    pub via: Via,
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub server: ServerArgs,
}

pub async fn b3(a: B3Args) -> anyhow::Result<()> {
    header("B3 hot channel");
    let mut rows = Vec::new();
    let mut best = Vec::new();
    for &t in &a.server.target {
        let server = Server::start(&a.server, t).await?;
        let plan = Plan {
            rooms: 1,
            people_per_room: 1000,
            nonce: nonce(),
        };
        let rates: Vec<f64> = (0..a.steps)
            .map(|i| a.start_rate * a.factor.powi(i as i32))
            .collect();
        let counts: Vec<u64> = rates
            .iter()
            .map(|r| ((r * a.step_secs as f64) as u64).max(1))
            .collect();
        let mut starts = vec![0u64];
        for c in &counts {
            starts.push(starts.last().unwrap() + c);
        }
        let tracker = Arc::new(Tracker::new(
            *starts.last().unwrap(),
            starts[..counts.len()].to_vec(),
        ));
        let rss_base = server.rss_kib();
        let crowd = client::crowd(
            &server.ws_url(),
            Proto::from(t),
            a.subscribers as usize,
            a.client.sources,
            a.client.connect_parallel,
            |_| plan.channel(0),
            tracker.clone(),
        )
        .await;
        println!("{}: {}", label(&a.server, t), crowd.summary());
        let publisher = Publisher::via(&server.base, t, a.via, plan, a.client.pad);
        let mut best_rate: Option<f64> = None;
        // (delivered/s, publishes/s, p99 µs) of the fastest complete step.
        let mut peak: Option<(f64, f64, u64)> = None;
        for (i, rate) in rates.iter().enumerate() {
            let before = tracker.received.load(Ordering::Relaxed);
            let cpu0 = server.cpu();
            let step_start = Instant::now();
            let sent = publish::at_rate(
                &publisher,
                &tracker,
                starts[i],
                counts[i],
                *rate,
                a.client.in_flight,
                None,
            )
            .await;
            let expected = sent.ok * crowd.connected;
            drain(
                &tracker,
                before + expected,
                Duration::from_secs(a.client.drain_secs),
            )
            .await;
            // Until the last receipt (within the drain's 20 ms polling),
            // not the end of sending: a step the target can't keep up with
            // delivers its backlog after the sender stopped.
            let delivering = step_start.elapsed();
            let received = tracker.received.load(Ordering::Relaxed) - before;
            let row = Row {
                scenario: format!("B3 hot {rate:.0}/s"),
                target: label(&a.server, t),
                per_sec: received as f64 / delivering.as_secs_f64(),
                expected,
                received,
                send_errors: sent.errors,
                rss_base_kib: rss_base,
                rss_peak_kib: server.rss_kib(),
                server_cpu_ms: server.cpu().saturating_sub(cpu0).as_millis() as u64,
                note: format!(
                    "{} subscribers, sender max lag {:.1} ms{}",
                    crowd.connected,
                    sent.max_lag.as_secs_f64() * 1000.0,
                    via_note(t, a.via)
                ),
                ..Row::default()
            }
            .with_latencies(&tracker.phase(i).merged());
            let complete = row.lost() <= 0 && row.send_errors == 0;
            let good = complete && (row.p99_us as f64) <= a.p99_ms * 1000.0;
            if good {
                best_rate = Some(row.per_sec);
            }
            // Past the p99 limit the steps go on, to find the peak rate this
            // target sustains at all: they stop once deliveries are lost or
            // fall behind what was offered (queues growing).
            let offered = rate * crowd.connected as f64;
            let keeping_up = complete && row.per_sec >= 0.8 * offered;
            if complete && peak.is_none_or(|(p, _, _)| row.per_sec > p) {
                peak = Some((row.per_sec, *rate, row.p99_us));
            }
            println!(
                "  step {rate:.0}/s: p99 {:.2} ms, {:.0} delivered/s, lost {}{}",
                row.p99_us as f64 / 1000.0,
                row.per_sec,
                row.lost(),
                match (good, keeping_up) {
                    (true, _) => "",
                    (false, true) => "  (p99 over the limit)",
                    (false, false) => "  (not keeping up: stop)",
                }
            );
            rows.push(row);
            if !keeping_up {
                break;
            }
        }
        best.push((label(&a.server, t), best_rate, peak));
        crowd.close().await;
        drop(server);
    }
    print_table(&rows);
    for (t, b, peak) in best {
        match b {
            Some(b) => println!(
                "B3 best {t}: {b:.0} delivered/s with p99 <= {} ms",
                a.p99_ms
            ),
            None => println!("B3 best {t}: no step met p99 <= {} ms", a.p99_ms),
        }
        if let Some((per_sec, rate, p99_us)) = peak {
            println!(
                "B3 peak {t}: {per_sec:.0} delivered/s, nothing lost (at {rate:.0} publishes/s, p99 {:.1} ms)",
                p99_us as f64 / 1000.0
            );
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- B4

#[derive(Debug, Clone, Args)]
pub struct B4Args {
    #[arg(long, default_value_t = 10)]
    pub secs: u64,
    /// Concurrent senders (closed loop).
    #[arg(long, default_value_t = 64)]
    pub workers: usize,
    /// Requests pre-generated (and signed) before the clock starts.
    #[arg(long, default_value_t = 300_000)]
    pub max_requests: u64,
    #[arg(long, default_value_t = 1000)]
    pub rooms: u64,
    #[arg(long, default_value_t = 520)]
    pub pad: usize,
    #[command(flatten)]
    pub server: ServerArgs,
}

pub async fn b4(a: B4Args) -> anyhow::Result<()> {
    header("B4 webhook ingest");
    let mut rows = Vec::new();
    for &t in &a.server.target {
        let server = Server::start(&a.server, t).await?;
        let plan = Plan {
            rooms: a.rooms,
            people_per_room: 30,
            nonce: nonce(),
        };
        let publisher = Publisher::new(&server.base, t, plan, a.pad);
        let gen0 = Instant::now();
        let requests: Arc<Vec<Request>> =
            Arc::new((0..a.max_requests).map(|s| publisher.request(s)).collect());
        let generated = gen0.elapsed();
        let rss_base = server.rss_kib();
        let cpu0 = server.cpu();
        let lat = Arc::new(Latencies::new());
        let (ok, errors, first_error, elapsed) = publish::closed_loop(
            &publisher,
            requests,
            a.workers,
            Duration::from_secs(a.secs),
            lat.clone(),
        )
        .await;
        rows.push(
            Row {
                scenario: "B4 ingest".into(),
                target: label(&a.server, t),
                per_sec: ok as f64 / elapsed.as_secs_f64(),
                expected: ok + errors,
                received: ok,
                send_errors: errors,
                rss_base_kib: rss_base,
                rss_peak_kib: server.rss_kib(),
                server_cpu_ms: server.cpu().saturating_sub(cpu0).as_millis() as u64,
                note: format!(
                    "{} workers, {:.1} s; {} requests pre-signed in {:.1} s{}",
                    a.workers,
                    elapsed.as_secs_f64(),
                    a.max_requests,
                    generated.as_secs_f64(),
                    first_error
                        .map(|e| format!("; first error {e}"))
                        .unwrap_or_default()
                ),
                ..Row::default()
            }
            .with_latencies(&lat.merged()),
        );
        drop(server);
    }
    print_table(&rows);
    Ok(())
}

// ---------------------------------------------------------------- B5

#[derive(Debug, Clone, Args)]
pub struct B5Args {
    #[arg(long, default_value_t = 50_000)]
    pub attendees: u64,
    #[arg(long, default_value_t = 100)]
    pub per_room: u64,
    /// Heartbeat phase length (closed loop, round robin over attendees).
    #[arg(long, default_value_t = 20)]
    pub secs: u64,
    #[arg(long, default_value_t = 64)]
    pub workers: usize,
    /// Server's heartbeat timeout; after the heartbeats stop, the sweeper
    /// must close every cycle within it (+ one sweep interval).
    #[arg(long, default_value = "30s")]
    pub heartbeat_timeout: String,
    /// Idle window measured before any load, and the sweep interval.
    #[arg(long, default_value_t = 5)]
    pub idle_secs: u64,
    #[command(flatten)]
    pub server: ServerArgs,
}

pub async fn b5(mut a: B5Args) -> anyhow::Result<()> {
    header("B5 heartbeats");
    let timeout_secs: u64 = a
        .heartbeat_timeout
        .trim_end_matches('s')
        .parse()
        .map_err(|_| anyhow::anyhow!("--heartbeat-timeout in whole seconds, e.g. 30s"))?;
    a.server.rollcall_flag.push("--sweep-interval=1s".into());
    a.server
        .rollcall_flag
        .push(format!("--heartbeat-timeout={}", a.heartbeat_timeout));
    let server = Server::start(&a.server, Target::Rollcall).await?;
    let label = label(&a.server, Target::Rollcall);
    let rooms = a.attendees.div_ceil(a.per_room);
    let plan = Plan {
        rooms,
        people_per_room: a.per_room,
        nonce: nonce(),
    };
    // Idle baseline: the sweeper with nothing to do.
    let c0 = server.cpu();
    tokio::time::sleep(Duration::from_secs(a.idle_secs)).await;
    let idle_rate = server.cpu().saturating_sub(c0).as_secs_f64() / a.idle_secs as f64;
    let rss_base = server.rss_kib();

    // redis-server's own CPU (with --store redis), per join and per
    // heartbeat: the store's side of each operation's cost.
    let redis_cpu = || {
        server
            .redis_pid()
            .and_then(sys::cpu_time)
            .unwrap_or_default()
    };
    let redis_note = |cpu: Duration, ops: u64| {
        if server.redis_pid().is_some() {
            format!(
                "; redis-server CPU {:.1} us each",
                cpu.as_secs_f64() * 1e6 / ops.max(1) as f64
            )
        } else {
            String::new()
        }
    };

    // Everyone joins (seqs below rooms x per_room are all joins).
    let publisher = Publisher::new(&server.base, Target::Rollcall, plan, 0);
    let joins: Arc<Vec<Request>> =
        Arc::new((0..a.attendees).map(|s| publisher.request(s)).collect());
    let jl = Arc::new(Latencies::new());
    let (join_cpu0, join_rcpu0) = (server.cpu(), redis_cpu());
    let (joined, join_errors, join_err, join_time) = publish::closed_loop(
        &publisher,
        joins,
        a.workers,
        Duration::from_secs(600),
        jl.clone(),
    )
    .await;
    let (join_cpu, join_rcpu) = (
        server.cpu().saturating_sub(join_cpu0),
        redis_cpu().saturating_sub(join_rcpu0),
    );
    println!(
        "{label}: {joined} joined in {:.1} s ({join_errors} errors{}); server CPU {:.1} us per join{}",
        join_time.as_secs_f64(),
        join_err.map(|e| format!(", first {e}")).unwrap_or_default(),
        join_cpu.as_secs_f64() * 1e6 / joined.max(1) as f64,
        redis_note(join_rcpu, joined)
    );

    // Heartbeats, each with the person's own LiveKit access token.
    let now = rollcall::domain::now_millis() / 1000;
    let tokens: Arc<Vec<String>> = Arc::new(
        (0..a.attendees)
            .map(|s| {
                let e = plan.event(s);
                let identity = format!("{}_Bench_User", e.uid);
                let t = rollcall::livekit::sign_access_token(
                    publish::KEY,
                    publish::SECRET,
                    &identity,
                    &plan.room_name(e.room),
                    now,
                    3600,
                );
                format!("Bearer {t}")
            })
            .collect(),
    );
    let http = reqwest::Client::builder().tcp_nodelay(true).build()?;
    let url = format!("{}/api/heartbeat", server.base);
    let lat = Arc::new(Latencies::new());
    let (ok, in_meeting, errors) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let next = Arc::new(AtomicU64::new(0));
    let (cpu0, rcpu0) = (server.cpu(), redis_cpu());
    let start = Instant::now();
    let deadline = Duration::from_secs(a.secs);
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..a.workers {
        let (http, url, tokens, lat, ok, in_meeting, errors, next) = (
            http.clone(),
            url.clone(),
            tokens.clone(),
            lat.clone(),
            ok.clone(),
            in_meeting.clone(),
            errors.clone(),
            next.clone(),
        );
        tasks.spawn(async move {
            while start.elapsed() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed) % tokens.len() as u64;
                let t0 = Instant::now();
                let r = http
                    .post(&url)
                    .header("Authorization", tokens[i as usize].as_str())
                    .send()
                    .await;
                let body = match r {
                    Ok(r) if r.status().is_success() => r.text().await.unwrap_or_default(),
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                };
                lat.record(w, t0.elapsed());
                ok.fetch_add(1, Ordering::Relaxed);
                if body.contains("\"in_meeting\":true") {
                    in_meeting.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = start.elapsed();
    let hb_cpu = server.cpu().saturating_sub(cpu0);
    let hb_rcpu = redis_cpu().saturating_sub(rcpu0);
    let n = ok.load(Ordering::Relaxed);
    let rss_after = server.rss_kib();

    // The sweeper: no more heartbeats, so every open cycle goes stale once
    // the timeout passes; measure the CPU over that window.
    let cpu1 = server.cpu();
    let window = Duration::from_secs(timeout_secs + 3);
    tokio::time::sleep(window).await;
    let sweep_cpu =
        server.cpu().saturating_sub(cpu1).as_secs_f64() - idle_rate * window.as_secs_f64();

    let mut rows = vec![
        Row {
            scenario: "B5 heartbeats".into(),
            target: label.clone(),
            per_sec: n as f64 / elapsed.as_secs_f64(),
            expected: n,
            received: in_meeting.load(Ordering::Relaxed),
            send_errors: errors.load(Ordering::Relaxed),
            rss_base_kib: rss_base,
            rss_peak_kib: rss_after,
            server_cpu_ms: hb_cpu.as_millis() as u64,
            note: format!(
                "{} attendees in {rooms} rooms; {:.1} us server CPU per heartbeat{}; received = answered in_meeting:true",
                a.attendees,
                hb_cpu.as_secs_f64() * 1e6 / n.max(1) as f64,
                redis_note(hb_rcpu, n)
            ),
            ..Row::default()
        }
        .with_latencies(&lat.merged()),
    ];
    rows.push(Row {
        scenario: "B5 sweeper".into(),
        target: label,
        expected: a.attendees,
        received: a.attendees,
        rss_base_kib: rss_base,
        rss_peak_kib: server.rss_kib(),
        server_cpu_ms: (sweep_cpu.max(0.0) * 1000.0) as u64,
        note: format!(
            "CPU above idle ({:.2} ms/s) over the {:.0} s in which the sweeper (1 s interval) closes {} stale cycles: {:.1} us per cycle",
            idle_rate * 1000.0,
            window.as_secs_f64(),
            a.attendees,
            sweep_cpu.max(0.0) * 1e6 / a.attendees.max(1) as f64
        ),
        ..Row::default()
    });
    print_table(&rows);
    drop(server);
    Ok(())
}
