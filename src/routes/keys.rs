//! API keys of the current project (SPEC section 8).

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Principal, ProjectAccess};
use crate::error::{ApiError, ApiResult, ErrorCode, ErrorEnvelope};
use crate::http::RequestContext;
use crate::keys::input::{CreateKeyBody, PatchKeyBody};
use crate::keys::record::KeyRecord;
pub use crate::keys::view::KeyView;
use crate::routes::views::{no_store, ObjectBody, PageQuery, Pagination, ProjectHeader};
use crate::state::AppState;
use crate::types::PathId;
use crate::types::{rfc3339, Role};

#[derive(Serialize, ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub key: KeyView,
    /// The key itself. Shown once: store it now.
    pub plaintext_key: String,
}

#[derive(Serialize, ToSchema)]
pub struct KeyList {
    pub items: Vec<KeyView>,
    pub pagination: Pagination,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct KeyListQuery {
    /// From 1 (default 1).
    #[param(minimum = 1, maximum = 1000000)]
    #[serde(default, deserialize_with = "crate::routes::views::query_number")]
    pub page: Option<i64>,
    /// Items per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    #[serde(default, deserialize_with = "crate::routes::views::query_number")]
    pub limit: Option<i64>,
    /// Include revoked and expired keys.
    #[serde(default)]
    pub include_inactive: bool,
    /// Only keys with this `owner_id`.
    pub owner_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Revoked {
    pub id: String,
    pub is_active: bool,
    pub revoked_at: Option<String>,
}

#[derive(Deserialize, ToSchema, Default)]
pub struct RotateBody {
    /// 0 (default): the old key stops at once; up to 604800 (7 days).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 604800)]
    pub expire_previous_in_secs: i64,
}

/// The project's keys, newest first.
#[utoipa::path(get, path = "/api/v1/api-keys", tag = "keys", operation_id = "listApiKeys",
    params(KeyListQuery, ProjectHeader),
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "One page of keys", body = KeyList, links(
            ("GetFirstApiKey" = (operation_id = "getApiKey", parameters(("id" = "$response.body#/items/0/id")),
                description = "The first key of the page")),
            ("UpdateFirstApiKey" = (operation_id = "updateApiKey", parameters(("id" = "$response.body#/items/0/id")))),
            ("RotateFirstApiKey" = (operation_id = "rotateApiKey", parameters(("id" = "$response.body#/items/0/id")))),
            ("RevokeFirstApiKey" = (operation_id = "revokeApiKey", parameters(("id" = "$response.body#/items/0/id")))))),
        (status = 403, description = "forbidden or insufficient_scope (keys need keys:read)", body = ErrorEnvelope)))]
pub async fn list(
    state: web::Data<AppState>,
    access: ProjectAccess,
    query: web::Query<KeyListQuery>,
) -> ApiResult<HttpResponse> {
    access.require_role_or_scope(Role::Member, "keys:read")?;
    let paging = PageQuery {
        page: query.page,
        limit: query.limit,
    }
    .paging()?;
    let filter = crate::store::keys::KeyFilter {
        include_inactive: query.include_inactive,
        owner_id: query.owner_id.clone(),
    };
    let (rows, total) = state
        .store
        .keys_page(
            access.project.id.clone().into(),
            filter,
            paging.offset(),
            paging.limit,
        )
        .await?;
    let mut items = Vec::with_capacity(rows.len());
    for k in rows {
        items.push(state.key_view(&state.with_shared_balance(k).await?));
    }
    Ok(HttpResponse::Ok().json(KeyList {
        items,
        pagination: paging.describe(total),
    }))
}

/// Issue a key (session owner/admin). The plaintext is in this answer only.
#[utoipa::path(post, path = "/api/v1/api-keys", tag = "keys", operation_id = "createApiKey",
    request_body = CreateKeyBody,
    params(ProjectHeader),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 201, description = "Created; `plaintext_key` is shown once", body = CreatedKey, links(
            ("GetApiKey" = (operation_id = "getApiKey", parameters(("id" = "$response.body#/id")))),
            ("UpdateApiKey" = (operation_id = "updateApiKey", parameters(("id" = "$response.body#/id")))),
            ("RotateApiKey" = (operation_id = "rotateApiKey", parameters(("id" = "$response.body#/id")))),
            ("RevokeApiKey" = (operation_id = "revokeApiKey", parameters(("id" = "$response.body#/id")))),
            ("VerifyApiKey" = (operation_id = "verifyApiKey", request_body = json!({"key": "$response.body#/plaintext_key"}),
                description = "Check the new key the way a service would")))),
        (status = 403, description = "forbidden (members, API keys) or plan_limit", body = ErrorEnvelope),
        (status = 422, description = "Invalid settings", body = ErrorEnvelope)))]
pub async fn create(
    state: web::Data<AppState>,
    ctx: RequestContext,
    access: ProjectAccess,
    body: web::Json<ObjectBody<CreateKeyBody>>,
) -> ApiResult<HttpResponse> {
    access.require(Role::Admin)?;
    let spec = body
        .into_inner()
        .into_inner()
        .validate(&state.catalog, state.store.clock().now())?;
    let (record, key) = state
        .key_service()
        .create(&access.project, spec, access.principal.actor(&ctx))
        .await?;
    Ok(no_store(HttpResponse::Created().json(CreatedKey {
        key: state.key_view(&record),
        plaintext_key: key.expose().to_string(),
    })))
}

async fn find(state: &AppState, access: &ProjectAccess, id: &str) -> ApiResult<KeyRecord> {
    if id.len() > 64 {
        return Err(ApiError::not_found().with_message("No such key."));
    }
    state
        .store
        .key(access.project.id.clone().into(), id.to_string().into())
        .await?
        .ok_or_else(|| ApiError::not_found().with_message("No such key."))
}

/// One key's metadata.
#[utoipa::path(get, path = "/api/v1/api-keys/{id}", tag = "keys", operation_id = "getApiKey",
    params(("id" = String, Path, max_length = 64, description = "The key's id (`key_...`)"), ProjectHeader),
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "The key", body = KeyView, links(
            ("UpdateApiKey" = (operation_id = "updateApiKey", parameters(("id" = "$response.body#/id")))),
            ("RotateApiKey" = (operation_id = "rotateApiKey", parameters(("id" = "$response.body#/id")))),
            ("RevokeApiKey" = (operation_id = "revokeApiKey", parameters(("id" = "$response.body#/id")))))),
        (status = 404, description = "No such key", body = ErrorEnvelope)))]
pub async fn get(
    state: web::Data<AppState>,
    access: ProjectAccess,
    id: web::Path<PathId>,
) -> ApiResult<HttpResponse> {
    access.require_role_or_scope(Role::Member, "keys:read")?;
    let key = find(&state, &access, &id).await?;
    let key = state.with_shared_balance(key).await?;
    Ok(HttpResponse::Ok().json(state.key_view(&key)))
}

/// Change a key's settings (owner/admin). Takes effect at once.
#[utoipa::path(patch, path = "/api/v1/api-keys/{id}", tag = "keys", operation_id = "updateApiKey",
    request_body = PatchKeyBody,
    params(("id" = String, Path, max_length = 64, description = "The key's id (`key_...`)"), ProjectHeader),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "Updated", body = KeyView, links(
            ("GetApiKey" = (operation_id = "getApiKey", parameters(("id" = "$response.body#/id")))),
            ("RotateApiKey" = (operation_id = "rotateApiKey", parameters(("id" = "$response.body#/id")))),
            ("RevokeApiKey" = (operation_id = "revokeApiKey", parameters(("id" = "$response.body#/id")))))),
        (status = 403, description = "forbidden", body = ErrorEnvelope),
        (status = 404, description = "No such key", body = ErrorEnvelope),
        (status = 422, description = "Invalid settings", body = ErrorEnvelope)))]
pub async fn patch(
    state: web::Data<AppState>,
    ctx: RequestContext,
    access: ProjectAccess,
    id: web::Path<PathId>,
    body: web::Json<ObjectBody<PatchKeyBody>>,
) -> ApiResult<HttpResponse> {
    access.require(Role::Admin)?;
    find(&state, &access, &id).await?;
    let key = state
        .key_service()
        .patch(
            &state.catalog,
            &access.project.id,
            &id,
            body.into_inner().into_inner(),
            access.principal.actor(&ctx),
        )
        .await?;
    Ok(HttpResponse::Ok().json(state.key_view(&key)))
}

/// Revoke a key (owner/admin; an API key may revoke only itself). Once this
/// answers, the key never verifies again.
#[utoipa::path(delete, path = "/api/v1/api-keys/{id}", tag = "keys", operation_id = "revokeApiKey",
    params(("id" = String, Path, max_length = 64, description = "The key's id (`key_...`)"), ProjectHeader),
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "Revoked; the key's metadata stays readable, with `is_active` false", body = Revoked),
        (status = 403, description = "forbidden", body = ErrorEnvelope),
        (status = 404, description = "No such key", body = ErrorEnvelope)))]
pub async fn revoke(
    state: web::Data<AppState>,
    ctx: RequestContext,
    access: ProjectAccess,
    id: web::Path<PathId>,
) -> ApiResult<HttpResponse> {
    match &access.principal {
        Principal::Key(k) if *k.key.id == **id => {}
        Principal::Key(_) => {
            return Err(ApiError::new(ErrorCode::Forbidden)
                .with_message("An API key may revoke only itself."))
        }
        Principal::Session(_) => access.require(Role::Admin)?,
    }
    find(&state, &access, &id).await?;
    let key = state
        .key_service()
        .revoke(&access.project.id, &id, access.principal.actor(&ctx))
        .await?;
    Ok(HttpResponse::Ok().json(Revoked {
        id: key.id.to_string(),
        is_active: false,
        revoked_at: key.revoked_at.map(rfc3339),
    }))
}

/// Replace a key with a new one with the same settings (owner/admin).
#[utoipa::path(post, path = "/api/v1/api-keys/{id}/rotate", tag = "keys", operation_id = "rotateApiKey",
    request_body(content = RotateBody, description = "Optional: without a body the previous key stops at once"),
    params(("id" = String, Path, max_length = 64, description = "The key's id (`key_...`)"), ProjectHeader),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 201, description = "The new key; `plaintext_key` is shown once", body = CreatedKey, links(
            ("GetApiKey" = (operation_id = "getApiKey", parameters(("id" = "$response.body#/id")), description = "The successor")),
            ("UpdateApiKey" = (operation_id = "updateApiKey", parameters(("id" = "$response.body#/id")))),
            ("RotateApiKey" = (operation_id = "rotateApiKey", parameters(("id" = "$response.body#/id")),
                description = "Rotate the successor (ends the predecessor's grace)")),
            ("RevokeApiKey" = (operation_id = "revokeApiKey", parameters(("id" = "$response.body#/id")))),
            ("VerifyApiKey" = (operation_id = "verifyApiKey", request_body = json!({"key": "$response.body#/plaintext_key"}))))),
        (status = 403, description = "forbidden", body = ErrorEnvelope),
        (status = 404, description = "No such key", body = ErrorEnvelope),
        (status = 409, description = "conflict: the key is not active, or already has a successor (rotate the successor)", body = ErrorEnvelope),
        (status = 422, description = "Invalid grace period", body = ErrorEnvelope)))]
pub async fn rotate(
    state: web::Data<AppState>,
    ctx: RequestContext,
    access: ProjectAccess,
    id: web::Path<PathId>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    access.require(Role::Admin)?;
    // The body is optional; when present it must be valid (a typo must not
    // silently mean "no grace").
    let grace = if body.iter().all(u8::is_ascii_whitespace) {
        0
    } else {
        serde_json::from_slice::<ObjectBody<RotateBody>>(&body)
            .map_err(|e| ApiError::validation("body", e))?
            .expire_previous_in_secs
    };
    if !(0..=604_800).contains(&grace) {
        return Err(ApiError::validation(
            "expire_previous_in_secs",
            "must be between 0 and 604800 (7 days)",
        ));
    }
    find(&state, &access, &id).await?;
    let (record, key) = state
        .key_service()
        .rotate(&access.project, &id, grace, access.principal.actor(&ctx))
        .await?;
    Ok(no_store(HttpResponse::Created().json(CreatedKey {
        key: state.key_view(&record),
        plaintext_key: key.expose().to_string(),
    })))
}
