//! Operational routes: liveness, readiness, metrics, the OpenAPI document.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult, ErrorCode, ErrorEnvelope};
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok` (process up) or `ready` (database answers).
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "ops", operation_id = "checkHealth",
    responses((status = 200, description = "The process is up", body = Health)))]
pub async fn healthz() -> HttpResponse {
    // What `.json(Health { status: "ok" })` writes, without serializing it
    // and parsing the header values on every probe.
    let mut res = HttpResponse::Ok().body(r#"{"status":"ok"}"#);
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, crate::http::APPLICATION_JSON);
    h.insert(header::CACHE_CONTROL, crate::http::NO_STORE);
    res
}

/// The database answers queries, and so does Redis when `redis.url` is set;
/// the node is not stopping.
#[utoipa::path(get, path = "/readyz", tag = "ops", operation_id = "checkReadiness",
    responses(
        (status = 200, description = "Ready to serve", body = Health),
        (status = 503, description = "The database (or the configured Redis) does not answer, or the node is stopping", body = ErrorEnvelope)))]
pub async fn readyz(state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    // Like every 503 `unavailable` (SPEC section 5), with Retry-After.
    let not_ready = || {
        ApiError::new(ErrorCode::Unavailable).with_header(header::RETRY_AFTER, HeaderValue::from(1))
    };
    if state.http.is_draining() {
        return Err(not_ready().with_message("The node is stopping."));
    }
    state.store.ping().await.map_err(|e| {
        tracing::warn!(error = %e, "readiness check failed");
        not_ready()
    })?;
    if let Some(shared) = &state.shared_windows {
        // Checks still answer (on this node's own windows), but a load
        // balancer should prefer nodes that share them.
        if !shared.ping().await {
            return Err(not_ready()
                .with_message("Redis, which shares rate limits between nodes, does not answer."));
        }
    }
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(Health { status: "ready" }))
}

/// Prometheus metrics. Outside local mode it needs `Authorization: Bearer <ops_token>`.
#[utoipa::path(get, path = "/metrics", tag = "ops", operation_id = "getMetrics",
    security(("ops_token" = []), ()),
    responses(
        (status = 200, description = "Prometheus text exposition", content_type = "text/plain; version=0.0.4", body = String),
        (status = 401, description = "Missing or wrong ops token", body = ErrorEnvelope)))]
pub async fn metrics(req: HttpRequest, state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    if !state.config.mode.is_local() {
        let expected = state
            .config
            .secrets
            .ops_token
            .as_ref()
            .ok_or_else(|| ApiError::new(ErrorCode::InvalidToken))?;
        let presented = crate::http::extract::bearer_token(req.headers())
            .ok_or_else(|| ApiError::new(ErrorCode::MissingAuthorization))?;
        if !crate::crypto::secure_eq(presented.as_bytes(), expected.expose().as_bytes()) {
            return Err(
                ApiError::new(ErrorCode::InvalidToken).with_message("The ops token is wrong.")
            );
        }
    }
    Ok(HttpResponse::Ok()
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        ))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body({
            let feed = state.keys.feed();
            state
                .metrics
                .set_key_feed(feed.following(), feed.lag().as_secs_f64());
            state.metrics.render()
        }))
}

/// This document: OpenAPI 3.1, generated from the code.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "public", operation_id = "getOpenApiDocument",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object)))]
pub async fn openapi(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(state.openapi_json.clone())
}
