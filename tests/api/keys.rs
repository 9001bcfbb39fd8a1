//! SPEC sections 5, 8 and 9: API keys, verification, forward-auth, usage.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{
    execute_sql_at, query_i64_at, send, send_body, spawn_app, spawn_app_at, spawn_app_with,
    wait_until, Resp, TestApp, Tokens,
};

pub fn create_key(app: &TestApp, t: &Tokens, body: Value) -> (String, String) {
    let res = send_body(
        app.authed("POST", "/api/v1/api-keys", &t.access)
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

pub fn verify(app: &TestApp, body: Value) -> Value {
    let res = crate::helpers::verify_key_at(&app.base, &body);
    assert_eq!(res.status, 200, "{}", res.body);
    res.json()
}

pub fn code_of(v: &Value) -> &str {
    if v["valid"] == true {
        "valid"
    } else {
        v["code"].as_str().unwrap()
    }
}

fn check(app: &TestApp, key: Option<&str>, method: &str, uri: &str) -> Resp {
    let mut req = app
        .request("GET", "/api/v1/auth/check")
        .set("X-Forwarded-Method", method)
        .set("X-Forwarded-Uri", uri);
    if let Some(k) = key {
        req = req.set("X-API-Key", k);
    }
    send(req)
}

fn own_api(app: &TestApp, key: Option<&str>, method: &str) -> Resp {
    let path = "/api/v1/api-keys";
    let mut req = app.request(method, path);
    if let Some(k) = key {
        req = req.set("Authorization", &format!("Bearer {k}"));
    }
    if method == "POST" {
        send_body(
            req.set("Content-Type", "application/json"),
            r#"{"name": "from a key"}"#,
        )
    } else {
        send(req)
    }
}

fn altered(key: &str) -> String {
    let mut bytes = key.as_bytes().to_vec();
    let i = 12;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap()
}

#[test]
fn created_keys_have_the_format_and_are_never_shown_again() {
    let app = spawn_app();
    let t = app.login("owner@acme.test");
    let res = send_body(
        app.authed("POST", "/api/v1/api-keys", &t.access)
            .set("Content-Type", "application/json"),
        &json!({ "name": "Server", "scopes": ["keys:read"], "metadata": {"tier": "gold"} })
            .to_string(),
    );
    assert_eq!(res.status, 201, "{}", res.body);
    assert_eq!(res.header("cache-control"), Some("no-store"));
    let body = res.json();
    let plaintext = body["plaintext_key"].as_str().unwrap().to_string();
    // ^gate_(sk|pk)_[0-9A-Za-z]{38}$ with a valid CRC-32 checksum.
    assert!(
        plaintext.starts_with("gate_sk_") && plaintext.len() == 46,
        "{plaintext}"
    );
    assert!(plaintext[8..].bytes().all(|b| b.is_ascii_alphanumeric()));
    assert_eq!(
        checksum(&plaintext[..40]),
        &plaintext[40..],
        "checksum computed independently"
    );
    assert_eq!(body["prefix"], &plaintext[..16]);
    for field in [
        "id",
        "name",
        "type",
        "environment",
        "prefix",
        "scopes",
        "rate_limit",
        "owner_id",
        "credits",
        "allowed_ips",
        "metadata",
        "is_active",
        "created_at",
        "updated_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
        "created_by",
    ] {
        assert!(body.get(field).is_some(), "{field} in {body}");
    }
    assert_eq!(body["type"], "secret");
    assert_eq!(body["environment"], "production");
    assert_eq!(body["rate_limit"], json!({"limit": 100, "window_secs": 60}));
    assert_eq!(body["created_by"], t.user_id.as_str());
    assert_eq!(body["is_active"], true);

    // Never again: not in list or get, not in the database files.
    let id = body["id"].as_str().unwrap();
    let list = send(app.authed("GET", "/api/v1/api-keys", &t.access));
    assert_eq!(list.json()["pagination"]["total"], 1);
    let get = send(app.authed("GET", &format!("/api/v1/api-keys/{id}"), &t.access));
    assert_eq!(get.status, 200);
    for res in [&list, &get] {
        assert!(!res.body.contains(&plaintext));
        assert!(!res.body.contains("plaintext_key"));
    }
    // The database itself, on either backend (on SQLite the file and its
    // log byte for byte).
    assert!(
        !app.database_contains(&plaintext),
        "the plaintext key is stored"
    );
    assert!(!app.table_contains("api_keys", &plaintext));
    assert_eq!(
        app.query_i64("SELECT count(*) FROM api_keys WHERE length(key_hash) = 32"),
        1,
        "a SHA-256 hash is stored"
    );
    assert_eq!(
        app.query_i64("SELECT count(*) FROM audit_events WHERE action = 'key.created'"),
        1
    );
}

/// CRC-32 (IEEE) in base62, written out here independently of the product.
fn checksum(body: &str) -> String {
    let mut crc: u32 = 0xFFFF_FFFF;
    for b in body.bytes() {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    let mut n = (!crc) as u64;
    let alphabet = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = vec![b'0'; 6];
    for slot in out.iter_mut().rev() {
        *slot = alphabet[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(out).unwrap()
}

#[test]
fn keys_cannot_create_keys_and_may_revoke_only_themselves() {
    let app = spawn_app();
    let t = app.login("owner@acme.test");
    let (a_id, a) = create_key(&app, &t, json!({ "name": "A", "scopes": ["full_access"] }));
    let (b_id, _) = create_key(&app, &t, json!({ "name": "B" }));
    own_api(&app, Some(&a), "POST").assert_error(403, "forbidden");
    send(app.authed("DELETE", &format!("/api/v1/api-keys/{b_id}"), &a))
        .assert_error(403, "forbidden");
    send(app.authed("POST", &format!("/api/v1/api-keys/{b_id}/rotate"), &a))
        .assert_error(403, "forbidden");
    let me = send(app.authed("GET", "/api/v1/me", &a));
    assert_eq!(me.status, 200);
    assert_eq!(me.json()["key"]["id"], a_id.as_str());
    assert!(me.json()["project"]["id"].is_string());
    let res = send(app.authed("DELETE", &format!("/api/v1/api-keys/{a_id}"), &a));
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.json()["is_active"], false);
    assert!(res.json()["revoked_at"].is_string());
    send(app.authed("GET", "/api/v1/me", &a)).assert_error(401, "invalid_key");

    // Members may read but not issue or revoke.
    let member = {
        let res = send_body(
            app.authed("POST", "/api/v1/members", &t.access)
                .set("Content-Type", "application/json"),
            r#"{"email": "member@acme.test", "role": "member"}"#,
        );
        assert_eq!(res.status, 201);
        app.login("member@acme.test")
    };
    assert_eq!(
        send(app.authed("GET", "/api/v1/api-keys", &member.access)).status,
        200
    );
    send_body(
        app.authed("POST", "/api/v1/api-keys", &member.access)
            .set("Content-Type", "application/json"),
        r#"{"name": "nope"}"#,
    )
    .assert_error(403, "forbidden");
    send(app.authed(
        "DELETE",
        &format!("/api/v1/api-keys/{b_id}"),
        &member.access,
    ))
    .assert_error(403, "forbidden");
}

#[test]
fn every_refusal_code_through_verify_forward_auth_and_the_own_api() {
    let app = spawn_app_with(|c| {
        c.scopes.push(gatehouse::config::ScopeConfig {
            name: "orders:write".into(),
            description: String::new(),
        });
        c.routes.push(gatehouse::config::RouteRule {
            path_prefix: "/orders".into(),
            scope: "orders:write".into(),
        });
        c.routes.push(gatehouse::config::RouteRule {
            path_prefix: "/reports".into(),
            scope: "keys:read".into(),
        });
    });
    let t = app.login("owner@acme.test");
    let (_, plain) = create_key(&app, &t, json!({ "name": "plain" }));
    let (_, reader) = create_key(
        &app,
        &t,
        json!({ "name": "reader", "scopes": ["keys:read"] }),
    );
    let (_, full) = create_key(
        &app,
        &t,
        json!({ "name": "full", "scopes": ["full_access"] }),
    );
    let (_, publishable) = create_key(
        &app,
        &t,
        json!({ "name": "pk", "type": "publishable", "scopes": ["full_access"] }),
    );
    let (_, fenced) = create_key(
        &app,
        &t,
        json!({ "name": "ip", "scopes": ["full_access"], "allowed_ips": ["198.51.100.0/24"] }),
    );
    let (_, broke) = create_key(
        &app,
        &t,
        json!({ "name": "no credits", "credits": {"remaining": 0} }),
    );
    let (revoked_id, revoked) = create_key(
        &app,
        &t,
        json!({ "name": "revoked", "scopes": ["full_access"] }),
    );
    send(app.authed(
        "DELETE",
        &format!("/api/v1/api-keys/{revoked_id}"),
        &t.access,
    ));
    let unknown = gatehouse::keys::ApiKey::generate("gate", gatehouse::keys::KeyType::Secret);
    assert!(publishable.starts_with("gate_pk_"));

    // (key, verify body extras, forward-auth method + uri, own-API method, expected code per channel)
    let v = |key: &str, extra: Value| {
        let mut body = json!({ "key": key });
        for (k, val) in extra.as_object().unwrap() {
            body[k] = val.clone();
        }
        code_of(&verify(&app, body)).to_string()
    };

    // No credential.
    check(&app, None, "GET", "/").assert_error(401, "missing_authorization");
    own_api(&app, None, "GET").assert_error(401, "missing_authorization");
    assert_eq!(v("", json!({})), "malformed_key");

    // One altered character: the checksum fails, no lookup needed.
    assert_eq!(v(&altered(&plain), json!({})), "malformed_key");
    check(&app, Some(&altered(&plain)), "GET", "/").assert_error(401, "malformed_key");
    own_api(&app, Some(&altered(&reader)), "GET").assert_error(401, "malformed_key");

    // Well-formed but unknown; revoked.
    for key in [unknown.expose(), revoked.as_str()] {
        assert_eq!(v(key, json!({})), "invalid_key");
        check(&app, Some(key), "GET", "/").assert_error(401, "invalid_key");
        own_api(&app, Some(key), "GET").assert_error(401, "invalid_key");
    }

    // A publishable key on POST.
    assert_eq!(
        v(&publishable, json!({"method": "POST"})),
        "insufficient_scope"
    );
    assert_eq!(v(&publishable, json!({"method": "GET"})), "valid");
    check(&app, Some(&publishable), "POST", "/orders").assert_error(403, "insufficient_scope");
    assert_eq!(
        check(&app, Some(&publishable), "GET", "/orders").status,
        200
    );
    own_api(&app, Some(&publishable), "POST").assert_error(403, "insufficient_scope");

    // A missing scope; full_access passes every scope check.
    assert_eq!(
        v(&plain, json!({"scopes": ["orders:write"]})),
        "insufficient_scope"
    );
    assert_eq!(v(&reader, json!({"scopes": ["keys:read"]})), "valid");
    assert_eq!(
        v(&reader, json!({"scopes": ["keys:read", "orders:write"]})),
        "insufficient_scope"
    );
    assert_eq!(
        v(&full, json!({"scopes": ["orders:write", "analytics:read"]})),
        "valid"
    );
    check(&app, Some(&plain), "GET", "/orders/7").assert_error(403, "insufficient_scope");
    assert_eq!(
        check(&app, Some(&plain), "GET", "/ordersx").status,
        200,
        "no rule matches"
    );
    let ok = check(&app, Some(&full), "DELETE", "/orders/7?x=1");
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("x-gatehouse-scopes"), Some("full_access"));
    assert!(ok.header("x-gatehouse-key-id").unwrap().starts_with("key_"));
    assert!(ok
        .header("x-gatehouse-project-id")
        .unwrap()
        .starts_with("prj_"));
    assert_eq!(
        send(app.authed("GET", "/api/v1/api-keys", &reader)).status,
        200,
        "keys:read lists keys"
    );
    send(app.authed("GET", "/api/v1/api-keys", &plain)).assert_error(403, "insufficient_scope");
    send(app.authed("GET", "/api/v1/usage", &reader)).assert_error(403, "insufficient_scope");

    // allowed_ips: the verify request's ip, the client address for the others.
    assert_eq!(v(&fenced, json!({})), "forbidden_ip", "no ip given");
    assert_eq!(v(&fenced, json!({"ip": "203.0.113.5"})), "forbidden_ip");
    assert_eq!(v(&fenced, json!({"ip": "198.51.100.77"})), "valid");
    check(&app, Some(&fenced), "GET", "/").assert_error(403, "forbidden_ip");
    own_api(&app, Some(&fenced), "GET").assert_error(403, "forbidden_ip");

    // Credits at zero.
    assert_eq!(v(&broke, json!({})), "usage_exceeded");
    check(&app, Some(&broke), "GET", "/").assert_error(429, "usage_exceeded");
    assert_eq!(
        v(&broke, json!({"cost": 0})),
        "valid",
        "cost 0 never fails on credits"
    );

    // The answer of a valid verification.
    let ok = verify(&app, json!({ "key": reader, "scopes": ["keys:read"] }));
    for field in [
        "key_id",
        "project_id",
        "name",
        "type",
        "environment",
        "scopes",
        "metadata",
        "expires_at",
        "owner_id",
        "credits",
        "ratelimit",
    ] {
        assert!(ok.get(field).is_some(), "{field} in {ok}");
    }
    assert_eq!(ok["ratelimit"]["limit"], 100);

    // Malformed request bodies are 422.
    for body in [
        json!({}),
        json!({"key": 1}),
        json!({"key": "x", "ip": "nope"}),
        json!({"key": "x", "cost": -1}),
        json!({"key": "x", "method": "G E T"}),
    ] {
        app.post_json("/api/v1/keys/verify", body)
            .assert_error(422, "validation_error");
    }
}

#[test]
fn expiry_is_checked_to_the_second() {
    let app = spawn_app();
    let t = app.login("owner@acme.test");
    let (id, key) = create_key(&app, &t, json!({ "name": "short" }));
    let expires = app.clock.now() + 60;
    let soon = time::OffsetDateTime::from_unix_timestamp(expires).unwrap();
    let soon = soon
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let res = send_body(
        app.authed("PATCH", &format!("/api/v1/api-keys/{id}"), &t.access)
            .set("Content-Type", "application/json"),
        &json!({ "expires_at": soon }).to_string(),
    );
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(code_of(&verify(&app, json!({ "key": key }))), "valid");
    // To two seconds before it expires: the clock goes on in real time
    // meanwhile, so a narrower window would depend on the machine's speed.
    let last_seconds = (expires - 2) * 1000 - app.clock.now_ms();
    app.clock
        .advance(Duration::from_millis(last_seconds.try_into().unwrap()));
    assert_eq!(
        code_of(&verify(&app, json!({ "key": key }))),
        "valid",
        "valid in its last seconds"
    );
    app.clock.advance(Duration::from_secs(3));
    assert_eq!(code_of(&verify(&app, json!({ "key": key }))), "invalid_key");
    check(&app, Some(&key), "GET", "/").assert_error(401, "invalid_key");
    own_api(&app, Some(&key), "GET").assert_error(401, "invalid_key");
    let listed = send(app.authed("GET", "/api/v1/api-keys", &t.access)).json();
    assert_eq!(
        listed["pagination"]["total"], 0,
        "expired keys are inactive"
    );
    let all = send(app.authed("GET", "/api/v1/api-keys?include_inactive=true", &t.access)).json();
    assert_eq!(all["items"][0]["is_active"], false);
}

#[test]
fn rate_limits_with_headers_before_and_after() {
    let app = spawn_app();
    let t = app.login("owner@acme.test");
    let (_, key) = create_key(
        &app,
        &t,
        json!({ "name": "tight", "scopes": ["keys:read"], "rate_limit": {"limit": 3, "window_secs": 60} }),
    );
    let first = check(&app, Some(&key), "GET", "/");
    assert_eq!(first.status, 200);
    assert_eq!(
        first.header("ratelimit-policy"),
        Some("\"default\";q=3;w=60")
    );
    let rl = first.header("ratelimit").unwrap().to_string();
    assert!(rl.starts_with("\"default\";r=2;t="), "{rl}");
    let second = verify(&app, json!({ "key": key }));
    assert_eq!(second["ratelimit"]["remaining"], 1);
    let own = send(app.authed("GET", "/api/v1/api-keys", &key));
    assert_eq!(own.status, 200, "own-API calls count too");
    assert!(own
        .header("ratelimit")
        .unwrap()
        .starts_with("\"default\";r=0;"));

    let refused = check(&app, Some(&key), "GET", "/");
    refused.assert_error(429, "rate_limited");
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    let t_field: u64 = refused
        .header("ratelimit")
        .unwrap()
        .rsplit("t=")
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        retry >= 1 && retry >= t_field,
        "Retry-After {retry} >= t {t_field}"
    );
    assert!(refused.header("ratelimit").unwrap().contains("r=0"));
    let v = verify(&app, json!({ "key": key }));
    assert_eq!(v["code"], "rate_limited");
    assert!(v["retry_after_secs"].as_u64().unwrap() >= 1);
    send(app.authed("GET", "/api/v1/api-keys", &key)).assert_error(429, "rate_limited");

    // A refusal before the rate-limit step does not count against the window.
    let (_, other) = create_key(
        &app,
        &t,
        json!({ "name": "scoped", "rate_limit": {"limit": 2, "window_secs": 60} }),
    );
    for _ in 0..5 {
        assert_eq!(
            code_of(&verify(
                &app,
                json!({ "key": other, "scopes": ["keys:read"] })
            )),
            "insufficient_scope"
        );
    }
    assert_eq!(code_of(&verify(&app, json!({ "key": other }))), "valid");
    assert_eq!(code_of(&verify(&app, json!({ "key": other }))), "valid");
    assert_eq!(
        code_of(&verify(&app, json!({ "key": other }))),
        "rate_limited"
    );
}

#[test]
fn revocation_is_immediate_under_load() {
    let app = Arc::new(spawn_app());
    let t = app.login("owner@acme.test");
    let (id, key) = create_key(
        &app,
        &t,
        json!({ "name": "busy", "rate_limit": {"limit": 1000000, "window_secs": 60} }),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let results: Arc<Mutex<Vec<(Instant, bool)>>> = Arc::default();
    let workers: Vec<_> = (0..6)
        .map(|_| {
            let (app, key, stop, results) =
                (app.clone(), key.clone(), stop.clone(), results.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let started = Instant::now();
                    let valid = verify(&app, json!({ "key": key }))["valid"] == true;
                    results.lock().unwrap().push((started, valid));
                }
            })
        })
        .collect();
    let counted = |which: &dyn Fn(&(Instant, bool)) -> bool| {
        results.lock().unwrap().iter().filter(|r| which(r)).count()
    };
    wait_until("verifications under way", Duration::from_secs(30), || {
        counted(&|(_, valid)| *valid) > 10
    });
    let res = send(app.authed("DELETE", &format!("/api/v1/api-keys/{id}"), &t.access));
    let revoked_at = Instant::now();
    assert_eq!(res.status, 200);
    wait_until(
        "verifications started after the revocation",
        Duration::from_secs(30),
        || counted(&|(started, _)| *started > revoked_at) > 10,
    );
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().unwrap();
    }
    let results = results.lock().unwrap();
    let before = results
        .iter()
        .filter(|(s, v)| *s < revoked_at && *v)
        .count();
    let after: Vec<_> = results.iter().filter(|(s, _)| *s > revoked_at).collect();
    assert!(
        before > 10,
        "verifications succeeded before the revocation ({before})"
    );
    assert!(
        after.len() > 10,
        "verifications ran after it ({})",
        after.len()
    );
    assert!(
        after.iter().all(|(_, valid)| !valid),
        "a verification started after DELETE returned succeeded"
    );
}

#[test]
fn rotation_with_and_without_grace() {
    let app = spawn_app();
    let t = app.login("owner@acme.test");
    let (id, old) = create_key(
        &app,
        &t,
        json!({ "name": "rotating", "scopes": ["keys:read"], "owner_id": "cus_1", "metadata": {"a": 1}, "expires_in_days": 30 }),
    );
    assert_eq!(code_of(&verify(&app, json!({ "key": old }))), "valid");
    let res = send_body(
        app.authed("POST", &format!("/api/v1/api-keys/{id}/rotate"), &t.access)
            .set("Content-Type", "application/json"),
        r#"{"expire_previous_in_secs": 60}"#,
    );
    assert_eq!(res.status, 201, "{}", res.body);
    let body = res.json();
    let new = body["plaintext_key"].as_str().unwrap().to_string();
    assert_ne!(body["id"], id.as_str());
    assert_eq!(body["name"], "rotating");
    assert_eq!(body["scopes"], json!(["keys:read"]));
    assert_eq!(body["owner_id"], "cus_1");
    assert_eq!(body["metadata"], json!({"a": 1}));
    assert!(
        body["expires_at"].is_string(),
        "the lifetime is carried over"
    );
    assert_eq!(
        code_of(&verify(&app, json!({ "key": new }))),
        "valid",
        "the new key works at once"
    );
    assert_eq!(
        code_of(&verify(&app, json!({ "key": old }))),
        "valid",
        "the old one during the grace"
    );
    app.clock.advance(Duration::from_secs(61));
    assert_eq!(
        code_of(&verify(&app, json!({ "key": old }))),
        "invalid_key",
        "and not after"
    );
    assert_eq!(code_of(&verify(&app, json!({ "key": new }))), "valid");

    // Grace 0 (the default): the old key fails at once.
    let new_id = body["id"].as_str().unwrap();
    let res = send(app.authed(
        "POST",
        &format!("/api/v1/api-keys/{new_id}/rotate"),
        &t.access,
    ));
    assert_eq!(res.status, 201, "{}", res.body);
    let newest = res.json()["plaintext_key"].as_str().unwrap().to_string();
    assert_eq!(code_of(&verify(&app, json!({ "key": new }))), "invalid_key");
    assert_eq!(code_of(&verify(&app, json!({ "key": newest }))), "valid");
    for bad in [
        r#"{"expire_previous_in_secs": 604801}"#,
        r#"{"expire_previous_in_secs": -1}"#,
        "{oops",
    ] {
        send_body(
            app.authed(
                "POST",
                &format!("/api/v1/api-keys/{new_id}/rotate"),
                &t.access,
            )
            .set("Content-Type", "application/json"),
            bad,
        )
        .assert_error(422, "validation_error");
    }
    send(app.authed(
        "POST",
        &format!("/api/v1/api-keys/{new_id}/rotate"),
        &t.access,
    ))
    .assert_error(409, "conflict");
    assert!(app.query_i64("SELECT count(*) FROM audit_events WHERE action = 'key.rotated'") == 2);
}

#[test]
fn credits_are_never_overspent_and_refill_at_the_boundary() {
    let root = tempfile::tempdir().unwrap();
    let (key, id, t);
    {
        let app = Arc::new(spawn_app_at(root.path(), |_| {}));
        t = app.login("owner@acme.test");
        let created = create_key(
            &app,
            &t,
            json!({ "name": "metered", "rate_limit": {"limit": 100000, "window_secs": 60}, "credits": {"remaining": 10} }),
        );
        id = created.0;
        key = created.1;
        let valid = Arc::new(Mutex::new(0));
        let threads: Vec<_> = (0..10)
            .map(|_| {
                let (app, key, valid) = (app.clone(), key.clone(), valid.clone());
                std::thread::spawn(move || {
                    for _ in 0..10 {
                        if verify(&app, json!({ "key": key }))["valid"] == true {
                            *valid.lock().unwrap() += 1;
                        }
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        assert_eq!(*valid.lock().unwrap(), 10, "exactly the balance is spent");
        let shown = send(app.authed("GET", &format!("/api/v1/api-keys/{id}"), &t.access)).json();
        assert_eq!(shown["credits"]["remaining"], 0);
        // A balance with a daily refill, set by PATCH.
        let res = send_body(
            app.authed("PATCH", &format!("/api/v1/api-keys/{id}"), &t.access)
                .set("Content-Type", "application/json"),
            r#"{"credits": {"remaining": 1, "refill": {"amount": 5, "interval": "daily"}}}"#,
        );
        assert_eq!(res.status, 200, "{}", res.body);
        assert_eq!(code_of(&verify(&app, json!({ "key": key }))), "valid");
        assert_eq!(
            code_of(&verify(&app, json!({ "key": key }))),
            "usage_exceeded"
        );
    }
    // Move the last refill back a day, as if the key had last been used yesterday.
    assert_eq!(
        query_i64_at(root.path(), "SELECT credits_remaining FROM api_keys"),
        0,
        "flushed at stop"
    );
    execute_sql_at(
        root.path(),
        "UPDATE api_keys SET credits_period_start = credits_period_start - 86400",
    );
    let app = spawn_app_at(root.path(), |_| {});
    let v = verify(&app, json!({ "key": key }));
    assert_eq!(code_of(&v), "valid", "a new day refills the balance");
    assert_eq!(v["credits"]["remaining"], 4);
}

#[test]
fn usage_and_last_used_survive_a_graceful_restart() {
    let root = tempfile::tempdir().unwrap();
    let n = 37;
    let (key, id, t) = {
        let app = spawn_app_at(root.path(), |c| c.usage.flush_interval_secs = 3600);
        let t = app.login("owner@acme.test");
        let (id, key) = create_key(
            &app,
            &t,
            json!({ "name": "counted", "rate_limit": {"limit": 1000, "window_secs": 60} }),
        );
        for _ in 0..n {
            assert_eq!(check(&app, Some(&key), "GET", "/").status, 200);
        }
        assert_eq!(
            code_of(&verify(
                &app,
                json!({ "key": key, "method": "GET", "scopes": ["keys:read"] })
            )),
            "insufficient_scope"
        );
        // Nothing written yet: the flush interval is an hour.
        assert_eq!(app.query_i64("SELECT count(*) FROM usage_hourly"), 0);
        (key, id, t)
    }; // graceful stop
    let app = spawn_app_at(root.path(), |_| {});
    assert_eq!(
        app.query_i64("SELECT CAST(coalesce(sum(valid), 0) AS BIGINT) FROM usage_hourly"),
        n
    );
    assert_eq!(
        app.query_i64("SELECT CAST(coalesce(sum(refused), 0) AS BIGINT) FROM usage_hourly"),
        1
    );
    // The session from before the restart is still good.
    let shown = send(app.authed("GET", &format!("/api/v1/api-keys/{id}"), &t.access)).json();
    assert!(shown["last_used_at"].is_string(), "{shown}");
    let usage = send(app.authed("GET", "/api/v1/usage", &t.access));
    assert_eq!(usage.status, 200, "{}", usage.body);
    let usage = usage.json();
    assert_eq!(usage["totals"]["valid"], n);
    assert_eq!(usage["totals"]["refused"], 1);
    let buckets = usage["series"].as_array().unwrap().len();
    assert!(
        (24..=25).contains(&buckets),
        "hourly buckets covering the last 24 hours: {buckets}"
    );
    let _ = key;
}

#[test]
fn usage_report_filters_and_validates() {
    let app = spawn_app();
    let t = app.login("owner@acme.test");
    let (a_id, a) = create_key(
        &app,
        &t,
        json!({ "name": "a", "scopes": ["analytics:read"] }),
    );
    let (_, b) = create_key(&app, &t, json!({ "name": "b" }));
    for _ in 0..3 {
        verify(&app, json!({ "key": a }));
    }
    verify(&app, json!({ "key": b }));
    verify(&app, json!({ "key": b, "scopes": ["keys:read"] }));
    let all = send(app.authed("GET", "/api/v1/usage?granularity=day", &t.access)).json();
    assert_eq!(
        all["totals"],
        json!({"valid": 4, "invalid": 0, "rate_limited": 0, "refused": 1})
    );
    let only_a = send(app.authed("GET", &format!("/api/v1/usage?key_id={a_id}"), &t.access)).json();
    assert_eq!(only_a["totals"]["valid"], 3);
    // analytics:read lets a key read usage.
    assert_eq!(
        send(app.authed("GET", "/api/v1/usage", &a)).json()["totals"]["valid"],
        4
    );
    send(app.authed("GET", "/api/v1/usage?key_id=key_nope", &t.access))
        .assert_error(404, "not_found");
    for bad in [
        "granularity=week",
        "from=yesterday",
        "from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
        "from=2000-01-01T00:00:00Z",
    ] {
        send(app.authed("GET", &format!("/api/v1/usage?{bad}"), &t.access))
            .assert_error(422, "validation_error");
    }
    // The audit log shows key events and the sign-in, newest first.
    let log = send(app.authed("GET", "/api/v1/audit-log?limit=100", &t.access)).json();
    let actions: Vec<&str> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions.first(), Some(&"key.created"));
    assert!(actions.contains(&"login.succeeded"), "{actions:?}");
    assert_eq!(
        log["items"][0]["actor"],
        json!({"type": "user", "id": t.user_id})
    );
    assert_eq!(
        send(app.authed("GET", "/api/v1/audit-log", &a)).status,
        200,
        "analytics:read reads the audit log"
    );
    send(app.authed("GET", "/api/v1/audit-log", &b)).assert_error(403, "insufficient_scope");

    // Filters narrow the log on the server, its total too.
    let filtered = |query: &str| {
        let page = send(app.authed("GET", &format!("/api/v1/audit-log?{query}"), &t.access));
        assert_eq!(page.status, 200, "{query}: {}", page.body);
        let page = page.json();
        let items = page["items"].as_array().unwrap().clone();
        assert_eq!(page["pagination"]["total"], items.len(), "{query}");
        items
    };
    let sign_ins = filtered("action=login.succeeded");
    assert_eq!(sign_ins.len(), 1);
    assert_eq!(sign_ins[0]["actor"]["id"], t.user_id);
    let about_a = filtered(&format!("target={a_id}"));
    assert!(!about_a.is_empty());
    assert!(
        about_a.iter().all(|i| i["target"] == a_id.as_str()),
        "{about_a:?}"
    );
    let by_owner = filtered(&format!(
        "actor_type=user&actor_id={}&action=key.created",
        t.user_id
    ));
    assert_eq!(by_owner.len(), 2, "two keys created by the owner");
    assert!(filtered("from=2000-01-01T00:00:00Z&to=2000-01-02T00:00:00Z").is_empty());
    assert_eq!(
        filtered("from=2000-01-01T00:00:00Z").len(),
        log["pagination"]["total"].as_u64().unwrap() as usize
    );
    for bad in [
        "actor_type=robot",
        "from=yesterday",
        "from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
        "action=",
    ] {
        send(app.authed("GET", &format!("/api/v1/audit-log?{bad}"), &t.access))
            .assert_error(422, "validation_error");
    }
}

#[test]
fn list_filters_and_patch_rules() {
    let app = spawn_app();
    let t = app.login("owner@acme.test");
    for i in 0..3 {
        create_key(
            &app,
            &t,
            json!({ "name": format!("k{i}"), "owner_id": if i == 0 { "cus_a" } else { "cus_b" } }),
        );
    }
    let (id, _) = create_key(&app, &t, json!({ "name": "gone" }));
    send(app.authed("DELETE", &format!("/api/v1/api-keys/{id}"), &t.access));
    let page =
        |q: &str| send(app.authed("GET", &format!("/api/v1/api-keys?{q}"), &t.access)).json();
    assert_eq!(page("")["pagination"]["total"], 3);
    assert_eq!(page("include_inactive=true")["pagination"]["total"], 4);
    assert_eq!(page("owner_id=cus_b")["pagination"]["total"], 2);
    assert_eq!(page("limit=2&page=2")["items"].as_array().unwrap().len(), 1);
    assert_eq!(page("limit=2")["pagination"]["pages"], 2);
    send(app.authed("GET", "/api/v1/api-keys?limit=500", &t.access))
        .assert_error(422, "validation_error");
    send(app.authed("GET", "/api/v1/api-keys/key_missing", &t.access))
        .assert_error(404, "not_found");

    let patch = |body: &str| {
        send_body(
            app.authed("PATCH", &format!("/api/v1/api-keys/{id}"), &t.access)
                .set("Content-Type", "application/json"),
            body,
        )
    };
    let res = patch(
        r#"{"name": "renamed", "owner_id": null, "metadata": {"x": true}, "rate_limit": {"limit": 7, "window_secs": 9}}"#,
    );
    assert_eq!(res.status, 200, "{}", res.body);
    let v = res.json();
    assert_eq!(
        (
            v["name"].clone(),
            v["owner_id"].clone(),
            v["rate_limit"]["limit"].clone()
        ),
        (json!("renamed"), Value::Null, json!(7))
    );
    patch(r#"{"scopes": ["no-such-scope"]}"#).assert_error(422, "validation_error");
    patch(r#"{"expires_at": "2001-01-01T00:00:00Z"}"#).assert_error(422, "validation_error");
    assert!(app.query_i64("SELECT count(*) FROM audit_events WHERE action = 'key.updated'") >= 1);
    assert!(app.query_i64("SELECT count(*) FROM audit_events WHERE action = 'key.revoked'") >= 1);
}

#[test]
fn leaked_keys_are_revoked_without_revealing_projects() {
    let app = spawn_app();
    let t = app.login("owner@acme.test");
    let receiver = crate::webhooks::Receiver::start(vec![200]);
    let (hook_id, _) = crate::webhooks::add_webhook(&app, &t, &receiver.url, &["key.leaked"]);
    let (real_id, real) = create_key(&app, &t, json!({ "name": "pushed to github" }));
    let fake = gatehouse::keys::ApiKey::generate("gate", gatehouse::keys::KeyType::Secret);
    // Every report below falls in one minute (the per-address count).
    app.early_in_a_minute();
    let res = send_body(
        app.request("POST", "/api/v1/keys/leaked").set("Content-Type", "application/json"),
        &json!([
            { "token": real, "url": "https://github.com/acme/app/blob/main/.env", "source": "scanner" },
            { "token": fake.expose() },
            { "token": "not even a key" },
        ])
        .to_string(),
    );
    assert_eq!(res.status, 200, "{}", res.body);
    let body = res.json();
    assert_eq!(
        body[0],
        json!({ "token_prefix": &real[..16], "result": "revoked" })
    );
    assert_eq!(body[1]["result"], "not_found");
    assert_eq!(body[2]["result"], "not_found");
    assert!(
        !res.body.contains("prj_") && !res.body.contains("key_"),
        "no project or key ids revealed"
    );
    assert_eq!(
        code_of(&verify(&app, json!({ "key": real }))),
        "invalid_key"
    );
    let again = send_body(
        app.request("POST", "/api/v1/keys/leaked")
            .set("Content-Type", "application/json"),
        &json!([{ "token": real }]).to_string(),
    );
    assert_eq!(again.json()[0]["result"], "already_inactive");
    assert_eq!(
        app.query_i64("SELECT count(*) FROM audit_events WHERE action = 'key.leaked'"),
        1
    );
    assert_eq!(
        app.query_i64(&format!(
            "SELECT count(*) FROM audit_events WHERE action = 'key.leaked' AND target = '{real_id}'"
        )),
        1,
        "the audit entry names the leaked key"
    );
    // The key.leaked event, once, with the key's metadata and the report.
    let got = receiver.wait_for(1, Duration::from_secs(10));
    let event: Value = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!(event["type"], "key.leaked", "{event}");
    assert_eq!(event["data"]["id"], real_id.as_str());
    assert_eq!(event["data"]["name"], "pushed to github");
    assert_eq!(event["data"]["is_active"], false);
    assert_eq!(
        event["data"]["report"]["url"],
        "https://github.com/acme/app/blob/main/.env"
    );
    assert_eq!(event["data"]["report"]["source"], "scanner");
    assert!(
        !got[0].body.contains(&real),
        "the event never holds the key"
    );
    let deliveries = send(app.authed(
        "GET",
        &format!("/api/v1/webhooks/{hook_id}/deliveries"),
        &t.access,
    ))
    .json();
    assert_eq!(
        deliveries["items"].as_array().unwrap().len(),
        1,
        "the report of an inactive key announces nothing: {deliveries}"
    );
    // Reports are rate limited per address (10 a minute; two were made):
    // eight more pass, then each is 429 `rate_limited` with Retry-After.
    let answers: Vec<Resp> = (0..12)
        .map(|_| {
            send_body(
                app.request("POST", "/api/v1/keys/leaked")
                    .set("Content-Type", "application/json"),
                "[]",
            )
        })
        .collect();
    let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [[200; 8].as_slice(), &[429; 4]].concat(),
        "{statuses:?}"
    );
    for res in &answers[8..] {
        res.assert_error(429, "rate_limited");
        let retry: u64 = res
            .header("retry-after")
            .expect("Retry-After")
            .parse()
            .unwrap();
        assert!((1..=120).contains(&retry), "{retry}");
    }
}

#[test]
fn verify_answers_are_valid_json_whatever_the_key_holds() {
    let app = spawn_app();
    let t = app.login("owner@acme.test");
    let (id, key) = create_key(
        &app,
        &t,
        json!({ "name": "Ünïcode \"quoted\" \\ name", "owner_id": "cus_\"x\"", "metadata": {"nested": {"a": [1, "two", null]}, "q": "\"</script>"}, "credits": {"remaining": 3} }),
    );
    let v = verify(&app, json!({ "key": key }));
    assert_eq!(v["valid"], true);
    assert_eq!(v["key_id"], id.as_str());
    assert_eq!(v["name"], "Ünïcode \"quoted\" \\ name");
    assert_eq!(v["owner_id"], "cus_\"x\"");
    assert_eq!(v["metadata"]["nested"]["a"], json!([1, "two", null]));
    assert_eq!(v["credits"], json!({"remaining": 2}));
    assert_eq!(v["type"], "secret");
    assert_eq!(v["ratelimit"]["remaining"], 99);
    // An edit shows in the next answer.
    let res = send_body(
        app.authed("PATCH", &format!("/api/v1/api-keys/{id}"), &t.access)
            .set("Content-Type", "application/json"),
        r#"{"name": "renamed", "scopes": ["keys:read"]}"#,
    );
    assert_eq!(res.status, 200);
    let v = verify(&app, json!({ "key": key }));
    assert_eq!(
        (v["name"].clone(), v["scopes"].clone()),
        (json!("renamed"), json!(["keys:read"]))
    );
    let fa = check(&app, Some(&key), "GET", "/");
    assert_eq!(fa.header("x-gatehouse-scopes"), Some("keys:read"));
    assert_eq!(
        fa.header("ratelimit-policy"),
        Some("\"default\";q=100;w=60")
    );
}

/// Leak reports spread over the addresses of one IPv6 /64 count as one
/// client (SPEC section 6); another /64 is another client.
#[test]
fn leak_reports_count_an_ipv6_client_by_its_64_network() {
    let app = spawn_app_with(|c| c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()]);
    let t = app.login("leaks@acme.test");
    let (_, key) = create_key(&app, &t, json!({ "name": "reported late" }));
    let report = |client: &str, body: &Value| {
        send_body(
            app.request("POST", "/api/v1/keys/leaked")
                .set("Content-Type", "application/json")
                .set("X-Forwarded-For", client),
            &body.to_string(),
        )
    };
    app.early_in_a_minute();
    let statuses: Vec<u16> = crate::auth::one_ipv6_network(11)
        .iter()
        .map(|client| report(client, &json!([])).status)
        .collect();
    assert_eq!(statuses[..10], [200; 10], "{statuses:?}");
    assert_eq!(statuses[10], 429, "{statuses:?}");
    // Refused: the key is not revoked.
    let res = report("2001:db8::ffff", &json!([{ "token": key }]));
    res.assert_error(429, "rate_limited");
    assert!(res.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(code_of(&verify(&app, json!({ "key": key }))), "valid");
    // Another /64 is another client: its report revokes the key.
    let res = report("2001:db8:0:1::1", &json!([{ "token": key }]));
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.json()[0]["result"], "revoked", "{}", res.body);
    assert_eq!(code_of(&verify(&app, json!({ "key": key }))), "invalid_key");
}
