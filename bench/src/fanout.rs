//! B7 per-node fan-out (issue 13): what each node's Redis bus receives when
//! several rollcall nodes share one Redis and each room's channel has all
//! its subscribers on one node — before and after subscribe-on-demand.
//!
//! `--nodes` real `rollcall serve` processes on one redis-server (started
//! here, from the repository's `redis.conf`). Each node holds the
//! subscribers of its own `--rooms-per-node` rooms: per room, one socket per
//! attendee and `--dashboards` more (a teacher dashboard), all on the room's
//! `session.{id}` channel. Then every room gets `--updates-per-room` signed
//! webhooks (each attendee joins, then leaves), spread over the nodes by a
//! hash of the sequence number as a load balancer would (the node that
//! commits an update is usually not the one serving its channel).
//!
//! Per node, over the update phase:
//!
//! - **after** (measured on the running server): broadcasts its bus
//!   received, from its `/metrics` (`rollcall_bus_broadcasts_received_total`);
//!   bytes, the kernel's count of what the node's bus connection received
//!   from Redis (`bytes_received` of `ss -ti`; the bus connection is the
//!   node's pub/sub client in Redis's `CLIENT LIST`, matched by address
//!   and pid).
//! - **before** (every node heard every broadcast: one bus channel all nodes
//!   subscribed to). A real server cannot run that way any more (its bus
//!   always follows its hub), so it is what a plain connection
//!   PSUBSCRIBEd to `rollcall:c:*` receives — every broadcast, exactly what
//!   each node received before. Bytes: the frames the old single channel
//!   (`rollcall:broadcast`) carried them in, computed from each payload
//!   received (the pattern connection's own `pmessage` frames are ~27 B
//!   larger each; also printed).
//!
//! Deliveries to the WebSocket subscribers are checked (every subscriber
//! has every update of its room) and timed as in B1.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::client::{self, Crowd, Proto};
use crate::publish::{self, Plan, Publisher};
use crate::scenarios::{ClientArgs, header, nonce};
use crate::servers::{Server, ServerArgs, Store, Target};
use crate::stats::{Row, print_table};
use crate::sys;
use crate::track::Tracker;

#[derive(Debug, Clone, Args)]
pub struct B7Args {
    /// rollcall nodes (processes) sharing the one Redis.
    #[arg(long, default_value_t = 6)]
    pub nodes: usize,
    /// Rooms whose channel's subscribers are all on each node.
    #[arg(long, default_value_t = 2)]
    pub rooms_per_node: u64,
    /// Attendees per room: each holds one socket on the room's channel and
    /// joins (then leaves) the room.
    #[arg(long, default_value_t = 20)]
    pub attendees: u64,
    /// More subscribers per room's channel that never join (the teacher's
    /// dashboard).
    #[arg(long, default_value_t = 1)]
    pub dashboards: u64,
    /// Webhooks per room: the first `--attendees` are joins, the next as
    /// many leaves (40 with 20 attendees: everyone joins, then leaves).
    #[arg(long, default_value_t = 40)]
    pub updates_per_room: u64,
    /// Webhooks per second, all rooms.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// The pattern every per-channel bus channel matches.
const BUS_PATTERN: &str = "rollcall:c:*";

/// The single bus channel every node subscribed to before
/// subscribe-on-demand.
const OLD_BUS_CHANNEL: &str = "rollcall:broadcast";

/// What the pattern connection has heard.
#[derive(Default)]
struct Tap {
    confirmed: AtomicBool,
    /// Bytes read from Redis.
    bytes: AtomicU64,
    /// `pmessage`s: broadcasts.
    messages: AtomicU64,
    /// What those broadcasts' frames would have been on the old channel.
    old_frame_bytes: AtomicU64,
    closed: AtomicBool,
}

/// A whole RESP array read from a buffer: the bytes it took, and its
/// elements.
type Parsed<'a> = (usize, Vec<&'a [u8]>);

/// One RESP array at the start of `buf` (elements bulk strings or
/// integers): its elements and the bytes it took, `None` while incomplete.
fn resp_array(buf: &[u8]) -> anyhow::Result<Option<Parsed<'_>>> {
    fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
        let end = buf.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
        Some((&buf[at..at + end], at + end + 2))
    }
    fn number(s: &[u8]) -> anyhow::Result<usize> {
        std::str::from_utf8(s)?
            .parse()
            .with_context(|| format!("not a length: {}", String::from_utf8_lossy(s)))
    }
    let Some((head, mut at)) = line(buf, 0) else {
        return Ok(None);
    };
    let Some(n) = head.strip_prefix(b"*") else {
        bail!("expected an array, got {}", String::from_utf8_lossy(head));
    };
    let n = number(n)?;
    let mut items = Vec::with_capacity(n);
    for _ in 0..n {
        let Some((head, next)) = line(buf, at) else {
            return Ok(None);
        };
        match head.first() {
            Some(b'$') => {
                let len = number(&head[1..])?;
                if buf.len() < next + len + 2 {
                    return Ok(None);
                }
                items.push(&buf[next..next + len]);
                at = next + len + 2;
            }
            Some(b':') => {
                items.push(&head[1..]);
                at = next;
            }
            _ => bail!("unexpected element {}", String::from_utf8_lossy(head)),
        }
    }
    Ok(Some((at, items)))
}

/// Bytes of a RESP array of bulk strings.
fn resp_len(items: &[&[u8]]) -> usize {
    let bulk = |n: usize| 1 + n.to_string().len() + 2 + n + 2;
    1 + items.len().to_string().len() + 2 + items.iter().map(|i| bulk(i.len())).sum::<usize>()
}

fn resp_command(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len());
    for a in args {
        out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    out.into_bytes()
}

impl Tap {
    /// A plain connection to Redis PSUBSCRIBEd to every bus channel;
    /// returns once Redis confirmed it.
    async fn start(port: u16) -> anyhow::Result<Arc<Tap>> {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream
            .write_all(&resp_command(&["PSUBSCRIBE", BUS_PATTERN]))
            .await?;
        let tap = Arc::new(Tap::default());
        let t = tap.clone();
        tokio::spawn(async move {
            if let Err(e) = t.read(stream).await {
                eprintln!("pattern subscriber: {e:#}");
            }
            t.closed.store(true, Ordering::Relaxed);
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while !tap.confirmed.load(Ordering::Relaxed) {
            if Instant::now() > deadline || tap.closed.load(Ordering::Relaxed) {
                bail!("Redis did not confirm PSUBSCRIBE {BUS_PATTERN}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(tap)
    }

    async fn read(&self, mut stream: TcpStream) -> anyhow::Result<()> {
        let mut buf = Vec::with_capacity(64 * 1024);
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            self.bytes.fetch_add(n as u64, Ordering::Relaxed);
            buf.extend_from_slice(&chunk[..n]);
            let mut used = 0;
            while let Some((took, items)) = resp_array(&buf[used..])? {
                match items.first().copied() {
                    Some(b"pmessage") if items.len() == 4 => {
                        let old = resp_len(&[b"message", OLD_BUS_CHANNEL.as_bytes(), items[3]]);
                        self.old_frame_bytes
                            .fetch_add(old as u64, Ordering::Relaxed);
                        self.messages.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(b"psubscribe") => self.confirmed.store(true, Ordering::Relaxed),
                    _ => bail!("unexpected push {items:?}"),
                }
                used += took;
            }
            buf.drain(..used);
        }
    }

    fn snapshot(&self) -> (u64, u64, u64) {
        (
            self.messages.load(Ordering::Relaxed),
            self.old_frame_bytes.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

/// Bytes each node's bus connection has received from Redis so far, by
/// node pid: Redis's pub/sub clients (`CLIENT LIST`, flag `P`), matched by
/// address to the kernel's TCP counters and owning process (`ss -tinp`).
fn bus_bytes(redis_port: u16) -> anyhow::Result<HashMap<u32, u64>> {
    let list = std::process::Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &redis_port.to_string()])
        .args(["CLIENT", "LIST"])
        .output()
        .context("redis-cli")?;
    let list = String::from_utf8_lossy(&list.stdout);
    let pubsub: Vec<&str> = list
        .lines()
        .filter(|l| {
            l.split(' ')
                .any(|f| f.strip_prefix("flags=").is_some_and(|v| v.contains('P')))
        })
        .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("addr=")))
        .collect();
    let ss = std::process::Command::new("ss")
        .args(["-tinpH", "state", "established"])
        .arg(format!("( dport = :{redis_port} )"))
        .output()
        .context("ss (iproute2)")?;
    let ss = String::from_utf8_lossy(&ss.stdout);
    let mut out = HashMap::new();
    let mut current: Option<u32> = None;
    for line in ss.lines() {
        if !line.starts_with(char::is_whitespace) {
            // `Recv-Q Send-Q Local Peer users:(("rollcall",pid=…,fd=…))`
            let fields: Vec<&str> = line.split_whitespace().collect();
            current = fields
                .get(2)
                .filter(|local| pubsub.contains(local))
                .and_then(|_| line.split("pid=").nth(1))
                .and_then(|p| p.split([',', ')']).next())
                .and_then(|p| p.parse().ok());
        } else if let Some(pid) = current.take() {
            let received = line
                .split_whitespace()
                .find_map(|f| f.strip_prefix("bytes_received:"))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            *out.entry(pid).or_default() += received;
        }
    }
    Ok(out)
}

/// Numeric fields of Redis's `INFO` (memory, persistence, stats).
fn redis_info(redis_port: u16) -> HashMap<String, u64> {
    let out = std::process::Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &redis_port.to_string()])
        .args(["INFO", "all"])
        .output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.trim().split_once(':')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// An unlabelled counter or gauge from a node's `/metrics`.
async fn metric(http: &reqwest::Client, base: &str, name: &str) -> anyhow::Result<u64> {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .with_context(|| format!("{name} not in {base}/metrics"))
}

/// Per node at one instant.
#[derive(Clone, Copy, Default)]
struct NodeCounters {
    broadcasts: u64,
    bytes: Option<u64>,
    cpu: Duration,
}

async fn node_counters(
    http: &reqwest::Client,
    nodes: &[Server],
    redis_port: u16,
) -> anyhow::Result<Vec<NodeCounters>> {
    let bytes = match bus_bytes(redis_port) {
        Ok(b) => Some(b),
        Err(e) => {
            println!("  (no byte counts: {e:#})");
            None
        }
    };
    let mut out = Vec::with_capacity(nodes.len());
    for node in nodes {
        out.push(NodeCounters {
            broadcasts: metric(http, &node.base, "rollcall_bus_broadcasts_received_total").await?,
            bytes: bytes
                .as_ref()
                .and_then(|b| node.pid.and_then(|pid| b.get(&pid).copied())),
            cpu: node.cpu(),
        });
    }
    Ok(out)
}

fn kb(bytes: u64) -> f64 {
    bytes as f64 / 1e3
}

pub async fn b7(a: B7Args) -> anyhow::Result<()> {
    header("B7 fan-out per node");
    anyhow::ensure!(a.nodes >= 1 && a.rooms_per_node >= 1, "nodes and rooms");
    let t = Target::Rollcall;
    let mut args = a.server.clone();
    args.store = Store::Redis;
    let first = Server::spawn(&args, t, None).await?;
    let redis_url = first.own_redis_url().context("the first node's Redis")?;
    let redis_port: u16 = redis_url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .context("Redis port")?;
    let redis_pid = first.redis_pid();
    let mut nodes = vec![first];
    for _ in 1..a.nodes {
        nodes.push(Server::spawn(&args, t, Some(&redis_url)).await?);
    }
    let n = a.nodes as u64;
    let rooms = n * a.rooms_per_node;
    let per_room = a.attendees + a.dashboards;
    let plan = Plan {
        rooms,
        people_per_room: a.attendees.max(1),
        nonce: nonce(),
    };
    // Room r's subscribers are all on node r % nodes.
    let room_of = |node: u64, i: usize| node + n * (i as u64 % a.rooms_per_node);
    let tap = Tap::start(redis_port).await?;
    let count = rooms * a.updates_per_room;
    let tracker = Arc::new(Tracker::new(count, vec![0]));
    let mut crowds: Vec<Crowd> = Vec::new();
    for (j, node) in nodes.iter().enumerate() {
        let crowd = client::crowd(
            &node.ws_url(),
            Proto::Pusher,
            (a.rooms_per_node * per_room) as usize,
            a.client.sources,
            a.client.connect_parallel,
            |i| plan.channel(room_of(j as u64, i)),
            tracker.clone(),
        )
        .await;
        println!("node {}: {}", j + 1, crowd.summary());
        crowds.push(crowd);
    }
    // Every node's bus on exactly its own rooms' channels.
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    for (j, node) in nodes.iter().enumerate() {
        loop {
            let subs = metric(&http, &node.base, "rollcall_bus_subscriptions").await?;
            if subs == a.rooms_per_node {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "node {}'s bus is on {subs} channels, expected {}",
                    j + 1,
                    a.rooms_per_node
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    let before = node_counters(&http, &nodes, redis_port).await?;
    let tap0 = tap.snapshot();
    let redis_cpu = || redis_pid.and_then(sys::cpu_time).unwrap_or_default();
    let rcpu0 = redis_cpu();
    let info0 = redis_info(redis_port);
    let rss_base: Vec<u64> = nodes.iter().map(Server::rss_kib).collect();
    let publishers: Vec<Publisher> = nodes
        .iter()
        .map(|s| Publisher::new(&s.base, t, plan, 0))
        .collect();
    let sent = publish::at_rate_spread(
        &publishers,
        &tracker,
        0,
        count,
        a.rate,
        a.client.in_flight,
        None,
    )
    .await;
    let expected = sent.ok * per_room;
    let deadline = Instant::now() + Duration::from_secs(a.client.drain_secs);
    while tracker.received.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Every update reached its subscribers, so its node's bus had it; the
    // pattern connection hears them all (one per accepted webhook at least).
    while tap.messages.load(Ordering::Relaxed) - tap0.0 < sent.ok && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = node_counters(&http, &nodes, redis_port).await?;
    let tap1 = tap.snapshot();
    let rcpu = redis_cpu().saturating_sub(rcpu0);
    let info1 = redis_info(redis_port);
    let grew = |k: &str| {
        info1
            .get(k)
            .zip(info0.get(k))
            .map(|(a, b)| a.saturating_sub(*b))
    };
    let received = tracker.received.load(Ordering::Relaxed);
    let (all_msgs, all_bytes, tap_bytes) = (tap1.0 - tap0.0, tap1.1 - tap0.1, tap1.2 - tap0.2);

    println!(
        "\n{} nodes, {} rooms ({} per node, each channel's {} subscribers on one node), {} webhooks at {}/s spread over the nodes: \
         {} ok in {:.1} s (sender max lag {:.1} ms), deliveries {received} / {expected}",
        a.nodes,
        rooms,
        a.rooms_per_node,
        per_room,
        count,
        a.rate,
        sent.ok,
        sent.elapsed.as_secs_f64(),
        sent.max_lag.as_secs_f64() * 1000.0,
    );
    println!(
        "{:<8} {:>18} {:>14} {:>18} {:>14} {:>16} {:>12} {:>8} {:>8}",
        "node",
        "before: broadcasts",
        "before: kB",
        "after: broadcasts",
        "after: kB",
        "ratio (bcasts)",
        "ratio (kB)",
        "cpu s",
        "rss MiB"
    );
    let mut results = Vec::new();
    let (mut sum_b, mut sum_bytes) = (0u64, 0u64);
    let mut bytes_known = true;
    for (j, node) in nodes.iter().enumerate() {
        let heard = after[j].broadcasts - before[j].broadcasts;
        let bytes = match (before[j].bytes, after[j].bytes) {
            (Some(b0), Some(b1)) => Some(b1.saturating_sub(b0)),
            _ => None,
        };
        sum_b += heard;
        match bytes {
            Some(b) => sum_bytes += b,
            None => bytes_known = false,
        }
        let ratio = |before: u64, after: u64| {
            if after == 0 {
                "-".to_string()
            } else {
                format!("{:.2}x", before as f64 / after as f64)
            }
        };
        let cpu = after[j].cpu.saturating_sub(before[j].cpu);
        println!(
            "{:<8} {:>18} {:>14.1} {:>18} {:>14} {:>16} {:>12} {:>8.2} {:>8.1}",
            j + 1,
            all_msgs,
            kb(all_bytes),
            heard,
            bytes.map_or("n/a".into(), |b| format!("{:.1}", kb(b))),
            ratio(all_msgs, heard),
            bytes.map_or("n/a".into(), |b| ratio(all_bytes, b)),
            cpu.as_secs_f64(),
            node.rss_kib() as f64 / 1024.0,
        );
        results.push(serde_json::json!({
            "scenario": "B7 node bus", "node": j + 1,
            "before_broadcasts": all_msgs, "before_bytes": all_bytes,
            "after_broadcasts": heard, "after_bytes": bytes,
            "ratio_broadcasts": all_msgs as f64 / heard.max(1) as f64,
            "ratio_bytes": bytes.map(|b| all_bytes as f64 / b.max(1) as f64),
            "server_cpu_ms": cpu.as_millis() as u64,
            "rss_base_kib": rss_base[j], "rss_kib": node.rss_kib(),
        }));
    }
    let cpu_all: Duration = (0..nodes.len())
        .map(|j| after[j].cpu.saturating_sub(before[j].cpu))
        .sum();
    println!(
        "{:<8} {:>18} {:>14.1} {:>18} {:>14} {:>16} {:>12} {:>8.2} {:>8.1}",
        "all",
        all_msgs * n,
        kb(all_bytes * n),
        sum_b,
        if bytes_known {
            format!("{:.1}", kb(sum_bytes))
        } else {
            "n/a".into()
        },
        format!("{:.2}x", (all_msgs * n) as f64 / sum_b.max(1) as f64),
        if bytes_known {
            format!("{:.2}x", (all_bytes * n) as f64 / sum_bytes.max(1) as f64)
        } else {
            "n/a".into()
        },
        cpu_all.as_secs_f64(),
        nodes.iter().map(Server::rss_kib).sum::<u64>() as f64 / 1024.0,
    );
    println!(
        "  before = what a connection PSUBSCRIBEd to {BUS_PATTERN} received (every broadcast, as every node did before); \
         its kB are those broadcasts' frames on the old single channel {OLD_BUS_CHANNEL}, computed from the payloads \
         (the pattern connection itself read {:.1} kB of pmessage frames). after = each node's \
         rollcall_bus_broadcasts_received_total and its bus connection's bytes_received (kernel, ss -ti). \
         Redis pub/sub egress to the nodes: {:.1} kB before, {} after. redis-server CPU {:.2} s; \
         Redis used_memory +{} kB, AOF +{} kB: per room ({} people, {} webhooks) {} kB in memory, {} kB of AOF.",
        kb(tap_bytes),
        kb(all_bytes * n),
        if bytes_known {
            format!("{:.1} kB", kb(sum_bytes))
        } else {
            "n/a".into()
        },
        rcpu.as_secs_f64(),
        grew("used_memory").map_or("n/a".into(), |b| format!("{:.0}", kb(b))),
        grew("aof_current_size").map_or("n/a".into(), |b| format!("{:.0}", kb(b))),
        a.attendees,
        a.updates_per_room,
        grew("used_memory").map_or("n/a".into(), |b| format!("{:.1}", kb(b) / rooms as f64)),
        grew("aof_current_size").map_or("n/a".into(), |b| format!("{:.1}", kb(b) / rooms as f64)),
    );
    let rows = vec![
        Row {
            scenario: "B7 deliveries".into(),
            target: format!("rollcall-redis x{}", a.nodes),
            per_sec: received as f64 / sent.elapsed.as_secs_f64(),
            expected,
            received,
            send_errors: sent.errors + crowds.iter().map(|c| c.failed).sum::<u64>(),
            rss_base_kib: rss_base.iter().sum(),
            rss_peak_kib: nodes.iter().map(Server::rss_kib).sum(),
            server_cpu_ms: cpu_all.as_millis() as u64,
            note: format!(
                "{} webhooks ok, each to one of {} nodes by hash; per node bus: before {all_msgs} broadcasts / {all_bytes} B each, \
                 after {sum_b} in all ({:.1} per node); ratio {:.2}x{}",
                sent.ok,
                a.nodes,
                sum_b as f64 / n as f64,
                (all_msgs * n) as f64 / sum_b.max(1) as f64,
                sent.first_error
                    .as_deref()
                    .map(|e| format!("; first error {e}"))
                    .unwrap_or_default()
            ),
            ..Row::default()
        }
        .with_latencies(&tracker.phase(0).merged()),
    ];
    print_table(&rows);
    for r in results {
        println!("RESULT {r}");
    }
    for crowd in crowds {
        crowd.close().await;
    }
    // The first node owns the Redis: stop the others before it.
    while let Some(node) = nodes.pop() {
        drop(node);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_pmessage_and_prices_the_old_frame() {
        let frame = b"*4\r\n$8\r\npmessage\r\n$12\r\nrollcall:c:*\r\n$22\r\nrollcall:c:{session.1}\r\n$5\r\nhello\r\n";
        let (took, items) = resp_array(frame).unwrap().unwrap();
        assert_eq!(took, frame.len());
        assert_eq!(items[0], b"pmessage");
        assert_eq!(items[3], b"hello");
        assert!(resp_array(&frame[..frame.len() - 1]).unwrap().is_none());
        let old = b"*3\r\n$7\r\nmessage\r\n$18\r\nrollcall:broadcast\r\n$5\r\nhello\r\n";
        assert_eq!(
            resp_len(&[b"message", OLD_BUS_CHANNEL.as_bytes(), b"hello"]),
            old.len()
        );
        let confirm = b"*3\r\n$10\r\npsubscribe\r\n$12\r\nrollcall:c:*\r\n:1\r\n";
        let (took, items) = resp_array(confirm).unwrap().unwrap();
        assert_eq!((took, items[2]), (confirm.len(), &b"1"[..]));
    }
}
