//! A real Redis Cluster per test: three masters and three replicas, six
//! `redis-server`s from Debian's package started from the repository's
//! `redis.conf` (through `redis_server::spawn`, as `RedisServer` starts
//! one), joined with `redis-cli --cluster create`.
//!
//! Each node runs in its own temporary directory with the cluster options
//! on the command line (`cluster_args`): a 1 s node timeout, so a killed
//! master's replica takes over within a few seconds, and
//! `cluster-require-full-coverage no`, so the other shards keep serving
//! meanwhile.
//!
//! Nodes are numbered 0–5 in start order; which of them are masters is
//! redis-cli's choice and changes with a failover, so the harness asks the
//! nodes (`masters`, `master_of_key`) rather than assuming.
//!
//! Every wait is bounded and fails with the tail of every node's log. As
//! with `RedisServer` there is no fallback: without `redis-server` and
//! `redis-cli` (`make deps`) the tests fail, they never skip.

use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::process::{Child, Command};

use crate::redis_server::{connection, read_log, redis_server_binary, spawn, url};

const NODES: usize = 6;
const SLOTS: usize = 16384;
/// `cluster-node-timeout`: a master silent this long is suspected (PFAIL),
/// then failed by a majority of masters, then its replica is elected.
const NODE_TIMEOUT_MS: u64 = 1000;
/// How long `redis-cli --cluster create` and the nodes' agreement may take.
const FORM_GUARD: Duration = Duration::from_secs(30);
/// How long a failover may take (about 2–3 s with a 1 s node timeout).
const FAILOVER_GUARD: Duration = Duration::from_secs(30);
/// One command to one node, connection included.
const QUERY_GUARD: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(50);
/// A node listens on its port and, for the cluster bus, on port + 10000.
const BUS_OFFSET: u16 = 10000;
/// Client ports are picked here, bus ports land in 20000..30000: both below
/// Linux's ephemeral range (32768–60999), so neither collides with a port
/// the kernel hands out for `bind(0)` or an outgoing connection, and no
/// node's client port is another node's bus port.
const PORTS: Range<u16> = 10000..20000;
/// Lines of each node's log in a failure message.
const LOG_TAIL: usize = 25;

pub struct RedisCluster {
    nodes: Vec<Node>,
    /// Each killed master → the nodes that were its replicas when it died
    /// (`wait_for_failover` waits for one of them to take over).
    orphans: HashMap<usize, Vec<usize>>,
}

struct Node {
    port: u16,
    /// The cluster node id (`CLUSTER MYID`), as `CLUSTER NODES` names it.
    id: String,
    /// `--dir`: the AOF, `nodes.conf` and `redis.log`.
    dir: TempDir,
    /// `None` once killed.
    child: Option<Child>,
}

impl RedisCluster {
    /// Starts six nodes, creates the cluster (three masters with one
    /// replica each) and waits until every node says `cluster_state:ok`,
    /// knows all six nodes healthy, and every master has its replica
    /// online (so a `WAIT 1` on any master can be answered).
    pub async fn start() -> RedisCluster {
        let binary = redis_server_binary();
        let cli = redis_cli_binary();
        let taken = Mutex::new(HashSet::new());
        let nodes =
            futures_util::future::join_all((0..NODES).map(|_| start_node(&binary, &taken))).await;
        let cluster = RedisCluster {
            nodes,
            orphans: HashMap::new(),
        };
        cluster.create(&cli).await;
        cluster.wait_until_formed().await;
        cluster
    }

    /// `redis://127.0.0.1:<port>` of every node, in node order: the seeds
    /// for a cluster client (any one of them is enough; all are given).
    pub fn seeds(&self) -> Vec<String> {
        (0..self.nodes.len()).map(|node| self.url(node)).collect()
    }

    /// The seeds comma-separated, as `ROLLCALL_REDIS_CLUSTER` takes them.
    pub fn seed_list(&self) -> String {
        self.seeds().join(",")
    }

    /// `redis://127.0.0.1:<port>` of one node (0–5).
    pub fn url(&self, node: usize) -> String {
        url(self.nodes[node].port)
    }

    /// The live masters serving slots, by each node's own account, in node
    /// order: three, or two after a master died until its replica took over.
    pub async fn masters(&self) -> Vec<usize> {
        let mut masters = Vec::new();
        for node in self.live() {
            let me = self.myself(node).await;
            if me.is_master() && !me.slots.is_empty() {
                masters.push(node);
            }
        }
        masters
    }

    /// The node that serves `key`'s slot now: the one live node that, by
    /// its own account, is a master holding the slot. Asked at call time,
    /// since a failover moves slots. Fails while nobody serves the slot
    /// (call `wait_for_failover` first).
    pub async fn master_of_key(&self, key: &str) -> usize {
        let any = self.live().next().expect("a live node");
        let slot: usize = self
            .query(any, redis::cmd("CLUSTER").arg("KEYSLOT").arg(key))
            .await
            .unwrap_or_else(|why| panic!("CLUSTER KEYSLOT {key}: {why}"));
        let mut owners = Vec::new();
        for node in self.live() {
            let me = self.myself(node).await;
            if me.is_master() && me.owns(slot) {
                owners.push(node);
            }
        }
        match owners[..] {
            [owner] => owner,
            _ => panic!(
                "slot {slot} of {key:?} is served by nodes {owners:?}, not exactly one:\n{}",
                self.logs()
            ),
        }
    }

    /// Kills a node with SIGKILL (a crash) and reaps it. For a master, its
    /// replicas at that moment are remembered for `wait_for_failover`.
    pub async fn kill(&mut self, node: usize) {
        if self.nodes[node].child.is_none() {
            return;
        }
        let me = self.myself(node).await;
        if me.is_master() {
            let mut replicas = Vec::new();
            for other in self.live().filter(|&other| other != node) {
                let them = self.myself(other).await;
                if them.master.as_deref() == Some(me.id.as_str()) {
                    replicas.push(other);
                }
            }
            self.orphans.insert(node, replicas);
        }
        let mut child = self.nodes[node].child.take().expect("checked above");
        child.kill().await.expect("SIGKILL redis-server");
    }

    /// Moves the (key-less) slot of `key` from its master to another live
    /// master, as a resharding does (`CLUSTER SETSLOT … IMPORTING` /
    /// `MIGRATING`, then `NODE` on both), and waits until every live node
    /// agrees. Returns the slot's new master. The slot must hold no keys
    /// (nothing is `MIGRATE`d).
    pub async fn move_slot_of(&self, key: &str) -> usize {
        let from = self.master_of_key(key).await;
        let to = *self
            .masters()
            .await
            .iter()
            .find(|&&m| m != from)
            .expect("another master");
        let slot: usize = self
            .query(from, redis::cmd("CLUSTER").arg("KEYSLOT").arg(key))
            .await
            .expect("CLUSTER KEYSLOT");
        let (from_id, to_id) = (self.nodes[from].id.clone(), self.nodes[to].id.clone());
        let setslot = |state: &str, id: &str| {
            let mut cmd = redis::cmd("CLUSTER");
            cmd.arg("SETSLOT").arg(slot).arg(state).arg(id);
            cmd
        };
        for (node, cmd) in [
            (to, setslot("IMPORTING", &from_id)),
            (from, setslot("MIGRATING", &to_id)),
            (to, setslot("NODE", &to_id)),
            (from, setslot("NODE", &to_id)),
        ] {
            self.query::<()>(node, &cmd)
                .await
                .unwrap_or_else(|why| panic!("moving slot {slot}: {why}"));
        }
        let deadline = Instant::now() + FAILOVER_GUARD;
        loop {
            let mut agreed = true;
            for node in self.live() {
                let owner = self
                    .view(node)
                    .await
                    .ok()
                    .and_then(|view| view.into_iter().find(|n| n.owns(slot)).map(|n| n.id));
                agreed &= owner.as_deref() == Some(to_id.as_str());
            }
            if agreed {
                return to;
            }
            assert!(
                Instant::now() < deadline,
                "slot {slot} never moved to node {to}:\n{}",
                self.logs()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Starts a killed node again on its port, from its own directory (its
    /// AOF and `nodes.conf`), as a supervisor restarts a crashed Redis. A
    /// former master learns of its failover and rejoins as a replica of
    /// the node that took over; this waits until that node counts it as an
    /// online replica (so a `WAIT 1` there can be answered again).
    pub async fn restart(&mut self, node: usize, new_master: usize) {
        assert!(self.nodes[node].child.is_none(), "node {node} is running");
        let binary = redis_server_binary();
        let (port, dir) = (
            self.nodes[node].port,
            self.nodes[node].dir.path().to_owned(),
        );
        let child = spawn(&binary, port, &dir, &cluster_args(&dir))
            .await
            .unwrap_or_else(|why| panic!("node {node} does not restart: {why}"));
        self.nodes[node].child = Some(child);
        let deadline = Instant::now() + FAILOVER_GUARD;
        loop {
            let info: Result<String, _> = self
                .query(new_master, redis::cmd("INFO").arg("replication"))
                .await;
            let online = info.is_ok_and(|info| {
                info.lines().any(|l| {
                    l.starts_with("slave")
                        && l.contains(&format!("port={port},"))
                        && l.contains("state=online")
                })
            });
            if online {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {node} did not rejoin as a replica of node {new_master}:\n{}",
                self.logs()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// After `kill(dead)` of a master: waits until one of its former
    /// replicas is a master, and every live node says `cluster_state:ok`
    /// and sees every slot served by a healthy live master. Returns the
    /// promoted node. Bounded by `FAILOVER_GUARD`.
    pub async fn wait_for_failover(&self, dead: usize) -> usize {
        let replicas = self
            .orphans
            .get(&dead)
            .unwrap_or_else(|| panic!("node {dead} is not a master killed with kill()"));
        assert!(
            !replicas.is_empty(),
            "node {dead} had no replica when it was killed:\n{}",
            self.logs()
        );
        let deadline = Instant::now() + FAILOVER_GUARD;
        loop {
            match self.failed_over(replicas).await {
                Ok(promoted) => return promoted,
                Err(why) if Instant::now() > deadline => panic!(
                    "no failover of node {dead} within {FAILOVER_GUARD:?}: {why}\n{}",
                    self.logs()
                ),
                Err(_) => tokio::time::sleep(POLL).await,
            }
        }
    }

    /// The last lines of every node's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for (node, n) in self.nodes.iter().enumerate() {
            let log = read_log(n.dir.path());
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL)..];
            let state = if n.child.is_some() { "up" } else { "killed" };
            out.push_str(&format!(
                "--- node {node} (127.0.0.1:{}, {state}) ---\n{}\n",
                n.port,
                tail.join("\n")
            ));
        }
        out
    }

    /// `redis-cli --cluster create <the six> --cluster-replicas 1 --cluster-yes`.
    async fn create(&self, cli: &Path) {
        let mut command = Command::new(cli);
        command.args(["--cluster", "create"]);
        for node in &self.nodes {
            command.arg(format!("127.0.0.1:{}", node.port));
        }
        command
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .kill_on_drop(true);
        // redis-cli waits for the nodes to agree without a deadline of its own.
        let output = match tokio::time::timeout(FORM_GUARD, command.output()).await {
            Ok(output) => output.expect("run redis-cli"),
            Err(_) => panic!(
                "redis-cli --cluster create did not finish within {FORM_GUARD:?}:\n{}",
                self.logs()
            ),
        };
        assert!(
            output.status.success(),
            "redis-cli --cluster create exited with {}:\n{}{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.logs()
        );
    }

    async fn wait_until_formed(&self) {
        let deadline = Instant::now() + FORM_GUARD;
        loop {
            match self.formed().await {
                Ok(()) => return,
                Err(why) if Instant::now() > deadline => panic!(
                    "the cluster did not form within {FORM_GUARD:?}: {why}\n{}",
                    self.logs()
                ),
                Err(_) => tokio::time::sleep(POLL).await,
            }
        }
    }

    /// Whether the cluster is whole: every node is `cluster_state:ok`,
    /// sees three masters with slots and three replicas, none failing, and
    /// every master has one replica online.
    async fn formed(&self) -> Result<(), String> {
        for node in self.live() {
            let info: String = self.query(node, redis::cmd("CLUSTER").arg("INFO")).await?;
            if !info.contains("cluster_state:ok") {
                return Err(format!("node {node} is not cluster_state:ok"));
            }
            let view = self.view(node).await?;
            let masters = view
                .iter()
                .filter(|n| n.is_master() && !n.slots.is_empty())
                .count();
            let replicas = view.iter().filter(|n| n.has("slave")).count();
            if masters != 3 || replicas != 3 || view.iter().any(NodeLine::failing) {
                return Err(format!(
                    "node {node} sees {masters} masters with slots and {replicas} replicas, \
                     or a failing node:\n{}",
                    view.iter()
                        .map(|n| n.line.as_str())
                        .collect::<Vec<_>>()
                        .join("\n")
                ));
            }
            let me = view
                .iter()
                .find(|n| n.has("myself"))
                .ok_or_else(|| format!("node {node} does not list itself"))?;
            if me.is_master() {
                let replication: String = self
                    .query(node, redis::cmd("INFO").arg("replication"))
                    .await?;
                let online = replication
                    .lines()
                    .any(|l| l.starts_with("slave0:") && l.contains("state=online"));
                if !replication.contains("connected_slaves:1") || !online {
                    return Err(format!(
                        "master {node} has no replica online:\n{replication}"
                    ));
                }
            }
        }
        Ok(())
    }

    /// `Ok(promoted)` once one of `replicas` is a master and every live
    /// node is `cluster_state:ok` with every slot on a healthy live master.
    async fn failed_over(&self, replicas: &[usize]) -> Result<usize, String> {
        let mut promoted = None;
        for &replica in replicas {
            if self.nodes[replica].child.is_none() {
                continue;
            }
            let me = self.myself_checked(replica).await?;
            if me.is_master() && !me.slots.is_empty() {
                promoted = Some(replica);
            }
        }
        let promoted =
            promoted.ok_or_else(|| format!("none of the replicas {replicas:?} is a master yet"))?;
        let live_ids: HashSet<&str> = self.live().map(|n| self.nodes[n].id.as_str()).collect();
        for node in self.live() {
            let info: String = self.query(node, redis::cmd("CLUSTER").arg("INFO")).await?;
            if !info.contains("cluster_state:ok") {
                return Err(format!("node {node} is not cluster_state:ok"));
            }
            let mut served = vec![false; SLOTS];
            for master in self.view(node).await? {
                if master.is_master() && !master.failing() && live_ids.contains(master.id.as_str())
                {
                    for &(first, last) in &master.slots {
                        served[first..=last].iter_mut().for_each(|s| *s = true);
                    }
                }
            }
            if let Some(slot) = served.iter().position(|s| !s) {
                return Err(format!(
                    "node {node} sees slot {slot} on no healthy live master"
                ));
            }
        }
        Ok(promoted)
    }

    fn live(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|&n| self.nodes[n].child.is_some())
    }

    async fn query<T: redis::FromRedisValue>(
        &self,
        node: usize,
        cmd: &redis::Cmd,
    ) -> Result<T, String> {
        let port = self.nodes[node].port;
        let work = async {
            let mut conn = connection(port).await?;
            cmd.query_async(&mut conn).await
        };
        match tokio::time::timeout(QUERY_GUARD, work).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(format!("node {node} (port {port}): {e}")),
            Err(_) => Err(format!(
                "node {node} (port {port}): no reply within {QUERY_GUARD:?}"
            )),
        }
    }

    /// `CLUSTER NODES` as `node` sees the cluster.
    async fn view(&self, node: usize) -> Result<Vec<NodeLine>, String> {
        let nodes: String = self.query(node, redis::cmd("CLUSTER").arg("NODES")).await?;
        nodes
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                NodeLine::parse(l).ok_or_else(|| format!("unreadable CLUSTER NODES line {l:?}"))
            })
            .collect()
    }

    /// `node`'s own line of its `CLUSTER NODES`: its role by its own account.
    async fn myself_checked(&self, node: usize) -> Result<NodeLine, String> {
        self.view(node)
            .await?
            .into_iter()
            .find(|n| n.has("myself"))
            .ok_or_else(|| format!("node {node} does not list itself"))
    }

    async fn myself(&self, node: usize) -> NodeLine {
        self.myself_checked(node)
            .await
            .unwrap_or_else(|why| panic!("{why}\n{}", self.logs()))
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(child) = node.child.as_mut() {
                // SIGKILL now; tokio reaps the process in the background.
                let _ = child.start_kill();
            }
        }
    }
}

/// One line of `CLUSTER NODES`:
/// `<id> <ip:port@cport[,hostname]> <flags> <master|-> <ping> <pong> <epoch> <link> <slots>…`
struct NodeLine {
    id: String,
    flags: Vec<String>,
    master: Option<String>,
    /// Inclusive ranges; slots being imported or migrated (`[…]`) are left out.
    slots: Vec<(usize, usize)>,
    line: String,
}

impl NodeLine {
    fn parse(line: &str) -> Option<NodeLine> {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 8 {
            return None;
        }
        let mut slots = Vec::new();
        for field in &fields[8..] {
            if field.starts_with('[') {
                continue;
            }
            let range = match field.split_once('-') {
                Some((first, last)) => (first.parse().ok()?, last.parse().ok()?),
                None => {
                    let slot = field.parse().ok()?;
                    (slot, slot)
                }
            };
            if range.0 > range.1 || range.1 >= SLOTS {
                return None;
            }
            slots.push(range);
        }
        Some(NodeLine {
            id: fields[0].to_owned(),
            flags: fields[2].split(',').map(str::to_owned).collect(),
            master: (fields[3] != "-").then(|| fields[3].to_owned()),
            slots,
            line: line.to_owned(),
        })
    }

    fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    fn is_master(&self) -> bool {
        self.has("master")
    }

    /// Failed, suspected (`fail?`), or not yet (or no longer) reachable.
    fn failing(&self) -> bool {
        ["fail", "fail?", "handshake", "noaddr"]
            .iter()
            .any(|f| self.has(f))
    }

    fn owns(&self, slot: usize) -> bool {
        self.slots
            .iter()
            .any(|&(first, last)| (first..=last).contains(&slot))
    }
}

/// The cluster options, after the repository's `redis.conf`.
fn cluster_args(dir: &Path) -> Vec<String> {
    let config_file = dir.join("nodes.conf");
    [
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        config_file.to_str().expect("a UTF-8 temporary directory"),
        "--cluster-node-timeout",
        &NODE_TIMEOUT_MS.to_string(),
        "--cluster-require-full-coverage",
        "no",
        "--repl-diskless-sync-delay",
        "0",
        "--appendonly",
        "yes",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// One node on a free port pair, in a fresh directory; a few tries, since a
/// port free a moment ago can be taken before Redis binds it.
async fn start_node(binary: &Path, taken: &Mutex<HashSet<u16>>) -> Node {
    let mut failures = Vec::new();
    for _ in 0..5 {
        let port = free_port_pair(taken);
        let dir = tempfile::Builder::new()
            .prefix("rollcall-redis-cluster-")
            .tempdir()
            .expect("a temporary directory for Redis");
        match spawn(binary, port, dir.path(), &cluster_args(dir.path())).await {
            Ok(child) => {
                let mut conn = connection(port).await.expect("connect to a started node");
                let id: String = redis::cmd("CLUSTER")
                    .arg("MYID")
                    .query_async(&mut conn)
                    .await
                    .expect("CLUSTER MYID");
                return Node {
                    port,
                    id,
                    dir,
                    child: Some(child),
                };
            }
            Err(why) => failures.push(format!("port {port}: {why}")),
        }
    }
    panic!("a cluster node did not start:\n{}", failures.join("\n"));
}

/// A port in `PORTS` that, with its bus port, was free a moment ago and
/// that no other node of this cluster has tried.
fn free_port_pair(taken: &Mutex<HashSet<u16>>) -> u16 {
    let mut taken = taken.lock().expect("port set");
    for _ in 0..1000 {
        let port = rand::random_range(PORTS);
        if taken.contains(&port) {
            continue;
        }
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + BUS_OFFSET) {
            taken.insert(port);
            return port;
        }
    }
    panic!("no free port pair in {PORTS:?} (and + {BUS_OFFSET})");
}

/// `redis-cli` from PATH, or a failure that says how to get it.
fn redis_cli_binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("redis-cli"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "redis-cli not installed: run `make deps` (apt-get install redis-tools); \
                 the Redis Cluster tests create their cluster with it and never skip"
            )
        })
}

/// The harness itself: keys land where `master_of_key` says, a key
/// confirmed on a replica (`WAIT 1`) survives its master's SIGKILL through
/// the failover, and sharded pub/sub goes round through the cluster client.
mod cluster_harness {
    use std::time::{Duration, Instant};

    use redis::cluster::{ClusterClient, ClusterClientBuilder};
    use redis::{ProtocolVersion, PushKind, Value};

    use super::RedisCluster;
    use crate::redis_server::connection;

    const CLIENT_GUARD: Duration = Duration::from_secs(20);

    async fn direct(cluster: &RedisCluster, node: usize) -> redis::aio::MultiplexedConnection {
        connection(cluster.nodes[node].port)
            .await
            .expect("connect to a node")
    }

    #[tokio::test]
    async fn keys_land_on_their_master_and_a_replicated_key_survives_a_failover() {
        let began = Instant::now();
        let mut cluster = RedisCluster::start().await;
        eprintln!("cluster started in {:?}", began.elapsed());
        let masters = cluster.masters().await;
        assert_eq!(masters.len(), 3, "{}", cluster.logs());
        assert_eq!(cluster.seed_list().split(',').count(), 6);

        let client = ClusterClient::new(cluster.seeds()).expect("cluster client");
        let mut conn = client
            .get_async_connection()
            .await
            .expect("cluster connection");

        // Through the cluster client; each key is on the master named, and
        // another master redirects.
        let keys: Vec<String> = (0..12).map(|i| format!("harness:{{room-{i}}}:k")).collect();
        let mut hit = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let _: () = redis::cmd("SET")
                .arg(key)
                .arg(i)
                .query_async(&mut conn)
                .await
                .expect("SET through the cluster client");
            let owner = cluster.master_of_key(key).await;
            hit.push(owner);
            let on_owner: Option<usize> = redis::cmd("GET")
                .arg(key)
                .query_async(&mut direct(&cluster, owner).await)
                .await
                .expect("GET on the owning master");
            assert_eq!(on_owner, Some(i), "{key} on node {owner}");
            let other = *masters
                .iter()
                .find(|&&m| m != owner)
                .expect("another master");
            let elsewhere: redis::RedisResult<Option<usize>> = redis::cmd("GET")
                .arg(key)
                .query_async(&mut direct(&cluster, other).await)
                .await;
            let moved = elsewhere.expect_err("a master redirects a key it does not own");
            assert_eq!(
                moved.redirect_node().map(|(addr, _slot)| addr.to_owned()),
                Some(format!("127.0.0.1:{}", cluster.nodes[owner].port)),
                "{moved}"
            );
        }
        hit.sort_unstable();
        hit.dedup();
        assert_eq!(hit, masters, "the keys spread over every master");

        // Written on its master and confirmed by the replica, then the
        // master crashes.
        let key = "harness:{survivor}:state";
        let dead = cluster.master_of_key(key).await;
        let mut on_master = direct(&cluster, dead).await;
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg("kept")
            .query_async(&mut on_master)
            .await
            .unwrap();
        let acked: i64 = redis::cmd("WAIT")
            .arg(1)
            .arg(5000)
            .query_async(&mut on_master)
            .await
            .unwrap();
        assert_eq!(acked, 1, "the replica confirms the write");

        cluster.kill(dead).await;
        let killed = Instant::now();
        let promoted = cluster.wait_for_failover(dead).await;
        eprintln!("failover done {:?} after SIGKILL", killed.elapsed());
        assert_ne!(promoted, dead);
        assert_eq!(cluster.master_of_key(key).await, promoted);
        assert_eq!(cluster.masters().await.len(), 3);

        // The same cluster connection finds the new master.
        let read: Option<String> = tokio::time::timeout(
            CLIENT_GUARD,
            redis::cmd("GET").arg(key).query_async(&mut conn),
        )
        .await
        .expect("the cluster client answers after the failover")
        .expect("GET through the cluster client after the failover");
        assert_eq!(read.as_deref(), Some("kept"), "{}", cluster.logs());
        eprintln!("read back {:?} after SIGKILL", killed.elapsed());

        // And writes to the promoted shard work.
        let _: () = tokio::time::timeout(
            CLIENT_GUARD,
            redis::cmd("SET")
                .arg(key)
                .arg("after")
                .query_async(&mut conn),
        )
        .await
        .expect("the cluster client answers")
        .expect("SET after the failover");
    }

    #[tokio::test]
    async fn sharded_pubsub_goes_round_through_the_cluster_client() {
        let cluster = RedisCluster::start().await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let subscriber = ClusterClientBuilder::new(cluster.seeds())
            .use_protocol(ProtocolVersion::RESP3)
            .push_sender(tx)
            .build()
            .expect("RESP3 cluster client");
        let mut sub = subscriber
            .get_async_connection()
            .await
            .expect("subscriber connection");
        let channel = "rollcall:{harness-room}:bus";
        sub.ssubscribe(channel).await.expect("SSUBSCRIBE");

        let publisher = ClusterClient::new(cluster.seeds()).expect("cluster client");
        let mut publish = publisher
            .get_async_connection()
            .await
            .expect("publisher connection");
        let receivers: i64 = redis::cmd("SPUBLISH")
            .arg(channel)
            .arg("hello")
            .query_async(&mut publish)
            .await
            .expect("SPUBLISH");
        assert_eq!(receivers, 1, "the subscriber is on the channel's master");

        let message = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let push = rx.recv().await.expect("push channel open");
                if push.kind == PushKind::SMessage {
                    return push.data;
                }
            }
        })
        .await
        .expect("the sharded message arrives");
        assert_eq!(
            message,
            vec![
                Value::BulkString(channel.as_bytes().to_vec()),
                Value::BulkString(b"hello".to_vec()),
            ]
        );
    }
}
