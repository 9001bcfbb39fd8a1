//! The access log (one line per request, text and JSON) and the bounded
//! metrics, against the built binary: what an operator sees on stdout and
//! at `/metrics`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;

use crate::helpers::{gatehouse, send, send_body, Server};

fn serve(dir: &Path, env: &[(&str, &str)]) -> Server {
    let mut cmd = gatehouse(dir);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join("data"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    Server::start(&mut cmd)
}

/// What the requests below must have logged, by request id.
struct Expected {
    method: &'static str,
    path: &'static str,
    status: u16,
}

/// Three requests of different shapes; returns what each must log.
fn make_requests(server: &Server) -> HashMap<String, Expected> {
    let mut expected = HashMap::new();
    let res = send(
        server
            .request("GET", "/healthz?probe=1")
            .set("X-Request-Id", "probe-1"),
    );
    assert_eq!(res.status, 200);
    assert_eq!(res.header("x-request-id"), Some("probe-1"));
    expected.insert(
        "probe-1".to_string(),
        Expected {
            method: "GET",
            path: "/healthz",
            status: 200,
        },
    );
    let res = send_body(
        server
            .request("POST", "/api/v1/keys/verify")
            .set("Content-Type", "application/json")
            // Not believed: the peer is not a trusted proxy.
            .set("X-Forwarded-For", "203.0.113.9"),
        r#"{"key": "gate_sk_nonsense"}"#,
    );
    assert_eq!(res.status, 200);
    assert_eq!(res.json()["valid"], false);
    expected.insert(
        res.header("x-request-id").unwrap().to_string(),
        Expected {
            method: "POST",
            path: "/api/v1/keys/verify",
            status: 200,
        },
    );
    let res = send(server.request("DELETE", "/no/such/route?token=secret-value"));
    let body = res.assert_error(404, "not_found");
    expected.insert(
        body["error"]["request_id"].as_str().unwrap().to_string(),
        Expected {
            method: "DELETE",
            path: "/no/such/route",
            status: 404,
        },
    );
    expected
}

/// The fields of a text access line: `... INFO request k=v k=v ...`.
fn text_fields(line: &str) -> Option<HashMap<String, String>> {
    let (_, rest) = line.split_once("  INFO request ")?;
    Some(
        rest.split(' ')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn check_fields(fields: &HashMap<String, String>, expected: &Expected) {
    assert_eq!(fields["method"], expected.method, "{fields:?}");
    assert_eq!(fields["path"], expected.path, "{fields:?}");
    assert_eq!(fields["status"], expected.status.to_string(), "{fields:?}");
    assert_eq!(fields["client_ip"], "127.0.0.1", "{fields:?}");
    let latency: u64 = fields["latency_us"].parse().expect("latency in µs");
    assert!(latency < 10_000_000, "{fields:?}");
}

#[test]
fn access_log_has_one_text_line_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &[]);
    let expected = make_requests(&server);
    let (code, lines, _) = server.terminate();
    assert_eq!(code, Some(0));
    let access: Vec<HashMap<String, String>> =
        lines.iter().filter_map(|l| text_fields(l)).collect();
    assert_eq!(access.len(), expected.len(), "{lines:#?}");
    for fields in &access {
        let want = expected
            .get(&fields["request_id"])
            .unwrap_or_else(|| panic!("unexpected line {fields:?}"));
        check_fields(fields, want);
    }
    let text = lines.join("\n");
    assert!(!text.contains("secret-value"), "queries are never logged");
    // The timestamp leads, as on tracing's other lines.
    let line = lines
        .iter()
        .find(|l| l.contains("request_id=probe-1"))
        .unwrap();
    assert!(
        line.len() > 28 && &line[4..5] == "-" && &line[10..11] == "T" && &line[26..27] == "Z",
        "{line}"
    );
}

#[test]
fn access_log_has_one_json_line_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &[("GATEHOUSE_LOG__FORMAT", "json")]);
    let expected = make_requests(&server);
    let (code, lines, _) = server.terminate();
    assert_eq!(code, Some(0));
    let access: Vec<serde_json::Value> = lines
        .iter()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("each line is JSON"))
        .filter(|v| v["target"] == "gatehouse::access")
        .collect();
    assert_eq!(access.len(), expected.len(), "{lines:#?}");
    for line in &access {
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["message"], "request");
        assert!(line["timestamp"].as_str().unwrap().ends_with('Z'));
        let fields: HashMap<String, String> = line
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                (k.clone(), v)
            })
            .collect();
        assert!(
            line["status"].is_u64() && line["latency_us"].is_u64(),
            "{line}"
        );
        let want = expected
            .get(&fields["request_id"])
            .unwrap_or_else(|| panic!("unexpected line {line}"));
        check_fields(&fields, want);
    }
}

#[test]
fn access_log_follows_the_log_level() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &[("GATEHOUSE_LOG__LEVEL", "warn")]);
    make_requests(&server);
    let (code, lines, _) = server.terminate();
    assert_eq!(code, Some(0));
    assert!(
        !lines.iter().any(|l| l.contains("request_id=")),
        "{lines:#?}"
    );
}

/// One HTTP/1.1 exchange on a kept-alive connection; returns the status.
fn exchange(conn: &mut BufReader<TcpStream>, method: &str, path: &str) -> u16 {
    let request =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n");
    conn.get_mut().write_all(request.as_bytes()).unwrap();
    let mut status_line = String::new();
    conn.read_line(&mut status_line).unwrap();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {status_line:?}"));
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        conn.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap();
            }
        }
    }
    if method != "HEAD" {
        let mut body = vec![0; length];
        conn.read_exact(&mut body).unwrap();
    }
    status
}

const STANDARD: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE",
];

fn random_method(rng: &mut fastrand::Rng) -> String {
    if rng.bool() {
        STANDARD[rng.usize(..STANDARD.len())].to_string()
    } else {
        (0..rng.usize(3..12)).map(|_| rng.uppercase()).collect()
    }
}

/// A path no route matches: random segments, encodings and a query.
fn random_path(rng: &mut fastrand::Rng) -> String {
    let mut path = String::new();
    for i in 0..rng.usize(1..5) {
        path.push('/');
        if i == 0 {
            path.push('~'); // no route starts with it
        }
        for _ in 0..rng.usize(1..16) {
            match rng.u8(..10) {
                0 => path.push_str(&format!("%{:02X}", rng.u8(..))),
                1 => path.push('.'),
                _ => path.push(rng.alphanumeric()),
            }
        }
    }
    if rng.bool() {
        path.push_str(&format!("?q={}", rng.u32(..)));
    }
    path
}

fn metrics(server: &Server) -> String {
    let res = server.get("/metrics");
    assert_eq!(res.status, 200);
    res.body
}

fn series(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.rsplit_once(' ').map_or(l, |(name, _)| name))
        .collect()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn metrics_stay_the_same_size_under_random_methods_and_paths() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &[("GATEHOUSE_LOG__LEVEL", "warn")]);
    let addr = server.base.trim_start_matches("http://").to_string();
    let stream = TcpStream::connect(&addr).unwrap();
    stream.set_nodelay(true).unwrap();
    let mut conn = BufReader::new(stream);
    let mut rng = fastrand::Rng::with_seed(0x9a7e);
    // Paths of three kinds: unmatched, a GET route, a POST route.
    let known = ["/healthz", "/api/v1/catalog", "/api/v1/keys/verify"];

    // The first few: every method label on every kind of path.
    for method in STANDARD
        .iter()
        .map(|m| m.to_string())
        .chain(["FROB".into()])
    {
        exchange(&mut conn, &method, &random_path(&mut rng));
        for path in known {
            exchange(&mut conn, &method, path);
        }
    }
    metrics(&server);
    let before = metrics(&server);
    let rss_before = rss_kib(server.pid());

    let mut statuses: HashMap<u16, usize> = HashMap::new();
    for i in 0..5_000 {
        let method = random_method(&mut rng);
        let path = if i % 4 == 0 {
            known[rng.usize(..known.len())].to_string()
        } else {
            random_path(&mut rng)
        };
        *statuses
            .entry(exchange(&mut conn, &method, &path))
            .or_default() += 1;
    }
    let after = metrics(&server);
    let rss_after = rss_kib(server.pid());
    println!(
        "metrics: {} series before and {} after 5,000 random requests ({statuses:?}); \
         server RSS {rss_before} KiB before, {rss_after} KiB after",
        series(&before).len(),
        series(&after).len()
    );
    assert!(statuses[&404] > 3_000, "{statuses:?}");
    assert_eq!(series(&before), series(&after), "no new series");
    for line in after
        .lines()
        .filter(|l| l.starts_with("gatehouse_http_requests_total{"))
    {
        let method = line
            .split("method=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap();
        assert!(STANDARD.contains(&method) || method == "other", "{line}");
    }
    // The counts grew, the series did not; memory stays flat (a per-request
    // leak of even 1 KiB would show as 5 MiB here).
    assert!(after.contains(r#"route="other",method="other",status="404""#));
    assert!(
        rss_after < rss_before + 4 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    drop(conn);
    server.terminate();
}
