//! Outgoing webhooks of the current project (SPEC section 10): session
//! owner/admin, or an API key with `webhooks:manage`.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::ProjectAccess;
use crate::store::work::Endpoint;
use crate::store::ProjectId;
use crate::types::PathId;

fn project_of(access: &ProjectAccess) -> ProjectId {
    ProjectId::from(access.project.id.as_str())
}
use crate::error::{ApiError, ApiResult, ErrorEnvelope};
use crate::routes::views::{Empty, ObjectBody, PageQuery, Pagination, ProjectHeader};
use crate::state::AppState;
use crate::types::{rfc3339, Role};
use crate::webhooks::{new_secret, validate_url, EVENTS};

#[derive(Deserialize, ToSchema)]
pub struct CreateWebhookBody {
    #[schema(example = "https://hooks.acme.test/gatehouse", max_length = 2048)]
    pub url: String,
    /// Event types to receive (see the list in the description).
    #[schema(min_items = 1)]
    pub events: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookView {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub is_active: bool,
    /// Why the endpoint was disabled (a 410 answer).
    pub disabled_reason: Option<String>,
    pub created_at: String,
}

impl From<&Endpoint> for WebhookView {
    fn from(e: &Endpoint) -> Self {
        WebhookView {
            id: e.id.clone(),
            url: e.url.clone(),
            events: e.events.clone(),
            is_active: e.is_active,
            disabled_reason: e.disabled_reason.clone(),
            created_at: rfc3339(e.created_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct CreatedWebhook {
    #[serde(flatten)]
    pub webhook: WebhookView,
    /// `whsec_<base64>`: verify signatures with it. Shown once.
    pub secret: String,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookList {
    pub items: Vec<WebhookView>,
}

#[derive(Serialize, ToSchema)]
pub struct AttemptItem {
    pub attempt: u32,
    pub at: String,
    /// The HTTP status the endpoint answered, if it answered.
    pub response_status: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryItem {
    pub id: i64,
    /// The `webhook-id` header of every attempt.
    pub webhook_id: String,
    pub event_type: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    pub created_at: String,
    pub next_attempt_at: Option<String>,
    pub attempts: Vec<AttemptItem>,
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryList {
    pub items: Vec<DeliveryItem>,
    pub pagination: Pagination,
}

fn allow(access: &ProjectAccess) -> ApiResult<()> {
    access.require_role_or_scope(Role::Admin, "webhooks:manage")
}

async fn find(state: &AppState, access: &ProjectAccess, id: &str) -> ApiResult<Endpoint> {
    if id.len() > 64 {
        return Err(ApiError::not_found().with_message("No such webhook."));
    }
    state
        .store
        .webhook(project_of(access), id.to_string())
        .await?
        .ok_or_else(|| ApiError::not_found().with_message("No such webhook."))
}

/// The project's webhook endpoints.
#[utoipa::path(get, path = "/api/v1/webhooks", tag = "webhooks", operation_id = "listWebhooks",
    params(ProjectHeader),
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    responses((status = 200, description = "Endpoints (without secrets)", body = WebhookList, links(
            ("ListFirstWebhookDeliveries" = (operation_id = "listWebhookDeliveries", parameters(("id" = "$response.body#/items/0/id")))),
            ("TestFirstWebhook" = (operation_id = "sendWebhookTest", parameters(("id" = "$response.body#/items/0/id")))),
            ("DeleteFirstWebhook" = (operation_id = "deleteWebhook", parameters(("id" = "$response.body#/items/0/id")))))),
        (status = 403, description = "forbidden or insufficient_scope", body = ErrorEnvelope)))]
pub async fn list(state: web::Data<AppState>, access: ProjectAccess) -> ApiResult<HttpResponse> {
    allow(&access)?;
    let items = state.store.webhooks(project_of(&access)).await?;
    Ok(HttpResponse::Ok().json(WebhookList {
        items: items.iter().map(Into::into).collect(),
    }))
}

/// Add an endpoint. Events: key.created, key.updated, key.revoked,
/// key.rotated, key.leaked, member.added, member.removed, billing.plan_changed.
#[utoipa::path(post, path = "/api/v1/webhooks", tag = "webhooks", operation_id = "createWebhook",
    request_body = CreateWebhookBody,
    params(ProjectHeader),
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    responses((status = 201, description = "Created; the signing secret is shown once", body = CreatedWebhook, links(
            ("SendWebhookTest" = (operation_id = "sendWebhookTest", parameters(("id" = "$response.body#/id")))),
            ("ListWebhookDeliveries" = (operation_id = "listWebhookDeliveries", parameters(("id" = "$response.body#/id")))),
            ("DeleteWebhook" = (operation_id = "deleteWebhook", parameters(("id" = "$response.body#/id")))))),
        (status = 403, description = "forbidden or insufficient_scope", body = ErrorEnvelope),
        (status = 422, description = "Invalid URL or events", body = ErrorEnvelope)))]
pub async fn create(
    state: web::Data<AppState>,
    access: ProjectAccess,
    body: web::Json<ObjectBody<CreateWebhookBody>>,
) -> ApiResult<HttpResponse> {
    allow(&access)?;
    let allow_private = state.config.mode.is_local() || state.config.webhooks.allow_private_targets;
    let url = validate_url(body.url.trim(), allow_private)
        .map_err(|why| ApiError::validation("url", why))?;
    if body.events.is_empty() {
        return Err(ApiError::validation("events", "list at least one event"));
    }
    let mut events: Vec<String> = Vec::new();
    for e in &body.events {
        if !EVENTS.contains(&e.as_str()) {
            return Err(ApiError::validation(
                "events",
                format!("`{e}` is not an event; choose from {}", EVENTS.join(", ")),
            ));
        }
        if !events.contains(e) {
            events.push(e.clone());
        }
    }
    let secret = new_secret();
    let endpoint = state
        .store
        .create_webhook(
            project_of(&access),
            url.to_string(),
            events,
            secret.clone(),
            access.user_id().map(String::from),
        )
        .await?;
    Ok(HttpResponse::Created()
        .insert_header(("cache-control", "no-store"))
        .json(CreatedWebhook {
            webhook: (&endpoint).into(),
            secret,
        }))
}

/// Remove an endpoint (and its pending deliveries).
#[utoipa::path(delete, path = "/api/v1/webhooks/{id}", tag = "webhooks", operation_id = "deleteWebhook",
    params(("id" = String, Path, max_length = 64, description = "The endpoint's id (`whk_...`)"), ProjectHeader),
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    responses((status = 200, description = "Deleted", body = Empty), (status = 404, description = "No such webhook", body = ErrorEnvelope)))]
pub async fn delete(
    state: web::Data<AppState>,
    access: ProjectAccess,
    id: web::Path<PathId>,
) -> ApiResult<HttpResponse> {
    allow(&access)?;
    find(&state, &access, &id).await?;
    state
        .store
        .delete_webhook(project_of(&access), id.into_inner().into_string())
        .await?;
    Ok(HttpResponse::Ok().json(Empty {}))
}

/// Every delivery to the endpoint with every attempt, newest first.
#[utoipa::path(get, path = "/api/v1/webhooks/{id}/deliveries", tag = "webhooks", operation_id = "listWebhookDeliveries",
    params(("id" = String, Path, max_length = 64, description = "The endpoint's id (`whk_...`)"), PageQuery, ProjectHeader),
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    responses((status = 200, description = "Deliveries", body = DeliveryList), (status = 404, description = "No such webhook", body = ErrorEnvelope)))]
pub async fn deliveries(
    state: web::Data<AppState>,
    access: ProjectAccess,
    id: web::Path<PathId>,
    query: web::Query<PageQuery>,
) -> ApiResult<HttpResponse> {
    allow(&access)?;
    let endpoint = find(&state, &access, &id).await?;
    let paging = query.paging()?;
    let (rows, total) = state
        .store
        .deliveries(endpoint.id, paging.offset(), paging.limit)
        .await?;
    Ok(HttpResponse::Ok().json(DeliveryList {
        items: rows
            .into_iter()
            .map(|d| DeliveryItem {
                id: d.id,
                webhook_id: d.message_id,
                event_type: d.event_type,
                status: d.status,
                created_at: rfc3339(d.created_at),
                next_attempt_at: d.next_attempt_at_ms.map(|ms| rfc3339(ms / 1000)),
                attempts: d
                    .attempts
                    .into_iter()
                    .map(|a| AttemptItem {
                        attempt: a.attempt,
                        at: rfc3339(a.at),
                        response_status: a.response_status,
                        error: a.error,
                        duration_ms: a.duration_ms,
                    })
                    .collect(),
            })
            .collect(),
        pagination: paging.describe(total),
    }))
}

/// Queue a `webhook.test` event for this endpoint only.
#[utoipa::path(post, path = "/api/v1/webhooks/{id}/test", tag = "webhooks", operation_id = "sendWebhookTest",
    params(("id" = String, Path, max_length = 64, description = "The endpoint's id (`whk_...`)"), ProjectHeader),
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    responses((status = 202, description = "Queued", body = Empty, links(
            ("ListWebhookDeliveries" = (operation_id = "listWebhookDeliveries", parameters(("id" = "$request.path.id")),
                description = "The test delivery appears here")))), (status = 404, description = "No such webhook", body = ErrorEnvelope)))]
pub async fn test(
    state: web::Data<AppState>,
    access: ProjectAccess,
    id: web::Path<PathId>,
) -> ApiResult<HttpResponse> {
    allow(&access)?;
    let endpoint = find(&state, &access, &id).await?;
    state
        .store
        .send_test_event(project_of(&access), endpoint.id)
        .await?;
    Ok(HttpResponse::Accepted().json(Empty {}))
}
