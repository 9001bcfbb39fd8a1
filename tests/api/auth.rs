//! SPEC section 6: email-code login, tokens, cookies, CSRF, redirects.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{send, send_body, spawn_app, spawn_app_with, TestApp};

fn refresh(app: &TestApp, token: &str) -> crate::helpers::Resp {
    app.post_json(
        "/api/v1/auth/refresh-token",
        json!({ "refresh_token": token }),
    )
}

#[test]
fn full_flow_with_rotation_reuse_detection_and_revocation() {
    let app = spawn_app_with(|c| c.auth.send_code_interval_secs = 1);
    let email = "alice@acme.test";
    let sent = app.send_code(email);
    assert_eq!(sent.status, 202);
    assert_eq!(sent.json(), json!({ "status": "sent", "expires_in": 600 }));
    let code = app.code_from_mailbox(email);
    assert_eq!(code.len(), 6);
    // The pending code is stored as a hash only.
    assert_eq!(
        app.query_i64("SELECT count(*) FROM login_codes WHERE length(code_hash) = 32"),
        1
    );
    assert!(
        !app.table_contains("login_codes", &code),
        "the login code is stored in clear"
    );

    let res = app.verify(email, &code);
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.header("cache-control"), Some("no-store"));
    let body = res.json();
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["user"]["email"], email);
    let access = body["access_token"].as_str().unwrap().to_string();
    let refresh1 = body["refresh_token"].as_str().unwrap().to_string();
    assert!(access.len() >= 40 && refresh1.len() >= 40);

    // Only hashes at rest: neither the code nor the tokens are in the database.
    for secret in [&access, &refresh1] {
        assert!(!app.database_contains(secret));
    }
    assert_eq!(
        app.query_i64("SELECT count(*) FROM login_codes"),
        0,
        "the code is spent"
    );

    // /me with the access token: the user and the personal project.
    let me = send(app.authed("GET", "/api/v1/me", &access));
    assert_eq!(me.status, 200);
    let me = me.json();
    assert_eq!(me["user"]["email"], email);
    assert_eq!(me["memberships"][0]["role"], "owner");
    assert_eq!(me["memberships"][0]["project"]["plan"], "free");
    assert!(
        me.get("csrf_token").is_none(),
        "bearer sessions need no CSRF token"
    );

    // Refresh: a new pair; the new access token works.
    let res = refresh(&app, &refresh1);
    assert_eq!(res.status, 200, "{}", res.body);
    let refresh2 = res.json()["refresh_token"].as_str().unwrap().to_string();
    let access2 = res.json()["access_token"].as_str().unwrap().to_string();
    assert_ne!(refresh2, refresh1);
    assert_eq!(send(app.authed("GET", "/api/v1/me", &access2)).status, 200);

    // After the grace (10 s), the spent token is reuse: 401 token_reused,
    // and the whole family dies, including the newest refresh and access
    // tokens.
    app.clock.advance(Duration::from_secs(11));
    refresh(&app, &refresh1).assert_error(401, "token_reused");
    refresh(&app, &refresh2).assert_error(401, "invalid_token");
    send(app.authed("GET", "/api/v1/me", &access2)).assert_error(401, "invalid_token");
    assert_eq!(
        app.query_i64("SELECT count(*) FROM audit_events WHERE action = 'session.token_reused'"),
        1
    );

    // revoke-token kills the access token at once.
    let t = app_login_again(&app, email);
    assert_eq!(send(app.authed("GET", "/api/v1/me", &t.0)).status, 200);
    let res = app.post_json("/api/v1/auth/revoke-token", json!({ "refresh_token": t.1 }));
    assert_eq!(res.status, 200);
    assert_eq!(res.json(), json!({}));
    send(app.authed("GET", "/api/v1/me", &t.0)).assert_error(401, "invalid_token");
    refresh(&app, &t.1).assert_error(401, "invalid_token");
    // Unknown tokens are fine too.
    assert_eq!(
        app.post_json(
            "/api/v1/auth/revoke-token",
            json!({ "refresh_token": "nope" })
        )
        .status,
        200
    );
}

fn app_login_again(app: &TestApp, email: &str) -> (String, String) {
    // Past send_code_interval_secs (1 s).
    app.clock.advance(Duration::from_secs(2));
    let t = app.login(email);
    (t.access, t.refresh)
}

#[test]
fn the_parent_of_the_current_token_gets_a_grace_period() {
    let app = spawn_app(); // grace 10 s
    let t = app.login("tabs@acme.test");
    let r2 = refresh(&app, &t.refresh).json()["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    // A second tab presents the same parent within the grace: a fresh pair.
    let res = refresh(&app, &t.refresh);
    assert_eq!(res.status, 200, "{}", res.body);
    // The first tab's token still works...
    let r3 = refresh(&app, &r2);
    assert_eq!(r3.status, 200);
    // ...and now the original is a grandparent: reuse.
    refresh(&app, &t.refresh).assert_error(401, "token_reused");
}

#[test]
fn no_grace_when_it_is_zero() {
    let app = spawn_app_with(|c| c.auth.refresh_reuse_grace_secs = 0);
    let t = app.login("strict@acme.test");
    assert_eq!(refresh(&app, &t.refresh).status, 200);
    refresh(&app, &t.refresh).assert_error(401, "token_reused");
}

#[test]
fn every_code_failure_is_the_same_invalid_code() {
    let app = spawn_app_with(|c| {
        c.auth.send_code_interval_secs = 1;
        c.auth.code_ttl_secs = 60;
    });
    let email = "bob@acme.test";
    // Past the interval between two codes for one address.
    let next_code = || app.clock.advance(Duration::from_secs(2));
    let mut messages = Vec::new();

    // Five wrong codes burn it: the right one then fails.
    app.send_code(email);
    let code = app.code_from_mailbox(email);
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for _ in 0..5 {
        let res = app.verify(email, wrong);
        messages.push(res.assert_error(401, "invalid_code")["error"]["message"].clone());
    }
    let res = app.verify(email, &code);
    messages.push(res.assert_error(401, "invalid_code")["error"]["message"].clone());

    // A used code fails.
    next_code();
    app.send_code(email);
    let code = app.code_from_mailbox(email);
    assert_eq!(app.verify(email, &code).status, 200);
    let res = app.verify(email, &code);
    messages.push(res.assert_error(401, "invalid_code")["error"]["message"].clone());

    // An older code fails once a newer one was sent. Each send is
    // accepted and the newer code differs, so this branch always runs.
    let old = send_code_accepted(&app, email, None);
    let new = send_code_accepted(&app, email, Some(&old));
    let res = app.verify(email, &old);
    messages.push(res.assert_error(401, "invalid_code")["error"]["message"].clone());
    assert_eq!(app.verify(email, &new).status, 200);

    // An expired code fails.
    next_code();
    app.send_code(email);
    let code = app.code_from_mailbox(email);
    app.clock.advance(Duration::from_secs(61));
    let res = app.verify(email, &code);
    messages.push(res.assert_error(401, "invalid_code")["error"]["message"].clone());

    // An address that never asked for a code.
    let res = app.verify("nobody@acme.test", "123456");
    messages.push(res.assert_error(401, "invalid_code")["error"]["message"].clone());

    assert!(messages.iter().all(|m| *m == messages[0]), "{messages:?}");
    assert!(
        app.query_i64("SELECT count(*) FROM audit_events WHERE action = 'login.failed'") >= 7,
        "failures are audited"
    );
    assert!(
        app.query_i64("SELECT count(*) FROM audit_events WHERE action = 'login.succeeded'") >= 2
    );
}

/// Sends a code to `email` past the interval between codes (the test's
/// clock moves) and returns the code mailed, which must differ from
/// `previous` (a repeated code by chance is sent again).
fn send_code_accepted(app: &TestApp, email: &str, previous: Option<&str>) -> String {
    for _ in 0..5 {
        app.clock.advance(Duration::from_secs(2));
        let res = app.send_code(email);
        assert_eq!(res.status, 202, "{}", res.body);
        let code = app.code_from_mailbox(email);
        if Some(code.as_str()) != previous {
            return code;
        }
    }
    panic!("five codes in a row equal to the previous one");
}

#[test]
fn send_code_does_not_reveal_accounts_and_is_throttled() {
    let app = spawn_app_with(|c| c.auth.signup = gatehouse::config::Signup::Invite);
    app.block_on(app.state.store.bootstrap_user(
        gatehouse::types::Email::parse("known@acme.test").unwrap(),
        Some(("Acme".into(), None)),
        "free".into(),
    ))
    .unwrap()
    .unwrap();
    let known = app.send_code("known@acme.test");
    let unknown = app.send_code("stranger@acme.test");
    assert_eq!(known.status, 202);
    assert_eq!(
        (known.status, known.json()),
        (unknown.status, unknown.json())
    );
    let mailbox = app.get("/api/v1/dev/mailbox").json();
    let recipients: Vec<&str> = mailbox["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["to"].as_str().unwrap())
        .collect();
    assert_eq!(
        recipients,
        ["known@acme.test"],
        "nothing is sent to unknown addresses"
    );
    // The invited user can log in; the stranger cannot.
    let code = app.code_from_mailbox("known@acme.test");
    assert_eq!(app.verify("known@acme.test", &code).status, 200);
    app.verify("stranger@acme.test", &code)
        .assert_error(401, "invalid_code");

    // Six sends in a minute for one address: the first is sent; each of
    // the next five comes within the 60 s interval and is refused with
    // 429 `rate_limited` and a Retry-After within the interval.
    let app = spawn_app();
    let answers: Vec<crate::helpers::Resp> =
        (0..6).map(|_| app.send_code("busy@acme.test")).collect();
    let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [202, 429, 429, 429, 429, 429], "{statuses:?}");
    assert_eq!(
        answers[0].json(),
        json!({ "status": "sent", "expires_in": 600 })
    );
    for res in &answers[1..] {
        res.assert_error(429, "rate_limited");
        let retry: u64 = res
            .header("retry-after")
            .expect("Retry-After on a throttled send-code")
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry), "{retry}");
    }
    let mails = app.get("/api/v1/dev/mailbox").json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["to"] == "busy@acme.test")
        .count();
    assert_eq!(mails, 1, "a refused send-code mails nothing");
}

#[test]
fn per_hour_and_per_ip_limits() {
    let app = spawn_app_with(|c| {
        c.auth.send_code_interval_secs = 1;
        c.auth.send_code_per_hour = 2;
        c.auth.send_code_per_ip_per_hour = 3;
    });
    assert_eq!(app.send_code("h@acme.test").status, 202);
    app.clock.advance(Duration::from_secs(2));
    assert_eq!(app.send_code("h@acme.test").status, 202);
    app.clock.advance(Duration::from_secs(2));
    let res = app.send_code("h@acme.test");
    res.assert_error(429, "rate_limited");
    assert!(res.header("retry-after").unwrap().parse::<u64>().unwrap() > 3000);
    // Third code from this IP (another address) is still allowed, the fourth is not.
    assert_eq!(app.send_code("i@acme.test").status, 202);
    app.send_code("j@acme.test")
        .assert_error(429, "rate_limited");
}

#[test]
fn malformed_requests_get_the_envelope() {
    let app = spawn_app_with(|c| c.http.max_body_bytes = 1024);
    app.send_code("not-an-email")
        .assert_error(422, "validation_error");
    let res = app.send_code("not-an-email");
    assert!(res.json()["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("email"));
    let post = |body: &str, ct: &str| {
        send_body(
            app.request("POST", "/api/v1/auth/send-code")
                .set("Content-Type", ct),
            body,
        )
    };
    // Malformed JSON, wrong shapes, missing fields: 422 naming the problem.
    post("{not json", "application/json").assert_error(422, "validation_error");
    post("[]", "application/json").assert_error(422, "validation_error");
    let res = post("{}", "application/json");
    res.assert_error(422, "validation_error");
    assert!(res.body.contains("email"), "{}", res.body);
    post(r#"{"email": 42}"#, "application/json").assert_error(422, "validation_error");
    post("email=a@b.test", "application/x-www-form-urlencoded")
        .assert_error(415, "unsupported_media_type");
    let big = json!({ "email": "x".repeat(2000) }).to_string();
    post(&big, "application/json").assert_error(413, "payload_too_large");
    // Chunked (no Content-Length) oversized bodies are caught by the extractor.
    let res = match app
        .request("POST", "/api/v1/auth/send-code")
        .set("Content-Type", "application/json")
        .send(std::io::Cursor::new(big.into_bytes()))
    {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(code, _)) => code,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(res, 413);
}

pub(crate) fn cookie_login(app: &TestApp, email: &str) -> (crate::helpers::Resp, String) {
    app.send_code(email);
    let code = app.code_from_mailbox(email);
    let res = app.post_json(
        "/api/v1/auth/verify-code",
        json!({ "email": email, "code": code, "cookie": true }),
    );
    assert_eq!(res.status, 200, "{}", res.body);
    let csrf = res.json()["csrf_token"].as_str().unwrap().to_string();
    (res, csrf)
}

#[test]
fn cookie_sessions_need_csrf_and_same_origin() {
    let app = spawn_app();
    let (res, csrf) = cookie_login(&app, "carol@acme.test");
    let body = res.json();
    assert!(
        body.get("access_token").is_none(),
        "cookie mode returns no tokens in the body"
    );
    assert_eq!(body["user"]["email"], "carol@acme.test");
    assert_eq!(res.header("cache-control"), Some("no-store"));
    let line = res.set_cookie_line("gatehouse_access").unwrap();
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(line.contains(attr), "{attr} in {line}");
    }
    assert!(!line.contains("Secure"), "plain http: no Secure flag");
    assert!(res
        .set_cookie_line("gatehouse_refresh")
        .unwrap()
        .contains("HttpOnly"));
    let access = res.cookie("gatehouse_access").unwrap();
    let refresh_cookie = res.cookie("gatehouse_refresh").unwrap();
    let cookie = format!("gatehouse_access={access}; gatehouse_refresh={refresh_cookie}");

    // GET needs no CSRF token; /me returns the same token.
    let me = send(app.request("GET", "/api/v1/me").set("Cookie", &cookie));
    assert_eq!(me.status, 200);
    assert_eq!(me.json()["csrf_token"], csrf.as_str());

    let create = |extra: &[(&str, &str)]| {
        let mut req = app
            .request("POST", "/api/v1/projects")
            .set("Cookie", &cookie)
            .set("Content-Type", "application/json");
        for (k, v) in extra {
            req = req.set(k, v);
        }
        send_body(req, r#"{"name": "Cookie project"}"#)
    };
    create(&[]).assert_error(403, "csrf_failed");
    create(&[("X-CSRF-Token", "wrong")]).assert_error(403, "csrf_failed");
    create(&[("X-CSRF-Token", &csrf), ("Origin", "https://evil.example")])
        .assert_error(403, "csrf_failed");
    create(&[("X-CSRF-Token", &csrf), ("Sec-Fetch-Site", "cross-site")])
        .assert_error(403, "csrf_failed");
    assert_eq!(
        app.query_i64("SELECT count(*) FROM projects WHERE name = 'Cookie project'"),
        0
    );
    let origin = app.base.clone();
    let ok = create(&[("X-CSRF-Token", &csrf), ("Origin", &origin)]);
    assert_eq!(ok.status, 201, "{}", ok.body);
    assert_eq!(ok.json()["role"], "owner");
    assert_eq!(
        app.query_i64("SELECT count(*) FROM projects WHERE name = 'Cookie project'"),
        1
    );

    // An API key is never taken from a cookie; a bearer call needs no CSRF token.
    // Logout: CSRF-checked, clears cookies, Clear-Site-Data, kills the session.
    send(
        app.request("POST", "/api/v1/auth/logout")
            .set("Cookie", &cookie),
    )
    .assert_error(403, "csrf_failed");
    let out = send(
        app.request("POST", "/api/v1/auth/logout")
            .set("Cookie", &cookie)
            .set("X-CSRF-Token", &csrf),
    );
    assert_eq!(out.status, 200, "{}", out.body);
    assert_eq!(out.header("clear-site-data"), Some("\"cookies\""));
    assert!(out
        .set_cookie_line("gatehouse_access")
        .unwrap()
        .contains("Max-Age=0"));
    send(app.request("GET", "/api/v1/me").set("Cookie", &cookie))
        .assert_error(401, "invalid_token");
}

#[test]
fn https_cookies_are_secure_with_the_host_prefix() {
    let app = spawn_app_with(|c| c.public_url = Some("https://keys.acme.test".parse().unwrap()));
    let (res, _) = cookie_login(&app, "dave@acme.test");
    for name in ["__Host-gatehouse_access", "__Host-gatehouse_refresh"] {
        let line = res
            .set_cookie_line(name)
            .unwrap_or_else(|| panic!("{name}: {:?}", res.set_cookies));
        for attr in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
            assert!(line.contains(attr), "{attr} in {line}");
        }
        assert!(!line.contains("Domain"), "__Host- cookies carry no Domain");
    }
    assert!(res.set_cookie_line("gatehouse_access").is_none());
}

#[test]
fn browser_refresh_redirects_only_to_same_site_paths() {
    let app = spawn_app();
    let (res, _) = cookie_login(&app, "erin@acme.test");
    let mut refresh_cookie = res.cookie("gatehouse_refresh").unwrap();
    let cases = [
        ("/dashboard", "/dashboard"),
        ("//evil.example", "/"),
        ("/\\evil.example", "/"),
        ("https://evil.example", "/"),
        ("https:evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("%2F%2Fevil.example", "/"),
        ("/%09/evil.example", "/"),
    ];
    for (next, expected) in cases {
        let form: String = url_encode(next);
        let res = send_body(
            app.request("POST", "/auth/refresh")
                .set("Content-Type", "application/x-www-form-urlencoded")
                .set("Cookie", &format!("gatehouse_refresh={refresh_cookie}")),
            &format!("next={form}"),
        );
        assert_eq!(res.status, 303, "{next}: {}", res.body);
        assert_eq!(res.header("location"), Some(expected), "{next}");
        let access = res.cookie("gatehouse_access").expect("fresh access cookie");
        assert_eq!(
            send(
                app.request("GET", "/api/v1/me")
                    .set("Cookie", &format!("gatehouse_access={access}"))
            )
            .status,
            200
        );
        refresh_cookie = res
            .cookie("gatehouse_refresh")
            .expect("fresh refresh cookie");
    }
    // Without a refresh cookie: to the login page, keeping a safe `next`.
    let res = send_body(
        app.request("POST", "/auth/refresh")
            .set("Content-Type", "application/x-www-form-urlencoded"),
        "next=%2Fdashboard",
    );
    assert_eq!(res.status, 303);
    assert_eq!(res.header("location"), Some("/login?next=%2Fdashboard"));
    let res = send_body(
        app.request("POST", "/auth/refresh")
            .set("Content-Type", "application/x-www-form-urlencoded")
            .set("Cookie", "gatehouse_refresh=bogus"),
        "next=//evil.example",
    );
    assert_eq!(res.header("location"), Some("/login?next=%2F"));
    // A cross-site form is refused.
    send_body(
        app.request("POST", "/auth/refresh")
            .set("Origin", "https://evil.example")
            .set("Content-Type", "application/x-www-form-urlencoded"),
        "next=/",
    )
    .assert_error(403, "csrf_failed");
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn mailbox_is_local_only_and_shows_codes_newest_first() {
    let app = spawn_app();
    app.send_code("first@acme.test");
    app.send_code("second@acme.test");
    let items = app.get("/api/v1/dev/mailbox").json()["items"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["to"], "second@acme.test");
    assert!(items[0]["subject"].as_str().unwrap().contains("login code"));
    assert!(items[0]["body"].as_str().unwrap().contains("10 minutes"));
    assert!(items[0]["created_at"].as_str().unwrap().ends_with('Z'));

    // Through a trusted proxy from a remote client: refused.
    let app = spawn_app_with(|c| c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()]);
    send(
        app.request("GET", "/api/v1/dev/mailbox")
            .set("X-Forwarded-For", "203.0.113.7"),
    )
    .assert_error(403, "forbidden");

    let app = spawn_app_with(|c| {
        c.mode = gatehouse::config::Mode::Production;
        c.smtp.host = Some("127.0.0.1".into());
    });
    app.get("/api/v1/dev/mailbox")
        .assert_error(404, "not_found");
}

#[test]
fn expose_codes_returns_the_code_in_local_mode() {
    let app = spawn_app_with(|c| c.dev.expose_codes = true);
    let res = app.send_code("demo@acme.test");
    let code = res.json()["code"].as_str().unwrap().to_string();
    assert_eq!(code, app.code_from_mailbox("demo@acme.test"));
}

#[test]
fn credentials_are_checked_in_order_with_the_documented_codes() {
    let app = spawn_app();
    app.get("/api/v1/me")
        .assert_error(401, "missing_authorization");
    send(
        app.request("GET", "/api/v1/me")
            .set("Authorization", "Basic eDp5"),
    )
    .assert_error(401, "missing_authorization");
    send(app.authed("GET", "/api/v1/me", "not-a-real-token")).assert_error(401, "invalid_token");
    send(app.authed("GET", "/api/v1/me", "gate_sk_tooShort")).assert_error(401, "malformed_key");
    let key = gatehouse::keys::ApiKey::generate("gate", gatehouse::keys::KeyType::Secret);
    send(app.authed("GET", "/api/v1/me", key.expose())).assert_error(401, "invalid_key");
    send(app.request("GET", "/api/v1/me").set("X-API-Key", "junk"))
        .assert_error(401, "malformed_key");
    // An API key in a cookie is not a credential.
    send(
        app.request("GET", "/api/v1/me")
            .set("Cookie", &format!("gatehouse_access={}", key.expose())),
    )
    .assert_error(401, "invalid_token");
}

#[test]
fn access_tokens_and_sessions_expire() {
    // Access tokens: short-lived, renewed by refreshing.
    let app = spawn_app_with(|c| c.auth.access_ttl_secs = 60);
    let t = app.login("short@acme.test");
    assert_eq!(send(app.authed("GET", "/api/v1/me", &t.access)).status, 200);
    app.clock.advance(Duration::from_secs(61));
    send(app.authed("GET", "/api/v1/me", &t.access)).assert_error(401, "invalid_token");
    let res = refresh(&app, &t.refresh);
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.json()["expires_in"], 60);

    // Idle: a session unused for longer than session_idle_secs is over.
    let app = spawn_app_with(|c| c.auth.session_idle_secs = 60);
    let t = app.login("idle@acme.test");
    assert_eq!(send(app.authed("GET", "/api/v1/me", &t.access)).status, 200);
    app.clock.advance(Duration::from_secs(50));
    assert_eq!(
        send(app.authed("GET", "/api/v1/me", &t.access)).status,
        200,
        "use keeps it alive"
    );
    app.clock.advance(Duration::from_secs(61));
    send(app.authed("GET", "/api/v1/me", &t.access)).assert_error(401, "invalid_token");
    refresh(&app, &t.refresh).assert_error(401, "invalid_token");

    // Absolute: however active, a session ends session_max_secs after login.
    let app = spawn_app_with(|c| c.auth.session_max_secs = 60);
    let t = app.login("busy-bee@acme.test");
    app.clock.advance(Duration::from_secs(30));
    let res = refresh(&app, &t.refresh);
    assert_eq!(res.status, 200, "{}", res.body);
    let next = res.json()["refresh_token"].as_str().unwrap().to_string();
    let access = res.json()["access_token"].as_str().unwrap().to_string();
    app.clock.advance(Duration::from_secs(31));
    refresh(&app, &next).assert_error(401, "invalid_token");
    send(app.authed("GET", "/api/v1/me", &access)).assert_error(401, "invalid_token");
}

#[test]
fn cleanup_removes_expired_codes_and_dead_sessions() {
    let app = spawn_app_with(|c| {
        c.auth.code_ttl_secs = 60;
        c.auth.session_max_secs = 60;
        c.auth.access_ttl_secs = 60;
    });
    let t = app.login("gone@acme.test");
    app.send_code("pending@acme.test");
    assert_eq!(app.query_i64("SELECT count(*) FROM login_codes"), 1);
    assert_eq!(app.query_i64("SELECT count(*) FROM sessions"), 1);
    app.clock.advance(Duration::from_secs(61));
    let removed = app
        .block_on(
            app.state
                .store
                .cleanup(gatehouse::store::maintenance::Retention {
                    session_idle_secs: app.state.session_limits().idle_secs,
                }),
        )
        .unwrap();
    assert!(removed >= 3, "{removed}");
    assert_eq!(app.query_i64("SELECT count(*) FROM login_codes"), 0);
    assert_eq!(app.query_i64("SELECT count(*) FROM sessions"), 0);
    assert_eq!(app.query_i64("SELECT count(*) FROM access_tokens"), 0);
    assert_eq!(
        app.query_i64("SELECT count(*) FROM refresh_tokens"),
        0,
        "cascaded"
    );
    assert_eq!(app.query_i64("SELECT count(*) FROM users"), 1, "users stay");
    refresh(&app, &t.refresh).assert_error(401, "invalid_token");
}

/// Invite-only: a failed login leaves the same traces whether or not the
/// address exists or has a code (the statement-by-statement comparison is
/// the unit test `store::sessions::tests::every_failed_login_does_the_same_work`).
#[test]
fn failed_logins_do_the_same_work_for_known_and_unknown_addresses() {
    let app = spawn_app_with(|c| c.auth.signup = gatehouse::config::Signup::Invite);
    app.block_on(app.state.store.bootstrap_user(
        gatehouse::types::Email::parse("member@acme.test").unwrap(),
        Some(("Acme".into(), None)),
        "free".into(),
    ))
    .unwrap()
    .unwrap();
    for email in ["member@acme.test", "stranger@acme.test"] {
        app.verify(email, "123456")
            .assert_error(401, "invalid_code");
        let audited = app.query_i64(&format!(
            "SELECT count(*) FROM audit_events WHERE action = 'login.failed' AND target = '{email}'"
        ));
        assert_eq!(audited, 1, "{email}");
        let attempts = app.query_i64(&format!(
            "SELECT attempts FROM login_codes WHERE email = '{email}' AND expires_at <= {}",
            gatehouse::clock::Clock::system().now()
        ));
        assert_eq!(
            attempts, 1,
            "{email}: the attempt is counted on an expired stand-in"
        );
    }
    // The stand-in never gets in the way of a real code.
    app.send_code("member@acme.test");
    let code = app.code_from_mailbox("member@acme.test");
    assert_eq!(app.verify("member@acme.test", &code).status, 200);
}

/// Code attempts are limited per client address (every attempt writes an
/// audit row), the same for known and unknown addresses.
#[test]
fn code_attempts_are_limited_per_address() {
    let app = spawn_app_with(|c| c.auth.signup = gatehouse::config::Signup::Invite);
    let attempt = |email: &str| {
        app.post_json(
            "/api/v1/auth/verify-code",
            json!({ "email": email, "code": "000000" }),
        )
    };
    let before = app.query_i64("SELECT count(*) FROM audit_events WHERE action = 'login.failed'");
    app.early_in_a_minute();
    for i in 0..30 {
        let email = if i % 2 == 0 {
            "known@acme.test"
        } else {
            "nobody@acme.test"
        };
        attempt(email).assert_error(401, "invalid_code");
    }
    for email in ["known@acme.test", "nobody@acme.test"] {
        let res = attempt(email);
        res.assert_error(429, "rate_limited");
        let retry: u64 = res.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=120).contains(&retry), "{retry}");
    }
    assert_eq!(
        app.query_i64("SELECT count(*) FROM audit_events WHERE action = 'login.failed'") - before,
        30,
        "refused attempts write nothing"
    );
}

/// A JSON POST from `client`, as the trusted proxy on loopback reports it
/// in `X-Forwarded-For`.
fn post_from(
    app: &TestApp,
    client: &str,
    path: &str,
    body: serde_json::Value,
) -> crate::helpers::Resp {
    send_body(
        app.request("POST", path)
            .set("Content-Type", "application/json")
            .set("X-Forwarded-For", client),
        &body.to_string(),
    )
}

/// `n` addresses of the /64 `2001:db8::/64`, from `2001:db8::64` on.
pub fn one_ipv6_network(n: usize) -> Vec<String> {
    (0x64..0x64 + n)
        .map(|i| format!("2001:db8::{i:x}"))
        .collect()
}

fn behind_a_proxy() -> TestApp {
    spawn_app_with(|c| c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()])
}

/// Code attempts spread over the addresses of one IPv6 /64 count as one
/// client (SPEC section 6); another /64 is another client; IPv4 counts by
/// address, mapped or not.
#[test]
fn code_attempts_count_an_ipv6_client_by_its_64_network() {
    let app = behind_a_proxy();
    let attempt = |client: &str| {
        post_from(
            &app,
            client,
            "/api/v1/auth/verify-code",
            json!({ "email": "v6@acme.test", "code": "000000" }),
        )
    };
    app.early_in_a_minute();
    let statuses: Vec<u16> = one_ipv6_network(35)
        .iter()
        .map(|client| attempt(client).status)
        .collect();
    assert_eq!(statuses[..30], [401; 30], "{statuses:?}");
    assert_eq!(statuses[30..], [429; 5], "{statuses:?}");
    let res = attempt("2001:db8::ffff:ffff:ffff:ffff");
    res.assert_error(429, "rate_limited");
    let retry: u64 = res.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=120).contains(&retry), "{retry}");
    // The next /64 over is another client.
    attempt("2001:db8:0:1::64").assert_error(401, "invalid_code");
    // IPv4: one count per address, whether or not it comes IPv4-mapped.
    for i in 0..30 {
        let client = if i % 2 == 0 {
            "198.51.100.7"
        } else {
            "::ffff:198.51.100.7"
        };
        attempt(client).assert_error(401, "invalid_code");
    }
    attempt("::ffff:198.51.100.7").assert_error(429, "rate_limited");
    attempt("198.51.100.7").assert_error(429, "rate_limited");
    attempt("198.51.100.8").assert_error(401, "invalid_code");
    assert_eq!(
        app.query_i64("SELECT count(*) FROM audit_events WHERE action = 'login.failed'"),
        30 + 1 + 30 + 1,
        "refused attempts write nothing"
    );
}

/// The send-code limit per client address counts an IPv6 client by its
/// /64 too.
#[test]
fn the_send_code_limit_per_address_counts_an_ipv6_client_by_its_64_network() {
    let app = spawn_app_with(|c| {
        c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
        c.auth.send_code_per_ip_per_hour = 3;
    });
    let send_from = |client: &str, email: &str| {
        post_from(
            &app,
            client,
            "/api/v1/auth/send-code",
            json!({ "email": email }),
        )
    };
    for (i, client) in one_ipv6_network(3).iter().enumerate() {
        let res = send_from(client, &format!("n{i}@acme.test"));
        assert_eq!(res.status, 202, "{client}: {}", res.body);
    }
    let res = send_from("2001:db8::86", "n9@acme.test");
    res.assert_error(429, "rate_limited");
    let retry: u64 = res.header("retry-after").unwrap().parse().unwrap();
    assert!(retry > 3000, "{retry}");
    assert_eq!(send_from("2001:db8:0:1::1", "other@acme.test").status, 202);
    let mailbox = app.get("/api/v1/dev/mailbox").json();
    let mut recipients: Vec<&str> = mailbox["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["to"].as_str().unwrap())
        .collect();
    recipients.sort();
    assert_eq!(
        recipients,
        [
            "n0@acme.test",
            "n1@acme.test",
            "n2@acme.test",
            "other@acme.test"
        ],
        "nothing was sent for the refused request"
    );
}

/// Every cookie-authenticated mutation needs the session's CSRF token and
/// our own origin, PATCH and DELETE as POST: without the token, with a
/// wrong one, from a foreign Origin or a cross-site fetch they are 403
/// `csrf_failed` and change nothing. Gatehouse has no PUT route: a PUT is
/// 405 and changes nothing either.
#[test]
fn cookie_patch_put_and_delete_need_csrf_and_same_origin() {
    let app = spawn_app();
    let (res, csrf) = cookie_login(&app, "dora@acme.test");
    let cookie = format!(
        "gatehouse_access={}; gatehouse_refresh={}",
        res.cookie("gatehouse_access").unwrap(),
        res.cookie("gatehouse_refresh").unwrap()
    );
    let origin = app.base.clone();
    let call = |method: &str, path: &str, body: &str, extra: &[(&str, &str)]| {
        let mut req = app
            .request(method, path)
            .set("Cookie", &cookie)
            .set("Content-Type", "application/json");
        for (k, v) in extra {
            req = req.set(k, v);
        }
        send_body(req, body)
    };
    let good = [("X-CSRF-Token", csrf.as_str()), ("Origin", origin.as_str())];
    let created = call(
        "POST",
        "/api/v1/api-keys",
        r#"{"name": "cookie key"}"#,
        &good,
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.json()["id"].as_str().unwrap().to_string();
    let key = created.json()["plaintext_key"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/api/v1/api-keys/{id}");
    let refused: [&[(&str, &str)]; 4] = [
        &[],
        &[("X-CSRF-Token", "wrong")],
        &[("X-CSRF-Token", &csrf), ("Origin", "https://evil.example")],
        &[("X-CSRF-Token", &csrf), ("Sec-Fetch-Site", "cross-site")],
    ];
    let name_now = || {
        send(app.request("GET", &path).set("Cookie", &cookie)).json()["name"]
            .as_str()
            .unwrap()
            .to_string()
    };
    for extra in refused {
        call("PATCH", &path, r#"{"name": "hijacked"}"#, extra).assert_error(403, "csrf_failed");
        call("DELETE", &path, "", extra).assert_error(403, "csrf_failed");
        call("PUT", &path, r#"{"name": "hijacked"}"#, extra)
            .assert_error(405, "method_not_allowed");
    }
    assert_eq!(name_now(), "cookie key");
    assert_eq!(
        crate::keys::code_of(&crate::keys::verify(&app, json!({ "key": key }))),
        "valid",
        "no refused DELETE revoked the key"
    );
    assert_eq!(
        app.query_i64(
            "SELECT count(*) FROM audit_events WHERE action IN ('key.updated', 'key.revoked')"
        ),
        0
    );

    let patched = call("PATCH", &path, r#"{"name": "renamed"}"#, &good);
    assert_eq!(patched.status, 200, "{}", patched.body);
    assert_eq!(name_now(), "renamed");
    let deleted = call("DELETE", &path, "", &good);
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    assert_eq!(
        crate::keys::code_of(&crate::keys::verify(&app, json!({ "key": key }))),
        "invalid_key"
    );
}

/// send-code's answer, the email and the login page state one lifetime:
/// `auth.code_ttl_secs`.
#[test]
fn the_code_lifetime_is_the_configured_one_in_the_answer_and_the_email() {
    let app = spawn_app_with(|c| c.auth.code_ttl_secs = 300);
    let sent = app.send_code("alice@acme.test");
    assert_eq!(sent.status, 202);
    assert_eq!(sent.json()["expires_in"], 300);
    let mailbox = app.get("/api/v1/dev/mailbox").json();
    let body = mailbox["items"][0]["body"].as_str().unwrap();
    assert!(body.contains("It expires in 5 minutes"), "{body}");
}
