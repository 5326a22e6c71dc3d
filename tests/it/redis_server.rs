//! A real `redis-server` per test, started from the repository's
//! `redis.conf` on a free loopback port with its data in a temporary
//! directory, so a test sees exactly the configuration production runs.
//!
//! There is no fallback: without `redis-server` the test fails and says how
//! to install it (`make deps`); it never skips.
//!
//! Stopping: `stop()` is a graceful shutdown (the `SHUTDOWN` command, what
//! SIGTERM from systemd also triggers): Redis fsyncs the AOF before it
//! exits. `kill()` is SIGKILL, a crash of the Redis process. With
//! `appendfsync always` (redis.conf) Redis has written and fsynced a
//! command's AOF record before it replies, so every acknowledged write
//! survives either, and a host crash too.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::process::{Child, Command};

/// How long Redis may take to start answering or to exit.
pub const STARTUP_GUARD: Duration = Duration::from_secs(10);
const LOG_FILE: &str = "redis.log";

pub struct RedisServer {
    port: u16,
    /// The `--dir` of every incarnation: the AOF lives here across
    /// `stop()`/`restart()`, and is deleted with the server.
    dir: TempDir,
    /// `None` while stopped.
    child: Option<Child>,
    /// Arguments after the configuration file (e.g. `--replicaof`), kept
    /// for restarts.
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts a fresh Redis on a free port and waits until it answers PING.
    pub async fn start() -> RedisServer {
        Self::start_with(Vec::new()).await
    }

    /// A master for replicas that starts a replica's full sync at once
    /// (Redis waits 5 s by default, to serve several replicas with one
    /// transfer).
    #[allow(dead_code)]
    pub async fn start_master() -> RedisServer {
        Self::start_with(vec!["--repl-diskless-sync-delay".into(), "0".into()]).await
    }

    /// A replica of `master`, once the master counts it as an online
    /// replica (so a `WAIT` on the master can be answered by it).
    #[allow(dead_code)]
    pub async fn start_replica_of(master: &RedisServer) -> RedisServer {
        let replica = Self::start_with(vec![
            "--replicaof".into(),
            "127.0.0.1".into(),
            master.port.to_string(),
        ])
        .await;
        master.wait_for_replicas(1).await;
        replica
    }

    /// Waits until `n` replicas are online on this server.
    #[allow(dead_code)]
    pub async fn wait_for_replicas(&self, n: usize) {
        let deadline = Instant::now() + STARTUP_GUARD;
        loop {
            if let Ok(mut conn) = connection(self.port).await {
                let info: String = redis::cmd("INFO")
                    .arg("replication")
                    .query_async(&mut conn)
                    .await
                    .unwrap_or_default();
                let online = info.matches("state=online").count();
                if online >= n {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{n} replicas not online:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn start_with(extra: Vec<String>) -> RedisServer {
        let binary = redis_server_binary();
        let dir = tempfile::Builder::new()
            .prefix("rollcall-redis-")
            .tempdir()
            .expect("a temporary directory for Redis");
        // A port picked by binding port 0 can be taken by someone else
        // before Redis binds it; try a few.
        let mut failures = Vec::new();
        for _ in 0..5 {
            let port = free_port();
            match spawn(&binary, port, dir.path(), &extra).await {
                Ok(child) => {
                    return RedisServer {
                        port,
                        dir,
                        child: Some(child),
                        extra,
                    };
                }
                Err(why) => failures.push(format!("port {port}: {why}")),
            }
        }
        panic!("redis-server did not start:\n{}", failures.join("\n"));
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        url(self.port)
    }

    /// Shuts Redis down gracefully (AOF fsynced) and waits for it to exit.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // The connection drops as Redis exits, so the command "fails".
        if let Ok(mut conn) = connection(self.port).await {
            let _: redis::RedisResult<()> = redis::cmd("SHUTDOWN").query_async(&mut conn).await;
        }
        let status = tokio::time::timeout(STARTUP_GUARD, child.wait())
            .await
            .expect("redis-server exits after SHUTDOWN")
            .expect("wait for redis-server");
        assert!(
            status.success(),
            "redis-server exited with {status} on SHUTDOWN:\n{}",
            self.log()
        );
    }

    /// Kills Redis with SIGKILL (a crash of the process) and reaps it.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("SIGKILL redis-server");
        }
    }

    /// Starts Redis again on the same port with the same data directory,
    /// and waits until it answers PING (which it does only once the AOF is
    /// loaded). Stops it gracefully first if it is running.
    pub async fn restart(&mut self) {
        self.stop().await;
        match spawn(
            &redis_server_binary(),
            self.port,
            self.dir.path(),
            &self.extra,
        )
        .await
        {
            Ok(child) => self.child = Some(child),
            Err(why) => panic!("redis-server did not restart on port {}: {why}", self.port),
        }
    }

    /// What Redis printed, for failure messages.
    pub fn log(&self) -> String {
        read_log(self.dir.path())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            // SIGKILL now; tokio reaps the process in the background.
            let _ = child.start_kill();
        }
    }
}

/// `redis-server` from PATH, or a failure that says how to get it.
pub fn redis_server_binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("redis-server"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "redis-server not installed: run `make deps` (apt-get install redis-server); \
                 the Redis store and multi-node tests start their own Redis and never skip"
            )
        })
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

pub fn url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}")
}

pub async fn connection(port: u16) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    redis::Client::open(url(port))?
        .get_multiplexed_async_connection()
        .await
}

pub fn read_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join(LOG_FILE)).unwrap_or_default()
}

/// Runs `redis-server <repo>/redis.conf --port <port> --dir <dir> <extra>`
/// and waits until it answers PING; its output goes to `<dir>/redis.log`.
/// (`redis_cluster.rs` starts its nodes through this too.)
pub async fn spawn(
    binary: &Path,
    port: u16,
    dir: &Path,
    extra: &[String],
) -> Result<Child, String> {
    let log = File::options()
        .create(true)
        .append(true)
        .open(dir.join(LOG_FILE))
        .map_err(|e| format!("redis log file: {e}"))?;
    let stderr = log.try_clone().map_err(|e| e.to_string())?;
    let mut child = Command::new(binary)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/redis.conf"))
        .args(["--port", &port.to_string()])
        .arg("--dir")
        .arg(dir)
        .args(["--daemonize", "no"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(stderr))
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    let deadline = Instant::now() + STARTUP_GUARD;
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("exited with {status}:\n{}", read_log(dir)));
        }
        if let Ok(mut conn) = connection(port).await {
            let pong: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut conn).await;
            if pong.as_deref() == Ok("PONG") {
                return Ok(child);
            }
        }
        if Instant::now() > deadline {
            let _ = child.kill().await;
            return Err(format!(
                "no PONG within {STARTUP_GUARD:?}:\n{}",
                read_log(dir)
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The harness runs the repository's redis.conf: its durability and
/// hardening are in force, and data survives both ways of stopping.
#[tokio::test]
async fn redis_conf_is_in_force_and_data_survives_stop_and_kill() {
    let mut redis = RedisServer::start().await;
    let mut conn = connection(redis.port).await.expect("connect");
    let config = |name: &'static str| redis::cmd("CONFIG").arg("GET").arg(name).clone();
    for (name, value) in [
        ("appendonly", "yes"),
        ("appendfsync", "always"),
        ("save", ""),
        ("maxmemory-policy", "noeviction"),
        ("protected-mode", "yes"),
        ("bind", "127.0.0.1 -::1"),
        ("notify-keyspace-events", ""),
        ("enable-debug-command", "no"),
    ] {
        let got: (String, String) = config(name).query_async(&mut conn).await.unwrap();
        assert_eq!(got.1, value, "{name}");
    }
    for refused in [
        redis::cmd("FLUSHALL"),
        redis::cmd("KEYS").arg("*").clone(),
        redis::cmd("DEBUG").arg("SLEEP").arg(0).clone(),
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("dir")
            .arg("/tmp")
            .clone(),
    ] {
        let result: redis::RedisResult<redis::Value> = refused.query_async(&mut conn).await;
        assert!(result.is_err(), "{refused:?} must be refused");
    }

    let _: () = redis::cmd("SET")
        .arg("stopped")
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
    redis.stop().await;
    redis.restart().await;
    let mut conn = connection(redis.port).await.expect("reconnect");
    let _: () = redis::cmd("SET")
        .arg("killed")
        .arg(2)
        .query_async(&mut conn)
        .await
        .unwrap();
    redis.kill().await;
    redis.restart().await;
    let mut conn = connection(redis.port).await.expect("reconnect");
    let (stopped, killed): (Option<i64>, Option<i64>) = redis::cmd("MGET")
        .arg("stopped")
        .arg("killed")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!((stopped, killed), (Some(1), Some(2)), "{}", redis.log());
}
