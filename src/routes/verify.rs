//! Checking keys for other services (SPEC section 9): `POST /keys/verify`,
//! the forward-auth endpoint, and leaked-key reports. These are the hot
//! path: a cached key is checked without any database I/O.

use std::borrow::Cow;
use std::net::IpAddr;

use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::principal::denial_error;
use crate::error::{ApiError, ApiResult, ErrorCode, ErrorEnvelope};
use crate::http::extract::bearer_token;
use crate::http::ratelimit::rate_limit_headers;
use crate::http::RequestContext;
use crate::keys::forward::original_request;
use crate::keys::store::{CheckInput, Denial, Purpose, Rendered};
use crate::routes::views::{whole_number, ObjectBody};
use crate::state::AppState;
use crate::store::audit::{Actor, ActorType};

#[derive(Deserialize, ToSchema)]
pub struct VerifyBody<'a> {
    /// Borrowed from the request body when it holds no escapes (no copy).
    #[serde(borrow)]
    #[schema(value_type = String)]
    pub key: Cow<'a, str>,
    /// Every scope listed is required.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The method of the request being checked (publishable keys: GET, HEAD, OPTIONS only).
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z]{1,16}$")]
    pub method: Option<String>,
    /// The end client's address, for `allowed_ips`.
    #[serde(default)]
    pub ip: Option<String>,
    /// Credits to spend (default 1; 0 spends nothing).
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(minimum = 0, maximum = 1000000)]
    pub cost: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct RateLimitState {
    pub limit: u32,
    pub remaining: u64,
    pub reset_secs: u64,
}

#[derive(Serialize, ToSchema)]
pub struct CreditsRemaining {
    pub remaining: i64,
}

#[derive(Serialize, ToSchema)]
pub struct VerifyValid {
    /// Always `true`.
    pub valid: bool,
    pub key_id: String,
    pub project_id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: crate::keys::KeyType,
    pub environment: String,
    pub scopes: Vec<String>,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    pub expires_at: Option<String>,
    pub owner_id: Option<String>,
    pub credits: Option<CreditsRemaining>,
    pub ratelimit: RateLimitState,
}

#[derive(Serialize, ToSchema)]
pub struct VerifyInvalid {
    /// Always `false`.
    pub valid: bool,
    /// `malformed_key`, `invalid_key`, `forbidden_ip`, `insufficient_scope`,
    /// `rate_limited`, `usage_exceeded` or `quota_exceeded`.
    pub code: ErrorCode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u64>,
}

/// The verify answer, for the OpenAPI document (the valid answer is written
/// by `valid_body` from pre-rendered parts).
#[allow(clippy::large_enum_variant)]
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum VerifyAnswer {
    Valid(VerifyValid),
    Invalid(VerifyInvalid),
}

fn parse_method(raw: Option<&str>) -> ApiResult<&str> {
    match raw {
        None => Ok("GET"),
        Some(m) if (1..=16).contains(&m.len()) && m.bytes().all(|b| b.is_ascii_alphabetic()) => {
            Ok(m)
        }
        Some(_) => Err(ApiError::validation(
            "method",
            "must be an HTTP method such as GET or POST",
        )),
    }
}

/// A valid verify answer: the key's pre-rendered members plus the live
/// credits and rate-limit state (the shape of [`VerifyValid`]).
fn valid_body(
    rendered: &Rendered,
    credits: Option<i64>,
    rate: &crate::keys::limiter::RateStatus,
) -> Vec<u8> {
    let mut digits = itoa::Buffer::new();
    let mut body = Vec::with_capacity(rendered.verify_members_len() + 112);
    body.extend_from_slice(b"{\"valid\":true,");
    rendered.write_verify_members(&mut body);
    match credits {
        Some(n) => {
            body.extend_from_slice(b",\"credits\":{\"remaining\":");
            body.extend_from_slice(digits.format(n).as_bytes());
            body.push(b'}');
        }
        None => body.extend_from_slice(b",\"credits\":null"),
    }
    body.extend_from_slice(b",\"ratelimit\":{\"limit\":");
    body.extend_from_slice(digits.format(rate.limit).as_bytes());
    body.extend_from_slice(b",\"remaining\":");
    body.extend_from_slice(digits.format(rate.remaining).as_bytes());
    body.extend_from_slice(b",\"reset_secs\":");
    body.extend_from_slice(digits.format(rate.reset_secs).as_bytes());
    body.extend_from_slice(b"}}");
    body
}

/// Check a key for your own service. Always 200 with `valid` true or false
/// (422 only for a malformed request body).
#[utoipa::path(post, path = "/api/v1/keys/verify", tag = "verify", operation_id = "verifyApiKey",
    request_body = VerifyBody,
    responses(
        (status = 200, description = "The verdict", body = VerifyAnswer),
        (status = 422, description = "Malformed request", body = ErrorEnvelope)))]
pub async fn verify(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let parsed: VerifyBody<'_> = crate::http::extract::parse_json(&req, &body)?;
    // serde also reads a struct from an array of its fields.
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(ApiError::validation(
            "body",
            "the body must be a JSON object",
        ));
    }
    let body = parsed;
    let method = parse_method(body.method.as_deref())?;
    let ip = match body.ip.as_deref() {
        None => None,
        Some(raw) => Some(
            raw.trim()
                .parse::<IpAddr>()
                .map_err(|_| ApiError::validation("ip", "must be an IPv4 or IPv6 address"))?,
        ),
    };
    let cost = body.cost.unwrap_or(1);
    if !(0..=1_000_000).contains(&cost) {
        return Err(ApiError::validation(
            "cost",
            "must be between 0 and 1000000",
        ));
    }
    if body.scopes.len() > 50 {
        return Err(ApiError::validation("scopes", "at most 50 scopes"));
    }
    let checked = state
        .keys
        .check(
            &body.key,
            &CheckInput {
                method,
                scopes: &body.scopes,
                ip,
                cost,
                purpose: Purpose::Verify,
            },
            state.quota_gate(),
        )
        .await?;
    let rate_headers = rate_headers_of(&checked);
    let body = match (checked.outcome, &checked.rendered, &checked.rate) {
        (Ok(()), Some(rendered), Some(rate)) => {
            state.metrics.observe_verification("verify", "valid");
            valid_body(rendered, checked.credits, rate)
        }
        (outcome, _, _) => {
            let denial = outcome.err().unwrap_or(Denial::Invalid);
            state
                .metrics
                .observe_verification("verify", denial.code().as_str());
            serde_json::to_vec(&VerifyInvalid {
                valid: false,
                code: denial.code(),
                retry_after_secs: (denial == Denial::RateLimited)
                    .then(|| checked.rate.map(|r| r.reset_secs.max(1)).unwrap_or(1)),
            })
            .map_err(ApiError::internal)?
        }
    };
    let mut res = HttpResponse::Ok().body(body);
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, crate::http::APPLICATION_JSON);
    h.insert(header::CACHE_CONTROL, crate::http::NO_STORE);
    for (name, value) in rate_headers.into_iter().flatten() {
        h.insert(name, value);
    }
    Ok(res)
}

const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
const X_GATEHOUSE_KEY_ID: HeaderName = HeaderName::from_static("x-gatehouse-key-id");
const X_GATEHOUSE_PROJECT_ID: HeaderName = HeaderName::from_static("x-gatehouse-project-id");
const X_GATEHOUSE_SCOPES: HeaderName = HeaderName::from_static("x-gatehouse-scopes");

/// Forward-auth for nginx `auth_request`, Caddy `forward_auth` and Traefik
/// `ForwardAuth` (any method). The key comes from `Authorization: Bearer`
/// or `X-API-Key`; the original method and path from the proxy's headers
/// (see [`crate::keys::forward`]: both header families must agree, and the
/// path is normalised before the `[[routes]]` rules are matched, longest
/// prefix first). A report that cannot be trusted is refused with 403
/// `forbidden` before the key is looked at.
#[utoipa::path(get, path = "/api/v1/auth/check", tag = "verify", operation_id = "checkForwardAuth",
    params(
        ("X-Forwarded-Method" = Option<String>, Header, example = "GET", description = "The original request's method (Caddy, Traefik); \
            without either method header, the check's own method"),
        ("X-Original-Method" = Option<String>, Header, example = "GET", description = "The original request's method (nginx); \
            must agree with X-Forwarded-Method when both are sent"),
        ("X-Forwarded-Uri" = Option<String>, Header, example = "/v1/orders/42?expand=items", description = "The original request's path and query (Caddy, Traefik), \
            normalised before the `[[routes]]` rules are matched; a path that cannot be normalised \
            (an encoded `/` or `\\`, a control character, `..` above the root) is 403 `forbidden`, \
            and so is a path parameter (`;` in a segment) unless `forward_auth.path_parameters = \"strip\"`"),
        ("X-Original-URI" = Option<String>, Header, example = "/v1/orders/42?expand=items", description = "The original request's path and query (nginx); \
            must agree with X-Forwarded-Uri when both are sent")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Allowed; see X-Gatehouse-Key-Id, X-Gatehouse-Project-Id, X-Gatehouse-Scopes and the RateLimit fields"),
        (status = 401, description = "missing_authorization, malformed_key or invalid_key", body = ErrorEnvelope),
        (status = 403, description = "forbidden_ip or insufficient_scope; forbidden when the proxy's report of the original request is missing, ambiguous or cannot be normalised", body = ErrorEnvelope),
        (status = 429, description = "rate_limited, usage_exceeded or quota_exceeded; see Retry-After", body = ErrorEnvelope)))]
pub async fn check(
    req: HttpRequest,
    state: web::Data<AppState>,
    ctx: RequestContext,
) -> ApiResult<HttpResponse> {
    let raw = match bearer_token(req.headers()) {
        Some(token) => token,
        None => match req.headers().get(&X_API_KEY).and_then(|v| v.to_str().ok()) {
            Some(key) => key.trim(),
            None => {
                state
                    .metrics
                    .observe_verification("forward_auth", "missing_authorization");
                return Err(forward_auth_error(ApiError::new(
                    ErrorCode::MissingAuthorization,
                )));
            }
        },
    };
    let original = match original_request(
        req.headers(),
        req.method().as_str(),
        state.config.forward_auth.path_parameters,
    ) {
        Ok(original) => original,
        Err(refusal) => {
            state
                .metrics
                .observe_verification("forward_auth", "forbidden");
            return Err(forward_auth_error(
                ApiError::new(ErrorCode::Forbidden).with_message(refusal.message()),
            ));
        }
    };
    let method = original.method;
    let required: Vec<String> =
        crate::catalog::scope_for_path(&state.config.routes, &original.path)
            .map(|s| vec![s.to_string()])
            .unwrap_or_default();
    let checked = state
        .keys
        .check(
            raw,
            &CheckInput {
                method,
                scopes: &required,
                ip: Some(ctx.ip()),
                cost: 1,
                purpose: Purpose::Verify,
            },
            state.quota_gate(),
        )
        .await?;
    let rate_headers = rate_headers_of(&checked);
    match (checked.outcome, checked.rendered) {
        (Ok(()), Some(rendered)) => {
            state.metrics.observe_verification("forward_auth", "valid");
            let mut res = HttpResponse::Ok().finish();
            let h = res.headers_mut();
            h.insert(X_GATEHOUSE_KEY_ID, rendered.key_id());
            h.insert(X_GATEHOUSE_PROJECT_ID, rendered.project_id());
            h.insert(X_GATEHOUSE_SCOPES, rendered.scopes());
            for (name, value) in rate_headers.into_iter().flatten() {
                h.insert(name, value);
            }
            Ok(res)
        }
        (outcome, _) => {
            let denial = outcome.err().unwrap_or(crate::keys::store::Denial::Invalid);
            state
                .metrics
                .observe_verification("forward_auth", denial.code().as_str());
            let mut err = forward_auth_error(denial_error(denial, checked.rate));
            for (name, value) in rate_headers.into_iter().flatten() {
                err = err.with_header(name, value);
            }
            Err(err)
        }
    }
}

/// The RateLimit fields for a checked key (none when the key is unknown),
/// set on the answer directly: these routes build their own responses.
fn rate_headers_of(
    checked: &crate::keys::store::Checked,
) -> Option<[(HeaderName, HeaderValue); 2]> {
    checked.rate.map(|rate| {
        let policy = checked.rendered.as_ref().map(Rendered::policy);
        rate_limit_headers(&rate, policy.as_ref())
    })
}

/// Proxies that drop the body of the check (nginx `auth_request`) can still
/// tell the client why: the code is repeated in `X-Gatehouse-Error`.
fn forward_auth_error(err: ApiError) -> ApiError {
    let code = HeaderValue::from_static(err.code.as_str());
    err.with_header(HeaderName::from_static("x-gatehouse-error"), code)
}

#[derive(Deserialize, ToSchema)]
pub struct LeakReport {
    pub token: String,
    /// Where it was found.
    #[serde(default)]
    pub url: Option<String>,
    /// Who found it (a scanner's name).
    #[serde(default)]
    pub source: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct LeakResult {
    /// The first 16 characters of the reported token.
    pub token_prefix: String,
    /// `revoked`, `already_inactive` or `not_found`.
    pub result: String,
}

/// Report leaked keys (for secret scanners; no authentication, rate limited
/// per client address). Every active key among the tokens is revoked. The
/// answer reveals no project.
#[utoipa::path(post, path = "/api/v1/keys/leaked", tag = "verify", operation_id = "reportLeakedKeys",
    request_body = Vec<LeakReport>,
    responses(
        (status = 200, description = "One result per token, in order", body = Vec<LeakResult>),
        (status = 422, description = "Malformed request (at most 100 tokens)", body = ErrorEnvelope),
        (status = 429, description = "Too many reports from this address (an IPv6 client counts by its /64 network)", body = ErrorEnvelope)))]
pub async fn leaked(
    state: web::Data<AppState>,
    ctx: RequestContext,
    body: web::Json<Vec<ObjectBody<LeakReport>>>,
) -> ApiResult<HttpResponse> {
    // Counted in the database, so reports spread over several nodes are
    // counted together.
    let refused = state
        .store
        .throttle_hit(
            ctx.throttle_subject().bucket("leak"),
            60,
            10,
            state.store.clock().now(),
        )
        .await?;
    if let Some(retry_after) = refused {
        return Err(ApiError::new(ErrorCode::RateLimited)
            .with_message("Too many leak reports from this address.")
            .with_header(
                actix_web::http::header::RETRY_AFTER,
                HeaderValue::from(retry_after),
            ));
    }
    if body.len() > 100 {
        return Err(ApiError::validation(
            "body",
            "at most 100 tokens per report",
        ));
    }
    let actor = Actor {
        kind: ActorType::System,
        id: None,
        ip: Some(ctx.ip().to_string()),
        request_id: Some(ctx.request_id.to_string()),
    };
    let mut results = Vec::with_capacity(body.len());
    for report in body.iter() {
        let token_prefix: String = report.token.chars().take(16).collect();
        let result = match state.keys.hash_of(report.token.trim()) {
            None => "not_found",
            Some(hash) => {
                let details = serde_json::json!({
                    "url": report.url.as_deref().map(|u| u.chars().take(2048).collect::<String>()),
                    "source": report.source.as_deref().map(|s| s.chars().take(200).collect::<String>()),
                });
                match state
                    .key_service()
                    .revoke_leaked(hash, actor.clone(), details)
                    .await?
                {
                    None => "not_found",
                    Some((_, false)) => "already_inactive",
                    Some((key, true)) => {
                        tracing::warn!(key_id = %key.id, project_id = %key.project_id, "leaked key revoked");
                        "revoked"
                    }
                }
            }
        };
        results.push(LeakResult {
            token_prefix,
            result: result.into(),
        });
    }
    Ok(HttpResponse::Ok().json(results))
}
