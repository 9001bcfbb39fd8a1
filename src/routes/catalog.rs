use actix_web::{web, HttpResponse};

use crate::catalog::Catalog;
use crate::state::AppState;

/// Scopes, key types and their prefixes, plans and the default rate limit.
#[utoipa::path(get, path = "/api/v1/catalog", tag = "public", operation_id = "getCatalog",
    responses((status = 200, description = "What projects can use", body = Catalog)))]
pub async fn catalog(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("cache-control", "no-cache"))
        .json(&state.catalog)
}
