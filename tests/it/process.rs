//! A rollcall server in its own process (the built `rollcall` binary), for
//! tests that measure what only a process shows: its resident memory and
//! open file descriptors (from `/proc`), or behaviour under a lowered
//! file-descriptor limit.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::helpers::GUARD;

pub struct ServerProcess {
    pub addr: SocketAddr,
    child: Child,
}

/// Settings every spawned server gets unless the test overrides them: the
/// development credentials, on a loopback port chosen here.
fn base_command(port: u16, nofile: Option<u64>) -> Command {
    let bin = env!("CARGO_BIN_EXE_rollcall");
    let mut cmd = match nofile {
        // util-linux's prlimit sets both limits before exec, so the
        // server's startup raise (soft -> hard) stays at this number.
        Some(n) => {
            let mut c = Command::new("prlimit");
            c.arg(format!("--nofile={n}:{n}")).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.arg("serve")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"));
    // A test decides every setting: nothing leaks in from the shell.
    for (key, _) in std::env::vars() {
        if key.starts_with("ROLLCALL_") || key.starts_with("LIVEKIT_") {
            cmd.env_remove(key);
        }
    }
    // The trust store of outgoing HTTPS too (src/outbound.rs).
    cmd.env_remove("SSL_CERT_FILE").env_remove("SSL_CERT_DIR");
    cmd.env(
        "RUST_LOG",
        std::env::var("ROLLCALL_TEST_LOG").unwrap_or("warn".into()),
    );
    cmd.stdin(Stdio::null()).stdout(Stdio::null());
    cmd
}

// Not every helper is used by every test module yet.
#[allow(dead_code)]
impl ServerProcess {
    /// Starts `rollcall serve` with `env` on a free loopback port and waits
    /// until `/healthz` answers.
    pub async fn spawn(env: &[(&str, &str)]) -> Self {
        Self::spawn_limited(env, None).await
    }

    /// As [`Self::spawn`], with RLIMIT_NOFILE (soft and hard) set to
    /// `nofile` for the server process.
    pub async fn spawn_with_fd_limit(env: &[(&str, &str)], nofile: u64) -> Self {
        Self::spawn_limited(env, Some(nofile)).await
    }

    /// As [`Self::spawn`], on `port` (e.g. a restart where the last
    /// process listened, so clients reconnect to the same URL).
    pub async fn spawn_on(port: u16, env: &[(&str, &str)]) -> Self {
        Self::spawn_at(port, env, None).await
    }

    async fn spawn_limited(env: &[(&str, &str)], nofile: Option<u64>) -> Self {
        Self::spawn_at(free_port(), env, nofile).await
    }

    async fn spawn_at(port: u16, env: &[(&str, &str)], nofile: Option<u64>) -> Self {
        let mut cmd = base_command(port, nofile);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn rollcall");
        let server = Self {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
        };
        server.wait_healthy().await;
        server
    }

    async fn wait_healthy(&self) {
        let client = reqwest::Client::new();
        let started = Instant::now();
        loop {
            if let Ok(r) = client.get(self.url("/healthz")).send().await
                && r.status().is_success()
            {
                return;
            }
            assert!(
                started.elapsed() < GUARD,
                "rollcall process did not become healthy"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self, key: &str) -> String {
        super::helpers::pusher_ws_url(self.addr, key)
    }

    /// The process's `/metrics` text.
    pub async fn metrics_text(&self) -> String {
        reqwest::get(self.url("/metrics"))
            .await
            .expect("metrics answer")
            .text()
            .await
            .expect("metrics text")
    }

    /// The value of the `/metrics` line starting with `series` (name and
    /// labels), 0 if absent.
    pub async fn metric(&self, series: &str) -> u64 {
        self.metrics_text()
            .await
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0)
    }

    /// Resident memory now, in KiB (`VmRSS` of `/proc/<pid>/status`).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc status")
    }

    /// File descriptors the server holds open now.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("read /proc fd")
            .count()
    }

    /// Stops the server as an orchestrator does (SIGTERM: sockets close
    /// with 4200, requests drain) and waits, bounded, until it has exited.
    pub async fn terminate(mut self) {
        let pid = libc::pid_t::try_from(self.pid()).expect("a pid");
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let started = Instant::now();
        while self.is_running() {
            assert!(
                started.elapsed() < GUARD,
                "rollcall did not exit on SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `rollcall serve` with `env` for a server expected to refuse to
/// start: waits (bounded) for it to exit and returns its output, stderr
/// (the log) included.
#[allow(dead_code)]
pub async fn run_to_exit(env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = tokio::process::Command::from(base_command(free_port(), None));
    cmd.envs(env.iter().copied())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    tokio::time::timeout(GUARD, cmd.output())
        .await
        .expect("rollcall exits")
        .expect("rollcall runs")
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

#[tokio::test]
async fn a_spawned_server_shows_its_memory_and_descriptors() {
    let server = ServerProcess::spawn(&[]).await;
    assert!(server.rss_kib() > 0);
    assert!(server.open_fds() > 3, "stdio, the listener and the runtime");
}
