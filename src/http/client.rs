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
}
