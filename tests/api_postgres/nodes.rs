//! Several `gatehouse serve` processes on one PostgreSQL database (SPEC
//! section 14): revocations reach every node, a node that lost its
//! subscription catches up, a node cut off from the database fails closed,
//! logouts hold everywhere, webhooks are delivered once and usage adds up.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{
    code_in, early_in_a_minute, gatehouse, pg_query_i64, send, send_body, Resp, Server,
};
use crate::pg::{admin_sql, TestDb};
use crate::webhooks::Receiver;

/// One node: the real binary, its own data directory, the shared database.
pub(crate) struct Node {
    pub(crate) server: Server,
}

fn config(root: &Path) -> std::path::PathBuf {
    let path = root.join("cluster.toml");
    if !path.exists() {
        let secret = || gatehouse::config::generate_secret();
        std::fs::write(
            &path,
            format!(
                r#"
[secrets]
session_key = "{}"
ops_token = "{}"

[usage]
flush_interval_secs = 1

[webhooks]
allow_private_targets = true
retry_delays_secs = [1]
"#,
                secret(),
                secret()
            ),
        )
        .unwrap();
    }
    path
}

impl Node {
    /// A node on `db_url`, with its data directory under `root`.
    pub(crate) fn start(root: &Path, name: &str, db_url: &str) -> Node {
        let config = config(root);
        let server = Server::start(
            gatehouse(root)
                .env("GATEHOUSE_DATABASE__URL", db_url)
                .args(["serve", "--listen", "127.0.0.1:0", "--config"])
                .arg(&config)
                .arg("--data-dir")
                .arg(root.join(name)),
        );
        Node { server }
    }

    pub(crate) fn post_json(&self, path: &str, body: Value) -> Resp {
        send_body(
            self.server
                .request("POST", path)
                .set("Content-Type", "application/json"),
            &body.to_string(),
        )
    }

    pub(crate) fn authed(&self, method: &str, path: &str, access: &str) -> ureq::Request {
        self.server
            .request(method, path)
            .set("Authorization", &format!("Bearer {access}"))
    }

    /// Logs in through this node; the session's access and refresh tokens.
    pub(crate) fn login(&self, email: &str) -> (String, String) {
        let res = self.post_json("/api/v1/auth/send-code", json!({ "email": email }));
        assert_eq!(res.status, 202, "{}", res.body);
        let mailbox = self.server.get("/api/v1/dev/mailbox").json();
        let body = mailbox["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["to"] == email)
            .expect("the code's mail")["body"]
            .as_str()
            .unwrap()
            .to_string();
        let code = code_in(&body).unwrap();
        let res = self.post_json(
            "/api/v1/auth/verify-code",
            json!({ "email": email, "code": code }),
        );
        assert_eq!(res.status, 200, "{}", res.body);
        let v = res.json();
        (
            v["access_token"].as_str().unwrap().to_string(),
            v["refresh_token"].as_str().unwrap().to_string(),
        )
    }

    pub(crate) fn create_key(&self, access: &str, body: Value) -> (String, String) {
        let res = send_body(
            self.authed("POST", "/api/v1/api-keys", access)
                .set("Content-Type", "application/json"),
            &body.to_string(),
        );
        assert_eq!(res.status, 201, "{}", res.body);
        let v = res.json();
        (
            v["id"].as_str().unwrap().to_string(),
            v["plaintext_key"].as_str().unwrap().to_string(),
        )
    }

    pub(crate) fn revoke(&self, access: &str, id: &str) {
        let res = send(self.authed("DELETE", &format!("/api/v1/api-keys/{id}"), access));
        assert_eq!(res.status, 200, "{}", res.body);
    }

    /// `POST /api/v1/keys/verify`: the status and the answer's code.
    pub(crate) fn verify(&self, key: &str) -> (u16, String) {
        let res = self.post_json("/api/v1/keys/verify", json!({ "key": key }));
        let v: Value = serde_json::from_str(&res.body).unwrap_or(Value::Null);
        let code = if v["valid"] == true {
            "valid".to_string()
        } else {
            v["code"]
                .as_str()
                .or(v["error"]["code"].as_str())
                .unwrap_or("?")
                .to_string()
        };
        (res.status, code)
    }

    pub(crate) fn stop(self) {
        let (code, _, stderr) = self.server.terminate();
        assert_eq!(code, Some(0), "{stderr}");
    }
}

/// Milliseconds from a revocation through `a` until `b` refuses the key.
fn propagation_ms(a: &Node, b: &Node, access: &str) -> f64 {
    let (id, key) = a.create_key(access, json!({ "name": "short-lived" }));
    assert_eq!(b.verify(&key), (200, "valid".into()), "cached on b");
    a.revoke(access, &id);
    let revoked = Instant::now();
    loop {
        match b.verify(&key) {
            (200, code) if code == "valid" => {}
            (200, code) => {
                assert_eq!(code, "invalid_key");
                return revoked.elapsed().as_secs_f64() * 1000.0;
            }
            other => panic!("b answered {other:?}"),
        }
        assert!(
            revoked.elapsed() < Duration::from_secs(1),
            "b still accepts a key revoked 1 s ago through a"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn distribution(label: &str, mut ms: Vec<f64>) -> f64 {
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    eprintln!(
        "{label}: {} trials, min {:.1} ms, median {:.1} ms, p90 {:.1} ms, max {:.1} ms",
        ms.len(),
        ms[0],
        at(0.5),
        at(0.9),
        ms[ms.len() - 1]
    );
    ms[ms.len() - 1]
}

#[test]
fn a_revocation_through_one_node_is_refused_by_the_other_within_a_second() {
    let Some(db) = TestDb::create() else { return };
    let root = tempfile::tempdir().unwrap();
    let a = Node::start(root.path(), "a", &db.url);
    let b = Node::start(root.path(), "b", &db.url);
    let (access, _) = a.login("owner@acme.test");
    let trials: Vec<f64> = (0..50).map(|_| propagation_ms(&a, &b, &access)).collect();
    let worst = distribution("revocation a -> b", trials);
    assert!(worst < 1000.0);

    // Both nodes' listening connections cut by the database: they
    // subscribe again and catch up; the promise holds meanwhile.
    assert_eq!(
        pg_query_i64(
            &db.url,
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'gatehouse-listen' AND datname = current_database()"
        ),
        2,
        "one listening connection per node"
    );
    let mut after_cut = Vec::new();
    for _ in 0..10 {
        admin_sql(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'gatehouse-listen' AND datname = '{}'",
            db.name
        ));
        after_cut.push(propagation_ms(&a, &b, &access));
    }
    distribution(
        "revocation a -> b, listening connections just terminated",
        after_cut,
    );
    let metrics = b.server.get("/metrics").body;
    assert!(
        metrics.contains("gatehouse_key_feed_following 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gatehouse_key_feed_lag_seconds"),
        "{metrics}"
    );
    a.stop();
    b.stop();
}

/// A TCP relay between a node and PostgreSQL that the test can cut.
struct Relay {
    port: u16,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    fn start(to: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (c, o) = (cut.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                if c.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", to)) else {
                    continue;
                };
                let mut g = o.lock().unwrap();
                g.push(client.try_clone().unwrap());
                g.push(server.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Relay { port, cut, open }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

#[test]
fn a_node_cut_off_from_the_database_fails_closed_and_recovers() {
    let Some(db) = TestDb::create() else { return };
    let root = tempfile::tempdir().unwrap();
    let pg = url::Url::parse(&db.url).unwrap();
    let relay = Relay::start(pg.port().unwrap_or(5432));
    let mut via_relay = pg.clone();
    via_relay.set_port(Some(relay.port)).unwrap();
    let a = Node::start(root.path(), "a", &db.url);
    let b = Node::start(root.path(), "b", via_relay.as_str());
    let (access, _) = a.login("owner@acme.test");
    let (id, key) = a.create_key(&access, json!({ "name": "cached on b" }));
    assert_eq!(b.verify(&key), (200, "valid".into()));

    relay.cut();
    // Within the staleness bound b may still answer from its cache; after
    // it, never: the entry must be read again, and that read fails.
    std::thread::sleep(Duration::from_millis(1300));
    a.revoke(&access, &id);
    for _ in 0..5 {
        let (status, code) = b.verify(&key);
        assert_eq!((status, code.as_str()), (503, "unavailable"));
    }
    assert_eq!(b.server.get("/readyz").status, 503);
    let metrics = b.server.get("/metrics").body;
    assert!(
        metrics.contains("gatehouse_key_feed_following 0"),
        "{metrics}"
    );
    assert_eq!(
        a.verify(&key),
        (200, "invalid_key".into()),
        "a is unaffected"
    );

    relay.restore();
    let deadline = Instant::now() + Duration::from_secs(15);
    while b.server.get("/readyz").status != 200 {
        assert!(Instant::now() < deadline, "b ready again");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(b.verify(&key), (200, "invalid_key".into()), "caught up");
    a.stop();
    b.stop();
}

#[test]
fn sessions_webhooks_and_usage_are_shared_by_the_nodes() {
    let Some(db) = TestDb::create() else { return };
    let root = tempfile::tempdir().unwrap();
    let a = Node::start(root.path(), "a", &db.url);
    let b = Node::start(root.path(), "b", &db.url);

    // A logout on a is a logout on b, at once.
    let (access, _) = a.login("owner@acme.test");
    let (other, refresh) = b.login("second@acme.test");
    assert_eq!(send(b.authed("GET", "/api/v1/me", &other)).status, 200);
    let res = send(a.authed("POST", "/api/v1/auth/logout", &other));
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(send(b.authed("GET", "/api/v1/me", &other)).status, 401);
    let res = b.post_json(
        "/api/v1/auth/refresh-token",
        json!({ "refresh_token": refresh }),
    );
    assert_eq!(res.status, 401, "{}", res.body);

    // One webhook event, two nodes' workers: one delivery, and after a
    // failure one retry with the same webhook-id.
    let receiver = Receiver::start(vec![500, 200]);
    let res = send_body(
        a.authed("POST", "/api/v1/webhooks", &access)
            .set("Content-Type", "application/json"),
        &json!({ "url": receiver.url, "events": ["key.revoked"] }).to_string(),
    );
    assert_eq!(res.status, 201, "{}", res.body);
    let (id, key) = a.create_key(&access, json!({ "name": "announced" }));
    b.revoke(&access, &id);
    let got = receiver.wait_for(2, Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(3));
    let got_later = receiver.wait_for(2, Duration::from_secs(1));
    assert_eq!(
        got_later.len(),
        2,
        "one failed attempt and one retry, no more"
    );
    assert_eq!(got[0].header("webhook-id"), got[1].header("webhook-id"));
    assert!(got[0].body.contains(&id));
    assert_eq!(a.verify(&key), (200, "invalid_key".into()));

    // Usage from both nodes adds up.
    let (_, counted) = a.create_key(
        &access,
        json!({ "name": "counted", "rate_limit": { "limit": 100000, "window_secs": 60 } }),
    );
    let n = 60;
    for i in 0..n {
        let node = if i % 2 == 0 { &a } else { &b };
        assert_eq!(node.verify(&counted), (200, "valid".into()));
    }
    a.stop();
    b.stop();
    assert_eq!(
        pg_query_i64(
            &db.url,
            "SELECT CAST(coalesce(sum(u.valid), 0) AS BIGINT) FROM usage_hourly u JOIN api_keys k ON k.id = u.key_id WHERE k.name = 'counted'"
        ),
        n
    );
}

/// nginx with `deploy/nginx-gatehouse-cluster.conf`, its two servers
/// pointed at `nodes`.
fn nginx_before(nodes: [&Node; 2]) -> Option<crate::proxies::Proxy> {
    let bin = crate::proxies::find_program("nginx")?;
    let dir = tempfile::tempdir().unwrap();
    let port = crate::helpers::free_port();
    let addr = |n: &Node| n.server.base.trim_start_matches("http://").to_string();
    let snippet = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/nginx-gatehouse-cluster.conf"
    ))
    .unwrap()
    .replace(
        "server 10.0.0.11:8080",
        &format!("server {}", addr(nodes[0])),
    )
    .replace(
        "server 10.0.0.12:8080",
        &format!("server {}", addr(nodes[1])),
    )
    .replace("listen 8443;", &format!("listen 127.0.0.1:{port};"))
    .replace("server_name gatehouse.acme.test;", "server_name 127.0.0.1;");
    assert!(
        snippet.contains(&addr(nodes[1])),
        "the documented config has the expected shape"
    );
    Some(crate::proxies::start_nginx(bin, dir, port, &snippet))
}

/// Valid verifications a node has answered (its own /metrics).
fn valid_checks(node: &Node) -> f64 {
    let metrics = node.server.get("/metrics").body;
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("gatehouse_key_verifications_total{") && l.contains("result=\"valid\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn the_documented_nginx_upstream_spreads_over_two_nodes_and_steps_around_a_stopped_one() {
    let Some(db) = TestDb::create() else { return };
    let root = tempfile::tempdir().unwrap();
    let a = Node::start(root.path(), "a", &db.url);
    let b = Node::start(root.path(), "b", &db.url);
    let Some(nginx) = nginx_before([&a, &b]) else {
        return;
    };
    let front = |method: &str, path: &str| {
        crate::helpers::agent().request(method, &format!("http://127.0.0.1:{}{path}", nginx.port))
    };
    let (access, _) = a.login("owner@acme.test");
    let (id, key) = a.create_key(&access, json!({ "name": "balanced" }));
    let verify = |key: &str| {
        send_body(
            front("POST", "/api/v1/keys/verify").set("Content-Type", "application/json"),
            &json!({ "key": key }).to_string(),
        )
    };
    for _ in 0..20 {
        let res = verify(&key);
        assert_eq!(res.status, 200, "{}", res.body);
        assert_eq!(res.json()["valid"], true);
    }
    let (on_a, on_b) = (valid_checks(&a), valid_checks(&b));
    assert_eq!(on_a + on_b, 20.0);
    assert!(
        on_a > 0.0 && on_b > 0.0,
        "both nodes served: {on_a} + {on_b}"
    );

    // A session made through one node is good through the other.
    let me = send(front("GET", "/api/v1/me").set("Authorization", &format!("Bearer {access}")));
    assert_eq!(me.status, 200, "{}", me.body);

    // One node stops: requests go to the other, without a failed answer.
    a.stop();
    for _ in 0..10 {
        let res = verify(&key);
        assert_eq!(res.status, 200, "{}", res.body);
    }
    let res = send(
        front("DELETE", &format!("/api/v1/api-keys/{id}"))
            .set("Authorization", &format!("Bearer {access}")),
    );
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(verify(&key).json()["code"], "invalid_key");
    b.stop();
}

#[test]
fn per_address_throttles_count_requests_to_every_node() {
    let Some(db) = TestDb::create() else { return };
    let root = tempfile::tempdir().unwrap();
    let a = Node::start(root.path(), "a", &db.url);
    let b = Node::start(root.path(), "b", &db.url);
    let nodes = [&a, &b];
    // Leak reports: 10 a minute per client address, whichever node. Each
    // node alone saw only 6.
    early_in_a_minute();
    let report = json!([{ "token": "gate_sk_not_a_real_key" }]);
    let statuses: Vec<u16> = (0..12)
        .map(|i| {
            nodes[i % 2]
                .post_json("/api/v1/keys/leaked", report.clone())
                .status
        })
        .collect();
    assert_eq!(statuses, [[200; 10].as_slice(), &[429, 429]].concat());
    // Login-code attempts: 30 a minute per client address (16 per node).
    early_in_a_minute();
    let attempt = json!({ "email": "nobody@acme.test", "code": "000000" });
    let statuses: Vec<u16> = (0..32)
        .map(|i| {
            nodes[i % 2]
                .post_json("/api/v1/auth/verify-code", attempt.clone())
                .status
        })
        .collect();
    assert_eq!(statuses, [[401; 30].as_slice(), &[429, 429]].concat());
    assert_eq!(
        pg_query_i64(
            &db.url,
            "SELECT count(*) FROM audit_events WHERE action = 'login.failed'"
        ),
        30,
        "every attempt let through was audited, none of the refused"
    );
    a.stop();
    b.stop();
}
