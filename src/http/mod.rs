//! The HTTP conventions every route follows (README, "HTTP conventions"),
//! in one middleware that wraps every route ([`Conventions`]): the request
//! id, the client address through trusted proxies, the early body-size
//! guard, the JSON error envelope, the security headers, the request metrics
//! and the access log line.

pub mod client;
pub mod extract;
pub mod host;
pub mod ratelimit;
pub mod trace;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::{Error, FromRequest, HttpMessage, HttpRequest};
use futures_util::future::LocalBoxFuture;

use crate::config::Config;
use crate::error::{ApiError, ErrorBody, ErrorCode, ErrorEnvelope};
use crate::metrics::Metrics;

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

    /// What the per-address throttles count this client as (its /64 on
    /// IPv6).
    pub fn throttle_subject(&self) -> crate::auth::throttle::ThrottleSubject {
        crate::auth::throttle::ThrottleSubject::from_ip(self.client.ip)
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
    String::from_utf8(new_request_id_bytes().to_vec()).expect("ASCII")
}

fn new_request_id_bytes() -> [u8; 24] {
    let mut id = *b"req_00000000000000000000";
    // Ten base62 digits from each of two random words (62^10 < 2^64).
    let mut words = [fastrand::u64(..), fastrand::u64(..)];
    for (i, b) in id[4..].iter_mut().enumerate() {
        let word = &mut words[i / 10];
        *b = BASE62[(*word % 62) as usize];
        *word /= 62;
    }
    id
}

/// The HTTP conventions around every route, as one middleware (see
/// `startup::build_app`): the request id, the client address through trusted
/// proxies, the early body-size guard, the JSON error envelope for every
/// error response (actix's own 404/405/413 and extractor failures too), the
/// security headers and RateLimit fields, the request metrics and the access
/// log line.
///
/// Written as a plain `Transform` rather than with `from_fn`: one boxed
/// future per request instead of four, and no per-request lookups of the
/// application state.
pub struct Conventions {
    settings: Rc<Settings>,
}

/// What the conventions read: the configuration (trusted proxies, the body
/// limit), whether browsers reach Gatehouse over https (HSTS), the
/// request metrics, and whether a graceful stop is draining connections.
struct Settings {
    config: Arc<Config>,
    https: bool,
    metrics: Arc<Metrics>,
    drain: Arc<crate::drain::HttpDrain>,
}

impl Conventions {
    pub fn new(
        config: Arc<Config>,
        https: bool,
        metrics: Arc<Metrics>,
        drain: Arc<crate::drain::HttpDrain>,
    ) -> Self {
        Conventions {
            settings: Rc::new(Settings {
                config,
                https,
                metrics,
                drain,
            }),
        }
    }
}

impl<S, B> Transform<S, ServiceRequest> for Conventions
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Transform = ConventionsService<S>;
    type InitError = ();
    type Future = std::future::Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        std::future::ready(Ok(ConventionsService {
            service,
            state: self.settings.clone(),
        }))
    }
}

pub struct ConventionsService<S> {
    service: S,
    /// Shared with the requests in flight without touching an `Arc`.
    state: Rc<Settings>,
}

impl<S, B> Service<ServiceRequest> for ConventionsService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    actix_web::dev::forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let started = Instant::now();
        let state = self.state.clone();
        let (request_id, id_header) = request_id_of(req.headers());
        let peer = req
            .peer_addr()
            .map(|a| a.ip())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let client = client::resolve(
            peer,
            req.headers(),
            &state.config.trusted_proxies,
            req.app_config().secure(),
        );
        req.extensions_mut().insert(RequestContext {
            request_id: request_id.clone(),
            client,
        });
        let limit = state.config.http.max_body_bytes as u64;
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let answer = if declared.is_some_and(|len| len > limit) {
            // Refused before the body is read or the route runs.
            Err(req
                .error_response(ApiError::new(ErrorCode::PayloadTooLarge))
                .map_into_right_body())
        } else {
            Ok(crate::telemetry::in_request(&request_id, || {
                self.service.call(req)
            }))
        };
        Box::pin(async move {
            let res = match answer {
                // Everything below (CORS, routing, handlers, extractors)
                // turns its errors into responses, so `Err` does not occur
                // here. (A clone of the request cannot be kept to convert
                // one: routing needs sole ownership.)
                Ok(call) => {
                    // Events logged while the route runs carry the request id.
                    let mut call = std::pin::pin!(call);
                    std::future::poll_fn(|cx| {
                        crate::telemetry::in_request(&request_id, || call.as_mut().poll(cx))
                    })
                    .await?
                    .map_into_left_body()
                }
                Err(refused) => refused,
            };
            let mut res = if res.status().as_u16() >= 400 {
                render_error(res, &request_id)
            } else {
                res
            };
            finish_headers(&mut res, state.https, id_header);
            if state.drain.is_draining() {
                // Stopping: the client (a proxy) must not send another
                // request on this connection (see `drain::HttpDrain`).
                res.response_mut()
                    .head_mut()
                    .set_connection_type(actix_web::http::ConnectionType::Close);
            }
            let status = res.status();
            let elapsed = started.elapsed();
            let req = res.request();
            state.metrics.observe_request(
                req.match_pattern().as_deref(),
                req.method(),
                status,
                elapsed,
            );
            crate::telemetry::access(&crate::telemetry::AccessRecord {
                request_id: &request_id,
                method: req.method().as_str(),
                path: req.path(),
                status: status.as_u16(),
                latency_us: elapsed.as_micros().min(u64::MAX as u128) as u64,
                client_ip: client.ip,
            });
            Ok(res)
        })
    }
}

/// Header names used on every request, built at compile time (a name
/// given as text, or made with `from_static` at run time, is parsed on
/// every use).
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request id to use and its header value: the client's own when it
/// follows the rule (its header value is reused as is), else a new one.
fn request_id_of(headers: &HeaderMap) -> (Arc<str>, HeaderValue) {
    if let Some(value) = headers.get(&X_REQUEST_ID) {
        if let Some(id) = value.to_str().ok().filter(|v| is_valid_request_id(v)) {
            return (Arc::from(id), value.clone());
        }
    }
    let id = new_request_id_bytes();
    let value = HeaderValue::from_bytes(&id).expect("base62 is a valid header value");
    (Arc::from(std::str::from_utf8(&id).expect("ASCII")), value)
}

/// The headers every answer carries: its request id, the security headers
/// and, for requests checked with an API key, the RateLimit fields.
fn finish_headers<B>(res: &mut ServiceResponse<B>, hsts: bool, request_id: HeaderValue) {
    let is_html = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/html"));
    let is_api = res.request().path().starts_with("/api/");
    let rate = res
        .request()
        .extensions_mut()
        .remove::<ratelimit::RateHeaders>();
    let headers = res.headers_mut();
    headers.insert(X_REQUEST_ID, request_id);
    apply_security_headers(headers, is_html, is_api, hsts);
    if let Some(ratelimit::RateHeaders(status, policy)) = rate {
        for (name, value) in ratelimit::rate_limit_headers(&status, policy.as_ref()) {
            headers.insert(name, value);
        }
    }
}

/// Replaces the body of an error response with the envelope, keeping the
/// status and headers (`Retry-After`, RateLimit fields, ...).
fn render_error<B>(
    res: ServiceResponse<EitherBody<B>>,
    request_id: &str,
) -> ServiceResponse<EitherBody<B>> {
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
        EitherBody::right(BoxBody::new(body))
    })
}

const UI_CSP: &str =
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; form-action 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";
const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'";

/// The security headers' values, checked at compile time (`from_static`
/// called at run time checks every byte again on every answer).
const NOSNIFF: HeaderValue = HeaderValue::from_static("nosniff");
const NO_REFERRER: HeaderValue = HeaderValue::from_static("no-referrer");
const DENY: HeaderValue = HeaderValue::from_static("DENY");
const UI_CSP_VALUE: HeaderValue = HeaderValue::from_static(UI_CSP);
const API_CSP_VALUE: HeaderValue = HeaderValue::from_static(API_CSP);
const HSTS: HeaderValue = HeaderValue::from_static("max-age=31536000; includeSubDomains");
/// `Cache-Control: no-store`, also set by the hot routes themselves.
pub const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");
/// `Content-Type: application/json`, for routes that write their own body.
pub const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");

fn apply_security_headers(headers: &mut HeaderMap, is_html: bool, is_api: bool, hsts: bool) {
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, NOSNIFF);
    headers.insert(header::REFERRER_POLICY, NO_REFERRER);
    headers.insert(header::X_FRAME_OPTIONS, DENY);
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        if is_html { UI_CSP_VALUE } else { API_CSP_VALUE },
    );
    if hsts {
        headers.insert(header::STRICT_TRANSPORT_SECURITY, HSTS);
    }
    // API answers may carry tokens, keys or personal data: never cache them
    // unless the route chose a policy itself.
    if is_api && !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, NO_STORE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_request_ids_differ_and_use_every_digit() {
        let ids: std::collections::HashSet<String> = (0..2000).map(|_| new_request_id()).collect();
        assert_eq!(ids.len(), 2000);
        let used: std::collections::HashSet<u8> = ids
            .iter()
            .flat_map(|id| id.as_bytes()[4..].to_vec())
            .collect();
        assert_eq!(used.len(), BASE62.len());
    }

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
