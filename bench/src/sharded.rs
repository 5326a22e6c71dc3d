//! B2 past one process's fd limit: the sockets are spread over several
//! server processes (for rollcall and Socket.IO, nodes of one cluster
//! sharing a Redis; the bare server has no bus, so each node gets the
//! publish) and held by several generator processes (`b2-worker`), each
//! within the limit. The broadcast is timed across processes with the wall
//! clock: the parent announces when it will send, every worker records
//! receipts against that instant and sends back its latency histogram.

use std::io::Write as _;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Args;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::client::{self, Proto};
use crate::publish::{Plan, Publisher, Via};
use crate::scenarios::B2Args;
use crate::servers::{Server, Store, Target};
use crate::stats::{Latencies, Row};
use crate::sys;
use crate::track::Tracker;

/// One generator process's share of B2 (started by `b2` itself).
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    #[arg(long)]
    pub url: String,
    #[arg(long, value_enum)]
    pub target: Target,
    #[arg(long)]
    pub sockets: usize,
    #[arg(long)]
    pub channel: String,
    #[arg(long, default_value_t = 16)]
    pub sources: u8,
    #[arg(long, default_value_t = 128)]
    pub connect_parallel: usize,
    #[arg(long, default_value_t = 20)]
    pub drain_secs: u64,
}

fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// The worker: connects, says `READY <connected> <failed> <secs>`, then on
/// `AT <unix ns>` waits for the one broadcast and answers `HIST <value>
/// <count>`… `DONE <received>`; exits on `CLOSE` or end of input.
pub async fn worker(a: WorkerArgs) -> anyhow::Result<()> {
    sys::raise_fd_limit();
    let tracker = Arc::new(Tracker::new(1, vec![0]));
    let crowd = client::crowd(
        &a.url,
        Proto::from(a.target),
        a.sockets,
        a.sources,
        a.connect_parallel,
        |_| a.channel.clone(),
        tracker.clone(),
    )
    .await;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "READY {} {} {:.2} {}",
        crowd.connected,
        crowd.failed,
        crowd.connect_secs,
        crowd
            .first_error
            .as_deref()
            .unwrap_or("-")
            .replace('\n', " ")
    )?;
    out.flush()?;
    drop(out);
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("AT") => {
                let at: u128 = words.next().context("AT <ns>")?.parse()?;
                // The same wall-clock instant, on this process's monotonic clock.
                let now = unix_ns();
                let sent = if at >= now {
                    Instant::now() + Duration::from_nanos((at - now) as u64)
                } else {
                    Instant::now() - Duration::from_nanos((now - at) as u64)
                };
                tracker.mark_sent_at(0, sent);
                let deadline = Instant::now() + Duration::from_secs(a.drain_secs);
                while tracker.received.load(Ordering::Relaxed) < crowd.connected
                    && Instant::now() < deadline
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let mut out = std::io::stdout().lock();
                for v in tracker.phase(0).merged().iter_recorded() {
                    writeln!(out, "HIST {} {}", v.value_iterated_to(), v.count_at_value())?;
                }
                writeln!(out, "DONE {}", tracker.received.load(Ordering::Relaxed))?;
                out.flush()?;
            }
            Some("CLOSE") | None => break,
            Some(other) => bail!("unknown command {other}"),
        }
    }
    crowd.close().await;
    Ok(())
}

/// A generator child process and its pipes.
struct Worker {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    connected: u64,
    failed: u64,
    first_error: Option<String>,
}

impl Worker {
    async fn start(a: WorkerArgs) -> anyhow::Result<Worker> {
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .arg("b2-worker")
            .args(["--url", &a.url, "--channel", &a.channel])
            .args(["--target", &format!("{:?}", a.target).to_lowercase()])
            .args(["--sockets", &a.sockets.to_string()])
            .args(["--sources", &a.sources.to_string()])
            .args(["--connect-parallel", &a.connect_parallel.to_string()])
            .args(["--drain-secs", &a.drain_secs.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start a b2-worker")?;
        let stdin = child.stdin.take().context("worker stdin")?;
        let lines = BufReader::new(child.stdout.take().context("worker stdout")?).lines();
        Ok(Worker {
            child,
            stdin,
            lines,
            connected: 0,
            failed: 0,
            first_error: None,
        })
    }

    async fn ready(&mut self) -> anyhow::Result<()> {
        let line = self
            .lines
            .next_line()
            .await?
            .context("worker exited before READY")?;
        let mut w = line.split_whitespace();
        anyhow::ensure!(w.next() == Some("READY"), "unexpected worker line {line}");
        self.connected = w.next().context("connected")?.parse()?;
        self.failed = w.next().context("failed")?.parse()?;
        let _secs = w.next();
        let err: Vec<&str> = w.collect();
        if err != ["-"] {
            self.first_error = Some(err.join(" "));
        }
        Ok(())
    }

    async fn command(&mut self, line: &str) -> anyhow::Result<()> {
        self.stdin.write_all(format!("{line}\n").as_bytes()).await?;
        self.stdin.flush().await?;
        Ok(())
    }

    /// Reads the histogram lines into `into`; returns receipts.
    async fn results(&mut self, into: &Latencies, shard: usize) -> anyhow::Result<u64> {
        while let Some(line) = self.lines.next_line().await? {
            let mut w = line.split_whitespace();
            match w.next() {
                Some("HIST") => {
                    let us: u64 = w.next().context("value")?.parse()?;
                    let n: u64 = w.next().context("count")?.parse()?;
                    into.record_n(shard, us, n);
                }
                Some("DONE") => return Ok(w.next().context("received")?.parse()?),
                _ => bail!("unexpected worker line {line}"),
            }
        }
        bail!("worker exited before DONE")
    }
}

/// B2 with `sockets` spread over `nodes` server processes and as many
/// generator processes. Returns the row.
pub async fn b2_sharded(a: &B2Args, t: Target, nodes: usize) -> anyhow::Result<Row> {
    let (sockets, hold_secs, pad) = (a.sockets, a.hold_secs, a.client.pad);
    let (sources, connect_parallel) = (a.client.sources, a.client.connect_parallel);
    // Cross-node delivery needs the shared Redis (rollcall's store,
    // Socket.IO's adapter); the bare nodes are independent.
    let mut args = a.server.clone();
    if t != Target::Bare {
        args.store = Store::Redis;
    }
    let first = Server::spawn(&args, t, None).await?;
    let redis = first.own_redis_url();
    let mut servers = vec![first];
    for _ in 1..nodes {
        servers.push(Server::spawn(&args, t, redis.as_deref()).await?);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_base: u64 = servers.iter().map(Server::rss_kib).sum();
    let plan = Plan {
        rooms: 1,
        people_per_room: 10,
        nonce: std::process::id(),
    };
    let connect_start = Instant::now();
    let mut workers = Vec::with_capacity(nodes);
    for (i, server) in servers.iter().enumerate() {
        let share = sockets / nodes as u64 + u64::from((i as u64) < sockets % nodes as u64);
        workers.push(
            Worker::start(WorkerArgs {
                url: server.ws_url(),
                target: t,
                sockets: share as usize,
                channel: plan.channel(0),
                sources,
                connect_parallel: (connect_parallel / nodes).max(8),
                drain_secs: 20,
            })
            .await?,
        );
    }
    for w in &mut workers {
        w.ready().await?;
    }
    let connect_secs = connect_start.elapsed().as_secs_f64();
    let connected: u64 = workers.iter().map(|w| w.connected).sum();
    let failed: u64 = workers.iter().map(|w| w.failed).sum();
    if let Some(e) = workers.iter().find_map(|w| w.first_error.clone()) {
        println!("  first connect error: {e}");
    }
    println!("  {connected} subscribed over {nodes} nodes in {connect_secs:.1} s, {failed} failed");
    let mut rss_peak: u64 = servers.iter().map(Server::rss_kib).sum();
    let hold_end = Instant::now() + Duration::from_secs(hold_secs);
    while Instant::now() < hold_end {
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss_peak = rss_peak.max(servers.iter().map(Server::rss_kib).sum());
    }
    // Through one node when the cluster has a bus, else to every node.
    let targets: Vec<&Server> = if t == Target::Bare {
        servers.iter().collect()
    } else {
        vec![&servers[0]]
    };
    let publishers: Vec<Publisher> = targets
        .iter()
        .map(|s| Publisher::via(&s.base, t, Via::Api, plan, pad))
        .collect();
    let cpu0: Duration = servers.iter().map(Server::cpu).sum();
    let at = unix_ns() + 200_000_000;
    for w in &mut workers {
        w.command(&format!("AT {at}")).await?;
    }
    let wait = at.saturating_sub(unix_ns());
    tokio::time::sleep(Duration::from_nanos(wait as u64)).await;
    let late_us = (unix_ns().saturating_sub(at) / 1000) as u64;
    let requests: Vec<_> = publishers.iter().map(|p| p.request(0)).collect();
    let sends = publishers.iter().zip(&requests).map(|(p, r)| p.send(r));
    let mut send_errors = failed;
    for r in futures_util::future::join_all(sends).await {
        if !matches!(r, Ok(true)) {
            send_errors += 1;
        }
    }
    let latencies = Latencies::new();
    let mut received = 0;
    for (i, w) in workers.iter_mut().enumerate() {
        received += w.results(&latencies, i).await?;
    }
    let cpu = servers
        .iter()
        .map(Server::cpu)
        .sum::<Duration>()
        .saturating_sub(cpu0);
    for w in &mut workers {
        let _ = w.command("CLOSE").await;
    }
    for w in &mut workers {
        let _ = tokio::time::timeout(Duration::from_secs(30), w.child.wait()).await;
    }
    // The first node owns the Redis: stop the others before it.
    while let Some(server) = servers.pop() {
        drop(server);
    }
    let merged = latencies.merged();
    let per_socket = rss_peak.saturating_sub(rss_base) as f64 / connected.max(1) as f64;
    Ok(Row {
        scenario: "B2 idle capacity".into(),
        target: format!("{} x{nodes}", crate::scenarios::label(&args, t)),
        per_sec: received as f64 / (merged.max() as f64 / 1e6).max(1e-6),
        expected: connected,
        received,
        send_errors,
        rss_base_kib: rss_base,
        rss_peak_kib: rss_peak,
        server_cpu_ms: cpu.as_millis() as u64,
        note: format!(
            "{connected} sockets over {nodes} server and {nodes} generator processes (fd limit), held {hold_secs} s; \
             server RSS {per_socket:.2} KiB/socket above baseline (sum of nodes); connect {connect_secs:.1} s; \
             send {late_us} us after the announced instant{}",
            if t == Target::Bare {
                "; bare: one publish per node (no bus)"
            } else {
                "; one publish, fanned out through Redis"
            }
        ),
        ..Row::default()
    }
    .with_latencies(&merged))
}
