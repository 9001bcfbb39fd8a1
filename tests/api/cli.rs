//! The built binary: zero-config local mode, the fail-closed startup checks,
//! init, check-config, migrate, backup, graceful shutdown.

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::helpers::{gatehouse, production_toml, run, write, Server};

fn example_secret() -> String {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml"))
        .unwrap();
    let doc: toml::Table = text.parse().unwrap();
    doc["secrets"]["session_key"].as_str().unwrap().to_string()
}

/// Replaces the `session_key = "..."` line of a production config.
fn with_session_key(toml: &str, line: Option<&str>) -> String {
    toml.lines()
        .filter_map(|l| {
            if l.starts_with("session_key = ") {
                line.map(str::to_string)
            } else {
                Some(l.to_string())
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn serve_with(dir: &Path, config: &str) -> crate::helpers::Output {
    let path = write(dir, "gatehouse.toml", config);
    run(gatehouse(dir).args(["serve", "--config"]).arg(path))
}

#[test]
fn zero_config_serves_a_local_demo_and_keeps_its_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(gatehouse(dir.path()).args(["--listen", "127.0.0.1:0"]));
    assert_eq!(server.get("/healthz").status, 200);
    assert_eq!(server.get("/readyz").status, 200);
    let (code, stdout, stderr) = server.terminate();
    assert_eq!(code, Some(0), "graceful stop exits 0:\n{stderr}");
    let stdout = stdout.join("\n");
    assert!(
        stdout.contains("/dev/mailbox"),
        "mailbox URL printed:\n{stdout}"
    );
    // Nothing is wrong with the demo: no public_url, no SMTP and generated
    // secrets are how it works. The banner says where the secrets are.
    assert!(!stderr.contains("warning"), "{stderr}");
    assert!(
        stdout.contains(
            "  Secrets:        secrets.session_key, secrets.ops_token from ./gatehouse-data/local-secrets.toml"
        ),
        "{stdout}"
    );

    let secrets_path = dir.path().join("gatehouse-data/local-secrets.toml");
    let first = std::fs::read_to_string(&secrets_path).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secrets_path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let doc: toml::Table = first.parse().unwrap();
    let session_key = doc["session_key"].as_str().unwrap().to_string();
    assert!(session_key.len() >= 32);
    assert!(!stdout.contains(&session_key), "secrets are never printed");

    let server = Server::start(gatehouse(dir.path()).args(["serve", "--listen", "127.0.0.1:0"]));
    assert_eq!(server.get("/readyz").status, 200);
    drop(server);
    let second = std::fs::read_to_string(&secrets_path).unwrap();
    assert_eq!(
        first, second,
        "the second start reuses the generated secrets"
    );
}

#[test]
fn production_refuses_each_unsafe_setting_and_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let good = production_toml(dir.path());
    let example = example_secret();
    let cases: Vec<(&str, String, Option<String>)> = vec![
        ("secrets.session_key", with_session_key(&good, None), None),
        (
            "secrets.session_key",
            with_session_key(&good, Some("session_key = \"changeme\"")),
            Some("changeme".into()),
        ),
        (
            "secrets.session_key",
            with_session_key(&good, Some("session_key = \"k2J9s8dLq0Zx7Vb3Nm4R\"")),
            Some("k2J9s8dLq0Zx7Vb3Nm4R".into()),
        ),
        (
            "secrets.session_key",
            with_session_key(&good, Some(&format!("session_key = \"{example}\""))),
            Some(example.clone()),
        ),
        (
            "public_url",
            good.replace("https://keys.acme.test", "http://keys.acme.test"),
            None,
        ),
        (
            "smtp.host",
            good.replace("host = \"127.0.0.1\"\n", ""),
            None,
        ),
        (
            "dev.expose_codes",
            format!("{good}\n[dev]\nexpose_codes = true\n"),
            None,
        ),
    ];
    for (key, config, secret) in cases {
        let out = serve_with(dir.path(), &config);
        assert_eq!(out.code, Some(1), "{key}: refused\n{}", out.stderr);
        assert!(
            out.stderr.contains("refusing to start in production mode"),
            "{}",
            out.stderr
        );
        assert!(out.stderr.contains(key), "{key} named in:\n{}", out.stderr);
        assert!(out.stderr.contains("1 problem found"), "{}", out.stderr);
        if let Some(secret) = &secret {
            assert!(
                !out.stderr.contains(secret.as_str()),
                "the secret value leaked"
            );
            assert!(
                !out.stdout.contains(secret.as_str()),
                "the secret value leaked"
            );
        }
        assert!(
            !dir.path().join("data/gatehouse.db").exists(),
            "nothing was started"
        );

        // The same settings in local mode start, with a warning about
        // what is wrong there too; a demo needs neither an https://
        // public_url nor SMTP (mail goes to the local mailbox), and
        // generates the secrets it is not given.
        let fine_locally = matches!(key, "public_url" | "smtp.host")
            || (key == "secrets.session_key" && secret.is_none());
        let local = config.replace("mode = \"production\"", "mode = \"local\"");
        let path = write(dir.path(), "local.toml", &local);
        let server = Server::start(gatehouse(dir.path()).args(["serve", "--config"]).arg(&path));
        assert_eq!(
            server.get("/healthz").status,
            200,
            "{key}: local mode serves"
        );
        let (_, _, stderr) = server.terminate();
        if fine_locally {
            assert!(!stderr.contains("warning"), "{key}: warned:\n{stderr}");
        } else {
            assert!(
                stderr.contains(&format!("warning: {key}")),
                "{key}: named in the warnings:\n{stderr}"
            );
        }
        let _ = std::fs::remove_dir_all(dir.path().join("data"));
    }
}

#[test]
fn every_problem_is_listed_in_one_run_without_secret_values() {
    let dir = tempfile::tempdir().unwrap();
    let config = r#"
mode = "production"
public_url = "http://keys.acme.test"
[secrets]
session_key = "short-but-secret-value"
ops_token = "changeme"
[dev]
expose_codes = true
"#;
    for args in [vec!["serve"], vec!["check-config"]] {
        let path = write(dir.path(), "bad.toml", config);
        let out = run(gatehouse(dir.path()).args(&args).arg("--config").arg(path));
        assert_eq!(out.code, Some(1));
        for key in [
            "secrets.session_key",
            "secrets.ops_token",
            "public_url",
            "smtp.host",
            "dev.expose_codes",
        ] {
            assert!(
                out.stderr.contains(key),
                "{key} missing from:\n{}",
                out.stderr
            );
        }
        // A database that does not exist yet is no problem: check-config
        // only warns where serve will create it.
        assert!(out.stderr.contains("5 problems"), "{}", out.stderr);
        if args[0] == "check-config" {
            assert!(
                out.stderr
                    .contains("warning: data_dir: there is no database at"),
                "{}",
                out.stderr
            );
        }
        assert!(!out.stderr.contains("short-but-secret-value"));
        assert!(out.stderr.contains("hint:"), "hints are given");
    }
}

#[test]
fn init_then_smtp_host_passes_check_config_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(gatehouse(dir.path()).args([
        "init",
        "--mode",
        "production",
        "--public-url",
        "https://keys.acme.test",
        "--out",
        "prod.toml",
    ]));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let path = dir.path().join("prod.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("mode = \"production\""));
    assert!(text.contains("public_url = \"https://keys.acme.test\""));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // The data directory is absolute: the current directory at init time.
    let written: toml::Table = text.parse().unwrap();
    assert_eq!(
        written["data_dir"].as_str().unwrap(),
        dir.path().join("gatehouse-data").to_str().unwrap()
    );

    // Only migrate (or serve) creates the database.
    let out = run(gatehouse(dir.path()).args(["migrate", "--config", "prod.toml"]));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(dir.path().join("gatehouse-data/gatehouse.db").is_file());

    // Without SMTP the check refuses, naming smtp.host only.
    let out = run(gatehouse(dir.path()).args(["check-config", "--config", "prod.toml"]));
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains("smtp.host") && out.stderr.contains("1 problem"),
        "{}",
        out.stderr
    );

    // With an SMTP host (here from the environment) it passes and serves.
    let out = run(gatehouse(dir.path())
        .args(["check-config", "--config", "prod.toml"])
        .env("GATEHOUSE_SMTP__HOST", "127.0.0.1"));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let server = Server::start(
        gatehouse(dir.path())
            .args(["serve", "--config", "prod.toml", "--listen", "127.0.0.1:0"])
            .env("GATEHOUSE_SMTP__HOST", "127.0.0.1"),
    );
    assert_eq!(server.get("/readyz").status, 200);
    let res = server.get("/healthz");
    assert!(res.header("strict-transport-security").is_some());
    drop(server);

    // init never overwrites.
    let before = std::fs::read_to_string(&path).unwrap();
    let out = run(gatehouse(dir.path()).args([
        "init",
        "--mode",
        "production",
        "--public-url",
        "https://other.acme.test",
        "--out",
        "prod.toml",
    ]));
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("already exists"));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), before);

    // Staging and production need a public URL.
    let out = run(gatehouse(dir.path()).args(["init", "--mode", "staging", "--out", "s.toml"]));
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("--public-url"));
    assert!(!dir.path().join("s.toml").exists());
}

#[test]
fn secrets_can_come_from_files_and_unknown_variables_are_refused_outside_local_mode() {
    let dir = tempfile::tempdir().unwrap();
    let good = production_toml(dir.path());
    let config = with_session_key(&good, None);
    let path = write(dir.path(), "prod.toml", &config);
    let secret = gatehouse::config::generate_secret();
    let secret_file = write(dir.path(), "session_key", &format!("{secret}\n"));

    let out = run(gatehouse(dir.path())
        .args(["check-config", "--config"])
        .arg(&path)
        .env("GATEHOUSE_SECRETS__SESSION_KEY_FILE", &secret_file)
        .args(["--data-dir", "d"]));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "warning: data_dir: there is no database at {} yet: `gatehouse serve` (or `gatehouse migrate`) will create it there",
            Path::new("d").join("gatehouse.db").display()
        )),
        "{}",
        out.stderr
    );
    assert!(
        !dir.path().join("d").exists(),
        "check-config creates nothing"
    );
    run(gatehouse(dir.path()).args(["migrate", "--data-dir", "d"]));
    let out = run(gatehouse(dir.path())
        .args(["check-config", "--data-dir", "d", "--config"])
        .arg(&path)
        .env("GATEHOUSE_SECRETS__SESSION_KEY_FILE", &secret_file));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(!out.stderr.contains(&secret) && !out.stdout.contains(&secret));

    // An unknown variable (one underscore instead of two) refuses outside
    // local mode, with the nearest known name.
    let out = run(gatehouse(dir.path())
        .args(["check-config", "--data-dir", "d", "--config"])
        .arg(&path)
        .env("GATEHOUSE_SECRETS__SESSION_KEY_FILE", &secret_file)
        .env("GATEHOUSE_SMTP_HOST", "typo.acme.test"));
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("error: GATEHOUSE_SMTP_HOST")
            && out
                .stderr
                .contains("the nearest known name is GATEHOUSE_SMTP__HOST"),
        "{}",
        out.stderr
    );

    // A file and an inline value at once is ambiguous: refused.
    let out = run(gatehouse(dir.path())
        .args(["check-config", "--config"])
        .arg(write(dir.path(), "both.toml", &good))
        .env("GATEHOUSE_SECRETS__SESSION_KEY_FILE", &secret_file));
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains("secrets.session_key_file"),
        "{}",
        out.stderr
    );

    // An unreadable file is named, its path shown.
    let out = run(gatehouse(dir.path())
        .args(["check-config", "--config"])
        .arg(&path)
        .env(
            "GATEHOUSE_SECRETS__SESSION_KEY_FILE",
            dir.path().join("missing"),
        ));
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("cannot read"), "{}", out.stderr);
}

#[test]
fn invalid_values_are_reported_with_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(gatehouse(dir.path())
        .args(["check-config"])
        .env("GATEHOUSE_LISTEN", "not-an-address"));
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("listen"), "{}", out.stderr);
    let out = run(gatehouse(dir.path())
        .args(["check-config"])
        .env("GATEHOUSE_AUTH__CODE_LENGTH", "4"));
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("auth.code_length"), "{}", out.stderr);
    let out = run(gatehouse(dir.path()).args(["check-config", "--config", "missing.toml"]));
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("missing.toml"), "{}", out.stderr);
}

#[test]
fn migrate_applies_the_schema_and_refuses_newer_databases() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(gatehouse(dir.path()).args(["migrate", "--data-dir", "d"]));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains("migrated from schema version 0"),
        "{}",
        out.stdout
    );
    let out = run(gatehouse(dir.path()).args(["migrate", "--data-dir", "d"]));
    assert!(out.stdout.contains("up to date"), "{}", out.stdout);

    let conn = rusqlite::Connection::open(dir.path().join("d/gatehouse.db")).unwrap();
    conn.pragma_update(None, "user_version", 999).unwrap();
    drop(conn);
    for args in [
        vec!["migrate"],
        vec!["serve", "--listen", "127.0.0.1:0"],
        vec!["check-config"],
    ] {
        let out = run(gatehouse(dir.path()).args(&args).args(["--data-dir", "d"]));
        assert_eq!(out.code, Some(1), "{args:?}");
        assert!(
            out.stderr.contains("newer than this Gatehouse supports"),
            "{args:?}: {}",
            out.stderr
        );
    }
}

#[test]
fn backup_while_serving_is_consistent_and_holds_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(gatehouse(dir.path()).args(["serve", "--listen", "127.0.0.1:0"]));
    let db_path = dir.path().join("gatehouse-data/gatehouse.db");

    // Write rows while the server answers requests.
    let writer = {
        let db_path = db_path.clone();
        std::thread::spawn(move || {
            let conn = rusqlite::Connection::open(&db_path).unwrap();
            conn.busy_timeout(Duration::from_secs(10)).unwrap();
            for i in 0..300 {
                conn.execute(
                    "INSERT INTO users (id, email, created_at) VALUES (?1, ?2, 0)",
                    rusqlite::params![format!("usr_{i}"), format!("user{i}@acme.test")],
                )
                .unwrap();
            }
        })
    };
    for _ in 0..20 {
        assert_eq!(server.get("/readyz").status, 200);
    }
    let out = run(gatehouse(dir.path()).args(["backup", "during.db"]));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    writer.join().unwrap();
    let out = run(gatehouse(dir.path()).args(["backup", "after.db"]));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(server.get("/readyz").status, 200, "still serving");

    for (name, min) in [("during.db", 0), ("after.db", 300)] {
        let copy = rusqlite::Connection::open(dir.path().join(name)).unwrap();
        let ok: String = copy
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok");
        let n: i64 = copy
            .query_row("SELECT count(*) FROM users", [], |r| r.get(0))
            .unwrap();
        assert!(n >= min && n <= 300, "{name}: {n} users");
        let version: u32 = copy
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, gatehouse::store::sqlite::latest_version());
    }
    let out = run(gatehouse(dir.path()).args(["backup", "after.db"]));
    assert_eq!(out.code, Some(1), "never overwrites");
}

#[test]
fn json_logs_carry_the_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        gatehouse(dir.path())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("GATEHOUSE_LOG__FORMAT", "json"),
    );
    let res = crate::helpers::send(
        server
            .request("GET", "/healthz")
            .set("X-Request-Id", "log-check-1"),
    );
    assert_eq!(res.status, 200);
    let line = server.wait_for_line("with the request id", |l| l.contains("log-check-1"));
    let (code, _, _) = server.terminate();
    assert_eq!(code, Some(0));
    let entry: serde_json::Value = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("not a JSON access log line ({e}): {line}"));
    assert_eq!(entry["request_id"], "log-check-1");
    assert_eq!(entry["status"], 200);
    assert_eq!(entry["path"], "/healthz");
    assert_eq!(entry["method"], "GET");
}

#[test]
fn users_add_bootstraps_an_invite_only_deployment() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(gatehouse(dir.path()).args(["migrate", "--data-dir", "d"]));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let out = run(gatehouse(dir.path()).args([
        "users",
        "add",
        "--email",
        "Admin@Acme.test",
        "--project",
        "Acme",
        "--data-dir",
        "d",
    ]));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains("Created user admin@acme.test"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("Created project \"Acme\""),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("is owner"), "{}", out.stdout);

    let out = run(gatehouse(dir.path()).args([
        "users",
        "add",
        "--email",
        "dev@acme.test",
        "--project",
        "Acme",
        "--data-dir",
        "d",
    ]));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains("Using project \"Acme\""),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("is member"), "{}", out.stdout);
    let out =
        run(gatehouse(dir.path()).args(["users", "add", "--email", "nope", "--data-dir", "d"]));
    assert_eq!(out.code, Some(1));

    let conn = rusqlite::Connection::open(dir.path().join("d/gatehouse.db")).unwrap();
    let owners: i64 = conn
        .query_row(
            "SELECT count(*) FROM memberships m JOIN users u ON u.id = m.user_id WHERE u.email = 'admin@acme.test' AND m.role = 'owner'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(owners, 1);
    drop(conn);

    // Invite-only: the bootstrapped user gets a code, a stranger does not.
    let server = Server::start(
        gatehouse(dir.path())
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir", "d"])
            .env("GATEHOUSE_AUTH__SIGNUP", "invite"),
    );
    for email in ["admin@acme.test", "stranger@acme.test"] {
        let res = crate::helpers::send_body(
            server
                .request("POST", "/api/v1/auth/send-code")
                .set("Content-Type", "application/json"),
            &format!(r#"{{"email": "{email}"}}"#),
        );
        assert_eq!(res.status, 202);
    }
    let mailbox = server.get("/api/v1/dev/mailbox").json();
    let to: Vec<&str> = mailbox["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["to"].as_str().unwrap())
        .collect();
    assert_eq!(to, ["admin@acme.test"]);
}

#[test]
fn keys_cli_creates_lists_revokes_and_imports() {
    let dir = tempfile::tempdir().unwrap();
    let d = ["--data-dir", "d"];
    let out = run(gatehouse(dir.path()).arg("migrate").args(d));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let out = run(gatehouse(dir.path())
        .args([
            "users",
            "add",
            "--email",
            "ops@acme.test",
            "--project",
            "Acme",
        ])
        .args(d));
    assert_eq!(out.code, Some(0), "{}", out.stderr);

    let out = run(gatehouse(dir.path())
        .args([
            "keys",
            "create",
            "--project",
            "Acme",
            "--name",
            "deploy bot",
            "--scopes",
            "keys:read,analytics:read",
        ])
        .args(d));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let key = out.stdout.lines().last().unwrap().trim().to_string();
    assert!(
        gatehouse::keys::ApiKey::parse(&key, "gate").is_ok(),
        "{}",
        out.stdout
    );
    let id = out
        .stdout
        .split_whitespace()
        .find(|w| w.starts_with("key_"))
        .unwrap()
        .to_string();
    let out = run(gatehouse(dir.path())
        .args(["keys", "create", "--project", "Nope", "--name", "x"])
        .args(d));
    assert_eq!(out.code, Some(1));
    let out = run(gatehouse(dir.path())
        .args([
            "keys",
            "create",
            "--project",
            "Acme",
            "--name",
            "x",
            "--scopes",
            "bogus",
        ])
        .args(d));
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("bogus"), "{}", out.stderr);

    // A key from another service, known only by its SHA-256.
    let legacy = "sk_live_51HxLegacyKeyFromElsewhere";
    let legacy_hash: String = gatehouse::crypto::sha256(legacy.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let lines = format!(
        "{}\n\n{}\n",
        json!({ "hash": legacy_hash, "name": "legacy", "prefix": "sk_live_51Hx", "scopes": ["keys:read"], "owner_id": "cus_9" }),
        json!({ "hash": "00".repeat(32), "name": "other", "type": "publishable" })
    );
    let file = write(dir.path(), "import.jsonl", &lines);
    let out = run(gatehouse(dir.path())
        .args(["keys", "import"])
        .arg(&file)
        .args(["--project", "Acme"])
        .args(d));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("Imported 2 key(s)"), "{}", out.stdout);
    let out = run(gatehouse(dir.path())
        .args(["keys", "import"])
        .arg(&file)
        .args(["--project", "Acme"])
        .args(d));
    assert_eq!(
        out.code,
        Some(1),
        "duplicates are refused, nothing half-imported"
    );
    let bad = write(
        dir.path(),
        "bad.jsonl",
        "{\"hash\": \"xyz\", \"name\": \"n\"}\n",
    );
    let out = run(gatehouse(dir.path())
        .args(["keys", "import"])
        .arg(&bad)
        .args(["--project", "Acme"])
        .args(d));
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("line 1"), "{}", out.stderr);

    let out = run(gatehouse(dir.path())
        .args(["keys", "list", "--project", "Acme"])
        .args(d));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains("3 key(s)")
            && out.stdout.contains("deploy bot")
            && out.stdout.contains("sk_live_51Hx"),
        "{}",
        out.stdout
    );

    // A server verifies both the issued and the imported key.
    let server = Server::start(
        gatehouse(dir.path())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(d),
    );
    let verify = |k: &str| {
        crate::helpers::send_body(
            server
                .request("POST", "/api/v1/keys/verify")
                .set("Content-Type", "application/json"),
            &json!({ "key": k }).to_string(),
        )
        .json()
    };
    assert_eq!(verify(&key)["valid"], true);
    let v = verify(legacy);
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["owner_id"], "cus_9");
    assert_eq!(verify("sk_live_somethingElse")["code"], "malformed_key");
    drop(server);

    let out = run(gatehouse(dir.path()).args(["keys", "revoke", &id]).args(d));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let out = run(gatehouse(dir.path())
        .args(["keys", "list", "--project", "Acme"])
        .args(d));
    assert!(out.stdout.contains("2 key(s)"), "{}", out.stdout);
    let out = run(gatehouse(dir.path())
        .args(["keys", "list", "--project", "Acme", "--all"])
        .args(d));
    assert!(out.stdout.contains("revoked"), "{}", out.stdout);
    let server = Server::start(
        gatehouse(dir.path())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(d),
    );
    let res = crate::helpers::send_body(
        server
            .request("POST", "/api/v1/keys/verify")
            .set("Content-Type", "application/json"),
        &json!({ "key": key }).to_string(),
    );
    assert_eq!(res.json()["code"], "invalid_key");
}

#[test]
fn global_flags_work_before_and_after_the_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "g.toml", "listen = \"127.0.0.1:8080\"\n");
    let out = run(gatehouse(dir.path()).args(["migrate", "--data-dir", "d"]));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    for args in [
        vec!["--config", "g.toml", "--data-dir", "d", "check-config"],
        vec!["check-config", "--config", "g.toml", "--data-dir", "d"],
        vec!["--config", "g.toml", "check-config", "--data-dir", "d"],
    ] {
        let out = run(gatehouse(dir.path()).args(&args));
        assert_eq!(out.code, Some(0), "{args:?}: {}", out.stderr);
        assert!(
            out.stdout.contains(&format!("(from {})", "g.toml")),
            "{args:?} read the file: {}",
            out.stdout
        );
        assert!(
            !out.stderr.contains("no database"),
            "{args:?}: {}",
            out.stderr
        );
    }
    // The mode flag before check-config applies to it.
    let out = run(gatehouse(dir.path())
        .args(["--mode", "production", "check-config", "--config"])
        .arg(&path));
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    // check-config starts nothing, so it does not say it refuses to start.
    assert!(
        out.stderr
            .contains("the configuration may not serve in production mode")
            && !out.stderr.contains("refusing to start"),
        "{}",
        out.stderr
    );
    // ... and is refused, clearly, before a subcommand it cannot apply to.
    let out = run(gatehouse(dir.path()).args(["--mode", "production", "migrate"]));
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("apply to serve"), "{}", out.stderr);
    let out =
        run(gatehouse(dir.path()).args(["--data-dir", "d", "keys", "list", "--project", "Nope"]));
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains("Nope"),
        "the database was found: {}",
        out.stderr
    );
}

#[test]
fn init_honours_config_and_data_dir_and_writes_an_absolute_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    // --data-dir relative to the current directory, --config as the output.
    let out = run(gatehouse(dir.path()).args([
        "init",
        "--config",
        "from-config.toml",
        "--data-dir",
        "state/gh",
    ]));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let written: toml::Table = std::fs::read_to_string(dir.path().join("from-config.toml"))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        written["data_dir"].as_str().unwrap(),
        dir.path().join("state/gh").to_str().unwrap()
    );
    // The global flag before the subcommand works the same way; --out wins.
    let out = run(gatehouse(dir.path()).args([
        "--data-dir",
        "/srv/gatehouse",
        "init",
        "--out",
        "out.toml",
    ]));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let written: toml::Table = std::fs::read_to_string(dir.path().join("out.toml"))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(written["data_dir"].as_str().unwrap(), "/srv/gatehouse");
    // Run from elsewhere, the file still points at the same data directory.
    let elsewhere = tempfile::tempdir().unwrap();
    let out = run(gatehouse(elsewhere.path())
        .args(["migrate", "--config"])
        .arg(dir.path().join("from-config.toml")));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(dir.path().join("state/gh/gatehouse.db").is_file());
}

#[test]
fn init_refuses_a_plain_http_public_url_with_check_configs_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(gatehouse(dir.path()).args([
        "init",
        "--mode",
        "production",
        "--public-url",
        "http://keys.acme.test",
        "--out",
        "prod.toml",
    ]));
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(!dir.path().join("prod.toml").exists(), "nothing written");

    // check-config gives the same lines for the same URL.
    let config =
        production_toml(dir.path()).replace("https://keys.acme.test", "http://keys.acme.test");
    let path = write(dir.path(), "http.toml", &config);
    let checked = run(gatehouse(dir.path())
        .args(["check-config", "--config"])
        .arg(path));
    assert_eq!(checked.code, Some(1));
    let public_url_lines = |text: &str| -> Vec<String> {
        let lines: Vec<&str> = text.lines().collect();
        let at = lines
            .iter()
            .position(|l| l.contains("public_url:"))
            .unwrap_or_else(|| panic!("no public_url line in {text}"));
        lines[at..=at + 1].iter().map(|l| l.to_string()).collect()
    };
    assert_eq!(
        public_url_lines(&out.stderr),
        public_url_lines(&checked.stderr)
    );
    assert!(
        out.stderr
            .contains("error: public_url: must start with https://"),
        "{}",
        out.stderr
    );
}

#[test]
fn only_serve_migrate_and_init_create_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = write(dir.path(), "keys.jsonl", "");
    let commands: Vec<Vec<&str>> = vec![
        vec!["keys", "list", "--project", "Acme"],
        vec!["keys", "create", "--project", "Acme", "--name", "k"],
        vec!["keys", "revoke", "key_123"],
        vec![
            "keys",
            "import",
            key_file.to_str().unwrap(),
            "--project",
            "Acme",
        ],
        vec!["users", "add", "--email", "a@acme.test"],
        vec!["backup", "copy.db"],
        vec![
            "copy-data",
            "--to",
            "postgres://gatehouse@127.0.0.1:5432/gatehouse",
        ],
    ];
    for args in commands {
        let out = run(gatehouse(dir.path())
            .args(&args)
            .args(["--data-dir", "typo"]));
        assert_eq!(out.code, Some(1), "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.contains(&format!(
                "there is no database at {}",
                Path::new("typo").join("gatehouse.db").display()
            )),
            "{args:?}: {}",
            out.stderr
        );
        assert!(
            !dir.path().join("typo").exists(),
            "{args:?} created the data directory"
        );
    }
    // check-config, even in production mode, names where serve will
    // create the database, and creates nothing.
    let config = production_toml(dir.path()).replace(
        &dir.path().join("data").display().to_string(),
        &dir.path().join("typo").display().to_string(),
    );
    let path = write(dir.path(), "prod.toml", &config);
    let out = run(gatehouse(dir.path())
        .args(["check-config", "--config"])
        .arg(&path));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "warning: data_dir: there is no database at {} yet",
            dir.path().join("typo/gatehouse.db").display()
        )) && out.stderr.contains("check --data-dir"),
        "{}",
        out.stderr
    );
    assert!(!dir.path().join("typo").exists());

    let out = run(gatehouse(dir.path())
        .args(["migrate", "--config"])
        .arg(&path));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let out = run(gatehouse(dir.path())
        .args(["check-config", "--config"])
        .arg(&path));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
}

#[test]
fn keys_import_help_documents_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(gatehouse(dir.path()).args(["keys", "import", "--help"]));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    for field in [
        "hash",
        "name",
        "type",
        "scopes",
        "environment",
        "owner_id",
        "metadata",
        "expires_at",
        "prefix",
        "rate_limit",
        "credits",
        "allowed_ips",
    ] {
        assert!(
            out.stdout.contains(&format!("  {field} ")),
            "{field} missing from:\n{}",
            out.stdout
        );
    }
}

/// The commands that work on the data, pointed at PostgreSQL with
/// `GATEHOUSE_DATABASE__URL`: migrate (twice, and a newer schema refused),
/// check-config, users add, keys create/list/revoke, and backup (which
/// explains pg_dump and exits 2).
#[test]
fn data_commands_work_on_postgres_and_backup_points_at_pg_dump() {
    let Some(pg) = crate::pg::TestDb::create() else {
        crate::helpers::e2e_available(false, "PostgreSQL");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let on_pg = |args: &[&str]| {
        run(gatehouse(dir.path())
            .env("GATEHOUSE_DATABASE__URL", &pg.url)
            .args(args)
            .args(["--data-dir", "d"]))
    };
    // Before the schema exists, check-config says serve will create it.
    let out = on_pg(&["check-config"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "warning: database.url: there is no Gatehouse schema in {} yet: `gatehouse serve` (or `gatehouse migrate`) will create the schema there",
            gatehouse::store::postgres::redact_url(&pg.url)
        )),
        "{}",
        out.stderr
    );
    assert_eq!(
        crate::helpers::pg_query_i64(
            &pg.url,
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ),
        0,
        "check-config creates nothing"
    );
    let out = on_pg(&["migrate"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains("migrated from schema version 0"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(&pg.name),
        "names the database: {}",
        out.stdout
    );
    assert!(
        !dir.path().join("d/gatehouse.db").exists(),
        "no SQLite file"
    );
    let out = on_pg(&["migrate"]);
    assert!(out.stdout.contains("up to date"), "{}", out.stdout);
    let out = on_pg(&["check-config"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        !out.stderr.contains("no Gatehouse schema"),
        "{}",
        out.stderr
    );

    let out = on_pg(&[
        "users",
        "add",
        "--email",
        "ops@acme.test",
        "--project",
        "Ops",
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let out = on_pg(&["keys", "create", "--project", "Ops", "--name", "deploy"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let id = out
        .stdout
        .split_whitespace()
        .find(|w| w.starts_with("key_"))
        .expect("the key id")
        .to_string();
    assert_eq!(
        crate::helpers::pg_query_i64(
            &pg.url,
            "SELECT count(*) FROM api_keys WHERE revoked_at IS NULL"
        ),
        1
    );
    let out = on_pg(&["keys", "revoke", &id]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let out = on_pg(&["keys", "list", "--project", "Ops", "--all"]);
    assert!(out.stdout.contains("revoked"), "{}", out.stdout);

    let out = on_pg(&["backup", "x.db"]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("pg_dump"), "{}", out.stderr);
    assert!(!dir.path().join("x.db").exists());

    // A schema written by a newer Gatehouse is refused by every command.
    crate::helpers::pg_query_i64(
        &pg.url,
        "WITH v AS (INSERT INTO gatehouse_schema (version, description, applied_at) VALUES (999, 'future', 0) RETURNING 1) SELECT count(*) FROM v",
    );
    for args in [
        vec!["migrate"],
        vec!["serve", "--listen", "127.0.0.1:0"],
        vec!["check-config"],
    ] {
        let out = on_pg(&args);
        assert_eq!(out.code, Some(1), "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.contains("newer than this Gatehouse supports"),
            "{args:?}: {}",
            out.stderr
        );
    }
}

/// A port another program holds is reported before any data is touched,
/// with how to pick another address; in local mode (the zero-config
/// demo) and in production alike.
#[test]
fn a_busy_port_is_refused_before_any_data_is_created() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = run(gatehouse(dir.path()).args(["--listen", &addr]));
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&format!("gatehouse: cannot listen on {addr}: "))
            && out.stderr.contains("--listen")
            && out.stderr.contains("`listen` in the configuration"),
        "{}",
        out.stderr
    );
    assert!(
        !dir.path().join("gatehouse-data").exists(),
        "nothing was created"
    );

    let config = production_toml(dir.path()).replace("127.0.0.1:0", &addr);
    let out = serve_with(dir.path(), &config);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("--listen"), "{}", out.stderr);
    assert!(!dir.path().join("data").exists(), "nothing was created");

    // A second server on a running one's data directory and port is told
    // about the server (exit 2), not about the port.
    let server = Server::start(gatehouse(dir.path()).args(["--listen", "127.0.0.1:0"]));
    let running = server.base.trim_start_matches("http://").to_string();
    let out = run(gatehouse(dir.path()).args(["--listen", &running]));
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("is in use by another Gatehouse process"),
        "{}",
        out.stderr
    );
}

/// Local mode warns when it listens beyond loopback (the demo, its
/// generated secrets and its mailbox would be reachable from the
/// network), naming the key and the address; on loopback it does not.
#[test]
fn local_mode_warns_when_it_listens_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(gatehouse(dir.path()).args(["serve", "--listen", "0.0.0.0:0"]));
    assert!(
        server.base.starts_with("http://0.0.0.0:"),
        "{}",
        server.base
    );
    assert_eq!(server.get("/readyz").status, 200);
    let (code, _, stderr) = server.terminate();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains(
            "warning: listen: local mode is listening on the non-loopback address 0.0.0.0"
        ) && stderr.contains("reachable from the network"),
        "{stderr}"
    );

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(gatehouse(dir.path()).args(["serve", "--listen", "127.0.0.1:0"]));
    let (code, _, stderr) = server.terminate();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("non-loopback"), "{stderr}");
}
