//! The request span, when traces are exported (`telemetry::traces`; wrapped
//! in `startup::build_app` only then, so without export requests never
//! pass through here).
//!
//! One server span per request, named `{METHOD} {route template}`
//! (`GET /api/v1/keys/{key_id}`; just the method when no route matched):
//! never the raw path, which can hold ids, and never a header value that
//! could be a key or token. Attributes: method, route, status, request id,
//! client address and scheme (as resolved through `trusted_proxies`). A W3C
//! `traceparent` is believed only from a trusted proxy; anyone else's starts
//! nothing and the request begins a new trace.

use std::net::IpAddr;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::HeaderMap;
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, Error, HttpMessage};
use opentelemetry::context::FutureExt;
use opentelemetry::propagation::Extractor;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};

use crate::config::Cidr;
use crate::http::RequestContext;
use crate::state::AppState;
use crate::telemetry::traces;

pub async fn trace(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let Some((state, tracing)) = state.and_then(|s| s.traces.clone().map(|t| (s, t))) else {
        return next.call(req).await;
    };
    let parent = match req.peer_addr() {
        Some(peer) if is_trusted(peer.ip(), &state.config.trusted_proxies) => {
            traces::extract(&Headers(req.headers()))
        }
        _ => Context::new(),
    };
    let method = method_label(req.method());
    let route = req.match_pattern();
    let mut attributes = vec![KeyValue::new("http.request.method", method)];
    if let Some(route) = &route {
        attributes.push(KeyValue::new("http.route", route.clone()));
    }
    if let Some(peer) = req.peer_addr() {
        attributes.push(KeyValue::new("network.peer.address", peer.ip().to_string()));
    }
    let tracer = tracing.tracer();
    let span = tracer
        .span_builder(span_name(method, route.as_deref()))
        .with_kind(SpanKind::Server)
        .with_attributes(attributes)
        .start_with_context(tracer, &parent);
    let cx = parent.with_span(span);

    let result = next.call(req).with_context(cx.clone()).await;

    let span = cx.span();
    match &result {
        Ok(res) => {
            let status = res.status().as_u16();
            span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
            if let Some(id) = res
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
            {
                span.set_attribute(KeyValue::new("gatehouse.request_id", id.to_string()));
            }
            if let Some(ctx) = res.request().extensions().get::<RequestContext>() {
                span.set_attribute(KeyValue::new("client.address", ctx.client.ip.to_string()));
                let scheme = if ctx.client.https { "https" } else { "http" };
                span.set_attribute(KeyValue::new("url.scheme", scheme));
            }
            // Server spans: only a server fault is an error (a 4xx is the
            // client's, and is in the status code).
            if status >= 500 {
                span.set_status(Status::error(format!("HTTP {status}")));
            }
        }
        Err(_) => span.set_status(Status::error("the request failed")),
    }
    span.end();
    result
}

/// The span name: method and route template, or the method alone when no
/// route matched; `HTTP` for a method outside the standard set.
pub fn span_name(method: &'static str, route: Option<&str>) -> String {
    match (method, route) {
        ("_OTHER", _) => "HTTP".to_string(),
        (method, Some(route)) => format!("{method} {route}"),
        (method, None) => method.to_string(),
    }
}

/// The method as a label from a fixed set (`_OTHER` for anything else).
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "_OTHER",
    }
}

fn is_trusted(peer: IpAddr, proxies: &[Cidr]) -> bool {
    let peer = peer.to_canonical();
    proxies.iter().any(|p| p.contains(&peer))
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_use_the_route_template_or_the_method_alone() {
        assert_eq!(
            span_name("GET", Some("/api/v1/keys/{key_id}")),
            "GET /api/v1/keys/{key_id}"
        );
        assert_eq!(span_name("POST", None), "POST");
        assert_eq!(span_name("_OTHER", Some("/healthz")), "HTTP");
        assert_eq!(
            method_label(&Method::from_bytes(b"BREW").unwrap()),
            "_OTHER"
        );
        assert_eq!(method_label(&Method::PATCH), "PATCH");
    }

    #[test]
    fn only_listed_proxies_are_trusted_including_mapped_ipv4() {
        let proxies: Vec<Cidr> = vec!["10.0.0.0/8".parse().unwrap()];
        assert!(is_trusted("10.1.2.3".parse().unwrap(), &proxies));
        assert!(is_trusted("::ffff:10.1.2.3".parse().unwrap(), &proxies));
        assert!(!is_trusted("192.0.2.1".parse().unwrap(), &proxies));
        assert!(!is_trusted("127.0.0.1".parse().unwrap(), &[]));
    }
}
