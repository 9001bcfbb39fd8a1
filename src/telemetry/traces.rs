//! Trace export: OpenTelemetry spans sent to a collector over OTLP/HTTP
//! (protobuf), off unless an endpoint is configured.
//!
//! What is traced: one server span per request, named by its route template
//! (`http::trace`), and one client span per webhook delivery attempt and per
//! SMTP send, each a child of the request that queued the work (the queue
//! rows keep that request's `traceparent`). A `traceparent` header is
//! believed only from `trusted_proxies`; outgoing webhooks carry one.
//!
//! The OpenTelemetry SDK is used directly rather than through the `tracing`
//! subscriber: export does not depend on `log.level`, the log spans are not
//! exported, and with export off nothing is added to the request path.
//! Spans are batched on the SDK's own thread and posted with a blocking
//! HTTP client (ureq on the same rustls as the rest of the binary), so no
//! second async runtime runs. Export failures are logged by the SDK (target
//! `opentelemetry_sdk`) and never reach a request.

use std::time::Duration;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;

use crate::config::TelemetryConfig;

/// Why trace export could not be set up; the server refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{0}")]
    Invalid(String),
    #[error("the OTLP exporter cannot be built: {0}")]
    Exporter(String),
}

/// Where spans go, once the configuration and the `OTEL_*` variables are read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportPlan {
    /// The full URL spans are posted to (`.../v1/traces`).
    pub traces_url: String,
    pub service_name: String,
    pub timeout: Duration,
}

/// Decides whether and where to export, from the config and the environment
/// (`env` looks a variable up; a function so the rules can be tested).
///
/// - `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`: no export;
/// - else `telemetry.otlp_endpoint` (a base URL; `/v1/traces` is appended
///   unless the path already ends with it);
/// - else `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as it is), else
///   `OTEL_EXPORTER_OTLP_ENDPOINT` (a base URL);
/// - none of them: no export.
pub fn plan(
    config: &TelemetryConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<ExportPlan>, SetupError> {
    let var = |name: &str| {
        env(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    match var("OTEL_TRACES_EXPORTER").as_deref() {
        None | Some("otlp") => {}
        Some("none") => return Ok(None),
        Some(other) => {
            return Err(SetupError::Invalid(format!(
                "OTEL_TRACES_EXPORTER={other} is not supported (use otlp or none)"
            )))
        }
    }
    let (url, source) = if let Some(base) = &config.otlp_endpoint {
        (with_traces_path(base.as_str()), "telemetry.otlp_endpoint")
    } else if let Some(url) = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        (url, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    } else if let Some(base) = var("OTEL_EXPORTER_OTLP_ENDPOINT") {
        (with_traces_path(&base), "OTEL_EXPORTER_OTLP_ENDPOINT")
    } else {
        return Ok(None);
    };
    let parsed = url::Url::parse(&url)
        .map_err(|e| SetupError::Invalid(format!("{source} is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(SetupError::Invalid(format!(
            "{source} must be an http:// or https:// URL of an OTLP/HTTP collector"
        )));
    }
    for name in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Some(protocol) = var(name) {
            if protocol != "http/protobuf" {
                return Err(SetupError::Invalid(format!(
                    "{name}={protocol} is not supported: Gatehouse exports OTLP over HTTP with protobuf (http/protobuf)"
                )));
            }
        }
    }
    let timeout_ms = match var("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
        .or_else(|| var("OTEL_EXPORTER_OTLP_TIMEOUT"))
    {
        None => 10_000,
        Some(ms) => ms
            .parse::<u64>()
            .ok()
            .filter(|ms| (1..=600_000).contains(ms))
            .ok_or_else(|| {
                SetupError::Invalid(format!(
                    "the OTLP timeout `{ms}` is not a number of milliseconds in 1..=600000"
                ))
            })?,
    };
    // service.name: OTEL_SERVICE_NAME, else one in OTEL_RESOURCE_ATTRIBUTES
    // (the SDK reads both), else "gatehouse".
    let service_name = var("OTEL_SERVICE_NAME")
        .or_else(|| {
            var("OTEL_RESOURCE_ATTRIBUTES")?
                .split(',')
                .filter_map(|pair| pair.split_once('='))
                .find(|(k, _)| k.trim() == "service.name")
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "gatehouse".to_string());
    Ok(Some(ExportPlan {
        traces_url: parsed.to_string(),
        service_name,
        timeout: Duration::from_millis(timeout_ms),
    }))
}

fn with_traces_path(base: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_string()
    } else {
        format!("{base}/v1/traces")
    }
}

/// A running trace pipeline: the provider (which owns the export thread)
/// and the tracer every span is started from. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Tracing {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

impl Tracing {
    /// Sets up export as [`plan`] decides from `config` and the process
    /// environment; `None` when export is off.
    pub fn from_config(config: &TelemetryConfig) -> Result<Option<Tracing>, SetupError> {
        let Some(plan) = plan(config, |name| std::env::var(name).ok())? else {
            return Ok(None);
        };
        Tracing::start(&plan).map(Some)
    }

    pub fn start(plan: &ExportPlan) -> Result<Tracing, SetupError> {
        let client = BlockingClient {
            agent: ureq::AgentBuilder::new()
                .timeout(plan.timeout)
                .redirects(0)
                .build(),
        };
        // Headers (OTEL_EXPORTER_OTLP_HEADERS, e.g. a collector's API key)
        // are read by the exporter itself and never logged.
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(plan.traces_url.clone())
            .with_timeout(plan.timeout)
            .build()
            .map_err(|e| SetupError::Exporter(e.to_string()))?;
        let resource = Resource::builder()
            .with_service_name(plan.service_name.clone())
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        // The sampler follows OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG
        // (default: parent-based, always on); the batch follows OTEL_BSP_*.
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("gatehouse");
        Ok(Tracing { provider, tracer })
    }

    pub fn tracer(&self) -> &SdkTracer {
        &self.tracer
    }

    /// Sends the spans still queued and stops the export thread. Blocks
    /// for at most the export timeout.
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "trace export did not shut down cleanly");
        }
    }

    /// Starts a client span for work queued by a request: a child of
    /// `traceparent` when there is one, else a new trace. The span is the
    /// active span of the returned context; end it with [`finish`].
    pub fn start_queued_work(
        &self,
        name: &'static str,
        traceparent: Option<&str>,
        attributes: Vec<KeyValue>,
    ) -> Context {
        let parent = traceparent
            .map(|tp| extract(&Fields(&[("traceparent", tp)])))
            .unwrap_or_default();
        let span = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Client)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &parent);
        parent.with_span(span)
    }
}

/// Ends the span of `cx`, marking it failed with `error` when there is one.
pub fn finish(cx: &Context, attributes: Vec<KeyValue>, error: Option<&str>) {
    let span = cx.span();
    span.set_attributes(attributes);
    if let Some(error) = error {
        span.set_status(Status::error(error.to_string()));
    }
    span.end();
}

/// The W3C `traceparent` of the current context, for work queued now (a
/// webhook event, a mail). `None` when no sampled-or-not span is active,
/// which is always the case with export off.
pub fn current_traceparent() -> Option<String> {
    traceparent_of(&Context::current())
}

/// The W3C `traceparent` of `cx`'s span, if it has a valid one.
pub fn traceparent_of(cx: &Context) -> Option<String> {
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut fields = Collected::default();
    TraceContextPropagator::new().inject_context(cx, &mut fields);
    fields
        .0
        .into_iter()
        .find(|(k, _)| k == "traceparent")
        .map(|(_, v)| v)
}

/// The remote parent carried by W3C `traceparent` / `tracestate` headers;
/// an empty context when they are missing or malformed.
pub fn extract(headers: &dyn Extractor) -> Context {
    TraceContextPropagator::new().extract(headers)
}

/// Name-value pairs (header-like, names matched without case) for the
/// propagator to read.
pub struct Fields<'a>(pub &'a [(&'a str, &'a str)]);

impl Extractor for Fields<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| *v)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| *k).collect()
    }
}

#[derive(Default)]
struct Collected(Vec<(String, String)>);

impl Injector for Collected {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_string(), value));
    }
}

/// The OTLP exporter's HTTP client: blocking ureq, called on the SDK's
/// export thread (which drives the exporter with a plain executor).
#[derive(Debug)]
struct BlockingClient {
    agent: ureq::Agent,
}

/// Collector answers are small; anything bigger is cut off.
const MAX_RESPONSE_BYTES: u64 = 1024 * 1024;

#[async_trait::async_trait]
impl HttpClient for BlockingClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let mut req = self
            .agent
            .request(parts.method.as_str(), &parts.uri.to_string());
        for (name, value) in &parts.headers {
            if let Ok(value) = value.to_str() {
                req = req.set(name.as_str(), value);
            }
        }
        let response = match req.send_bytes(&body) {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            // Said without the URL, which could carry credentials; the SDK
            // logs this error ("BatchSpanProcessor.ExportError").
            Err(ureq::Error::Transport(t)) => {
                let why = t.message().map(|m| format!(": {m}")).unwrap_or_default();
                return Err(
                    format!("OTLP export to the collector failed ({}{why})", t.kind()).into(),
                );
            }
        };
        let status = response.status();
        let mut builder = Response::builder().status(status);
        for name in response.headers_names() {
            if let Some(value) = response.header(&name) {
                builder = builder.header(name.as_str(), value);
            }
        }
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(
            &mut std::io::Read::take(response.into_reader(), MAX_RESPONSE_BYTES),
            &mut bytes,
        )?;
        Ok(builder.body(Bytes::from(bytes))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn config(endpoint: Option<&str>) -> TelemetryConfig {
        TelemetryConfig {
            otlp_endpoint: endpoint.map(|e| e.parse().unwrap()),
        }
    }

    #[test]
    fn off_unless_an_endpoint_is_given() {
        assert_eq!(plan(&config(None), env(&[])).unwrap(), None);
        assert_eq!(
            plan(&config(None), env(&[("OTEL_SERVICE_NAME", "x")])).unwrap(),
            None
        );
    }

    #[test]
    fn the_config_wins_and_gets_the_traces_path() {
        let p = plan(
            &config(Some("http://collector:4318")),
            env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://other:4318")]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(p.traces_url, "http://collector:4318/v1/traces");
        assert_eq!(p.service_name, "gatehouse");
        assert_eq!(p.timeout, Duration::from_secs(10));
        let p = plan(&config(Some("https://c.example/otlp/v1/traces")), env(&[]))
            .unwrap()
            .unwrap();
        assert_eq!(p.traces_url, "https://c.example/otlp/v1/traces");
    }

    #[test]
    fn standard_variables_are_honoured() {
        let p = plan(
            &config(None),
            env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318/"),
                ("OTEL_SERVICE_NAME", "keys-eu"),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(p.traces_url, "http://127.0.0.1:4318/v1/traces");
        assert_eq!(p.service_name, "keys-eu");
        assert_eq!(p.timeout, Duration::from_millis(2500));
        // The per-signal variable is a full URL and wins over the base one.
        let p = plan(
            &config(None),
            env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4318"),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://b:4318/custom"),
                (
                    "OTEL_RESOURCE_ATTRIBUTES",
                    "deployment.environment=prod,service.name=gh",
                ),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(p.traces_url, "http://b:4318/custom");
        assert_eq!(p.service_name, "gh");
    }

    #[test]
    fn export_can_be_switched_off_by_the_environment() {
        for off in [
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ] {
            assert_eq!(
                plan(&config(Some("http://c:4318")), env(&[off])).unwrap(),
                None,
                "{off:?}"
            );
        }
    }

    #[test]
    fn unsupported_settings_are_refused_with_their_name() {
        for (pairs, needle) in [
            (
                vec![("OTEL_TRACES_EXPORTER", "zipkin")],
                "OTEL_TRACES_EXPORTER",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")],
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            ),
            (vec![("OTEL_EXPORTER_OTLP_TIMEOUT", "soon")], "timeout"),
        ] {
            let err = plan(&config(Some("http://c:4318")), env(&pairs)).unwrap_err();
            assert!(err.to_string().contains(needle), "{err}");
        }
        let err = plan(&config(Some("ftp://c/")), env(&[])).unwrap_err();
        assert!(err.to_string().contains("telemetry.otlp_endpoint"), "{err}");
        let err = plan(
            &config(None),
            env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "not a url")]),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("OTEL_EXPORTER_OTLP_ENDPOINT"),
            "{err}"
        );
    }

    #[test]
    fn traceparent_round_trips_and_garbage_is_ignored() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = extract(&Fields(&[("traceparent", tp)]));
        assert!(cx.span().span_context().is_remote());
        assert_eq!(traceparent_of(&cx).as_deref(), Some(tp));
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        ] {
            let cx = extract(&Fields(&[("traceparent", bad)]));
            assert_eq!(traceparent_of(&cx), None, "{bad:?}");
        }
        assert_eq!(current_traceparent(), None);
    }
}
