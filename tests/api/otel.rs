//! OpenTelemetry trace export: a small OTLP/HTTP collector on loopback
//! receives what Gatehouse sends, decodes it with the OpenTelemetry protobuf
//! definitions and checks span names, attributes and parents: the request
//! span (named by its route template), a trusted proxy's `traceparent` as
//! its parent, the webhook delivery and the SMTP send as children of the
//! request that queued them, and no key, token or raw path anywhere; and
//! through the shipped nginx and Caddy configurations, no end client's own
//! trace context.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use serde_json::json;

use crate::helpers::{gatehouse, send, send_body, spawn_app_with, wait_until, Server, TestApp};
use crate::keys::create_key;
use crate::proxies::Proxy;
use crate::webhooks::add_webhook;

/// One HTTP request the collector received.
#[derive(Clone, Debug)]
struct Posted {
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Posted {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP/1.1 endpoint on loopback that records every request and answers
/// 200: the OTLP collector (`/v1/traces`) and a webhook target (`/hook`).
struct Collector {
    base: String,
    got: Arc<Mutex<Vec<Posted>>>,
    /// Connections accepted so far.
    accepted: Arc<std::sync::atomic::AtomicUsize>,
}

impl Collector {
    fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let got: Arc<Mutex<Vec<Posted>>> = Arc::default();
        let record = got.clone();
        let accepted: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
        let count = accepted.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let record = record.clone();
                // Exporters keep connections alive: serve each on its own thread.
                std::thread::spawn(move || {
                    let mut writer = stream.try_clone().unwrap();
                    let mut reader = BufReader::new(stream);
                    while let Some(posted) = read_request(&mut reader) {
                        record.lock().unwrap().push(posted);
                        let answer = "HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n";
                        if writer.write_all(answer.as_bytes()).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Collector {
            base,
            got,
            accepted,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn posted(&self, path: &str) -> Vec<Posted> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.path == path)
            .cloned()
            .collect()
    }

    fn wait_for(&self, path: &str, n: usize, timeout: Duration) -> Vec<Posted> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.posted(path);
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} requests to {path}",
                got.len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every span received so far, decoded.
    fn spans(&self) -> Vec<Span> {
        let mut spans = Vec::new();
        for posted in self.posted("/v1/traces") {
            assert_eq!(
                posted.header("content-type"),
                Some("application/x-protobuf")
            );
            let request = ExportTraceServiceRequest::decode(posted.body.as_slice())
                .expect("an OTLP protobuf trace export");
            for resource in request.resource_spans {
                let service = resource
                    .resource
                    .as_ref()
                    .map(|r| attributes(&r.attributes))
                    .and_then(|a| a.get("service.name").cloned())
                    .unwrap_or_default();
                for scope in resource.scope_spans {
                    for span in scope.spans {
                        spans.push(Span {
                            service: service.clone(),
                            name: span.name,
                            kind: span.kind,
                            trace_id: hex(&span.trace_id),
                            span_id: hex(&span.span_id),
                            parent_span_id: hex(&span.parent_span_id),
                            trace_state: span.trace_state,
                            attributes: attributes(&span.attributes),
                            status_code: span.status.map(|s| s.code).unwrap_or(0),
                        });
                    }
                }
            }
        }
        spans
    }

    /// Waits until a span named `name` has arrived.
    fn wait_for_span(&self, name: &str, timeout: Duration) -> Vec<Span> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if spans.iter().any(|s| s.name == name) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "no span {name:?} among {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn read_request(reader: &mut BufReader<std::net::TcpStream>) -> Option<Posted> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let path = line.split_whitespace().nth(1)?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some(Posted {
        path,
        headers,
        body,
    })
}

#[derive(Clone, Debug)]
struct Span {
    service: String,
    name: String,
    kind: i32,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    trace_state: String,
    attributes: HashMap<String, String>,
    /// 0 unset, 1 ok, 2 error.
    status_code: i32,
}

const SERVER: i32 = 2;
const CLIENT: i32 = 3;

impl Span {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

fn attributes(kvs: &[opentelemetry_proto::tonic::common::v1::KeyValue]) -> HashMap<String, String> {
    kvs.iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(AnyValue::StringValue(s)) => s.clone(),
                Some(AnyValue::IntValue(i)) => i.to_string(),
                Some(AnyValue::BoolValue(b)) => b.to_string(),
                Some(AnyValue::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn find<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    spans.iter().find(|s| s.name == name).unwrap_or_else(|| {
        panic!(
            "no span {name:?} among {:?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        )
    })
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PROXY_SPAN_ID: &str = "00f067aa0ba902b7";

fn traced_app(collector: &Collector, trusted_loopback: bool) -> TestApp {
    let endpoint = collector.base.clone();
    spawn_app_with(move |c| {
        c.telemetry.otlp_endpoint = Some(endpoint.parse().unwrap());
        if trusted_loopback {
            c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
        }
    })
}

#[test]
fn request_and_webhook_spans_arrive_with_their_parents_and_no_secrets() {
    let collector = Collector::start();
    let app = traced_app(&collector, true);
    let t = app.login("trace@acme.test");
    let hook_url = format!("{}/hook", collector.base);
    add_webhook(&app, &t, &hook_url, &["key.created"]);

    // The key is created through a trusted proxy that started the trace.
    let traceparent = format!("00-{TRACE_ID}-{PROXY_SPAN_ID}-01");
    let created = send_body(
        app.authed("POST", "/api/v1/api-keys", &t.access)
            .set("Content-Type", "application/json")
            .set("traceparent", &traceparent),
        &json!({"name": "traced"}).to_string(),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let create_request_id = created.header("x-request-id").unwrap().to_string();
    let key_id = created.json()["id"].as_str().unwrap().to_string();
    let key = created.json()["plaintext_key"]
        .as_str()
        .unwrap()
        .to_string();

    let verified = app.post_json("/api/v1/keys/verify", json!({ "key": key }));
    assert_eq!(verified.status, 200, "{}", verified.body);
    let fetched = send(app.authed("GET", &format!("/api/v1/api-keys/{key_id}"), &t.access));
    assert_eq!(fetched.status, 200);
    assert_eq!(app.get(&format!("/no/such/{key_id}")).status, 404);
    let (_, other_key) = create_key(&app, &t, json!({"name": "untraced"}));

    // Both keys' events are delivered (in either order); the webhook target
    // sees the first one's delivery span as its parent.
    let hooks = collector.wait_for("/hook", 2, Duration::from_secs(10));
    let traceparents: Vec<&str> = hooks
        .iter()
        .map(|h| {
            h.header("traceparent")
                .expect("every webhook request carries traceparent")
        })
        .collect();
    let hook_traceparent = traceparents
        .iter()
        .find(|tp| tp.contains(TRACE_ID))
        .unwrap_or_else(|| panic!("no delivery in the proxy's trace: {traceparents:?}"))
        .to_string();
    // The attempts are recorded after their spans end.
    wait_until("both attempts recorded", Duration::from_secs(10), || {
        app.query_i64("SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered'") == 2
    });

    // A graceful stop sends every span still queued.
    drop(app);
    let spans = collector.wait_for_span("webhook.deliver", Duration::from_secs(10));

    let create = find(&spans, "POST /api/v1/api-keys");
    assert_eq!(create.kind, SERVER);
    assert_eq!(create.service, "gatehouse");
    assert_eq!(create.trace_id, TRACE_ID, "the proxy's trace is continued");
    assert_eq!(
        create.parent_span_id, PROXY_SPAN_ID,
        "the proxy's span is the parent"
    );
    assert_eq!(create.attr("http.route"), Some("/api/v1/api-keys"));
    assert_eq!(create.attr("http.request.method"), Some("POST"));
    assert_eq!(create.attr("http.response.status_code"), Some("201"));
    assert_eq!(
        create.attr("gatehouse.request_id"),
        Some(create_request_id.as_str())
    );
    assert_eq!(create.attr("client.address"), Some("127.0.0.1"));

    let delivery = spans
        .iter()
        .find(|s| s.name == "webhook.deliver" && s.trace_id == TRACE_ID)
        .expect("the first key's delivery is in the proxy's trace");
    assert_eq!(delivery.kind, CLIENT);
    assert_eq!(
        delivery.parent_span_id, create.span_id,
        "a child of the request that caused it"
    );
    assert_eq!(
        delivery.attr("gatehouse.webhook.outcome"),
        Some("delivered")
    );
    assert_eq!(delivery.attr("http.response.status_code"), Some("200"));
    assert_eq!(delivery.attr("server.address"), Some("127.0.0.1"));
    assert_eq!(
        hook_traceparent,
        format!("00-{TRACE_ID}-{}-01", delivery.span_id),
        "the receiver can continue the trace"
    );

    let get = find(&spans, "GET /api/v1/api-keys/{id}");
    assert_eq!(get.attr("http.route"), Some("/api/v1/api-keys/{id}"));
    assert_eq!(get.parent_span_id, "", "no traceparent: a new trace");
    assert_ne!(get.trace_id, TRACE_ID);
    let verify = find(&spans, "POST /api/v1/keys/verify");
    assert_eq!(verify.attr("http.response.status_code"), Some("200"));
    let unmatched = spans
        .iter()
        .find(|s| s.name == "GET" && s.attr("http.response.status_code") == Some("404"))
        .expect("an unmatched path is named by its method alone");
    assert_eq!(unmatched.attr("http.route"), None);

    // Nothing secret and no raw path with ids, in any name or attribute.
    let everything: String = spans
        .iter()
        .map(|s| format!("{} {:?}\n", s.name, s.attributes))
        .collect();
    for secret in [
        key.as_str(),
        other_key.as_str(),
        t.access.as_str(),
        t.refresh.as_str(),
        key_id.as_str(),
        "/no/such",
    ] {
        assert!(
            !everything.contains(secret),
            "{secret} leaked into:\n{everything}"
        );
    }
    // Only deliberate spans: no log spans, no unnamed ones.
    for span in &spans {
        assert!(
            span.name.starts_with("GET")
                || span.name.starts_with("POST")
                || span.name == "webhook.deliver"
                || span.name == "smtp.send",
            "unexpected span {span:?}"
        );
    }
}

#[test]
fn a_traceparent_from_an_untrusted_peer_starts_nothing() {
    let collector = Collector::start();
    let app = traced_app(&collector, false);
    let res = app
        .request("GET", "/healthz")
        .set("traceparent", &format!("00-{TRACE_ID}-{PROXY_SPAN_ID}-01"))
        .call()
        .unwrap();
    assert_eq!(res.status(), 200);
    drop(app);
    let spans = collector.wait_for_span("GET /healthz", Duration::from_secs(10));
    let health = find(&spans, "GET /healthz");
    assert_ne!(health.trace_id, TRACE_ID);
    assert_eq!(health.parent_span_id, "");
    assert_eq!(health.status_code, 0);
}

#[test]
fn smtp_sends_are_children_of_the_request_that_queued_them() {
    if !crate::smtp::aiosmtpd_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = crate::helpers::free_port();
    let smtp = crate::smtp::SmtpServer::start(port, &dir.path().join("maildir"));
    let collector = Collector::start();
    let endpoint = collector.base.clone();
    let app = spawn_app_with(move |c| {
        c.telemetry.otlp_endpoint = Some(endpoint.parse().unwrap());
        c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
        c.smtp.host = Some("127.0.0.1".into());
        c.smtp.port = port;
        c.smtp.tls = gatehouse::config::SmtpTls::None;
    });
    let sent = send_body(
        app.request("POST", "/api/v1/auth/send-code")
            .set("Content-Type", "application/json")
            .set("traceparent", &format!("00-{TRACE_ID}-{PROXY_SPAN_ID}-01")),
        &json!({"email": "smtp-trace@acme.test"}).to_string(),
    );
    assert_eq!(sent.status, 202, "{}", sent.body);
    let message = smtp.wait_for("smtp-trace@acme.test", Duration::from_secs(15));
    let code = crate::helpers::code_in(&message).expect("a code in the message");
    // The send is marked after its span ends.
    wait_until("the send recorded", Duration::from_secs(10), || {
        app.query_i64(
            "SELECT count(*) FROM mail_outbox WHERE transport = 'smtp' AND sent_at IS NOT NULL",
        ) == 1
    });
    drop(app);
    let spans = collector.wait_for_span("smtp.send", Duration::from_secs(10));
    let request = find(&spans, "POST /api/v1/auth/send-code");
    assert_eq!(request.trace_id, TRACE_ID);
    let send = find(&spans, "smtp.send");
    assert_eq!(send.kind, CLIENT);
    assert_eq!(send.trace_id, TRACE_ID);
    assert_eq!(send.parent_span_id, request.span_id);
    assert_eq!(send.attr("gatehouse.mail.outcome"), Some("sent"));
    assert_eq!(send.attr("server.port"), Some(port.to_string().as_str()));
    let everything = format!("{spans:?}");
    assert!(!everything.contains(&code), "the login code leaked");
    assert!(
        !everything.contains("smtp-trace@acme.test"),
        "the recipient leaked"
    );
}

/// The built binary with only the standard variables: OTEL_EXPORTER_OTLP_ENDPOINT
/// turns export on, OTEL_SERVICE_NAME names the service, and SIGTERM flushes.
#[test]
fn the_binary_honours_the_standard_otel_variables() {
    let collector = Collector::start();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        gatehouse(dir.path())
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.base)
            .env("OTEL_SERVICE_NAME", "gatehouse-eu")
            .env("OTEL_TRACES_SAMPLER", "always_on"),
    );
    assert_eq!(server.get("/readyz").status, 200);
    let (code, _, stderr) = server.terminate();
    assert_eq!(code, Some(0), "{stderr}");
    let spans = collector.wait_for_span("GET /readyz", Duration::from_secs(10));
    let ready = find(&spans, "GET /readyz");
    assert_eq!(ready.service, "gatehouse-eu");
    assert_eq!(ready.attr("http.response.status_code"), Some("200"));

    // Switched off by the standard variable, nothing is sent.
    let quiet = Collector::start();
    let server = Server::start(
        gatehouse(dir.path())
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &quiet.base)
            .env("OTEL_SDK_DISABLED", "true"),
    );
    assert_eq!(server.get("/healthz").status, 200);
    let (code, _, _) = server.terminate();
    assert_eq!(code, Some(0));
    // The server has exited: any connection it made is queued before this
    // one, which the collector accepts after it.
    let _marker = TcpStream::connect(quiet.base.trim_start_matches("http://")).unwrap();
    wait_until("the collector to accept", Duration::from_secs(10), || {
        quiet.accepted() >= 1
    });
    assert_eq!(
        quiet.accepted(),
        1,
        "the server never connected to the collector"
    );
    assert!(quiet.posted("/v1/traces").is_empty());

    // A protocol Gatehouse does not speak is refused at start, by name.
    let out = crate::helpers::run(
        gatehouse(dir.path())
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &quiet.base)
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
    );
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains("OTEL_EXPORTER_OTLP_PROTOCOL=grpc"),
        "{}",
        out.stderr
    );
    // check-config finds it too, as it finds every other startup problem.
    let out = crate::helpers::run(
        gatehouse(dir.path())
            .arg("check-config")
            .env(
                "GATEHOUSE_TELEMETRY__OTLP_ENDPOINT",
                "ftp://collector.acme.test/",
            )
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &quiet.base),
    );
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("telemetry.otlp_endpoint must be an http://"),
        "{}",
        out.stderr
    );
}

/// A trace context an end client made up: it must not reach Gatehouse's
/// spans through a shipped proxy configuration, although the proxy is
/// trusted (and so its own traceparent would be believed).
const CLIENT_TRACE_ID: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const CLIENT_SPAN_ID: &str = "bbbbbbbbbbbbbbbb";

fn client_trace_context_stops_at_the_proxy(start_proxy: fn(u16) -> Option<Proxy>) {
    let collector = Collector::start();
    let endpoint = collector.base.clone();
    let app = crate::proxies::gatehouse_for_proxies_with(move |c| {
        c.telemetry.otlp_endpoint = Some(endpoint.parse().unwrap());
        c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    });
    let port: u16 = app.base.rsplit(':').next().unwrap().parse().unwrap();
    let Some(proxy) = start_proxy(port) else {
        return;
    };
    let t = app.login("traced-client@acme.test");
    let (key_id, key) = create_key(&app, &t, json!({ "name": "w", "scopes": ["orders:write"] }));
    let res = send(
        proxy
            .request("GET", "/orders/7")
            .set("X-API-Key", &key)
            .set(
                "traceparent",
                &format!("00-{CLIENT_TRACE_ID}-{CLIENT_SPAN_ID}-01"),
            )
            .set("tracestate", "evil=1"),
    );
    assert_eq!(res.status, 200, "{}", res.body);
    assert!(
        res.body.starts_with(&format!("key={key_id} ")),
        "{}",
        res.body
    );
    drop(proxy);
    drop(app);
    let spans = collector.wait_for_span("GET /api/v1/auth/check", Duration::from_secs(10));
    let checks: Vec<&Span> = spans
        .iter()
        .filter(|s| s.attr("http.route") == Some("/api/v1/auth/check"))
        .collect();
    assert_eq!(checks.len(), 1, "{checks:?}");
    let check = checks[0];
    assert_eq!(check.attr("http.response.status_code"), Some("200"));
    assert_ne!(
        check.trace_id, CLIENT_TRACE_ID,
        "the client joined the trace"
    );
    assert_ne!(check.parent_span_id, CLIENT_SPAN_ID);
    assert_eq!(check.parent_span_id, "", "a new trace: {check:?}");
    assert!(!check.trace_state.contains("evil"), "{check:?}");
    for span in &spans {
        assert_ne!(span.trace_id, CLIENT_TRACE_ID, "{span:?}");
        assert!(!span.trace_state.contains("evil"), "{span:?}");
    }
}

#[test]
fn a_client_trace_context_stops_at_nginx() {
    client_trace_context_stops_at_the_proxy(crate::proxies::nginx);
}

#[test]
fn a_client_trace_context_stops_at_caddy() {
    client_trace_context_stops_at_the_proxy(crate::proxies::caddy);
}
