//! The OpenAPI 3.1 document, generated from the handlers' annotations and
//! finished here with what the annotations cannot say on their own:
//!
//! - the error responses every operation shares (401/403/429 where a
//!   credential is read, 400/404 where a project is resolved, 413/415/422
//!   where a body or query is parsed, 503 where storage is involved), each
//!   with the error envelope and the `X-Request-Id` header;
//! - the constraints the server enforces on request types that live outside
//!   `routes/` (key settings are validated in `keys::input`), and the ones
//!   only known at start-up (the scope catalog);
//! - forward-auth answering any method, as proxies send the original one.
//!
//! The aim is a document accurate enough that a schema-driven fuzzer finds
//! no mismatch and a generated client works without edits.

use serde_json::{json, Map, Value};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::catalog::Catalog;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Gatehouse",
        description = "Self-hosted API keys and email-code login. Every error has the shape \
                       {\"error\": {\"code\", \"message\", \"request_id\"}}; `request_id` is also \
                       the `X-Request-Id` response header."
    ),
    paths(
        crate::routes::ops::healthz,
        crate::routes::ops::readyz,
        crate::routes::ops::metrics,
        crate::routes::ops::openapi,
        crate::routes::catalog::catalog,
        crate::routes::auth::send_code,
        crate::routes::auth::verify_code,
        crate::routes::auth::refresh_token,
        crate::routes::auth::revoke_token,
        crate::routes::auth::logout,
        crate::routes::auth::me,
        crate::routes::auth::browser_refresh,
        crate::routes::projects::list,
        crate::routes::projects::create,
        crate::routes::members::list,
        crate::routes::members::add,
        crate::routes::members::change,
        crate::routes::members::remove,
        crate::routes::dev::mailbox,
        crate::routes::keys::list,
        crate::routes::keys::create,
        crate::routes::keys::get,
        crate::routes::keys::patch,
        crate::routes::keys::revoke,
        crate::routes::keys::rotate,
        crate::routes::verify::verify,
        crate::routes::verify::check,
        crate::routes::verify::leaked,
        crate::routes::usage::usage,
        crate::routes::usage::audit_log,
        crate::routes::webhooks::list,
        crate::routes::webhooks::create,
        crate::routes::webhooks::delete,
        crate::routes::webhooks::deliveries,
        crate::routes::webhooks::test,
        crate::routes::billing::billing,
        crate::routes::billing::stripe_webhook,
    ),
    components(schemas(crate::error::ErrorEnvelope, crate::error::ErrorBody)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "public", description = "No authentication"),
        (name = "ops", description = "Health, readiness and metrics"),
        (name = "auth", description = "Email-code login and sessions"),
        (name = "projects", description = "Projects"),
        (name = "members", description = "Members of the current project"),
        (name = "dev", description = "Local mode only"),
        (name = "keys", description = "API keys of the current project"),
        (name = "verify", description = "Checking keys from other services"),
        (name = "usage", description = "Usage and the audit log"),
        (name = "webhooks", description = "Signed outgoing webhooks"),
        (name = "billing", description = "Plans from signed Stripe webhooks"),
        (name = "browser", description = "Form endpoints for the admin UI"),
    )
)]
pub struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A session access token, or an API key (a value starting with the key prefix).",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
        components.add_security_scheme(
            "cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "gatehouse_access",
                "The session cookie (named __Host-gatehouse_access over https); mutations also need X-CSRF-Token.",
            ))),
        );
        components.add_security_scheme(
            "ops_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("secrets.ops_token; not required in local mode."))
                    .build(),
            ),
        );
    }
}

/// The document served at `/api/v1/openapi.json`, for this server's catalog.
pub fn document(catalog: &Catalog) -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the OpenAPI document serializes");
    doc["info"]["version"] = json!(env!("CARGO_PKG_VERSION"));
    link_field_names(&mut doc);
    forward_auth_answers_any_method(&mut doc);
    shared_responses(&mut doc);
    request_constraints(&mut doc, catalog);
    times(&mut doc);
    optional_bodies(&mut doc);
    doc
}

/// Bodies a handler reads only when they are there.
fn optional_bodies(doc: &mut Value) {
    for (_, _, op) in operations(doc) {
        if ["rotateApiKey", "refreshBrowserSession"]
            .contains(&op["operationId"].as_str().unwrap_or_default())
        {
            op["requestBody"]["required"] = json!(false);
        }
    }
}

pub fn document_json(catalog: &Catalog) -> String {
    document(catalog).to_string()
}

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Every operation of the document, with its path and method.
fn operations(doc: &mut Value) -> impl Iterator<Item = (String, &'static str, &mut Value)> {
    doc["paths"]
        .as_object_mut()
        .into_iter()
        .flat_map(|paths| paths.iter_mut())
        .flat_map(|(path, item)| {
            let path = path.clone();
            item.as_object_mut()
                .into_iter()
                .flat_map(|item| item.iter_mut())
                .filter_map(move |(method, op)| {
                    let method = METHODS.into_iter().find(|m| *m == method)?;
                    Some((path.clone(), method, op))
                })
        })
}

/// utoipa writes a Link Object's fields in snake case; OpenAPI spells them
/// `operationId`, `operationRef` and `requestBody`.
fn link_field_names(doc: &mut Value) {
    for (_, _, op) in operations(doc) {
        let Some(responses) = op["responses"].as_object_mut() else {
            continue;
        };
        for link in responses
            .values_mut()
            .filter_map(|r| r.get_mut("links").and_then(Value::as_object_mut))
            .flat_map(|links| links.values_mut().filter_map(Value::as_object_mut))
        {
            for (from, to) in [
                ("operation_id", "operationId"),
                ("operation_ref", "operationRef"),
                ("request_body", "requestBody"),
            ] {
                if let Some(v) = link.remove(from) {
                    link.insert(to.into(), v);
                }
            }
        }
    }
}

/// Forward-auth judges the method the proxy names, and answers whatever
/// method the proxy itself uses: one operation per method, each with its
/// own operationId (`checkForwardAuth` is GET).
fn forward_auth_answers_any_method(doc: &mut Value) {
    let item = &mut doc["paths"]["/api/v1/auth/check"];
    let get = item["get"].clone();
    for method in METHODS.into_iter().filter(|m| *m != "get") {
        let mut op = get.clone();
        let mut name = method.to_string();
        name[..1].make_ascii_uppercase();
        op["operationId"] = json!(format!("checkForwardAuth{name}"));
        item[method] = op;
    }
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}}
    })
}

fn retry_after() -> Value {
    json!({
        "description": "Seconds to wait before retrying (at least 1).",
        "required": true,
        "schema": {"type": "integer", "minimum": 1}
    })
}

/// Operations that never touch storage (so never answer 503).
const STORAGE_FREE: &[&str] = &[
    "checkHealth",
    "getOpenApiDocument",
    "getCatalog",
    "getMetrics",
];

/// The error answers operations share, by what they read, and the headers
/// every answer carries.
fn shared_responses(doc: &mut Value) {
    for (_, _, op) in operations(doc) {
        let id = op["operationId"].as_str().unwrap_or_default().to_string();
        let params = op["parameters"].as_array().cloned().unwrap_or_default();
        let has = |place: &str, name: Option<&str>| {
            params
                .iter()
                .any(|p| p["in"] == place && name.is_none_or(|n| p["name"] == n))
        };
        let credentials = op["security"].as_array().is_some_and(|reqs| {
            reqs.iter().any(|r| {
                ["bearer", "api_key", "cookie"]
                    .iter()
                    .any(|s| r.get(*s).is_some())
            })
        });
        let body_types: Vec<String> = op["requestBody"]["content"]
            .as_object()
            .map(|c| c.keys().cloned().collect())
            .unwrap_or_default();
        let json_body = body_types.iter().any(|t| t == "application/json");

        let mut shared: Vec<(&str, &str)> = Vec::new();
        if credentials {
            shared.push((
                "401",
                "missing_authorization, malformed_key, invalid_key or invalid_token",
            ));
            shared.push((
                "403",
                "forbidden (the role or credential kind may not do this), insufficient_scope, \
                 csrf_failed (cookie sessions) or forbidden_ip",
            ));
            shared.push((
                "429",
                "rate_limited: an API key's window is full; see Retry-After",
            ));
        }
        if has("header", Some("X-Project-Id")) {
            shared.push((
                "400",
                "project_required: the user is in several projects; name one with X-Project-Id",
            ));
            shared.push((
                "404",
                "not_found: no such project for this user (or no such resource)",
            ));
        }
        if has("path", None) {
            shared.push(("404", "not_found"));
        }
        if !body_types.is_empty() {
            shared.push(("413", "payload_too_large"));
        }
        if json_body {
            shared.push(("415", "unsupported_media_type: send application/json"));
            shared.push(("422", "validation_error: the message names the field"));
        }
        if has("query", None) && id != "refreshBrowserSession" {
            shared.push(("422", "validation_error: the message names the field"));
        }
        if !STORAGE_FREE.contains(&id.as_str()) {
            shared.push((
                "503",
                "unavailable: storage cannot answer right now; see Retry-After",
            ));
        }

        let responses = op["responses"]
            .as_object_mut()
            .expect("every operation has responses");
        responses.remove("default");
        for (status, description) in shared {
            responses
                .entry(status)
                .or_insert_with(|| error_response(description));
        }
        for (status, response) in responses.iter_mut() {
            let headers = response
                .as_object_mut()
                .expect("responses are inline")
                .entry("headers")
                .or_insert_with(|| json!({}));
            headers["X-Request-Id"] = json!({
                "description": "The request's id: the client's own `X-Request-Id` when it is 1-128 \
                                characters of `[A-Za-z0-9._-]`, else a generated `req_...`.",
                "required": true,
                "schema": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,128}$"}
            });
            if status == "429" && id != "checkForwardAuth" || status == "503" {
                headers["Retry-After"] = retry_after();
            }
        }
    }
    // Forward-auth's 429 also carries Retry-After.
    for (path, _, op) in operations(doc) {
        if path == "/api/v1/auth/check" {
            op["responses"]["429"]["headers"]["Retry-After"] = retry_after();
        }
    }
}

/// An RFC 3339 time as the server parses it (`time`'s Rfc3339: any one
/// ASCII separator between date and time, `Z` in either case). Month-day
/// combinations and leap seconds are left to the server.
const RFC3339: &str = r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[\x00-\x7F]([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?([Zz]|[+-]([01][0-9]|2[0-3]):[0-9]{2})$";

/// Unicode White_Space, as Rust's `str::trim` removes it.
const WHITESPACE: &str = r"\t\n\x0B\f\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000";
/// Unicode Cc (`char::is_control`).
const CONTROL: &str = r"\x00-\x1F\x7F-\x9F";

/// A pattern for text that, once trimmed, is 1..=`max` characters with no
/// control characters (what `Name::parse` and `owner_id` accept).
fn trimmed_text(max: usize) -> String {
    let edge = format!("[^{WHITESPACE}{CONTROL}]");
    format!(
        "^[{WHITESPACE}]*{edge}(?:[^{CONTROL}]{{0,{}}}{edge})?[{WHITESPACE}]*$",
        max - 2
    )
}

fn schema_mut<'a>(doc: &'a mut Value, name: &str) -> &'a mut Map<String, Value> {
    doc["components"]["schemas"][name]
        .as_object_mut()
        .unwrap_or_else(|| panic!("schema {name} is in the document"))
}

/// Merges `constraint` into property `field` of schema `name` (a `null`
/// removes a keyword); the property must exist, so a renamed field fails the
/// document's tests.
fn constrain(doc: &mut Value, name: &str, field: &str, constraint: Value) {
    let property = schema_mut(doc, name)
        .get_mut("properties")
        .and_then(|p| p.get_mut(field))
        .and_then(Value::as_object_mut)
        .unwrap_or_else(|| panic!("{name}.{field} is in the document"));
    for (k, v) in constraint.as_object().expect("a constraint is an object") {
        if v.is_null() {
            property.remove(k);
        } else {
            property.insert(k.clone(), v.clone());
        }
    }
}

/// One CIDR network or a single address, as `allowed_ips` takes them.
fn network() -> Value {
    let v4 = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}";
    json!({
        "description": "An IPv4 or IPv6 address, or a CIDR network such as 10.0.0.0/8",
        "anyOf": [
            {"type": "string", "format": "ipv4"},
            {"type": "string", "format": "ipv6"},
            {"type": "string", "pattern": format!("^{v4}/(3[0-2]|[12]?[0-9])$")},
        ]
    })
}

/// What the server enforces beyond the types the annotations give: request
/// types validated in `keys::input` and the catalog's scope names.
fn request_constraints(doc: &mut Value, catalog: &Catalog) {
    let scope_names: Vec<&str> = catalog.scopes.iter().map(|s| s.name.as_str()).collect();
    let scopes = json!({
        "type": "array",
        "maxItems": 50,
        "items": {"type": "string", "enum": scope_names},
        "description": "Scope names from the catalog (GET /api/v1/catalog); at most 50."
    });
    let name = json!({"pattern": trimmed_text(100), "minLength": null, "maxLength": null,
        "description": "1-100 characters once trimmed, no control characters."});
    let owner_id = json!({"pattern": trimmed_text(128), "minLength": null, "maxLength": null,
        "description": "The team's own id for whoever holds the key: 1-128 characters once trimmed, no control characters."});
    let allowed_ips = json!({"items": network(), "minItems": 1, "maxItems": 100,
        "description": "1-100 networks; the key fails with `forbidden_ip` from elsewhere. `null`: anywhere."});
    let expires_at = json!({"pattern": RFC3339,
        "description": "RFC 3339, in the future, at most 10 years ahead."});
    let environment =
        json!({"pattern": format!("^[{WHITESPACE}]*[a-z0-9_-]{{1,32}}[{WHITESPACE}]*$")});

    for body in ["CreateKeyBody", "PatchKeyBody"] {
        constrain(doc, body, "name", name.clone());
        constrain(doc, body, "owner_id", owner_id.clone());
        constrain(doc, body, "allowed_ips", allowed_ips.clone());
        constrain(doc, body, "expires_at", expires_at.clone());
        schema_mut(doc, body)["properties"]["scopes"] = scopes.clone();
    }
    if let Some(p) = schema_mut(doc, "PatchKeyBody")["properties"].get_mut("scopes") {
        p["type"] = json!(["array", "null"]);
    }
    constrain(doc, "CreateKeyBody", "environment", environment);
    // Absent or null: `{}`.
    constrain(
        doc,
        "CreateKeyBody",
        "metadata",
        json!({"type": ["object", "null"], "description": "At most 4096 bytes of JSON; default `{}`."}),
    );
    // expires_in_days and expires_at: one or the other.
    schema_mut(doc, "CreateKeyBody").insert(
        "not".into(),
        json!({
            "required": ["expires_in_days", "expires_at"],
            "properties": {"expires_in_days": {"type": "integer"}, "expires_at": {"type": "string"}}
        }),
    );
    constrain(
        doc,
        "RateLimitInput",
        "limit",
        json!({"minimum": 1, "maximum": 1_000_000_000}),
    );
    constrain(
        doc,
        "RateLimitInput",
        "window_secs",
        json!({"minimum": 1, "maximum": 86_400}),
    );
    constrain(
        doc,
        "CreditsInput",
        "remaining",
        json!({"minimum": 0, "maximum": 1_000_000_000_000_i64}),
    );
    constrain(
        doc,
        "RefillInput",
        "amount",
        json!({"minimum": 1, "maximum": 1_000_000_000_000_i64}),
    );
    constrain(doc, "CreateProjectBody", "name", name.clone());
    constrain(
        doc,
        "CreateWebhookBody",
        "url",
        json!({
            "description": "An absolute http(s) URL (as a browser parses it) without credentials. \
                            Outside local mode it must not resolve to a loopback, private, link-local \
                            or otherwise non-global address (unless webhooks.allow_private_targets \
                            is set)."
        }),
    );
    constrain(
        doc,
        "CreateWebhookBody",
        "events",
        json!({"items": {"type": "string", "enum": crate::webhooks::EVENTS}}),
    );
    for (_, _, op) in operations(doc) {
        if op["operationId"] != "getUsage" && op["operationId"] != "listAuditLog" {
            continue;
        }
        for param in op["parameters"].as_array_mut().into_iter().flatten() {
            if param["name"] == "from" || param["name"] == "to" {
                param["schema"]["pattern"] = json!(RFC3339);
            }
        }
    }
    constrain(
        doc,
        "VerifyBody",
        "scopes",
        json!({"maxItems": 50, "description": "Every scope listed is required; at most 50."}),
    );
    constrain(
        doc,
        "VerifyBody",
        "ip",
        json!({"anyOf": [{"type": "null"}, {"type": "string", "format": "ipv4"}, {"type": "string", "format": "ipv6"}]}),
    );
}

/// Every time in an answer is an RFC 3339 string in UTC: say so, so that
/// clients parse them as times.
fn times(doc: &mut Value) {
    const TIME_FIELDS: &[&str] = &[
        "created_at",
        "updated_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
        "next_attempt_at",
        "at",
        "t",
    ];
    for schema in doc["components"]["schemas"]
        .as_object_mut()
        .into_iter()
        .flat_map(|s| s.values_mut())
    {
        for (name, property) in schema
            .get_mut("properties")
            .and_then(Value::as_object_mut)
            .into_iter()
            .flat_map(|p| p.iter_mut())
        {
            let is_string =
                property["type"] == "string" || property["type"] == json!(["string", "null"]);
            // Times a client sends carry the pattern the server parses.
            let is_input = property.get("pattern").is_some();
            if TIME_FIELDS.contains(&name.as_str()) && is_string && !is_input {
                property["format"] = json!("date-time");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Value {
        document(&Catalog::from_config(&crate::config::Config::default()))
    }

    #[test]
    fn operation_ids_are_unique_and_every_operation_has_a_tag() {
        let mut doc = doc();
        let mut seen = std::collections::HashSet::new();
        for (path, method, op) in operations(&mut doc) {
            let id = op["operationId"].as_str().unwrap().to_string();
            assert!(
                id.chars().next().unwrap().is_ascii_lowercase() && !id.contains('_'),
                "{method} {path}: {id} is not camelCase"
            );
            assert!(seen.insert(id.clone()), "{id} is used twice");
            assert!(op["tags"][0].is_string(), "{method} {path} has no tag");
        }
        assert!(seen.contains("checkForwardAuthPost"));
    }

    #[test]
    fn shared_responses_follow_what_an_operation_reads() {
        let doc = doc();
        let create = &doc["paths"]["/api/v1/api-keys"]["post"]["responses"];
        for status in [
            "201", "400", "401", "403", "404", "413", "415", "422", "429", "503",
        ] {
            assert!(create[status].is_object(), "createApiKey lacks {status}");
        }
        assert!(create["default"].is_null());
        assert_eq!(create["429"]["headers"]["Retry-After"]["required"], true);
        let health = &doc["paths"]["/healthz"]["get"]["responses"];
        assert!(health["401"].is_null() && health["503"].is_null());
        assert_eq!(health["200"]["headers"]["X-Request-Id"]["required"], true);
    }

    #[test]
    fn scopes_come_from_the_catalog() {
        let mut config = crate::config::Config::default();
        config.scopes.push(crate::config::ScopeConfig {
            name: "orders:write".into(),
            description: "Place orders".into(),
        });
        let doc = document(&Catalog::from_config(&config));
        let names =
            &doc["components"]["schemas"]["CreateKeyBody"]["properties"]["scopes"]["items"]["enum"];
        assert!(names.as_array().unwrap().contains(&json!("orders:write")));
        assert!(names.as_array().unwrap().contains(&json!("keys:read")));
    }
}
