//! Every route, registered in one place. Handlers are thin: parse, authorize,
//! call the module that holds the logic, map the result.
//!
//! Routes are registered as resources (`web::resource(path).route(...)`) so
//! that a known path with an unsupported method answers 405, not 404.

pub mod catalog;
pub mod ops;

use actix_web::web::{self, get, resource};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/healthz").route(get().to(ops::healthz)))
        .service(resource("/readyz").route(get().to(ops::readyz)))
        .service(resource("/metrics").route(get().to(ops::metrics)))
        .service(
            web::scope("/api/v1")
                .service(resource("/catalog").route(get().to(catalog::catalog)))
                .service(resource("/openapi.json").route(get().to(ops::openapi))),
        );
    crate::ui::configure(cfg);
}
