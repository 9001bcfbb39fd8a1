//! SPEC section 11: the OpenAPI 3.1 document lists every route, and every
//! documented operation exists on the server.

use crate::helpers::{send, spawn_app};

/// Every route the server has today. A new route must be added here and to
/// the document, or this test fails.
const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/api/v1/catalog"),
    ("get", "/api/v1/openapi.json"),
    ("post", "/api/v1/auth/send-code"),
    ("post", "/api/v1/auth/verify-code"),
    ("post", "/api/v1/auth/refresh-token"),
    ("post", "/api/v1/auth/revoke-token"),
    ("post", "/api/v1/auth/logout"),
    ("get", "/api/v1/me"),
    ("post", "/auth/refresh"),
    ("get", "/api/v1/projects"),
    ("post", "/api/v1/projects"),
    ("get", "/api/v1/members"),
    ("post", "/api/v1/members"),
    ("patch", "/api/v1/members/{user_id}"),
    ("delete", "/api/v1/members/{user_id}"),
    ("get", "/api/v1/dev/mailbox"),
    ("get", "/api/v1/api-keys"),
    ("post", "/api/v1/api-keys"),
    ("get", "/api/v1/api-keys/{id}"),
    ("patch", "/api/v1/api-keys/{id}"),
    ("delete", "/api/v1/api-keys/{id}"),
    ("post", "/api/v1/api-keys/{id}/rotate"),
    ("post", "/api/v1/keys/verify"),
    ("get", "/api/v1/auth/check"),
    ("post", "/api/v1/keys/leaked"),
    ("get", "/api/v1/usage"),
    ("get", "/api/v1/audit-log"),
    ("get", "/api/v1/webhooks"),
    ("post", "/api/v1/webhooks"),
    ("delete", "/api/v1/webhooks/{id}"),
    ("get", "/api/v1/webhooks/{id}/deliveries"),
    ("post", "/api/v1/webhooks/{id}/test"),
    ("get", "/api/v1/billing"),
    ("post", "/api/v1/billing/stripe/webhook"),
];

#[test]
fn document_is_openapi_3_1_and_lists_every_route() {
    let app = spawn_app();
    let res = app.get("/api/v1/openapi.json");
    assert_eq!(res.status, 200);
    let doc = res.json();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["title"], "Gatehouse");
    let paths = doc["paths"].as_object().unwrap();

    let mut documented = Vec::new();
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            documented.push((method.clone(), path.clone()));
        }
    }
    for (method, path) in ROUTES {
        assert!(
            documented.iter().any(|(m, p)| m == method && p == path),
            "{method} {path} is missing from openapi.json"
        );
    }
    assert_eq!(
        documented.len(),
        ROUTES.len(),
        "undocumented or extra: {documented:?}"
    );

    // Every operation documents the error envelope and it resolves.
    for (method, path) in &documented {
        let op = &paths[path][method];
        assert!(
            op["responses"]["default"]["content"]["application/json"]["schema"]["$ref"]
                .as_str()
                .is_some_and(|r| r.ends_with("/ErrorEnvelope")),
            "{method} {path} lacks the error envelope"
        );
    }
    let envelope = &doc["components"]["schemas"]["ErrorEnvelope"];
    assert!(envelope["properties"]["error"].is_object(), "{envelope}");
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}

#[test]
fn every_documented_operation_exists_on_the_server() {
    let app = crate::helpers::spawn_app_with(|c| {
        c.billing.stripe_webhook_secret = Some(gatehouse::config::Secret::new(
            gatehouse::config::generate_secret(),
        ));
    });
    let doc = app.get("/api/v1/openapi.json").json();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let res = send(app.request(&method.to_uppercase(), path));
            assert!(
                res.status != 404 && res.status != 405,
                "{method} {path} answered {}",
                res.status
            );
        }
    }
}
