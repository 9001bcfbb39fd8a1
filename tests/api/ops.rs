//! SPEC section 11: health, readiness, metrics, catalog.

use gatehouse::config::Mode;

use crate::helpers::{send, spawn_app, spawn_app_with};

#[test]
fn health_and_readiness() {
    let app = spawn_app();
    let res = app.get("/healthz");
    assert_eq!(res.status, 200);
    assert_eq!(res.json()["status"], "ok");
    let res = app.get("/readyz");
    assert_eq!(res.status, 200);
    assert_eq!(res.json()["status"], "ready");
}

#[test]
fn metrics_are_open_in_local_mode_and_count_requests() {
    let app = spawn_app();
    app.get("/healthz");
    app.get("/nope");
    let res = app.get("/metrics");
    assert_eq!(res.status, 200);
    assert!(res
        .header("content-type")
        .unwrap()
        .starts_with("text/plain"));
    assert!(
        res.body.contains(
            r#"gatehouse_http_requests_total{route="/healthz",method="GET",status="200"} 1"#
        ),
        "{}",
        res.body
    );
    assert!(res
        .body
        .contains(r#"gatehouse_http_requests_total{route="other",method="GET",status="404"} 1"#));
    assert!(
        res.body.lines().any(
            |l| l.starts_with("gatehouse_http_request_duration_seconds_bucket{")
                && l.contains(r#"route="/healthz""#)
        ),
        "{}",
        res.body
    );
}

#[test]
fn metrics_need_the_ops_token_outside_local_mode() {
    let app = spawn_app_with(|c| c.mode = Mode::Production);
    let token = app.state.config.secrets.ops_token.clone().unwrap();

    app.get("/metrics")
        .assert_error(401, "missing_authorization");
    send(
        app.request("GET", "/metrics")
            .set("Authorization", "Bearer wrong-token"),
    )
    .assert_error(401, "invalid_token");
    send(
        app.request("GET", "/metrics")
            .set("Authorization", "Basic Zm9vOmJhcg=="),
    )
    .assert_error(401, "missing_authorization");

    let res = send(
        app.request("GET", "/metrics")
            .set("Authorization", &format!("Bearer {}", token.expose())),
    );
    assert_eq!(res.status, 200);
    assert!(res.body.contains("gatehouse_http_requests_total"));
    assert!(!res.body.contains(token.expose()));
}

#[test]
fn catalog_lists_scopes_key_types_plans_and_the_default_rate_limit() {
    let app = spawn_app_with(|c| {
        c.keys.prefix = "acme".into();
        c.scopes.push(gatehouse::config::ScopeConfig {
            name: "orders:write".into(),
            description: "Create orders".into(),
        });
        c.keys.default_rate_limit.limit = 250;
    });
    let res = app.get("/api/v1/catalog");
    assert_eq!(res.status, 200);
    let body = res.json();
    let scopes: Vec<&str> = body["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        scopes,
        [
            "full_access",
            "keys:read",
            "analytics:read",
            "webhooks:manage",
            "orders:write"
        ]
    );
    assert_eq!(body["scopes"][4]["builtin"], false);
    assert_eq!(body["key_types"][0]["type"], "secret");
    assert_eq!(body["key_types"][0]["prefix"], "acme_sk_");
    assert_eq!(body["key_types"][1]["prefix"], "acme_pk_");
    assert_eq!(body["plans"][0]["name"], "free");
    assert!(body["plans"][0]["max_keys"].is_null());
    assert_eq!(body["default_rate_limit"]["limit"], 250);
    assert_eq!(body["default_rate_limit"]["window_secs"], 60);
}
