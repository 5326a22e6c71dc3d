//! The HTTP connection layer: our own accept loop on hyper (HTTP/1.1 only,
//! with upgrades), so that every connection is counted and every phase of
//! it has a deadline, whatever the client does.
//!
//! - `budget.rs` — who may hold a socket: plain HTTP caps (global, per
//!   address) and the descriptor reserve WebSocket upgrades stop at.
//! - `io.rs` — the per-connection wrapper hyper reads through: head framing,
//!   header/body/idle deadlines, our own JSON refusals, pass-through after
//!   a 101.
//! - `head.rs`, `chunked.rs` — pure framing of request heads and chunked
//!   bodies (no I/O; unit-tested, fuzzable).
//! - `linger.rs` — lingering close.
//! - `fdlimit.rs` — RLIMIT_NOFILE at startup.

pub mod budget;
pub mod chunked;
pub mod fdlimit;
pub mod head;
pub mod io;
pub mod linger;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;

pub use budget::{BudgetLimits, ConnectionBudget, HttpRefusal};
use io::{ConnConfig, GuardedIo};

use crate::http::error::AppError;
use crate::metrics::Metrics;

/// The connection layer's settings (`ROLLCALL_HTTP_*`,
/// `ROLLCALL_MAX_HTTP_CONNECTIONS*`, `ROLLCALL_FD_RESERVE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// A connection's first request head, and any later head from its first
    /// byte, must be complete within this (else 408).
    pub header_timeout: Duration,
    /// A request's whole body must arrive within this after its head.
    pub body_timeout: Duration,
    /// A keep-alive connection idle this long between requests is closed.
    pub idle_timeout: Duration,
    /// Concurrent plain HTTP connections (WebSockets are counted by
    /// `ROLLCALL_MAX_CONNECTIONS`).
    pub max_connections: usize,
    /// Concurrent plain HTTP connections per peer address; 0 = no cap.
    pub max_connections_per_ip: usize,
    /// Descriptors kept for plain HTTP: WebSocket upgrades are refused once
    /// open sockets reach the descriptor limit minus this.
    pub fd_reserve: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4096,
            max_connections_per_ip: 256,
            fd_reserve: 256,
        }
    }
}

/// Descriptors the process keeps for itself beyond plain HTTP connections.
const PROCESS_DESCRIPTORS: usize = 64;

/// Raises the descriptor limit and builds the budget from it.
pub fn budget_for(limits: &HttpLimits, metrics: Arc<Metrics>) -> ConnectionBudget {
    let fd_limit = match fdlimit::raise_nofile_limit() {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the file-descriptor limit; assuming 1024");
            1024
        }
    };
    let fd_limit = usize::try_from(fd_limit).unwrap_or(usize::MAX);
    let websocket_socket_limit = fd_limit.saturating_sub(limits.fd_reserve);
    // Plain HTTP alone must never use up the descriptors either: leave the
    // process its own (listener, Redis connections, files, lingering).
    let max_http = limits
        .max_connections
        .min(fd_limit.saturating_sub(PROCESS_DESCRIPTORS).max(1));
    tracing::info!(
        fd_limit,
        fd_reserve = limits.fd_reserve,
        websocket_socket_limit,
        max_http,
        "file-descriptor limit"
    );
    if websocket_socket_limit == 0 {
        tracing::warn!(
            "ROLLCALL_FD_RESERVE is not below the descriptor limit: every WebSocket will be refused"
        );
    }
    ConnectionBudget::new(
        BudgetLimits {
            max_http,
            max_http_per_ip: limits.max_connections_per_ip,
            websocket_socket_limit,
        },
        metrics,
    )
}

/// Serves `router` on `listener` until `drain` is cancelled; then stops
/// accepting, lets in-flight requests finish (idle keep-alive connections
/// close at once) and returns when every connection task has ended. The
/// caller bounds that wait.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    budget: ConnectionBudget,
    metrics: Arc<Metrics>,
    drain: CancellationToken,
) {
    let config = Arc::new(ConnConfig {
        header_timeout: limits.header_timeout,
        body_timeout: limits.body_timeout,
        idle_timeout: limits.idle_timeout,
        metrics,
    });
    let connections = TaskTracker::new();
    let mut accept_errors = ErrorLog::default();
    loop {
        let accepted = tokio::select! {
            _ = drain.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors (EMFILE/ENFILE) or memory: accepting
                // again at once would spin. Back off; connections that close
                // meanwhile free descriptors.
                accept_errors.log(&e);
                if is_resource_exhaustion(&e) {
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
                continue;
            }
        };
        // TCP_NODELAY on every accepted socket: a push server writes small
        // frames and must not hold one back waiting for the ACK of the last
        // (Nagle + the client's delayed ACK cost up to 40 ms on a frame).
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let socket = budget.socket();
        let (http, refusal) = match budget.admit_http(peer.ip()) {
            Ok(slot) => (Some(slot), None),
            Err(why) => (None, Some(over_capacity(why))),
        };
        let io = GuardedIo::new(stream, Arc::clone(&config), socket, http, refusal);
        connections.spawn(connection(io, peer, router.clone(), drain.clone()));
    }
    connections.close();
    connections.wait().await;
}

/// How long the accept loop pauses after running out of a resource.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

fn is_resource_exhaustion(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Logs accept errors at most once a second, with how many were not logged.
#[derive(Default)]
struct ErrorLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl ErrorLog {
    fn log(&mut self, e: &std::io::Error) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(error = %e, suppressed = self.suppressed, "accept failed");
        self.last = Some(now);
        self.suppressed = 0;
    }
}

fn over_capacity(why: HttpRefusal) -> AppError {
    let message = match why {
        HttpRefusal::Cap => "too many connections; retry shortly",
        HttpRefusal::PerIp => "too many connections from this address; retry shortly",
    };
    AppError::new(StatusCode::SERVICE_UNAVAILABLE, "over_capacity", message)
}

/// Serves one connection with hyper, every request carrying
/// `ConnectInfo<SocketAddr>` (the TCP peer). On drain, hyper finishes the
/// request in flight and closes.
async fn connection(io: GuardedIo, peer: SocketAddr, router: Router, drain: CancellationToken) {
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let mut router = router.clone();
        async move { Ok::<_, Infallible>(router.call(req).await.unwrap_or_else(|e| match e {})) }
    });
    let conn = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = drain.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, %peer, "HTTP connection ended with an error");
    }
}
