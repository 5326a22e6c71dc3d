//! Builds a server from `Settings` and runs it until a shutdown signal.
//! `main` and the tests start it the same way: `Application::build` binds
//! (port 0 in tests), `run_until` serves.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app_webhooks::{AppWebhooks, WebhookStore};
use crate::cache_channels::{CacheReplay, CachingRelay};
use crate::channel_events::{ChannelEvents, NoChannelEvents};
use crate::config::Settings;
use crate::http::{self, AppState};
use crate::limits::{HOUSEKEEPING_PERIOD, Limits, run_housekeeping};
use crate::livekit::RoomService;
use crate::metrics::Metrics;
use crate::presence::Presence;
use crate::pusher::hub::Hub;
use crate::pusher::service::{BroadcastFeed, ConnectionQuota, LocalFeed, Services};
use crate::pusher::{self, PusherConfig, PusherState};
use crate::pusher::{Halt, SocketId};
use crate::reconcile::Reconciler;
use crate::report::Reporter;
use crate::rooms::{Rooms, Timing};
use crate::server::{self, ConnectionBudget};
use crate::snapshot::Snapshots;
use crate::store::conn::RedisTarget;
use crate::store::presence::{MemoryPresence, NodeRegistry, PresenceStore};
use crate::store::redis::RoomChannel;
use crate::store::{
    ChannelQuery, EventCache, LocalDelivery, MemoryEventCache, MemoryStore, RedisStore, Store,
    SubscriptionCounts,
};
use crate::sweeper::Sweeper;

pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    /// Cancelled on shutdown: every socket closes with 4200 so browsers
    /// reconnect at once (to another node, or to us after a restart).
    shutdown: CancellationToken,
    /// Upgraded WebSocket tasks: a connection's task in `server::serve`
    /// ends when hyper hands the socket over, so the drain does not wait
    /// for them; we wait for them ourselves.
    tracker: TaskTracker,
    settings: Settings,
    pub state: AppState,
    /// Open sockets and their caps, shared with the WebSocket endpoint.
    budget: ConnectionBudget,
    /// App webhooks, when `ROLLCALL_APP_WEBHOOK_URL` is set (the node
    /// registry reaps dead nodes' occupancy through it).
    pub app_webhooks: Option<AppWebhooks>,
    /// This process's node id in the store (leases, occupancy).
    pub node_id: Arc<str>,
}

/// The hub is how stores reach this node's sockets.
impl LocalDelivery for Hub {
    fn deliver(&self, channel: &str, frame: Utf8Bytes, except: Option<&SocketId>) {
        self.publish(channel, frame, except);
    }

    fn halt(&self, channel: &str, why: Halt) {
        self.halt_channel(channel, why);
    }

    fn subscriptions(&self, query: &ChannelQuery) -> SubscriptionCounts {
        match query {
            ChannelQuery::Names(names) => names
                .iter()
                .map(|name| (name.clone(), self.subscription_count(name)))
                .filter(|(_, n)| *n > 0)
                .collect(),
            ChannelQuery::Prefix(_) => self
                .subscription_counts(|c| query.matches(c))
                .into_iter()
                .collect(),
        }
    }

    fn hub(&self) -> Option<&Hub> {
        Some(self)
    }
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let hub = Hub::new();
        let metrics = Arc::new(Metrics::default());
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let mut bus_connections = None;
        // Which channels' broadcasts reach this node: on Redis, those its
        // sockets are subscribed to (the bus subscribes on demand).
        let mut feed: Arc<dyn BroadcastFeed> = Arc::new(LocalFeed);
        let presence_store: Arc<dyn PresenceStore>;
        let registry: Arc<dyn NodeRegistry>;
        // Cache channels' last events: in Redis beside the rooms, or here.
        let mut event_cache: Arc<dyn EventCache> = Arc::new(MemoryEventCache::default());
        // The Redis handle the app webhooks' store shares with the rooms.
        let mut redis_handle = None;
        let store: Arc<dyn Store> = match settings.redis_target() {
            Some(target) => {
                let delivery: Arc<dyn LocalDelivery> = Arc::new(hub.clone());
                let mut options = settings.redis.clone();
                options.bus_metrics = Arc::clone(&metrics.bus);
                // On Cluster a room's keys carry its channel's hash tag, so
                // its commit publishes in the same script (`store/redis.rs`).
                let naming = settings.naming.clone();
                options.room_channel =
                    RoomChannel::new(move |room| naming.session(room.as_str()).map(|s| s.channel));
                let redis = RedisStore::connect_to(&target, delivery, options)
                    .await
                    .context("invalid ROLLCALL_REDIS_URL / ROLLCALL_REDIS_CLUSTER")?;
                if let Err(e) = redis.ping().await {
                    tracing::warn!(error = %e, "Redis is not reachable yet; webhooks get 503 until it is");
                }
                match &target {
                    RedisTarget::Single(_) => {
                        tracing::info!(url = %target.redacted(), "state in Redis")
                    }
                    RedisTarget::Cluster(_) => {
                        tracing::info!(seeds = %target.redacted(), wait_replicas = settings.redis.wait_replicas, "state in a Redis Cluster")
                    }
                }
                redis_handle = Some(redis.redis().clone());
                let mut connections = redis.bus_connections();
                // The subscription `connect` waited for came before any
                // socket: nothing to re-send for it. A first subscription
                // that comes later (Redis was down) still counts as a gap.
                connections.borrow_and_update();
                bus_connections = Some(connections);
                feed = redis.feed();
                let presence = Arc::new(redis.presence());
                presence_store = presence.clone();
                registry = presence;
                let redis = Arc::new(redis);
                event_cache = Arc::clone(&redis) as Arc<dyn EventCache>;
                redis
            }
            None => {
                tracing::warn!(
                    "no ROLLCALL_REDIS_URL or ROLLCALL_REDIS_CLUSTER: using the embedded in-memory store — state is lost on restart and not shared between nodes; for trying rollcall and single-node development only"
                );
                let presence = Arc::new(MemoryPresence::new(Arc::new(hub.clone())));
                presence_store = presence.clone();
                registry = presence;
                Arc::new(MemoryStore::new(Arc::new(hub.clone())))
            }
        };
        if !settings.naming.channels_are_private() {
            tracing::warn!(
                "attendance goes to public channels: anyone with the app key can subscribe and read every roster; use a private template (ROLLCALL_CHANNEL_TEMPLATE=private-session.{{type}}.{{id}}) and authorise subscribers"
            );
        }
        if !settings.dev_defaults.is_empty() {
            tracing::warn!(
                defaults = ?settings.dev_defaults,
                "running with published development secrets; set real ones before exposing this server"
            );
        }
        let rooms = Rooms::new(
            Arc::clone(&store),
            settings.naming.clone(),
            settings.rules,
            Timing {
                heartbeat_timeout: settings.heartbeat_timeout,
                finalize_delay: settings.finalize_delay,
            },
            settings.report_webhook_url.is_some(),
            Arc::clone(&metrics),
        );
        // Random per process: a node that restarts is a new node, and its
        // predecessor's presence members and occupancy are removed by
        // whichever node finds its lease lapsed (`presence.rs`).
        let node_id = Presence::random_node_id();
        let node = node_id.to_string();
        tracing::info!(node = %node, "node id");
        let reporter = settings
            .report_webhook_url
            .clone()
            .map(|url| {
                Reporter::new(
                    url,
                    settings.app_secret.clone(),
                    rooms.clone(),
                    node.clone(),
                    tracker.clone(),
                    shutdown.clone(),
                )
            })
            .transpose()
            .context("cannot make the HTTPS client for ROLLCALL_REPORT_WEBHOOK_URL")?;
        let sweeper = Sweeper {
            rooms: rooms.clone(),
            reporter,
            node: node.clone(),
            interval: settings.sweep_interval,
        };
        tracker.spawn(sweeper.run(shutdown.clone()));
        let reconciler = match &settings.livekit_api {
            Some(api) => {
                let livekit = RoomService::new(
                    &api.url,
                    &api.api_key,
                    &api.api_secret,
                    crate::outbound::client(api.call_timeout)?,
                    api.call_timeout,
                )
                .context("invalid LIVEKIT_URL")?;
                tracing::info!(
                    url = %api.url,
                    interval = ?api.reconcile_interval,
                    "reconciling with LiveKit's RoomService"
                );
                let reconciler =
                    Reconciler::new(rooms.clone(), livekit, node.clone(), api.reconcile_interval);
                tracker.spawn(reconciler.clone().run(shutdown.clone()));
                Some(reconciler)
            }
            None => None,
        };
        // Client addresses and limits (issue 9): one set per node, shared by
        // the HTTP routes and the WebSocket endpoint.
        let limits = Arc::new(Limits::new(&settings.limits, Arc::clone(&metrics)));
        tracker.spawn(run_housekeeping(
            Arc::clone(&limits),
            HOUSEKEEPING_PERIOD,
            shutdown.clone(),
        ));
        let state = AppState {
            rooms: rooms.clone(),
            keys: Arc::new(settings.livekit_keys.clone()),
            metrics: Arc::clone(&metrics),
            hub: hub.clone(),
            store: Arc::clone(&store),
            presence: Arc::clone(&presence_store),
            app_secret: Arc::from(settings.app_secret.as_str()),
            pusher_app_id: Arc::from(settings.app_id.as_str()),
            pusher_app_key: Arc::from(settings.app_key.as_str()),
            limits: Arc::clone(&limits),
            reconciler,
            event_cache: Arc::clone(&event_cache),
        };
        let mut pusher_config = PusherConfig::new(&settings.app_key, &settings.app_secret);
        pusher_config.activity_timeout = settings.activity_timeout;
        pusher_config.pong_timeout = settings.pong_timeout;
        pusher_config.max_connections = settings.max_connections;
        pusher_config.write_timeout = settings.write_timeout;
        pusher_config.subscribe_rate = settings.rate_subscribes;
        pusher_config.client_events = settings.client_events;
        pusher_config.max_presence_members = settings.max_presence_members;
        pusher_config.signin_timeout = settings.signin_timeout;
        let snapshots = Arc::new(Snapshots::new(rooms));
        if let Some(connections) = bus_connections {
            tracker.spawn(resync_after_bus_gaps(
                connections,
                Arc::clone(&snapshots),
                Arc::clone(&presence_store),
                hub.clone(),
                shutdown.clone(),
            ));
        }
        let app_webhooks = match &settings.app_webhook_url {
            Some(url) => {
                let store = WebhookStore::connect(redis_handle.as_ref(), &settings.app_webhooks);
                let webhooks = AppWebhooks::start(
                    url.clone(),
                    &settings.app_key,
                    &settings.app_secret,
                    store,
                    &settings.app_webhooks,
                    Arc::clone(&metrics),
                    &tracker,
                    shutdown.clone(),
                )
                .context("cannot make the HTTPS client for ROLLCALL_APP_WEBHOOK_URL")?;
                // Occupancy is tracked only for webhooks: without a URL the
                // hub has no watcher and subscriptions cost nothing more.
                webhooks.track_occupancy(&hub, Arc::clone(&node_id), &tracker, shutdown.clone());
                tracing::info!(host = url.host_str().unwrap_or(""), hold = ?settings.app_webhooks.hold, "app webhooks on");
                Some(webhooks)
            }
            None => None,
        };
        let channel_events: Arc<dyn ChannelEvents> = match &app_webhooks {
            Some(w) => Arc::new(w.clone()),
            None => Arc::new(NoChannelEvents),
        };
        let mut presence = Presence::new(
            Arc::clone(&presence_store),
            registry,
            Arc::clone(&node_id),
            settings.max_presence_members,
        )
        .with_events(Arc::clone(&channel_events));
        if let Some(webhooks) = &app_webhooks {
            presence = presence.with_cleanup(Arc::new(webhooks.clone()));
        }
        let presence = Arc::new(presence);
        let quota = Arc::new(ConnectionQuota::new(settings.max_app_connections as u64));
        tracker.spawn(Arc::clone(&presence).run(
            hub.clone(),
            Arc::clone(&quota),
            settings.node_ttl,
            shutdown.clone(),
        ));
        let hook = CacheReplay::new(
            snapshots,
            Arc::clone(&event_cache),
            Arc::clone(&channel_events),
        );
        let mut pusher_state = PusherState::new(pusher_config, hub, Arc::new(hook));
        pusher_state.shutdown = shutdown.clone();
        pusher_state.tracker = tracker.clone();
        pusher_state.limits = limits;
        pusher_state.services = Arc::new(Services {
            client_events: Arc::new(CachingRelay::new(
                Arc::new(crate::client_events::StoreRelay(Arc::clone(&store))),
                event_cache,
            )),
            presence: presence.clone(),
            quota,
            channel_events,
            feed,
        });
        pusher_state.metrics = Arc::clone(&metrics);
        let budget = server::budget_for(&settings.http, Arc::clone(&metrics));
        pusher_state.budget = budget.clone();
        // Every response, the framework's own refusals included, leaves
        // through `harden`: the contract's JSON error body, security headers.
        // `observe` (outermost) times each request under its route template.
        let router = http::routes(state.clone())
            .merge(pusher::routes(pusher_state))
            .layer(axum::middleware::map_response(http::hardening::harden))
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(&metrics),
                http::observe::observe,
            ));
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.listen))?;
        Ok(Self {
            listener,
            router,
            shutdown,
            tracker,
            settings,
            state,
            budget,
            app_webhooks,
            node_id,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `signal` completes, then shuts down in order: stop
    /// accepting, close sockets with 4200, finish in-flight requests (so no
    /// acknowledged webhook is cut short), all within the shutdown timeout.
    pub async fn run_until(
        self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let addr = self.local_addr();
        tracing::info!(%addr, dashboard = %format!("http://{addr}/"), "rollcall listening");
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            signal.await;
            tracing::info!("shutting down: closing sockets with 4200, draining requests");
            shutdown.cancel();
        });
        let serve = server::serve(
            self.listener,
            self.router,
            self.settings.http,
            self.budget,
            Arc::clone(&self.state.metrics),
            self.shutdown.clone(),
        );
        let deadline = self.settings.shutdown_timeout;
        let served = tokio::spawn(serve);
        // Wait for the serve loop; after the signal, give it a bounded time.
        let result = tokio::select! {
            r = served => r.context("server task panicked"),
            _ = async { self.shutdown.cancelled().await; tokio::time::sleep(deadline).await } => {
                tracing::warn!("in-flight requests did not finish within {deadline:?}; exiting anyway");
                Ok(())
            }
        };
        self.tracker.close();
        if tokio::time::timeout(deadline, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("sockets did not close within {deadline:?}; exiting anyway");
        }
        tracing::info!("rollcall stopped");
        result
    }
}

/// While the bus was disconnected, broadcasts may have been missed; after
/// every (re)connection, every local subscriber is re-sent its channel's
/// snapshot, so no page stays stale. (After the first there is usually
/// nobody to re-send to; when Redis was down at startup there may be.)
/// A presence channel's subscribers, who may have missed `member_added` /
/// `member_removed`, are re-sent `subscription_succeeded` with the members
/// now: pusher-js replaces its member list with it (and Echo's `here` runs
/// again), so nobody stays on screen who left meanwhile.
async fn resync_after_bus_gaps(
    mut connections: tokio::sync::watch::Receiver<u64>,
    snapshots: Arc<Snapshots>,
    presence: Arc<dyn PresenceStore>,
    hub: Hub,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = connections.changed() => if changed.is_err() { return },
        }
        connections.borrow_and_update();
        let channels = hub.channel_names();
        tracing::info!(
            channels = channels.len(),
            "bus reconnected: re-sending snapshots"
        );
        for channel in channels {
            resync_channel(&channel, &snapshots, &*presence, &hub).await;
        }
    }
}

/// Tries before a channel's re-sent state goes out even though updates
/// keep arriving while it is read.
const RESYNC_ATTEMPTS: usize = 5;

/// Re-sends one channel's state (presence members, attendance snapshot) to
/// its local subscribers. An update published while the state was being
/// read may be newer than what was read, and the state must not follow it
/// (the page would step back): then it is read again, and only after
/// `RESYNC_ATTEMPTS` is it sent anyway.
async fn resync_channel(
    channel: &str,
    snapshots: &Snapshots,
    presence: &dyn PresenceStore,
    hub: &Hub,
) {
    for attempt in 1..=RESYNC_ATTEMPTS {
        let Some(since) = hub.published(channel) else {
            return; // its last subscriber left meanwhile
        };
        let mut frames = Vec::new();
        if channel.starts_with("presence-") {
            match presence.members(channel).await {
                Ok(members) => {
                    let data = crate::pusher::presence::subscription_data(&members);
                    frames.push(crate::pusher::frame::subscription_succeeded(channel, &data));
                }
                Err(e) => {
                    tracing::warn!(channel, error = %e, "cannot re-send a presence channel's members")
                }
            }
        }
        frames.extend(snapshots.frames(channel).await);
        if hub.publish_unless_published_since(channel, &frames, since) {
            return;
        }
        if attempt == RESYNC_ATTEMPTS {
            tracing::warn!(
                channel,
                "updates kept arriving while its state was re-read; re-sent anyway"
            );
            for frame in frames {
                hub.publish(channel, frame, None);
            }
        }
    }
}
