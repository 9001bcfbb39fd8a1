//! PostgreSQL going away and coming back: the node says it is not ready,
//! answers what needs the database with 503 `unavailable` and
//! `Retry-After` (never 500), keeps answering cached keys, and recovers by
//! itself when the database is back.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{send, spawn_app, wait_until};
use crate::keys::{code_of, create_key, verify};
use crate::pg::admin_sql;

fn cut(db: &str) {
    admin_sql(&format!("ALTER DATABASE {db} ALLOW_CONNECTIONS false"));
    admin_sql(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}' AND pid <> pg_backend_pid()"
    ));
}

fn restore(db: &str) {
    admin_sql(&format!("ALTER DATABASE {db} ALLOW_CONNECTIONS true"));
}

#[test]
fn a_database_outage_is_503_and_the_node_recovers_by_itself() {
    let app = spawn_app();
    let db = app.pg_database().expect("this suite runs on PostgreSQL");
    let t = app.login("owner@acme.test");
    let (_, cached) = create_key(&app, &t, json!({ "name": "cached" }));
    assert_eq!(code_of(&verify(&app, json!({ "key": cached }))), "valid");
    let (_, never_checked) = create_key(&app, &t, json!({ "name": "not cached" }));
    // A well-formed key nobody issued: a miss, which must ask the database.
    let prefix = &app.state.config.keys.prefix;
    let unknown = gatehouse::keys::ApiKey::generate(prefix, gatehouse::keys::KeyType::Secret)
        .expose()
        .to_string();

    cut(&db);
    let ready = app.get("/readyz");
    assert_eq!(ready.status, 503, "{}", ready.body);
    // A cached key needs no database.
    assert_eq!(code_of(&verify(&app, json!({ "key": cached }))), "valid");
    let forward_auth = send(
        app.request("GET", "/api/v1/auth/check")
            .set("X-API-Key", &unknown)
            .set("X-Forwarded-Method", "GET")
            .set("X-Forwarded-Uri", "/reports/7"),
    );
    for res in [
        app.post_json("/api/v1/keys/verify", json!({ "key": unknown })),
        forward_auth,
        app.send_code("someone@acme.test"),
    ] {
        res.assert_error(503, "unavailable");
        let retry: u64 = res
            .header("retry-after")
            .expect("Retry-After on unavailable")
            .parse()
            .unwrap();
        assert!(retry >= 1, "{retry}");
        assert!(res.header("x-gatehouse-key-id").is_none());
    }

    restore(&db);
    wait_until(
        "ready again once the database is back",
        Duration::from_secs(15),
        || app.get("/readyz").status == 200,
    );
    let v = verify(&app, json!({ "key": unknown }));
    assert_eq!(code_of(&v), "invalid_key", "{v}");
    assert_eq!(
        code_of(&verify(&app, json!({ "key": never_checked }))),
        "valid"
    );
    app.login("someone@acme.test");
}
