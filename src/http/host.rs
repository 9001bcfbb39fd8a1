//! Who may reach a local-mode server, by the `Host` it was asked for.
//!
//! - [`LocalHosts`] (local mode only, wired in `startup::build_app`): every
//!   request whose `Host` is neither an IP literal, a loopback name
//!   (`localhost`, `*.localhost`) nor the `public_url` host is refused with
//!   403 `forbidden`. A web page that re-points its own name at 127.0.0.1
//!   (DNS rebinding) still sends its own name as `Host`, so it cannot read
//!   the demo's answers.
//! - [`is_direct_local`]: the local mailbox (it holds login codes) answers
//!   only a loopback TCP peer that came through no proxy and asked for a
//!   loopback host.

use std::cell::RefCell;
use std::net::IpAddr;
use std::rc::Rc;

use actix_web::body::EitherBody;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header::{self, HeaderMap};
use actix_web::{Error, HttpRequest};
use futures_util::future::{ready, Either, MapOk, Ready, TryFutureExt};

use crate::error::{ApiError, ErrorCode};

/// What a `Host` value (`name`, `name:port`, `1.2.3.4:80`, `[::1]:8080`) names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostName {
    Ip(IpAddr),
    /// A DNS name, lower-cased, without a trailing dot.
    Name(String),
}

/// Parses a `Host` header value; `None` for anything that is not a host
/// with an optional numeric port (an unbracketed IPv6 address, a user
/// part, an empty name, ...).
pub fn parse_host(value: &str) -> Option<HostName> {
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let (inner, after) = rest.split_once(']')?;
        let ip: std::net::Ipv6Addr = inner.parse().ok()?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        if let Some(port) = port {
            valid_port(port).then_some(())?;
        }
        return Some(HostName::Ip(IpAddr::V6(ip)));
    } else {
        match value.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (value, None),
        }
    };
    if let Some(port) = port {
        valid_port(port).then_some(())?;
    }
    if let Ok(ip) = host.parse::<std::net::Ipv4Addr>() {
        return Some(HostName::Ip(IpAddr::V4(ip)));
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .split('.')
            .all(|label| (1..=63).contains(&label.len()) && label.bytes().all(is_name_byte));
    ok.then(|| HostName::Name(name.to_ascii_lowercase()))
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

fn valid_port(port: &str) -> bool {
    (1..=5).contains(&port.len()) && port.bytes().all(|b| b.is_ascii_digit())
}

impl HostName {
    /// `localhost` or a name under `.localhost` (RFC 6761: always loopback).
    pub fn is_loopback_name(&self) -> bool {
        matches!(self, HostName::Name(n) if n == "localhost" || n.ends_with(".localhost"))
    }

    /// A loopback name or a loopback address (IPv4-mapped ones included).
    pub fn is_loopback(&self) -> bool {
        match self {
            HostName::Ip(ip) => canonical(*ip).is_loopback(),
            HostName::Name(_) => self.is_loopback_name(),
        }
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The local-mode rule: an IP literal, a loopback name or `public_host`.
/// A request without any `Host` (HTTP/1.0) is not a browser's and passes.
pub fn local_mode_allows(host: Option<&str>, public_host: Option<&str>) -> bool {
    let Some(host) = host else { return true };
    match parse_host(host) {
        Some(HostName::Ip(_)) => true,
        Some(name @ HostName::Name(_)) => {
            name.is_loopback_name()
                || public_host.is_some_and(|p| {
                    let HostName::Name(n) = &name else {
                        return false;
                    };
                    n.eq_ignore_ascii_case(p.strip_suffix('.').unwrap_or(p))
                })
        }
        None => false,
    }
}

/// The `Host` a request asked for: the header, or the authority of an
/// absolute request target (HTTP/2's `:authority`).
pub fn requested_host(headers: &HeaderMap, uri: &actix_web::http::Uri) -> Option<String> {
    match headers.get(header::HOST) {
        Some(v) => Some(v.to_str().unwrap_or("\u{0}").to_string()),
        None => uri.authority().map(|a| a.as_str().to_string()),
    }
}

/// Whether a request comes straight from this machine: a loopback TCP
/// peer, no `Forwarded`, `X-Forwarded-For` or `X-Real-IP` header, and a
/// loopback `Host`.
pub fn is_direct_local(peer: Option<IpAddr>, headers: &HeaderMap, host: Option<&str>) -> bool {
    let proxied = ["forwarded", "x-forwarded-for", "x-real-ip"]
        .iter()
        .any(|h| headers.contains_key(*h));
    peer.is_some_and(|p| canonical(p).is_loopback())
        && !proxied
        && host.and_then(parse_host).is_some_and(|h| h.is_loopback())
}

/// [`is_direct_local`] for a request, as a 403 `forbidden` when it is not.
pub fn require_direct_local(req: &HttpRequest) -> Result<(), ApiError> {
    let host = requested_host(req.headers(), req.uri());
    let peer = req.peer_addr().map(|a| a.ip());
    if is_direct_local(peer, req.headers(), host.as_deref()) {
        Ok(())
    } else {
        Err(ApiError::new(ErrorCode::Forbidden).with_message(
            "The local mailbox answers only requests made directly on this machine \
             (loopback address and host name, no proxy).",
        ))
    }
}

/// The local-mode `Host` check as middleware (see the module docs).
#[derive(Clone)]
pub struct LocalHosts {
    public_host: Option<Rc<str>>,
}

impl LocalHosts {
    pub fn new(public_url: &url::Url) -> Self {
        LocalHosts {
            public_host: public_url.host_str().map(Rc::from),
        }
    }
}

impl<S, B> Transform<S, ServiceRequest> for LocalHosts
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Transform = LocalHostsService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, ()>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(LocalHostsService {
            service,
            public_host: self.public_host.clone(),
            last_allowed: RefCell::new(Vec::new()),
        }))
    }
}

pub struct LocalHostsService<S> {
    service: S,
    public_host: Option<Rc<str>>,
    /// The last `Host` header value allowed on this worker: clients send
    /// the same one on every request, and comparing it is cheaper than
    /// parsing it again ([`local_mode_allows`] depends on nothing else).
    last_allowed: RefCell<Vec<u8>>,
}

type Passed<B> = fn(ServiceResponse<B>) -> ServiceResponse<EitherBody<B>>;

impl<S, B> Service<ServiceRequest> for LocalHostsService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Future = Either<MapOk<S::Future, Passed<B>>, Ready<Result<Self::Response, Error>>>;

    actix_web::dev::forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let value = req.headers().get(header::HOST);
        let host = value.map(|v| v.to_str().unwrap_or("\u{0}"));
        // (Empty before the first allowed host; an empty Host is refused.)
        let seen =
            value.is_some_and(|v| !v.is_empty() && *self.last_allowed.borrow() == v.as_bytes());
        let allowed = match host {
            Some(_) if seen => true,
            Some(h) => {
                let allowed = local_mode_allows(Some(h), self.public_host.as_deref());
                if allowed && h.len() <= 256 {
                    let mut last = self.last_allowed.borrow_mut();
                    last.clear();
                    last.extend_from_slice(h.as_bytes());
                }
                allowed
            }
            None => local_mode_allows(
                req.uri().authority().map(|a| a.as_str()),
                self.public_host.as_deref(),
            ),
        };
        if allowed {
            let passed: Passed<B> = ServiceResponse::map_into_left_body;
            Either::Left(self.service.call(req).map_ok(passed))
        } else {
            let refusal = ApiError::new(ErrorCode::Forbidden).with_message(
                "This local server answers only for IP addresses, localhost and its public_url host.",
            );
            Either::Right(ready(Ok(req.error_response(refusal).map_into_right_body())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_values_parse() {
        let ip = |s: &str| Some(HostName::Ip(s.parse().unwrap()));
        let name = |s: &str| Some(HostName::Name(s.into()));
        for (value, expected) in [
            ("127.0.0.1", ip("127.0.0.1")),
            ("127.0.0.1:8080", ip("127.0.0.1")),
            ("[::1]", ip("::1")),
            ("[::1]:8080", ip("::1")),
            ("[::ffff:127.0.0.1]:80", ip("::ffff:127.0.0.1")),
            ("LocalHost:8080", name("localhost")),
            ("localhost.", name("localhost")),
            ("app.localhost", name("app.localhost")),
            ("keys.acme.test:443", name("keys.acme.test")),
            ("::1", None),
            ("[::1", None),
            ("[::1]x", None),
            ("[::1]:", None),
            ("host:", None),
            ("host:80:80", None),
            ("host:123456", None),
            ("user@host", None),
            ("", None),
            (":80", None),
            ("a..b", None),
            ("evil.test/x", None),
        ] {
            assert_eq!(parse_host(value), expected, "{value:?}");
        }
    }

    #[test]
    fn local_mode_answers_ip_literals_loopback_names_and_the_public_host() {
        let public = Some("gate.lan");
        for ok in [
            "127.0.0.1:8080",
            "10.0.0.5",
            "[::1]:8080",
            "localhost:8080",
            "LOCALHOST",
            "ui.localhost:8080",
            "gate.lan:8080",
            "GATE.LAN.",
        ] {
            assert!(local_mode_allows(Some(ok), public), "{ok}");
        }
        for refused in [
            "evil.test",
            "evil.test:8080",
            "localhost.evil.test",
            "evillocalhost",
            "gate.lan.evil.test",
            "",
            "::1",
            "\u{0}",
        ] {
            assert!(!local_mode_allows(Some(refused), public), "{refused:?}");
        }
        assert!(!local_mode_allows(Some("gate.lan"), None));
        assert!(local_mode_allows(None, None), "no Host: not a browser");
    }

    #[test]
    fn the_mailbox_needs_a_direct_loopback_request() {
        let loopback = Some("127.0.0.1".parse().unwrap());
        let v6 = Some("::1".parse().unwrap());
        let remote = Some("192.0.2.7".parse().unwrap());
        let none = HeaderMap::new();
        assert!(is_direct_local(loopback, &none, Some("127.0.0.1:8080")));
        assert!(is_direct_local(loopback, &none, Some("localhost:8080")));
        assert!(is_direct_local(v6, &none, Some("[::1]:8080")));
        assert!(is_direct_local(
            Some("::ffff:127.0.0.1".parse().unwrap()),
            &none,
            Some("127.0.0.2")
        ));
        assert!(!is_direct_local(remote, &none, Some("127.0.0.1:8080")));
        assert!(!is_direct_local(None, &none, Some("127.0.0.1:8080")));
        assert!(!is_direct_local(loopback, &none, Some("gate.lan:8080")));
        assert!(!is_direct_local(loopback, &none, Some("10.0.0.5:8080")));
        assert!(!is_direct_local(loopback, &none, None));
        for h in ["forwarded", "x-forwarded-for", "x-real-ip"] {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::HeaderName::from_static(h),
                header::HeaderValue::from_static("127.0.0.1"),
            );
            assert!(
                !is_direct_local(loopback, &headers, Some("127.0.0.1:8080")),
                "{h}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn any_host_value_is_judged_without_panicking(value in "\\PC{0,40}", public in "[a-z.]{0,12}") {
            let allowed = local_mode_allows(Some(&value), Some(&public));
            if let Some(HostName::Ip(_)) = parse_host(&value) {
                proptest::prop_assert!(allowed);
            }
            if parse_host(&value).is_none() {
                proptest::prop_assert!(!allowed);
            }
        }
    }
}
