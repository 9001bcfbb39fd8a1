//! The configuration rules through the built binary: unknown keys in every
//! kind of table, partial tables, ranges, `database.synchronous`, secrets
//! issued by others, SMTP without TLS, and check-config in local mode.

use std::path::Path;

use crate::helpers::{gatehouse, production_toml, run, write, Output, Server};

/// `check-config` for `config` in a directory that already has a database,
/// so that only the configuration is judged.
fn check(dir: &Path, config: &str, extra_args: &[&str]) -> Output {
    if !dir.join("data/gatehouse.db").exists() {
        let out = run(gatehouse(dir).args(["migrate", "--data-dir", "data"]));
        assert_eq!(out.code, Some(0), "{}", out.stderr);
    }
    let path = write(dir, "g.toml", config);
    run(gatehouse(dir)
        .arg("check-config")
        .arg("--config")
        .arg(path)
        .args(extra_args))
}

const STRIPE_SECRET: &str = "whsec_Q29uZmlndXJlZEJ5U3RyaXBlRm9yVGhpc1Rlc3Q";

/// Typos inside an entry of each array of tables, plus a valid plan so
/// that billing (and its secret) is on.
fn with_typos_in_array_tables(base: &str) -> String {
    format!(
        r#"{base}
[billing]
stripe_webhook_secret = "{STRIPE_SECRET}"
default_plan = "free"

[[billing.plans]]
name = "free"
max_key = 5

[[scopes]]
name = "orders:write"
descripton = "Create orders"

[[routes]]
path_prefix = "/orders"
scope = "orders:write"
methods = ["POST"]
"#
    )
}

const TYPOS: [(&str, &str); 3] = [
    ("billing.plans[0].max_key", "billing.plans[0].max_keys"),
    ("scopes[0].descripton", "scopes[0].description"),
    ("routes[0].methods", "routes[0].scope"),
];

#[test]
fn unknown_keys_in_array_tables_refuse_in_production_with_the_nearest_name() {
    let dir = tempfile::tempdir().unwrap();
    let config = with_typos_in_array_tables(&production_toml(dir.path()));
    let out = check(dir.path(), &config, &[]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("3 problems found"), "{}", out.stderr);
    for (typo, nearest) in TYPOS {
        assert!(
            out.stderr
                .contains(&format!("error: {typo}: is not a setting Gatehouse knows")),
            "{typo} refused:\n{}",
            out.stderr
        );
        assert!(
            out.stderr
                .contains(&format!("the nearest known name is `{nearest}`")),
            "{nearest} suggested:\n{}",
            out.stderr
        );
    }
}

#[test]
fn unknown_keys_in_array_tables_warn_in_local_mode_and_it_serves() {
    let dir = tempfile::tempdir().unwrap();
    let config = with_typos_in_array_tables("listen = \"127.0.0.1:0\"\n");
    let path = write(dir.path(), "g.toml", &config);
    let server = Server::start(gatehouse(dir.path()).args(["serve", "--config"]).arg(&path));
    // The valid part of the plan applies: the typo left it unlimited, which
    // is exactly what the warning is for.
    let catalog = server.get("/api/v1/catalog").json();
    assert_eq!(catalog["plans"][0]["name"], "free", "{catalog}");
    let (_, _, stderr) = server.terminate();
    for (typo, nearest) in TYPOS {
        assert!(
            stderr.contains(&format!(
                "warning: {typo}: is not a setting Gatehouse knows"
            )),
            "{typo} warned:\n{stderr}"
        );
        assert!(stderr.contains(&format!("`{nearest}`")), "{stderr}");
    }
}

#[test]
fn a_typo_that_leaves_a_required_field_out_names_the_nearest_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[[scopes]]\nname = \"orders:write\"\n[[routes]]\npath_prefix = \"/orders\"\nscop = \"orders:write\"\n";
    let out = check(dir.path(), config, &[]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("missing field `scope`"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("routes[0].scop: is not a setting Gatehouse knows")
            && out
                .stderr
                .contains("the nearest known name is `routes[0].scope`"),
        "{}",
        out.stderr
    );
}

#[test]
fn unknown_keys_in_nested_tables_and_variables_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "{}\n[keys.default_rate_limit]\nlimt = 7\n",
        production_toml(dir.path())
    );
    let out = check(dir.path(), &config, &[]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("error: keys.default_rate_limit.limt")
            && out.stderr.contains("`keys.default_rate_limit.limit`"),
        "{}",
        out.stderr
    );

    let local = "listen = \"127.0.0.1:8080\"\n";
    let path = write(dir.path(), "local.toml", local);
    let out = run(gatehouse(dir.path())
        .args(["check-config", "--data-dir", "data", "--config"])
        .arg(path)
        .env("GATEHOUSE_KEYS__CACHE_TTL", "5"));
    assert_eq!(out.code, Some(0), "local mode warns: {}", out.stderr);
    assert!(
        out.stderr.contains("warning: GATEHOUSE_KEYS__CACHE_TTL")
            && out
                .stderr
                .contains("the nearest known name is GATEHOUSE_KEYS__CACHE_TTL_SECS"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_partial_table_takes_the_defaults_for_the_rest_from_file_and_environment() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "g.toml",
        "listen = \"127.0.0.1:0\"\n[keys.default_rate_limit]\nlimit = 7\n",
    );
    let server = Server::start(gatehouse(dir.path()).args(["serve", "--config"]).arg(&path));
    let catalog = server.get("/api/v1/catalog").json();
    assert_eq!(
        catalog["default_rate_limit"],
        serde_json::json!({"limit": 7, "window_secs": 60}),
        "{catalog}"
    );
    drop(server);

    let server = Server::start(
        gatehouse(dir.path())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("GATEHOUSE_KEYS__DEFAULT_RATE_LIMIT__WINDOW_SECS", "30"),
    );
    let catalog = server.get("/api/v1/catalog").json();
    assert_eq!(
        catalog["default_rate_limit"],
        serde_json::json!({"limit": 100, "window_secs": 30}),
        "{catalog}"
    );
}

#[test]
fn numbers_and_lists_outside_their_range_are_refused_in_every_mode() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &str, &str); 4] = [
        (
            "GATEHOUSE_HTTP__WORKERS",
            "100000",
            "http.workers: is 100000; allowed 0..=256",
        ),
        (
            "GATEHOUSE_KEYS__CACHE_TTL_SECS",
            "0",
            "keys.cache_ttl_secs: is 0; allowed 1..=3600",
        ),
        (
            "GATEHOUSE_DATABASE__BUSY_TIMEOUT_MS",
            "5",
            "database.busy_timeout_ms: is 5; allowed 100..=600000",
        ),
        (
            "GATEHOUSE_USAGE__FLUSH_INTERVAL_SECS",
            "0",
            "usage.flush_interval_secs: is 0; allowed 1..=300",
        ),
    ];
    let out = check(dir.path(), "mode = \"local\"\n", &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let path = dir.path().join("g.toml");
    for (var, value, message) in cases {
        let out = run(gatehouse(dir.path())
            .args(["check-config", "--data-dir", "data", "--config"])
            .arg(&path)
            .env(var, value));
        assert_eq!(out.code, Some(1), "{var}: {}", out.stderr);
        assert!(out.stderr.contains(message), "{var}:\n{}", out.stderr);
    }
    let out = check(
        dir.path(),
        "[webhooks]\nretry_delays_secs = []\n[[billing.plans]]\nname = \"free\"\nmax_keys = 20000000\n",
        &[],
    );
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    for message in [
        "webhooks.retry_delays_secs: has 0 entries; allowed 1..=20 entries",
        "billing.plans[0].max_keys: is 20000000; allowed 0..=10000000",
    ] {
        assert!(out.stderr.contains(message), "{}", out.stderr);
    }
}

#[test]
fn synchronous_off_refuses_outside_local_mode_and_normal_warns() {
    let dir = tempfile::tempdir().unwrap();
    let base = production_toml(dir.path());
    let off = format!("{base}\n[database]\nsynchronous = \"off\"\n");
    let out = check(dir.path(), &off, &[]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("error: database.synchronous: is \"off\""),
        "{}",
        out.stderr
    );
    let out = check(dir.path(), &off, &["--mode", "local"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr.contains("warning: database.synchronous"),
        "{}",
        out.stderr
    );

    let normal = format!("{base}\n[database]\nsynchronous = \"normal\"\n");
    let out = check(dir.path(), &normal, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("warning: database.synchronous: is \"normal\"")
            && out.stderr.contains("power cut"),
        "{}",
        out.stderr
    );
}

#[test]
fn secrets_issued_by_others_follow_their_issuers_rules() {
    let dir = tempfile::tempdir().unwrap();
    let base = production_toml(dir.path());
    // A mail provider's 16-character app password is fine.
    let app_password = base.replace(
        "tls = \"none\"",
        "tls = \"starttls\"\nusername = \"mailer\"\npassword = \"abcdefghijklmnop\"",
    );
    let out = check(dir.path(), &app_password, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);

    // A placeholder is refused, and the hint offers no invented value.
    let placeholder = app_password.replace("abcdefghijklmnop", "changeme");
    let out = check(dir.path(), &placeholder, &[]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("error: smtp.password: is a placeholder"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("your mail provider gave"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("freshly generated"), "{}", out.stderr);

    // Stripe's secret must look like one; the hint points at Stripe.
    let stripe = format!(
        "{base}\n[billing]\nstripe_webhook_secret = \"sk_live_k2J9s8dLq0Zx7Vb3Nm4Rt6Yp\"\n"
    );
    let out = check(dir.path(), &stripe, &[]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("billing.stripe_webhook_secret: is not a Stripe webhook signing secret")
            && out.stderr.contains("from the Stripe dashboard")
            && !out.stderr.contains("freshly generated"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("k2J9s8dLq0Zx7Vb3Nm4Rt6Yp"),
        "the value never shows"
    );
    let stripe = format!("{base}\n[billing]\nstripe_webhook_secret = \"{STRIPE_SECRET}\"\n");
    assert_eq!(check(dir.path(), &stripe, &[]).code, Some(0));
}

#[test]
fn smtp_without_tls_and_with_a_username_refuses_outside_local_mode() {
    let dir = tempfile::tempdir().unwrap();
    let base = production_toml(dir.path());
    let config = base.replace(
        "tls = \"none\"",
        "tls = \"none\"\nusername = \"mailer\"\npassword = \"abcdefghijklmnop\"",
    );
    let out = check(dir.path(), &config, &[]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("error: smtp.tls: is \"none\" while smtp.username is set"),
        "{}",
        out.stderr
    );
    let out = check(dir.path(), &config, &["--mode", "local"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stderr.contains("warning: smtp.tls"), "{}", out.stderr);
}

#[test]
fn check_config_in_local_mode_knows_the_secrets_local_mode_generated() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(gatehouse(dir.path()).arg("check-config"));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("secrets.session_key: is missing (local mode generates it on first start)"),
        "{}",
        out.stderr
    );
    assert!(
        !dir.path().join("gatehouse-data").exists(),
        "check-config creates nothing"
    );

    let server = Server::start(gatehouse(dir.path()).args(["--listen", "127.0.0.1:0"]));
    drop(server);
    let out = run(gatehouse(dir.path()).arg("check-config"));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        !out.stderr.contains("secrets.session_key: is missing"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("secrets.session_key: not configured; using the value generated in")
            && out.stderr.contains("local-secrets.toml"),
        "{}",
        out.stderr
    );
}

/// `[ui]` is checked like every other table: a colour white text cannot be
/// read on, a logo that is not an image and an unknown key are refused
/// (in every mode for the values, outside local mode for the typo), and a
/// good branding passes.
#[test]
fn branding_settings_are_checked_and_a_typo_names_the_nearest_key() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "logo.txt", "not an image");
    let config = format!(
        "{}\n[ui]\nproduct_name = \"Acme API\"\naccent_color = \"#ffcc00\"\nlogo_file = \"{}\"\naccent_colour = \"#000000\"\n",
        production_toml(dir.path()),
        dir.path().join("logo.txt").display()
    );
    let out = check(dir.path(), &config, &[]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    for expected in [
        "error: ui.accent_color: `#ffcc00` is too light",
        "error: ui.logo_file:",
        "is neither an SVG nor a PNG image",
        "error: ui.accent_colour",
        "`ui.accent_color`",
    ] {
        assert!(out.stderr.contains(expected), "{expected}:\n{}", out.stderr);
    }

    write(
        dir.path(),
        "logo.svg",
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 8 8"><rect width="8" height="8"/></svg>"#,
    );
    let config = format!(
        "{}\n[ui]\nproduct_name = \"Acme API\"\naccent_color = \"#0b6e4f\"\nlogo_file = \"{}\"\n",
        production_toml(dir.path()),
        dir.path().join("logo.svg").display()
    );
    let out = check(dir.path(), &config, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);

    // The same checks from the environment, in local mode too.
    let path = write(dir.path(), "local.toml", "listen = \"127.0.0.1:8080\"\n");
    let out = run(gatehouse(dir.path())
        .args(["check-config", "--data-dir", "data", "--config"])
        .arg(path)
        .env("GATEHOUSE_UI__ACCENT_COLOR", "blue"));
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("ui.accent_color: `blue` is not a colour written as #rrggbb"),
        "{}",
        out.stderr
    );
}
