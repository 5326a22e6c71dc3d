//! Process-wide counters, rendered as Prometheus text at `/metrics`.
//! Plain atomics: incrementing one costs a relaxed add on the hot path.

use std::fmt::Write;
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
    /// The HTTP connection layer (`src/server`): see `render_connections`.
    connections: ConnectionCounters,
}

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

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn render(&self, gauges: Gauges) -> String {
        let mut out = String::with_capacity(1024);
        let _ = writeln!(
            out,
            "# HELP rollcall_webhooks_total LiveKit webhooks by outcome."
        );
        let _ = writeln!(out, "# TYPE rollcall_webhooks_total counter");
        for outcome in WebhookOutcome::ALL {
            let _ = writeln!(
                out,
                "rollcall_webhooks_total{{outcome=\"{}\"}} {}",
                outcome.label(),
                self.webhook_count(outcome)
            );
        }
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
                "rollcall_api_messages_published_total",
                "Messages published through the Pusher HTTP API (one per event and channel).",
                &self.api_messages_published,
            ),
        ];
        for (name, help, counter) in counters {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", counter.load(Ordering::Relaxed));
        }
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
        self.render_connections(&mut out);
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

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusedReason {
    /// `ROLLCALL_MAX_HTTP_CONNECTIONS` reached (503).
    HttpCap,
    /// `ROLLCALL_MAX_HTTP_CONNECTIONS_PER_IP` reached (503).
    HttpPerIp,
    /// A WebSocket upgrade within `ROLLCALL_FD_RESERVE` of the descriptor
    /// limit (4100).
    FdReserve,
}

impl RefusedReason {
    const ALL: [RefusedReason; 3] = [Self::HttpCap, Self::HttpPerIp, Self::FdReserve];

    fn label(self) -> &'static str {
        match self {
            Self::HttpCap => "http_cap",
            Self::HttpPerIp => "http_per_ip",
            Self::FdReserve => "fd_reserve",
        }
    }
}

#[derive(Debug, Default)]
struct ConnectionCounters {
    timeouts: [AtomicU64; 3],
    refused: [AtomicU64; 3],
    http_open: AtomicU64,
}

impl Metrics {
    pub fn http_timeout(&self, phase: TimeoutPhase) {
        self.connections.timeouts[phase as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn http_timeout_count(&self, phase: TimeoutPhase) -> u64 {
        self.connections.timeouts[phase as usize].load(Ordering::Relaxed)
    }

    pub fn refused(&self, reason: RefusedReason) {
        self.connections.refused[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn refused_count(&self, reason: RefusedReason) -> u64 {
        self.connections.refused[reason as usize].load(Ordering::Relaxed)
    }

    /// The open plain HTTP connections gauge (set by the connection budget).
    pub fn set_http_connections(&self, open: usize) {
        self.connections
            .http_open
            .store(open as u64, Ordering::Relaxed);
    }

    fn render_connections(&self, out: &mut String) {
        let name = "rollcall_http_timeouts_total";
        let _ = writeln!(
            out,
            "# HELP {name} HTTP connections whose deadline passed, by phase."
        );
        let _ = writeln!(out, "# TYPE {name} counter");
        for phase in TimeoutPhase::ALL {
            let _ = writeln!(
                out,
                "{name}{{phase=\"{}\"}} {}",
                phase.label(),
                self.http_timeout_count(phase)
            );
        }
        let name = "rollcall_connections_refused_total";
        let _ = writeln!(out, "# HELP {name} Connections refused, by reason.");
        let _ = writeln!(out, "# TYPE {name} counter");
        for reason in RefusedReason::ALL {
            let _ = writeln!(
                out,
                "{name}{{reason=\"{}\"}} {}",
                reason.label(),
                self.refused_count(reason)
            );
        }
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
