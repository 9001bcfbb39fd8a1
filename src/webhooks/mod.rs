//! Outgoing webhooks: the events, endpoint validation, Standard Webhooks
//! signatures, and the server-side request forgery rule. Events are written
//! to an outbox in the transaction of the change that causes them
//! (`db::webhooks::emit`); `worker` delivers them.

pub mod worker;

use std::net::IpAddr;

use base64::Engine;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// Every event type a webhook can subscribe to.
pub const EVENTS: &[&str] = &[
    "key.created",
    "key.updated",
    "key.revoked",
    "key.rotated",
    "key.leaked",
    "member.added",
    "member.removed",
    "billing.plan_changed",
];

/// Sent by "send test event"; delivered only to the endpoint asked for.
pub const TEST_EVENT: &str = "webhook.test";

/// A signing secret: `whsec_` + base64 of 32 random bytes.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system CSPRNG is available");
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// The Standard Webhooks signature: `v1,` + base64 of HMAC-SHA256 over
/// `{id}.{timestamp}.{body}`, keyed with the base64-decoded part of the secret.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &str) -> Option<String> {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_")?)
        .ok()?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, &key);
    let tag = hmac::sign(&key, format!("{id}.{timestamp}.{body}").as_bytes());
    Some(format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
    ))
}

/// Addresses a webhook may not target outside local mode: loopback,
/// private, link-local (including cloud metadata at 169.254.169.254),
/// carrier-grade NAT, unique-local, unspecified, multicast and documentation ranges.
pub fn is_forbidden_target(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || o[0] >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_forbidden_target(IpAddr::V4(v4));
            }
            let seg = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00
                || (seg[0] & 0xffc0) == 0xfe80
                || (seg[0] == 0x2001 && seg[1] == 0x0db8)
                || (seg[0] == 0x64 && seg[1] == 0xff9b)
        }
    }
}

/// Checks an endpoint URL: absolute http(s), a host, at most 2048
/// characters, no credentials; and, unless `allow_private`, no literal
/// forbidden address. Names are checked again when they are resolved at
/// delivery time (so a name cannot be re-pointed at a private address).
pub fn validate_url(raw: &str, allow_private: bool) -> Result<url::Url, &'static str> {
    if raw.len() > 2048 {
        return Err("must be at most 2048 characters");
    }
    let url = url::Url::parse(raw).map_err(|_| "must be an absolute http(s) URL")?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must use http or https");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain credentials");
    }
    let host = url.host().ok_or("must have a host")?;
    if !allow_private {
        let literal = match host {
            url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
            url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
            url::Host::Domain(d)
                if d.eq_ignore_ascii_case("localhost") || d.ends_with(".localhost") =>
            {
                return Err("must not target a private, loopback or link-local address")
            }
            url::Host::Domain(_) => None,
        };
        if literal.is_some_and(is_forbidden_target) {
            return Err("must not target a private, loopback or link-local address");
        }
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_follows_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification.
        let sig = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        )
        .unwrap();
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(sign("no-prefix", "id", 1, "").is_none());
    }

    #[test]
    fn private_targets_are_refused() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_forbidden_target(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:4700::1111", "1.1.1.1"] {
            assert!(!is_forbidden_target(ip.parse().unwrap()), "{ip}");
        }
        assert!(validate_url("http://127.0.0.1:9/x", false).is_err());
        assert!(validate_url("http://localhost/x", false).is_err());
        assert!(validate_url("http://[::1]/", false).is_err());
        assert!(validate_url("http://127.0.0.1:9/x", true).is_ok());
        assert!(validate_url("https://hooks.acme.test/in", false).is_ok());
        assert!(validate_url("ftp://hooks.acme.test/", false).is_err());
        assert!(validate_url("https://user:pw@hooks.acme.test/", false).is_err());
    }
}
