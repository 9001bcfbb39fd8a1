//! The HTTP conventions of SPEC section 4, in two middlewares that wrap every
//! route (see `startup::build_app` for their order):
//!
//! - [`observe`] (outermost): the request id, the client address through
//!   trusted proxies, the access log line and the request metrics;
//! - [`finish`]: the early body-size guard, the JSON error envelope for every
//!   error response (actix's own 404/405/413 and extractor failures too) and
//!   the security headers.

pub mod client;
pub mod extract;
pub mod host;
pub mod trace;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, Error, FromRequest, HttpMessage, HttpRequest};
use tracing::Instrument;

use crate::error::{ApiError, ErrorBody, ErrorCode, ErrorEnvelope};
use crate::state::AppState;

pub use client::ClientInfo;

/// Facts about the current request, available to every handler.
#[derive(Clone, Debug)]
pub struct RequestContext {
    pub request_id: Arc<str>,
    pub client: ClientInfo,
}

impl RequestContext {
    pub fn ip(&self) -> IpAddr {
        self.client.ip
    }
}

impl FromRequest for RequestContext {
    type Error = Error;
    type Future = std::future::Ready<Result<Self, Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        std::future::ready(Ok(context_of(req)))
    }
}

fn context_of(req: &HttpRequest) -> RequestContext {
    req.extensions()
        .get::<RequestContext>()
        .cloned()
        .unwrap_or_else(|| RequestContext {
            request_id: new_request_id().into(),
            client: ClientInfo {
                ip: req
                    .peer_addr()
                    .map(|a| a.ip())
                    .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
                https: false,
            },
        })
}

/// A client's request id is kept when it is 1-128 characters of `[A-Za-z0-9._-]`.
pub fn is_valid_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `req_` and 20 base62 characters. Request ids are correlation handles, not
/// secrets, so a fast non-cryptographic generator is enough.
pub fn new_request_id() -> String {
    let mut id = String::with_capacity(24);
    id.push_str("req_");
    for _ in 0..20 {
        id.push(BASE62[fastrand::usize(..BASE62.len())] as char);
    }
    id
}

pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let started = Instant::now();
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let request_id: Arc<str> = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_valid_request_id(v))
        .map(Arc::from)
        .unwrap_or_else(|| new_request_id().into());
    let peer = req
        .peer_addr()
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let proxies = state
        .as_ref()
        .map(|s| s.config.trusted_proxies.as_slice())
        .unwrap_or(&[]);
    let client = client::resolve(peer, req.headers(), proxies, req.app_config().secure());
    req.extensions_mut().insert(RequestContext {
        request_id: request_id.clone(),
        client,
    });
    let method = req.method().clone();
    let path = req.path().to_string();

    let span = tracing::info_span!("request", request_id = %request_id);
    let mut res = next.call(req).instrument(span).await?.map_into_boxed_body();
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        res.headers_mut()
            .insert(HeaderName::from_static("x-request-id"), value);
    }
    let status = res.status().as_u16();
    let elapsed = started.elapsed();
    if let Some(state) = &state {
        let route = res.request().match_pattern();
        state.metrics.observe_request(
            route.as_deref().unwrap_or("unmatched"),
            method.as_str(),
            status,
            elapsed,
        );
    }
    tracing::info!(
        target: "gatehouse::access",
        request_id = %request_id,
        method = %method,
        path = %path,
        status,
        latency_us = elapsed.as_micros() as u64,
        client_ip = %client.ip,
        "request"
    );
    Ok(res)
}

pub async fn finish(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let ctx = context_of(req.request());
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let hsts = state.as_ref().map(|s| s.https).unwrap_or(false);
    let limit = state
        .as_ref()
        .map(|s| s.config.http.max_body_bytes)
        .unwrap_or(usize::MAX);

    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let res = if declared.is_some_and(|len| len > limit as u64) {
        // Refused before the body is read or the route runs.
        req.error_response(ApiError::new(ErrorCode::PayloadTooLarge))
    } else {
        // Everything below (CORS, routing, handlers, extractors) turns its
        // errors into responses, so `Err` does not occur here. (A clone of the
        // request cannot be kept to convert one: routing needs sole ownership.)
        next.call(req).await?.map_into_boxed_body()
    };
    let mut res = if res.status().as_u16() >= 400 {
        render_error(res, &ctx.request_id)
    } else {
        res
    };
    let is_html = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    let is_api = res.request().path().starts_with("/api/");
    apply_security_headers(res.headers_mut(), is_html, is_api, hsts);
    let rate = res
        .request()
        .extensions_mut()
        .remove::<crate::keys::limiter::RateHeaders>();
    if let Some(crate::keys::limiter::RateHeaders(status, policy)) = rate {
        for (name, value) in crate::keys::limiter::rate_limit_headers(&status, policy.as_ref()) {
            res.headers_mut().insert(name, value);
        }
    }
    Ok(res)
}

/// Replaces the body of an error response with the envelope, keeping the
/// status and headers (`Retry-After`, RateLimit fields, ...).
fn render_error(res: ServiceResponse<BoxBody>, request_id: &str) -> ServiceResponse<BoxBody> {
    let status = res.status();
    let (code, message) = match res.response().error() {
        Some(err) => match err.as_error::<ApiError>() {
            Some(api) => {
                if let Some(cause) = api.cause() {
                    tracing::error!(
                        request_id,
                        code = api.code.as_str(),
                        cause,
                        "request failed"
                    );
                }
                (api.code, api.message.clone())
            }
            None => {
                let code = ErrorCode::for_status(status);
                if status.is_server_error() {
                    tracing::error!(request_id, error = %err, "request failed");
                }
                (code, code.default_message().to_string())
            }
        },
        None => {
            let code = ErrorCode::for_status(status);
            (code, code.default_message().to_string())
        }
    };
    let body = serde_json::to_string(&ErrorEnvelope {
        error: ErrorBody {
            code: code.as_str().to_string(),
            message,
            request_id: request_id.to_string(),
        },
    })
    .expect("the envelope serializes");
    res.map_body(|head, _| {
        head.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        head.headers.remove(header::CONTENT_LENGTH);
        BoxBody::new(body)
    })
}

const UI_CSP: &str =
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; form-action 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";
const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'";

fn apply_security_headers(headers: &mut HeaderMap, is_html: bool, is_api: bool, hsts: bool) {
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(if is_html { UI_CSP } else { API_CSP }),
    );
    if hsts {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        );
    }
    // API answers may carry tokens, keys or personal data: never cache them
    // unless the route chose a policy itself.
    if is_api && !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_id_rules() {
        assert!(is_valid_request_id("abc-123"));
        assert!(is_valid_request_id("a.b_c-D9"));
        assert!(!is_valid_request_id(""));
        assert!(!is_valid_request_id("<script>"));
        assert!(!is_valid_request_id(&"a".repeat(129)));
        assert!(is_valid_request_id(&"a".repeat(128)));
        let id = new_request_id();
        assert!(id.starts_with("req_") && id.len() == 24 && is_valid_request_id(&id));
    }
}
