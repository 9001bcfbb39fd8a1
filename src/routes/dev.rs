//! The local mailbox (local mode only, loopback clients only: it holds login codes).

use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult, ErrorCode, ErrorEnvelope};
use crate::http::RequestContext;
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

/// Messages "sent" in local mode, newest first. 404 outside local mode.
#[utoipa::path(get, path = "/api/v1/dev/mailbox", tag = "dev", operation_id = "listMailboxMessages",
    responses(
        (status = 200, description = "The local mailbox", body = Mailbox),
        (status = 403, description = "Only loopback clients may read it", body = ErrorEnvelope),
        (status = 404, description = "Not in local mode", body = ErrorEnvelope)))]
pub async fn mailbox(state: web::Data<AppState>, ctx: RequestContext) -> ApiResult<HttpResponse> {
    if !state.config.mode.is_local() {
        return Err(ApiError::not_found());
    }
    if !ctx.ip().is_loopback() {
        return Err(ApiError::new(ErrorCode::Forbidden)
            .with_message("The local mailbox answers only clients on this machine."));
    }
    let items = state.db.mailbox(100).await?;
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
