//! The TCP connector of webhook deliveries: it resolves the target itself
//! (IP literals, bracketed IPv6 ones included, and names), refuses every
//! address the SSRF rule refuses before connecting, and checks the peer of
//! the connection it made once more. Nothing else decides where a delivery
//! goes, so a name cannot be re-pointed at a private address between the
//! check and the connection.

use std::io;
use std::net::{IpAddr, SocketAddr};

use actix_http::Uri;
use actix_tls::connect::tcp::TcpConnectorService;
use actix_tls::connect::{ConnectError, ConnectInfo, Connection};
use actix_web::dev::Service;
use futures_util::future::LocalBoxFuture;
use tokio::net::TcpStream;

use super::refusal;

/// The connector handed to the webhook HTTP client.
#[derive(Clone, Copy, Debug)]
pub struct GuardedConnector {
    /// Local mode or `webhooks.allow_private_targets`: any address goes.
    pub allow_private: bool,
}

/// A host as it appears in a URI: `[::1]` is the IPv6 literal `::1`.
pub fn literal_ip(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

fn refused(why: &str) -> ConnectError {
    ConnectError::Io(io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("target refused: it resolves to an address that is not globally reachable ({why})"),
    ))
}

/// The addresses to try for `host`: the literal itself, or what the system
/// resolver answers for a name. Unless `allow_private`, any refused address
/// refuses the whole target (a name with one private answer is not used).
pub async fn resolve(
    host: &str,
    port: u16,
    allow_private: bool,
) -> Result<Vec<SocketAddr>, ConnectError> {
    let addrs: Vec<SocketAddr> = match literal_ip(host) {
        Some(ip) => vec![SocketAddr::new(ip, port)],
        None => tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| ConnectError::Resolver(Box::new(e)))?
            .collect(),
    };
    if addrs.is_empty() {
        return Err(ConnectError::NoRecords);
    }
    if !allow_private {
        if let Some(why) = addrs.iter().find_map(|a| refusal(a.ip())) {
            return Err(refused(why));
        }
    }
    Ok(addrs)
}

impl Service<ConnectInfo<Uri>> for GuardedConnector {
    type Response = Connection<Uri, TcpStream>;
    type Error = ConnectError;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    actix_web::dev::always_ready!();

    fn call(&self, req: ConnectInfo<Uri>) -> Self::Future {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let addrs = resolve(req.hostname(), req.port(), allow_private).await?;
            let conn = TcpConnectorService::default()
                .call(req.set_addrs(addrs))
                .await?;
            if !allow_private {
                let peer = conn.io_ref().peer_addr().map_err(ConnectError::Io)?;
                if let Some(why) = refusal(peer.ip()) {
                    return Err(refused(why));
                }
            }
            Ok(conn)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bracketed_ipv6_literals_are_addresses() {
        assert_eq!(literal_ip("[::1]"), Some("::1".parse().unwrap()));
        assert_eq!(literal_ip("::1"), Some("::1".parse().unwrap()));
        assert_eq!(literal_ip("127.0.0.1"), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(
            literal_ip("[127.0.0.1]"),
            Some("127.0.0.1".parse().unwrap())
        );
        assert_eq!(literal_ip("hooks.acme.test"), None);
        assert_eq!(literal_ip("[::1"), None);
    }

    /// A listener that counts the connections it accepts.
    fn listener(addr: &str) -> (std::net::TcpListener, u16) {
        let l = std::net::TcpListener::bind(addr).unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        (l, port)
    }

    fn connect(uri: &str, allow_private: bool) -> Result<SocketAddr, String> {
        let uri: Uri = uri.parse().unwrap();
        actix_web::rt::System::new().block_on(async move {
            GuardedConnector { allow_private }
                .call(ConnectInfo::new(uri))
                .await
                .map(|c| c.io_ref().peer_addr().unwrap())
                .map_err(|e| match e {
                    ConnectError::Io(io) => io.to_string(),
                    other => other.to_string(),
                })
        })
    }

    #[test]
    fn loopback_targets_are_refused_before_any_connection() {
        for (bind, uri) in [
            ("127.0.0.1:0", "http://127.0.0.1:{port}/"),
            ("[::1]:0", "http://[::1]:{port}/"),
            ("127.0.0.1:0", "http://localhost:{port}/"),
        ] {
            let (l, port) = listener(bind);
            let err = connect(&uri.replace("{port}", &port.to_string()), false).unwrap_err();
            assert!(err.contains("not globally reachable"), "{uri}: {err}");
            assert!(err.contains("loopback"), "{err}");
            assert!(l.accept().is_err(), "{uri}: nothing connected");
        }
    }

    #[test]
    fn literal_targets_connect_when_private_targets_are_allowed() {
        for (bind, uri) in [
            ("127.0.0.1:0", "http://127.0.0.1:{port}/"),
            ("[::1]:0", "http://[::1]:{port}/"),
        ] {
            let (_l, port) = listener(bind);
            let peer = connect(&uri.replace("{port}", &port.to_string()), true).unwrap();
            assert_eq!(peer.port(), port);
            assert!(peer.ip().is_loopback());
        }
    }
}
