//! Test harness: an in-process app on 127.0.0.1:0 with a temporary data
//! directory (`spawn_app`), the built binary as a child process
//! (`Binary`), and a small blocking HTTP client.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::web;
use gatehouse::config::{generate_secret, Config, Secret};
use gatehouse::startup::Application;
use gatehouse::state::AppState;

/// A client that never follows redirects (tests look at the 303s themselves).
pub fn agent() -> &'static ureq::Agent {
    static AGENT: std::sync::OnceLock<ureq::Agent> = std::sync::OnceLock::new();
    AGENT.get_or_init(|| ureq::AgentBuilder::new().redirects(0).build())
}

/// Which storage backend the suite runs against: the test binary decides.
/// `api` runs everything on SQLite; `api_postgres` runs the HTTP suite's
/// backend-independent modules on PostgreSQL (a fresh database per app).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub fn backend() -> Backend {
    static BACKEND: std::sync::OnceLock<Backend> = std::sync::OnceLock::new();
    *BACKEND.get_or_init(|| {
        let exe = std::env::current_exe().unwrap_or_default();
        let name = exe.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("api_postgres") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        }
    })
}

/// Databases made for apps whose data directory the caller owns (restart
/// tests): dropped when the test binary exits.
static KEPT_DATABASES: std::sync::Mutex<Vec<crate::pg::TestDb>> = std::sync::Mutex::new(Vec::new());

extern "C" fn drop_kept_databases() {
    let kept = std::mem::take(&mut *KEPT_DATABASES.lock().unwrap_or_else(|e| e.into_inner()));
    drop(kept);
}

/// A fresh PostgreSQL database. The PostgreSQL binary checked the server
/// before its first test (and skipped itself visibly without one), so a
/// database that cannot be made now is a failure, never a skip.
fn fresh_database() -> crate::pg::TestDb {
    crate::pg::TestDb::must_create()
}

/// The PostgreSQL database of the app whose data lives in `root` (made on
/// first use, kept for restarts of the same data directory).
fn database_for_root(root: &Path) -> String {
    let file = root.join("test-pg-url");
    if let Ok(url) = std::fs::read_to_string(&file) {
        return url;
    }
    let db = fresh_database();
    std::fs::write(&file, &db.url).unwrap();
    let url = db.url.clone();
    let mut kept = KEPT_DATABASES.lock().unwrap_or_else(|e| e.into_inner());
    if kept.is_empty() {
        // SAFETY: registers a plain `extern "C" fn` without arguments, as
        // atexit requires.
        unsafe {
            libc::atexit(drop_kept_databases);
        }
    }
    kept.push(db);
    url
}

pub struct TestApp {
    pub base: String,
    /// The app's clock: tests move it (`clock.advance`) instead of sleeping.
    pub clock: gatehouse::clock::Clock,
    /// Where the app keeps its data (`data/` below it).
    pub root: PathBuf,
    /// Kept so the data directory lives as long as the app.
    _dir: Option<tempfile::TempDir>,
    pub state: web::Data<AppState>,
    /// A database this app owns (dropped after the app stops).
    _pg: Option<crate::pg::TestDb>,
    handle: ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A test configuration: loopback, port 0, a temporary data directory,
/// generated secrets, one worker.
pub fn test_config(dir: &Path) -> Config {
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.join("data"),
        ..Default::default()
    };
    config.http.workers = 1;
    config.secrets.session_key = Some(Secret::new(generate_secret()));
    config.secrets.ops_token = Some(Secret::new(generate_secret()));
    config
}

pub fn spawn_app() -> TestApp {
    spawn_app_with(|_| {})
}

pub fn spawn_app_with(customize: impl FnOnce(&mut Config)) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let pg = (backend() == Backend::Postgres).then(fresh_database);
    if let Some(db) = &pg {
        std::fs::write(root.join("test-pg-url"), &db.url).unwrap();
    }
    let mut app = spawn_app_at(&root, customize);
    app._dir = Some(dir);
    app._pg = pg;
    app
}

/// An app whose data lives in `root/data` (which outlives it), for restarts.
pub fn spawn_app_at(root: &Path, customize: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_on(root, gatehouse::clock::Clock::manual(), customize)
}

/// The session key of every app and node whose data lives in `root`, so
/// sessions hold across restarts and between the nodes of a cluster.
pub fn session_key_at(root: &Path) -> String {
    let key_file = root.join("test-session-key");
    std::fs::read_to_string(&key_file).unwrap_or_else(|_| {
        let k = generate_secret();
        std::fs::write(&key_file, &k).unwrap();
        k
    })
}

/// [`spawn_app_at`] on `clock` (a manual clock that other apps may share:
/// the in-process nodes of a [`crate::multinode::Cluster`]).
pub fn spawn_app_on(
    root: &Path,
    clock: gatehouse::clock::Clock,
    customize: impl FnOnce(&mut Config),
) -> TestApp {
    let mut config = test_config(root);
    config.secrets.session_key = Some(Secret::new(session_key_at(root)));
    if backend() == Backend::Postgres {
        config.database.url = Some(Secret::new(database_for_root(root)));
    }
    customize(&mut config);
    let app = Application::build_with_clock(config, clock.clone()).expect("the app builds");
    let port = app.port();
    let state = app.state();
    if backend() == Backend::Postgres {
        assert!(
            state.store.backend() == gatehouse::store::open::Backend::Postgres,
            "an app of the PostgreSQL suite runs on SQLite"
        );
    }
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let running = app.start().expect("the server starts");
            tx.send(running.handle()).unwrap();
            running.wait().await.expect("the server stops cleanly");
        })
    });
    let handle = rx.recv().expect("the server reports its handle");
    TestApp {
        base: format!("http://127.0.0.1:{port}"),
        clock,
        root: root.to_path_buf(),
        _dir: None,
        state,
        _pg: None,
        handle,
        thread: Some(thread),
    }
}

impl TestApp {
    /// For tests of per-minute windows: when the app's clock is late in a
    /// minute (past 45 s), moves it to the start of the next one, so the
    /// test has at least 15 s of real time inside one minute.
    pub fn early_in_a_minute(&self) {
        let into = self.clock.now_ms().rem_euclid(60_000);
        if into > 45_000 {
            self.clock
                .advance(Duration::from_millis((60_000 - into + 100) as u64));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
    pub fn get(&self, path: &str) -> Resp {
        send(agent().get(&self.url(path)))
    }
    pub fn request(&self, method: &str, path: &str) -> ureq::Request {
        agent().request(method, &self.url(path))
    }
    /// Runs an async storage call on a throwaway runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        actix_web::rt::System::new().block_on(f)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        actix_web::rt::System::new().block_on(handle.stop(true));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A response, whatever its status.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HashMap<String, String>,
    /// Every `Set-Cookie` header.
    pub set_cookies: Vec<String>,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    /// The value of the cookie `name` set by this response.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.set_cookies.iter().find_map(|c| {
            let (pair, _) = c.split_once(';').unwrap_or((c, ""));
            let (k, v) = pair.split_once('=')?;
            (k == name).then(|| v.to_string())
        })
    }
    /// The whole `Set-Cookie` line for `name`.
    pub fn set_cookie_line(&self, name: &str) -> Option<&str> {
        self.set_cookies
            .iter()
            .find(|c| c.starts_with(&format!("{name}=")))
            .map(String::as_str)
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
    /// Asserts the error envelope: status, code, and `request_id` equal to the header.
    pub fn assert_error(&self, status: u16, code: &str) -> serde_json::Value {
        assert_eq!(self.status, status, "status of {}", self.body);
        let body = self.json();
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
        assert_eq!(
            body["error"]["request_id"].as_str(),
            self.header("x-request-id"),
            "request_id matches X-Request-Id"
        );
        assert_eq!(self.header("content-type"), Some("application/json"));
        body
    }
}

fn into_resp(r: ureq::Response) -> Resp {
    let status = r.status();
    let mut headers = HashMap::new();
    let set_cookies = r.all("set-cookie").into_iter().map(String::from).collect();
    for name in r.headers_names() {
        if let Some(v) = r.header(&name) {
            headers.insert(name.to_ascii_lowercase(), v.to_string());
        }
    }
    let body = r.into_string().unwrap_or_default();
    Resp {
        status,
        headers,
        set_cookies,
        body,
    }
}

pub fn send(req: ureq::Request) -> Resp {
    let result = match req.clone().call() {
        Err(e) if closed_before_answering(&e) => req.call(),
        result => result,
    };
    answer(result)
}

pub fn send_body(req: ureq::Request, body: &str) -> Resp {
    let result = match req.clone().send_string(body) {
        Err(e) if closed_before_answering(&e) => req.send_string(body),
        result => result,
    };
    answer(result)
}

/// The answer to a request, whatever its status.
///
/// A pooled connection the server closes as a request goes out (its idle
/// keep-alive of 5 s ran out at that moment) ends before any answer, and
/// the request never reached the server's handlers. ureq sends such a
/// request again by itself only when it has no body; [`send`] and
/// [`send_body`] send the others again, once (the stale connection has
/// left the pool). A server that is gone fails the second try too.
fn answer(result: Result<ureq::Response, ureq::Error>) -> Resp {
    match result {
        Ok(r) => into_resp(r),
        Err(ureq::Error::Status(_, r)) => into_resp(r),
        Err(e) => panic!("transport error: {e}"),
    }
}

/// Whether the connection ended before an answer began (how ureq reports
/// an end of stream where the status line should be, or a reset).
fn closed_before_answering(e: &ureq::Error) -> bool {
    let ureq::Error::Transport(t) = e else {
        return false;
    };
    std::error::Error::source(t)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some_and(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset
            )
        })
}

// ---------------------------------------------------------------------------
// The built binary.

pub const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");

/// A `gatehouse` command in `dir`, with no GATEHOUSE_* variables inherited.
pub fn gatehouse(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("GATEHOUSE_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    // On PostgreSQL, commands run in an app's directory use its database
    // (one is made for a directory that has none yet).
    if let Some(url) = pg_url_at(dir) {
        cmd.env("GATEHOUSE_DATABASE__URL", url);
    } else if backend() == Backend::Postgres {
        cmd.env("GATEHOUSE_DATABASE__URL", database_for_root(dir));
    }
    dies_with_the_test(&mut cmd);
    cmd
}

pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("gatehouse runs");
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A running `gatehouse serve` child process.
pub struct Server {
    child: Option<Child>,
    pub base: String,
    /// The stdout lines read so far after "Listening on" (the banner up to
    /// the storage line, then whatever [`Server::wait_for_line`] read).
    seen: std::sync::Mutex<Vec<String>>,
    // In a mutex so a server can be shared between test threads.
    stdout_lines: std::sync::Mutex<mpsc::Receiver<String>>,
    stderr: std::thread::JoinHandle<String>,
}

impl Server {
    /// Starts the command (which must listen on port 0 or a free port) and
    /// waits for its "Listening on" line. Panics with its stderr if it exits.
    pub fn start(cmd: &mut Command) -> Server {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("gatehouse starts");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                s.push_str(&line);
                s.push('\n');
            }
            s
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut base = None;
        while Instant::now() < deadline {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    if let Some(addr) = line.strip_prefix("Listening on ") {
                        base = Some(format!("http://{}", addr.trim()));
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        let err = stderr.join().unwrap_or_default();
                        panic!("gatehouse exited with {status} before listening:\n{err}");
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let Some(base) = base else {
            let _ = child.kill();
            let err = stderr.join().unwrap_or_default();
            panic!("gatehouse did not report a listening address:\n{err}");
        };
        // The banner names the storage: the PostgreSQL suite must never
        // pass on SQLite by accident.
        let mut storage = None;
        let mut banner = Vec::new();
        while Instant::now() < deadline {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    let named = line
                        .trim()
                        .strip_prefix("Storage:")
                        .map(|s| s.trim().to_string());
                    banner.push(line);
                    if named.is_some() {
                        storage = named;
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let storage = storage.expect("the banner names the storage");
        if backend() == Backend::Postgres {
            assert!(
                storage.starts_with("PostgreSQL"),
                "a server of the PostgreSQL suite runs on {storage}"
            );
        }
        Server {
            child: Some(child),
            base,
            seen: std::sync::Mutex::new(banner),
            stdout_lines: std::sync::Mutex::new(rx),
            stderr,
        }
    }

    pub fn get(&self, path: &str) -> Resp {
        send(agent().get(&format!("{}{path}", self.base)))
    }

    pub fn request(&self, method: &str, path: &str) -> ureq::Request {
        agent().request(method, &format!("{}{path}", self.base))
    }

    /// Waits for a stdout line that `wanted` accepts (a log line, which the
    /// server writes after it answered), at most 30 s; returns it. The
    /// lines stay in what [`Server::terminate`] returns.
    pub fn wait_for_line(&self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = self.seen.lock().unwrap();
        if let Some(line) = seen.iter().find(|l| wanted(l)) {
            return line.clone();
        }
        let lines = self.stdout_lines.lock().unwrap();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    seen.push(line.clone());
                    if wanted(&line) {
                        return line;
                    }
                }
                Err(e) => panic!("no line {what} on stdout ({e:?}) in:\n{}", seen.join("\n")),
            }
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends SIGTERM and waits for the exit; returns the exit code, the
    /// stdout lines printed since start-up and all of stderr.
    pub fn terminate(mut self) -> (Option<i32>, Vec<String>, String) {
        let mut child = self.child.take().unwrap();
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        let code = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("gatehouse did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut lines = std::mem::take(self.seen.get_mut().unwrap());
        while let Ok(line) = self
            .stdout_lines
            .get_mut()
            .unwrap()
            .recv_timeout(Duration::from_millis(500))
        {
            lines.push(line);
        }
        let stderr = std::mem::replace(&mut self.stderr, std::thread::spawn(String::new));
        (code, lines, stderr.join().unwrap_or_default())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A production configuration that passes every check, as TOML text, so a
/// test can break exactly one thing.
pub fn production_toml(dir: &Path) -> String {
    format!(
        r#"mode = "production"
public_url = "https://keys.acme.test"
listen = "127.0.0.1:0"
data_dir = "{data}"

[secrets]
session_key = "{session}"
ops_token = "{ops}"

[smtp]
host = "127.0.0.1"
port = 2525
tls = "none"
from = "Gatehouse <keys@acme.test>"
"#,
        data = dir.join("data").display(),
        session = generate_secret(),
        ops = generate_secret(),
    )
}

pub fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

// ---------------------------------------------------------------------------
// Logging in and checking keys, against any server (in-process app,
// `Server`, a node of several): one way each.

/// A JSON POST to the server at `base`.
pub fn post_json_at(base: &str, path: &str, body: &serde_json::Value) -> Resp {
    send_body(
        agent()
            .post(&format!("{base}{path}"))
            .set("Content-Type", "application/json"),
        &body.to_string(),
    )
}

/// `POST /api/v1/keys/verify` at `base`, whatever the answer.
pub fn verify_key_at(base: &str, body: &serde_json::Value) -> Resp {
    post_json_at(base, "/api/v1/keys/verify", body)
}

/// The code in the newest message to `email` in the local mailbox at `base`.
pub fn code_from_mailbox_at(base: &str, email: &str) -> String {
    let res = send(agent().get(&format!("{base}/api/v1/dev/mailbox")));
    assert_eq!(res.status, 200, "{}", res.body);
    let body = res.json();
    let message = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["to"] == email)
        .unwrap_or_else(|| panic!("no mail to {email} in {body}"));
    code_in(message["body"].as_str().unwrap()).unwrap_or_else(|| panic!("no code in {message}"))
}

/// Logs in at `base` through send-code, the local mailbox and verify-code.
pub fn login_at(base: &str, email: &str) -> Tokens {
    let sent = post_json_at(
        base,
        "/api/v1/auth/send-code",
        &serde_json::json!({ "email": email }),
    );
    assert_eq!(sent.status, 202, "{}", sent.body);
    let code = code_from_mailbox_at(base, email);
    let res = post_json_at(
        base,
        "/api/v1/auth/verify-code",
        &serde_json::json!({ "email": email, "code": code }),
    );
    Tokens::of(&res)
}

impl TestApp {
    pub fn post_json(&self, path: &str, body: serde_json::Value) -> Resp {
        post_json_at(&self.base, path, &body)
    }

    /// A request with a bearer token.
    pub fn authed(&self, method: &str, path: &str, token: &str) -> ureq::Request {
        self.request(method, path)
            .set("Authorization", &format!("Bearer {token}"))
    }

    pub fn send_code(&self, email: &str) -> Resp {
        self.post_json(
            "/api/v1/auth/send-code",
            serde_json::json!({ "email": email }),
        )
    }

    /// The code in the newest mailbox message to `email`.
    pub fn code_from_mailbox(&self, email: &str) -> String {
        code_from_mailbox_at(&self.base, email)
    }

    pub fn verify(&self, email: &str, code: &str) -> Resp {
        self.post_json(
            "/api/v1/auth/verify-code",
            serde_json::json!({ "email": email, "code": code }),
        )
    }

    /// Logs in through send-code, the mailbox and verify-code.
    pub fn login(&self, email: &str) -> Tokens {
        login_at(&self.base, email)
    }

    /// verify-code, expecting success; the session's tokens.
    pub fn verify_tokens(&self, email: &str, code: &str) -> Tokens {
        Tokens::of(&self.verify(email, code))
    }

    /// The id of the user's personal project (their first membership).
    pub fn first_project(&self, access: &str) -> String {
        let me = send(self.authed("GET", "/api/v1/me", access)).json();
        me["memberships"][0]["project"]["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The app's PostgreSQL database, when the suite runs on PostgreSQL
    /// (`tests/api_postgres` uses it).
    #[allow(dead_code)]
    pub fn pg_database(&self) -> Option<String> {
        let url = pg_url_at(&self.root)?;
        Some(
            url::Url::parse(&url)
                .ok()?
                .path()
                .trim_start_matches('/')
                .to_string(),
        )
    }

    /// Whether `needle` appears anywhere in what the app stored (secrets
    /// must not): the SQLite file and its log byte for byte, or every row
    /// of every PostgreSQL table as text.
    pub fn database_contains(&self, needle: &str) -> bool {
        match pg_url_at(&self.root) {
            Some(url) => {
                let tables = pg_query_strings(
                    &url,
                    "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
                );
                assert!(tables.len() > 10, "{tables:?}");
                tables.iter().any(|t| pg_table_contains(&url, t, needle))
            }
            None => {
                let needle = needle.as_bytes();
                let db = std::fs::read(self.root.join("data/gatehouse.db")).unwrap();
                let wal =
                    std::fs::read(self.root.join("data/gatehouse.db-wal")).unwrap_or_default();
                [db, wal]
                    .iter()
                    .any(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
            }
        }
    }

    /// Whether `needle` appears in any row of `table`, as text or as the
    /// bytes of a binary column, whichever the backend.
    pub fn table_contains(&self, table: &str, needle: &str) -> bool {
        match pg_url_at(&self.root) {
            Some(url) => pg_table_contains(&url, table, needle),
            None => {
                let conn = rusqlite::Connection::open(self.root.join("data/gatehouse.db")).unwrap();
                conn.busy_timeout(Duration::from_secs(10)).unwrap();
                let columns: Vec<String> = conn
                    .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
                    .unwrap()
                    .query_map([], |r| r.get(0))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect();
                assert!(!columns.is_empty(), "no table {table}");
                columns.iter().any(|c| {
                    conn.query_row(
                        &format!(
                            "SELECT count(*) FROM {table} WHERE instr(CAST({c} AS BLOB), CAST(?1 AS BLOB)) > 0"
                        ),
                        [needle],
                        |r| r.get::<_, i64>(0),
                    )
                    .unwrap()
                        > 0
                })
            }
        }
    }

    /// Runs a query that returns one integer against the app's database,
    /// whichever the backend (keep the SQL to what both understand).
    pub fn query_i64(&self, sql: &str) -> i64 {
        query_i64_at(&self.root, sql)
    }
}

/// Whether a row of `table` holds `needle`, as text or hex-encoded (how a
/// `bytea` column reads as text).
fn pg_table_contains(url: &str, table: &str, needle: &str) -> bool {
    let quoted = needle.replace('\'', "''");
    let hex: String = needle.bytes().map(|b| format!("{b:02x}")).collect();
    pg_query_i64(
        url,
        &format!(
            "SELECT count(*) FROM {table} r WHERE strpos(r::text, '{quoted}') > 0 OR strpos(r::text, '{hex}') > 0"
        ),
    ) > 0
}

/// The PostgreSQL URL of the app whose data lives in `root`, when the
/// suite runs on PostgreSQL.
fn pg_url_at(root: &Path) -> Option<String> {
    std::fs::read_to_string(root.join("test-pg-url")).ok()
}

/// [`TestApp::query_i64`] for the data of `root`, whether or not an app
/// runs on it now.
pub fn query_i64_at(root: &Path, sql: &str) -> i64 {
    match pg_url_at(root) {
        Some(url) => pg_query_i64(&url, sql),
        None => {
            let conn = rusqlite::Connection::open(root.join("data/gatehouse.db")).unwrap();
            // The server writes meanwhile (usage, the change feed): wait for it.
            conn.busy_timeout(std::time::Duration::from_secs(10))
                .unwrap();
            conn.query_row(sql, [], |r| r.get(0))
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
        }
    }
}

/// [`TestApp::execute_sql`] for the data of `root`.
pub fn execute_sql_at(root: &Path, sql: &str) -> u64 {
    match pg_url_at(root) {
        Some(url) => {
            let sql = sql.to_string();
            crate::pg::block_on(async move {
                let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .expect("the test database answers");
                tokio::spawn(conn);
                client
                    .execute(&sql, &[])
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"))
            })
        }
        None => {
            let conn = rusqlite::Connection::open(root.join("data/gatehouse.db")).unwrap();
            conn.busy_timeout(std::time::Duration::from_secs(10))
                .unwrap();
            conn.execute(sql, [])
                .unwrap_or_else(|e| panic!("{sql}: {e}")) as u64
        }
    }
}

/// The first column of every row, as text.
pub fn pg_query_strings(url: &str, sql: &str) -> Vec<String> {
    let (url, sql) = (url.to_string(), sql.to_string());
    crate::pg::block_on(async move {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("the test database answers");
        tokio::spawn(conn);
        client
            .query(&sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .iter()
            .map(|r| r.get(0))
            .collect()
    })
}

/// One integer from PostgreSQL (any integer width; a boolean as 0 or 1).
pub fn pg_query_i64(url: &str, sql: &str) -> i64 {
    let (url, sql) = (url.to_string(), sql.to_string());
    crate::pg::block_on(async move {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("the test database answers");
        tokio::spawn(conn);
        let row = client
            .query_one(&sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        row.try_get::<_, i64>(0)
            .or_else(|_| row.try_get::<_, i32>(0).map(i64::from))
            .or_else(|_| row.try_get::<_, bool>(0).map(i64::from))
            .or_else(|_| row.try_get::<_, Option<i64>>(0).map(|v| v.unwrap_or(0)))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    })
}

pub struct Tokens {
    pub access: String,
    pub refresh: String,
    pub user_id: String,
}

impl Tokens {
    /// The tokens of a successful verify-code answer (asserted).
    pub fn of(res: &Resp) -> Tokens {
        assert_eq!(res.status, 200, "{}", res.body);
        let body = res.json();
        Tokens {
            access: body["access_token"].as_str().unwrap().to_string(),
            refresh: body["refresh_token"].as_str().unwrap().to_string(),
            user_id: body["user"]["id"].as_str().unwrap().to_string(),
        }
    }
}

/// The login code in a message body: the line that is only digits.
pub fn code_in(body: &str) -> Option<String> {
    body.lines()
        .map(str::trim)
        .find(|l| l.len() >= 6 && l.chars().all(|c| c.is_ascii_digit()))
        .map(String::from)
}

/// Logs in where there is no mailbox (staging/production mode in-process):
/// the app must run with `dev.expose_codes`, which returns the code.
pub fn login_directly(app: &TestApp, email: &str) -> Tokens {
    let sent = app.send_code(email);
    assert_eq!(sent.status, 202, "{}", sent.body);
    let code = sent.json()["code"]
        .as_str()
        .expect("dev.expose_codes is on")
        .to_string();
    app.verify_tokens(email, &code)
}

/// Polls `done` until it holds; fails the test, saying `what`, when it has
/// not within `within` (a bound for a stuck run, never a measure of speed:
/// pick one far beyond what a slow machine needs).
pub fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    wait_for(what, within, || done().then_some(()))
}

/// Polls `found` until it gives a value, and returns it; fails the test,
/// saying `what`, when it has not within `within`. Asks again after 10 ms,
/// then less and less often, to every 100 ms: a quick condition is seen
/// at once, a slow one does not load the machine that has to bring it.
pub fn wait_for<T>(what: &str, within: Duration, mut found: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    let mut pause = Duration::from_millis(10);
    loop {
        if let Some(value) = found() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(pause);
        pause = (pause * 3 / 2).min(Duration::from_millis(100));
    }
}

/// A free loopback port for a peer that must be told its port (nginx,
/// Caddy, an SMTP server, Redis).
///
/// A port found by binding port 0 and releasing it can be handed to anyone
/// binding port 0 (or connecting out) before the peer takes it. These come
/// from below the kernel's ephemeral range instead, which port-0 binds and
/// outgoing connections never use, each process from its own offset and
/// never the same twice in a process; a port is checked free before use.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let high = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .filter(|&start| start > LOW + 1000)
        .unwrap_or(32_768);
    let span = high - LOW;
    let start = (std::process::id() * 97) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = (LOW + (start + n) % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port below the ephemeral range");
}

/// Makes a child process die with the test that started it: the kernel
/// sends it SIGKILL when the starting thread ends, so a test that panics
/// or a test binary that is killed leaves no server, proxy or mail server
/// behind (normal ends stop them gracefully first).
pub fn dies_with_the_test(cmd: &mut Command) -> &mut Command {
    parent_death_signal(cmd, libc::SIGKILL)
}

/// The kernel sends `signal` to the child when the thread that started it
/// ends (PR_SET_PDEATHSIG).
fn parent_death_signal(cmd: &mut Command, signal: libc::c_int) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches only this process.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// A command for `program` that runs, with all it starts, in a process
/// group of its own that dies with the test, however the test ends.
///
/// [`dies_with_the_test`] reaches only the test's own child: nginx's master
/// gets the signal, but its workers are the master's children and would
/// live on once the master is killed. So the child here is a small shell,
/// leader of the new group, which runs the program and kills the whole
/// group (SIGKILL to group 0) when the program exits for any reason
/// (a SIGKILLed master included) or when the shell itself is told to stop:
/// SIGTERM from the kernel when the test's thread ends (a panic, a test
/// binary killed), or from a test that stops the group.
pub fn group_dies_with_the_test(program: &Path) -> Command {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"trap 'kill -KILL 0' TERM INT HUP; "$@" & wait $!; kill -KILL 0"#)
        .arg("sh")
        .arg(program)
        .process_group(0);
    parent_death_signal(&mut cmd, libc::SIGTERM);
    cmd
}

pub use crate::skip::e2e_available;
