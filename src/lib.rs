//! rollcall: realtime attendance for LiveKit meetings over the Pusher
//! protocol. See ARCHITECTURE.md for the map.

pub mod app_webhooks;
pub mod build_info;
pub mod cache_channels;
pub mod channel_events;
pub mod cli;
pub mod client_events;
pub mod config;
pub mod domain;
pub mod engine;
pub mod http;
pub mod http_metrics;
pub mod ingest;
pub mod limits;
pub mod livekit;
pub mod metrics;
pub mod outbound;
pub mod presence;
pub mod process_metrics;
pub mod pusher;
pub mod reconcile;
pub mod report;
pub mod rooms;
pub mod server;
pub mod snapshot;
pub mod startup;
pub mod store;
pub mod sweeper;
pub mod telemetry;
pub mod tools;
pub mod viewer;
