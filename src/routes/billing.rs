//! Billing (SPEC section 10): the Stripe webhook, the only way a plan
//! changes, and the current plan with its limits and this month's use.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::ProjectAccess;
use crate::billing::{interpret, limits, verify_signature};
use crate::error::{ApiError, ApiResult, ErrorCode, ErrorEnvelope};
use crate::keys::credits::Interval;
use crate::routes::views::ProjectHeader;
use crate::state::AppState;
use crate::store::billing::StripeOutcome;
use crate::types::Role;

#[derive(Serialize, ToSchema)]
pub struct Received {
    pub received: bool,
    /// The event id was seen before and changed nothing.
    pub duplicate: bool,
}

#[derive(Serialize, ToSchema)]
pub struct Limits {
    /// `null`: unlimited.
    pub max_keys: Option<u64>,
    /// `null`: unlimited.
    pub monthly_verifications: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct BillingUsage {
    /// Active keys.
    pub keys: i64,
    /// Successful verifications since the start of this UTC month.
    pub verifications_this_month: u64,
}

#[derive(Serialize, ToSchema)]
pub struct BillingView {
    pub plan: String,
    pub limits: Limits,
    pub usage: BillingUsage,
    /// Whether Stripe billing is configured on this server.
    pub billing_enabled: bool,
}

/// Stripe's webhook. Verified on the raw bytes before anything is parsed;
/// each event id is applied once.
#[utoipa::path(post, path = "/api/v1/billing/stripe/webhook", tag = "billing", operation_id = "receiveStripeEvent",
    params(("Stripe-Signature" = String, Header, description = "`t=<unix time>,v1=<hex HMAC-SHA256>`, as Stripe sends it")),
    request_body(content = Object, description = "A Stripe event, signed in the Stripe-Signature header"),
    responses(
        (status = 200, description = "Accepted (also for events that change nothing)", body = Received),
        (status = 400, description = "invalid_signature: missing, wrong or stale signature", body = ErrorEnvelope),
        (status = 404, description = "Billing is not configured", body = ErrorEnvelope)))]
pub async fn stripe_webhook(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let Some(secret) = state.config.billing.stripe_webhook_secret.as_ref() else {
        return Err(ApiError::not_found());
    };
    let header = req
        .headers()
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !verify_signature(header, &body, secret.expose(), state.store.clock().now()) {
        return Err(ApiError::new(ErrorCode::InvalidSignature));
    }
    let event: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::validation("body", e))?;
    let (Some(id), Some(kind)) = (event["id"].as_str(), event["type"].as_str()) else {
        return Err(ApiError::validation(
            "body",
            "a Stripe event has an id and a type",
        ));
    };
    if id.len() > 255 {
        return Err(ApiError::validation("id", "is too long"));
    }
    let action = interpret(&event, &state.config);
    let outcome = state
        .store
        .apply_stripe_event(id.to_string(), kind.to_string(), action)
        .await?;
    match &outcome {
        StripeOutcome::PlanChanged {
            project_id,
            from,
            to,
        } => {
            tracing::info!(event = id, project_id, from, to, "plan changed by Stripe");
            if let Some(q) = state.quotas.as_ref() {
                q.invalidate(project_id);
            }
        }
        StripeOutcome::Recorded(note) => {
            tracing::info!(event = id, kind, note, "Stripe event recorded")
        }
        // Answered 200 all the same: Stripe would retry a failure for days,
        // and the retry could not apply either (SPEC section 10).
        StripeOutcome::NotApplied(why) => {
            tracing::warn!(event = id, kind, why, "Stripe event recorded, not applied")
        }
        StripeOutcome::Duplicate => {
            tracing::info!(event = id, kind, "Stripe event already processed")
        }
    }
    Ok(HttpResponse::Ok().json(Received {
        received: true,
        duplicate: outcome == StripeOutcome::Duplicate,
    }))
}

/// The project's plan, its limits and this month's use (session member+).
#[utoipa::path(get, path = "/api/v1/billing", tag = "billing", operation_id = "getBilling",
    params(ProjectHeader),
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 200, description = "Plan, limits and usage", body = BillingView),
        (status = 403, description = "API keys cannot read billing", body = ErrorEnvelope)))]
pub async fn billing(state: web::Data<AppState>, access: ProjectAccess) -> ApiResult<HttpResponse> {
    access.require(Role::Member)?;
    let plan = access.project.plan.clone();
    let (max_keys, monthly) = limits(&state.config, &plan);
    state.keys.usage.flush(&*state.store).await?;
    let month_start = Interval::Monthly.period_start(state.store.clock().now());
    let keys = state
        .store
        .count_active_keys(access.project.id.clone().into())
        .await?;
    let verifications = state
        .store
        .project_verifications_since(access.project.id.clone().into(), month_start)
        .await?;
    Ok(HttpResponse::Ok().json(BillingView {
        plan,
        limits: Limits {
            max_keys,
            monthly_verifications: monthly,
        },
        usage: BillingUsage {
            keys,
            verifications_this_month: verifications,
        },
        billing_enabled: state.config.billing_enabled(),
    }))
}
