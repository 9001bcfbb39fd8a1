//! Fault drills: two `gatehouse serve` processes under steady traffic
//! while a part of the deployment fails (SPEC sections 13 and 14).
//!
//! - a node killed with SIGKILL behind nginx (`deploy/nginx-gatehouse-cluster.conf`);
//! - PostgreSQL stopped for 10 s and started again: a PostgreSQL of the
//!   drill's own (`initdb` in a temporary directory, on a free loopback
//!   port), never the machine's shared server;
//! - Redis killed and restarted (a `redis-server` of the drill's own);
//! - a rolling restart through nginx (SIGTERM one node, start it again,
//!   then the other).
//!
//! The SQLite drill (a full disk under write load) is in `tests/api/drills.rs`.
//!
//! Every request loop is bounded in count and in time, and sends only to
//! loopback. Nothing here asserts speed: the bounds (a request that takes
//! more than [`HANG`] hangs; recovery within 5 s of the database's return)
//! are what the deployment promises, far above what a request takes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{e2e_available, free_port, pg_query_i64, pg_query_strings};
use crate::multinode::{Cluster, Node};
use crate::nodes::{nginx_before, valid_checks};
use crate::webhooks::Receiver;

/// A request that takes longer than this hangs (the drills' client gives
/// up then and records a transport error).
const HANG: Duration = Duration::from_secs(10);
/// No traffic thread runs longer than this, whatever happens to the drill.
const MAX_TRAFFIC: Duration = Duration::from_secs(90);
/// Nor sends more than this many requests.
const MAX_CALLS_PER_THREAD: usize = 20_000;

fn client() -> &'static ureq::Agent {
    static AGENT: std::sync::OnceLock<ureq::Agent> = std::sync::OnceLock::new();
    AGENT.get_or_init(|| ureq::AgentBuilder::new().redirects(0).timeout(HANG).build())
}

/// One answer the traffic got.
#[derive(Clone, Debug)]
struct Answer {
    op: &'static str,
    /// When the request was sent, from the start of the traffic.
    sent: Duration,
    took: Duration,
    /// 0 for a transport error (no answer, or none within [`HANG`]).
    status: u16,
    /// `valid`, the answer's `code` or `error.code`, or the transport error.
    code: String,
    retry_after: bool,
    body: String,
}

impl Answer {
    fn answered(&self) -> Duration {
        self.sent + self.took
    }
}

/// A request for the traffic: method, URL, headers, JSON body.
#[derive(Clone)]
struct Call {
    method: &'static str,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<Value>,
}

impl Call {
    fn get(url: String) -> Call {
        Call {
            method: "GET",
            url,
            headers: vec![],
            body: None,
        }
    }

    fn post(url: String, body: Value) -> Call {
        Call {
            method: "POST",
            url,
            headers: vec![],
            body: Some(body),
        }
    }

    fn header(mut self, name: &str, value: &str) -> Call {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    fn send(&self) -> (u16, String, bool, String) {
        let mut req = client().request(self.method, &self.url);
        for (k, v) in &self.headers {
            req = req.set(k, v);
        }
        let result = match &self.body {
            Some(body) => req
                .set("Content-Type", "application/json")
                .send_string(&body.to_string()),
            None => req.call(),
        };
        let res = match result {
            Ok(r) | Err(ureq::Error::Status(_, r)) => r,
            Err(e) => return (0, format!("transport: {e}"), false, String::new()),
        };
        let status = res.status();
        let retry_after = res.header("retry-after").is_some();
        let body = res.into_string().unwrap_or_default();
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let code = if v["valid"] == true {
            "valid".to_string()
        } else {
            v["code"]
                .as_str()
                .or(v["error"]["code"].as_str())
                .unwrap_or("")
                .to_string()
        };
        (status, code, retry_after, body)
    }
}

/// Steady traffic: one thread per operation, each sending its calls in
/// turn, one at a time with a short pause, until stopped (or the bounds).
struct Traffic {
    started: Instant,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<Vec<Answer>>>,
}

impl Traffic {
    fn start(ops: Vec<(&'static str, Vec<Call>)>) -> Traffic {
        let started = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let threads = ops
            .into_iter()
            .map(|(op, calls)| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut answers = Vec::new();
                    for n in 0..MAX_CALLS_PER_THREAD {
                        if stop.load(Ordering::SeqCst) || started.elapsed() > MAX_TRAFFIC {
                            break;
                        }
                        let call = &calls[n % calls.len()];
                        let sent = started.elapsed();
                        let (status, code, retry_after, body) = call.send();
                        answers.push(Answer {
                            op,
                            sent,
                            took: started.elapsed() - sent,
                            status,
                            code,
                            retry_after,
                            body,
                        });
                        std::thread::sleep(Duration::from_millis(3));
                    }
                    answers
                })
            })
            .collect();
        Traffic {
            started,
            stop,
            threads,
        }
    }

    /// Time since the traffic started (what [`Answer::sent`] counts from).
    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// Lets the traffic run for `d`. Real time on purpose: a drill is
    /// traffic through a fault that lasts (before it, during it, after it),
    /// against `serve` processes on the system clock, and the staleness
    /// bound it waits past is measured by the product in real time.
    fn run_for(&self, d: Duration) {
        std::thread::sleep(d);
    }

    fn stop(self) -> Vec<Answer> {
        self.stop.store(true, Ordering::SeqCst);
        let mut all: Vec<Answer> = self
            .threads
            .into_iter()
            .flat_map(|t| t.join().expect("a traffic thread"))
            .collect();
        all.sort_by_key(|a| a.sent);
        all
    }
}

fn summary(answers: &[Answer]) -> String {
    let mut counts: std::collections::BTreeMap<(String, u16, String), usize> = Default::default();
    for a in answers {
        *counts
            .entry((a.op.to_string(), a.status, a.code.clone()))
            .or_default() += 1;
    }
    counts
        .iter()
        .map(|((op, status, code), n)| format!("  {op}: {status} {code} x{n}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn created_key(a: &Answer) -> (String, String) {
    let v: Value = serde_json::from_str(&a.body).expect("a created key");
    (
        v["id"].as_str().unwrap().to_string(),
        v["plaintext_key"].as_str().unwrap().to_string(),
    )
}

fn verify_url(base: &str) -> String {
    format!("{base}/api/v1/keys/verify")
}

fn forward_auth(base: &str, key: &str) -> Call {
    Call::get(format!("{base}/api/v1/auth/check"))
        .header("X-API-Key", key)
        .header("X-Forwarded-Method", "GET")
        .header("X-Forwarded-Uri", "/orders/42")
}

fn create_key_call(base: &str, access: &str, name: &str) -> Call {
    Call::post(
        format!("{base}/api/v1/api-keys"),
        json!({ "name": name, "rate_limit": { "limit": 100000, "window_secs": 60 } }),
    )
    .header("Authorization", &format!("Bearer {access}"))
}

/// Key creations with names `{prefix}-0`, `{prefix}-1`, ... (one call per
/// name; the traffic cycles through them, so a bounded run never reuses one).
fn create_key_calls(base: &str, access: &str, prefix: &str) -> Vec<Call> {
    (0..2000)
        .map(|i| create_key_call(base, access, &format!("{prefix}-{i}")))
        .collect()
}

/// The verify answer for `key` at `base`, once.
fn verify_once(base: &str, key: &str) -> (u16, String) {
    let (status, code, _, _) = Call::post(verify_url(base), json!({ "key": key })).send();
    (status, code)
}

fn webhook_endpoint(node: &Node, access: &str, url: &str) {
    let res = crate::helpers::send_body(
        node.authed("POST", "/api/v1/webhooks", access)
            .set("Content-Type", "application/json"),
        &json!({ "url": url, "events": ["key.created"] }).to_string(),
    );
    assert_eq!(res.status, 201, "{}", res.body);
}

fn kill_9(node: &Node) {
    let status = Command::new("kill")
        .args(["-KILL", &node.server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// A node killed with SIGKILL while traffic goes through nginx to both:
/// nginx keeps answering from the other node; every key whose creation was
/// acknowledged verifies afterwards; the credits spent are exactly the
/// successful checks (plus at most the checks the dead node may have
/// decided without answering: nginx cannot know, so it answers 502 and does
/// not send them again); every key creation's webhook arrives, and every
/// delivery of one event carries the same `webhook-id`.
#[test]
fn a_node_killed_under_traffic_loses_nothing_acknowledged() {
    let cluster = Cluster::new();
    let db = cluster.db();
    let receiver = Receiver::start(vec![200]);
    // An attempt times out after 1 s: a delivery the dead node had claimed
    // is taken over by the other once its lease (1 s + 30 s) has run out.
    let env = [("GATEHOUSE_WEBHOOKS__TIMEOUT_SECS", "1")];
    let a = cluster.serve_with("a", &env);
    let b = cluster.serve_with("b", &env);
    let Some(nginx) = nginx_before([&a, &b]) else {
        return;
    };
    let front = format!("http://127.0.0.1:{}", nginx.port);
    let (access, _) = a.login("owner@acme.test");
    webhook_endpoint(&a, &access, &receiver.url);
    const CREDITS: i64 = 1_000_000;
    let (credited_id, credited) = a.create_key(
        &access,
        json!({
            "name": "credited",
            "credits": { "remaining": CREDITS },
            "rate_limit": { "limit": 1000000, "window_secs": 60 }
        }),
    );

    let verify = Call::post(verify_url(&front), json!({ "key": credited }));
    let traffic = Traffic::start(vec![
        ("verify", vec![verify.clone()]),
        ("verify", vec![verify.clone()]),
        ("verify", vec![verify]),
        ("create", create_key_calls(&front, &access, "drill")),
    ]);
    traffic.run_for(Duration::from_secs(3));
    let killed_at = traffic.now();
    kill_9(&a);
    traffic.run_for(Duration::from_secs(4));
    let answers = traffic.stop();
    drop(a);
    eprintln!(
        "answers ({} in all; a killed at {killed_at:?}):\n{}",
        answers.len(),
        summary(&answers)
    );

    let ok = |a: &Answer| match a.op {
        "verify" => a.status == 200 && a.code == "valid",
        _ => a.status == 201,
    };
    let failed: Vec<&Answer> = answers.iter().filter(|a| !ok(a)).collect();
    // Only a request in flight to the node when it died can fail: at most
    // one per traffic thread, answered 502 by nginx (never 500 or 503).
    assert!(
        failed.len() <= 4,
        "more failures than requests in flight: {failed:#?}"
    );
    for f in &failed {
        assert_eq!(f.status, 502, "{f:?}");
        assert!(
            f.sent <= killed_at + Duration::from_millis(500) && f.answered() >= killed_at,
            "in flight when the node died: {f:?}"
        );
    }
    let after: Vec<&Answer> = answers
        .iter()
        .filter(|x| x.sent > killed_at + Duration::from_millis(100))
        .collect();
    assert!(
        after.len() > 20,
        "nginx kept answering: {} answers after the kill",
        after.len()
    );

    // Every acknowledged creation verifies, through nginx (the other node).
    let acknowledged: Vec<(String, String)> = answers
        .iter()
        .filter(|x| x.op == "create" && x.status == 201)
        .map(created_key)
        .collect();
    assert!(acknowledged.len() > 5, "{} keys", acknowledged.len());
    for (id, key) in &acknowledged {
        assert_eq!(
            verify_once(&front, key),
            (200, "valid".to_string()),
            "key {id}"
        );
    }

    // Credits: spent exactly once per valid answer, and at most once more
    // per check the dead node may have decided without answering.
    let valid = answers.iter().filter(|x| x.op == "verify" && ok(x)).count() as i64;
    let unanswered = failed.iter().filter(|x| x.op == "verify").count() as i64;
    let remaining = pg_query_i64(
        &db.url,
        &format!("SELECT credits_remaining FROM api_keys WHERE id = '{credited_id}'"),
    );
    let spent = CREDITS - remaining;
    eprintln!("credits spent {spent}, valid answers {valid}, unanswered checks {unanswered}");
    assert!(
        spent >= valid && spent <= valid + unanswered,
        "spent {spent}, valid answers {valid}, unanswered {unanswered}"
    );

    // Webhooks: every key in the database (acknowledged or not) is
    // announced, and all deliveries of one event have one webhook-id.
    let created = pg_query_strings(
        &db.url,
        "SELECT id::text FROM api_keys WHERE name LIKE 'drill-%'",
    );
    assert!(created.len() >= acknowledged.len());
    let deadline = Instant::now() + Duration::from_secs(60);
    let ids_by_key = loop {
        let got = receiver.wait_for(0, Duration::ZERO);
        let mut ids_by_key: std::collections::HashMap<String, Vec<String>> = Default::default();
        for r in &got {
            let v: Value = serde_json::from_str(&r.body).unwrap();
            let key_id = v["data"]["id"].as_str().unwrap_or("").to_string();
            ids_by_key
                .entry(key_id)
                .or_default()
                .push(r.header("webhook-id").unwrap_or("").to_string());
        }
        if created.iter().all(|id| ids_by_key.contains_key(id)) {
            break ids_by_key;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} keys announced within 60 s of the kill",
            created
                .iter()
                .filter(|id| ids_by_key.contains_key(*id))
                .count(),
            created.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut twice = 0;
    for id in &created {
        let ids = &ids_by_key[id];
        assert!(
            ids.iter().all(|w| !w.is_empty() && w == &ids[0]),
            "key {id}: deliveries with different webhook-ids {ids:?}"
        );
        twice += usize::from(ids.len() > 1);
    }
    eprintln!(
        "{} keys announced, {twice} of them delivered more than once (same webhook-id)",
        created.len()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while pg_query_i64(
        &db.url,
        "SELECT count(*) FROM webhook_deliveries WHERE status <> 'delivered'",
    ) != 0
    {
        assert!(
            Instant::now() < deadline,
            "every delivery recorded as delivered"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    b.stop();
}

// ---------------------------------------------------------------------------
// A PostgreSQL of the drill's own, which it may stop and start.

/// The directory of PostgreSQL's server programs: Debian's newest
/// `/usr/lib/postgresql/N/bin`, else wherever `initdb` is on the PATH.
fn postgres_bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let e = e.ok()?;
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("initdb"))
        .find(|p| p.is_file())
        .and_then(|p| std::fs::canonicalize(p).ok())
        .and_then(|p| p.parent().map(Path::to_path_buf))
}

/// The uid and gid of the `postgres` account: PostgreSQL refuses to run as
/// root, so a drill run as root runs it as that account.
fn postgres_account() -> Option<(u32, u32)> {
    // SAFETY: getpwnam returns a pointer into static storage (or null),
    // read at once; the tests call it from one thread at a time.
    unsafe {
        let pw = libc::getpwnam(c"postgres".as_ptr());
        (!pw.is_null()).then(|| ((*pw).pw_uid, (*pw).pw_gid))
    }
}

struct OwnPostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// Who runs it (when the test runs as root).
    account: Option<(u32, u32)>,
    child: Option<Child>,
}

impl OwnPostgres {
    /// `initdb` in a temporary directory and the server started on a free
    /// loopback port; `None` (skipped visibly) without PostgreSQL's programs.
    fn start() -> Option<OwnPostgres> {
        let bin = postgres_bin_dir();
        if !e2e_available(bin.is_some(), "PostgreSQL's initdb (package postgresql)") {
            return None;
        }
        let bin = bin.unwrap();
        // SAFETY: geteuid cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        let account = if root {
            Some(postgres_account().expect("a postgres account to run PostgreSQL as"))
        } else {
            None
        };
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        if let Some((uid, gid)) = account {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            std::os::unix::fs::chown(&data, Some(uid), Some(gid)).unwrap();
        }
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "--no-sync"])
            .stdout(Stdio::null());
        as_account(&mut initdb, account);
        let out = initdb.output().expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut pg = OwnPostgres {
            dir,
            bin,
            port: free_port(),
            account,
            child: None,
        };
        pg.run();
        Some(pg)
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server and waits until it accepts connections.
    fn run(&mut self) {
        let data = self.dir.path().join("data");
        let mut cmd = Command::new(self.bin.join("postgres"));
        cmd.arg("-D")
            .arg(&data)
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(&data)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(["-c", "max_connections=100"])
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::options()
                    .create(true)
                    .append(true)
                    .open(self.dir.path().join("server.log"))
                    .unwrap(),
            );
        as_account(&mut cmd, self.account);
        self.child = Some(cmd.spawn().expect("postgres starts"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.accepts() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("postgres exited with {status}: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Whether a new connection can run a query.
    fn accepts(&self) -> bool {
        let url = self.url();
        std::thread::spawn(move || {
            crate::pg::block_on(async move {
                let connect = tokio_postgres::connect(&url, tokio_postgres::NoTls);
                let Ok(Ok((client, conn))) =
                    tokio::time::timeout(Duration::from_secs(2), connect).await
                else {
                    return false;
                };
                tokio::spawn(conn);
                client.simple_query("SELECT 1").await.is_ok()
            })
        })
        .join()
        .unwrap()
    }

    /// Stops the server with a signal (SIGINT: fast shutdown, sessions
    /// cut; SIGQUIT: immediate) and waits for it to exit.
    fn stop_with(&mut self, signal: libc::c_int) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: signals the server this drill started.
        unsafe {
            libc::kill(child.id() as libc::pid_t, signal);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.wait();
    }

    fn stop(&mut self) {
        self.stop_with(libc::SIGINT);
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        self.stop_with(libc::SIGQUIT);
    }
}

/// Runs `cmd` as `account` (when given) and makes it die with the test.
/// The parent-death signal is set after the change of user, which clears it.
fn as_account(cmd: &mut Command, account: Option<(u32, u32)>) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setgroups, setgid, setuid and prctl are async-signal-safe
    // and touch only the child.
    unsafe {
        cmd.pre_exec(move || {
            if let Some((uid, gid)) = account {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// PostgreSQL stopped for 10 s under traffic to two nodes, then started
/// again: while it is away (past `cluster.max_staleness_ms`) both nodes
/// answer key checks and writes with 503 `unavailable` and Retry-After,
/// never a verdict and never a 500, and `/readyz` is 503; both recover by
/// themselves within 5 s of the database's return; every acknowledged key
/// creation is still there.
#[test]
fn postgresql_stopped_for_ten_seconds_is_503_and_both_nodes_recover() {
    let Some(mut pg) = OwnPostgres::start() else {
        return;
    };
    let cluster = Cluster::on_database(&pg.url());
    let a = cluster.serve("a");
    let b = cluster.serve("b");
    let (access, _) = a.login("owner@acme.test");
    let (_, cached) = a.create_key(
        &access,
        json!({ "name": "cached", "rate_limit": { "limit": 1000000, "window_secs": 60 } }),
    );
    let unknown = gatehouse::keys::ApiKey::generate("gate", gatehouse::keys::KeyType::Secret)
        .expose()
        .to_string();
    let (ab, bb) = (&a.server.base, &b.server.base);
    for base in [ab, bb] {
        assert_eq!(verify_once(base, &cached), (200, "valid".into()));
    }

    let traffic = Traffic::start(vec![
        (
            "verify cached",
            vec![
                Call::post(verify_url(ab), json!({ "key": cached })),
                Call::post(verify_url(bb), json!({ "key": cached })),
            ],
        ),
        (
            "forward-auth cached",
            vec![forward_auth(ab, &cached), forward_auth(bb, &cached)],
        ),
        (
            "verify unknown",
            vec![
                Call::post(verify_url(ab), json!({ "key": unknown })),
                Call::post(verify_url(bb), json!({ "key": unknown })),
            ],
        ),
        ("create", {
            let mut calls = create_key_calls(ab, &access, "outage-a");
            calls.extend(create_key_calls(bb, &access, "outage-b"));
            // Alternate the nodes.
            let (x, y) = calls.split_at(calls.len() / 2);
            x.iter()
                .zip(y)
                .flat_map(|(p, q)| [p.clone(), q.clone()])
                .collect()
        }),
    ]);
    traffic.run_for(Duration::from_secs(2));
    pg.stop();
    let stopped = traffic.now();
    // Past the staleness bound (1 s) no node may vouch for a cached key.
    traffic.run_for(Duration::from_millis(1500));
    for base in [ab, bb] {
        let (status, code, retry, _) = Call::get(format!("{base}/readyz")).send();
        assert_eq!((status, code.as_str(), retry), (503, "unavailable", true));
    }
    traffic.run_for(Duration::from_millis(8500));
    let outage_end = traffic.now();
    pg.run();
    let back = traffic.now();
    let deadline = Instant::now() + Duration::from_secs(5);
    let recovered = loop {
        let ready = [ab, bb].iter().all(|base| {
            Call::get(format!("{base}/readyz")).send().0 == 200
                && verify_once(base, &cached) == (200, "valid".into())
                && verify_once(base, &unknown) == (200, "invalid_key".into())
        });
        if ready {
            break traffic.now();
        }
        assert!(
            Instant::now() < deadline,
            "both nodes ready and deciding within 5 s of the database's return"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    traffic.run_for(Duration::from_secs(1));
    let answers = traffic.stop();
    eprintln!(
        "answers ({} in all; stopped at {stopped:?}, started again at {outage_end:?}, \
         accepting at {back:?}, both nodes recovered at {recovered:?}):\n{}",
        answers.len(),
        summary(&answers)
    );

    for x in &answers {
        // Never a 500, never a hang: 503 `unavailable` with Retry-After
        // when a node cannot decide.
        assert!(x.status != 0 && x.status != 500, "{x:?}");
        if x.status >= 500 {
            assert_eq!((x.status, x.code.as_str()), (503, "unavailable"), "{x:?}");
            assert!(x.retry_after, "Retry-After on {x:?}");
        }
        let expected = match x.op {
            "verify cached" => (200, "valid"),
            "verify unknown" => (200, "invalid_key"),
            "forward-auth cached" => (200, ""),
            _ => (201, ""),
        };
        if x.status != 503 {
            let code = if x.op.starts_with("verify") {
                x.code.as_str()
            } else {
                ""
            };
            assert_eq!((x.status, code), expected, "{x:?}");
        }
        // While the database is away (past the staleness bound) no node
        // decides anything.
        if x.sent >= stopped + Duration::from_millis(1500) && x.answered() <= outage_end {
            assert_eq!(x.status, 503, "a verdict without the database: {x:?}");
        }
    }
    let during = answers
        .iter()
        .filter(|x| x.sent >= stopped + Duration::from_millis(1500) && x.answered() <= outage_end)
        .count();
    assert!(during > 50, "traffic during the outage: {during} answers");

    let acknowledged: Vec<(String, String)> = answers
        .iter()
        .filter(|x| x.op == "create" && x.status == 201)
        .map(created_key)
        .collect();
    assert!(acknowledged.len() > 5, "{} keys", acknowledged.len());
    for (id, key) in &acknowledged {
        for base in [ab, bb] {
            assert_eq!(
                verify_once(base, key),
                (200, "valid".into()),
                "key {id} at {base}"
            );
        }
    }
    a.stop();
    b.stop();
}

/// Redis killed under traffic to two nodes sharing rate limits through it,
/// then started again: no check fails or hangs (each node decides on its
/// own window meanwhile), and once Redis is back both nodes count in it
/// again, together.
#[test]
fn redis_killed_and_restarted_under_traffic_fails_no_check() {
    let Some(mut redis) = crate::cluster::OwnRedis::start() else {
        return;
    };
    let f = crate::cluster::fixture(1_000_000, None);
    let url = redis.url();
    let a = f.node("a", Some((&url, "gh:")));
    let b = f.node("b", Some((&url, "gh:")));
    crate::cluster::wait_for("both nodes on Redis", || a.on_redis() && b.on_redis());
    let both = vec![
        Call::post(verify_url(a.base()), json!({ "key": f.key })),
        Call::post(verify_url(b.base()), json!({ "key": f.key })),
    ];
    let traffic = Traffic::start(vec![
        ("verify", both.clone()),
        ("verify", both.clone()),
        (
            "forward-auth",
            vec![
                forward_auth(a.base(), &f.key),
                forward_auth(b.base(), &f.key),
            ],
        ),
    ]);
    traffic.run_for(Duration::from_secs(1));
    redis.kill();
    let killed = traffic.now();
    traffic.run_for(Duration::from_secs(3));
    assert!(
        !a.on_redis() && !b.on_redis(),
        "both nodes on their own windows"
    );
    redis.restart();
    let restarted = traffic.now();
    crate::cluster::wait_for("both nodes back on Redis", || a.on_redis() && b.on_redis());
    traffic.run_for(Duration::from_secs(1));
    let answers = traffic.stop();
    eprintln!(
        "answers ({} in all; Redis killed at {killed:?}, restarted at {restarted:?}):\n{}",
        answers.len(),
        summary(&answers)
    );
    for x in &answers {
        assert_eq!(x.status, 200, "{x:?}");
        if x.op == "verify" {
            assert_eq!(x.code, "valid", "{x:?}");
        }
    }
    let during = answers
        .iter()
        .filter(|x| x.sent > killed && x.answered() < restarted)
        .count();
    assert!(
        during > 50,
        "traffic while Redis was down: {during} answers"
    );

    // Back on Redis: the restarted Redis counts from zero, and the two
    // nodes count in one window again.
    let remaining = |base: &str| {
        let res = crate::helpers::verify_key_at(base, &json!({ "key": f.key }));
        res.json()["ratelimit"]["remaining"].as_i64().unwrap()
    };
    let on_a = remaining(a.base());
    let on_b = remaining(b.base());
    assert_eq!(on_b, on_a - 1, "one window for both nodes");
    assert!(
        on_a > 1_000_000 - 100_000,
        "{on_a}: counted from the restart"
    );
}

/// A rolling restart through nginx under traffic: SIGTERM node a, start it
/// again on its address, wait until nginx sends it traffic, then the same
/// for node b. No request fails: a stopping node finishes what it has and
/// closes its connections after answering; nginx sends new requests to the
/// other node (a refused connection is safe to retry for any method).
#[test]
fn a_rolling_restart_through_nginx_fails_no_request() {
    let cluster = Cluster::new();
    let a = cluster.serve("a");
    let b = cluster.serve("b");
    let Some(nginx) = nginx_before([&a, &b]) else {
        return;
    };
    let front = format!("http://127.0.0.1:{}", nginx.port);
    let (access, _) = a.login("owner@acme.test");
    let (_, key) = a.create_key(
        &access,
        json!({ "name": "steady", "rate_limit": { "limit": 1000000, "window_secs": 60 } }),
    );
    let traffic = Traffic::start(vec![
        (
            "verify",
            vec![Call::post(verify_url(&front), json!({ "key": key }))],
        ),
        ("forward-auth", vec![forward_auth(&front, &key)]),
        (
            "me",
            vec![Call::get(format!("{front}/api/v1/me"))
                .header("Authorization", &format!("Bearer {access}"))],
        ),
        ("create", create_key_calls(&front, &access, "rolling")),
    ]);
    let mut restarts = Vec::new();
    let mut nodes = [("a", Some(a)), ("b", Some(b))];
    traffic.run_for(Duration::from_secs(1));
    for (name, slot) in nodes.iter_mut() {
        let old = slot.take().unwrap();
        let addr = old.server.base.trim_start_matches("http://").to_string();
        let stopping = traffic.now();
        old.stop();
        let stopped = traffic.now();
        let node = slot.insert(cluster.serve_at(name, &addr));
        let started = traffic.now();
        // nginx skips a node for fail_timeout (5 s) after a refused
        // connection: wait until it sends this one traffic again.
        let before = valid_checks(node);
        let deadline = Instant::now() + Duration::from_secs(20);
        while valid_checks(node) < before + 10.0 {
            assert!(
                Instant::now() < deadline,
                "nginx sends {addr} traffic again"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        restarts.push((*name, stopping, stopped, started, traffic.now()));
    }
    traffic.run_for(Duration::from_secs(1));
    let answers = traffic.stop();
    eprintln!(
        "answers ({} in all; restarts (node, SIGTERM, exited, started, serving again): {:?}):\n{}",
        answers.len(),
        restarts,
        summary(&answers)
    );
    let failed: Vec<&Answer> = answers
        .iter()
        .filter(|x| match x.op {
            "verify" => (x.status, x.code.as_str()) != (200, "valid"),
            "create" => x.status != 201,
            _ => x.status != 200,
        })
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
    let acknowledged: Vec<(String, String)> = answers
        .iter()
        .filter(|x| x.op == "create" && x.status == 201)
        .map(created_key)
        .collect();
    for (id, key) in &acknowledged {
        assert_eq!(verify_once(&front, key), (200, "valid".into()), "key {id}");
    }
    for (_, node) in nodes {
        node.unwrap().stop();
    }
}
