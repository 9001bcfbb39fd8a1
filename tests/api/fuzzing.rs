//! What schemathesis (scripts/fuzz-api.sh) found where the server and its
//! OpenAPI document disagreed, fixed, and kept fixed here.

use serde_json::json;

use crate::helpers::{send, send_body, spawn_app, TestApp};

fn post(app: &TestApp, path: &str, token: Option<&str>, body: &str) -> crate::helpers::Resp {
    let mut req = app
        .request("POST", path)
        .set("Content-Type", "application/json");
    if let Some(token) = token {
        req = req.set("Authorization", &format!("Bearer {token}"));
    }
    send_body(req, body)
}

/// serde reads a struct from an array of its fields in order; the server
/// took `[null, null]` as an empty PATCH and `["a@b.test"]` as an email.
#[test]
fn bodies_must_be_json_objects_not_arrays_of_fields() {
    let app = spawn_app();
    let tokens = app.login("arrays@acme.test");
    let t = tokens.access.as_str();
    let created = post(&app, "/api/v1/api-keys", Some(t), r#"{"name": "k"}"#);
    assert_eq!(created.status, 201, "{}", created.body);
    let key = created.json();
    let id = key["id"].as_str().unwrap();
    let plaintext = key["plaintext_key"].as_str().unwrap();

    let key_path = format!("/api/v1/api-keys/{id}");
    let rotate_path = format!("/api/v1/api-keys/{id}/rotate");
    let verify_body = format!(r#"["{plaintext}"]"#);
    let leak_body = format!(r#"[["{plaintext}"]]"#);
    let cases: [(&str, &str, &str); 12] = [
        ("POST", "/api/v1/auth/send-code", r#"["x@acme.test"]"#),
        (
            "POST",
            "/api/v1/auth/verify-code",
            r#"["x@acme.test", "123456"]"#,
        ),
        ("POST", "/api/v1/auth/refresh-token", r#"["token"]"#),
        ("POST", "/api/v1/auth/revoke-token", r#"["token"]"#),
        ("POST", "/api/v1/projects", r#"["Acme"]"#),
        ("POST", "/api/v1/members", r#"["bob@acme.test", "member"]"#),
        ("POST", "/api/v1/api-keys", r#"["by position"]"#),
        ("PATCH", &key_path, "[null, null]"),
        ("POST", &rotate_path, "[5]"),
        (
            "POST",
            "/api/v1/webhooks",
            r#"["http://127.0.0.1:9/h", ["key.created"]]"#,
        ),
        ("POST", "/api/v1/keys/verify", &verify_body),
        ("POST", "/api/v1/keys/leaked", &leak_body),
    ];
    for (method, path, body) in cases {
        let res = send_body(
            app.authed(method, path, t)
                .set("Content-Type", "application/json"),
            body,
        );
        let err = res.assert_error(422, "validation_error");
        assert!(
            err["error"]["message"]
                .as_str()
                .unwrap()
                .contains("must be a JSON object"),
            "{method} {path}: {err}"
        );
    }
    // Nothing changed: the key is unrotated, unrenamed and still verifies.
    let after = send(app.authed("GET", &format!("/api/v1/api-keys/{id}"), t)).json();
    assert_eq!(after["name"], "k");
    assert_eq!(after["is_active"], true);
    assert_eq!(
        app.query_i64("SELECT COUNT(*) FROM api_keys"),
        1,
        "no rotation happened"
    );
    assert_eq!(app.query_i64("SELECT COUNT(*) FROM projects"), 1);
    let verdict = post(
        &app,
        "/api/v1/keys/verify",
        None,
        &json!({ "key": plaintext }).to_string(),
    );
    assert_eq!(verdict.json()["valid"], true, "{}", verdict.body);
}

/// JSON Schema counts `5.0` as an integer, so the document's integer
/// fields must take it; the server answered 422 "expected i64".
#[test]
fn whole_numbers_written_with_a_fraction_are_integers() {
    let app = spawn_app();
    let t = app.login("floats@acme.test").access;
    let created = post(
        &app,
        "/api/v1/api-keys",
        Some(&t),
        r#"{"name": "f", "expires_in_days": 30.0, "rate_limit": {"limit": 5.0, "window_secs": 60.0},
            "credits": {"remaining": 10.0, "refill": {"amount": 10.0, "interval": "daily"}}}"#,
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let key = created.json();
    assert_eq!(key["rate_limit"], json!({"limit": 5, "window_secs": 60}));
    assert_eq!(key["credits"]["remaining"], 10);
    let plaintext = key["plaintext_key"].as_str().unwrap();

    let verdict = post(
        &app,
        "/api/v1/keys/verify",
        None,
        &format!(r#"{{"key": "{plaintext}", "cost": 3.0}}"#),
    );
    let verdict = verdict.json();
    assert_eq!(verdict["valid"], true, "{verdict}");
    assert_eq!(verdict["credits"]["remaining"], 7);

    // A real fraction is still refused, naming the problem.
    let res = post(
        &app,
        "/api/v1/keys/verify",
        None,
        &format!(r#"{{"key": "{plaintext}", "cost": 1.5}}"#),
    );
    let err = res.assert_error(422, "validation_error");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("integer"),
        "{err}"
    );
    let res = post(
        &app,
        "/api/v1/api-keys",
        Some(&t),
        r#"{"name": "g", "rate_limit": {"limit": 5.5, "window_secs": 60}}"#,
    );
    res.assert_error(422, "validation_error");

    let id = key["id"].as_str().unwrap();
    let rotated = post(
        &app,
        &format!("/api/v1/api-keys/{id}/rotate"),
        Some(&t),
        r#"{"expire_previous_in_secs": 60.0}"#,
    );
    assert_eq!(rotated.status, 201, "{}", rotated.body);
}

/// The document says a code is at most 64 characters; the server counted
/// bytes, so 64 non-ASCII characters were "too long".
#[test]
fn a_login_code_is_limited_in_characters_not_bytes() {
    let app = spawn_app();
    let body = |code: &str| json!({"email": "codes@acme.test", "code": code}).to_string();
    let res = post(
        &app,
        "/api/v1/auth/verify-code",
        None,
        &body(&"é".repeat(64)),
    );
    res.assert_error(401, "invalid_code");
    let res = post(
        &app,
        "/api/v1/auth/verify-code",
        None,
        &body(&"é".repeat(65)),
    );
    res.assert_error(422, "validation_error");
}

/// `POST /auth/refresh` reads its form only when there is one: without a
/// body (and without a refresh cookie) it is still the documented 303.
#[test]
fn the_browser_refresh_form_is_optional() {
    let app = spawn_app();
    let res = send(app.request("POST", "/auth/refresh"));
    assert_eq!(res.status, 303, "{}", res.body);
    assert_eq!(res.header("location"), Some("/login?next=%2F"));
}
