//! The client address every per-address limit is keyed by.
//!
//! It is the TCP peer, unless the peer is one of `ROLLCALL_TRUSTED_PROXIES`:
//! then `X-Forwarded-For` is read from the right (each proxy appends the
//! address it received the request from), skipping trusted proxies, and the
//! first entry that is not one is the client. Entries left of it were
//! written by the client itself, so prepending fake ones changes nothing.
//! Malformed entries are skipped, never trusted. IPv4-mapped IPv6 addresses
//! (`::ffff:1.2.3.4`, what a dual-stack listener reports) count as IPv4,
//! and a configured IPv6 range that covers mapped addresses (`::/0`) covers
//! those IPv4 addresses.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use ipnet::IpNet;

/// `ROLLCALL_TRUSTED_PROXIES`: networks whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Comma-separated CIDRs (`10.0.0.0/8`, `fd00::/8`) or bare addresses;
    /// an empty string trusts nobody.
    pub fn parse(s: &str) -> Result<Self, String> {
        s.split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(|part| {
                IpNet::from_str(part)
                    .or_else(|_| IpAddr::from_str(part).map(IpNet::from))
                    .map(|net| match net {
                        // A mapped range is the IPv4 range it maps.
                        IpNet::V6(v6) => match v6.addr().to_ipv4_mapped() {
                            Some(v4) if v6.prefix_len() >= 96 => {
                                IpNet::new(v4.into(), v6.prefix_len() - 96).unwrap_or(net)
                            }
                            _ => net,
                        },
                        v4 => v4,
                    })
                    .map_err(|_| format!("{part:?} is not an IP address or CIDR"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        // An IPv6 range wider than /96 that covers mapped addresses
        // (`::/0`, `::ffff:10.0.0.0/90`) covers those IPv4 addresses too.
        let mapped = match ip {
            IpAddr::V4(v4) => Some(IpAddr::V6(v4.to_ipv6_mapped())),
            IpAddr::V6(_) => None,
        };
        self.0
            .iter()
            .any(|net| net.contains(&ip) || mapped.is_some_and(|m| net.contains(&m)))
    }

    /// The client behind `peer`, given the request's headers.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.contains(peer) {
            return peer;
        }
        // Several X-Forwarded-For headers form one list, in order.
        let entries: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .filter_map(parse_entry)
            .collect();
        match entries.iter().rev().find(|ip| !self.contains(**ip)) {
            Some(client) => *client,
            // Every hop is a trusted proxy: the farthest one is the client;
            // no usable header at all: the peer is.
            None => entries.first().copied().unwrap_or(peer),
        }
    }
}

/// One `X-Forwarded-For` entry: an address, possibly with a port
/// (`1.2.3.4:5`, `[::1]:5`) as some proxies write it.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    IpAddr::from_str(entry)
        .or_else(|_| SocketAddr::from_str(entry).map(|s| s.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

/// The resolved client address of a request.
///
/// The TCP peer comes from `ConnectInfo<SocketAddr>`, which the server puts
/// into every request. A router served without it (some in-process unit
/// tests) sees every request as coming from `0.0.0.0`: all of them share
/// one address's limits, which fails closed rather than open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl<S> FromRequestParts<S> for ClientIp
where
    S: Send + Sync,
    Arc<TrustedProxies>: FromRef<S>,
{
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let trusted = Arc::<TrustedProxies>::from_ref(state);
        Ok(Self(trusted.client_ip(peer, &parts.headers)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        headers
    }

    #[test]
    fn parses_cidrs_and_bare_addresses() {
        let t = TrustedProxies::parse(" 10.0.0.0/8, 192.168.1.7 ,fd00::/8,::1").unwrap();
        assert!(t.contains(ip("10.200.3.4")));
        assert!(t.contains(ip("192.168.1.7")));
        assert!(!t.contains(ip("192.168.1.8")));
        assert!(t.contains(ip("fd12::1")));
        assert!(t.contains(ip("::1")));
        assert!(!t.contains(ip("2001:db8::1")));
        assert!(TrustedProxies::parse("").unwrap().is_empty());
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        assert!(TrustedProxies::parse("proxy.example.com").is_err());
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client() {
        let t = TrustedProxies::default();
        let headers = xff(&["203.0.113.9"]);
        assert_eq!(t.client_ip(ip("127.0.0.1"), &headers), ip("127.0.0.1"));
    }

    #[test]
    fn an_untrusted_peer_is_not_believed() {
        let t = TrustedProxies::parse("10.0.0.1").unwrap();
        let headers = xff(&["203.0.113.9"]);
        assert_eq!(
            t.client_ip(ip("198.51.100.2"), &headers),
            ip("198.51.100.2")
        );
    }

    #[test]
    fn a_trusted_peer_names_the_rightmost_untrusted_entry() {
        let t = TrustedProxies::parse("10.0.0.0/8").unwrap();
        // The client prepended a fake address; the proxies appended theirs.
        let headers = xff(&["1.1.1.1, 203.0.113.9, 10.0.0.2"]);
        assert_eq!(t.client_ip(ip("10.0.0.1"), &headers), ip("203.0.113.9"));
        // Split over several headers, the same list.
        let headers = xff(&["1.1.1.1", "203.0.113.9", "10.0.0.2"]);
        assert_eq!(t.client_ip(ip("10.0.0.1"), &headers), ip("203.0.113.9"));
    }

    #[test]
    fn malformed_entries_are_skipped_never_trusted() {
        let t = TrustedProxies::parse("10.0.0.1").unwrap();
        let headers = xff(&["203.0.113.9, not-an-ip, unknown"]);
        assert_eq!(t.client_ip(ip("10.0.0.1"), &headers), ip("203.0.113.9"));
        // Nothing usable: the proxy itself is the client.
        let headers = xff(&["garbage"]);
        assert_eq!(t.client_ip(ip("10.0.0.1"), &headers), ip("10.0.0.1"));
        assert_eq!(
            t.client_ip(ip("10.0.0.1"), &HeaderMap::new()),
            ip("10.0.0.1")
        );
        // Ports, as some proxies write them.
        let headers = xff(&["203.0.113.9:4711"]);
        assert_eq!(t.client_ip(ip("10.0.0.1"), &headers), ip("203.0.113.9"));
        let headers = xff(&["[2001:db8::5]:4711"]);
        assert_eq!(t.client_ip(ip("10.0.0.1"), &headers), ip("2001:db8::5"));
    }

    #[test]
    fn all_trusted_hops_name_the_farthest() {
        let t = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let headers = xff(&["10.0.0.7, 10.0.0.2"]);
        assert_eq!(t.client_ip(ip("10.0.0.1"), &headers), ip("10.0.0.7"));
    }

    #[test]
    fn ipv6_clients_and_proxies() {
        let t = TrustedProxies::parse("2001:db8:1::/48").unwrap();
        let headers = xff(&["2001:db8:ffff::1, 2001:db8:1::2"]);
        assert_eq!(
            t.client_ip(ip("2001:db8:1::1"), &headers),
            ip("2001:db8:ffff::1")
        );
        assert_eq!(
            t.client_ip(ip("2001:db8:2::1"), &headers),
            ip("2001:db8:2::1")
        );
    }

    #[test]
    fn ipv4_mapped_ipv6_counts_as_ipv4() {
        // A dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d.
        let t = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let headers = xff(&["::ffff:203.0.113.9"]);
        assert_eq!(
            t.client_ip(ip("::ffff:10.0.0.1"), &headers),
            ip("203.0.113.9")
        );
        // An untrusted mapped peer is its IPv4 address.
        assert_eq!(
            t.client_ip(ip("::ffff:198.51.100.2"), &headers),
            ip("198.51.100.2")
        );
        // A mapped range in the configuration means its IPv4 range.
        let t = TrustedProxies::parse("::ffff:10.0.0.0/104").unwrap();
        assert!(t.contains(ip("10.1.2.3")));
        assert!(t.contains(ip("::ffff:10.1.2.3")));
    }

    #[test]
    fn a_wide_ipv6_range_covers_the_ipv4_addresses_it_maps() {
        // Found by the client_address fuzz target: the range named by
        // `::ffff:10.0.0.0/1` (or `::/0`) holds `::ffff:10.0.0.0`, but an
        // IPv6 range shorter than /96 was only ever compared with the
        // IPv4 form of a mapped address, so it trusted none of them.
        let t = TrustedProxies::parse("::ffff:10.0.0.0/1").unwrap();
        assert!(t.contains(ip("::ffff:10.0.0.0")));
        assert!(t.contains(ip("10.0.0.0")));
        assert!(t.contains(ip("::1")));
        assert!(!t.contains(ip("8000::1")));
        let everyone = TrustedProxies::parse("::/0").unwrap();
        assert!(everyone.contains(ip("203.0.113.9")));
        let headers = xff(&["198.51.100.7"]);
        assert_eq!(
            everyone.client_ip(ip("::ffff:10.0.0.1"), &headers),
            ip("198.51.100.7")
        );
        // A range that does not reach the mapped block still does not.
        let t = TrustedProxies::parse("2001:db8::/32").unwrap();
        assert!(!t.contains(ip("10.0.0.1")));
    }
}
