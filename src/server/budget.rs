//! Who may hold a socket: every accepted connection holds a [`SocketSlot`]
//! until its descriptor is closed (lingering included); plain HTTP
//! connections also hold an [`HttpSlot`] (global and per-address caps) until
//! they close or become WebSockets. WebSocket upgrades are admitted only
//! while open sockets stay below the descriptor limit minus a reserve, so
//! health checks and LiveKit's webhooks are always served from the reserve.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;

use crate::metrics::{ConnectionRefusal, Metrics};

/// The caps, from settings and the process's descriptor limit.
#[derive(Debug, Clone, Copy)]
pub struct BudgetLimits {
    /// Concurrent plain HTTP connections.
    pub max_http: usize,
    /// Concurrent plain HTTP connections per peer address; 0 = no cap.
    pub max_http_per_ip: usize,
    /// Open sockets at which WebSocket upgrades are refused
    /// (descriptor limit − reserve).
    pub websocket_socket_limit: usize,
}

struct Inner {
    limits: BudgetLimits,
    sockets: AtomicUsize,
    http: AtomicUsize,
    per_ip: DashMap<IpAddr, usize>,
    metrics: Arc<Metrics>,
}

/// Shared, cheap to clone; asked by the accept loop and by the WebSocket
/// `upgrade` handler.
#[derive(Clone)]
pub struct ConnectionBudget(Arc<Inner>);

/// Why a plain HTTP connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpRefusal {
    Cap,
    PerIp,
}

impl ConnectionBudget {
    pub fn new(limits: BudgetLimits, metrics: Arc<Metrics>) -> Self {
        Self(Arc::new(Inner {
            limits,
            sockets: AtomicUsize::new(0),
            http: AtomicUsize::new(0),
            per_ip: DashMap::new(),
            metrics,
        }))
    }

    /// No caps (a `PusherState` built outside `Application`).
    pub fn unlimited() -> Self {
        Self::new(
            BudgetLimits {
                max_http: usize::MAX,
                max_http_per_ip: 0,
                websocket_socket_limit: usize::MAX,
            },
            Arc::new(Metrics::default()),
        )
    }

    /// Counts an accepted socket until the slot is dropped.
    pub fn socket(&self) -> SocketSlot {
        self.0.sockets.fetch_add(1, Ordering::AcqRel);
        SocketSlot(self.0.clone())
    }

    /// Admits a plain HTTP connection from `ip`, or says which cap is full
    /// (and counts the refusal).
    pub fn admit_http(&self, ip: IpAddr) -> Result<HttpSlot, HttpRefusal> {
        // Keyed as every per-address limit is: an IPv6 host by its /64,
        // since it can take a fresh address from it per connection.
        let ip = crate::limits::address_key(ip);
        let inner = &self.0;
        let max = inner.limits.max_http;
        if inner
            .http
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_err()
        {
            inner.metrics.connection_refused(ConnectionRefusal::HttpCap);
            return Err(HttpRefusal::Cap);
        }
        let per_ip = inner.limits.max_http_per_ip;
        if per_ip > 0 {
            let mut count = inner.per_ip.entry(ip).or_insert(0);
            if *count >= per_ip {
                drop(count);
                inner.http.fetch_sub(1, Ordering::AcqRel);
                inner
                    .metrics
                    .connection_refused(ConnectionRefusal::HttpPerIp);
                return Err(HttpRefusal::PerIp);
            }
            *count += 1;
        }
        inner
            .metrics
            .set_http_connections(inner.http.load(Ordering::Relaxed));
        Ok(HttpSlot {
            inner: self.0.clone(),
            ip,
        })
    }

    /// Whether one more WebSocket may stay open: open sockets (this one
    /// included) within the descriptor limit minus the reserve. A refusal
    /// is counted.
    pub fn admit_websocket(&self) -> bool {
        let open = self.0.sockets.load(Ordering::Acquire);
        let admitted = open <= self.0.limits.websocket_socket_limit;
        if !admitted {
            self.0
                .metrics
                .connection_refused(ConnectionRefusal::FdReserve);
        }
        admitted
    }

    /// Sockets open now (HTTP, WebSocket and lingering).
    pub fn open_sockets(&self) -> usize {
        self.0.sockets.load(Ordering::Relaxed)
    }

    /// Plain HTTP connections open now.
    pub fn open_http(&self) -> usize {
        self.0.http.load(Ordering::Relaxed)
    }
}

/// One open descriptor; dropped when the socket is closed.
pub struct SocketSlot(Arc<Inner>);

impl Drop for SocketSlot {
    fn drop(&mut self) {
        self.0.sockets.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One plain HTTP connection; dropped when it closes or is upgraded.
pub struct HttpSlot {
    inner: Arc<Inner>,
    ip: IpAddr,
}

impl Drop for HttpSlot {
    fn drop(&mut self) {
        let inner = &self.inner;
        if inner.limits.max_http_per_ip > 0 {
            // Remove the entry at zero so the map holds only live peers.
            inner.per_ip.remove_if_mut(&self.ip, |_, n| {
                *n -= 1;
                *n == 0
            });
        }
        let now = inner.http.fetch_sub(1, Ordering::AcqRel) - 1;
        inner.metrics.set_http_connections(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(max_http: usize, per_ip: usize, ws_limit: usize) -> ConnectionBudget {
        ConnectionBudget::new(
            BudgetLimits {
                max_http,
                max_http_per_ip: per_ip,
                websocket_socket_limit: ws_limit,
            },
            Arc::new(Metrics::default()),
        )
    }

    #[test]
    fn caps_http_globally_and_per_address_and_frees_slots() {
        let b = budget(3, 2, 100);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        let a1 = b.admit_http(a).unwrap();
        let _a2 = b.admit_http(a).unwrap();
        assert_eq!(b.admit_http(a).err(), Some(HttpRefusal::PerIp));
        let _o1 = b.admit_http(other).unwrap();
        assert_eq!(b.admit_http(other).err(), Some(HttpRefusal::Cap));
        assert_eq!(b.open_http(), 3);
        drop(a1);
        assert_eq!(b.open_http(), 2);
        assert!(b.admit_http(a).is_ok());
        assert_eq!(
            b.0.metrics
                .connections_refused_count(ConnectionRefusal::HttpPerIp),
            1
        );
        assert_eq!(
            b.0.metrics
                .connections_refused_count(ConnectionRefusal::HttpCap),
            1
        );
    }

    #[test]
    fn per_address_entries_go_away_at_zero() {
        let b = budget(10, 5, 100);
        let slot = b.admit_http("10.0.0.1".parse().unwrap()).unwrap();
        assert_eq!(b.0.per_ip.len(), 1);
        drop(slot);
        assert!(b.0.per_ip.is_empty());
    }

    #[test]
    fn websockets_stop_at_the_reserve() {
        let b = budget(10, 0, 2);
        let s1 = b.socket();
        let _s2 = b.socket();
        assert!(b.admit_websocket());
        let _s3 = b.socket();
        assert!(!b.admit_websocket());
        drop(s1);
        assert!(b.admit_websocket());
        assert_eq!(
            b.0.metrics
                .connections_refused_count(ConnectionRefusal::FdReserve),
            1
        );
    }
}
