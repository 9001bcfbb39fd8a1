//! Usage figures and the audit log of the current project (SPEC section 10).

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::ProjectAccess;
use crate::error::{ApiError, ApiResult, ErrorEnvelope};
use crate::routes::views::{PageQuery, Pagination, ProjectHeader};
use crate::state::AppState;
use crate::store::audit::AuditFilter;
use crate::store::usage::UsageCounts;
use crate::store::{KeyId, ProjectId};
use crate::types::{rfc3339, Role};

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// RFC 3339; default 24 hours before `to`.
    pub from: Option<String>,
    /// RFC 3339; default now.
    pub to: Option<String>,
    /// `hour` (default) or `day`.
    #[param(pattern = "^(hour|day)$")]
    pub granularity: Option<String>,
    /// Only this key.
    pub key_id: Option<String>,
}

#[derive(Serialize, ToSchema, Default, Clone, Copy)]
pub struct Counts {
    pub valid: u64,
    pub invalid: u64,
    pub rate_limited: u64,
    /// Every other failed check (forbidden_ip, insufficient_scope, usage_exceeded, quota_exceeded).
    pub refused: u64,
}

impl From<UsageCounts> for Counts {
    fn from(c: UsageCounts) -> Self {
        Counts {
            valid: c.valid,
            invalid: c.invalid,
            rate_limited: c.rate_limited,
            refused: c.refused,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct Point {
    /// Start of the bucket, RFC 3339.
    pub t: String,
    #[serde(flatten)]
    pub counts: Counts,
}

#[derive(Serialize, ToSchema)]
pub struct UsageReport {
    pub series: Vec<Point>,
    pub totals: Counts,
}

fn parse_time(field: &str, raw: &str) -> ApiResult<i64> {
    time::OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|_| {
            ApiError::validation(
                field,
                "must be an RFC 3339 time such as 2026-11-22T00:00:00Z",
            )
        })
}

/// Verifications over time (session member+, or a key with `analytics:read`).
#[utoipa::path(get, path = "/api/v1/usage", tag = "usage", operation_id = "getUsage",
    params(UsageQuery, ProjectHeader),
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "Counts per bucket and in total", body = UsageReport),
        (status = 404, description = "No such key", body = ErrorEnvelope),
        (status = 422, description = "Invalid range or granularity", body = ErrorEnvelope)))]
pub async fn usage(
    state: web::Data<AppState>,
    access: ProjectAccess,
    query: web::Query<UsageQuery>,
) -> ApiResult<HttpResponse> {
    access.require_role_or_scope(Role::Member, "analytics:read")?;
    let now = state.store.clock().now();
    let to = query
        .to
        .as_deref()
        .map(|t| parse_time("to", t))
        .transpose()?
        .unwrap_or(now);
    let from = query
        .from
        .as_deref()
        .map(|t| parse_time("from", t))
        .transpose()?
        .unwrap_or(to - 86_400);
    if from >= to {
        return Err(ApiError::validation("from", "must be before `to`"));
    }
    let bucket = match query.granularity.as_deref() {
        None | Some("hour") => 3600,
        Some("day") => 86_400,
        Some(_) => {
            return Err(ApiError::validation(
                "granularity",
                "must be `hour` or `day`",
            ))
        }
    };
    if (to - from) / bucket > 10_000 {
        return Err(ApiError::validation(
            "from",
            "the range holds more than 10000 buckets; use granularity=day or a shorter range",
        ));
    }
    if let Some(key_id) = &query.key_id {
        if key_id.len() > 64
            || state
                .store
                .key(
                    ProjectId::from(access.project.id.as_str()),
                    KeyId::from(key_id.as_str()),
                )
                .await?
                .is_none()
        {
            return Err(ApiError::not_found().with_message("No such key."));
        }
    }
    // Include what is still being aggregated in memory.
    state.keys.usage.flush(&*state.store).await?;
    let series = state
        .store
        .usage_series(
            ProjectId::from(access.project.id.as_str()),
            query.key_id.as_deref().map(KeyId::from),
            from,
            to,
            bucket,
        )
        .await?;
    let mut totals = Counts::default();
    let points = series
        .into_iter()
        .map(|(t, c)| {
            totals.valid += c.valid;
            totals.invalid += c.invalid;
            totals.rate_limited += c.rate_limited;
            totals.refused += c.refused;
            Point {
                t: rfc3339(t),
                counts: c.into(),
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(UsageReport {
        series: points,
        totals,
    }))
}

/// Which entries the audit log shows; every filter is optional and they
/// apply together.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only this action, e.g. `key.created`.
    #[param(min_length = 1, max_length = 64)]
    pub action: Option<String>,
    /// Only entries by this kind of actor: `user`, `key` or `system`.
    #[param(pattern = "^(user|key|system)$")]
    pub actor_type: Option<String>,
    /// Only entries by this actor (a user or key id).
    #[param(min_length = 1, max_length = 128)]
    pub actor_id: Option<String>,
    /// Only entries about this target (a key, user, project or session id).
    #[param(min_length = 1, max_length = 128)]
    pub target: Option<String>,
    /// RFC 3339: only entries recorded at or after this time.
    pub from: Option<String>,
    /// RFC 3339: only entries recorded before this time.
    pub to: Option<String>,
}

impl AuditQuery {
    /// The filter, or a 422 naming the first parameter that cannot be one.
    fn filter(&self) -> ApiResult<AuditFilter> {
        let text = |field: &str, value: &Option<String>, max: usize| -> ApiResult<Option<String>> {
            match value.as_deref() {
                None => Ok(None),
                Some(v) if v.is_empty() || v.chars().count() > max => Err(ApiError::validation(
                    field,
                    format!("must be 1 to {max} characters"),
                )),
                Some(v) => Ok(Some(v.to_string())),
            }
        };
        let actor_type = match self.actor_type.as_deref() {
            None => None,
            Some(t @ ("user" | "key" | "system")) => Some(t.to_string()),
            Some(_) => {
                return Err(ApiError::validation(
                    "actor_type",
                    "must be user, key or system",
                ))
            }
        };
        let since = self
            .from
            .as_deref()
            .map(|t| parse_time("from", t))
            .transpose()?;
        let until = self
            .to
            .as_deref()
            .map(|t| parse_time("to", t))
            .transpose()?;
        if let (Some(since), Some(until)) = (since, until) {
            if since >= until {
                return Err(ApiError::validation("from", "must be before `to`"));
            }
        }
        Ok(AuditFilter {
            action: text("action", &self.action, 64)?,
            actor_type,
            actor_id: text("actor_id", &self.actor_id, 128)?,
            target: text("target", &self.target, 128)?,
            since,
            until,
        })
    }
}

#[derive(Serialize, ToSchema)]
pub struct ActorView {
    /// `user`, `key` or `system`.
    #[serde(rename = "type")]
    pub kind: String,
    pub id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditItem {
    pub id: i64,
    pub action: String,
    pub actor: ActorView,
    pub target: Option<String>,
    pub ip: Option<String>,
    pub request_id: Option<String>,
    pub created_at: String,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    pub items: Vec<AuditItem>,
    pub pagination: Pagination,
}

/// The audit log, newest first (owner/admin, or a key with `analytics:read`),
/// narrowed by the optional filters.
#[utoipa::path(get, path = "/api/v1/audit-log", tag = "usage", operation_id = "listAuditLog",
    params(PageQuery, AuditQuery, ProjectHeader),
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "One page of events", body = AuditPage),
        (status = 403, description = "forbidden or insufficient_scope", body = ErrorEnvelope),
        (status = 422, description = "A filter that cannot be one", body = ErrorEnvelope)))]
pub async fn audit_log(
    state: web::Data<AppState>,
    access: ProjectAccess,
    query: web::Query<PageQuery>,
    filters: web::Query<AuditQuery>,
) -> ApiResult<HttpResponse> {
    access.require_role_or_scope(Role::Admin, "analytics:read")?;
    let paging = query.paging()?;
    let filter = filters.filter()?;
    let (rows, total) = state
        .store
        .audit_page(
            ProjectId::from(access.project.id.as_str()),
            filter,
            paging.offset(),
            paging.limit,
        )
        .await?;
    Ok(HttpResponse::Ok().json(AuditPage {
        items: rows
            .into_iter()
            .map(|e| AuditItem {
                id: e.id,
                action: e.action,
                actor: ActorView {
                    kind: e.actor_type,
                    id: e.actor_id,
                },
                target: e.target,
                ip: e.ip,
                request_id: e.request_id,
                created_at: rfc3339(e.created_at),
                details: e.details,
            })
            .collect(),
        pagination: paging.describe(total),
    }))
}
