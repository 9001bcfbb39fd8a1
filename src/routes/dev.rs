//! The local mailbox (local mode only, loopback clients only: it holds login codes).

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult, ErrorEnvelope};
use crate::state::AppState;
use crate::types::rfc3339;

#[derive(Serialize, ToSchema)]
pub struct MailboxMessageView {
    pub id: i64,
    pub to: String,
    pub subject: String,
    pub body: String,
    pub created_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct Mailbox {
    /// Newest first (at most 100).
    pub items: Vec<MailboxMessageView>,
}

/// Who may see the mailbox (the JSON and its page): 404 outside local
/// mode; in local mode only a request made directly on this machine
/// (`http::host::is_direct_local`), else 403 `forbidden`.
pub fn require_mailbox_access(req: &HttpRequest, state: &AppState) -> ApiResult<()> {
    if !state.config.mode.is_local() {
        return Err(ApiError::not_found());
    }
    crate::http::host::require_direct_local(req)
}

/// Messages "sent" in local mode, newest first. 404 outside local mode.
#[utoipa::path(get, path = "/api/v1/dev/mailbox", tag = "dev", operation_id = "listMailboxMessages",
    responses(
        (status = 200, description = "The local mailbox", body = Mailbox),
        (status = 403, description = "Only requests made directly on this machine may read it", body = ErrorEnvelope),
        (status = 404, description = "Not in local mode", body = ErrorEnvelope)))]
pub async fn mailbox(req: HttpRequest, state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    require_mailbox_access(&req, &state)?;
    let items = state.store.mailbox(100).await?;
    Ok(HttpResponse::Ok()
        .insert_header(("cache-control", "no-store"))
        .json(Mailbox {
            items: items
                .into_iter()
                .map(|m| MailboxMessageView {
                    id: m.id,
                    to: m.to,
                    subject: m.subject,
                    body: m.body,
                    created_at: rfc3339(m.created_at),
                })
                .collect(),
        }))
}
