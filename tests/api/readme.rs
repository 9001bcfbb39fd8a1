//! The README's quick start and production setup, run as written, so the
//! README cannot drift from the product.
//!
//! A fenced shell block preceded by `<!-- readme-test: demo -->` (or
//! `production`) belongs to that walk-through; its blocks run in the order
//! they appear, in one bash session (`set -euo pipefail`), so variables set
//! by one block (`$ACCESS_TOKEN`, `$API_KEY`) serve the next. A block tagged
//! `demo-server` / `production-server` is the long-running server: it is
//! started in the background, in its own process group, and the walk-through
//! goes on once `/readyz` answers; it is stopped (the whole group) at the end.
//!
//! What the test changes, and nothing else:
//! - `cargo run --release` is the binary this test binary was built with,
//!   which is also `gatehouse` on the PATH;
//! - the server listens on a free loopback port (`GATEHOUSE_LISTEN`), so
//!   `localhost:8080` and `https://keys.acme.test/api` mean that port;
//! - `/etc/gatehouse` and `/var/lib/gatehouse` live in a temporary directory;
//! - the directories the untested root block makes (`/etc/gatehouse`,
//!   `/etc/gatehouse/credentials`) and the unit's `StateDirectory=`
//!   (`/var/lib/gatehouse`) are made by the test;
//! - the production walk-through runs as the test's user, not root: `chown`
//!   does nothing and `sudo -u gatehouse CMD` runs CMD;
//! - `systemctl enable --now gatehouse` runs what deploy/gatehouse.service
//!   runs: its `ExecStart=` command, in its `WorkingDirectory=`, with its
//!   `Environment=` variables, each `%d/NAME` being the file its
//!   `LoadCredential=NAME:FILE` hands over;
//! - the production walk-through's mail server (the README's "edit
//!   `[smtp]`" step) is a local aiosmtpd, given as `GATEHOUSE_SMTP__*`
//!   variables, and the code typed at the README's `read` prompt is the one
//!   in the mail that server received.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::{code_in, e2e_available, free_port, BIN};

const README: &str = include_str!("../../README.md");
const TAG: &str = "<!-- readme-test: ";

struct Block {
    tag: String,
    line: usize,
    body: String,
}

/// The tagged fenced blocks, in order.
fn tagged_blocks(readme: &str) -> Vec<Block> {
    let lines: Vec<&str> = readme.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(tag) = lines[i]
            .trim()
            .strip_prefix(TAG)
            .and_then(|rest| rest.strip_suffix("-->"))
        else {
            i += 1;
            continue;
        };
        let fence = lines.get(i + 1).copied().unwrap_or_default();
        assert!(
            fence.starts_with("```sh"),
            "README line {}: a readme-test tag must sit right above a ```sh block",
            i + 1
        );
        let start = i + 2;
        let end = (start..lines.len())
            .find(|&j| lines[j].starts_with("```"))
            .unwrap_or_else(|| panic!("README line {}: unclosed block", i + 2));
        out.push(Block {
            tag: tag.trim().to_string(),
            line: start + 1,
            body: lines[start..end].join("\n"),
        });
        i = end + 1;
    }
    out
}

/// What the shipped systemd unit runs, as one command line: its
/// environment (credentials resolved to the files they load), its working
/// directory and its `ExecStart=`.
fn unit_command() -> String {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/gatehouse.service"),
    )
    .unwrap();
    let setting = |name: &str| -> Vec<&str> {
        unit.lines()
            .filter_map(|l| l.strip_prefix(name)?.strip_prefix('='))
            .collect()
    };
    let credentials: Vec<(&str, &str)> = setting("LoadCredential")
        .into_iter()
        .map(|c| c.split_once(':').expect("LoadCredential=NAME:FILE"))
        .collect();
    let environment: Vec<String> = setting("Environment")
        .into_iter()
        .map(|assignment| {
            let (name, value) = assignment.split_once('=').unwrap();
            let value = match value.strip_prefix("%d/") {
                Some(credential) => {
                    credentials
                        .iter()
                        .find(|(n, _)| *n == credential)
                        .unwrap_or_else(|| panic!("no LoadCredential={credential}"))
                        .1
                }
                None => value,
            };
            format!("{name}={value}")
        })
        .collect();
    assert!(!environment.is_empty(), "the unit sets no environment");
    let [directory] = setting("WorkingDirectory")[..] else {
        panic!("one WorkingDirectory=")
    };
    let [command] = setting("ExecStart")[..] else {
        panic!("one ExecStart=")
    };
    format!(
        "env -C {directory} {} {}",
        environment.join(" "),
        command.replace("/usr/local/bin/gatehouse", "gatehouse")
    )
}

/// The README's host names and paths, pointed at the test's own.
fn rewrite(body: &str, port: u16, root: &Path) -> String {
    let base = format!("http://127.0.0.1:{port}");
    body.replace("systemctl enable --now gatehouse", &unit_command())
        .replace("cargo run --release", "gatehouse")
        .replace("https://keys.acme.test/api", &format!("{base}/api"))
        .replace("localhost:8080", &format!("127.0.0.1:{port}"))
        .replace(
            "/etc/gatehouse",
            &root.join("etc/gatehouse").display().to_string(),
        )
        .replace(
            "/var/lib/gatehouse",
            &root.join("var/lib/gatehouse").display().to_string(),
        )
}

fn tools_available(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    e2e_available(
        missing.is_empty(),
        &format!(
            "{} (apt-get install {})",
            missing.join(", "),
            missing.join(" ")
        ),
    )
}

struct Outcome {
    success: bool,
    stdout: String,
    stderr: String,
}

impl Outcome {
    /// Every command succeeded, and the README's last `jq -e .valid`
    /// printed true (curl's JSON before it ends without a newline).
    fn assert_verified_a_key(&self) {
        assert!(
            self.success,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        assert!(
            self.stdout.lines().any(|l| l.ends_with("true")),
            "no key verified: {}",
            self.stdout
        );
    }
}

/// One walk-through's blocks as a bash script.
fn script(walk: &str, port: u16, root: &Path) -> String {
    let blocks: Vec<Block> = tagged_blocks(README)
        .into_iter()
        .filter(|b| b.tag == walk || b.tag == format!("{walk}-server"))
        .collect();
    assert!(
        blocks.iter().any(|b| b.tag == walk) && blocks.iter().any(|b| b.tag.ends_with("-server")),
        "the README has no `{walk}` walk-through"
    );
    let mut s = format!(
        r#"set -euo pipefail
SERVER_PGID=
stop_server() {{
  if [ -n "$SERVER_PGID" ]; then
    kill -TERM -- "-$SERVER_PGID" 2>/dev/null || true
    wait "$SERVER_PGID" 2>/dev/null || true
    SERVER_PGID=
  fi
}}
trap stop_server EXIT
chown() {{ :; }}
sudo() {{ if [ "$1" = -u ]; then shift 2; fi; "$@"; }}
wait_ready() {{
  for _ in $(seq 1 300); do
    curl -fsS -o /dev/null http://127.0.0.1:{port}/readyz 2>/dev/null && return 0
    if ! kill -0 "$SERVER_PGID" 2>/dev/null; then echo "the server exited" >&2; return 1; fi
    sleep 0.1
  done
  echo "the server did not become ready" >&2
  return 1
}}
"#
    );
    for (n, block) in blocks.iter().enumerate() {
        let body = rewrite(&block.body, port, root);
        s.push_str(&format!("\n# README.md line {}\n", block.line));
        if block.tag.ends_with("-server") {
            let file = root.join(format!("server-{n}.sh"));
            std::fs::write(&file, format!("exec {body}\n")).unwrap();
            s.push_str(&format!(
                "stop_server\nsetsid bash {file} > {log} 2>&1 &\nSERVER_PGID=$!\necho \"$SERVER_PGID\" >> {pgids}\nwait_ready\n",
                file = file.display(),
                log = root.join(format!("server-{n}.log")).display(),
                pgids = root.join("pgids").display(),
            ));
        } else {
            s.push_str(&body);
            s.push('\n');
        }
    }
    s
}

/// Runs a walk-through; `code` is polled for the answer to the README's
/// `read` prompt (the production login code).
fn run_walkthrough(
    walk: &str,
    root: &Path,
    env: &[(&str, String)],
    code: impl Fn() -> Option<String> + Send + 'static,
) -> Outcome {
    use std::os::unix::process::CommandExt;

    let port = free_port();
    let bin_dir = root.join("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    std::os::unix::fs::symlink(BIN, bin_dir.join("gatehouse")).unwrap();
    let work = root.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let script_path = root.join(format!("{walk}.sh"));
    std::fs::write(&script_path, script(walk, port, root)).unwrap();

    let mut cmd = Command::new("bash");
    cmd.arg(&script_path)
        .current_dir(&work)
        .env_clear()
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin_dir.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("HOME", root)
        .env("GATEHOUSE_LISTEN", format!("127.0.0.1:{port}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("bash starts");
    let pgid = child.id() as i32;
    let mut stdin = child.stdin.take().unwrap();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let feeder_done = done.clone();
    let feeder = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline && !feeder_done.load(std::sync::atomic::Ordering::Relaxed) {
            if let Some(code) = code() {
                let _ = writeln!(stdin, "{code}");
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let out_reader =
        std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let err_reader =
        std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());

    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    // Whatever happened, nothing the walk-through started outlives it.
    let mut groups = vec![pgid];
    if let Ok(text) = std::fs::read_to_string(root.join("pgids")) {
        groups.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    for group in groups {
        // SAFETY: kill(2) on process groups this test created.
        unsafe {
            libc::kill(-group, libc::SIGKILL);
        }
    }
    let _ = child.wait();
    let _ = feeder.join();
    let mut stderr = err_reader.join().unwrap_or_default();
    for entry in std::fs::read_dir(root).unwrap().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "log") {
            let log = std::fs::read_to_string(&path).unwrap_or_default();
            stderr.push_str(&format!("\n--- {} ---\n{log}", path.display()));
        }
    }
    if status.is_none() {
        stderr.push_str("\n(the walk-through did not finish within 120 s)");
    }
    Outcome {
        success: status.is_some_and(|s| s.success()),
        stdout: out_reader.join().unwrap_or_default(),
        stderr,
    }
}

fn query(db: &Path, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[test]
fn the_readme_tags_its_walkthroughs() {
    let tags: Vec<String> = tagged_blocks(README).into_iter().map(|b| b.tag).collect();
    for walk in ["demo", "demo-server", "production", "production-server"] {
        assert!(
            tags.iter().any(|t| t == walk),
            "no `{walk}` block in {tags:?}"
        );
    }
    for tag in &tags {
        assert!(
            ["demo", "demo-server", "production", "production-server"].contains(&tag.as_str()),
            "unknown readme-test tag `{tag}`"
        );
    }
}

#[test]
fn the_quick_start_runs_as_written() {
    if !tools_available(&["curl", "jq", "setsid"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    run_walkthrough("demo", dir.path(), &[], || None).assert_verified_a_key();
    let db = dir.path().join("work/gatehouse-data/gatehouse.db");
    assert_eq!(
        query(
            &db,
            "SELECT count(*) FROM users WHERE email IN ('alice@acme.test', 'bob@acme.test')"
        ),
        2
    );
    assert_eq!(
        query(
            &db,
            "SELECT count(*) FROM api_keys WHERE name = 'first key' AND last_used_at IS NOT NULL AND revoked_at IS NULL"
        ),
        1,
        "the key was created and used"
    );
}

struct Smtp(std::process::Child);

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The newest login code among the messages in `maildir`.
fn code_in_maildir(maildir: &Path) -> Option<String> {
    let entries = std::fs::read_dir(maildir.join("new")).ok()?;
    entries
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .find_map(|text| code_in(&text))
}

#[test]
fn the_production_setup_runs_as_written() {
    let aiosmtpd = Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !tools_available(&["curl", "jq", "setsid"])
        || !e2e_available(aiosmtpd, "python3 -m aiosmtpd (pip install aiosmtpd)")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let maildir: PathBuf = dir.path().join("mail");
    let smtp_port = free_port();
    let _smtp = Smtp(
        crate::helpers::dies_with_the_test(&mut Command::new("python3"))
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{smtp_port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("aiosmtpd starts"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", smtp_port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "aiosmtpd did not start listening"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let env = [
        ("GATEHOUSE_SMTP__HOST", "127.0.0.1".to_string()),
        ("GATEHOUSE_SMTP__PORT", smtp_port.to_string()),
        ("GATEHOUSE_SMTP__TLS", "none".to_string()),
    ];
    for made_as_root in ["etc/gatehouse/credentials", "var/lib/gatehouse"] {
        std::fs::create_dir_all(dir.path().join(made_as_root)).unwrap();
    }
    let watched = maildir.clone();
    run_walkthrough("production", dir.path(), &env, move || {
        code_in_maildir(&watched)
    })
    .assert_verified_a_key();
    let config = std::fs::read_to_string(dir.path().join("etc/gatehouse/gatehouse.toml")).unwrap();
    assert!(config.contains("mode = \"production\""), "{config}");
    // One recipe with the shipped unit: the secrets live in the credential
    // files it loads, not in the configuration.
    assert!(
        !config.contains("session_key = ") && !config.contains("ops_token = "),
        "{config}"
    );
    for credential in ["session_key", "ops_token"] {
        let file = dir
            .path()
            .join("etc/gatehouse/credentials")
            .join(credential);
        assert!(std::fs::read_to_string(&file).unwrap().trim().len() >= 32);
    }
    let db = dir.path().join("var/lib/gatehouse/gatehouse.db");
    assert_eq!(
        query(
            &db,
            "SELECT count(*) FROM memberships m JOIN users u ON u.id = m.user_id \
             WHERE u.email = 'admin@acme.test' AND m.role = 'owner'"
        ),
        1
    );
    assert_eq!(
        query(
            &db,
            "SELECT count(*) FROM api_keys WHERE last_used_at IS NOT NULL"
        ),
        1
    );
}

/// The comment on the README's `GET /api/v1/me` names what a bearer
/// session gets: every field of the answer, and nothing it does not hold.
#[test]
fn the_readme_says_what_me_answers() {
    let app = crate::helpers::spawn_app();
    let tokens = app.login("alice@acme.test");
    let me = crate::helpers::send(app.authed("GET", "/api/v1/me", &tokens.access)).json();
    let comment = README
        .lines()
        .find(|l| l.contains("/api/v1/me ") && l.contains('#'))
        .and_then(|l| l.split('#').nth(1))
        .expect("a commented /api/v1/me line");
    let words: Vec<&str> = comment
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .collect();
    let mut fields: Vec<String> = me.as_object().unwrap().keys().cloned().collect();
    fields.extend(
        me["memberships"][0]
            .as_object()
            .expect("the first login made a membership")
            .keys()
            .cloned(),
    );
    for field in &fields {
        assert!(
            words.contains(&field.as_str()),
            "{field} not in {comment:?}"
        );
    }
    for absent in ["csrf_token", "projects"] {
        assert!(
            !words.contains(&absent) || fields.iter().any(|f| f == absent),
            "{comment:?} names {absent}, which {me} does not hold"
        );
    }
}
