//! Every route, registered in one place. Handlers are thin: parse, authorize,
//! call the module that holds the logic, map the result.
//!
//! Routes are registered as resources (`web::resource(path).route(...)`) so
//! that a known path with an unsupported method answers 405, not 404.

pub mod auth;
pub mod billing;
pub mod catalog;
pub mod dev;
pub mod keys;
pub mod members;
pub mod ops;
pub mod projects;
pub mod usage;
pub mod verify;
pub mod views;
pub mod webhooks;

use actix_web::web::{self, delete, get, patch, post, resource};

pub fn configure(cfg: &mut web::ServiceConfig) {
    // The hot path first: routing tries resources in order, and the key
    // checks are matched by their whole path before the `/api/v1` scope
    // (entering a scope and matching inside it costs as much again).
    cfg.service(resource("/api/v1/keys/verify").route(post().to(verify::verify)))
        // Forward-auth answers any method: proxies send the original one.
        .service(resource("/api/v1/auth/check").to(verify::check))
        .service(resource("/healthz").route(get().to(ops::healthz)))
        .service(resource("/readyz").route(get().to(ops::readyz)))
        .service(resource("/metrics").route(get().to(ops::metrics)))
        .service(resource("/auth/refresh").route(post().to(auth::browser_refresh)))
        .service(
            web::scope("/api/v1")
                .service(resource("/catalog").route(get().to(catalog::catalog)))
                .service(resource("/openapi.json").route(get().to(ops::openapi)))
                .service(resource("/auth/send-code").route(post().to(auth::send_code)))
                .service(resource("/auth/verify-code").route(post().to(auth::verify_code)))
                .service(resource("/auth/refresh-token").route(post().to(auth::refresh_token)))
                .service(resource("/auth/revoke-token").route(post().to(auth::revoke_token)))
                .service(resource("/auth/logout").route(post().to(auth::logout)))
                .service(resource("/me").route(get().to(auth::me)))
                .service(
                    resource("/projects")
                        .route(get().to(projects::list))
                        .route(post().to(projects::create)),
                )
                .service(
                    resource("/members")
                        .route(get().to(members::list))
                        .route(post().to(members::add)),
                )
                .service(
                    resource("/members/{user_id}")
                        .route(patch().to(members::change))
                        .route(delete().to(members::remove)),
                )
                .service(resource("/dev/mailbox").route(get().to(dev::mailbox)))
                .service(
                    resource("/api-keys")
                        .route(get().to(keys::list))
                        .route(post().to(keys::create)),
                )
                .service(
                    resource("/api-keys/{id}")
                        .route(get().to(keys::get))
                        .route(patch().to(keys::patch))
                        .route(delete().to(keys::revoke)),
                )
                .service(resource("/api-keys/{id}/rotate").route(post().to(keys::rotate)))
                .service(resource("/keys/leaked").route(post().to(verify::leaked)))
                .service(resource("/usage").route(get().to(usage::usage)))
                .service(resource("/audit-log").route(get().to(usage::audit_log)))
                .service(
                    resource("/webhooks")
                        .route(get().to(webhooks::list))
                        .route(post().to(webhooks::create)),
                )
                .service(resource("/webhooks/{id}").route(delete().to(webhooks::delete)))
                .service(
                    resource("/webhooks/{id}/deliveries").route(get().to(webhooks::deliveries)),
                )
                .service(resource("/webhooks/{id}/test").route(post().to(webhooks::test)))
                .service(resource("/billing").route(get().to(billing::billing)))
                .service(
                    resource("/billing/stripe/webhook").route(post().to(billing::stripe_webhook)),
                ),
        );
    crate::ui::configure(cfg);
}
