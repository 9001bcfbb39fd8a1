//! The IETF RateLimit fields on answers to requests checked with an API
//! key: rendered from the limiter's [`RateStatus`], set on the response by
//! the conventions middleware (see [`super::Conventions`]).

use actix_web::http::header::{HeaderName, HeaderValue};

use crate::keys::limiter::RateStatus;

const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// The IETF RateLimit fields (draft-ietf-httpapi-ratelimit-headers-10) for a
/// status: `RateLimit-Policy: "default";q=100;w=60` and
/// `RateLimit: "default";r=42;t=12`. A pre-rendered policy value is used
/// as is.
pub fn rate_limit_headers(
    status: &RateStatus,
    policy: Option<&HeaderValue>,
) -> [(HeaderName, HeaderValue); 2] {
    let policy = policy.cloned().unwrap_or_else(|| {
        HeaderValue::from_str(&format!(
            "\"default\";q={};w={}",
            status.limit, status.window_secs
        ))
        .expect("digits are a valid header value")
    });
    // Written on the stack, without `core::fmt`: this runs for every checked key.
    let mut buf = [0u8; 64];
    let mut len = 0;
    let (mut remaining, mut reset) = (itoa::Buffer::new(), itoa::Buffer::new());
    let remaining = remaining.format(status.remaining);
    let reset = reset.format(status.reset_secs);
    for part in [
        &b"\"default\";r="[..],
        remaining.as_bytes(),
        b";t=",
        reset.as_bytes(),
    ] {
        buf[len..len + part.len()].copy_from_slice(part);
        len += part.len();
    }
    let current = HeaderValue::from_bytes(&buf[..len]).expect("digits are a valid header value");
    [(RATELIMIT_POLICY, policy), (RATELIMIT, current)]
}

/// Set on a request authenticated by an API key; the response middleware
/// turns it into the RateLimit fields on whatever answer is sent. The
/// policy field, when the key's is already rendered, is reused as is.
#[derive(Clone, Debug)]
pub struct RateHeaders(pub RateStatus, pub Option<HeaderValue>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ratelimit_fields_name_the_policy_and_what_is_left() {
        let status = RateStatus {
            allowed: true,
            limit: 100,
            window_secs: 60,
            remaining: 42,
            reset_secs: 12,
        };
        let [(policy_name, policy), (name, current)] = rate_limit_headers(&status, None);
        assert_eq!(policy_name, "ratelimit-policy");
        assert_eq!(policy, "\"default\";q=100;w=60");
        assert_eq!(name, "ratelimit");
        assert_eq!(current, "\"default\";r=42;t=12");
        let rendered = HeaderValue::from_static("\"default\";q=5;w=1");
        let [(_, policy), (_, current)] = rate_limit_headers(
            &RateStatus {
                remaining: 0,
                reset_secs: 3600,
                ..status
            },
            Some(&rendered),
        );
        assert_eq!(policy, rendered);
        assert_eq!(current, "\"default\";r=0;t=3600");
    }
}
