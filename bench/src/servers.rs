//! The servers under test, started and stopped by the bench itself so that
//! their RSS, CPU time and lifecycle are ours to control: rollcall (memory
//! or Redis store), the bare tokio-tungstenite server, the Socket.IO peer,
//! and a throwaway redis-server. Everything listens on 127.0.0.1.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};

use crate::sys;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// rollcall: publish = a signed LiveKit webhook.
    Rollcall,
    /// The bare tokio-tungstenite broadcast server: our stack's limit.
    Bare,
    /// Socket.IO (node) with the same job, via Engine.IO v4.
    Socketio,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Store {
    Memory,
    Redis,
}

/// How to start (or find) the servers.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Targets to run side by side, in this order (the first is the base of
    /// the printed ratios).
    #[arg(long, value_delimiter = ',', default_value = "rollcall")]
    pub target: Vec<Target>,
    /// Store behind rollcall, and whether Socket.IO uses the Redis adapter.
    #[arg(long, value_enum, default_value = "memory")]
    pub store: Store,
    /// The rollcall binary to start (`cargo build --release`).
    #[arg(long, env = "ROLLCALL_BIN", default_value = "target/release/rollcall")]
    pub server_bin: PathBuf,
    /// Directory of the Socket.IO peer (server.mjs, node_modules).
    #[arg(long, default_value = "bench/socketio")]
    pub socketio_dir: PathBuf,
    #[arg(long, default_value = "redis-server")]
    pub redis_bin: String,
    /// The Redis configuration to run (the repository's: AOF with
    /// `appendfsync always`, what production runs); data in a temporary
    /// directory removed afterwards.
    #[arg(long, default_value = "redis.conf")]
    pub redis_conf: PathBuf,
    /// Use an already running server at this base URL instead of starting
    /// one (then give --server-pid for RSS). Loopback only.
    #[arg(long)]
    pub url: Option<String>,
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Extra `rollcall serve` flags, e.g. `--sweep-interval=1s`.
    #[arg(long, allow_hyphen_values = true)]
    pub rollcall_flag: Vec<String>,
    /// Extra environment for rollcall, `NAME=value` (repeatable); applied
    /// after [`BENCH_ENV`], so it can also override those.
    #[arg(long, value_parser = parse_env_pair)]
    pub rollcall_env: Vec<(String, String)>,
    /// Leave rollcall's per-address connection cap at its default (the
    /// soak, whose hostile clients should meet it) instead of
    /// [`GENERATOR_ENV`].
    #[arg(skip)]
    pub client_limits: bool,
}

/// Environment every rollcall the bench starts gets: the bench's own
/// webhooks and heartbeats are the load being measured, not abuse, so the
/// limits on them are off (`0`). Environment rather than flags: a server
/// built before a limit existed ignores the variable (a flag it does not
/// know would stop it), so before/after runs take the same command. The
/// other limits stay at their defaults (the soak's hostile clients are
/// meant to meet them).
pub const BENCH_ENV: &[(&str, &str)] = &[
    ("ROLLCALL_RATE_WEBHOOKS", "0"),
    ("ROLLCALL_RATE_HEARTBEATS", "0"),
];

/// Also for every scenario but the soak: the generator's thousands of
/// sockets come from a few source addresses, far more than one client
/// may hold.
pub const GENERATOR_ENV: &[(&str, &str)] = &[("ROLLCALL_MAX_CONNECTIONS_PER_IP", "0")];

pub fn parse_env_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected NAME=value, got {s:?}")),
    }
}

/// A running server under test.
pub struct Server {
    pub target: Target,
    /// `http://127.0.0.1:port`.
    pub base: String,
    pub pid: Option<u32>,
    child: Option<Child>,
    redis: Option<Child>,
    redis_url: Option<String>,
    /// The started Redis's data directory, removed on drop.
    redis_dir: Option<PathBuf>,
}

impl Server {
    pub async fn start(args: &ServerArgs, target: Target) -> anyhow::Result<Server> {
        if let Some(url) = &args.url {
            let host = url
                .trim_start_matches("http://")
                .split([':', '/'])
                .next()
                .unwrap_or_default();
            if !host.starts_with("127.") && host != "localhost" {
                bail!("--url must be a loopback address, got {url}");
            }
            return Ok(Server {
                target,
                base: url.trim_end_matches('/').to_string(),
                pid: args.server_pid,
                child: None,
                redis: None,
                redis_url: None,
                redis_dir: None,
            });
        }
        Self::spawn(args, target, None).await
    }

    /// Starts a server; with `shared_redis` (a URL) it joins that Redis
    /// instead of starting its own (several nodes of one cluster).
    pub async fn spawn(
        args: &ServerArgs,
        target: Target,
        shared_redis: Option<&str>,
    ) -> anyhow::Result<Server> {
        let mut redis = None;
        let mut redis_dir = None;
        let redis_url = if let Some(url) = shared_redis {
            Some(url.to_string())
        } else if args.store == Store::Redis {
            let port = sys::free_port();
            let dir = std::env::temp_dir().join(format!(
                "rollcall-bench-redis-{}-{port}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir)?;
            let child = Command::new(&args.redis_bin)
                .arg(&args.redis_conf)
                .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                .arg("--dir")
                .arg(&dir)
                .args(["--daemonize", "no"])
                .stdout(Stdio::null())
                .spawn()
                .with_context(|| {
                    format!(
                        "cannot start {} {}",
                        args.redis_bin,
                        args.redis_conf.display()
                    )
                })?;
            redis = Some(child);
            redis_dir = Some(dir);
            wait_tcp(port).await?;
            Some(format!("redis://127.0.0.1:{port}"))
        } else {
            None
        };
        let port = sys::free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut cmd = match target {
            Target::Rollcall => {
                let mut c = Command::new(&args.server_bin);
                c.args(["serve", "--listen", &listen])
                    .args(["--max-connections", "1000000"])
                    .args(&args.rollcall_flag)
                    .env("RUST_LOG", "warn,rollcall::startup=error")
                    .envs(BENCH_ENV.iter().copied());
                if !args.client_limits {
                    c.envs(GENERATOR_ENV.iter().copied());
                }
                c.envs(args.rollcall_env.iter().map(|(k, v)| (k, v)));
                if let Some(u) = &redis_url {
                    c.args(["--redis-url", u]);
                }
                c
            }
            Target::Bare => {
                let mut c = Command::new(std::env::current_exe()?);
                c.args(["bare-server", "--listen", &listen]);
                c
            }
            Target::Socketio => {
                let mut c = Command::new("node");
                c.arg(args.socketio_dir.join("server.mjs"))
                    .env("PORT", port.to_string());
                if let Some(u) = &redis_url {
                    c.env("REDIS_URL", u);
                }
                c
            }
        };
        let child = cmd
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start the {target:?} server"))?;
        let pid = child.id();
        let server = Server {
            target,
            base: format!("http://{listen}"),
            pid: Some(pid),
            child: Some(child),
            redis_url: if redis.is_some() { redis_url } else { None },
            redis,
            redis_dir,
        };
        wait_tcp(port).await?;
        // Socket.IO with the Redis adapter listens before Redis is connected;
        // rollcall's /readyz answers once its store does.
        let ready = match target {
            Target::Rollcall => "/readyz",
            _ => "/healthz",
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = http.get(format!("{}{ready}", server.base)).send().await
                && r.status().is_success()
            {
                break;
            }
            if Instant::now() > deadline {
                bail!("{target:?} server not ready in 20 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(server)
    }

    pub fn ws_url(&self) -> String {
        let hostport = self.base.trim_start_matches("http://");
        match self.target {
            Target::Socketio => format!("ws://{hostport}/socket.io/?EIO=4&transport=websocket"),
            _ => format!(
                "ws://{hostport}/app/rollcall-key?protocol=7&client=js&version=8.4.0&flash=false"
            ),
        }
    }

    /// The Redis this server uses, when it started one itself.
    pub fn own_redis_url(&self) -> Option<String> {
        self.redis_url.clone()
    }

    /// The pid of the redis-server this server started for itself.
    pub fn redis_pid(&self) -> Option<u32> {
        self.redis.as_ref().map(Child::id)
    }

    pub fn rss_kib(&self) -> u64 {
        self.pid.and_then(sys::rss_kib).unwrap_or(0)
    }

    pub fn cpu(&self) -> Duration {
        self.pid.and_then(sys::cpu_time).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let children: Vec<&mut Child> = [self.child.as_mut(), self.redis.as_mut()]
            .into_iter()
            .flatten()
            .collect();
        stop_all(children);
        if let Some(dir) = &self.redis_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Stops child processes as production stops servers: SIGTERM to every
/// one first (Redis's SHUTDOWN fsyncs the AOF), then up to 5 s for them to
/// exit, then SIGKILL whatever is left; reaps them all.
pub fn stop_all<'a>(children: impl IntoIterator<Item = &'a mut Child>) {
    let mut children: Vec<&mut Child> = children.into_iter().collect();
    for child in &children {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    for child in &mut children {
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

async fn wait_tcp(port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if Instant::now() > deadline {
            bail!("nothing listens on 127.0.0.1:{port} after 20 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollcall_env_takes_name_equals_value() {
        assert_eq!(
            parse_env_pair("RUST_LOG=warn,rollcall=info"),
            Ok(("RUST_LOG".into(), "warn,rollcall=info".into()))
        );
        assert_eq!(
            parse_env_pair("ROLLCALL_RATE_WEBHOOKS="),
            Ok(("ROLLCALL_RATE_WEBHOOKS".into(), String::new()))
        );
        assert!(parse_env_pair("NO_EQUALS").is_err());
        assert!(parse_env_pair("=value").is_err());
    }
}
