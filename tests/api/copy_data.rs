//! `gatehouse copy-data`: a SQLite deployment moved into PostgreSQL keeps
//! every key, session, user, membership, usage count and audit row, and
//! the server on PostgreSQL carries on where SQLite stopped.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{
    e2e_available, gatehouse, pg_query_i64, query_i64_at, run, send, send_body, spawn_app_at,
    Output, Server,
};
use crate::keys::{code_of, create_key, verify};
use crate::pg::TestDb;

const TABLES: [&str; 10] = [
    "users",
    "projects",
    "memberships",
    "sessions",
    "refresh_tokens",
    "access_tokens",
    "api_keys",
    "usage_hourly",
    "audit_events",
    "webhook_endpoints",
];

#[test]
fn a_sqlite_deployment_moves_to_postgres_with_every_key_and_session() {
    let Some(pg) = TestDb::create() else {
        e2e_available(false, "PostgreSQL");
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let (t, keys, revoked, member) = {
        let app = spawn_app_at(root.path(), |_| {});
        let t = app.login("owner@acme.test");
        let (_, plain) = create_key(&app, &t, json!({ "name": "plain" }));
        let (_, credited) = create_key(
            &app,
            &t,
            json!({ "name": "credited", "credits": { "remaining": 5 } }),
        );
        let (rotating, old) = create_key(&app, &t, json!({ "name": "rotating" }));
        let res = send_body(
            app.authed(
                "POST",
                &format!("/api/v1/api-keys/{rotating}/rotate"),
                &t.access,
            )
            .set("Content-Type", "application/json"),
            r#"{"expire_previous_in_secs": 3600}"#,
        );
        assert_eq!(res.status, 201, "{}", res.body);
        let new = res.json()["plaintext_key"].as_str().unwrap().to_string();
        let (gone, revoked) = create_key(&app, &t, json!({ "name": "revoked" }));
        let res = send(app.authed("DELETE", &format!("/api/v1/api-keys/{gone}"), &t.access));
        assert_eq!(res.status, 200, "{}", res.body);
        for key in [&plain, &credited, &old, &new] {
            assert_eq!(code_of(&verify(&app, json!({ "key": key }))), "valid");
        }
        let res = send_body(
            app.authed("POST", "/api/v1/members", &t.access)
                .set("Content-Type", "application/json"),
            &json!({ "email": "member@acme.test", "role": "admin" }).to_string(),
        );
        assert_eq!(res.status, 201, "{}", res.body);
        let member = app.login("member@acme.test");
        crate::webhooks::add_webhook(
            &app,
            &t,
            "https://hooks.acme.test/gatehouse",
            &["key.revoked"],
        );
        (t, vec![plain, credited, old, new], revoked, member)
    }; // graceful stop: usage and balances written

    let counts: Vec<i64> = TABLES
        .iter()
        .map(|table| query_i64_at(root.path(), &format!("SELECT count(*) FROM {table}")))
        .collect();
    let data_dir = root.path().join("data");
    let out = run(gatehouse(root.path())
        .args(["copy-data", "--to", &pg.url, "--data-dir"])
        .arg(&data_dir));
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("api_keys"), "{}", out.stdout);
    assert!(out.stdout.contains("counts match"), "{}", out.stdout);
    assert!(!out.stdout.contains(" 1 rows"), "{}", out.stdout);
    for (table, n) in TABLES.iter().zip(&counts) {
        assert!(*n > 0, "{table} has rows to copy");
        assert_eq!(
            pg_query_i64(&pg.url, &format!("SELECT count(*) FROM {table}")),
            *n,
            "{table}"
        );
    }
    // Hashes unchanged, byte for byte.
    let sqlite_hashes = query_i64_at(
        root.path(),
        "SELECT count(DISTINCT hex(key_hash)) FROM api_keys",
    );
    assert_eq!(
        pg_query_i64(
            &pg.url,
            "SELECT count(DISTINCT upper(encode(key_hash, 'hex'))) FROM api_keys"
        ),
        sqlite_hashes
    );

    // A second copy is refused: the target is no longer empty. (The test
    // server trusts loopback, so a password in the URL is accepted and
    // must not be echoed.)
    let mut with_password = url::Url::parse(&pg.url).unwrap();
    with_password.set_password(Some("s3cret-pw")).unwrap();
    let again = run(gatehouse(root.path())
        .args(["copy-data", "--to", with_password.as_str(), "--data-dir"])
        .arg(&data_dir));
    assert_eq!(again.code, Some(1), "{}\n{}", again.stdout, again.stderr);
    assert!(again.stderr.contains("not empty"), "{}", again.stderr);
    assert!(!again.stderr.contains("s3cret-pw"), "{}", again.stderr);

    // The same deployment on PostgreSQL: keys verify, sessions refresh.
    let url = pg.url.clone();
    let app = spawn_app_at(root.path(), move |c| {
        c.database.url = Some(gatehouse::config::Secret::new(url))
    });
    for key in &keys {
        assert_eq!(
            code_of(&verify(&app, json!({ "key": key }))),
            "valid",
            "{key}"
        );
    }
    assert_eq!(
        code_of(&verify(&app, json!({ "key": revoked }))),
        "invalid_key"
    );
    let v = verify(&app, json!({ "key": keys[1] }));
    // 5, less one check on SQLite and two here.
    assert_eq!(v["credits"]["remaining"], 2, "the balance came along: {v}");
    let me = send(app.authed("GET", "/api/v1/me", &t.access));
    assert_eq!(me.status, 200, "the access token still works: {}", me.body);
    for refresh in [&t.refresh, &member.refresh] {
        let res = app.post_json(
            "/api/v1/auth/refresh-token",
            json!({ "refresh_token": refresh }),
        );
        assert_eq!(res.status, 200, "the session refreshes: {}", res.body);
    }
    // New rows continue after the copied ids.
    let (_, fresh) = create_key(&app, &t, json!({ "name": "made on postgres" }));
    assert_eq!(code_of(&verify(&app, json!({ "key": fresh }))), "valid");
    let audit = send(app.authed("GET", "/api/v1/audit-log", &t.access));
    assert_eq!(audit.status, 200, "{}", audit.body);
    assert!(
        audit.body.contains("made on postgres") && audit.body.contains("\"rotating\""),
        "old and new audit rows side by side"
    );
}

#[test]
fn copy_data_refuses_what_it_cannot_do() {
    let root = tempfile::tempdir().unwrap();
    let data_dir = root.path().join("data");
    // No database in the data directory.
    let out = run(gatehouse(root.path())
        .args([
            "copy-data",
            "--to",
            "postgres://u@127.0.0.1:1/x",
            "--data-dir",
        ])
        .arg(&data_dir));
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("there is no database"),
        "{}",
        out.stderr
    );
    // Not a PostgreSQL URL.
    let out = run(gatehouse(root.path())
        .args(["copy-data", "--to", "mysql://u@h/x", "--data-dir"])
        .arg(&data_dir));
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("postgres://"), "{}", out.stderr);
}

/// Runs `cmd` to its end, or kills it after 30 s (a command that should
/// have refused at once and serves instead) and reports no exit code.
fn run_or_kill(cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("gatehouse runs");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The tables in the target database's public schema (none: untouched).
fn public_tables(url: &str) -> i64 {
    pg_query_i64(
        url,
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
    )
}

fn serve(root: &Path, data: &Path) -> Server {
    Server::start(
        gatehouse(root)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data),
    )
}

/// SPEC sections 2 and 14: a SQLite data directory in use by a running
/// server is not copied (what the server writes afterwards, a revocation
/// for one, would be missing on PostgreSQL), nor served by a second server
/// or migrated under it; commands meant to run beside it still do. The
/// lock goes with the server however it stops, `kill -9` included.
#[test]
fn copy_data_refuses_a_data_directory_a_server_is_using() {
    let (Some(first), Some(second)) = (TestDb::create(), TestDb::create()) else {
        e2e_available(false, "PostgreSQL");
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let d = ["--data-dir", data.to_str().unwrap()];
    let server = serve(root.path(), &data);
    let out = run(gatehouse(root.path())
        .args([
            "users",
            "add",
            "--email",
            "ops@acme.test",
            "--project",
            "Acme",
        ])
        .args(d));
    assert_eq!(out.code, Some(0), "beside the server: {}", out.stderr);
    let out = run(gatehouse(root.path())
        .args(["keys", "create", "--project", "Acme", "--name", "live"])
        .args(d));
    assert_eq!(out.code, Some(0), "beside the server: {}", out.stderr);
    let holder = format!("pid {}, gatehouse serve", server.pid());

    let copy = |to: &str| {
        run_or_kill(
            gatehouse(root.path())
                .args(["copy-data", "--to", to])
                .args(d),
        )
    };
    let out = copy(&first.url);
    assert_eq!(out.code, Some(2), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "{} is in use by another Gatehouse process ({holder})",
            data.display()
        )) && out.stderr.contains("stop the server first"),
        "{}",
        out.stderr
    );
    assert!(!out.stdout.contains("Copied"), "{}", out.stdout);
    assert_eq!(public_tables(&first.url), 0, "the target is not touched");

    // A second server on the same SQLite data, and migrate under the
    // first, are refused the same way.
    let out = run_or_kill(
        gatehouse(root.path())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(d),
    );
    assert_eq!(out.code, Some(2), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains(&holder) && out.stderr.contains("one process serves a SQLite database"),
        "{}",
        out.stderr
    );
    let out = run_or_kill(gatehouse(root.path()).arg("migrate").args(d));
    assert_eq!(out.code, Some(2), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains(&holder), "{}", out.stderr);
    // Backups and key listings are meant to run beside the server.
    let out = run(gatehouse(root.path())
        .args(["backup"])
        .arg(root.path().join("beside.db"))
        .args(d));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let out = run(gatehouse(root.path())
        .args(["keys", "list", "--project", "Acme"])
        .args(d));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(server.get("/readyz").status, 200, "the first still serves");

    // kill -9 leaves the lock file but no lock: the copy runs.
    drop(server);
    assert!(data.join("gatehouse.lock").exists());
    let out = copy(&first.url);
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("counts match"), "{}", out.stdout);
    assert!(!out.stdout.contains(" 1 rows"), "{}", out.stdout);
    assert_eq!(pg_query_i64(&first.url, "SELECT count(*) FROM api_keys"), 1);

    // After a graceful stop too; and the copy gave the lock back.
    let server = serve(root.path(), &data);
    assert_eq!(server.get("/readyz").status, 200);
    let (code, _, stderr) = server.terminate();
    assert_eq!(code, Some(0), "{stderr}");
    let out = copy(&second.url);
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert_eq!(
        pg_query_i64(&second.url, "SELECT count(*) FROM api_keys"),
        1
    );
    let server = serve(root.path(), &data);
    assert_eq!(server.get("/readyz").status, 200);
}
