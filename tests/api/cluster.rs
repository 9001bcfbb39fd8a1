//! Several `gatehouse serve` processes on one database (SPEC section 14):
//! rate limits shared through Redis, credits exact across processes with or
//! without Redis, and what a node does while Redis is down. A SQLite data
//! directory is served by one process (a second `serve` on it is refused:
//! `copy_data.rs`), so the tests of two nodes run in `tests/api_postgres`.
//!
//! Tests that use the shared Redis (`GATEHOUSE_TEST_REDIS_URL`, default
//! redis://127.0.0.1:6379) write under a key
//! prefix of their own; tests that must stop Redis start their own
//! `redis-server` on a free port. Without Redis (or `redis-server`) they
//! are skipped visibly, unless GATEHOUSE_REQUIRE_E2E is set.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse::cluster::redis::{BackendMetrics, SharedWindows};
use gatehouse::config::{RedisConfig, Secret};

use crate::helpers::{e2e_available, free_port, gatehouse, run, wait_until};
use crate::multinode::{Cluster, Node};

/// The Redis the tests share: `GATEHOUSE_TEST_REDIS_URL` (`.ci/run` starts
/// one of its own when the machine has none), else 127.0.0.1:6379.
pub(crate) fn shared_redis_url() -> String {
    std::env::var("GATEHOUSE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn shared_redis_addr() -> String {
    let url = url::Url::parse(&shared_redis_url()).expect("GATEHOUSE_TEST_REDIS_URL is a URL");
    format!(
        "{}:{}",
        url.host_str().unwrap_or("127.0.0.1"),
        url.port().unwrap_or(6379)
    )
}

fn redis_answers(addr: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) =
        std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_millis(500))
    else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 16];
    s.write_all(b"PING\r\n").is_ok()
        && s.read(&mut buf)
            .is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
}

/// Whether the shared Redis answers (else the test is skipped visibly,
/// or fails under GATEHOUSE_REQUIRE_E2E).
pub(crate) fn shared_redis() -> bool {
    let addr = shared_redis_addr();
    e2e_available(redis_answers(&addr), &format!("Redis at {addr}"))
}

fn unique_prefix(test: &str) -> String {
    format!("gatehouse-test:{test}:{}:", fastrand::u64(..))
}

/// A `redis-server` of the test's own, on a free loopback port.
pub(crate) struct OwnRedis {
    port: u16,
    child: Option<Child>,
}

impl OwnRedis {
    pub(crate) fn start() -> Option<OwnRedis> {
        let found = Command::new("redis-server")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !e2e_available(found, "redis-server") {
            return None;
        }
        let mut redis = OwnRedis {
            port: free_port(),
            child: None,
        };
        redis.restart();
        Some(redis)
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub(crate) fn restart(&mut self) {
        let child = crate::helpers::dies_with_the_test(&mut Command::new("redis-server"))
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        wait_until("redis-server to answer", Duration::from_secs(10), || {
            redis_answers(&format!("127.0.0.1:{}", self.port))
        });
    }

    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A cluster whose database holds one project and one key, its limits set
/// before any node reads it.
pub(crate) struct Fixture {
    cluster: Cluster,
    pub(crate) key: String,
    key_id: String,
}

pub(crate) fn fixture(rate_limit: u32, credits: Option<i64>) -> Fixture {
    let cluster = Cluster::new();
    let data_dir = cluster.data_dir("cli");
    let cli = |args: &[&str]| {
        let out = run(cluster
            .gatehouse()
            .args(args)
            .arg("--data-dir")
            .arg(&data_dir));
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        out
    };
    cli(&["migrate"]);
    cli(&[
        "users",
        "add",
        "--email",
        "ops@acme.test",
        "--project",
        "Acme",
    ]);
    let out = cli(&["keys", "create", "--project", "Acme", "--name", "shared"]);
    let key = out.stdout.lines().last().unwrap().trim().to_string();
    let key_id = out
        .stdout
        .split_whitespace()
        .find(|w| w.starts_with("key_"))
        .unwrap()
        .to_string();
    let credits = credits.map_or("NULL".to_string(), |c| c.to_string());
    cluster.execute_sql(&format!(
        "UPDATE api_keys SET rate_limit = {rate_limit}, rate_window_secs = 3600, credits_remaining = {credits} WHERE id = '{key_id}'"
    ));
    Fixture {
        cluster,
        key,
        key_id,
    }
}

impl Fixture {
    /// A node `name` serving this cluster, with Redis at `redis` if given.
    pub(crate) fn node(&self, name: &str, redis: Option<(&str, &str)>) -> Node {
        self.node_with(name, redis, &[])
    }

    /// [`Fixture::node`] with more `GATEHOUSE_*` settings.
    pub(crate) fn node_with(
        &self,
        name: &str,
        redis: Option<(&str, &str)>,
        more: &[(&str, &str)],
    ) -> Node {
        let mut env = vec![("GATEHOUSE_HTTP__WORKERS", "2")];
        if let Some((url, prefix)) = redis {
            env.extend([
                ("GATEHOUSE_REDIS__URL", url),
                ("GATEHOUSE_REDIS__KEY_PREFIX", prefix),
                ("GATEHOUSE_REDIS__PROBE_INTERVAL_MS", "100"),
                // A Redis that answers late falls back to the node's own
                // window (by design); on a loaded test machine the default
                // 50 ms would make the shared counts depend on its speed.
                ("GATEHOUSE_REDIS__TIMEOUT_MS", "1000"),
            ]);
        }
        env.extend(more.iter().copied());
        self.cluster.serve_with(name, &env)
    }

    fn stored_credits(&self) -> i64 {
        self.cluster.query_i64(&format!(
            "SELECT credits_remaining FROM api_keys WHERE id = '{}'",
            self.key_id
        ))
    }
}

/// Until `ok` holds, at most 15 s.
pub(crate) fn wait_for(what: &str, ok: impl FnMut() -> bool) {
    wait_until(what, Duration::from_secs(15), ok);
}

/// `total` verifications of `key`, from `threads` threads taking turns
/// between the nodes; calls `halfway` once half of them were sent. Returns
/// the answers' codes (`valid` for a valid answer).
fn hammer(
    nodes: &[&Node],
    key: &str,
    total: usize,
    threads: usize,
    halfway: impl FnOnce() + Send,
) -> Vec<String> {
    let sent = Arc::new(AtomicUsize::new(0));
    let (half_tx, half_rx) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let sent = sent.clone();
                let half_tx = half_tx.clone();
                scope.spawn(move || {
                    let mut codes = Vec::new();
                    loop {
                        let n = sent.fetch_add(1, Ordering::SeqCst);
                        if n >= total {
                            break;
                        }
                        if n == total / 2 {
                            let _ = half_tx.send(());
                        }
                        let answer = nodes[n % nodes.len()].verify_answer(key);
                        codes.push(if answer["valid"] == true {
                            "valid".to_string()
                        } else {
                            answer["code"].as_str().unwrap_or("?").to_string()
                        });
                    }
                    codes
                })
            })
            .collect();
        drop(half_tx);
        if half_rx.recv().is_ok() {
            halfway();
        }
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    })
}

fn count(codes: &[String], code: &str) -> usize {
    codes.iter().filter(|c| *c == code).count()
}

#[test]
fn the_redis_window_counts_like_the_local_one() {
    if !shared_redis() {
        return;
    }
    let config = RedisConfig {
        url: Some(Secret::new(shared_redis_url())),
        key_prefix: unique_prefix("window"),
        timeout_ms: 1000,
        probe_interval_ms: 100,
        ..Default::default()
    };
    let metrics = BackendMetrics::default();
    let shared = SharedWindows::new(&config, metrics.clone()).unwrap();
    actix_web::rt::System::new().block_on(async move {
        assert!(
            shared.check("key_w", 5, 60, true).await.is_none(),
            "not connected yet"
        );
        actix_web::rt::spawn(shared.clone().run());
        let deadline = Instant::now() + Duration::from_secs(10);
        while !shared.is_healthy() {
            assert!(Instant::now() < deadline, "never connected");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(metrics.redis.get(), 1);
        // Peeking counts nothing.
        let peek = shared.check("key_w", 5, 60, false).await.unwrap();
        assert!(peek.allowed);
        assert_eq!((peek.remaining, peek.reset_secs), (5, 0));
        for left in (0..5).rev() {
            let s = shared.check("key_w", 5, 60, true).await.unwrap();
            assert!(s.allowed);
            assert_eq!(s.remaining, left);
            assert_eq!((s.limit, s.window_secs), (5, 60));
        }
        let refused = shared.check("key_w", 5, 60, true).await.unwrap();
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        // As the local window says: one frees up after the rollover.
        assert!((1..=120).contains(&refused.reset_secs), "{refused:?}");
        // Another key has a window of its own.
        assert!(
            shared
                .check("key_other", 1, 60, true)
                .await
                .unwrap()
                .allowed
        );
        assert!(
            !shared
                .check("key_other", 1, 60, true)
                .await
                .unwrap()
                .allowed
        );
        assert_eq!(metrics.fallbacks.get(), 0);
    });
}

postgres_only! {
    #[test]
    fn two_nodes_allow_at_most_the_limit_together_with_redis() {
        if !shared_redis() {
            return;
        }
        const LIMIT: usize = 25;
        let f = fixture(LIMIT as u32, None);
        let prefix = unique_prefix("two-nodes");
        let url = shared_redis_url();
        // What is tested is that the nodes share one window, not how fast
        // Redis answers on a loaded machine: with the default 50 ms a slow
        // answer makes a node fall back to its own window (tested in
        // credits_stay_exact_when_redis_stops_halfway and the drills).
        let patient = [("GATEHOUSE_REDIS__TIMEOUT_MS", "5000")];
        let a = f.node_with("a", Some((&url, &prefix)), &patient);
        let b = f.node_with("b", Some((&url, &prefix)), &patient);
        wait_for("both nodes on Redis", || a.on_redis() && b.on_redis());
        let codes = hammer(&[&a, &b], &f.key, 4 * LIMIT, 8, || {});
        let fell_back = a.metric("gatehouse_rate_limit_redis_fallbacks_total")
            + b.metric("gatehouse_rate_limit_redis_fallbacks_total");
        assert_eq!(fell_back, 0.0, "a node decided on its own window");
        assert_eq!(count(&codes, "valid"), LIMIT, "{codes:?}");
        assert_eq!(count(&codes, "rate_limited"), 3 * LIMIT);
        // Each node alone would have allowed LIMIT more.
        assert_eq!(b.verify_answer(&f.key)["code"], "rate_limited");
        assert_eq!(a.server.get("/readyz").status, 200);
    }
}

postgres_only! {
    #[test]
    fn without_redis_each_node_keeps_its_own_window() {
        let f = fixture(5, None);
        let a = f.node("a", None);
        let b = f.node("b", None);
        assert_eq!(
            a.metric("gatehouse_rate_limit_backend{backend=\"local\"}"),
            1.0
        );
        let codes = hammer(&[&a, &b], &f.key, 20, 2, || {});
        // The documented cost of going without Redis: N nodes, N x limit.
        assert_eq!(count(&codes, "valid"), 10, "{codes:?}");
        // Each node says so at start.
        let (_, _, stderr) = a.server.terminate();
        assert!(
            stderr.contains("redis.url") && stderr.contains("own rate-limit windows"),
            "{stderr}"
        );
    }
}

postgres_only! {
    #[test]
    fn credits_are_spent_exactly_once_across_two_nodes() {
        let f = fixture(1_000_000, Some(1000));
        let a = f.node("a", None);
        let b = f.node("b", None);
        let codes = hammer(&[&a, &b], &f.key, 1200, 8, || {});
        assert_eq!(count(&codes, "valid"), 1000, "exactly the balance");
        assert_eq!(count(&codes, "usage_exceeded"), 200);
        assert_eq!(f.stored_credits(), 0);
        let answer = a.verify_answer(&f.key);
        assert_eq!(answer["code"], "usage_exceeded");
    }
}

postgres_only! {
    #[test]
    fn credits_stay_exact_when_redis_stops_halfway() {
        let Some(mut redis) = OwnRedis::start() else {
            return;
        };
        let f = fixture(1_000_000, Some(1000));
        let url = redis.url();
        let a = f.node("a", Some((&url, "gh:")));
        let b = f.node("b", Some((&url, "gh:")));
        wait_for("both nodes on Redis", || a.on_redis() && b.on_redis());
        let codes = hammer(&[&a, &b], &f.key, 1200, 8, || redis.kill());
        assert_eq!(count(&codes, "valid"), 1000, "exactly the balance");
        assert_eq!(count(&codes, "usage_exceeded"), 200);
        assert_eq!(f.stored_credits(), 0);
        assert!(!a.on_redis() && !b.on_redis(), "both fell back");
    }
}

#[test]
fn a_node_falls_back_while_redis_is_down_and_returns() {
    let Some(mut redis) = OwnRedis::start() else {
        return;
    };
    let f = fixture(1000, None);
    let url = redis.url();
    let node = f.node("node", Some((&url, "gh:")));
    wait_for("the node on Redis", || node.on_redis());
    assert_eq!(node.server.get("/readyz").status, 200);
    for _ in 0..3 {
        assert_eq!(node.verify_answer(&f.key)["valid"], true);
    }
    assert_eq!(
        node.metric("gatehouse_rate_limit_redis_fallbacks_total"),
        0.0
    );

    redis.kill();
    // Checks keep answering, promptly, on the node's own window.
    for _ in 0..20 {
        let started = Instant::now();
        assert_eq!(node.verify_answer(&f.key)["valid"], true);
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    assert!(!node.on_redis());
    assert_eq!(
        node.metric("gatehouse_rate_limit_backend{backend=\"local\"}"),
        1.0
    );
    assert_eq!(
        node.metric("gatehouse_rate_limit_redis_fallbacks_total"),
        1.0,
        "one outage, counted once"
    );
    node.server.get("/readyz").assert_error(503, "unavailable");

    redis.restart();
    wait_for("the node back on Redis", || node.on_redis());
    assert_eq!(node.server.get("/readyz").status, 200);
    let answer = node.verify_answer(&f.key);
    assert_eq!(answer["valid"], true);
    // The fresh Redis counts from zero: the node really asks it again.
    assert_eq!(answer["ratelimit"]["remaining"], 999);
    let (_, stdout, stderr) = node.server.terminate();
    let log = stdout.join("\n") + &stderr;
    assert_eq!(
        log.matches("rate limits fall back").count(),
        1,
        "the fallback is logged once:\n{log}"
    );
    assert!(log.contains("Redis answers again"), "{log}");
}

postgres_only! {
    /// When Redis is lost, each node falls back to a window that already holds
    /// the count Redis last reported to it: together the nodes never allow a
    /// full limit each on top of what Redis counted (SPEC section 14).
    #[test]
    fn a_fallback_window_starts_from_the_shared_count() {
        let Some(mut redis) = OwnRedis::start() else {
            return;
        };
        const LIMIT: usize = 10;
        let f = fixture(LIMIT as u32, None);
        let url = redis.url();
        let a = f.node("a", Some((&url, "gh:")));
        let b = f.node("b", Some((&url, "gh:")));
        wait_for("both nodes on Redis", || a.on_redis() && b.on_redis());
        // The whole limit through Redis, taking turns: a last saw 9 counted,
        // b saw 10.
        for i in 0..LIMIT {
            let node = if i % 2 == 0 { &a } else { &b };
            assert_eq!(node.verify_answer(&f.key)["valid"], true, "request {i}");
        }
        assert_eq!(a.verify_answer(&f.key)["code"], "rate_limited");

        redis.kill();
        let valid = |node: &Node| {
            (0..LIMIT)
                .filter(|_| node.verify_answer(&f.key)["valid"] == true)
                .count()
        };
        // a's last answer from Redis (the refusal) said the window was full.
        assert_eq!(valid(&a), 0, "a falls back to a full window");
        assert_eq!(valid(&b), 0, "b falls back to a full window");
        assert!(!a.on_redis() && !b.on_redis(), "both fell back");
    }
}

#[test]
fn a_placeholder_redis_password_is_refused_outside_local_mode() {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::helpers::production_toml(dir.path())
        + "\n[redis]\nurl = \"redis://:changeme@127.0.0.1:6379\"\n";
    crate::helpers::write(dir.path(), "prod.toml", &config);
    let out = run(gatehouse(dir.path()).args(["check-config", "--config", "prod.toml"]));
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(text.contains("redis.url"), "{text}");
    assert!(!text.contains("changeme"), "never shown: {text}");
}
