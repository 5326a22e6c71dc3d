//! B1 on several rollcall nodes over different Redis back ends, side by
//! side in one run (`rollcall-bench b1-cluster`, `make bench-cluster`):
//!
//! - `single`: N nodes on one Redis (the repository's `redis.conf`), each
//!   webhook acknowledged after that Redis's fsync;
//! - `cluster`: N nodes on a Redis Cluster of 3 masters + 3 replicas
//!   (`ROLLCALL_REDIS_CLUSTER`), each webhook acknowledged after `WAIT 1`
//!   (the cluster default);
//! - `replica`: N nodes on one Redis master with one replica and
//!   `ROLLCALL_REDIS_WAIT_REPLICAS=1`: the cluster's durability without
//!   the cluster.
//!
//! For each back end, one after the other with the same sizes: start the
//! Redis processes (every node from `redis.conf`, in a temporary
//! directory, on free ports from the kernel's ephemeral range), start the
//! rollcall nodes, spread the subscribers over the nodes (a room's
//! subscribers sit on every node, so most deliveries cross Redis), send
//! B1's signed webhooks at a fixed rate spread over the nodes (by a hash
//! of their sequence number, as a load balancer would), and then, with the subscribers gone, webhooks in a closed loop for a few
//! seconds (the ingest ceiling of the whole set). Then stop everything it
//! started and go on to the next back end.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;

use crate::client::{self, Proto};
use crate::publish::{self, Plan, Publisher, Request};
use crate::scenarios::{ClientArgs, drain, header, nonce};
use crate::servers::{Server, ServerArgs, Store, Target, parse_env_pair};
use crate::stats::Latencies;
use crate::sys;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// One Redis; a webhook is acknowledged after its fsync.
    Single,
    /// 3 masters + 3 replicas (`ROLLCALL_REDIS_CLUSTER`), `WAIT 1`.
    Cluster,
    /// One Redis master + one replica, `ROLLCALL_REDIS_WAIT_REPLICAS=1`.
    Replica,
}

impl Backend {
    fn label(self) -> &'static str {
        match self {
            Backend::Single => "single Redis",
            Backend::Cluster => "cluster 3+3, WAIT 1",
            Backend::Replica => "Redis+replica, WAIT 1",
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// Back ends, run in this order (the first is the base of the ratios).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "single,cluster,replica"
    )]
    pub backend: Vec<Backend>,
    /// Every back end this many times, alternating (a, b, c, a, b, c, …).
    #[arg(long, default_value_t = 1)]
    pub rounds: u32,
    /// rollcall nodes per back end.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    #[arg(long, default_value_t = 100)]
    pub rooms: u64,
    /// Subscribers per room, spread over the nodes.
    #[arg(long, default_value_t = 10)]
    pub subscribers: u64,
    /// Webhooks per second, all rooms, spread over the nodes.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    #[arg(long, default_value_t = 15)]
    pub secs: u64,
    /// After the fixed-rate phase, with the subscribers gone: webhooks in
    /// a closed loop over the nodes for this long (0 = skip).
    #[arg(long, default_value_t = 5)]
    pub ingest_secs: u64,
    /// Concurrent senders of the closed-loop phase.
    #[arg(long, default_value_t = 48)]
    pub ingest_workers: usize,
    #[command(flatten)]
    pub client: ClientArgs,
    /// The rollcall binary to start (`cargo build --release`).
    #[arg(long, env = "ROLLCALL_BIN", default_value = "target/release/rollcall")]
    pub server_bin: PathBuf,
    #[arg(long, default_value = "redis-server")]
    pub redis_bin: String,
    /// Creates the cluster (`redis-cli --cluster create`) and checks on
    /// the Redis processes.
    #[arg(long, default_value = "redis-cli")]
    pub redis_cli: String,
    /// The configuration of every Redis process (the repository's: AOF
    /// with `appendfsync always`).
    #[arg(long, default_value = "redis.conf")]
    pub redis_conf: PathBuf,
    /// Extra environment for every rollcall node, `NAME=value`.
    #[arg(long, value_parser = parse_env_pair)]
    pub rollcall_env: Vec<(String, String)>,
}

/// A bounded wait for the Redis processes to come up and agree.
const FORM_GUARD: Duration = Duration::from_secs(60);
/// One `redis-cli` call.
const CLI_GUARD: Duration = Duration::from_secs(10);

/// The Redis processes of one back end; stopped (SIGTERM, then SIGKILL
/// after 5 s) and their directory removed on drop.
struct Redis {
    backend: Backend,
    /// (port, process); masters and replicas alike.
    nodes: Vec<(u16, Child)>,
    dir: PathBuf,
    cli: String,
}

impl Redis {
    async fn start(a: &ClusterArgs, backend: Backend) -> anyhow::Result<Redis> {
        let dir = std::env::temp_dir().join(format!(
            "rollcall-bench-cluster-{}-{}",
            std::process::id(),
            nonce()
        ));
        std::fs::create_dir_all(&dir)?;
        let mut redis = Redis {
            backend,
            nodes: Vec::new(),
            dir,
            cli: a.redis_cli.clone(),
        };
        match backend {
            Backend::Single => {
                let port = sys::free_port();
                redis.spawn(a, port, &[])?;
                redis.wait_ping().await?;
            }
            Backend::Replica => {
                let master = sys::free_port();
                redis.spawn(a, master, &[])?;
                let replica = free_ports(1, &[master])[0];
                redis.spawn(
                    a,
                    replica,
                    &["--replicaof", "127.0.0.1", &master.to_string()],
                )?;
                redis.wait_ping().await?;
                redis
                    .wait_for("the replica to be online", async |r: &Redis| {
                        let info = r.cli(master, &["info", "replication"]).await?;
                        Ok(info.contains("state=online"))
                    })
                    .await?;
            }
            Backend::Cluster => {
                // Six client ports and six cluster-bus ports
                // (`cluster-port`), all distinct, from the kernel's
                // ephemeral range.
                let ports = free_ports(12, &[]);
                for (port, bus) in ports[..6].iter().zip(&ports[6..]) {
                    redis.spawn(
                        a,
                        *port,
                        &[
                            "--cluster-enabled",
                            "yes",
                            "--cluster-config-file",
                            "nodes.conf",
                            "--cluster-node-timeout",
                            "5000",
                            "--cluster-require-full-coverage",
                            "no",
                            "--cluster-port",
                            &bus.to_string(),
                        ],
                    )?;
                }
                redis.wait_ping().await?;
                let mut create = tokio::process::Command::new(&a.redis_cli);
                create.args(["--cluster", "create"]);
                for port in &ports[..6] {
                    create.arg(format!("127.0.0.1:{port}"));
                }
                create
                    .args(["--cluster-replicas", "1", "--cluster-yes"])
                    .stdin(Stdio::null())
                    .kill_on_drop(true);
                let out = tokio::time::timeout(FORM_GUARD, create.output())
                    .await
                    .context("redis-cli --cluster create did not finish in 60 s")?
                    .context("cannot run redis-cli")?;
                if !out.status.success() {
                    bail!(
                        "redis-cli --cluster create: {}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
                redis
                    .wait_for(
                        "every node cluster_state:ok and 3 masters with a replica online",
                        async |r: &Redis| {
                            let mut masters = 0;
                            for &(port, _) in &r.nodes {
                                let info = r.cli(port, &["cluster", "info"]).await?;
                                if !info.contains("cluster_state:ok")
                                    || !info.contains("cluster_known_nodes:6")
                                {
                                    return Ok(false);
                                }
                                let repl = r.cli(port, &["info", "replication"]).await?;
                                if repl.contains("role:master") && repl.contains("state=online") {
                                    masters += 1;
                                }
                            }
                            Ok(masters == 3)
                        },
                    )
                    .await?;
            }
        }
        Ok(redis)
    }

    fn spawn(&mut self, a: &ClusterArgs, port: u16, extra: &[&str]) -> anyhow::Result<()> {
        let dir = self.dir.join(port.to_string());
        std::fs::create_dir_all(&dir)?;
        let child = Command::new(&a.redis_bin)
            .arg(&a.redis_conf)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .arg("--dir")
            .arg(&dir)
            .arg("--logfile")
            .arg(dir.join("redis.log"))
            // A replica's first sync starts at once instead of after 5 s.
            .args(["--daemonize", "no", "--repl-diskless-sync-delay", "0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {} {}", a.redis_bin, a.redis_conf.display()))?;
        self.nodes.push((port, child));
        Ok(())
    }

    async fn cli(&self, port: u16, args: &[&str]) -> anyhow::Result<String> {
        let out = tokio::time::timeout(
            CLI_GUARD,
            tokio::process::Command::new(&self.cli)
                .args(["-h", "127.0.0.1", "-p", &port.to_string()])
                .args(args)
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .with_context(|| format!("redis-cli -p {port} {args:?}: no answer in 10 s"))?
        .context("cannot run redis-cli")?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    async fn wait_ping(&self) -> anyhow::Result<()> {
        self.wait_for("every Redis to answer PING", async |r: &Redis| {
            for &(port, _) in &r.nodes {
                if !r.cli(port, &["ping"]).await?.contains("PONG") {
                    return Ok(false);
                }
            }
            Ok(true)
        })
        .await
    }

    async fn wait_for(
        &self,
        what: &str,
        check: impl AsyncFn(&Redis) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + FORM_GUARD;
        loop {
            if check(self).await? {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "waited 60 s for {what} ({}); logs in {}",
                    self.backend.label(),
                    self.dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// How the rollcall nodes reach this back end: `--redis-url` (a
    /// single Redis, or the master) and environment.
    fn rollcall(&self) -> (Option<String>, Vec<(String, String)>) {
        let url = |port: u16| format!("redis://127.0.0.1:{port}");
        match self.backend {
            Backend::Single => (
                Some(url(self.nodes[0].0)),
                vec![("ROLLCALL_REDIS_WAIT_REPLICAS".into(), "0".into())],
            ),
            Backend::Replica => (
                Some(url(self.nodes[0].0)),
                vec![("ROLLCALL_REDIS_WAIT_REPLICAS".into(), "1".into())],
            ),
            Backend::Cluster => {
                let seeds: Vec<String> = self.nodes.iter().map(|(p, _)| url(*p)).collect();
                (
                    None,
                    vec![
                        ("ROLLCALL_REDIS_CLUSTER".into(), seeds.join(",")),
                        ("ROLLCALL_REDIS_WAIT_REPLICAS".into(), "1".into()),
                    ],
                )
            }
        }
    }

    /// CPU time of every Redis process so far (masters and replicas).
    fn cpu(&self) -> Duration {
        self.nodes
            .iter()
            .filter_map(|(_, c)| sys::cpu_time(c.id()))
            .sum()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        crate::servers::stop_all(self.nodes.iter_mut().map(|(_, child)| child));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `n` distinct free loopback ports, none of them in `taken`.
fn free_ports(n: usize, taken: &[u16]) -> Vec<u16> {
    let mut seen: HashSet<u16> = taken.iter().copied().collect();
    let mut ports = Vec::with_capacity(n);
    while ports.len() < n {
        let p = sys::free_port();
        if seen.insert(p) {
            ports.push(p);
        }
    }
    ports
}

/// What one back end measured.
#[derive(Debug, Default)]
struct Outcome {
    label: String,
    round: u32,
    subscribed: u64,
    connect_failed: u64,
    sent_ok: u64,
    sent_errors: u64,
    first_error: Option<String>,
    accepted_per_s: f64,
    sender_max_lag_ms: f64,
    webhook: Quantiles,
    delivery: Quantiles,
    /// Webhook sent → its last subscriber's receipt, over complete updates.
    last_subscriber: Quantiles,
    expected: u64,
    received: u64,
    /// Updates (webhooks sent) every subscriber of the room received.
    complete: u64,
    sent: u64,
    rollcall_cpu: Duration,
    redis_cpu: Duration,
    elapsed: Duration,
    ingest: Option<Ingest>,
}

#[derive(Debug, Default)]
struct Ingest {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    per_s: f64,
    latency: Quantiles,
    rollcall_cpu: Duration,
    redis_cpu: Duration,
}

#[derive(Debug, Default, Clone, Copy)]
struct Quantiles {
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
}

impl From<&Histogram<u64>> for Quantiles {
    fn from(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Quantiles::default();
        }
        Quantiles {
            p50_us: h.value_at_quantile(0.5),
            p99_us: h.value_at_quantile(0.99),
            max_us: h.max(),
        }
    }
}

pub async fn b1_cluster(a: ClusterArgs) -> anyhow::Result<()> {
    header("B1 on several nodes: single Redis / Redis Cluster / Redis + replica");
    anyhow::ensure!(a.nodes >= 1, "--nodes must be at least 1");
    println!(
        "{} rollcall nodes; {} rooms x {} subscribers spread over the nodes; {} webhooks/s for {} s spread over the nodes; then {} s closed loop ({} senders)",
        a.nodes, a.rooms, a.subscribers, a.rate, a.secs, a.ingest_secs, a.ingest_workers
    );
    let mut outcomes = Vec::new();
    for round in 1..=a.rounds {
        for &backend in &a.backend {
            println!("-- {} (round {round})", backend.label());
            match run(&a, backend, round).await {
                Ok(o) => outcomes.push(o),
                Err(e) => println!("   FAILED: {e:#}"),
            }
        }
    }
    print_outcomes(&a, &outcomes);
    Ok(())
}

async fn run(a: &ClusterArgs, backend: Backend, round: u32) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let redis = Redis::start(a, backend).await?;
    let (redis_url, mut env) = redis.rollcall();
    env.extend(a.rollcall_env.iter().cloned());
    let server_args = ServerArgs {
        target: vec![Target::Rollcall],
        // The nodes get their Redis from `redis_url` / the environment,
        // never one of their own.
        store: Store::Memory,
        server_bin: a.server_bin.clone(),
        socketio_dir: PathBuf::new(),
        redis_bin: a.redis_bin.clone(),
        redis_conf: a.redis_conf.clone(),
        url: None,
        server_pid: None,
        rollcall_flag: Vec::new(),
        rollcall_env: env,
        client_limits: false,
    };
    let mut nodes = Vec::with_capacity(a.nodes);
    for _ in 0..a.nodes {
        nodes.push(Server::spawn(&server_args, Target::Rollcall, redis_url.as_deref()).await?);
    }
    let n = nodes.len() as u64;
    let plan = Plan {
        rooms: a.rooms,
        people_per_room: a.subscribers.max(1),
        nonce: nonce(),
    };
    let count = (a.rate * a.secs as f64) as u64;
    let tracker = Arc::new(crate::track::Tracker::new(count, vec![0]));

    // Subscriber g (0..rooms x subscribers) is on room g % rooms and node
    // g % nodes: every room has subscribers on every node (when the two
    // counts are coprime, as 100 and 3 are).
    let total = a.rooms * a.subscribers;
    let mut crowds = Vec::with_capacity(nodes.len());
    for (j, node) in nodes.iter().enumerate() {
        let j = j as u64;
        let share = total.saturating_sub(j).div_ceil(n);
        let crowd = client::crowd(
            &node.ws_url(),
            Proto::Pusher,
            share as usize,
            a.client.sources,
            a.client.connect_parallel,
            |i| plan.channel((i as u64 * n + j) % a.rooms),
            tracker.clone(),
        )
        .await;
        println!("   node {}: {}", j + 1, crowd.summary());
        crowds.push(crowd);
    }
    let subscribed: u64 = crowds.iter().map(|c| c.connected).sum();
    let connect_failed: u64 = crowds.iter().map(|c| c.failed).sum();

    let publishers: Vec<Publisher> = nodes
        .iter()
        .map(|s| Publisher::new(&s.base, Target::Rollcall, plan, a.client.pad))
        .collect();
    let rollcall_cpu = |nodes: &[Server]| nodes.iter().map(Server::cpu).sum::<Duration>();
    let (rc0, rd0) = (rollcall_cpu(&nodes), redis.cpu());
    let webhook_latency = Arc::new(Latencies::new());
    let sent = publish::at_rate_spread(
        &publishers,
        &tracker,
        0,
        count,
        a.rate,
        a.client.in_flight,
        Some(webhook_latency.clone()),
    )
    .await;
    let expected = sent.ok * a.subscribers;
    drain(&tracker, expected, Duration::from_secs(a.client.drain_secs)).await;
    let (rollcall_cpu_b1, redis_cpu_b1) = (
        rollcall_cpu(&nodes).saturating_sub(rc0),
        redis.cpu().saturating_sub(rd0),
    );
    let received = tracker.received.load(std::sync::atomic::Ordering::Relaxed);
    let mut last = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut complete = 0;
    for seq in 0..count {
        if u64::from(tracker.receipts(seq)) >= a.subscribers {
            complete += 1;
            if let Some(d) = tracker.completion(seq) {
                let _ = last.record((d.as_micros() as u64).clamp(1, 600_000_000));
            }
        }
    }
    for crowd in crowds {
        crowd.close().await;
    }

    let ingest = if a.ingest_secs > 0 {
        // The subscribers are gone; the seqs go on after the fixed-rate
        // phase's, so every event id is new.
        let max = a.ingest_secs * 5_000;
        let requests: Arc<Vec<Request>> = Arc::new(
            (count..count + max)
                .map(|s| publishers[0].request(s))
                .collect(),
        );
        let (rc0, rd0) = (rollcall_cpu(&nodes), redis.cpu());
        let lat = Arc::new(Latencies::new());
        let (ok, errors, first_error, elapsed) = publish::closed_loop_over(
            &publishers,
            requests,
            a.ingest_workers,
            Duration::from_secs(a.ingest_secs),
            lat.clone(),
        )
        .await;
        Some(Ingest {
            ok,
            errors,
            first_error,
            per_s: ok as f64 / elapsed.as_secs_f64(),
            latency: Quantiles::from(&lat.merged()),
            rollcall_cpu: rollcall_cpu(&nodes).saturating_sub(rc0),
            redis_cpu: redis.cpu().saturating_sub(rd0),
        })
    } else {
        None
    };

    // The nodes before their Redis.
    while let Some(node) = nodes.pop() {
        drop(node);
    }
    drop(redis);
    Ok(Outcome {
        label: backend.label().into(),
        round,
        subscribed,
        connect_failed,
        sent_ok: sent.ok,
        sent_errors: sent.errors,
        first_error: sent.first_error,
        accepted_per_s: sent.ok as f64 / sent.elapsed.as_secs_f64(),
        sender_max_lag_ms: sent.max_lag.as_secs_f64() * 1000.0,
        webhook: Quantiles::from(&webhook_latency.merged()),
        delivery: Quantiles::from(&tracker.phase(0).merged()),
        last_subscriber: Quantiles::from(&last),
        expected,
        received,
        complete,
        sent: count,
        rollcall_cpu: rollcall_cpu_b1,
        redis_cpu: redis_cpu_b1,
        elapsed: started.elapsed(),
        ingest,
    })
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

fn print_outcomes(a: &ClusterArgs, outcomes: &[Outcome]) {
    println!(
        "\nfixed rate: {} webhooks/s for {} s over {} nodes, {} rooms x {} subscribers",
        a.rate, a.secs, a.nodes, a.rooms, a.subscribers
    );
    println!(
        "{:<22} {:>5} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>19} {:>13} {:>11} {:>11}",
        "back end",
        "round",
        "webhk/s",
        "errors",
        "wh p50",
        "wh p99",
        "dlv p50",
        "dlv p99",
        "all p99",
        "dlv max",
        "received/expected",
        "complete",
        "rollcall s",
        "redis s"
    );
    for o in outcomes {
        println!(
            "{:<22} {:>5} {:>9.1} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>19} {:>13} {:>11.2} {:>11.2}",
            o.label,
            o.round,
            o.accepted_per_s,
            o.sent_errors,
            ms(o.webhook.p50_us),
            ms(o.webhook.p99_us),
            ms(o.delivery.p50_us),
            ms(o.delivery.p99_us),
            ms(o.last_subscriber.p99_us),
            ms(o.delivery.max_us),
            format!("{}/{}", o.received, o.expected),
            format!("{}/{}", o.complete, o.sent),
            o.rollcall_cpu.as_secs_f64(),
            o.redis_cpu.as_secs_f64(),
        );
        let per = |d: Duration| d.as_secs_f64() * 1e6 / o.sent_ok.max(1) as f64;
        println!(
            "    {} subscribed ({} failed); sender max lag {:.1} ms; CPU per webhook: rollcall {:.0} us, Redis {:.0} us; {:.0} s for this back end{}",
            o.subscribed,
            o.connect_failed,
            o.sender_max_lag_ms,
            per(o.rollcall_cpu),
            per(o.redis_cpu),
            o.elapsed.as_secs_f64(),
            o.first_error
                .as_deref()
                .map(|e| format!("; first error {e}"))
                .unwrap_or_default()
        );
    }
    println!(
        "(ms; wh = webhook request → response, dlv = webhook sent → frame read, all = sent → the room's last subscriber; complete = updates every subscriber got; CPU s over the fixed-rate phase, Redis = all its processes)"
    );
    if a.ingest_secs > 0 {
        println!(
            "\nclosed loop, no subscribers: {} senders for {} s over {} nodes",
            a.ingest_workers, a.ingest_secs, a.nodes
        );
        println!(
            "{:<22} {:>5} {:>9} {:>7} {:>9} {:>9} {:>9} {:>13} {:>13}",
            "back end",
            "round",
            "webhk/s",
            "errors",
            "p50 ms",
            "p99 ms",
            "max ms",
            "rollcall us/wh",
            "redis us/wh"
        );
        for o in outcomes {
            let Some(i) = &o.ingest else { continue };
            let per = |d: Duration| d.as_secs_f64() * 1e6 / i.ok.max(1) as f64;
            println!(
                "{:<22} {:>5} {:>9.0} {:>7} {:>9} {:>9} {:>9} {:>13.0} {:>13.0}{}",
                o.label,
                o.round,
                i.per_s,
                i.errors,
                ms(i.latency.p50_us),
                ms(i.latency.p99_us),
                ms(i.latency.max_us),
                per(i.rollcall_cpu),
                per(i.redis_cpu),
                i.first_error
                    .as_deref()
                    .map(|e| format!("  first error {e}"))
                    .unwrap_or_default()
            );
        }
    }
    // Each back end against the first of its own round (the same minutes).
    for base in outcomes.iter().filter(|o| o.label == outcomes[0].label) {
        for o in outcomes
            .iter()
            .filter(|o| o.round == base.round && o.label != base.label)
        {
            let r = |x: u64, y: u64| x as f64 / (y as f64).max(1.0);
            let mut line = format!(
                "    round {}, ratio {} / {}: webhook p50 {:.2}x, p99 {:.2}x; delivery p50 {:.2}x, p99 {:.2}x",
                o.round,
                o.label,
                base.label,
                r(o.webhook.p50_us, base.webhook.p50_us),
                r(o.webhook.p99_us, base.webhook.p99_us),
                r(o.delivery.p50_us, base.delivery.p50_us),
                r(o.delivery.p99_us, base.delivery.p99_us),
            );
            if let (Some(i), Some(b)) = (&o.ingest, &base.ingest) {
                line.push_str(&format!(
                    "; closed-loop webhooks/s {:.2}x",
                    i.per_s / b.per_s.max(1e-9)
                ));
            }
            println!("{line}");
        }
    }
    for o in outcomes {
        let q = |q: &Quantiles| serde_json::json!({"p50_us": q.p50_us, "p99_us": q.p99_us, "max_us": q.max_us});
        println!(
            "RESULT {}",
            serde_json::json!({
                "scenario": "B1 nodes", "backend": o.label, "round": o.round, "nodes": a.nodes,
                "rooms": a.rooms, "subscribers": a.subscribers, "rate": a.rate, "secs": a.secs,
                "subscribed": o.subscribed, "connect_failed": o.connect_failed,
                "webhooks_ok": o.sent_ok, "webhook_errors": o.sent_errors,
                "accepted_per_s": o.accepted_per_s, "webhook": q(&o.webhook),
                "delivery": q(&o.delivery), "last_subscriber": q(&o.last_subscriber),
                "expected": o.expected, "received": o.received,
                "complete_updates": o.complete, "updates_sent": o.sent,
                "rollcall_cpu_ms": o.rollcall_cpu.as_millis() as u64,
                "redis_cpu_ms": o.redis_cpu.as_millis() as u64,
                "ingest": o.ingest.as_ref().map(|i| serde_json::json!({
                    "ok": i.ok, "errors": i.errors, "per_s": i.per_s, "latency": q(&i.latency),
                    "rollcall_cpu_ms": i.rollcall_cpu.as_millis() as u64,
                    "redis_cpu_ms": i.redis_cpu.as_millis() as u64,
                })),
            })
        );
    }
}
