//! How rollcall reaches Redis: one server (`ROLLCALL_REDIS_URL`) or a Redis
//! Cluster (`ROLLCALL_REDIS_CLUSTER`). Every Redis-backed store (rooms,
//! presence, the event cache, app webhooks) runs its commands through one
//! [`Redis`] handle, so the difference between the two lives here:
//!
//! - **Connections.** [`Redis::run`] is for ordinary commands: a pooled
//!   connection on one server; on Cluster the shared cluster connection
//!   (multiplexed, one socket per master, routed by key and following
//!   `MOVED`/failovers itself). [`Redis::run_shared`] is the shared
//!   multiplexed connection on both (commits, heartbeats: many small
//!   commands in one write). [`Redis::run_blocking`] is an exclusive
//!   connection for commands that block their connection (`WAIT`,
//!   `BLPOP`): a pooled one on both, so one blocked command never holds up
//!   the others.
//! - **Slots.** On Cluster every command, pipeline and script must stay in
//!   one hash slot. [`Redis::query_each`] sends commands that may span
//!   slots: one pipeline on one server, one command each (concurrently) on
//!   Cluster.
//! - **Pub/sub.** On one server broadcasts are `PUBLISH`ed; on Cluster they
//!   are `SPUBLISH`ed (sharded pub/sub: a message goes only to the shard
//!   that owns its channel's slot, not to every node of the cluster).
//!   [`Redis::script`] rewrites a script's `PUBLISH` for Cluster.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use super::StoreError;

/// Where Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One server (with or without replicas): `redis://…`.
    Single(String),
    /// A Redis Cluster, by any of its nodes (seed URLs).
    Cluster(Vec<String>),
}

impl RedisTarget {
    /// The target as it may be logged (no password).
    pub fn redacted(&self) -> String {
        match self {
            Self::Single(url) => redact(url),
            Self::Cluster(seeds) => seeds
                .iter()
                .map(|s| redact(s))
                .collect::<Vec<_>>()
                .join(","),
        }
    }
}

/// A Redis URL without its credentials (if any).
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

/// Most pooled connections per node (on Cluster: pooled cluster
/// connections, each one socket per master).
const POOL_SIZE: usize = 64;
/// Retries of one cluster command (after `MOVED`, a refused connection
/// during a failover, …); the command timeout bounds them all.
const CLUSTER_RETRIES: u32 = 3;

/// The handle every Redis-backed store shares (cheap to clone).
#[derive(Clone)]
pub struct Redis {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Backend,
    timeout: Duration,
    /// The shared multiplexed connection (made on first use, dropped after
    /// an error so the next use makes a fresh one).
    shared: Mutex<Option<Shared>>,
}

/// A multiplexed connection: cloning it shares the socket(s).
#[derive(Clone)]
enum Shared {
    Multiplexed(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl From<Shared> for Conn {
    fn from(shared: Shared) -> Self {
        match shared {
            Shared::Multiplexed(c) => Conn::Multiplexed(c),
            Shared::Cluster(c) => Conn::Cluster(c),
        }
    }
}

enum Backend {
    Single {
        client: redis::Client,
        pool: deadpool_redis::Pool,
    },
    Cluster {
        seeds: Vec<String>,
        client: Box<redis::cluster::ClusterClient>,
        pool: deadpool_redis::cluster::Pool,
    },
}

/// One connection of either kind; commands run on it as on any `redis`
/// connection.
pub enum Conn {
    Pooled(deadpool_redis::Connection),
    Multiplexed(MultiplexedConnection),
    ClusterPooled(deadpool_redis::cluster::Connection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Pooled(c) => c.req_packed_command(cmd),
            Self::Multiplexed(c) => c.req_packed_command(cmd),
            Self::ClusterPooled(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Pooled(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Multiplexed(c) => c.req_packed_commands(pipeline, offset, count),
            Self::ClusterPooled(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Pooled(c) => c.get_db(),
            Self::Multiplexed(c) => c.get_db(),
            Self::ClusterPooled(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

pub(crate) fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn timed_out() -> StoreError {
    StoreError::Unavailable("Redis did not answer in time".into())
}

impl Redis {
    /// A handle on `target`. Does not connect yet and does not fail when
    /// Redis is down: commands fail (503) until it is back.
    pub fn open(target: &RedisTarget, timeout: Duration) -> Result<Self, StoreError> {
        let mut pool_config = deadpool_redis::PoolConfig::new(POOL_SIZE);
        pool_config.timeouts.wait = Some(timeout);
        pool_config.timeouts.create = Some(timeout);
        pool_config.timeouts.recycle = Some(timeout);
        let backend = match target {
            RedisTarget::Single(url) => {
                let client = redis::Client::open(url.as_str()).map_err(unavailable)?;
                let mut config = deadpool_redis::Config::from_url(url.as_str());
                config.pool = Some(pool_config);
                let pool = config
                    .create_pool(Some(deadpool_redis::Runtime::Tokio1))
                    .map_err(unavailable)?;
                Backend::Single { client, pool }
            }
            RedisTarget::Cluster(seeds) => {
                let client = cluster_client(seeds, timeout, None)?;
                let mut config = deadpool_redis::cluster::Config::from_urls(seeds.clone());
                config.pool = Some(pool_config);
                let pool = config
                    .create_pool(Some(deadpool_redis::Runtime::Tokio1))
                    .map_err(unavailable)?;
                Backend::Cluster {
                    seeds: seeds.clone(),
                    client: Box::new(client),
                    pool,
                }
            }
        };
        Ok(Self {
            inner: Arc::new(Inner {
                backend,
                timeout,
                shared: Mutex::new(None),
            }),
        })
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self.inner.backend, Backend::Cluster { .. })
    }

    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// The command that publishes a broadcast: `PUBLISH`, or on Cluster
    /// `SPUBLISH` (see the module documentation).
    pub fn publish_command(&self) -> &'static str {
        if self.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    /// A script whose `redis.call('PUBLISH', …)` becomes `SPUBLISH` on
    /// Cluster. Its published channel must then share the slot of its keys.
    pub fn script(&self, lua: &str) -> redis::Script {
        if self.is_cluster() {
            redis::Script::new(&lua.replace("'PUBLISH'", "'SPUBLISH'"))
        } else {
            redis::Script::new(lua)
        }
    }

    /// The single server's client (the bus's pub/sub connection), if this
    /// is one.
    pub(crate) fn single_client(&self) -> Option<&redis::Client> {
        match &self.inner.backend {
            Backend::Single { client, .. } => Some(client),
            Backend::Cluster { .. } => None,
        }
    }

    /// The cluster's seed URLs, if this is one.
    pub(crate) fn cluster_seeds(&self) -> Option<Vec<String>> {
        match &self.inner.backend {
            Backend::Cluster { seeds, .. } => Some(seeds.clone()),
            Backend::Single { .. } => None,
        }
    }

    /// Runs `f` on a connection for ordinary commands (see the module
    /// documentation), bounded by the command timeout.
    pub async fn run<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        match &self.inner.backend {
            Backend::Single { .. } => self.run_blocking(f).await,
            Backend::Cluster { .. } => {
                let work = async {
                    let conn = self.shared_conn().await.map_err(unavailable)?;
                    let result = f(conn.into()).await;
                    if result.is_err() {
                        self.drop_shared_if_broken(&result);
                    }
                    result.map_err(unavailable)
                };
                tokio::time::timeout(self.inner.timeout, work)
                    .await
                    .map_err(|_| timed_out())?
            }
        }
    }

    /// Runs `f` on a connection of its own: for commands that block their
    /// connection (`WAIT`, `BLPOP`) or read a long reply.
    pub async fn run_blocking<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let work = async {
            let conn = match &self.inner.backend {
                Backend::Single { pool, .. } => {
                    Conn::Pooled(pool.get().await.map_err(unavailable)?)
                }
                Backend::Cluster { pool, .. } => {
                    Conn::ClusterPooled(pool.get().await.map_err(unavailable)?)
                }
            };
            f(conn).await.map_err(unavailable)
        };
        tokio::time::timeout(self.inner.timeout, work)
            .await
            .map_err(|_| timed_out())?
    }

    /// Runs `f` on the shared multiplexed connection, bounded by the
    /// command timeout. A connection that turns out broken (Redis restarted
    /// since it was made) is dropped and `f` runs once more on a fresh one,
    /// as a pooled connection would have been checked before use; `f` must
    /// therefore be safe to repeat. After any other error or a timeout the
    /// connection is dropped too.
    pub async fn run_shared<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let work = async {
            let mut attempt = 0;
            loop {
                attempt += 1;
                let conn = self.shared_conn().await?;
                let result = f(conn.into()).await;
                match &result {
                    Err(e) => {
                        *self.lock_shared() = None;
                        let broken = e.is_io_error() || e.is_connection_dropped();
                        if !broken || attempt > 1 {
                            return result;
                        }
                    }
                    Ok(_) => return result,
                }
            }
        };
        match tokio::time::timeout(self.inner.timeout, work).await {
            Ok(result) => result.map_err(unavailable),
            Err(_) => {
                *self.lock_shared() = None;
                Err(timed_out())
            }
        }
    }

    /// Each command's reply, in order: one pipeline on one server; on
    /// Cluster, where the commands may live in different slots, one command
    /// each, sent together.
    pub async fn query_each<T>(&self, commands: Vec<Cmd>) -> Result<Vec<T>, StoreError>
    where
        T: redis::FromRedisValue + Send + 'static,
    {
        if commands.is_empty() {
            return Ok(Vec::new());
        }
        if !self.is_cluster() {
            let mut pipe = redis::pipe();
            for cmd in commands {
                pipe.add_command(cmd);
            }
            return self
                .run(|mut c| async move { pipe.query_async(&mut c).await })
                .await;
        }
        self.each_on_cluster(commands, |cmd, mut c| async move {
            cmd.query_async::<T>(&mut c).await
        })
        .await
    }

    /// Sends pipelines that may live in different slots, each in its own
    /// order: one after the other on one connection on one server; on
    /// Cluster all at once on the shared cluster connection.
    pub async fn pipelines(&self, pipelines: Vec<Pipeline>) -> Result<(), StoreError> {
        if !self.is_cluster() {
            return self
                .run(|mut c| async move {
                    for pipe in &pipelines {
                        pipe.query_async::<()>(&mut c).await?;
                    }
                    Ok(())
                })
                .await;
        }
        self.each_on_cluster(pipelines, |pipe, mut c| async move {
            pipe.query_async::<()>(&mut c).await
        })
        .await
        .map(drop)
    }

    /// `send` for every item at once, each on a clone of the shared cluster
    /// connection, bounded by the command timeout; the replies in order.
    async fn each_on_cluster<I, T, F, Fut>(
        &self,
        items: Vec<I>,
        send: F,
    ) -> Result<Vec<T>, StoreError>
    where
        F: Fn(I, ClusterConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let work = async {
            let Shared::Cluster(conn) = self.shared_conn().await.map_err(unavailable)? else {
                unreachable!("each_on_cluster runs on a cluster")
            };
            let replies = items.into_iter().map(|item| send(item, conn.clone()));
            let replies: redis::RedisResult<Vec<T>> = futures_util::future::join_all(replies)
                .await
                .into_iter()
                .collect();
            self.drop_shared_if_broken(&replies);
            replies.map_err(unavailable)
        };
        tokio::time::timeout(self.inner.timeout, work)
            .await
            .map_err(|_| timed_out())?
    }

    fn drop_shared_if_broken<T>(&self, result: &redis::RedisResult<T>) {
        if let Err(e) = result
            && (e.is_io_error() || e.is_connection_dropped())
        {
            *self.lock_shared() = None;
        }
    }

    async fn shared_conn(&self) -> redis::RedisResult<Shared> {
        if let Some(conn) = self.lock_shared().clone() {
            return Ok(conn);
        }
        let conn = match &self.inner.backend {
            Backend::Single { client, .. } => {
                Shared::Multiplexed(client.get_multiplexed_async_connection().await?)
            }
            Backend::Cluster { client, .. } => {
                Shared::Cluster(client.get_async_connection().await?)
            }
        };
        // Racing connects: the last one stays, the others serve their own
        // caller once and are dropped.
        *self.lock_shared() = Some(conn.clone());
        Ok(conn)
    }

    fn lock_shared(&self) -> MutexGuard<'_, Option<Shared>> {
        // Holds an `Option` that is replaced whole: never inconsistent.
        self.inner
            .shared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A cluster client on `seeds`; with `push`, a RESP3 one whose pushes
/// (sharded messages, disconnections) go there (the bus).
pub(crate) fn cluster_client(
    seeds: &[String],
    timeout: Duration,
    push: Option<tokio::sync::mpsc::UnboundedSender<redis::PushInfo>>,
) -> Result<redis::cluster::ClusterClient, StoreError> {
    let mut builder = redis::cluster::ClusterClientBuilder::new(seeds.to_vec())
        .connection_timeout(timeout)
        .response_timeout(timeout)
        .retries(CLUSTER_RETRIES);
    if let Some(push) = push {
        builder = builder
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(push);
    }
    builder.build().map_err(unavailable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("redis://:hunter2@db.internal:6379/0"),
            "redis://***@db.internal:6379/0"
        );
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        let cluster =
            RedisTarget::Cluster(vec!["redis://u:pw@a:7000".into(), "redis://b:7001".into()]);
        assert_eq!(cluster.redacted(), "redis://***@a:7000,redis://b:7001");
    }
}
