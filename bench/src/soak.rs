//! The soak (`rollcall-bench soak`): one rollcall release server under
//! B1-like load for a long while (10 minutes by default) — rooms ×
//! subscribers receiving `attendance.updated` from signed webhooks at a
//! steady rate, 10 % of the subscribers a minute leaving and coming back
//! (re-subscribing, getting a fresh snapshot), heartbeats for the people
//! in the rooms, and bounded hostile clients ([`crate::hostile`]) — with
//! the server's RSS, open fds and CPU, and the load's latency, sampled
//! every few seconds. What it answers: do RSS and fds stay flat, and
//! does latency drift? Every part is bounded in count and time; the run
//! always ends by itself.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{Notify, Semaphore};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, Proto, Ws};
use crate::hostile::{self, HostileArgs, Kind, Outcomes};
use crate::publish::{self, Plan, Publisher};
use crate::scenarios::{ClientArgs, label};
use crate::servers::{Server, ServerArgs, Target};
use crate::stats::Latencies;
use crate::sys;
use crate::track::{self, Tracker};

/// Joins a second during the warm start (webhook rate limits are off).
const WARM_RATE: f64 = 1_000.0;

#[derive(Debug, Clone, Args)]
pub struct SoakArgs {
    #[arg(long, default_value_t = 100)]
    pub rooms: u64,
    /// Subscribers per room (also the people per room the webhooks move).
    #[arg(long, default_value_t = 30)]
    pub subscribers: u64,
    /// Attendance-changing webhooks per second, all rooms. Kept moderate:
    /// the memory store keeps every event (its log), so this sets how fast
    /// stored data grows.
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// Length of the measured run.
    #[arg(long, env = "SOAK_SECS", default_value_t = 600)]
    pub secs: u64,
    /// Seconds between samples.
    #[arg(long, default_value_t = 5)]
    pub sample_secs: u64,
    /// Subscribers that leave and come back, percent per minute.
    #[arg(long, default_value_t = 10.0)]
    pub churn_pct: f64,
    /// Heartbeats per second, round robin over the rooms' people.
    #[arg(long, default_value_t = 50.0)]
    pub heartbeat_rate: f64,
    /// "Flat": every RSS sample of the second half within this many
    /// percent of the one at the half-way mark (minute 5 of 10)...
    #[arg(long, default_value_t = 10.0)]
    pub rss_tolerance_pct: f64,
    /// ... and every fd count within this many of it.
    #[arg(long, default_value_t = 50)]
    pub fd_tolerance: u64,
    /// Where the samples go, one CSV row each.
    #[arg(long, default_value = "soak.csv")]
    pub csv: PathBuf,
    #[command(flatten)]
    pub hostile: HostileArgs,
    #[command(flatten)]
    pub client: ClientArgs,
    /// (`--target` is ignored: the soak runs rollcall.)
    #[command(flatten)]
    pub server: ServerArgs,
}

/// What the subscribers share: send stamps, this interval's latencies,
/// and tallies.
struct Audience {
    tracker: Arc<Tracker>,
    interval: Latencies,
    all: Latencies,
    delivered: AtomicU64,
    connected: AtomicI64,
    subscribes: AtomicU64,
    failures: AtomicU64,
    first_failure: Mutex<Option<String>>,
    snapshots: AtomicU64,
    /// Sessions the server ended (not our churn).
    server_closed: AtomicU64,
    kicks: AtomicU64,
}

/// Heartbeat outcomes.
#[derive(Default)]
struct Beats {
    ok: AtomicU64,
    outcomes: Mutex<BTreeMap<String, u64>>,
}

impl Beats {
    fn record(&self, what: String) {
        *self.outcomes.lock().unwrap().entry(what).or_default() += 1;
    }
}

/// One row of the sample table (and the CSV).
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub t: f64,
    pub rss_kib: u64,
    pub fds: u64,
    pub cpu_pct: f64,
    subscribers: i64,
    server_ws: Option<u64>,
    /// The server's count of applied webhooks (each one stored data).
    pub webhooks: Option<u64>,
    deliveries_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    heartbeats_per_s: f64,
    hostile_open: Vec<i64>,
    hostile_events: u64,
}

pub async fn soak(a: SoakArgs) -> anyhow::Result<()> {
    let fd_limit = sys::raise_fd_limit();
    println!(
        "== SOAK | {} | fd limit {fd_limit} | unix time {}",
        sys::machine(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    );
    let mut server_args = a.server.clone();
    server_args.client_limits = true;
    // Server warnings (one per refused hostile client) would drown the
    // table; errors still show. `--rollcall-env RUST_LOG=...` overrides.
    if !server_args
        .rollcall_env
        .iter()
        .any(|(k, _)| k == "RUST_LOG")
    {
        server_args
            .rollcall_env
            .insert(0, ("RUST_LOG".into(), "error".into()));
    }
    let server = Server::start(&server_args, Target::Rollcall).await?;
    let name = label(&a.server, Target::Rollcall);
    let pid = server.pid.unwrap_or(0);
    let plan = Plan {
        rooms: a.rooms,
        people_per_room: a.subscribers.max(1),
        nonce: (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            % 100_000) as u32,
    };
    let count = (a.rate * a.secs as f64) as u64;
    // Warm start: every person of every room joins once before the first
    // subscriber arrives, so every socket is sent a full snapshot from the
    // start and churn replaces like with like. From cold, the first
    // sockets were never sent one and every replacement is (keeping a
    // bigger write buffer), so RSS climbed for as long as churn took to
    // replace them all (BENCHMARKS.md, "Soak").
    let warm = a.rooms * plan.people_per_room;
    let audience = Arc::new(Audience {
        tracker: Arc::new(Tracker::new(warm + count, vec![0])),
        interval: Latencies::new(),
        all: Latencies::new(),
        delivered: AtomicU64::new(0),
        connected: AtomicI64::new(0),
        subscribes: AtomicU64::new(0),
        failures: AtomicU64::new(0),
        first_failure: Mutex::new(None),
        snapshots: AtomicU64::new(0),
        server_closed: AtomicU64::new(0),
        kicks: AtomicU64::new(0),
    });

    let publisher = Publisher::new(&server.base, Target::Rollcall, plan, 0);
    let warmed = publish::at_rate(
        &publisher,
        &audience.tracker,
        0,
        warm,
        WARM_RATE,
        a.client.in_flight,
        None,
    )
    .await;
    println!("{name}: warm start, {warm} joins sent ({} ok)", warmed.ok);

    // The subscribers: one task per slot, reconnecting when kicked.
    let n = (a.rooms * a.subscribers) as usize;
    let url = server.ws_url();
    let gate = Arc::new(Semaphore::new(a.client.connect_parallel.max(1)));
    let kicks: Vec<Arc<Notify>> = (0..n).map(|_| Arc::new(Notify::new())).collect();
    let mut subscribers = tokio::task::JoinSet::new();
    for (i, kick) in kicks.iter().enumerate() {
        let src = 1 + (i % a.client.sources.max(1) as usize) as u8;
        let (url, channel, kick, aud, gate) = (
            url.clone(),
            plan.channel(i as u64 % a.rooms),
            kick.clone(),
            audience.clone(),
            gate.clone(),
        );
        subscribers
            .spawn(async move { subscriber(i, &url, src, &channel, &kick, &aud, &gate).await });
    }
    let setup = Instant::now();
    while (audience.connected.load(Ordering::Relaxed) as usize) < n
        && setup.elapsed() < Duration::from_secs(120)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "{name}: {} of {n} subscribers connected in {:.1} s ({} failed attempts{})",
        audience.connected.load(Ordering::Relaxed),
        setup.elapsed().as_secs_f64(),
        audience.failures.load(Ordering::Relaxed),
        audience
            .first_failure
            .lock()
            .unwrap()
            .as_deref()
            .map(|e| format!(", first: {e}"))
            .unwrap_or_default()
    );

    // The clock starts: webhooks, churn, heartbeats, hostile clients.
    let sending = {
        let (p, t, rate, in_flight) = (
            publisher.clone(),
            audience.tracker.clone(),
            a.rate,
            a.client.in_flight,
        );
        tokio::spawn(
            async move { publish::at_rate(&p, &t, warm, count, rate, in_flight, None).await },
        )
    };
    let mut background = tokio::task::JoinSet::new();
    let churn_every = Duration::from_secs_f64(60.0 / (a.churn_pct / 100.0 * n as f64).max(1e-3));
    {
        let (kicks, aud) = (kicks.clone(), audience.clone());
        background.spawn(async move {
            let mut tick = tokio::time::interval(churn_every);
            tick.tick().await;
            for k in (0..kicks.len()).cycle() {
                tick.tick().await;
                kicks[k].notify_one();
                aud.kicks.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let beats = Arc::new(Beats::default());
    if a.heartbeat_rate > 0.0 {
        let (base, beats, rate, ttl) = (
            server.base.clone(),
            beats.clone(),
            a.heartbeat_rate,
            a.secs as i64 + 600,
        );
        background.spawn(async move { heartbeats(&base, plan, rate, ttl, beats).await });
    }
    let outcomes = Arc::new(Outcomes::default());
    let mut hostiles = hostile::spawn(
        &a.hostile,
        Arc::new(hostile::Target {
            base: server.base.clone(),
            ws_url: url.clone(),
            channels: (0..a.rooms).map(|r| plan.channel(r)).collect(),
            room: plan.room_name(0),
        }),
        outcomes.clone(),
    );

    // Sampling.
    let mut csv = std::io::BufWriter::new(std::fs::File::create(&a.csv)?);
    writeln!(
        csv,
        "t_s,rss_kib,fds,cpu_pct,subscribers,server_ws,webhooks_applied,deliveries_per_s,p50_ms,p99_ms,max_ms,heartbeats_per_s,hostile_events,{}",
        Kind::ALL
            .iter()
            .map(|k| format!("open_{}", k.name().replace('-', "_")))
            .collect::<Vec<_>>()
            .join(",")
    )?;
    println!(
        "\n{:>6} {:>8} {:>6} {:>6} {:>6} {:>7} {:>8} {:>7} {:>7} {:>8} {:>6} {:>8} {:>8}",
        "t s",
        "rss MiB",
        "fds",
        "cpu %",
        "subs",
        "srv ws",
        "deliv/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "hb/s",
        "hostile",
        "h. ended"
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let start = Instant::now();
    let end = start + Duration::from_secs(a.secs);
    let every = Duration::from_secs(a.sample_secs.max(1));
    let mut samples: Vec<Sample> = Vec::new();
    let (mut last_t, mut last_cpu, mut last_delivered, mut last_beats, mut last_events) = (
        start,
        server.cpu(),
        audience.delivered.load(Ordering::Relaxed),
        0u64,
        0u64,
    );
    let _ = audience.interval.take();
    while Instant::now() < end {
        tokio::time::sleep_until((last_t + every).min(end).into()).await;
        let now = Instant::now();
        let wall = now.duration_since(last_t).as_secs_f64().max(1e-3);
        let cpu = server.cpu();
        let delivered = audience.delivered.load(Ordering::Relaxed);
        let beats_ok = beats.ok.load(Ordering::Relaxed);
        let events = outcomes.events.load(Ordering::Relaxed);
        let h = audience.interval.take();
        let (server_ws, webhooks) = server_metrics(&http, &server.base).await;
        let ms = |q: f64| {
            if h.is_empty() {
                0.0
            } else {
                h.value_at_quantile(q) as f64 / 1000.0
            }
        };
        let s = Sample {
            t: now.duration_since(start).as_secs_f64(),
            rss_kib: server.rss_kib(),
            fds: sys::open_fds(pid).unwrap_or(0),
            cpu_pct: cpu.saturating_sub(last_cpu).as_secs_f64() / wall * 100.0,
            subscribers: audience.connected.load(Ordering::Relaxed),
            server_ws,
            webhooks,
            deliveries_per_s: (delivered - last_delivered) as f64 / wall,
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
            max_ms: if h.is_empty() {
                0.0
            } else {
                h.max() as f64 / 1000.0
            },
            heartbeats_per_s: (beats_ok - last_beats) as f64 / wall,
            hostile_open: Kind::ALL.iter().map(|&k| outcomes.open_now(k)).collect(),
            hostile_events: events - last_events,
        };
        (last_t, last_cpu, last_delivered, last_beats, last_events) =
            (now, cpu, delivered, beats_ok, events);
        print_sample(&s);
        write_sample(&mut csv, &s)?;
        csv.flush()?;
        samples.push(s);
    }

    // Stop everything we started, each step bounded.
    let open_at_end: Vec<(Kind, i64)> = Kind::ALL
        .iter()
        .map(|&k| (k, outcomes.open_now(k)))
        .collect();
    hostiles.abort_all();
    background.abort_all();
    let sent = match timeout(Duration::from_secs(35), sending).await {
        Ok(Ok(sent)) => Some(sent),
        _ => None,
    };
    let settle = tokio::time::sleep(Duration::from_secs(1));
    settle.await;
    subscribers.abort_all();
    let _ = timeout(Duration::from_secs(20), async {
        while subscribers.join_next().await.is_some() {}
        while hostiles.join_next().await.is_some() {}
        while background.join_next().await.is_some() {}
    })
    .await;

    // Report.
    println!(
        "\n== SOAK summary ({name}, {} s, {} samples)",
        a.secs,
        samples.len()
    );
    println!(
        "load: {} rooms x {} subscribers; {} webhooks/s offered{}",
        a.rooms,
        a.subscribers,
        a.rate,
        match &sent {
            Some(s) => format!(
                ", {} accepted, {} refused or failed{}; sender max lag {:.1} ms",
                s.ok,
                s.errors,
                s.first_error
                    .as_deref()
                    .map(|e| format!(" (first: {})", e.chars().take(120).collect::<String>()))
                    .unwrap_or_default(),
                s.max_lag.as_secs_f64() * 1000.0
            ),
            None => ", sender did not finish in time".into(),
        }
    );
    let all = audience.all.merged();
    println!(
        "deliveries: {} (p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms over the run); unmarked-seq frames {}",
        audience.delivered.load(Ordering::Relaxed),
        all.value_at_quantile(0.5) as f64 / 1000.0,
        all.value_at_quantile(0.99) as f64 / 1000.0,
        all.value_at_quantile(0.999) as f64 / 1000.0,
        all.max() as f64 / 1000.0,
        audience.tracker.unknown.load(Ordering::Relaxed),
    );
    println!(
        "churn: {} kicks ({} % of {n} per minute); {} re-subscriptions after the first {n}, {} snapshots received, {} failed attempts, {} sessions ended by the server",
        audience.kicks.load(Ordering::Relaxed),
        a.churn_pct,
        audience
            .subscribes
            .load(Ordering::Relaxed)
            .saturating_sub(n as u64),
        audience.snapshots.load(Ordering::Relaxed),
        audience.failures.load(Ordering::Relaxed),
        audience.server_closed.load(Ordering::Relaxed),
    );
    println!(
        "heartbeats ({}/s offered): {}",
        a.heartbeat_rate,
        beats
            .outcomes
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "hostile clients ({} of each kind, from 127.0.0.{}):",
        a.hostile.hostile_conns,
        hostile::SRC
    );
    for ((kind, rows), (_, open)) in outcomes.summary().into_iter().zip(&open_at_end) {
        println!("  {} ({open} open at the end):", kind.name());
        for (what, count) in rows {
            println!("    {count:>8}  {what}");
        }
    }
    let verdict = judge(&samples, a.rss_tolerance_pct, a.fd_tolerance);
    match &verdict {
        Some(v) => println!("{}", v.describe(a.rss_tolerance_pct, a.fd_tolerance)),
        None => println!("flatness: too few samples to judge"),
    }
    println!("samples written to {}", a.csv.display());
    println!(
        "RESULT {}",
        serde_json::json!({
            "scenario": "soak", "target": name, "secs": a.secs,
            "delivered": audience.delivered.load(Ordering::Relaxed),
            "p99_us": all.value_at_quantile(0.99),
            "webhooks_ok": sent.as_ref().map(|s| s.ok),
            "rss_first_kib": samples.first().map(|s| s.rss_kib),
            "rss_last_kib": samples.last().map(|s| s.rss_kib),
            "fds_first": samples.first().map(|s| s.fds),
            "fds_last": samples.last().map(|s| s.fds),
            "rss_flat": verdict.as_ref().map(|v| v.rss_flat()),
            "fds_flat": verdict.as_ref().map(|v| v.fds_flat()),
        })
    );
    drop(server);
    Ok(())
}

/// One subscriber slot: subscribe, listen until kicked (churn) or closed
/// by the server, then subscribe again. Runs until aborted.
async fn subscriber(
    who: usize,
    url: &str,
    src: u8,
    channel: &str,
    kick: &Notify,
    aud: &Audience,
    gate: &Semaphore,
) {
    loop {
        let ws = {
            let _permit = gate.acquire().await.expect("open semaphore");
            // subscribe's own steps time out at 30 s each; bound the whole.
            timeout(
                Duration::from_secs(30),
                client::subscribe(url, src, Proto::Pusher, channel),
            )
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("subscribe timed out")))
        };
        let ws = match ws {
            Ok(ws) => ws,
            Err(e) => {
                aud.failures.fetch_add(1, Ordering::Relaxed);
                aud.first_failure
                    .lock()
                    .unwrap()
                    .get_or_insert_with(|| format!("{e:#}"));
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        aud.subscribes.fetch_add(1, Ordering::Relaxed);
        aud.connected.fetch_add(1, Ordering::Relaxed);
        let kicked = listen(ws, who, kick, aud).await;
        aud.connected.fetch_sub(1, Ordering::Relaxed);
        if !kicked {
            aud.server_closed.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// Reads frames, timing marked updates and counting snapshots, until the
/// server ends the socket (false) or `kick` fires (true: we close it).
async fn listen(mut ws: Ws, who: usize, kick: &Notify, aud: &Audience) -> bool {
    // One registration per session, not per frame.
    let kicked = kick.notified();
    tokio::pin!(kicked);
    loop {
        tokio::select! {
            _ = &mut kicked => {
                let _ = timeout(Duration::from_secs(2), ws.close(None)).await;
                return true;
            }
            msg = ws.next() => {
                let Some(Ok(msg)) = msg else { return false };
                let Message::Text(t) = msg else { continue };
                let text = t.as_str();
                if text.contains("attendance.updated") {
                    let now = Instant::now();
                    match track::marker(text).and_then(|s| aud.tracker.sent_at(s)) {
                        Some(sent) => {
                            let d = now.saturating_duration_since(sent);
                            aud.interval.record(who, d);
                            aud.all.record(who, d);
                            aud.delivered.fetch_add(1, Ordering::Relaxed);
                        }
                        None => {
                            aud.tracker.unknown.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                } else if text.contains("attendance.snapshot") {
                    aud.snapshots.fetch_add(1, Ordering::Relaxed);
                } else if text.contains("\"pusher:ping\"") {
                    let pong = Message::text(r#"{"event":"pusher:pong","data":{}}"#);
                    if timeout(Duration::from_secs(5), ws.send(pong)).await.is_err() {
                        return false;
                    }
                }
            }
        }
    }
}

/// Heartbeats at `rate`, round robin over every person of the plan, each
/// with that person's own access token (as B5 sends them). Runs until
/// aborted; at most 64 in flight (past that a beat is skipped, counted).
async fn heartbeats(base: &str, plan: Plan, rate: f64, ttl: i64, beats: Arc<Beats>) {
    let now = rollcall::domain::now_millis() / 1000;
    let people = plan.rooms * plan.people_per_room;
    let tokens: Arc<Vec<String>> = Arc::new(
        (0..people)
            .map(|s| {
                let e = plan.event(s);
                let t = rollcall::livekit::sign_access_token(
                    publish::KEY,
                    publish::SECRET,
                    &format!("{}_Bench_User", e.uid),
                    &plan.room_name(e.room),
                    now,
                    ttl,
                );
                format!("Bearer {t}")
            })
            .collect(),
    );
    let Ok(http) = reqwest::Client::builder()
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(10))
        .build()
    else {
        beats.record("no HTTP client".into());
        return;
    };
    let url = format!("{base}/api/heartbeat");
    let gate = Arc::new(Semaphore::new(64));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tasks = tokio::task::JoinSet::new();
    for i in (0..tokens.len()).cycle() {
        tick.tick().await;
        while tasks.try_join_next().is_some() {}
        let Ok(permit) = gate.clone().try_acquire_owned() else {
            beats.record("skipped (64 in flight)".into());
            continue;
        };
        let (http, url, tokens, beats) = (http.clone(), url.clone(), tokens.clone(), beats.clone());
        tasks.spawn(async move {
            let r = http
                .post(&url)
                .header("Authorization", tokens[i].as_str())
                .send()
                .await;
            let what = match r {
                Err(e) if e.is_timeout() => "timed out".to_string(),
                Err(_) => "transport error".into(),
                Ok(r) if r.status().is_success() => {
                    beats.ok.fetch_add(1, Ordering::Relaxed);
                    match r.text().await {
                        Ok(b) if b.contains("\"in_meeting\":true") => "200 in_meeting".into(),
                        Ok(_) => "200 not in_meeting".into(),
                        Err(_) => "200, body failed".into(),
                    }
                }
                Ok(r) => format!("status {}", r.status().as_u16()),
            };
            beats.record(what);
            drop(permit);
        });
    }
}

/// From the server's /metrics: open WebSockets and applied webhooks.
async fn server_metrics(http: &reqwest::Client, base: &str) -> (Option<u64>, Option<u64>) {
    let text = match http.get(format!("{base}/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as u64)
    };
    (
        value("rollcall_websocket_connections "),
        value("rollcall_webhooks_total{outcome=\"applied\"} "),
    )
}

fn print_sample(s: &Sample) {
    println!(
        "{:>6.0} {:>8.1} {:>6} {:>6.1} {:>6} {:>7} {:>8.0} {:>7.2} {:>7.2} {:>8.1} {:>6.0} {:>8} {:>8}",
        s.t,
        s.rss_kib as f64 / 1024.0,
        s.fds,
        s.cpu_pct,
        s.subscribers,
        s.server_ws.map_or("-".into(), |v| v.to_string()),
        s.deliveries_per_s,
        s.p50_ms,
        s.p99_ms,
        s.max_ms,
        s.heartbeats_per_s,
        s.hostile_open.iter().sum::<i64>(),
        s.hostile_events,
    );
}

fn write_sample(w: &mut impl std::io::Write, s: &Sample) -> std::io::Result<()> {
    writeln!(
        w,
        "{:.1},{},{},{:.1},{},{},{},{:.1},{:.3},{:.3},{:.3},{:.1},{},{}",
        s.t,
        s.rss_kib,
        s.fds,
        s.cpu_pct,
        s.subscribers,
        s.server_ws.map_or(String::new(), |v| v.to_string()),
        s.webhooks.map_or(String::new(), |v| v.to_string()),
        s.deliveries_per_s,
        s.p50_ms,
        s.p99_ms,
        s.max_ms,
        s.heartbeats_per_s,
        s.hostile_events,
        s.hostile_open
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(","),
    )
}

/// The second half of a run against its half-way mark.
#[derive(Debug, Clone, PartialEq)]
pub struct Flatness {
    /// The reference sample's time (s), RSS (KiB) and fds.
    pub mid_t: f64,
    pub rss_mid: u64,
    pub fds_mid: u64,
    pub rss_min: u64,
    pub rss_max: u64,
    pub fds_min: u64,
    pub fds_max: u64,
    /// Least-squares RSS slope over the second half, KiB per minute.
    pub rss_slope_kib_per_min: f64,
    /// RSS growth from the mark to the end per applied webhook, bytes:
    /// the memory store keeps every event (its log, its id, the cycle it
    /// opened or closed), so there it is mostly stored data; against a
    /// run without hostile clients it shows what they cost.
    pub bytes_per_webhook: Option<f64>,
    tol_pct: f64,
    fd_tol: u64,
}

impl Flatness {
    /// Largest deviation from the reference, percent.
    pub fn rss_dev_pct(&self) -> f64 {
        let mid = self.rss_mid.max(1) as f64;
        ((self.rss_max as f64 - mid)
            .abs()
            .max((mid - self.rss_min as f64).abs()))
            / mid
            * 100.0
    }

    pub fn rss_flat(&self) -> bool {
        self.rss_dev_pct() <= self.tol_pct
    }

    pub fn fds_flat(&self) -> bool {
        self.fds_max
            .abs_diff(self.fds_mid)
            .max(self.fds_mid.abs_diff(self.fds_min))
            <= self.fd_tol
    }

    fn describe(&self, tol_pct: f64, fd_tol: u64) -> String {
        format!(
            "flatness (second half vs t = {:.0} s):\n  RSS {}: {:.1} MiB at the mark, {:.1}..{:.1} MiB after (max deviation {:.1} %, limit ±{tol_pct} %), slope {:+.0} KiB/min{}\n  fds {}: {} at the mark, {}..{} after (limit ±{fd_tol})",
            self.mid_t,
            if self.rss_flat() { "FLAT" } else { "NOT FLAT" },
            self.rss_mid as f64 / 1024.0,
            self.rss_min as f64 / 1024.0,
            self.rss_max as f64 / 1024.0,
            self.rss_dev_pct(),
            self.rss_slope_kib_per_min,
            self.bytes_per_webhook
                .map(|b| format!(", {b:.0} B per webhook applied since the mark"))
                .unwrap_or_default(),
            if self.fds_flat() { "FLAT" } else { "NOT FLAT" },
            self.fds_mid,
            self.fds_min,
            self.fds_max,
        )
    }
}

/// Judges the samples: the reference is the first sample at or past half
/// the run (minute 5 of 10: start-up, connecting and the first fill of
/// buffers and caches are behind it); the second half is it and every
/// later sample. `None` with fewer than 3 samples in that half.
pub fn judge(samples: &[Sample], tol_pct: f64, fd_tol: u64) -> Option<Flatness> {
    let total = samples.last()?.t;
    let at = samples.iter().position(|s| s.t >= total / 2.0)?;
    let half = &samples[at..];
    if half.len() < 3 {
        return None;
    }
    let mid = &half[0];
    // Least squares of RSS on time.
    let k = half.len() as f64;
    let mt = half.iter().map(|s| s.t).sum::<f64>() / k;
    let mr = half.iter().map(|s| s.rss_kib as f64).sum::<f64>() / k;
    let cov: f64 = half
        .iter()
        .map(|s| (s.t - mt) * (s.rss_kib as f64 - mr))
        .sum();
    let var: f64 = half.iter().map(|s| (s.t - mt).powi(2)).sum();
    Some(Flatness {
        mid_t: mid.t,
        rss_mid: mid.rss_kib,
        fds_mid: mid.fds,
        rss_min: half.iter().map(|s| s.rss_kib).min()?,
        rss_max: half.iter().map(|s| s.rss_kib).max()?,
        fds_min: half.iter().map(|s| s.fds).min()?,
        fds_max: half.iter().map(|s| s.fds).max()?,
        rss_slope_kib_per_min: if var > 0.0 { cov / var * 60.0 } else { 0.0 },
        bytes_per_webhook: match (mid.webhooks, half.last()?.webhooks) {
            (Some(a), Some(b)) if b > a => {
                Some((half.last()?.rss_kib as f64 - mid.rss_kib as f64) * 1024.0 / (b - a) as f64)
            }
            _ => None,
        },
        tol_pct,
        fd_tol,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(points: &[(f64, u64, u64)]) -> Vec<Sample> {
        points
            .iter()
            .map(|&(t, rss_kib, fds)| Sample {
                t,
                rss_kib,
                fds,
                webhooks: Some(t as u64 * 50),
                ..Sample::default()
            })
            .collect()
    }

    #[test]
    fn a_steady_second_half_is_flat_and_growth_is_not() {
        // Growth before the mark (start-up) does not count.
        let steady = run(&[
            (5.0, 10_000, 100),
            (10.0, 50_000, 900),
            (15.0, 51_000, 905),
            (20.0, 50_500, 910),
            (25.0, 52_000, 902),
        ]);
        let v = judge(&steady, 10.0, 50).unwrap();
        assert_eq!((v.mid_t, v.rss_mid, v.fds_mid), (15.0, 51_000, 905));
        assert!(v.rss_flat() && v.fds_flat(), "{v:?}");

        let leaking = run(&[
            (5.0, 10_000, 100),
            (10.0, 50_000, 900),
            (15.0, 51_000, 905),
            (20.0, 56_000, 960),
            (25.0, 62_000, 1_020),
        ]);
        let v = judge(&leaking, 10.0, 50).unwrap();
        assert!(!v.rss_flat() && !v.fds_flat(), "{v:?}");
        assert!(v.rss_slope_kib_per_min > 60_000.0, "{v:?}");

        // 11,000 KiB from t = 15 to 25 over 500 webhooks.
        assert_eq!(v.bytes_per_webhook, Some(11_000.0 * 1024.0 / 500.0));

        assert_eq!(judge(&steady[..2], 10.0, 50), None);
    }
}
