//! The OpenAPI 3.1 document, generated from the handlers' annotations.
//! Every operation also documents the error envelope as its `default`
//! response, since any route can answer 404/405/413/422/500 in that shape.

use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Gatehouse",
        description = "Self-hosted API keys and email-code login. Every error has the shape \
                       {\"error\": {\"code\", \"message\", \"request_id\"}}."
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
    modifiers(&SecuritySchemes, &DefaultErrorResponse),
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

struct DefaultErrorResponse;

impl Modify for DefaultErrorResponse {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let ops: [&mut Option<Operation>; 8] = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.options,
                &mut item.head,
                &mut item.patch,
                &mut item.trace,
            ];
            for op in ops.into_iter().flatten() {
                op.responses
                    .responses
                    .entry("default".into())
                    .or_insert_with(|| {
                        RefOr::T(
                            ResponseBuilder::new()
                                .description("Any error, in the error envelope")
                                .content(
                                    "application/json",
                                    utoipa::openapi::ContentBuilder::new()
                                        .schema(Some(utoipa::openapi::Ref::from_schema_name(
                                            "ErrorEnvelope",
                                        )))
                                        .build(),
                                )
                                .build(),
                        )
                    });
            }
        }
    }
}

pub fn document_json() -> String {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc.to_json().expect("the OpenAPI document serializes")
}
