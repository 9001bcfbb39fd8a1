//! SPEC section 4: the error envelope, request ids, security headers, body
//! limits, CORS.

use crate::helpers::{send, send_body, spawn_app, spawn_app_with};

#[test]
fn unknown_route_is_a_404_envelope_with_the_request_id_of_the_header() {
    let app = spawn_app();
    for path in [
        "/nope",
        "/api/v1/nope",
        "/api/v2/catalog",
        "/assets/missing.js",
    ] {
        let res = app.get(path);
        let body = res.assert_error(404, "not_found");
        let id = body["error"]["request_id"].as_str().unwrap();
        assert!(id.starts_with("req_"), "{id}");
    }
}

#[test]
fn client_request_ids_are_echoed_when_valid_and_replaced_otherwise() {
    let app = spawn_app();
    let res = send(app.request("GET", "/nope").set("X-Request-Id", "abc-123"));
    let body = res.assert_error(404, "not_found");
    assert_eq!(body["error"]["request_id"], "abc-123");
    assert_eq!(res.header("x-request-id"), Some("abc-123"));

    let ok = send(
        app.request("GET", "/healthz")
            .set("X-Request-Id", "trace.42_A-b"),
    );
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("x-request-id"), Some("trace.42_A-b"));

    let long = "a".repeat(300);
    for bad in ["<script>", long.as_str(), "has space", "semi;colon"] {
        let res = send(app.request("GET", "/nope").set("X-Request-Id", bad));
        let body = res.assert_error(404, "not_found");
        let id = body["error"]["request_id"].as_str().unwrap();
        assert_ne!(id, bad);
        assert!(id.starts_with("req_") && id.len() == 24, "{id}");
    }
}

#[test]
fn wrong_method_is_a_405_envelope() {
    let app = spawn_app();
    for (method, path) in [
        ("POST", "/healthz"),
        ("DELETE", "/readyz"),
        ("PUT", "/api/v1/catalog"),
        ("POST", "/api/v1/openapi.json"),
    ] {
        send(app.request(method, path)).assert_error(405, "method_not_allowed");
    }
}

#[test]
fn oversized_body_is_a_413_envelope_before_the_route_runs() {
    let app = spawn_app_with(|c| c.http.max_body_bytes = 1024);
    let body = "x".repeat(1500);
    let res = send_body(
        app.request("POST", "/api/v1/catalog")
            .set("Content-Type", "application/json"),
        &body,
    );
    res.assert_error(413, "payload_too_large");
    // Within the limit the route answers as usual (405: catalog is GET only).
    let res = send_body(app.request("POST", "/api/v1/catalog"), "{}");
    res.assert_error(405, "method_not_allowed");
}

fn assert_common_security_headers(res: &crate::helpers::Resp) {
    assert_eq!(res.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(res.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(res.header("x-frame-options"), Some("DENY"));
}

#[test]
fn security_headers_on_api_html_and_error_responses() {
    let app = spawn_app();
    let api = app.get("/api/v1/catalog");
    assert_eq!(api.status, 200);
    assert_common_security_headers(&api);
    assert!(api
        .header("content-security-policy")
        .unwrap()
        .contains("default-src 'none'"));
    assert!(
        api.header("strict-transport-security").is_none(),
        "no HSTS over http"
    );

    let html = app.get("/login");
    assert_eq!(html.status, 200);
    assert!(html
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert_common_security_headers(&html);
    let csp = html.header("content-security-policy").unwrap();
    for directive in [
        "default-src 'self'",
        "frame-ancestors 'none'",
        "object-src 'none'",
        "base-uri 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} in {csp}");
    }
    assert!(!csp.contains("unsafe-inline"));

    let err = app.get("/nope");
    assert_common_security_headers(&err);
}

#[test]
fn hsts_is_sent_when_the_public_url_is_https() {
    let app = spawn_app_with(|c| c.public_url = Some("https://keys.acme.test".parse().unwrap()));
    for path in ["/healthz", "/login", "/nope"] {
        let res = app.get(path);
        assert_eq!(
            res.header("strict-transport-security"),
            Some("max-age=31536000; includeSubDomains"),
            "{path}"
        );
    }
}

#[test]
fn api_responses_are_not_cached() {
    let app = spawn_app();
    assert_eq!(
        app.get("/api/v1/nope").header("cache-control"),
        Some("no-store")
    );
    assert_eq!(
        app.get("/healthz").header("cache-control"),
        Some("no-store")
    );
}

#[test]
fn assets_have_types_etags_and_revalidate() {
    let app = spawn_app();
    let css = app.get("/assets/app.css");
    assert_eq!(css.status, 200);
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
    let etag = css.header("etag").unwrap().to_string();
    let again = send(
        app.request("GET", "/assets/app.css")
            .set("If-None-Match", &etag),
    );
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    let js = app.get("/assets/js/app.js");
    assert!(js.header("content-type").unwrap().contains("javascript"));
}

#[test]
fn no_cors_unless_origins_are_listed_exactly() {
    let app = spawn_app();
    let res = send(
        app.request("GET", "/api/v1/catalog")
            .set("Origin", "https://app.acme.test"),
    );
    assert_eq!(res.status, 200);
    assert!(res.header("access-control-allow-origin").is_none());

    let app = spawn_app_with(|c| c.cors.allowed_origins = vec!["https://app.acme.test".into()]);
    let res = send(
        app.request("GET", "/api/v1/catalog")
            .set("Origin", "https://app.acme.test"),
    );
    assert_eq!(
        res.header("access-control-allow-origin"),
        Some("https://app.acme.test")
    );
    let res = send(
        app.request("GET", "/api/v1/catalog")
            .set("Origin", "https://evil.example"),
    );
    assert!(res.header("access-control-allow-origin").is_none());

    let preflight = |origin: &str| {
        send(
            app.request("OPTIONS", "/api/v1/catalog")
                .set("Origin", origin)
                .set("Access-Control-Request-Method", "GET")
                .set("Access-Control-Request-Headers", "x-api-key"),
        )
    };
    let ok = preflight("https://app.acme.test");
    assert_eq!(ok.status, 200);
    assert_eq!(
        ok.header("access-control-allow-origin"),
        Some("https://app.acme.test")
    );
    assert!(ok
        .header("access-control-allow-headers")
        .unwrap()
        .contains("x-api-key"));
    let refused = preflight("https://evil.example");
    refused.assert_error(400, "bad_request");
    assert!(refused.header("access-control-allow-origin").is_none());
}

#[test]
fn root_goes_to_the_dashboard_or_the_login_page() {
    let app = spawn_app();
    let res = app.get("/");
    assert_eq!(res.status, 303);
    assert_eq!(res.header("location"), Some("/login"));
    let res = send(app.request("GET", "/").set("Cookie", "gatehouse_refresh=x"));
    assert_eq!(res.header("location"), Some("/keys"));
    for page in gatehouse::ui::PAGES {
        let res = app.get(page);
        assert_eq!(res.status, 200, "{page}");
        assert!(res.header("content-type").unwrap().starts_with("text/html"));
    }
    app.get("/assets/index.html").assert_error(404, "not_found");
}
