//! Prometheus metrics: requests by route and status, latency histograms,
//! verifications by result.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
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

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    verifications: Family<ResultLabels, Counter>,
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
        Metrics {
            registry,
            requests,
            latency,
            verifications,
        }
    }

    pub fn observe_request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_string(),
                method: method.to_string(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                route: route.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts a key check (no allocation: this runs on every verification).
    pub fn observe_verification(&self, via: &'static str, result: &'static str) {
        self.verifications
            .get_or_create(&ResultLabels { result, via })
            .inc();
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
        m.observe_request("/healthz", "GET", 200, Duration::from_millis(2));
        m.observe_verification("verify", "valid");
        let text = m.render();
        assert!(
            text.contains(
                r#"gatehouse_http_requests_total{route="/healthz",method="GET",status="200"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains("gatehouse_http_request_duration_seconds_bucket"));
        assert!(
            text.contains(r#"gatehouse_key_verifications_total{result="valid",via="verify"} 1"#)
        );
    }
}
