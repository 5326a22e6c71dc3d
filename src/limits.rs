//! What one client may take: rates (governor's GCRA, keyed state in a
//! `DashMap`) and concurrent WebSockets per client address, plus the
//! WebSocket origin allow-list. Every limit is off when configured `0`.
//!
//! - heartbeats, per person (room + identity of a verified token);
//! - failed credentials, per client address: once an address has none
//!   left, its authenticated requests are refused *before* their
//!   credentials are checked, so guessing is capped even when a guess would
//!   be right; successful requests spend nothing;
//! - webhooks, per client address;
//! - open WebSockets, per client address (a slot released on drop).
//!
//! Client addresses are keyed as [`address_key`] says: IPv6 clients by
//! their /64, since one host holds a whole /64 and could otherwise take a
//! fresh address per request.
//!
//! Keyed state must not grow without bound: `housekeep` (every
//! `HOUSEKEEPING_PERIOD`, see `run_housekeeping`) drops every key whose
//! state is indistinguishable from a fresh one, so what stays is bounded by
//! the keys seen within one window.

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::{NoOpMiddleware, StateInformationMiddleware};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use tokio_util::sync::CancellationToken;

use crate::config::{LimitSettings, Rate};
use crate::http::client_ip::TrustedProxies;
use crate::http::error::AppError;
use crate::metrics::{ConnectionRefusal, Metrics, RateLimit};

/// How often stale keyed state is dropped. A key is droppable once its
/// cells are all back (2 s after one failed credential at the default
/// rate), so what is kept is about the keys of the last few seconds: a
/// flood from many addresses (IPv6 /64s) holds ~100 bytes per address seen
/// in that time. A pass walks every key, so not much more often than this.
pub const HOUSEKEEPING_PERIOD: Duration = Duration::from_secs(5);

type Keyed<K, MW = NoOpMiddleware> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock, MW>;

/// A person, for the heartbeat limit: room and token identity.
pub type PersonKey = (String, String);

/// The key of a client address: IPv4 as is, IPv6 by its /64 prefix.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

/// `count` per `per` as a GCRA quota: a burst of `count` (so a client
/// re-subscribing to all its channels after a reconnect fits), then one
/// more every `per / count`. Every rate of rollcall is this shape.
pub(crate) fn quota(rate: Rate) -> Quota {
    let count = NonZeroU32::new(rate.count).unwrap_or(NonZeroU32::MIN);
    let period = (rate.per / count.get()).max(Duration::from_nanos(1));
    Quota::with_period(period)
        .expect("a non-zero period")
        .allow_burst(count)
}

/// A plain keyed rate: each request spends one cell of its key.
pub struct KeyedRate<K: std::hash::Hash + Eq + Clone> {
    limiter: Keyed<K>,
}

impl<K: std::hash::Hash + Eq + Clone> KeyedRate<K> {
    pub fn new(rate: Rate) -> Self {
        Self {
            limiter: RateLimiter::dashmap(quota(rate)),
        }
    }

    /// Spends one cell of `key`, or says how long until one is there.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        self.limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(self.limiter.clock().now()))
    }

    fn housekeep(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Keys with state (for tests of the housekeeping).
    pub fn len(&self) -> usize {
        self.limiter.len()
    }

    pub fn is_empty(&self) -> bool {
        self.limiter.is_empty()
    }
}

/// Failed credentials per address, with a check that spends nothing:
/// governor only answers by spending, so an address whose failure emptied
/// (or overflowed) its bucket is noted in `blocked` until a cell is back.
pub struct FailureGate {
    limiter: Keyed<IpAddr, StateInformationMiddleware>,
    blocked: DashMap<IpAddr, Instant>,
    /// Time for one cell to come back: the longest an empty bucket waits.
    refill: Duration,
}

impl FailureGate {
    pub fn new(rate: Rate) -> Self {
        let quota = quota(rate);
        Self {
            refill: quota.replenish_interval(),
            limiter: RateLimiter::dashmap(quota).with_middleware::<StateInformationMiddleware>(),
            blocked: DashMap::new(),
        }
    }

    /// `Err(wait)` while `ip` has no failure left; spends nothing.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        // Copied out so no map reference is held while removing.
        let until = self.blocked.get(&ip).map(|until| *until);
        if let Some(until) = until {
            let now = Instant::now();
            if until > now {
                return Err(until - now);
            }
            self.blocked.remove_if(&ip, |_, until| *until <= now);
        }
        Ok(())
    }

    /// Spends one failure of `ip`.
    pub fn failed(&self, ip: IpAddr) {
        let wait = match self.limiter.check_key(&ip) {
            Ok(state) if state.remaining_burst_capacity() > 0 => return,
            Ok(_) => self.refill,
            Err(not_until) => not_until.wait_time_from(self.limiter.clock().now()),
        };
        let until = Instant::now() + wait;
        self.blocked
            .entry(ip)
            .and_modify(|u| *u = (*u).max(until))
            .or_insert(until);
    }

    fn housekeep(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        let now = Instant::now();
        self.blocked.retain(|_, until| *until > now);
        self.blocked.shrink_to_fit();
    }

    /// Addresses with state (for tests of the housekeeping).
    pub fn len(&self) -> usize {
        self.limiter.len() + self.blocked.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Open WebSockets per address. An address's entry exists only while it
/// has a connection open, so the map is bounded by open connections.
pub struct ConnectionsPerIp {
    max: usize,
    open: DashMap<IpAddr, usize>,
}

/// One admitted connection of an address; dropping it (however the socket
/// task ends) gives the slot back.
pub struct PerIpSlot {
    registry: Arc<ConnectionsPerIp>,
    ip: IpAddr,
}

impl ConnectionsPerIp {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            open: DashMap::new(),
        }
    }

    fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<PerIpSlot> {
        let mut open = self.open.entry(ip).or_insert(0);
        if *open >= self.max {
            return None;
        }
        *open += 1;
        drop(open);
        Some(PerIpSlot {
            registry: Arc::clone(self),
            ip,
        })
    }

    /// Connections open from `ip`'s address.
    pub fn open_from(&self, ip: IpAddr) -> usize {
        self.open
            .get(&address_key(ip))
            .map(|n| *n)
            .unwrap_or_default()
    }

    /// Addresses with a connection open.
    pub fn addresses(&self) -> usize {
        self.open.len()
    }
}

impl Drop for PerIpSlot {
    fn drop(&mut self) {
        if let Entry::Occupied(mut entry) = self.registry.open.entry(self.ip) {
            *entry.get_mut() -= 1;
            if *entry.get() == 0 {
                entry.remove();
            }
        }
    }
}

/// `ROLLCALL_ALLOWED_ORIGINS`: the origins that may open WebSockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedOrigins(Vec<String>);

impl AllowedOrigins {
    /// Comma-separated `scheme://host[:port]` origins.
    pub fn parse(s: &str) -> Result<Self, String> {
        let origins = s
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(|o| {
                let normalized = normalize_origin(o);
                let valid = normalized.split_once("://").is_some_and(|(scheme, host)| {
                    !scheme.is_empty() && !host.is_empty() && !host.contains('/')
                });
                if valid {
                    Ok(normalized)
                } else {
                    Err(format!(
                        "{o:?} is not an origin like https://app.example.com"
                    ))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self(origins))
    }

    pub fn allows(&self, origin: &str) -> bool {
        let origin = normalize_origin(origin);
        self.0.contains(&origin)
    }
}

/// Origins compare case-insensitively, without a trailing `/` or the
/// scheme's default port (browsers send neither).
fn normalize_origin(origin: &str) -> String {
    let mut o = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    for (scheme, port) in [("https://", ":443"), ("http://", ":80")] {
        if o.starts_with(scheme) && o.ends_with(port) {
            o.truncate(o.len() - port.len());
        }
    }
    o
}

/// A connection refused because its address has too many open.
#[derive(Debug)]
pub struct TooManyFromAddress;

/// Every limit of a node, shared by the HTTP routes and the WebSocket
/// endpoint; each is `None` when off.
pub struct Limits {
    pub trusted_proxies: Arc<TrustedProxies>,
    pub heartbeats: Option<KeyedRate<PersonKey>>,
    pub auth_failures: Option<FailureGate>,
    pub webhooks: Option<KeyedRate<IpAddr>>,
    pub connections_per_ip: Option<Arc<ConnectionsPerIp>>,
    pub allowed_origins: Option<AllowedOrigins>,
    metrics: Arc<Metrics>,
}

impl Limits {
    pub fn new(settings: &LimitSettings, metrics: Arc<Metrics>) -> Self {
        Self {
            trusted_proxies: Arc::new(settings.trusted_proxies.clone()),
            heartbeats: settings.heartbeats.map(KeyedRate::new),
            auth_failures: settings.auth_failures.map(FailureGate::new),
            webhooks: settings.webhooks.map(KeyedRate::new),
            connections_per_ip: (settings.max_connections_per_ip > 0)
                .then(|| Arc::new(ConnectionsPerIp::new(settings.max_connections_per_ip))),
            allowed_origins: settings.allowed_origins.clone(),
            metrics,
        }
    }

    /// No limits at all, trusting no proxy (a bare `PusherState`).
    pub fn off() -> Self {
        Self::new(&LimitSettings::default(), Arc::new(Metrics::default()))
    }

    fn refuse(&self, limit: RateLimit, message: &str, wait: Duration) -> AppError {
        self.metrics.rate_limited(limit);
        AppError::rate_limited(message, wait)
    }

    /// A heartbeat of `person`, over `ROLLCALL_RATE_HEARTBEATS` → 429.
    pub fn heartbeat(&self, person: &PersonKey) -> Result<(), AppError> {
        match &self.heartbeats {
            Some(rate) => rate.check(person).map_err(|wait| {
                self.refuse(
                    RateLimit::Heartbeats,
                    "too many heartbeats for this person; send one a minute",
                    wait,
                )
            }),
            None => Ok(()),
        }
    }

    /// Before checking credentials of `ip`: 429 while it has no failure left.
    pub fn credentials_allowed(&self, ip: IpAddr) -> Result<(), AppError> {
        match &self.auth_failures {
            Some(gate) => gate.check(address_key(ip)).map_err(|wait| {
                self.refuse(
                    RateLimit::AuthFailures,
                    "too many failed credentials from this address; retry later",
                    wait,
                )
            }),
            None => Ok(()),
        }
    }

    /// A failed credential of `ip` spends one.
    pub fn credential_failed(&self, ip: IpAddr) {
        if let Some(gate) = &self.auth_failures {
            gate.failed(address_key(ip));
        }
    }

    /// A LiveKit webhook from `ip`, over `ROLLCALL_RATE_WEBHOOKS` → 429.
    pub fn webhook(&self, ip: IpAddr) -> Result<(), AppError> {
        match &self.webhooks {
            Some(rate) => rate.check(&address_key(ip)).map_err(|wait| {
                self.refuse(
                    RateLimit::Webhooks,
                    "too many webhooks from this address",
                    wait,
                )
            }),
            None => Ok(()),
        }
    }

    /// A WebSocket upgrade's `Origin`, checked before upgrading: one not
    /// listed → 403. A request without `Origin` is not from a browser page
    /// (browsers always send it on WebSocket upgrades; servers and tools
    /// don't), and the allow-list protects browser users only, so it passes.
    pub fn origin_allowed(&self, headers: &HeaderMap) -> Result<(), AppError> {
        let (Some(allowed), Some(origin)) = (&self.allowed_origins, headers.get(header::ORIGIN))
        else {
            return Ok(());
        };
        if origin.to_str().is_ok_and(|o| allowed.allows(o)) {
            return Ok(());
        }
        self.metrics.connection_refused(ConnectionRefusal::Origin);
        Err(AppError::new(
            axum::http::StatusCode::FORBIDDEN,
            "origin_not_allowed",
            "this origin may not open connections here (ROLLCALL_ALLOWED_ORIGINS)",
        ))
    }

    /// A connection slot of `ip`'s address (`None` when the limit is off),
    /// or a refusal once `ROLLCALL_MAX_CONNECTIONS_PER_IP` are open.
    pub fn connection_slot(&self, ip: IpAddr) -> Result<Option<PerIpSlot>, TooManyFromAddress> {
        let Some(registry) = &self.connections_per_ip else {
            return Ok(None);
        };
        match registry.acquire(address_key(ip)) {
            Some(slot) => Ok(Some(slot)),
            None => {
                self.metrics.connection_refused(ConnectionRefusal::PerIp);
                Err(TooManyFromAddress)
            }
        }
    }

    /// Drops keyed state that is no different from a fresh key's.
    pub fn housekeep(&self) {
        if let Some(rate) = &self.heartbeats {
            rate.housekeep();
        }
        if let Some(gate) = &self.auth_failures {
            gate.housekeep();
        }
        if let Some(rate) = &self.webhooks {
            rate.housekeep();
        }
    }
}

/// Runs `housekeep` every `period` until `shutdown`, on the blocking pool:
/// a pass over a million keys takes a good fraction of a second (measured
/// ~0.7 s in a debug build), which must not stall a runtime worker.
pub async fn run_housekeeping(limits: Arc<Limits>, period: Duration, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {
                let limits = Arc::clone(&limits);
                let _ = tokio::task::spawn_blocking(move || limits.housekeep()).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(count: u32, per_ms: u64) -> Rate {
        Rate {
            count,
            per: Duration::from_millis(per_ms),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        assert_eq!(
            address_key(ip("2001:db8:1:2:aaaa::1")),
            address_key(ip("2001:db8:1:2:bbbb::9"))
        );
        assert_ne!(
            address_key(ip("2001:db8:1:2::1")),
            address_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(address_key(ip("203.0.113.9")), ip("203.0.113.9"));
        assert_eq!(address_key(ip("::ffff:203.0.113.9")), ip("203.0.113.9"));
    }

    #[test]
    fn a_keyed_rate_allows_its_burst_per_key_then_says_how_long() {
        let rate = KeyedRate::new(rate(3, 60_000));
        for _ in 0..3 {
            assert!(rate.check(&1u8).is_ok());
        }
        let wait = rate.check(&1u8).unwrap_err();
        // One cell comes back every 20 s.
        assert!(wait > Duration::from_secs(15) && wait <= Duration::from_secs(20));
        assert!(rate.check(&2u8).is_ok(), "another key has its own");
    }

    #[test]
    fn the_failure_gate_spends_only_on_failures_and_checks_without_spending() {
        let gate = FailureGate::new(rate(3, 60_000));
        let a = ip("192.0.2.1");
        for _ in 0..10 {
            assert!(gate.check(a).is_ok(), "checking spends nothing");
        }
        gate.failed(a);
        gate.failed(a);
        assert!(gate.check(a).is_ok());
        gate.failed(a);
        let wait = gate.check(a).unwrap_err();
        assert!(wait > Duration::from_secs(15) && wait <= Duration::from_secs(20));
        assert!(gate.check(ip("192.0.2.2")).is_ok());
    }

    #[test]
    fn the_failure_gate_reopens_after_a_cell_is_back() {
        let gate = FailureGate::new(rate(2, 200));
        let a = ip("192.0.2.1");
        gate.failed(a);
        gate.failed(a);
        assert!(gate.check(a).is_err());
        std::thread::sleep(Duration::from_millis(150));
        assert!(gate.check(a).is_ok());
    }

    #[test]
    fn housekeeping_drops_keys_that_are_fresh_again() {
        let rate = KeyedRate::new(rate(2, 50));
        let gate = FailureGate::new(super::tests::rate(2, 50));
        for n in 0..1000u32 {
            let _ = rate.check(&n);
            let key = IpAddr::from(n.to_be_bytes());
            gate.failed(key);
            gate.failed(key);
        }
        assert_eq!(rate.len(), 1000);
        assert!(gate.len() >= 1000);
        std::thread::sleep(Duration::from_millis(120));
        rate.housekeep();
        gate.housekeep();
        assert_eq!(rate.len(), 0);
        assert_eq!(gate.len(), 0);
    }

    #[test]
    fn per_ip_slots_are_counted_and_given_back_on_drop() {
        let registry = Arc::new(ConnectionsPerIp::new(2));
        let a = ip("192.0.2.1");
        let one = registry.acquire(a).unwrap();
        let two = registry.acquire(a).unwrap();
        assert!(registry.acquire(a).is_none());
        assert!(registry.acquire(ip("192.0.2.2")).is_some());
        drop(one);
        assert_eq!(registry.open_from(a), 1);
        let three = registry.acquire(a).unwrap();
        drop((two, three));
        assert_eq!(registry.addresses(), 0, "no entry outlives its slots");
    }

    #[test]
    fn origins_compare_as_browsers_send_them() {
        let allowed =
            AllowedOrigins::parse("https://App.Example.com/, http://localhost:3000").unwrap();
        assert!(allowed.allows("https://app.example.com"));
        assert!(allowed.allows("https://app.example.com:443"));
        assert!(allowed.allows("http://localhost:3000"));
        assert!(!allowed.allows("http://app.example.com"));
        assert!(!allowed.allows("https://evil.example.com"));
        assert!(!allowed.allows("null"));
        assert!(AllowedOrigins::parse("app.example.com").is_err());
        assert!(AllowedOrigins::parse("https://app.example.com/path").is_err());
    }
}
