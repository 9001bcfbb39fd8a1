//! The access log (one line per request, text and JSON) and the bounded
//! metrics, against the built binary: what an operator sees on stdout and
//! at `/metrics`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;

use serde_json::json;

use crate::helpers::{code_in, gatehouse, send, send_body, Resp, Server};

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

/// A POST with a JSON body, bearer-authenticated when `token` is given.
fn post_json(server: &Server, path: &str, token: Option<&str>, body: serde_json::Value) -> Resp {
    let mut req = server
        .request("POST", path)
        .set("Content-Type", "application/json");
    if let Some(token) = token {
        req = req.set("Authorization", &format!("Bearer {token}"));
    }
    send_body(req, &body.to_string())
}

/// Logs in, refreshes, makes a webhook and a key and verifies it: every
/// kind of secret the server handles, by name, in the forms a log could
/// show them (a hash as hex and as the byte list a driver prints).
fn make_secrets(server: &Server) -> Vec<(&'static str, String)> {
    let email = "logs@acme.test";
    let sent = post_json(
        server,
        "/api/v1/auth/send-code",
        None,
        json!({ "email": email }),
    );
    assert_eq!(sent.status, 202, "{}", sent.body);
    let mailbox = server.get("/api/v1/dev/mailbox");
    assert_eq!(mailbox.status, 200, "{}", mailbox.body);
    let code = code_in(mailbox.json()["items"][0]["body"].as_str().unwrap()).expect("a code");
    let login = post_json(
        server,
        "/api/v1/auth/verify-code",
        None,
        json!({ "email": email, "code": code }),
    );
    assert_eq!(login.status, 200, "{}", login.body);
    let login = login.json();
    let refresh = login["refresh_token"].as_str().unwrap().to_string();
    let refreshed = post_json(
        server,
        "/api/v1/auth/refresh-token",
        None,
        json!({ "refresh_token": refresh }),
    );
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    let refreshed = refreshed.json();
    let access = refreshed["access_token"].as_str().unwrap().to_string();
    let hook = post_json(
        server,
        "/api/v1/webhooks",
        Some(&access),
        json!({ "url": "http://127.0.0.1:9/hook", "events": ["key.created"] }),
    );
    assert_eq!(hook.status, 201, "{}", hook.body);
    let signing_secret = hook.json()["secret"].as_str().unwrap().to_string();
    assert!(signing_secret.starts_with("whsec_"), "{signing_secret}");
    let created = post_json(
        server,
        "/api/v1/api-keys",
        Some(&access),
        json!({ "name": "logged" }),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let key = created.json()["plaintext_key"]
        .as_str()
        .unwrap()
        .to_string();
    let verified = post_json(server, "/api/v1/keys/verify", None, json!({ "key": key }));
    assert_eq!(verified.json()["valid"], true, "{}", verified.body);
    let hash = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    let hash_hex: String = hash.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let hash_list = format!("{:?}", hash.as_ref());
    vec![
        ("the login code", code),
        ("the first refresh token", refresh),
        (
            "the second refresh token",
            refreshed["refresh_token"].as_str().unwrap().to_string(),
        ),
        ("an access token", access),
        ("the webhook signing secret", signing_secret),
        ("the key", key),
        ("the key's sha256 (hex)", hash_hex),
        ("the key's sha256 (bytes)", hash_list),
    ]
}

/// The output less the one event that carries a login code on purpose:
/// in local mode every message is copied to the log (SPEC section 6). An
/// event starts a line with its timestamp (text) or `{` (JSON); the
/// mailbox copy's body continues on the lines after it in text.
fn without_the_mailbox_copy(lines: &[String]) -> (String, usize) {
    let mut kept = String::new();
    let mut copies = 0;
    let mut skipping = false;
    for line in lines {
        let starts_event = line.starts_with('{') || line.starts_with(|c: char| c.is_ascii_digit());
        if starts_event {
            skipping = line.contains("local mailbox: message delivered");
            copies += usize::from(skipping);
        }
        if !skipping {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    (kept, copies)
}

/// No log level prints a secret (SPEC section 11), the libraries' own
/// debug output included: the PostgreSQL driver logs statement parameters
/// (the login mail, signing secrets, hashes). On the backend the suite
/// runs on, at `debug`, at `trace`, and with `RUST_LOG` asking for the
/// driver's trace output by name.
#[test]
fn no_log_level_prints_a_secret() {
    for env in [
        &[("GATEHOUSE_LOG__LEVEL", "debug")][..],
        &[
            ("GATEHOUSE_LOG__LEVEL", "trace"),
            ("GATEHOUSE_LOG__FORMAT", "json"),
        ],
        &[(
            "RUST_LOG",
            "tokio_postgres=trace,postgres=trace,deadpool_postgres=trace,awc=trace,actix_http=trace,trace",
        )],
    ] {
        let dir = tempfile::tempdir().unwrap();
        // On PostgreSQL, a database of its own for the binary (dropped after).
        let _db = (crate::helpers::backend() == crate::helpers::Backend::Postgres).then(|| {
            let db = crate::pg::TestDb::create().expect("a PostgreSQL server for api_postgres");
            std::fs::write(dir.path().join("test-pg-url"), &db.url).unwrap();
            db
        });
        let server = serve(dir.path(), env);
        let secrets = make_secrets(&server);
        let (code, lines, stderr) = server.terminate();
        assert_eq!(code, Some(0), "{stderr}");
        let (stdout, copies) = without_the_mailbox_copy(&lines);
        assert_eq!(copies, 1, "the mailbox copy is logged once ({env:?}):\n{stdout}");
        assert!(stdout.contains("request_id"), "the log was captured ({env:?})");
        for (what, secret) in &secrets {
            for (stream, text) in [("stdout", &stdout), ("stderr", &stderr)] {
                if let Some(at) = text.find(secret.as_str()) {
                    let from = text[..at].rfind('\n').map_or(0, |i| i + 1);
                    let to = text[at..].find('\n').map_or(text.len(), |i| at + i);
                    panic!("{what} in {stream} with {env:?}:\n{}", &text[from..to]);
                }
            }
        }
    }
}
