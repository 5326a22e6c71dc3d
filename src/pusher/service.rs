//! The Pusher WebSocket endpoint: configuration, shared state, the
//! `GET /app/{app_key}` route and the checks made before a connection is
//! admitted.
//!
//! axum's graceful shutdown does not wait for upgraded sockets, so every
//! socket task is tracked by the state's `tracker` and watches its
//! `shutdown` token; the `PusherState::shutdown()` method cancels the token
//! (every socket closes with 4200) and waits for the tasks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::FutureExt;
use futures_util::future::{Either, ready};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::channel::{ChannelName, SocketId};
use super::frame::{self, code};
use super::hub::{Halt, Hub};
use super::socket;
use crate::channel_events::{ChannelEvents, NoChannelEvents};
use crate::config::Rate;
use crate::http::client_ip::{ClientIp, TrustedProxies};
use crate::http::error::AppError;
use crate::limits::{Limits, TooManyFromAddress};
use crate::metrics::Metrics;
use crate::server::ConnectionBudget;

/// Settings of the Pusher endpoint.
#[derive(Debug, Clone)]
pub struct PusherConfig {
    /// The only app key accepted in `/app/{app_key}`.
    pub app_key: String,
    /// Signs private-channel subscriptions.
    pub app_secret: String,
    /// Silence after which the server pings a client; announced to clients
    /// in `connection_established` (whole seconds, rounded up).
    pub activity_timeout: Duration,
    /// How long a pinged client has to show any sign of life before it is
    /// closed with 4201.
    pub pong_timeout: Duration,
    /// Largest client message accepted. A larger one gets a `pusher:error`
    /// and a 4100 close; tungstenite itself stops reading at twice this (so
    /// a much larger message is never buffered whole), and messages in
    /// between are read whole so the close handshake stays clean.
    pub max_message_bytes: usize,
    /// Frames queued per socket before it counts as a slow consumer.
    pub outbound_queue: usize,
    /// Connections accepted at once on this node; more are closed with 4100.
    pub max_connections: usize,
    /// Channels one connection may be subscribed to at once.
    pub max_channels_per_socket: usize,
    /// A write to a socket that makes no progress for this long ends it
    /// (`ROLLCALL_WRITE_TIMEOUT`): the client stopped reading.
    pub write_timeout: Duration,
    /// Subscribe/unsubscribe requests allowed per socket, in a burst of up
    /// to `count` (`ROLLCALL_RATE_SUBSCRIBES`); `None`: unlimited. Over it:
    /// 4301.
    pub subscribe_rate: Option<Rate>,
    /// Whether subscribers of private channels may send `client-*` events
    /// to the channel's other subscribers (`ROLLCALL_CLIENT_EVENTS`).
    pub client_events: bool,
    /// Users one presence channel may have (`ROLLCALL_MAX_PRESENCE_MEMBERS`,
    /// Pusher's 100 by default).
    pub max_presence_members: usize,
    /// A connection that has not signed in (`pusher:signin`) within this
    /// gets a 4009 error and close (`ROLLCALL_SIGNIN_TIMEOUT`); `None`: no
    /// limit.
    pub signin_timeout: Option<Duration>,
}

impl PusherConfig {
    /// Defaults from PROTOCOLS.md / Pusher's limits, with these credentials.
    pub fn new(app_key: impl Into<String>, app_secret: impl Into<String>) -> Self {
        Self {
            app_key: app_key.into(),
            app_secret: app_secret.into(),
            activity_timeout: Duration::from_secs(120),
            pong_timeout: Duration::from_secs(30),
            max_message_bytes: 10 * 1024,
            outbound_queue: 512,
            max_connections: 10_000,
            max_channels_per_socket: 100,
            write_timeout: Duration::from_secs(30),
            // pusher-js re-subscribes to all its channels (at most
            // `max_channels_per_socket`) at once after a reconnect.
            subscribe_rate: Some(Rate {
                count: 100,
                per: Duration::from_secs(10),
            }),
            client_events: false,
            max_presence_members: 100,
            signin_timeout: None,
        }
    }
}

/// Frames to send a socket right after it subscribed to a channel, after
/// `subscription_succeeded` and before any update published since.
#[async_trait]
pub trait SubscribeHook: Send + Sync + 'static {
    /// Frames for a socket that just subscribed to `channel` (rollcall sends
    /// an `attendance.snapshot` here).
    async fn after_subscribe(&self, channel: &ChannelName) -> Vec<Utf8Bytes>;
}

/// A hook that sends nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHook;

#[async_trait]
impl SubscribeHook for NoHook {
    async fn after_subscribe(&self, _channel: &ChannelName) -> Vec<Utf8Bytes> {
        Vec::new()
    }
}

/// Where a client event goes: to the channel's subscribers on every node,
/// except the socket that sent it.
#[async_trait]
pub trait ClientEventRelay: Send + Sync + 'static {
    /// `false` when it could not be handed on (the store is down).
    async fn relay(&self, channel: &ChannelName, frame: Utf8Bytes, sender: &SocketId) -> bool;
}

/// The app's connection quota across every node
/// (`ROLLCALL_MAX_APP_CONNECTIONS`): this node's own count is exact; the
/// other nodes' is their figure at this node's last lease renewal, so the
/// quota can be overshot by what the cluster accepts within one renewal
/// period.
#[derive(Debug, Default)]
pub struct ConnectionQuota {
    /// 0: no quota.
    pub max: u64,
    /// Connections on other nodes, as of the last renewal.
    pub elsewhere: std::sync::atomic::AtomicU64,
    /// This node's lease lapsed and it is cleaning up after itself: it
    /// admits no connection until it is registered again (4100: clients
    /// back off, maybe to another node).
    pub recovering: std::sync::atomic::AtomicBool,
}

impl ConnectionQuota {
    pub fn new(max: u64) -> Self {
        Self {
            max,
            elsewhere: Default::default(),
            recovering: Default::default(),
        }
    }

    /// Whether `local` connections here (the new one included) fit.
    fn admits(&self, local: usize) -> bool {
        self.max == 0 || self.elsewhere.load(Ordering::Relaxed) + local as u64 <= self.max
    }
}

/// Why a presence subscription was not joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinRefusal {
    /// The channel has its maximum of members (Pusher's 100 by default).
    Full { max_members: usize },
    /// The store could not record it: try again later.
    Unavailable,
}

/// Presence channels' membership, cluster-wide. Implemented by
/// `crate::presence::Presence` (store-backed); the pusher module only asks.
#[async_trait]
pub trait PresenceService: Send + Sync + 'static {
    /// Joins `socket` to `channel` as `member`; every member now (user id,
    /// `user_info` JSON), in id order. Announces a new member to the
    /// channel's other subscribers. Joining again is a no-op that returns
    /// the list. After `Unavailable` the join may or may not have been
    /// recorded: the caller leaves.
    async fn join(
        &self,
        channel: &ChannelName,
        socket: &SocketId,
        member: &super::presence::PresenceMember,
    ) -> Result<Vec<(String, String)>, JoinRefusal>;

    /// Removes `socket`'s connection from `channel` (its user leaves with
    /// their last connection). Never fails: a leave the store cannot take
    /// now is retried until it can.
    async fn leave(&self, channel: &ChannelName, socket: &SocketId);
}

/// This node's subscription to other nodes' broadcasts of a channel. With a
/// shared store a node hears a channel's broadcasts only while it has local
/// subscribers of it; the subscribe path asks for it after registering the
/// socket in the hub and before reading the snapshot (or presence members),
/// so no update committed after that read can pass this node by.
#[async_trait]
pub trait BroadcastFeed: Send + Sync + 'static {
    /// Returns once broadcasts of `channel` published from now on reach
    /// this node's hub (the caller's socket is already registered there).
    /// Bounded: when the store is down it returns after a while anyway, and
    /// the feed then treats the confirmation, whenever it comes, as a gap
    /// (local subscribers are re-sent snapshots), as after a reconnection.
    async fn ready(&self, channel: &str);
}

/// One node on its own: every broadcast is already local.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalFeed;

#[async_trait]
impl BroadcastFeed for LocalFeed {
    async fn ready(&self, _channel: &str) {}
}

/// This node's subscribers only: for a single node without a store.
#[async_trait]
impl ClientEventRelay for Hub {
    async fn relay(&self, channel: &ChannelName, frame: Utf8Bytes, sender: &SocketId) -> bool {
        self.publish(channel.as_str(), frame, Some(sender));
        true
    }
}

/// Everything the endpoint shares between connections. Cheap to clone.
#[derive(Clone)]
pub struct PusherState {
    /// Endpoint settings.
    pub config: Arc<PusherConfig>,
    /// Local channel → sockets registry; publishers hold a clone.
    pub hub: Hub,
    /// Produces the frames sent after a subscription (the snapshot).
    pub hook: Arc<dyn SubscribeHook>,
    /// Cancelled to close every socket with 4200 (restart/shutdown).
    pub shutdown: CancellationToken,
    /// Tracks every socket task, from the upgrade to the end of the close
    /// handshake, so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// Connections currently admitted (gauge, bounded by
    /// `max_connections`).
    pub connections: Arc<AtomicUsize>,
    /// Counters (the application's, shared with `/metrics`).
    pub metrics: Arc<Metrics>,
    /// Open sockets against the descriptor limit: upgrades stop at the
    /// reserve kept for plain HTTP (`server::budget`).
    pub budget: ConnectionBudget,
    /// Starts, once, the task that relays `shutdown` to every socket's
    /// outbox (sockets do not each watch the shared token: polling it takes
    /// its lock, on every wake-up of every socket).
    relay: Arc<Once>,
    /// Client addresses, origins and per-address connection limits (off
    /// unless the application sets them).
    pub limits: Arc<Limits>,
    /// What the protocol asks of the application, behind one pointer:
    /// every socket's task holds a `PusherState`, so each field here would
    /// cost every idle socket a word or two.
    pub services: Arc<Services>,
}

/// The application's side of the protocol's cluster-wide features.
pub struct Services {
    /// Delivers client events (the application's: through the store).
    pub client_events: Arc<dyn ClientEventRelay>,
    /// Presence channels' members (in memory unless the application
    /// shares them through the store).
    pub presence: Arc<dyn PresenceService>,
    /// The app's connection quota across nodes (off unless set).
    pub quota: Arc<ConnectionQuota>,
    /// Where channel events go for the app's webhooks (`AppWebhooks` when
    /// `ROLLCALL_APP_WEBHOOK_URL` is set, else nowhere).
    pub channel_events: Arc<dyn ChannelEvents>,
    /// This node's subscription to channels' broadcasts (the Redis bus;
    /// `LocalFeed` on one node).
    pub feed: Arc<dyn BroadcastFeed>,
}

impl Services {
    /// One node on its own: client events to local subscribers, presence
    /// in memory, no quota, no webhooks.
    pub fn local(hub: &Hub, max_presence_members: usize) -> Self {
        let presence_store = Arc::new(crate::store::presence::MemoryPresence::new(Arc::new(
            hub.clone(),
        )));
        Self {
            client_events: Arc::new(hub.clone()),
            presence: Arc::new(crate::presence::Presence::new(
                presence_store.clone(),
                presence_store,
                crate::presence::Presence::random_node_id(),
                max_presence_members,
            )),
            quota: Arc::new(ConnectionQuota::default()),
            channel_events: Arc::new(NoChannelEvents),
            feed: Arc::new(LocalFeed),
        }
    }
}

/// `ClientIp` reads the trusted proxies from here.
impl axum::extract::FromRef<PusherState> for Arc<TrustedProxies> {
    fn from_ref(state: &PusherState) -> Self {
        Arc::clone(&state.limits.trusted_proxies)
    }
}

impl PusherState {
    /// State with a fresh shutdown token and tracker; replace those fields to
    /// share the application's.
    pub fn new(config: PusherConfig, hub: Hub, hook: Arc<dyn SubscribeHook>) -> Self {
        let services = Arc::new(Services::local(&hub, config.max_presence_members));
        Self {
            config: Arc::new(config),
            services,
            hub,
            hook,
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            connections: Arc::new(AtomicUsize::new(0)),
            metrics: Arc::new(Metrics::default()),
            budget: ConnectionBudget::unlimited(),
            relay: Arc::new(Once::new()),
            limits: Arc::new(Limits::off()),
        }
    }

    /// Spawns (once, from inside the runtime) the task that halts every
    /// socket when `shutdown` is cancelled. `socket::serve` checks the token
    /// after registering, for sockets that register after the sweep.
    fn relay_shutdown(&self) {
        self.relay.call_once(|| {
            let (hub, token) = (self.hub.clone(), self.shutdown.clone());
            tokio::spawn(async move {
                token.cancelled().await;
                hub.halt_all(Halt::Shutdown);
            });
        });
    }

    /// Connections currently open.
    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Closes every socket with 4200 and waits until all socket tasks have
    /// finished. New upgrades after this are refused with 4200.
    pub async fn shutdown(&self) {
        self.shutdown.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// The router serving `GET /app/{app_key}` (WebSocket upgrade).
pub fn routes(state: PusherState) -> Router {
    Router::new()
        .route("/app/{app_key}", get(upgrade))
        .with_state(state)
}

/// One admitted connection; dropping it frees the slot.
struct ConnectionSlot(Arc<AtomicUsize>);

impl ConnectionSlot {
    fn acquire(gauge: &Arc<AtomicUsize>, max: usize) -> Option<Self> {
        gauge
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Self(gauge.clone()))
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why a connection is refused: the Pusher code and message, sent as a
/// `pusher:error` and then as the close frame (pusher-js acts on the close
/// code; browsers only see a close code after the upgrade, hence upgrading
/// refused connections too). Messages double as close reasons, so they stay
/// well under the 123-byte limit and never echo client input.
fn admission_error(
    state: &PusherState,
    app_key: &str,
    query: &HashMap<String, String>,
) -> Option<(u16, String)> {
    if app_key != state.config.app_key {
        return Some((code::UNKNOWN_APP, "unknown app key".to_owned()));
    }
    let Some(protocol) = query.get("protocol") else {
        return Some((code::NO_PROTOCOL, "no protocol version supplied".to_owned()));
    };
    let Ok(protocol) = protocol.parse::<u32>() else {
        return Some((
            code::INVALID_PROTOCOL_FORMAT,
            "invalid protocol version format".to_owned(),
        ));
    };
    if !(5..=7).contains(&protocol) {
        return Some((
            code::UNSUPPORTED_PROTOCOL,
            format!("unsupported protocol version {protocol}"),
        ));
    }
    if state.shutdown.is_cancelled() {
        return Some((code::RECONNECT, "server restarting".to_owned()));
    }
    None
}

/// Per-socket read buffer, zero-filled and so resident whole on every
/// socket. Pusher client frames (subscribe with auth, ping) are a few
/// hundred bytes; a larger frame (up to `max_message_bytes`) makes
/// tungstenite reserve room for the whole frame, so this is only the read
/// chunk, not a limit.
const READ_BUFFER_BYTES: usize = 512;

/// Bytes tungstenite gathers before writing to the socket: `write_all`
/// feeds a whole batch of queued frames and flushes once, so this many bytes
/// go out per syscall under load. The buffer keeps its capacity afterwards,
/// which bounds what a socket retains after a burst.
const WRITE_BUFFER_BYTES: usize = 8 * 1024;

/// Largest frame rollcall sends (a snapshot of a very large room; Pusher
/// HTTP API events are at most 10 KiB of data).
const MAX_OUTBOUND_FRAME_BYTES: usize = 4 * 1024 * 1024;

/// The most tungstenite may hold for one socket. Our writes never take it
/// past `WRITE_BUFFER_BYTES` plus one frame of at most `FRAGMENT_BYTES`
/// (`socket.rs` waits for a flush before feeding more), so this bounds
/// what *tungstenite* queues on its own: pongs for a client's pings and the
/// close reply. Past it, the pong
/// waits in tungstenite's single control-frame slot (a newer pong replaces
/// it) instead of piling up (256 MiB of pings from a client that did not
/// read cost +245 MB before this).
const MAX_WRITE_BUFFER_BYTES: usize = WRITE_BUFFER_BYTES + MAX_OUTBOUND_FRAME_BYTES;

/// The fragment size of large outgoing messages: a message longer than this
/// is sent as a fragmented message (RFC 6455 §5.4) of frames of at most
/// this many payload bytes (`socket.rs`), so tungstenite's write buffer,
/// which keeps the capacity of the largest frame it ever formatted, stays
/// within about two fragments instead of growing to the largest snapshot
/// the socket was ever sent.
pub(super) const FRAGMENT_BYTES: usize = WRITE_BUFFER_BYTES;

/// The upgraded connection a socket task owns.
pub(super) type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// The WebSocket handshake's checks (RFC 6455 §4.2.1), as axum's
/// `WebSocketUpgrade` made them: `Connection: upgrade`, `Upgrade:
/// websocket` and a `Sec-WebSocket-Key` (400 otherwise), and
/// `Sec-WebSocket-Version: 13` (426 otherwise); the route only answers GET.
/// Returns the `Sec-WebSocket-Accept` value.
fn handshake(headers: &HeaderMap) -> Result<HeaderValue, AppError> {
    let refuse = |message: &str| AppError::bad_request("bad_request", message);
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    if !connection_upgrade {
        return Err(refuse(
            "a WebSocket endpoint: the request needs `Connection: upgrade`",
        ));
    }
    let is = |name, expected: &str| {
        headers.get(name).is_some_and(|value: &HeaderValue| {
            value.as_bytes().eq_ignore_ascii_case(expected.as_bytes())
        })
    };
    if !is(header::UPGRADE, "websocket") {
        return Err(refuse(
            "a WebSocket endpoint: the request needs `Upgrade: websocket`",
        ));
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return Err(refuse("the request needs a Sec-WebSocket-Key"));
    };
    if !is(header::SEC_WEBSOCKET_VERSION, "13") {
        return Err(AppError::new(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade_required",
            "unsupported WebSocket version: this server speaks version 13",
        ));
    }
    Ok(HeaderValue::from_str(&derive_accept_key(key.as_bytes()))
        .expect("base64 is a valid header value"))
}

/// The `101 Switching Protocols` answer to a valid handshake.
fn switching_protocols(accept: HeaderValue) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    response
}

async fn upgrade(
    State(state): State<PusherState>,
    client: ClientIp,
    Path(app_key): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    mut request: Request,
) -> Response {
    // Our own handshake rather than axum's `WebSocketUpgrade`: axum's
    // `WebSocket` cannot send raw frames, which fragmenting large messages
    // needs (`FRAGMENT_BYTES`).
    let accept = match handshake(request.headers()) {
        Ok(accept) => accept,
        Err(refusal) => {
            let version = refusal.status == StatusCode::UPGRADE_REQUIRED;
            let mut response = refusal.into_response();
            if version {
                // RFC 6455 §4.4: the 426 names the versions we speak.
                response.headers_mut().insert(
                    header::SEC_WEBSOCKET_VERSION,
                    HeaderValue::from_static("13"),
                );
            }
            return response;
        }
    };
    let Some(on_upgrade) = request.extensions_mut().remove::<OnUpgrade>() else {
        return AppError::new(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade_required",
            "this connection cannot be upgraded",
        )
        .into_response();
    };
    let headers = request.headers();
    // A page of a site not in ROLLCALL_ALLOWED_ORIGINS: refused before
    // upgrading, with the contract's 403 JSON.
    if let Err(refusal) = state.limits.origin_allowed(headers) {
        return refusal.into_response();
    }
    // See `PusherConfig::max_message_bytes`.
    let limit = state.config.max_message_bytes.saturating_mul(2);
    state.relay_shutdown();
    // tungstenite's default 128 KiB read buffer is touched per socket
    // (~138 KiB RSS each, measured by `make bench` B2); see
    // `READ_BUFFER_BYTES`.
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_write_buffer_size(MAX_WRITE_BUFFER_BYTES)
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit));
    // Taken before the upgrade completes so `tracker.wait()` also covers
    // sockets between the 101 response and the start of their task.
    let tracked = state.tracker.token();

    let admitted = match admission_error(&state, &app_key, &query) {
        Some(refusal) => Err(refusal),
        // The descriptor reserve is for health checks and webhooks.
        None if !state.budget.admit_websocket() => {
            Err((code::OVER_CAPACITY, "over capacity".to_owned()))
        }
        None => ConnectionSlot::acquire(&state.connections, state.config.max_connections)
            .ok_or((code::OVER_CAPACITY, "over capacity".to_owned())),
    };
    // The app's quota across nodes: 4004, after which pusher-js stops
    // retrying (a node's own capacity is 4100: try again, maybe elsewhere).
    let admitted = admitted.and_then(|slot| {
        if state.services.quota.recovering.load(Ordering::Relaxed) {
            Err((code::OVER_CAPACITY, "node recovering; try again".to_owned()))
        } else if state.services.quota.admits(state.connection_count()) {
            Ok(slot)
        } else {
            Err((
                code::OVER_QUOTA,
                "over the app's connection quota".to_owned(),
            ))
        }
    });
    // ROLLCALL_MAX_CONNECTIONS_PER_IP: refused as over capacity is; the
    // per-address slot, like the node's, lives as long as the connection.
    let admitted = admitted.and_then(|slot| match state.limits.connection_slot(client.0) {
        Ok(per_ip) => Ok((slot, per_ip)),
        Err(TooManyFromAddress) => Err((
            code::OVER_CAPACITY,
            "too many connections from your address".to_owned(),
        )),
    });
    // The task is a chain of `then`s rather than an `async` block: each step
    // consumes what it captured, so the long-lived socket future does not
    // sit next to moved-from copies of the upgrade's state (the state, the
    // slots, the config) for the socket's whole life.
    let task = on_upgrade.then(move |upgraded| match upgraded {
        Err(err) => {
            tracing::debug!(%err, "websocket upgrade failed");
            drop(tracked);
            Either::Left(ready(()))
        }
        Ok(upgraded) => Either::Right(
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .then(move |ws| match admitted {
                    // The slot lives as long as the connection.
                    Ok(slot) => Either::Left(socket::serve(ws, state, (slot, tracked))),
                    Err((code, message)) => {
                        tracing::debug!(code, message, "refusing pusher connection");
                        let error = frame::error(Some(code), &message);
                        let close = socket::close_boxed(ws, Some(error), code, message);
                        Either::Right(close.map(move |()| drop(tracked)))
                    }
                }),
        ),
    });
    tokio::spawn(task);
    switching_protocols(accept)
}
