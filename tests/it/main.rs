//! The integration suite: one binary, a real server per test on an
//! ephemeral port (`helpers::spawn_app`). Tests that need Redis start their
//! own `redis-server` (`redis_server::RedisServer`), or a six-node Redis
//! Cluster (`redis_cluster::RedisCluster`).

mod app_webhook_store;
mod app_webhooks;
mod attendance_flow;
mod cache_channels;
mod client_events;
mod cross_origin;
mod demo;
mod fanout;
mod helpers;
mod http_hardening;
mod lifecycle;
mod livekit_double;
mod multi_node;
mod operator;
mod outbound_tls;
mod presence;
mod process;
mod pusher_api;
mod quota;
mod rate_limits;
mod reconcile;
mod redis_cluster;
mod redis_server;
mod refusals;
mod replica_ack;
mod room_service;
mod scenarios;
mod sessions_api;
mod shared_redis;
mod signin;
mod store_suite;
mod terminate;
mod tools;
mod viewer;
mod webhook_errors;
mod ws_hardening;
