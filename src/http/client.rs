//! Who is calling: the client address and scheme, believing
//! `X-Forwarded-For` / `X-Forwarded-Proto` only from `trusted_proxies`.

use std::net::IpAddr;

use actix_web::http::header::HeaderMap;

use crate::config::Cidr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientInfo {
    pub ip: IpAddr,
    /// The scheme the client used, as far as a trusted proxy says so.
    pub https: bool,
}

fn trusted(ip: &IpAddr, proxies: &[Cidr]) -> bool {
    proxies.iter().any(|p| p.contains(ip))
}

/// Resolves the client: when the peer is a trusted proxy, walk
/// `X-Forwarded-For` from the right, skipping trusted hops, and take the
/// first untrusted address (an address a client wrote itself further left is
/// never believed). Anything unparsable stops the walk at the last good hop.
pub fn resolve(
    peer: IpAddr,
    headers: &HeaderMap,
    proxies: &[Cidr],
    direct_https: bool,
) -> ClientInfo {
    let peer = canonical(peer);
    if !trusted(&peer, proxies) {
        return ClientInfo {
            ip: peer,
            https: direct_https,
        };
    }
    let mut ip = peer;
    let hops = headers
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        match parse_hop(hop) {
            Some(addr) => {
                ip = addr;
                if !trusted(&addr, proxies) {
                    break;
                }
            }
            None => break,
        }
    }
    let https = match headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
    {
        Some(proto) => proto.trim().eq_ignore_ascii_case("https"),
        None => direct_https,
    };
    ClientInfo { ip, https }
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:5678`, `::1`, `[::1]:80`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    hop.parse::<std::net::SocketAddr>()
        .ok()
        .map(|s| canonical(s.ip()))
}

/// IPv4-mapped IPv6 addresses are treated as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn proxies() -> Vec<Cidr> {
        vec!["10.0.0.0/8".parse().unwrap(), "127.0.0.1".parse().unwrap()]
    }

    #[test]
    fn untrusted_peer_headers_are_ignored() {
        let h = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-proto", "https"),
        ]);
        let c = resolve("203.0.113.9".parse().unwrap(), &h, &proxies(), false);
        assert_eq!(c.ip, "203.0.113.9".parse::<IpAddr>().unwrap());
        assert!(!c.https);
    }

    #[test]
    fn trusted_chain_yields_first_untrusted_from_the_right() {
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.1.2.3"),
            ("x-forwarded-proto", "https"),
        ]);
        let c = resolve("127.0.0.1".parse().unwrap(), &h, &proxies(), false);
        assert_eq!(c.ip, "198.51.100.7".parse::<IpAddr>().unwrap());
        assert!(c.https);
    }

    #[test]
    fn garbage_stops_at_last_good_hop() {
        let h = headers(&[("x-forwarded-for", "198.51.100.7, <script>")]);
        let c = resolve("10.0.0.1".parse().unwrap(), &h, &proxies(), false);
        assert_eq!(c.ip, "10.0.0.1".parse::<IpAddr>().unwrap());
        let h = headers(&[("x-forwarded-for", "[2001:db8::1]:443")]);
        let c = resolve("10.0.0.1".parse().unwrap(), &h, &proxies(), false);
        assert_eq!(c.ip, "2001:db8::1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn mapped_ipv4_is_canonical() {
        let c = resolve(
            "::ffff:127.0.0.1".parse().unwrap(),
            &HeaderMap::new(),
            &proxies(),
            false,
        );
        assert_eq!(c.ip, "127.0.0.1".parse::<IpAddr>().unwrap());
    }

    proptest::proptest! {
        /// A hop is exactly an IP address or a socket address, canonical
        /// (IPv4-mapped IPv6 is IPv4); anything else is no address.
        #[test]
        fn hops_parse_exactly_addresses(raw in "\\PC{0,48}|[0-9a-f:.\\[\\]]{1,48}") {
            let expected = raw
                .parse::<IpAddr>()
                .ok()
                .or_else(|| raw.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
                .map(canonical);
            proptest::prop_assert_eq!(parse_hop(&raw), expected);
        }

        #[test]
        fn addresses_round_trip_through_a_hop(a: u32, b: u128, port: u16) {
            let v4 = IpAddr::from(std::net::Ipv4Addr::from(a));
            proptest::prop_assert_eq!(parse_hop(&v4.to_string()), Some(v4));
            proptest::prop_assert_eq!(parse_hop(&format!("{v4}:{port}")), Some(v4));
            let v6 = IpAddr::from(std::net::Ipv6Addr::from(b));
            proptest::prop_assert_eq!(parse_hop(&v6.to_string()), Some(canonical(v6)));
            proptest::prop_assert_eq!(parse_hop(&format!("[{v6}]:{port}")), Some(canonical(v6)));
            let mapped = IpAddr::V6(std::net::Ipv4Addr::from(a).to_ipv6_mapped());
            proptest::prop_assert_eq!(parse_hop(&mapped.to_string()), Some(v4));
        }

        /// Whatever a client writes in X-Forwarded-For, an untrusted peer
        /// is the client, and a trusted one yields an address from the
        /// header or the peer itself.
        #[test]
        fn forwarded_for_never_panics(xff in "[ -~]{0,80}", trusted_peer: bool) {
            let h = headers(&[("x-forwarded-for", xff.as_str())]);
            let peer: IpAddr = if trusted_peer { "10.0.0.1" } else { "203.0.113.9" }.parse().unwrap();
            let c = resolve(peer, &h, &proxies(), false);
            if !trusted_peer {
                proptest::prop_assert_eq!(c.ip, peer);
            } else {
                proptest::prop_assert!(c.ip == peer || xff.split(',').any(|hop| parse_hop(hop.trim()) == Some(c.ip)));
            }
        }
    }
}
