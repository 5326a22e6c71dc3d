//! Process-wide counters, rendered as Prometheus text at `/metrics`.
//! Plain atomics: incrementing one costs a relaxed add on the hot path.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// What happened to a webhook; one counter each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookOutcome {
    Applied,
    Duplicate,
    Ignored,
    Unauthorized,
    Malformed,
    TooLarge,
    StoreUnavailable,
}

impl WebhookOutcome {
    const ALL: [WebhookOutcome; 7] = [
        Self::Applied,
        Self::Duplicate,
        Self::Ignored,
        Self::Unauthorized,
        Self::Malformed,
        Self::TooLarge,
        Self::StoreUnavailable,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Duplicate => "duplicate",
            Self::Ignored => "ignored",
            Self::Unauthorized => "unauthorized",
            Self::Malformed => "malformed",
            Self::TooLarge => "too_large",
            Self::StoreUnavailable => "store_unavailable",
        }
    }
}

// --- Limits (issue 9) ---
/// Which rate limit refused a request (`rollcall_rate_limited_total{limit}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimit {
    Heartbeats,
    AuthFailures,
    Webhooks,
    /// Subscribe/unsubscribe requests of one socket (then closed 4301).
    Subscribes,
}

impl RateLimit {
    const ALL: [RateLimit; 4] = [
        Self::Heartbeats,
        Self::AuthFailures,
        Self::Webhooks,
        Self::Subscribes,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::Heartbeats => "heartbeats",
            Self::AuthFailures => "auth_failures",
            Self::Webhooks => "webhooks",
            Self::Subscribes => "subscribes",
        }
    }
}

// --- WebSocket hardening (issue 9) ---
/// Why the server ended a Pusher socket; `rollcall_ws_closed_total{reason}`.
/// (Shutdown's 4200 and the client's own closes are not counted.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsClose {
    /// Pings kept coming while their pongs could not be written.
    PingFlood,
    /// A write made no progress for `ROLLCALL_WRITE_TIMEOUT`.
    WriteTimeout,
    /// No sign of life within `ROLLCALL_PONG_TIMEOUT` of our ping (4201).
    PongTimeout,
    /// The outbound queue overflowed (4100).
    SlowConsumer,
    /// A client message over the size limit (4100).
    TooLarge,
    /// Subscribe/unsubscribe requests over `ROLLCALL_RATE_SUBSCRIBES` (4301).
    SubscribeRate,
    /// More than 10 client events a second (4301).
    ClientEventRate,
}

impl WsClose {
    const ALL: [WsClose; 7] = [
        Self::PingFlood,
        Self::WriteTimeout,
        Self::PongTimeout,
        Self::SlowConsumer,
        Self::TooLarge,
        Self::SubscribeRate,
        Self::ClientEventRate,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::PingFlood => "ping_flood",
            Self::WriteTimeout => "write_timeout",
            Self::PongTimeout => "pong_timeout",
            Self::SlowConsumer => "slow_consumer",
            Self::TooLarge => "too_large",
            Self::SubscribeRate => "subscribe_rate",
            Self::ClientEventRate => "client_event_rate",
        }
    }
}

/// Why a WebSocket connection was refused
/// (`rollcall_connections_refused_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionRefusal {
    /// `ROLLCALL_MAX_CONNECTIONS_PER_IP` reached for the client address.
    PerIp,
    /// `Origin` not in `ROLLCALL_ALLOWED_ORIGINS`.
    Origin,
    /// `ROLLCALL_MAX_HTTP_CONNECTIONS` reached (503).
    HttpCap,
    /// `ROLLCALL_MAX_HTTP_CONNECTIONS_PER_IP` reached (503).
    HttpPerIp,
    /// A WebSocket upgrade within `ROLLCALL_FD_RESERVE` of the descriptor
    /// limit (4100).
    FdReserve,
}

impl ConnectionRefusal {
    const ALL: [ConnectionRefusal; 5] = [
        Self::PerIp,
        Self::Origin,
        Self::HttpCap,
        Self::HttpPerIp,
        Self::FdReserve,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::PerIp => "per_ip",
            Self::Origin => "origin",
            Self::HttpCap => "http_cap",
            Self::HttpPerIp => "http_per_ip",
            Self::FdReserve => "fd_reserve",
        }
    }
}

/// Counters of the WebSocket bounds.
#[derive(Debug, Default)]
pub struct WsMetrics {
    closed: [AtomicU64; 7],
}

impl WsMetrics {
    pub fn closed(&self, why: WsClose) {
        self.closed[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn closed_count(&self, why: WsClose) -> u64 {
        self.closed[why as usize].load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String) {
        labelled_counter(
            out,
            "rollcall_ws_closed_total",
            "Pusher sockets the server ended, by reason.",
            "reason",
            WsClose::ALL.map(|why| (why.label(), self.closed_count(why))),
        );
    }
}
// --- end WebSocket hardening ---

#[derive(Debug, Default)]
pub struct Metrics {
    webhooks: [AtomicU64; 7],
    /// Webhooks whose room name did not match the room pattern (rule 1).
    pub rooms_unmatched: AtomicU64,
    /// `attendance.updated` frames published (once per change, not per socket).
    pub attendance_updates: AtomicU64,
    /// Optimistic commits retried because another writer got there first.
    pub commit_conflicts: AtomicU64,
    /// Heartbeats answered `in_meeting: true` (recorded).
    pub heartbeats_recorded: AtomicU64,
    /// Heartbeats answered `in_meeting: false` (nothing recorded, rule 12).
    pub heartbeats_ignored: AtomicU64,
    /// Cycles the sweeper closed for want of heartbeats (rule 13).
    pub stale_cycles_closed: AtomicU64,
    /// Sessions the sweeper made final (rule 20).
    pub finalizations: AtomicU64,
    /// Final reports the receiver accepted.
    pub reports_delivered: AtomicU64,
    /// Report attempts that failed (each is retried with backoff).
    pub report_failures: AtomicU64,
    /// Messages published through the Pusher HTTP API (one per event and
    /// channel, not per socket).
    pub api_messages_published: AtomicU64,
    /// App webhook events (`ROLLCALL_APP_WEBHOOK_URL`) the receiver accepted.
    pub app_webhooks_delivered: AtomicU64,
    /// App webhook events whose request failed, scheduled again (one per
    /// event and failed request).
    pub app_webhooks_retried: AtomicU64,
    /// App webhook events dropped undelivered after the expiry.
    pub app_webhooks_expired: AtomicU64,
    /// App webhook events never queued: the queue full, the store down, or
    /// too large.
    pub app_webhooks_refused: AtomicU64,
    /// Requests refused by a rate limit, by `RateLimit`.
    rate_limited: [AtomicU64; 4],
    /// WebSocket connections refused, by `ConnectionRefusal`.
    connections_refused: [AtomicU64; 5],
    /// WebSocket bounds (issue 9).
    pub ws: WsMetrics,
    /// The HTTP connection layer (`src/server`): see `render_connections`.
    connections: ConnectionCounters,
    /// New rooms whose channel another room already feeds.
    pub channel_collisions: AtomicU64,
    /// Reconciliation passes over every live room (rule 23).
    pub reconcile_passes: AtomicU64,
    /// Listings made: rooms whose participants were listed, or found gone.
    pub reconcile_listings: AtomicU64,
    /// Rooms a listing changed.
    pub reconcile_rooms_changed: AtomicU64,
    /// When this node last finished a pass over every live room (Unix ms;
    /// 0: never). Rendered as an age, and only once there is one: the node
    /// holding the lease is the one that reports it, so an alert takes the
    /// minimum across nodes.
    pub reconcile_last_success_ms: AtomicU64,
    /// Cycles opened from a listing (rule 24) and closed by one (rule 25).
    pub reconcile_opened: AtomicU64,
    pub reconcile_closed: AtomicU64,
    /// Failed RoomService calls, by `RECONCILE_ERRORS` kind.
    reconcile_errors: [AtomicU64; 7],
    /// Requests by route: latency histograms and status classes.
    pub http: crate::http_metrics::HttpMetrics,
    /// The Redis bus (`store/bus.rs`), shared with it.
    pub bus: Arc<BusMetrics>,
}

/// What this node's Redis bus hears: the figure subscribe-on-demand keeps
/// proportional to what the node serves.
#[derive(Debug, Default)]
pub struct BusMetrics {
    /// Broadcasts the bus received (frames and halts, before local
    /// delivery; channel queries not included).
    pub received: AtomicU64,
    /// Per-channel subscriptions Redis confirmed on the current connection.
    pub subscriptions: AtomicU64,
    /// Times the bus connected and resubscribed (the first included).
    pub connections: AtomicU64,
}

impl BusMetrics {
    fn render(&self, out: &mut String) {
        let name = "rollcall_bus_broadcasts_received_total";
        let _ = writeln!(
            out,
            "# HELP {name} Broadcasts this node's Redis bus received (only channels it has subscribers of)."
        );
        let _ = writeln!(out, "# TYPE {name} counter");
        let _ = writeln!(out, "{name} {}", self.received.load(Ordering::Relaxed));
        let name = "rollcall_bus_connections_total";
        let _ = writeln!(
            out,
            "# HELP {name} Times this node's Redis bus connected and resubscribed (a reconnection re-sends snapshots)."
        );
        let _ = writeln!(out, "# TYPE {name} counter");
        let _ = writeln!(out, "{name} {}", self.connections.load(Ordering::Relaxed));
        let name = "rollcall_bus_subscriptions";
        let _ = writeln!(
            out,
            "# HELP {name} Channels this node's Redis bus is subscribed to."
        );
        let _ = writeln!(out, "# TYPE {name} gauge");
        let _ = writeln!(out, "{name} {}", self.subscriptions.load(Ordering::Relaxed));
    }
}

/// Kinds of failed RoomService calls (`rollcall_livekit_errors_total{kind}`);
/// an unknown kind counts as `other`.
pub const RECONCILE_ERRORS: [&str; 7] = [
    "timeout",
    "connect",
    "transport",
    "twirp",
    "malformed",
    "too_large",
    "other",
];

/// Gauges read at render time from their owners.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    pub connections: usize,
    pub channels: usize,
}

impl Metrics {
    pub fn webhook(&self, outcome: WebhookOutcome) {
        self.webhooks[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn webhook_count(&self, outcome: WebhookOutcome) -> u64 {
        self.webhooks[outcome as usize].load(Ordering::Relaxed)
    }

    pub fn rate_limited(&self, limit: RateLimit) {
        self.rate_limited[limit as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn rate_limited_count(&self, limit: RateLimit) -> u64 {
        self.rate_limited[limit as usize].load(Ordering::Relaxed)
    }

    pub fn reconcile_error(&self, kind: &str) {
        let i = RECONCILE_ERRORS
            .iter()
            .position(|k| *k == kind)
            .unwrap_or(RECONCILE_ERRORS.len() - 1);
        self.reconcile_errors[i].fetch_add(1, Ordering::Relaxed);
    }

    pub fn reconcile_error_count(&self, kind: &str) -> u64 {
        RECONCILE_ERRORS
            .iter()
            .position(|k| *k == kind)
            .map_or(0, |i| self.reconcile_errors[i].load(Ordering::Relaxed))
    }

    pub fn connection_refused(&self, reason: ConnectionRefusal) {
        self.connections_refused[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn connections_refused_count(&self, reason: ConnectionRefusal) -> u64 {
        self.connections_refused[reason as usize].load(Ordering::Relaxed)
    }

    /// The limit families (issue 9), one line per label.
    fn render_limits(&self, out: &mut String) {
        labelled_counter(
            out,
            "rollcall_rate_limited_total",
            "Requests refused with 429 by a rate limit.",
            "limit",
            RateLimit::ALL.map(|limit| (limit.label(), self.rate_limited_count(limit))),
        );
        labelled_counter(
            out,
            "rollcall_connections_refused_total",
            "Connections refused, by reason.",
            "reason",
            ConnectionRefusal::ALL
                .map(|reason| (reason.label(), self.connections_refused_count(reason))),
        );
    }

    /// Reconciliation with LiveKit (rules 23–27).
    fn render_reconcile(&self, out: &mut String) {
        let counters = [
            (
                "rollcall_reconcile_passes_total",
                "Reconciliation passes over the live rooms.",
                &self.reconcile_passes,
            ),
            (
                "rollcall_reconcile_listings_total",
                "Rooms listed by LiveKit's RoomService (or found gone from it).",
                &self.reconcile_listings,
            ),
            (
                "rollcall_reconcile_rooms_changed_total",
                "Rooms a listing changed.",
                &self.reconcile_rooms_changed,
            ),
            (
                "rollcall_reconcile_cycles_opened_total",
                "Cycles opened from a listing: joins whose webhook never arrived.",
                &self.reconcile_opened,
            ),
            (
                "rollcall_reconcile_cycles_closed_total",
                "Open cycles closed because LiveKit no longer listed them.",
                &self.reconcile_closed,
            ),
        ];
        for (name, help, counter) in counters {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", counter.load(Ordering::Relaxed));
        }
        let last = self.reconcile_last_success_ms.load(Ordering::Relaxed);
        if last > 0 {
            let name = "rollcall_reconcile_last_success_age_seconds";
            let age = (crate::domain::now_millis() - last as i64).max(0) as f64 / 1000.0;
            let _ = writeln!(
                out,
                "# HELP {name} Seconds since this node last finished a reconciliation pass (only on nodes that did one: alert on the minimum)."
            );
            let _ = writeln!(out, "# TYPE {name} gauge");
            let _ = writeln!(out, "{name} {age:.3}");
        }
        labelled_counter(
            out,
            "rollcall_livekit_errors_total",
            "Failed calls to LiveKit's RoomService, by kind (they change nothing).",
            "kind",
            RECONCILE_ERRORS.map(|kind| (kind, self.reconcile_error_count(kind))),
        );
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn render(&self, gauges: Gauges) -> String {
        let mut out = String::with_capacity(1024);
        labelled_counter(
            &mut out,
            "rollcall_webhooks_total",
            "LiveKit webhooks by outcome.",
            "outcome",
            WebhookOutcome::ALL.map(|outcome| (outcome.label(), self.webhook_count(outcome))),
        );
        let counters = [
            (
                "rollcall_rooms_unmatched_total",
                "Webhooks for rooms that do not match ROLLCALL_ROOM_PATTERN.",
                &self.rooms_unmatched,
            ),
            (
                "rollcall_attendance_updates_total",
                "attendance.updated messages published.",
                &self.attendance_updates,
            ),
            (
                "rollcall_commit_conflicts_total",
                "State commits retried after a concurrent write.",
                &self.commit_conflicts,
            ),
            (
                "rollcall_heartbeats_recorded_total",
                "Heartbeats from people in the meeting.",
                &self.heartbeats_recorded,
            ),
            (
                "rollcall_heartbeats_ignored_total",
                "Heartbeats from people with no open cycle.",
                &self.heartbeats_ignored,
            ),
            (
                "rollcall_stale_cycles_closed_total",
                "Cycles closed by the sweeper for want of heartbeats.",
                &self.stale_cycles_closed,
            ),
            (
                "rollcall_finalizations_total",
                "Sessions made final by the sweeper.",
                &self.finalizations,
            ),
            (
                "rollcall_reports_delivered_total",
                "Final reports accepted by the receiver.",
                &self.reports_delivered,
            ),
            (
                "rollcall_report_failures_total",
                "Final report attempts that failed (retried).",
                &self.report_failures,
            ),
            (
                "rollcall_channel_collisions_total",
                "New rooms whose channel another room already feeds (see ROLLCALL_CHANNEL_TEMPLATE).",
                &self.channel_collisions,
            ),
            (
                "rollcall_api_messages_published_total",
                "Messages published through the Pusher HTTP API (one per event and channel).",
                &self.api_messages_published,
            ),
            (
                "rollcall_app_webhooks_delivered_total",
                "App webhook events the receiver accepted.",
                &self.app_webhooks_delivered,
            ),
            (
                "rollcall_app_webhooks_retried_total",
                "App webhook events whose request failed and that were scheduled again.",
                &self.app_webhooks_retried,
            ),
            (
                "rollcall_app_webhooks_expired_total",
                "App webhook events dropped undelivered after the expiry (1 hour).",
                &self.app_webhooks_expired,
            ),
            (
                "rollcall_app_webhooks_refused_total",
                "App webhook events never queued (queue full, store unavailable, too large).",
                &self.app_webhooks_refused,
            ),
        ];
        for (name, help, counter) in counters {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", counter.load(Ordering::Relaxed));
        }
        self.render_limits(&mut out);
        self.render_reconcile(&mut out);
        let gauges = [
            (
                "rollcall_websocket_connections",
                "Open Pusher WebSocket connections.",
                gauges.connections,
            ),
            (
                "rollcall_channels",
                "Channels with at least one local subscriber.",
                gauges.channels,
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            let _ = writeln!(out, "{name} {value}");
        }
        self.ws.render(&mut out);
        self.bus.render(&mut out);
        self.render_connections(&mut out);
        self.http.render(&mut out);
        out
    }
}

// --- The HTTP connection layer (src/server): timeouts, refusals, open
// plain HTTP connections. ---

/// Which deadline of an HTTP connection passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutPhase {
    /// No complete request head in time (answered 408).
    Header,
    /// The body did not arrive in time (408, or closed once answering).
    Body,
    /// Keep-alive idle between requests, or a response the client stopped
    /// reading (closed silently).
    Idle,
}

impl TimeoutPhase {
    const ALL: [TimeoutPhase; 3] = [Self::Header, Self::Body, Self::Idle];

    fn label(self) -> &'static str {
        match self {
            Self::Header => "header",
            Self::Body => "body",
            Self::Idle => "idle",
        }
    }
}

#[derive(Debug, Default)]
struct ConnectionCounters {
    timeouts: [AtomicU64; 3],
    http_open: AtomicU64,
}

impl Metrics {
    pub fn http_timeout(&self, phase: TimeoutPhase) {
        self.connections.timeouts[phase as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn http_timeout_count(&self, phase: TimeoutPhase) -> u64 {
        self.connections.timeouts[phase as usize].load(Ordering::Relaxed)
    }

    /// The open plain HTTP connections gauge (set by the connection budget).
    pub fn set_http_connections(&self, open: usize) {
        self.connections
            .http_open
            .store(open as u64, Ordering::Relaxed);
    }

    fn render_connections(&self, out: &mut String) {
        labelled_counter(
            out,
            "rollcall_http_timeouts_total",
            "HTTP connections whose deadline passed, by phase.",
            "phase",
            TimeoutPhase::ALL.map(|phase| (phase.label(), self.http_timeout_count(phase))),
        );
        let name = "rollcall_http_connections";
        let _ = writeln!(
            out,
            "# HELP {name} Open plain HTTP connections (not upgraded)."
        );
        let _ = writeln!(out, "# TYPE {name} gauge");
        let _ = writeln!(
            out,
            "{name} {}",
            self.connections.http_open.load(Ordering::Relaxed)
        );
    }
}

/// One counter family with one label: its HELP and TYPE lines, then a line
/// per label value (every value, zeros included, so a dashboard sees the
/// series before the first event).
fn labelled_counter(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    rows: impl IntoIterator<Item = (&'static str, u64)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} counter");
    for (value, count) in rows {
        let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {count}");
    }
}
