//! A key's window and balance are state, not cache; rotation never
//! multiplies what a key may do; refusals say nothing about a key; and a
//! revocation made on the host reaches a running server within a second.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{
    gatehouse, run, send, send_body, spawn_app, spawn_app_at, spawn_app_with, TestApp,
};
use crate::keys::{code_of, create_key, verify};

fn rotate(app: &TestApp, access: &str, id: &str, grace: i64) -> crate::helpers::Resp {
    send_body(
        app.authed("POST", &format!("/api/v1/api-keys/{id}/rotate"), access)
            .set("Content-Type", "application/json"),
        &json!({ "expire_previous_in_secs": grace }).to_string(),
    )
}

#[test]
fn a_window_survives_floods_of_invented_and_other_real_keys() {
    let app = spawn_app_with(|c| {
        c.keys.cache_capacity = 8;
        c.keys.negative_cache_ttl_secs = 1;
    });
    let t = app.login("owner@acme.test");
    let (_, limited) = create_key(
        &app,
        &t,
        json!({ "name": "limited", "rate_limit": {"limit": 5, "window_secs": 3600} }),
    );
    for _ in 0..5 {
        assert_eq!(code_of(&verify(&app, json!({ "key": limited }))), "valid");
    }
    assert_eq!(
        code_of(&verify(&app, json!({ "key": limited }))),
        "rate_limited"
    );

    // Real keys, more than the cache holds, each checked a few times.
    let others: Vec<String> = (0..20)
        .map(|i| create_key(&app, &t, json!({ "name": format!("other {i}") })).1)
        .collect();
    for _ in 0..3 {
        for k in &others {
            assert_eq!(code_of(&verify(&app, json!({ "key": k }))), "valid");
        }
    }
    // 10,000 invented keys of the right shape and checksum.
    let app = Arc::new(app);
    let invalid = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (app, invalid) = (app.clone(), invalid.clone());
            std::thread::spawn(move || {
                for _ in 0..2500 {
                    let invented =
                        gatehouse::keys::ApiKey::generate("gate", gatehouse::keys::KeyType::Secret);
                    let v = verify(&app, json!({ "key": invented.expose() }));
                    if code_of(&v) == "invalid_key" {
                        invalid.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    assert_eq!(invalid.load(Ordering::Relaxed), 10_000);

    let v = verify(&app, json!({ "key": limited }));
    assert_eq!(code_of(&v), "rate_limited", "the window was not reset: {v}");
    assert!(v["retry_after_secs"].as_u64().unwrap() > 60, "{v}");
    let res = app.post_json("/api/v1/keys/verify", json!({ "key": limited }));
    assert!(
        res.header("ratelimit")
            .unwrap()
            .starts_with("\"default\";r=0;"),
        "{:?}",
        res.header("ratelimit")
    );
}

fn plan_app(max_keys: u64) -> TestApp {
    spawn_app_with(|c| {
        c.billing.default_plan = "small".into();
        c.billing.plans = vec![gatehouse::config::PlanConfig {
            name: "small".into(),
            stripe_price_id: None,
            max_keys: Some(max_keys),
            monthly_verifications: None,
        }];
    })
}

#[test]
fn a_key_and_its_successor_share_one_balance() {
    let app = Arc::new(spawn_app_with(|_| {}));
    let t = app.login("owner@acme.test");
    let (id, old) = create_key(
        &app,
        &t,
        json!({ "name": "metered", "credits": {"remaining": 40},
                "rate_limit": {"limit": 100000, "window_secs": 60} }),
    );
    // Some credits spent before the rotation.
    for _ in 0..5 {
        assert_eq!(code_of(&verify(&app, json!({ "key": old }))), "valid");
    }
    let res = rotate(&app, &t.access, &id, 3600);
    assert_eq!(res.status, 201, "{}", res.body);
    let new = res.json()["plaintext_key"].as_str().unwrap().to_string();
    let new_id = res.json()["id"].as_str().unwrap().to_string();
    assert_eq!(res.json()["credits"]["remaining"], 35);

    // Both keys at once, from several threads: exactly the 35 left.
    let valid = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..6)
        .map(|i| {
            let (app, valid) = (app.clone(), valid.clone());
            let key = if i % 2 == 0 { old.clone() } else { new.clone() };
            std::thread::spawn(move || {
                for _ in 0..15 {
                    let v = verify(&app, json!({ "key": key }));
                    match code_of(&v) {
                        "valid" => {
                            valid.fetch_add(1, Ordering::Relaxed);
                        }
                        "usage_exceeded" => {}
                        other => panic!("unexpected {other}: {v}"),
                    }
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    assert_eq!(
        valid.load(Ordering::Relaxed),
        35,
        "never more than one balance"
    );
    for (key_id, key) in [(&id, &old), (&new_id, &new)] {
        let shown = send(app.authed("GET", &format!("/api/v1/api-keys/{key_id}"), &t.access));
        assert_eq!(shown.json()["credits"]["remaining"], 0, "{}", shown.body);
        assert_eq!(
            code_of(&verify(&app, json!({ "key": key }))),
            "usage_exceeded"
        );
    }
    // Spent in storage, on the successor, at once (no flush needed).
    assert_eq!(
        app.query_i64(&format!(
            "SELECT credits_remaining FROM api_keys WHERE id = '{new_id}'"
        )),
        0
    );
}

#[test]
fn a_key_and_its_successor_share_one_window() {
    let app = spawn_app_with(|_| {});
    let t = app.login("owner@acme.test");
    let (id, old) = create_key(
        &app,
        &t,
        json!({ "name": "limited", "rate_limit": {"limit": 6, "window_secs": 3600} }),
    );
    for _ in 0..2 {
        assert_eq!(code_of(&verify(&app, json!({ "key": old }))), "valid");
    }
    let res = rotate(&app, &t.access, &id, 3600);
    assert_eq!(res.status, 201, "{}", res.body);
    let new = res.json()["plaintext_key"].as_str().unwrap().to_string();
    let mut valid = 0;
    for i in 0..10 {
        let key = if i % 2 == 0 { &old } else { &new };
        if code_of(&verify(&app, json!({ "key": key }))) == "valid" {
            valid += 1;
        }
    }
    assert_eq!(valid, 4, "the two keys draw on one window of 6");
}

#[test]
fn a_line_of_rotations_never_has_more_than_two_live_keys() {
    let app = plan_app(3);
    let t = app.login("owner@acme.test");
    let (a_id, a) = create_key(&app, &t, json!({ "name": "a" }));
    let (_, other) = create_key(&app, &t, json!({ "name": "other" }));

    // a -> b with grace: a counts towards max_keys (3 live keys now).
    let res = rotate(&app, &t.access, &a_id, 3600);
    assert_eq!(res.status, 201, "{}", res.body);
    let b_id = res.json()["id"].as_str().unwrap().to_string();
    let b = res.json()["plaintext_key"].as_str().unwrap().to_string();
    assert_eq!(code_of(&verify(&app, json!({ "key": a }))), "valid");
    send_body(
        app.authed("POST", "/api/v1/api-keys", &t.access)
            .set("Content-Type", "application/json"),
        r#"{"name": "one too many"}"#,
    )
    .assert_error(403, "plan_limit");

    // The same key cannot be rotated twice.
    let res = rotate(&app, &t.access, &a_id, 0);
    let body = res.assert_error(409, "conflict");
    assert!(
        body["error"]["message"].as_str().unwrap().contains(&b_id),
        "{body}"
    );
    assert_eq!(
        app.query_i64("SELECT count(*) FROM api_keys"),
        3,
        "nothing was created"
    );

    // b -> c with grace: a's grace ends at once; still 3 live keys.
    let res = rotate(&app, &t.access, &b_id, 3600);
    assert_eq!(res.status, 201, "{}", res.body);
    let c = res.json()["plaintext_key"].as_str().unwrap().to_string();
    assert_eq!(code_of(&verify(&app, json!({ "key": a }))), "invalid_key");
    assert_eq!(code_of(&verify(&app, json!({ "key": b }))), "valid");
    assert_eq!(code_of(&verify(&app, json!({ "key": c }))), "valid");
    assert_eq!(code_of(&verify(&app, json!({ "key": other }))), "valid");
    let listed = send(app.authed("GET", "/api/v1/api-keys", &t.access)).json();
    assert_eq!(listed["pagination"]["total"], 3, "{listed}");
    let a_now = send(app.authed("GET", &format!("/api/v1/api-keys/{a_id}"), &t.access)).json();
    assert_eq!(a_now["is_active"], false);
    assert_eq!(
        app.query_i64(&format!(
            "SELECT count(*) FROM audit_events WHERE action = 'key.revoked' AND target = '{a_id}'"
        )),
        1
    );
}

#[test]
fn keeping_the_previous_key_may_not_exceed_max_keys() {
    let app = plan_app(2);
    let t = app.login("owner@acme.test");
    let (a_id, a) = create_key(&app, &t, json!({ "name": "a" }));
    create_key(&app, &t, json!({ "name": "b" }));
    rotate(&app, &t.access, &a_id, 60).assert_error(403, "plan_limit");
    assert_eq!(code_of(&verify(&app, json!({ "key": a }))), "valid");
    // Grace 0 replaces the key: allowed at the limit.
    let res = rotate(&app, &t.access, &a_id, 0);
    assert_eq!(res.status, 201, "{}", res.body);
    assert_eq!(code_of(&verify(&app, json!({ "key": a }))), "invalid_key");
    send_body(
        app.authed("POST", "/api/v1/api-keys", &t.access)
            .set("Content-Type", "application/json"),
        r#"{"name": "c"}"#,
    )
    .assert_error(403, "plan_limit");
}

#[test]
fn concurrent_rotations_of_one_key_make_one_successor() {
    let app = Arc::new(spawn_app_with(|_| {}));
    let t = app.login("owner@acme.test");
    let (id, _) = create_key(&app, &t, json!({ "name": "raced" }));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (app, access, id) = (app.clone(), t.access.clone(), id.clone());
            std::thread::spawn(move || rotate(&app, &access, &id, 600).status)
        })
        .collect();
    let statuses: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        7,
        "{statuses:?}"
    );
    assert_eq!(app.query_i64("SELECT count(*) FROM api_keys"), 2);
}

/// Every place a refused key could show rate-limit state.
fn assert_no_ratelimit_fields(app: &TestApp, key: &str) {
    let res = app.post_json("/api/v1/keys/verify", json!({ "key": key }));
    assert_eq!(res.status, 200);
    let code = res.json()["code"].as_str().unwrap().to_string();
    assert!(
        code == "invalid_key" || code == "malformed_key",
        "{}",
        res.body
    );
    assert!(res.json().get("ratelimit").is_none(), "{}", res.body);
    let check = send(
        app.request("GET", "/api/v1/auth/check")
            .set("X-Forwarded-Method", "GET")
            .set("X-Forwarded-Uri", "/")
            .set("X-API-Key", key),
    );
    let own = send(app.authed("GET", "/api/v1/api-keys", key));
    for r in [&res, &check, &own] {
        assert!(r.header("ratelimit").is_none(), "{:?}", r.headers);
        assert!(r.header("ratelimit-policy").is_none(), "{:?}", r.headers);
        assert!(r.header("retry-after").is_none(), "{:?}", r.headers);
    }
    check.assert_error(401, &code);
    own.assert_error(401, &code);
}

#[test]
fn refusals_as_invalid_or_malformed_carry_no_ratelimit_fields() {
    let app = spawn_app();
    let t = app.login("owner@acme.test");
    let invented = gatehouse::keys::ApiKey::generate("gate", gatehouse::keys::KeyType::Secret);
    assert_no_ratelimit_fields(&app, invented.expose());
    assert_no_ratelimit_fields(&app, "gate_sk_tooshort");

    let (revoked_id, revoked) = create_key(&app, &t, json!({ "name": "revoked" }));
    assert_eq!(code_of(&verify(&app, json!({ "key": revoked }))), "valid");
    let res = send(app.authed(
        "DELETE",
        &format!("/api/v1/api-keys/{revoked_id}"),
        &t.access,
    ));
    assert_eq!(res.status, 200);
    assert_no_ratelimit_fields(&app, &revoked);

    let (expiring_id, expiring) = create_key(&app, &t, json!({ "name": "expiring" }));
    assert_eq!(code_of(&verify(&app, json!({ "key": expiring }))), "valid");
    let soon = time::OffsetDateTime::from_unix_timestamp(app.clock.now() + 60).unwrap();
    let res = send_body(
        app.authed(
            "PATCH",
            &format!("/api/v1/api-keys/{expiring_id}"),
            &t.access,
        )
        .set("Content-Type", "application/json"),
        &json!({ "expires_at": soon.format(&time::format_description::well_known::Rfc3339).unwrap() })
            .to_string(),
    );
    assert_eq!(res.status, 200, "{}", res.body);
    app.clock.advance(Duration::from_secs(61));
    assert_eq!(
        code_of(&verify(&app, json!({ "key": expiring }))),
        "invalid_key"
    );
    assert_no_ratelimit_fields(&app, &expiring);
}

#[test]
fn verify_compares_the_client_address_in_canonical_form() {
    let app = spawn_app();
    let t = app.login("owner@acme.test");
    let (_, v4) = create_key(
        &app,
        &t,
        json!({ "name": "v4 net", "allowed_ips": ["10.1.2.0/24"] }),
    );
    let (_, mapped) = create_key(
        &app,
        &t,
        json!({ "name": "mapped net", "allowed_ips": ["::ffff:10.9.0.0/120"] }),
    );
    for (key, ip, want) in [
        (&v4, "10.1.2.3", "valid"),
        (&v4, "::ffff:10.1.2.3", "valid"),
        (&v4, "::FFFF:10.1.2.200", "valid"),
        (&v4, "::ffff:10.1.3.3", "forbidden_ip"),
        (&v4, "::10.1.2.3", "forbidden_ip"),
        (&mapped, "10.9.0.5", "valid"),
        (&mapped, "::ffff:10.9.0.5", "valid"),
        (&mapped, "10.9.1.5", "forbidden_ip"),
    ] {
        let v = verify(&app, json!({ "key": key, "ip": ip }));
        assert_eq!(code_of(&v), want, "{ip}: {v}");
    }
}

#[test]
fn a_revocation_on_the_host_reaches_a_running_server_within_a_second() {
    let root = tempfile::tempdir().unwrap();
    let app = spawn_app_at(root.path(), |_| {});
    let t = app.login("owner@acme.test");
    let (id, key) = create_key(&app, &t, json!({ "name": "revoked on the host" }));
    let (_, bystander) = create_key(&app, &t, json!({ "name": "bystander" }));
    assert_eq!(code_of(&verify(&app, json!({ "key": key }))), "valid");
    assert_eq!(code_of(&verify(&app, json!({ "key": bystander }))), "valid");

    let data_dir = root.path().join("data");
    let out = run(gatehouse(root.path())
        .args(["keys", "revoke", &id, "--data-dir"])
        .arg(&data_dir));
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    let revoked = Instant::now();
    loop {
        let v = verify(&app, json!({ "key": key }));
        if code_of(&v) == "invalid_key" {
            break;
        }
        assert!(
            revoked.elapsed() < Duration::from_secs(1),
            "still {v} a second after the CLI exited"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(code_of(&verify(&app, json!({ "key": bystander }))), "valid");
    assert_eq!(
        app.query_i64(&format!(
            "SELECT count(*) FROM audit_events WHERE action = 'key.revoked' AND target = '{id}'"
        )),
        1
    );
}

#[test]
fn owner_ids_are_counted_in_characters() {
    let app = spawn_app();
    let t = app.login("owner@acme.test");
    let wide = "é".repeat(128); // 256 bytes, 128 characters
    let (_, key) = create_key(&app, &t, json!({ "name": "wide", "owner_id": wide }));
    assert_eq!(
        verify(&app, json!({ "key": key }))["owner_id"],
        wide.as_str()
    );
    let res = send_body(
        app.authed("POST", "/api/v1/api-keys", &t.access)
            .set("Content-Type", "application/json"),
        &json!({ "name": "too wide", "owner_id": "é".repeat(129) }).to_string(),
    );
    res.assert_error(422, "validation_error");
}
