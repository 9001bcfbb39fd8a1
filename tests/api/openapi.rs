//! The OpenAPI 3.1 document: it lists every route and only real ones, it
//! validates with openapi-spec-validator, and a client generated from it by
//! openapi-python-client works without edits against a live server.

use std::path::Path;
use std::process::Command;

use crate::helpers::{e2e_available, send, spawn_app};

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
    ("put", "/api/v1/auth/check"),
    ("post", "/api/v1/auth/check"),
    ("delete", "/api/v1/auth/check"),
    ("options", "/api/v1/auth/check"),
    ("head", "/api/v1/auth/check"),
    ("patch", "/api/v1/auth/check"),
    ("trace", "/api/v1/auth/check"),
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

    // Every operation has a unique operationId and a tag; every error
    // answer it documents is the error envelope, with X-Request-Id.
    let mut ids = std::collections::HashSet::new();
    for (method, path) in &documented {
        let op = &paths[path][method];
        let id = op["operationId"].as_str().unwrap_or_default();
        assert!(
            ids.insert(id.to_string()),
            "{method} {path}: operationId {id:?} is not unique"
        );
        assert!(op["tags"][0].is_string(), "{method} {path} has no tag");
        for (status, response) in op["responses"].as_object().unwrap() {
            assert_eq!(
                response["headers"]["X-Request-Id"]["required"], true,
                "{method} {path} {status} lacks X-Request-Id"
            );
            if status.starts_with('4') || status.starts_with('5') {
                assert!(
                    response["content"]["application/json"]["schema"]["$ref"]
                        .as_str()
                        .is_some_and(|r| r.ends_with("/ErrorEnvelope")),
                    "{method} {path} {status} is not the error envelope"
                );
            }
        }
    }
    for id in [
        "listApiKeys",
        "createApiKey",
        "getApiKey",
        "updateApiKey",
        "revokeApiKey",
        "rotateApiKey",
        "verifyApiKey",
        "checkForwardAuth",
        "sendLoginCode",
    ] {
        assert!(ids.contains(id), "no operation {id}");
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

/// The operation `operation_id` of the document, with its path and method.
fn operation<'a>(doc: &'a serde_json::Value, operation_id: &str) -> &'a serde_json::Value {
    doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().values())
        .find(|op| op["operationId"] == operation_id)
        .unwrap_or_else(|| panic!("no operation {operation_id}"))
}

#[test]
fn links_chain_what_one_operation_returns_into_the_next() {
    let app = spawn_app();
    let doc = app.get("/api/v1/openapi.json").json();
    let links_of =
        |id: &str, status: &str| operation(&doc, id)["responses"][status]["links"].clone();

    // Keys: create -> get -> update -> rotate -> revoke, and verify the new key.
    let created = links_of("createApiKey", "201");
    for (link, target) in [
        ("GetApiKey", "getApiKey"),
        ("UpdateApiKey", "updateApiKey"),
        ("RotateApiKey", "rotateApiKey"),
        ("RevokeApiKey", "revokeApiKey"),
    ] {
        assert_eq!(created[link]["operationId"], target, "{created}");
        assert_eq!(created[link]["parameters"]["id"], "$response.body#/id");
    }
    assert_eq!(
        created["VerifyApiKey"]["requestBody"]["key"],
        "$response.body#/plaintext_key"
    );
    assert_eq!(
        links_of("getApiKey", "200")["UpdateApiKey"]["operationId"],
        "updateApiKey"
    );
    assert_eq!(
        links_of("updateApiKey", "200")["RotateApiKey"]["operationId"],
        "rotateApiKey"
    );
    assert_eq!(
        links_of("rotateApiKey", "201")["RevokeApiKey"]["operationId"],
        "revokeApiKey"
    );
    // Webhooks, members and projects follow the same pattern.
    assert_eq!(
        links_of("createWebhook", "201")["DeleteWebhook"]["parameters"]["id"],
        "$response.body#/id"
    );
    assert_eq!(
        links_of("addMember", "201")["RemoveMember"]["parameters"]["user_id"],
        "$response.body#/user/id"
    );
    assert_eq!(
        links_of("createProject", "201")["CreateApiKey"]["parameters"]["X-Project-Id"],
        "$response.body#/id"
    );
    // Every link names an operation that exists, with parameters it has.
    for item in doc["paths"].as_object().unwrap().values() {
        for op in item.as_object().unwrap().values() {
            for response in op["responses"].as_object().unwrap().values() {
                for (name, link) in response["links"].as_object().into_iter().flatten() {
                    let target = operation(&doc, link["operationId"].as_str().unwrap());
                    for param in link["parameters"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|p| p.0)
                    {
                        assert!(
                            target["parameters"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .any(|p| p["name"] == param.as_str()),
                            "link {name}: {} has no parameter {param}",
                            link["operationId"]
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn the_browser_refresh_form_is_described() {
    let app = spawn_app();
    let doc = app.get("/api/v1/openapi.json").json();
    let op = operation(&doc, "refreshBrowserSession");
    let form = &op["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"];
    let form =
        &doc["components"]["schemas"][form["$ref"].as_str().unwrap().rsplit('/').next().unwrap()];
    assert!(form["properties"]["next"].is_object(), "{form}");
    let params = op["parameters"].as_array().unwrap();
    assert!(params
        .iter()
        .any(|p| p["in"] == "cookie" && p["name"] == "gatehouse_refresh"));
    assert!(op["responses"]["303"]["headers"]["Location"].is_object());
    assert!(op["responses"]["403"].is_object());
}

fn have(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs openapi-spec-validator on `doc` as OpenAPI 3.1.
fn validate(dir: &Path, doc: &serde_json::Value) -> std::process::Output {
    let file = dir.join("openapi.json");
    std::fs::write(&file, doc.to_string()).unwrap();
    Command::new("openapi-spec-validator")
        .args(["--schema", "3.1"])
        .arg(&file)
        .output()
        .expect("openapi-spec-validator runs")
}

#[test]
fn document_validates_as_openapi_3_1() {
    if !e2e_available(
        have("openapi-spec-validator", &["--version"]),
        "openapi-spec-validator (pip install openapi-spec-validator)",
    ) {
        return;
    }
    let app = spawn_app();
    let doc = app.get("/api/v1/openapi.json").json();
    let dir = tempfile::tempdir().unwrap();
    let out = validate(dir.path(), &doc);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The validator does catch what used to be wrong: a repeated operationId.
    let mut broken = doc.clone();
    broken["paths"]["/api/v1/members"]["get"]["operationId"] = "listApiKeys".into();
    assert!(!validate(dir.path(), &broken).status.success());
}

#[test]
fn a_generated_python_client_works_unedited() {
    let python_ready = have("openapi-python-client", &["--version"])
        && have("python3", &["-c", "import httpx, attrs, dateutil"]);
    if !e2e_available(
        python_ready,
        "openapi-python-client (pip install openapi-python-client)",
    ) {
        return;
    }
    let app = spawn_app();
    let dir = tempfile::tempdir().unwrap();
    let doc_file = dir.path().join("openapi.json");
    std::fs::write(&doc_file, app.get("/api/v1/openapi.json").body).unwrap();
    let generated = Command::new("openapi-python-client")
        .args(["generate", "--meta", "none", "--fail-on-warning", "--path"])
        .arg(&doc_file)
        .arg("--output-path")
        .arg(dir.path().join("gatehouse_client"))
        .output()
        .expect("openapi-python-client runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&generated.stdout),
        String::from_utf8_lossy(&generated.stderr)
    );
    // The generator warns about every part of the document it cannot turn
    // into typed code; a warning fails the generation.
    assert!(generated.status.success(), "{report}");

    let email = "client@acme.test";
    let run = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/client/use_client.py"))
        .args([app.base.as_str(), email])
        .env("PYTHONPATH", dir.path())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("python3 runs");
    assert!(
        run.status.success(),
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let seen: serde_json::Value =
        serde_json::from_slice(&run.stdout).expect("the driver prints JSON");

    // What the client saw is what the server holds.
    let key_id = seen["key_id"].as_str().unwrap();
    let user_id = seen["user_id"].as_str().unwrap();
    assert_eq!(
        app.query_i64(&format!(
            "SELECT COUNT(*) FROM users WHERE id = '{user_id}' AND email = '{email}'"
        )),
        1
    );
    assert_eq!(
        app.query_i64(&format!(
            "SELECT COUNT(*) FROM api_keys WHERE id = '{key_id}' AND project_id = '{}'",
            seen["project_id"].as_str().unwrap()
        )),
        1
    );
    assert_eq!(seen["plaintext_starts"], "gate_sk_");
    assert_eq!(seen["created_scopes"], serde_json::json!(["keys:read"]));
    assert_eq!(seen["listed_ids"], serde_json::json!([key_id]));
    assert_eq!(seen["listed_total"], 1);
    assert_eq!(seen["fetched_name"], "generated client");
    assert_eq!(seen["fetched_rate_limit"], serde_json::json!([50, 60]));
    assert_eq!(seen["verify_valid"], true);
    assert_eq!(seen["verify_key_id"], key_id);
    assert_eq!(seen["verify_project_id"], seen["project_id"]);
    assert_eq!(seen["verify_remaining"], 49);
    assert_eq!(seen["refused_code"], "insufficient_scope");
    assert_eq!(seen["listed_by_key_ids"], serde_json::json!([key_id]));
}
