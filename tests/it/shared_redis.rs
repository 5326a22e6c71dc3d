//! What rollcall nodes under test share: one `redis-server`, or a Redis
//! Cluster of three masters with a replica each, so that one test body can
//! run on both (`Shared::one`, `Shared::cluster`).

use std::time::Duration;

use rollcall::store::conn::RedisTarget;

use crate::redis_cluster::RedisCluster;
use crate::redis_server::RedisServer;

/// What the nodes share: one Redis, or a Redis Cluster (3 masters, each
/// with a replica).
pub enum Shared {
    One(RedisServer),
    Cluster(RedisCluster),
}

impl Shared {
    pub async fn one() -> Self {
        Self::One(RedisServer::start().await)
    }

    pub async fn cluster() -> Self {
        Self::Cluster(RedisCluster::start().await)
    }

    pub fn target(&self) -> RedisTarget {
        match self {
            Self::One(redis) => RedisTarget::Single(redis.url()),
            Self::Cluster(cluster) => RedisTarget::Cluster(cluster.seeds()),
        }
    }

    /// Points a node's settings at it, with `command_timeout` on one
    /// Redis. On a cluster a webhook is acknowledged once a replica has it
    /// (the default there), and the timeouts are generous: on a loaded
    /// 2-core machine six Redis processes and the replicas' acknowledgements
    /// compete for CPU, and a test that expects 200s must not get a 503
    /// for a slow `WAIT`.
    pub fn configure(&self, s: &mut rollcall::config::Settings, command_timeout: Duration) {
        match self {
            Self::One(redis) => {
                s.redis_url = Some(redis.url());
                s.redis.command_timeout = command_timeout;
            }
            Self::Cluster(cluster) => {
                s.redis_cluster = Some(cluster.seeds());
                s.redis.wait_replicas = 1;
                s.redis.wait_timeout = Duration::from_millis(1_000);
                s.redis.command_timeout = Duration::from_millis(2_000);
            }
        }
    }

    pub fn server(&mut self) -> &mut RedisServer {
        match self {
            Self::One(redis) => redis,
            Self::Cluster(_) => panic!("one Redis expected"),
        }
    }
}
