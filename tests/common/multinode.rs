//! Several nodes on one database (SPEC section 14): the one harness of the
//! tests that need more than one node. A [`Cluster`] owns what its nodes
//! share (the database, the secrets, the clock of its in-process nodes)
//! and starts nodes of either kind on it:
//!
//! - [`Cluster::app`]: an app in the test's process ([`TestApp`]) on the
//!   cluster's manual clock, so a test moves time for every such node at
//!   once instead of sleeping through it;
//! - [`Cluster::serve`]: a real `gatehouse serve` process ([`Node`]) on the
//!   system clock, for what needs a process: kill -9, its log and exit
//!   code, a proxy in front of it, Redis shared between processes.
//!
//! Both kinds may serve one cluster together. On PostgreSQL
//! (`tests/api_postgres`) the database is a fresh one, dropped with the
//! cluster; on SQLite (`tests/api`) it is the data directory `<root>/data`,
//! which in-process apps may share but only one `serve` process may hold.
//! Every helper that takes a data root (`helpers::gatehouse`,
//! `helpers::query_i64_at`, `helpers::spawn_app_at`) finds the cluster's
//! database from [`Cluster::root`].

// Each test binary uses a part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use gatehouse::clock::Clock;
use serde_json::{json, Value};

use crate::helpers::{
    backend, gatehouse, send, send_body, spawn_app_on, Backend, Resp, Server, TestApp,
};
use crate::pg::TestDb;

pub struct Cluster {
    root: tempfile::TempDir,
    /// The nodes' PostgreSQL database (`None` on SQLite).
    db: Option<TestDb>,
    /// The clock of the in-process nodes: moving it moves time for all of
    /// them. Process nodes read the system clock.
    pub clock: Clock,
}

impl Default for Cluster {
    fn default() -> Self {
        Self::new()
    }
}

impl Cluster {
    /// A cluster on the suite's backend. The PostgreSQL binary checked its
    /// server before the first test, so a database that cannot be made
    /// now fails the test.
    pub fn new() -> Cluster {
        let root = tempfile::tempdir().unwrap();
        let db = (backend() == Backend::Postgres).then(TestDb::must_create);
        if let Some(db) = &db {
            // How every helper given this root finds the database.
            std::fs::write(root.path().join("test-pg-url"), &db.url).unwrap();
        }
        Cluster {
            root,
            db,
            clock: Clock::manual(),
        }
    }

    /// A cluster on a PostgreSQL database the test runs itself (one it
    /// stops and starts): the cluster neither makes nor drops it.
    pub fn on_database(url: &str) -> Cluster {
        assert_eq!(backend(), Backend::Postgres, "a PostgreSQL URL on SQLite");
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("test-pg-url"), url).unwrap();
        Cluster {
            root,
            db: None,
            clock: Clock::manual(),
        }
    }

    /// Where the cluster keeps its files (nodes' data directories, the
    /// configuration, the shared secrets).
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The PostgreSQL database.
    ///
    /// # Panics
    /// On SQLite.
    pub fn db(&self) -> &TestDb {
        self.db
            .as_ref()
            .expect("this cluster runs on PostgreSQL (tests/api_postgres)")
    }

    /// A node in the test's process, on the cluster's clock, configured by
    /// `customize` after the test defaults.
    pub fn app(&self, customize: impl FnOnce(&mut gatehouse::config::Config)) -> TestApp {
        spawn_app_on(self.root(), self.clock.clone(), customize)
    }

    /// For tests of per-minute windows: when the cluster's clock is late in
    /// a minute, moves it to the start of the next (see
    /// [`TestApp::early_in_a_minute`]).
    pub fn early_in_a_minute(&self) {
        let into = self.clock.now_ms().rem_euclid(60_000);
        if into > 45_000 {
            self.clock
                .advance(Duration::from_millis((60_000 - into + 100) as u64));
        }
    }

    /// A `gatehouse` command run in the cluster's root, on its database.
    pub fn gatehouse(&self) -> Command {
        gatehouse(self.root())
    }

    /// The data directory of the process node `name`: its own on
    /// PostgreSQL; on SQLite the one that holds the database.
    pub fn data_dir(&self, name: &str) -> PathBuf {
        match backend() {
            Backend::Postgres => self.root().join(name),
            Backend::Sqlite => self.root().join("data"),
        }
    }

    /// The configuration every process node reads: the secrets the
    /// in-process nodes use too, usage written every second, webhooks to
    /// loopback receivers retried after one second.
    pub fn config_file(&self) -> PathBuf {
        let path = self.root().join("cluster.toml");
        if !path.exists() {
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
                    crate::helpers::session_key_at(self.root()),
                    gatehouse::config::generate_secret(),
                ),
            )
            .unwrap();
        }
        path
    }

    /// The command that starts the process node `name` (for a test that
    /// changes it before [`Node::start`]).
    pub fn serve_command(&self, name: &str) -> Command {
        self.serve_command_at(name, "127.0.0.1:0")
    }

    /// [`Cluster::serve_command`] listening on `listen`.
    pub fn serve_command_at(&self, name: &str, listen: &str) -> Command {
        let mut cmd = self.gatehouse();
        cmd.args(["serve", "--listen", listen, "--config"])
            .arg(self.config_file())
            .arg("--data-dir")
            .arg(self.data_dir(name));
        cmd
    }

    /// A `gatehouse serve` process on the cluster's database.
    pub fn serve(&self, name: &str) -> Node {
        self.serve_with(name, &[])
    }

    /// [`Cluster::serve`] with more `GATEHOUSE_*` settings in its
    /// environment (they win over the cluster's).
    pub fn serve_with(&self, name: &str, env: &[(&str, &str)]) -> Node {
        Node::start(self.serve_command(name).envs(env.iter().copied()))
    }

    /// [`Cluster::serve`] listening on `listen` (a node started again
    /// where a proxy expects it).
    pub fn serve_at(&self, name: &str, listen: &str) -> Node {
        Node::start(&mut self.serve_command_at(name, listen))
    }

    /// One integer from the cluster's database, whichever the backend.
    pub fn query_i64(&self, sql: &str) -> i64 {
        crate::helpers::query_i64_at(self.root(), sql)
    }

    /// A statement on the cluster's database, whichever the backend.
    pub fn execute_sql(&self, sql: &str) -> u64 {
        crate::helpers::execute_sql_at(self.root(), sql)
    }
}

/// A node that is a `gatehouse serve` process, and a client of it.
pub struct Node {
    pub server: Server,
}

impl Node {
    /// Starts `cmd` (a `serve` command) and waits until it listens.
    pub fn start(cmd: &mut Command) -> Node {
        Node {
            server: Server::start(cmd),
        }
    }

    pub fn base(&self) -> &str {
        &self.server.base
    }

    pub fn post_json(&self, path: &str, body: Value) -> Resp {
        crate::helpers::post_json_at(&self.server.base, path, &body)
    }

    pub fn authed(&self, method: &str, path: &str, access: &str) -> ureq::Request {
        self.server
            .request(method, path)
            .set("Authorization", &format!("Bearer {access}"))
    }

    /// Logs in through this node; the session's access and refresh tokens.
    pub fn login(&self, email: &str) -> (String, String) {
        let t = crate::helpers::login_at(&self.server.base, email);
        (t.access, t.refresh)
    }

    /// Creates a key; its id and plaintext.
    pub fn create_key(&self, access: &str, body: Value) -> (String, String) {
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

    pub fn revoke(&self, access: &str, id: &str) {
        let res = send(self.authed("DELETE", &format!("/api/v1/api-keys/{id}"), access));
        assert_eq!(res.status, 200, "{}", res.body);
    }

    /// `POST /api/v1/keys/verify`: the status and the answer's code
    /// (`valid` for a valid key, else the refusal's or the error's code).
    pub fn verify(&self, key: &str) -> (u16, String) {
        self.verify_body(json!({ "key": key }))
    }

    /// [`Node::verify`] with the whole request body (scopes, cost).
    pub fn verify_body(&self, body: Value) -> (u16, String) {
        let res = crate::helpers::verify_key_at(&self.server.base, &body);
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

    /// The whole answer of `POST /api/v1/keys/verify`, which must be 200.
    pub fn verify_answer(&self, key: &str) -> Value {
        let res = crate::helpers::verify_key_at(&self.server.base, &json!({ "key": key }));
        assert_eq!(res.status, 200, "{}", res.body);
        res.json()
    }

    /// The node's `/metrics` (local mode: no token needed).
    pub fn metrics(&self) -> String {
        self.server.get("/metrics").body
    }

    /// The value of the first metric line starting with `line_start`.
    pub fn metric(&self, line_start: &str) -> f64 {
        let text = self.metrics();
        text.lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {line_start} in:\n{text}"))
    }

    /// Whether the node decides rate limits in Redis now.
    pub fn on_redis(&self) -> bool {
        self.metric("gatehouse_rate_limit_backend{backend=\"redis\"}") == 1.0
    }

    /// Stops the node with SIGTERM; it must exit 0.
    pub fn stop(self) {
        let (code, _, stderr) = self.server.terminate();
        assert_eq!(code, Some(0), "{stderr}");
    }
}
