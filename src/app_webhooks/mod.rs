//! App webhooks (`ROLLCALL_APP_WEBHOOK_URL`): what happens to channels,
//! POSTed to the app as Pusher posts it — `channel_occupied`,
//! `channel_vacated`, `member_added`, `member_removed`, `client_event`,
//! `cache_miss` — once per cluster, batched, signed, retried until
//! delivered or expired.
//!
//! - `event.rs` — an event's object as Pusher's body carries it, and its
//!   part in the hold.
//! - `queue.rs` — the store-side traits: the pending-webhook queue (hold,
//!   claim with a visibility timeout, ack, retry) and the cluster-wide
//!   occupancy record; `memory.rs` and `redis.rs` implement both.
//! - `occupancy.rs` — this node's task that keeps the occupancy record
//!   equal to the hub's local counts (level-triggered).
//! - `worker.rs` — the delivery worker (one per node); `body.rs` the body
//!   and its signature; `backoff.rs` when to try again.
//!
//! [`AppWebhooks`] is the [`ChannelEvents`] sink every producer calls:
//! `emit` returns once the events are in the store (on Redis: fsynced), so
//! a node that dies after emitting loses nothing; any node's worker
//! delivers them.

mod backoff;
mod body;
mod event;
mod memory;
mod occupancy;
mod queue;
mod redis;
mod worker;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use backoff::Backoff;
pub use body::{KEY_HEADER, SIGNATURE_HEADER, sign};
pub use event::{Hold, Queued};
pub use memory::MemoryWebhookStore;
pub use queue::{Claim, Claimed, Occupancy, QueueOptions, WebhookQueue};
pub use redis::RedisWebhookStore;
pub use worker::DeliveryOptions;

use crate::channel_events::{ChannelEvent, ChannelEvents};
use crate::domain::now_millis;
use crate::metrics::Metrics;
use crate::outbound::{self, OutboundError};
use crate::pusher::hub::Hub;
use crate::store::StoreError;
use crate::store::conn::Redis;

/// Everything about app webhooks but the URL and credentials.
#[derive(Debug, Clone)]
pub struct AppWebhookOptions {
    /// How long `channel_vacated` / `member_removed` wait for a return
    /// (`ROLLCALL_APP_WEBHOOK_HOLD`).
    pub hold: Duration,
    /// Most events pending in the store (cluster-wide on Redis); past it new
    /// events are refused and counted.
    pub max_queued: usize,
    /// Longest wait for one POST.
    pub request_timeout: Duration,
    pub delivery: DeliveryOptions,
}

impl Default for AppWebhookOptions {
    fn default() -> Self {
        let request_timeout = Duration::from_secs(10);
        Self {
            hold: Duration::from_secs(3),
            max_queued: 100_000,
            request_timeout,
            delivery: DeliveryOptions {
                batch_max: 100,
                max_body_bytes: 256 * 1024,
                // A claim's requests: a few bodies, each within the timeout.
                visibility: Duration::from_secs(60),
                expiry: Duration::from_secs(3600),
                backoff: Backoff::default(),
                idle_poll: Duration::from_millis(500),
            },
        }
    }
}

/// Largest event object queued (a client event's data is bounded by the
/// socket's 10 KiB message limit; this is a backstop for other producers).
const MAX_EVENT_BYTES: usize = 64 * 1024;

/// The two store-side halves, implemented by one store.
#[derive(Clone)]
pub struct WebhookStore {
    pub queue: Arc<dyn WebhookQueue>,
    pub occupancy: Arc<dyn Occupancy>,
}

impl WebhookStore {
    pub fn of<S: WebhookQueue + Occupancy>(store: S) -> Self {
        let store = Arc::new(store);
        Self {
            queue: Arc::clone(&store) as Arc<dyn WebhookQueue>,
            occupancy: store,
        }
    }

    /// On Redis when the server has it (shared by every node), else in
    /// memory.
    pub fn connect(redis: Option<&Redis>, options: &AppWebhookOptions) -> Self {
        let queue = QueueOptions {
            hold: options.hold,
            max_len: options.max_queued,
        };
        match redis {
            Some(redis) => Self::of(RedisWebhookStore::new(redis.clone(), queue)),
            None => Self::of(MemoryWebhookStore::new(queue)),
        }
    }
}

/// The sink, and the handle to the occupancy record. Cheap to clone.
#[derive(Clone)]
pub struct AppWebhooks {
    store: WebhookStore,
    metrics: Arc<Metrics>,
    wake: Arc<Notify>,
}

impl AppWebhooks {
    /// Starts this node's delivery worker to `url`. Builds the HTTPS client
    /// at once (`outbound::client`), so a broken trust store stops the
    /// server at startup.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        url: reqwest::Url,
        app_key: &str,
        app_secret: &str,
        store: WebhookStore,
        options: &AppWebhookOptions,
        metrics: Arc<Metrics>,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<Self, OutboundError> {
        let wake = Arc::new(Notify::new());
        let worker = worker::Worker {
            url,
            app_key: app_key.to_string(),
            app_secret: app_secret.to_string(),
            client: outbound::client(options.request_timeout)?,
            queue: Arc::clone(&store.queue),
            metrics: Arc::clone(&metrics),
            options: options.delivery.clone(),
            wake: Arc::clone(&wake),
        };
        tracker.spawn(worker.run(shutdown));
        Ok(Self {
            store,
            metrics,
            wake,
        })
    }

    /// Keeps the cluster-wide occupancy record for `node` from `hub`'s
    /// local subscriptions (`channel_occupied` / `channel_vacated`).
    pub fn track_occupancy(
        &self,
        hub: &Hub,
        node: Arc<str>,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) {
        occupancy::spawn(
            hub,
            Arc::clone(&self.store.occupancy),
            node,
            tracker,
            shutdown,
        );
    }

    /// A dead node's channels: removed from the occupancy record; those it
    /// was the last node of are returned, their `channel_vacated` already
    /// queued (held, like any departure). For the node registry that reaps
    /// dead nodes; it must not emit `Vacated` for them again.
    pub async fn vacate_node(&self, node: &str) -> Result<Vec<String>, StoreError> {
        let vacated = self.store.occupancy.vacate_node(node, now_millis()).await?;
        if !vacated.is_empty() {
            self.wake.notify_one();
        }
        Ok(vacated)
    }
}

#[async_trait]
impl ChannelEvents for AppWebhooks {
    async fn emit(&self, events: Vec<ChannelEvent>) {
        let (queued, oversized): (Vec<Queued>, Vec<Queued>) = events
            .iter()
            .map(Queued::of)
            .partition(|q| q.json.len() <= MAX_EVENT_BYTES);
        let mut refused = oversized.len();
        if !queued.is_empty() {
            let count = queued.len();
            let now = now_millis();
            // One retry: a connection found broken is replaced by the pool.
            let result = match self.store.queue.enqueue(queued.clone(), now).await {
                Err(_) => self.store.queue.enqueue(queued, now).await,
                ok => ok,
            };
            match result {
                Ok(full) => refused += full,
                Err(e) => {
                    tracing::warn!(error = %e, events = count, "app webhook events lost: the store is unavailable");
                    refused += count;
                }
            }
            self.wake.notify_one();
        }
        if refused > 0 {
            tracing::warn!(
                events = refused,
                "app webhook events refused (queue full, store down or too large)"
            );
            Metrics::add(&self.metrics.app_webhooks_refused, refused as u64);
        }
    }
}

/// A dead node's channels are vacated (their `channel_vacated`, held, is
/// queued by the same store step) when the presence reaper finds it.
#[async_trait::async_trait]
impl crate::presence::NodeCleanup for AppWebhooks {
    async fn node_dead(&self, node: &str) -> Result<(), StoreError> {
        self.vacate_node(node).await.map(|_| ())
    }
}
