//! `rollcall-bench`: measures rollcall's latency, throughput and footprint
//! side by side with a Socket.IO peer and a bare tokio-tungstenite server.
//! Loopback only; every scenario is bounded in count and time.

mod bare;
mod client;
mod cluster;
mod fanout;
mod hostile;
mod lecture;
mod publish;
mod scenarios;
mod servers;
mod sharded;
mod soak;
mod stats;
mod sys;
mod track;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "rollcall-bench",
    about = "Benchmarks for rollcall (loopback only)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Meeting fan-out: rooms x subscribers, webhooks at a fixed rate.
    B1(scenarios::B1Args),
    /// B1 on several rollcall nodes, one run: one Redis, a 3+3 Redis
    /// Cluster (WAIT 1), a Redis with a replica (WAIT 1).
    B1Cluster(cluster::ClusterArgs),
    /// Idle capacity: many subscribed sockets held, then one broadcast.
    B2(scenarios::B2Args),
    /// Hot channel: one channel, publishes at increasing rates.
    B3(scenarios::B3Args),
    /// Webhook (publish) ingest: as fast as accepted.
    B4(scenarios::B4Args),
    /// Heartbeats: cost per heartbeat and the sweeper's cost (rollcall).
    B5(scenarios::B5Args),
    /// Large lecture: one room, N attendees all subscribed to its channel,
    /// N joins (N² deliveries), a reload wave and heartbeats (rollcall).
    B6(lecture::B6Args),
    /// Fan-out per node: N nodes on one Redis, each channel's subscribers
    /// on one node; broadcasts and bytes each node's bus receives, before
    /// and after subscribe-on-demand (rollcall).
    B7(fanout::B7Args),
    /// Soak: B1-like load with churn, heartbeats and hostile clients for
    /// minutes; RSS, fds and latency sampled (rollcall).
    Soak(soak::SoakArgs),
    /// One generator process of a B2 run spread over processes (internal).
    #[command(hide = true)]
    B2Worker(sharded::WorkerArgs),
    /// Run the bare tokio-tungstenite broadcast server.
    BareServer {
        #[arg(long, default_value = "127.0.0.1:6101")]
        listen: std::net::SocketAddr,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cli.command {
            Command::BareServer { listen } => bare::run(listen).await,
            Command::B1(a) => scenarios::b1(a).await,
            Command::B1Cluster(a) => cluster::b1_cluster(a).await,
            Command::B2(a) => scenarios::b2(a).await,
            Command::B2Worker(a) => sharded::worker(a).await,
            Command::B3(a) => scenarios::b3(a).await,
            Command::B4(a) => scenarios::b4(a).await,
            Command::B5(a) => scenarios::b5(a).await,
            Command::B6(a) => lecture::b6(a).await,
            Command::B7(a) => fanout::b7(a).await,
            Command::Soak(a) => soak::soak(a).await,
        }
    })
}
