//! Prometheus metrics: requests by route and status, latency histograms,
//! verifications by result.
//!
//! Every label takes its values from a fixed set, so no client can grow the
//! output or the memory behind it: `route` is a pattern registered in
//! `routes::configure` (a path no route matches is `other`), `method` one of
//! the nine methods of RFC 9110 and RFC 5789 (anything else is `other`),
//! `status` a code in 100..=599 (a code outside it, which Gatehouse never
//! sends, would be `other`), and `result` / `via` are names from the code.
//!
//! The hot path allocates nothing: a route's label and histogram are looked
//! up by the matched pattern, methods and statuses are static values.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix_web::http::{Method, StatusCode};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The `route` label of a request no route matched.
pub const OTHER: &str = "other";

/// At most this many distinct route patterns are labelled; the routes
/// registered in code are far fewer, so this only guards the invariant.
const MAX_ROUTES: usize = 256;

/// The `method` label: the standard methods by name, anything else `other`.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::CONNECT => "CONNECT",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::PATCH => "PATCH",
        _ => OTHER,
    }
}

/// The `status` label: the code itself within 100..=599, else `other`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
struct StatusLabel(u16);

impl StatusLabel {
    fn of(status: StatusCode) -> Self {
        let code = status.as_u16();
        StatusLabel(if (100..=599).contains(&code) { code } else { 0 })
    }
}

impl EncodeLabelValue for StatusLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        if self.0 == 0 {
            EncodeLabelValue::encode(&OTHER, encoder)
        } else {
            EncodeLabelValue::encode(&self.0, encoder)
        }
    }
}

/// The `route` label: a registered pattern or `other`, shared, not copied.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct RouteLabel(Arc<str>);

impl EncodeLabelValue for RouteLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&&*self.0, encoder)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: RouteLabel,
    method: &'static str,
    status: StatusLabel,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: RouteLabel,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    backend: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    /// `valid` or an error code such as `invalid_key`.
    result: &'static str,
    /// `verify` or `forward_auth`.
    via: &'static str,
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~3.3 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// A labelled route: its label value, its latency histogram and the
/// request counters it has used so far (a handful: one per method and
/// status seen), found by a short scan instead of hashing the labels.
struct RouteSeries {
    label: RouteLabel,
    latency: Histogram,
    counters: RwLock<Vec<(&'static str, StatusLabel, Counter)>>,
}

/// Counters remembered per route; beyond this the family is asked.
const COUNTERS_PER_ROUTE: usize = 32;

impl RouteSeries {
    fn observe(
        &self,
        requests: &Family<RequestLabels, Counter>,
        method: &'static str,
        status: StatusLabel,
        secs: f64,
    ) {
        self.latency.observe(secs);
        let known = self.counters.read().expect("metrics lock");
        if let Some((_, _, counter)) = known.iter().find(|(m, s, _)| *s == status && *m == method) {
            counter.inc();
            return;
        }
        drop(known);
        let counter = requests
            .get_or_create(&RequestLabels {
                route: self.label.clone(),
                method,
                status,
            })
            .clone();
        counter.inc();
        let mut known = self.counters.write().expect("metrics lock");
        if known.len() < COUNTERS_PER_ROUTE {
            known.push((method, status, counter));
        }
    }
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    verifications: Family<ResultLabels, Counter>,
    /// The verification counters used so far, found by a short scan.
    verification_counters: RwLock<Vec<(ResultLabels, Counter)>>,
    /// Route pattern -> its series, so a request needs no allocation.
    routes: RwLock<HashMap<Box<str>, Arc<RouteSeries>>>,
    other: Arc<RouteSeries>,
    key_feed_following: Gauge,
    key_feed_lag: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Where rate limits are decided (`redis` or `local`) and how often
    /// Redis was lost.
    pub rate_limits: crate::cluster::redis::BackendMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("gatehouse");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let verifications = Family::<ResultLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route pattern, method and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route pattern",
            latency.clone(),
        );
        registry.register(
            "key_verifications",
            "API key checks (verify and forward-auth) by result",
            verifications.clone(),
        );
        let key_feed_following = Gauge::default();
        registry.register(
            "key_feed_following",
            "1 while this node follows the key change feed, 0 while it has lost it",
            key_feed_following.clone(),
        );
        let key_feed_lag = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "key_feed_lag_seconds",
            "Seconds since this node last knew its key cache current with the change feed",
            key_feed_lag.clone(),
        );
        let rate_limits = Self::rate_limit_metrics(&mut registry);
        let other = Self::series(&latency, OTHER);
        Metrics {
            key_feed_following,
            key_feed_lag,
            rate_limits,
            registry,
            requests,
            latency,
            verifications,
            verification_counters: RwLock::new(Vec::new()),
            routes: RwLock::new(HashMap::new()),
            other,
        }
    }

    /// `gatehouse_rate_limit_backend{backend="redis"|"local"}` (1 for the
    /// one in use) and `gatehouse_rate_limit_redis_fallbacks_total`.
    fn rate_limit_metrics(registry: &mut Registry) -> crate::cluster::redis::BackendMetrics {
        use prometheus_client::metrics::gauge::Gauge;
        let backend = Family::<BackendLabels, Gauge>::default();
        registry.register(
            "rate_limit_backend",
            "Where key rate limits are decided: 1 for redis (shared by all nodes) or local (this node's own windows)",
            backend.clone(),
        );
        let fallbacks = Counter::default();
        registry.register(
            "rate_limit_redis_fallbacks",
            "Times this node could not reach Redis and fell back to its own rate-limit windows",
            fallbacks.clone(),
        );
        // One at a time: a family's guard must be gone before the next call.
        let redis = backend
            .get_or_create(&BackendLabels { backend: "redis" })
            .clone();
        let local = backend
            .get_or_create(&BackendLabels { backend: "local" })
            .clone();
        let metrics = crate::cluster::redis::BackendMetrics {
            redis,
            local,
            fallbacks,
        };
        metrics.local.set(1);
        metrics
    }

    fn series(
        latency: &Family<RouteLabels, Histogram, fn() -> Histogram>,
        route: &str,
    ) -> Arc<RouteSeries> {
        let label = RouteLabel(Arc::from(route));
        let histogram = latency
            .get_or_create(&RouteLabels {
                route: label.clone(),
            })
            .clone();
        Arc::new(RouteSeries {
            label,
            latency: histogram,
            counters: RwLock::new(Vec::new()),
        })
    }

    /// The series of a matched route pattern (`None`: no route matched).
    fn route(&self, pattern: Option<&str>) -> Arc<RouteSeries> {
        let Some(pattern) = pattern else {
            return self.other.clone();
        };
        if let Some(series) = self.routes.read().expect("metrics lock").get(pattern) {
            return series.clone();
        }
        let mut routes = self.routes.write().expect("metrics lock");
        if routes.len() >= MAX_ROUTES && !routes.contains_key(pattern) {
            return self.other.clone();
        }
        routes
            .entry(pattern.into())
            .or_insert_with(|| Self::series(&self.latency, pattern))
            .clone()
    }

    /// Counts a finished request. `route` is the pattern of the route that
    /// answered (`None` when none matched).
    pub fn observe_request(
        &self,
        route: Option<&str>,
        method: &Method,
        status: StatusCode,
        elapsed: Duration,
    ) {
        self.route(route).observe(
            &self.requests,
            method_label(method),
            StatusLabel::of(status),
            elapsed.as_secs_f64(),
        );
    }

    /// Counts a key check (no allocation: this runs on every verification).
    pub fn observe_verification(&self, via: &'static str, result: &'static str) {
        let labels = ResultLabels { result, via };
        let known = self.verification_counters.read().expect("metrics lock");
        if let Some((_, counter)) = known.iter().find(|(l, _)| *l == labels) {
            counter.inc();
            return;
        }
        drop(known);
        let counter = self.verifications.get_or_create(&labels).clone();
        counter.inc();
        let mut known = self.verification_counters.write().expect("metrics lock");
        if known.len() < COUNTERS_PER_ROUTE {
            known.push((labels, counter));
        }
    }

    /// The key change feed's state, set when metrics are read.
    pub fn set_key_feed(&self, following: bool, lag_secs: f64) {
        self.key_feed_following.set(i64::from(following));
        self.key_feed_lag.set(lag_secs);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::new();
        m.observe_request(
            Some("/healthz"),
            &Method::GET,
            StatusCode::OK,
            Duration::from_millis(2),
        );
        m.observe_verification("verify", "valid");
        let text = m.render();
        assert!(
            text.contains(
                r#"gatehouse_http_requests_total{route="/healthz",method="GET",status="200"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(
            r#"gatehouse_http_request_duration_seconds_bucket{le="0.0032",route="/healthz"} 1"#
        ));
        assert!(
            text.contains(r#"gatehouse_key_verifications_total{result="valid",via="verify"} 1"#)
        );
        // Rate limits start on the node's own windows.
        assert!(text.contains(r#"gatehouse_rate_limit_backend{backend="local"} 1"#));
        assert!(text.contains(r#"gatehouse_rate_limit_backend{backend="redis"} 0"#));
        assert!(text.contains("gatehouse_rate_limit_redis_fallbacks_total 0"));
    }

    #[test]
    fn unknown_methods_and_unmatched_routes_are_other() {
        let m = Metrics::new();
        for (i, method) in ["FROB", "get", "X-CUSTOM", "PROPFIND"].iter().enumerate() {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            m.observe_request(None, &method, StatusCode::NOT_FOUND, Duration::ZERO);
            m.observe_request(
                Some("/healthz"),
                &method,
                StatusCode::METHOD_NOT_ALLOWED,
                Duration::from_micros(i as u64),
            );
        }
        let text = m.render();
        assert!(
            text.contains(
                r#"gatehouse_http_requests_total{route="other",method="other",status="404"} 4"#
            ),
            "{text}"
        );
        assert!(text.contains(
            r#"gatehouse_http_requests_total{route="/healthz",method="other",status="405"} 4"#
        ));
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        assert_eq!(method_label(&Method::CONNECT), "CONNECT");
    }

    #[test]
    fn statuses_outside_the_http_range_are_other() {
        let m = Metrics::new();
        let odd = StatusCode::from_u16(999).unwrap();
        m.observe_request(Some("/healthz"), &Method::GET, odd, Duration::ZERO);
        let text = m.render();
        assert!(
            text.contains(
                r#"gatehouse_http_requests_total{route="/healthz",method="GET",status="other"} 1"#
            ),
            "{text}"
        );
    }

    #[test]
    fn the_route_table_is_bounded() {
        // Patterns come from the registered routes, which are far fewer;
        // should that ever change, the extra ones are counted as `other`.
        let m = Metrics::new();
        for i in 0..MAX_ROUTES + 50 {
            m.observe_request(
                Some(&format!("/r{i}")),
                &Method::GET,
                StatusCode::OK,
                Duration::ZERO,
            );
        }
        assert_eq!(m.routes.read().unwrap().len(), MAX_ROUTES);
        let text = m.render();
        assert!(
            text.contains(
                r#"gatehouse_http_requests_total{route="other",method="GET",status="200"} 50"#
            ),
            "{text}"
        );
        let counters = text
            .lines()
            .filter(|l| l.starts_with("gatehouse_http_requests_total{"))
            .count();
        assert_eq!(counters, MAX_ROUTES + 1);
    }
}
