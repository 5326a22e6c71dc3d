//! The client address every per-address limit is keyed by
//! (`http/client_ip.rs`): `ROLLCALL_TRUSTED_PROXIES` through
//! `TrustedProxies::parse`, then `TrustedProxies::client_ip` over the TCP
//! peer and the request's `X-Forwarded-For` headers.
//!
//! Asserts the module's documented rules: every address or network the
//! configuration names is trusted (IPv4-mapped IPv6 counting as IPv4), and
//! an empty configuration trusts nobody; the client is canonical (never
//! `::ffff:a.b.c.d`); an untrusted peer is the client whatever the headers
//! say; otherwise the client is the peer or an entry of the headers (a bare
//! address or `address:port`), the rightmost one that is not a trusted
//! proxy, so every entry right of it is trusted; a trusted proxy is the
//! client only when the peer and every hop are trusted; and an entry a
//! client prepends changes nothing then.
//!
//! Input: `trusted-proxies\0peer\0header\0header…`; the peer is an address
//! as text, or 4 / 16 raw bytes. Header values hyper would refuse are left
//! out.
#![no_main]

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use rollcall::http::client_ip::TrustedProxies;
use rollcall_fuzz::fields;

/// An `X-Forwarded-For` entry as the module documents it.
fn entry(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    IpAddr::from_str(text)
        .ok()
        .or_else(|| SocketAddr::from_str(text).ok().map(|s| s.ip()))
        .map(|ip| ip.to_canonical())
}

fuzz_target!(|data: &[u8]| {
    let [config, peer, headers] = fields::<3>(data);
    let Ok(config) = std::str::from_utf8(config) else {
        return;
    };
    let trusted = match TrustedProxies::parse(config) {
        Ok(trusted) => trusted,
        Err(message) => {
            assert!(!message.is_empty());
            return;
        }
    };
    let parts: Vec<&str> = config
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    assert_eq!(trusted.is_empty(), parts.is_empty());
    for part in &parts {
        let named = match ipnet::IpNet::from_str(part) {
            Ok(net) => net.addr(),
            Err(_) => IpAddr::from_str(part).expect("parse accepted it"),
        };
        assert!(
            trusted.contains(named),
            "{part:?} configured but {named} not trusted"
        );
        assert!(trusted.contains(named.to_canonical()));
        if let IpAddr::V4(v4) = named {
            assert!(trusted.contains(IpAddr::V6(v4.to_ipv6_mapped())));
        }
    }

    let peer = match std::str::from_utf8(peer)
        .ok()
        .and_then(|p| IpAddr::from_str(p).ok())
    {
        Some(ip) => ip,
        None => match peer.len() {
            4 => IpAddr::from(<[u8; 4]>::try_from(peer).unwrap()),
            16 => IpAddr::from(<[u8; 16]>::try_from(peer).unwrap()),
            _ => return,
        },
    };
    let mut map = HeaderMap::new();
    let mut values: Vec<HeaderValue> = Vec::new();
    for value in headers.split(|&b| b == 0) {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            map.append("x-forwarded-for", value.clone());
            values.push(value);
        }
    }
    let client = trusted.client_ip(peer, &map);
    let canonical_peer = peer.to_canonical();
    assert_eq!(client, client.to_canonical(), "a mapped client address");
    assert_eq!(trusted.contains(peer), trusted.contains(canonical_peer));
    if !trusted.contains(peer) {
        assert_eq!(
            client, canonical_peer,
            "an untrusted peer's header was believed"
        );
        return;
    }
    // The hops, left to right, as the headers name them.
    let hops: Vec<IpAddr> = values
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(entry)
        .collect();
    assert!(
        client == canonical_peer || hops.contains(&client),
        "{client} is neither the peer nor in the header"
    );
    if trusted.contains(client) {
        assert!(
            hops.iter().all(|&hop| trusted.contains(hop)),
            "a trusted proxy {client} named the client while an untrusted hop is in {hops:?}"
        );
        return;
    }
    let at = hops
        .iter()
        .rposition(|&hop| hop == client)
        .expect("an untrusted client is a hop");
    assert!(
        hops[at + 1..].iter().all(|&hop| trusted.contains(hop)),
        "{client} is not the rightmost untrusted hop of {hops:?}"
    );
    // What a client writes left of it changes nothing.
    let mut forged = HeaderMap::new();
    forged.append(
        "x-forwarded-for",
        HeaderValue::from_static("198.51.100.66, ::ffff:1.2.3.4"),
    );
    for value in values {
        forged.append("x-forwarded-for", value);
    }
    assert_eq!(
        trusted.client_ip(peer, &forged),
        client,
        "a prepended entry was believed"
    );
});
