//! Login and sessions (SPEC section 6): send-code, verify-code,
//! refresh-token, revoke-token, logout, me, and the browser `/auth/refresh`.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::cookies;
use crate::auth::login::{self, Grant};
use crate::auth::principal::same_origin;
use crate::auth::redirect::safe_next;
use crate::auth::{Principal, Via};
use crate::error::{ApiError, ApiResult, ErrorCode, ErrorEnvelope};
use crate::http::RequestContext;
use crate::routes::views::{no_store, Empty, MembershipView, ObjectBody, UserView};
use crate::state::AppState;
use crate::types::Email;

#[derive(Deserialize, ToSchema)]
pub struct SendCodeBody {
    #[schema(example = "alice@acme.test", format = Email, max_length = 254)]
    pub email: String,
}

#[derive(Serialize, ToSchema)]
pub struct SendCodeAnswer {
    /// Always `sent`, whether or not the address may log in.
    #[schema(example = "sent")]
    pub status: String,
    /// How many seconds a code is valid (`auth.code_ttl_secs`); the same for
    /// every address. The login page and the email state it alike.
    #[schema(example = 600)]
    pub expires_in: u64,
    /// The code itself, only when `dev.expose_codes` is on (local mode demos).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct VerifyCodeBody {
    #[schema(format = Email, max_length = 254)]
    pub email: String,
    #[schema(example = "123456", max_length = 64)]
    pub code: String,
    /// Set the tokens as cookies instead of returning them.
    #[serde(default)]
    pub cookie: bool,
}

#[derive(Serialize, ToSchema)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    #[schema(example = "bearer")]
    pub token_type: String,
    /// Seconds the access token lives.
    pub expires_in: u64,
    pub user: UserView,
}

#[derive(Serialize, ToSchema)]
pub struct CookieLogin {
    pub user: UserView,
    /// Send as `X-CSRF-Token` on every cookie-authenticated mutation.
    pub csrf_token: String,
}

/// The verify-code answer: tokens, or (with `"cookie": true`) the user and
/// the CSRF token with the tokens set as cookies.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum LoginAnswer {
    Tokens(TokenPair),
    Cookies(CookieLogin),
}

#[derive(Deserialize, ToSchema)]
pub struct RefreshTokenBody {
    pub refresh_token: String,
}

#[derive(Serialize, ToSchema)]
pub struct KeyMeView {
    pub project: crate::routes::views::ProjectView,
    pub key: crate::routes::keys::KeyView,
}

#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum MeAnswer {
    Session(MeView),
    Key(Box<KeyMeView>),
}

#[derive(Serialize, ToSchema)]
pub struct MeView {
    pub user: UserView,
    pub memberships: Vec<MembershipView>,
    /// Present when the session came from a cookie.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csrf_token: Option<String>,
}

/// The form `POST /auth/refresh` takes.
#[derive(Deserialize, ToSchema)]
pub struct BrowserRefreshForm {
    /// Where to go afterwards: a same-site path (one leading `/`, no scheme,
    /// no `//` or `/\\`, no control characters, also after percent-decoding).
    /// Anything else, or nothing, means `/`.
    #[schema(example = "/keys")]
    pub next: Option<String>,
}

fn parse_email(raw: &str) -> ApiResult<Email> {
    Email::parse(raw).map_err(|why| ApiError::validation("email", why))
}

fn token_pair(state: &AppState, grant: Grant) -> TokenPair {
    TokenPair {
        access_token: grant.access_token,
        refresh_token: grant.refresh_token,
        token_type: "bearer".into(),
        expires_in: state.config.auth.access_ttl_secs,
        user: (&grant.user).into(),
    }
}

fn set_session_cookies(res: &mut HttpResponse, state: &AppState, grant: &Grant) -> ApiResult<()> {
    let a = &state.config.auth;
    for cookie in cookies::session(
        state.https,
        grant.access_token.clone(),
        a.access_ttl_secs as i64,
        grant.refresh_token.clone(),
        a.session_max_secs as i64,
    ) {
        res.add_cookie(&cookie).map_err(ApiError::internal)?;
    }
    Ok(())
}

fn clear_session_cookies(res: &mut HttpResponse, state: &AppState) -> ApiResult<()> {
    for cookie in cookies::cleared(state.https) {
        res.add_cookie(&cookie).map_err(ApiError::internal)?;
    }
    Ok(())
}

/// Send a one-time login code by email.
#[utoipa::path(post, path = "/api/v1/auth/send-code", tag = "auth", operation_id = "sendLoginCode",
    request_body = SendCodeBody,
    responses(
        (status = 202, description = "Sent if the address may log in; the same answer otherwise", body = SendCodeAnswer),
        (status = 422, description = "Malformed email", body = ErrorEnvelope),
        (status = 429, description = "Throttled; see Retry-After", body = ErrorEnvelope)))]
pub async fn send_code(
    state: web::Data<AppState>,
    ctx: RequestContext,
    body: web::Json<ObjectBody<SendCodeBody>>,
) -> ApiResult<HttpResponse> {
    let email = parse_email(&body.email)?;
    let code = login::send_code(&state.login(), email, &ctx).await?;
    Ok(no_store(HttpResponse::Accepted().json(SendCodeAnswer {
        status: "sent".into(),
        expires_in: state.config.auth.code_ttl_secs,
        code,
    })))
}

/// Exchange the code for a session: tokens in the body, or cookies with `"cookie": true`.
#[utoipa::path(post, path = "/api/v1/auth/verify-code", tag = "auth", operation_id = "verifyLoginCode",
    request_body = VerifyCodeBody,
    responses(
        (status = 200, description = "Logged in", body = LoginAnswer, links(
            ("RefreshToken" = (operation_id = "refreshToken",
                request_body = json!({"refresh_token": "$response.body#/refresh_token"}))),
            ("RevokeToken" = (operation_id = "revokeRefreshToken",
                request_body = json!({"refresh_token": "$response.body#/refresh_token"}))))),
        (status = 401, description = "invalid_code: wrong, expired, used or burned", body = ErrorEnvelope),
        (status = 422, description = "Malformed request", body = ErrorEnvelope),
        (status = 429, description = "rate_limited: more than 30 attempts a minute from this address (an IPv6 client counts by its /64 network); see Retry-After", body = ErrorEnvelope)))]
pub async fn verify_code(
    req: HttpRequest,
    state: web::Data<AppState>,
    ctx: RequestContext,
    body: web::Json<ObjectBody<VerifyCodeBody>>,
) -> ApiResult<HttpResponse> {
    let email = parse_email(&body.email)?;
    if body.code.chars().count() > 64 {
        return Err(ApiError::validation("code", "is too long"));
    }
    // The same for every address, known or not: no oracle, bounded writes.
    // Counted in the database: attempts spread over several nodes count
    // together.
    let refused = state
        .store
        .throttle_hit(
            ctx.throttle_subject().bucket("code"),
            60,
            30,
            state.store.clock().now(),
        )
        .await?;
    if let Some(retry_after) = refused {
        return Err(ApiError::new(ErrorCode::RateLimited)
            .with_message("Too many login attempts from this address; retry later.")
            .with_header(header::RETRY_AFTER, header::HeaderValue::from(retry_after)));
    }
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(256).collect());
    let grant = login::verify_code(
        &state.login(),
        email,
        &body.code,
        body.cookie,
        &ctx,
        user_agent,
    )
    .await?;
    if grant.via_cookie {
        let mut res = HttpResponse::Ok().json(CookieLogin {
            user: (&grant.user).into(),
            csrf_token: state.keyring.csrf_token(&grant.session_id),
        });
        set_session_cookies(&mut res, &state, &grant)?;
        Ok(no_store(res))
    } else {
        Ok(no_store(HttpResponse::Ok().json(token_pair(&state, grant))))
    }
}

/// Rotate a refresh token into a new pair. A spent token revokes its session.
#[utoipa::path(post, path = "/api/v1/auth/refresh-token", tag = "auth", operation_id = "refreshToken",
    request_body = RefreshTokenBody,
    responses(
        (status = 200, description = "A new pair", body = TokenPair, links(
            ("RefreshToken" = (operation_id = "refreshToken",
                request_body = json!({"refresh_token": "$response.body#/refresh_token"}))),
            ("RevokeToken" = (operation_id = "revokeRefreshToken",
                request_body = json!({"refresh_token": "$response.body#/refresh_token"}))))),
        (status = 401, description = "invalid_token, or token_reused (the session is now revoked)", body = ErrorEnvelope)))]
pub async fn refresh_token(
    state: web::Data<AppState>,
    ctx: RequestContext,
    body: web::Json<ObjectBody<RefreshTokenBody>>,
) -> ApiResult<HttpResponse> {
    let grant = login::refresh(&state.login(), &body.refresh_token, &ctx).await?;
    Ok(no_store(HttpResponse::Ok().json(token_pair(&state, grant))))
}

/// Revoke the session a refresh token belongs to. Always 200.
#[utoipa::path(post, path = "/api/v1/auth/revoke-token", tag = "auth", operation_id = "revokeRefreshToken",
    request_body = RefreshTokenBody,
    responses((status = 200, description = "Revoked (or nothing to revoke)", body = Empty)))]
pub async fn revoke_token(
    state: web::Data<AppState>,
    body: web::Json<ObjectBody<RefreshTokenBody>>,
) -> ApiResult<HttpResponse> {
    if !body.refresh_token.is_empty() && body.refresh_token.len() <= 200 {
        let hash = state.keyring.token_hash(&body.refresh_token);
        state.store.revoke_by_refresh_token(hash).await?;
    }
    Ok(no_store(HttpResponse::Ok().json(Empty {})))
}

/// End the current session and clear its cookies.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth", operation_id = "logout",
    security(("cookie" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "Logged out", body = Empty),
        (status = 401, description = "Not logged in", body = ErrorEnvelope),
        (status = 403, description = "csrf_failed", body = ErrorEnvelope)))]
pub async fn logout(
    state: web::Data<AppState>,
    ctx: RequestContext,
    principal: Principal,
) -> ApiResult<HttpResponse> {
    let session = principal.session()?;
    state
        .store
        .revoke_session(session.session_id.clone(), "logout", principal.actor(&ctx))
        .await?;
    let mut res = HttpResponse::Ok()
        .insert_header(("clear-site-data", "\"cookies\""))
        .json(Empty {});
    clear_session_cookies(&mut res, &state)?;
    Ok(no_store(res))
}

/// The caller: a user with memberships (plus the CSRF token for cookie
/// sessions), or an API key with its project.
#[utoipa::path(get, path = "/api/v1/me", tag = "auth", operation_id = "getMe",
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "The caller", body = MeAnswer),
        (status = 401, description = "Not authenticated", body = ErrorEnvelope)))]
pub async fn me(state: web::Data<AppState>, principal: Principal) -> ApiResult<HttpResponse> {
    if let Principal::Key(k) = &principal {
        let project = state
            .store
            .project(k.key.project_id.to_string().into())
            .await?
            .ok_or_else(|| ApiError::new(ErrorCode::InvalidKey))?;
        return Ok(no_store(HttpResponse::Ok().json(KeyMeView {
            project: (&project).into(),
            key: state.key_view(&k.key),
        })));
    }
    let session = principal.session()?;
    let memberships = state
        .store
        .memberships(session.user.id.clone().into())
        .await?;
    Ok(no_store(HttpResponse::Ok().json(MeView {
        user: (&session.user).into(),
        memberships: memberships.iter().map(Into::into).collect(),
        csrf_token:
            (session.via == Via::Cookie).then(|| state.keyring.csrf_token(&session.session_id)),
    })))
}

/// For the UI's "session expired" panel: exchanges the refresh cookie for
/// fresh cookies and answers 303 to `next` when it is a same-site path
/// (else `/`). Without a good refresh cookie: 303 to `/login?next=...`.
#[utoipa::path(post, path = "/auth/refresh", tag = "browser", operation_id = "refreshBrowserSession",
    request_body(content = BrowserRefreshForm, content_type = "application/x-www-form-urlencoded",
        description = "The form of the UI's \"session expired\" panel"),
    params(
        ("gatehouse_refresh" = Option<String>, Cookie, description = "The refresh cookie set at login \
            (`__Host-gatehouse_refresh` when the public URL is https). Without a good one the answer \
            is a redirect to the login page."),
        ("next" = Option<String>, Query, description = "Read when the form has no `next` field")),
    responses(
        (status = 303, description = "With a good refresh cookie: fresh session cookies and a redirect to `next` \
            when it is a same-site path, else to `/`. Without one: the cookies cleared and a redirect to \
            `/login?next=...`. Never off-site.",
            headers(
                ("Location" = String, description = "`next`, `/`, or `/login?next=...`: always a path on this site"),
                ("Set-Cookie" = String, description = "The new session cookies, or the cleared ones"))),
        (status = 403, description = "csrf_failed: a cross-site form (a foreign `Origin`, or `Sec-Fetch-Site: cross-site`)", body = ErrorEnvelope)))]
pub async fn browser_refresh(
    req: HttpRequest,
    state: web::Data<AppState>,
    ctx: RequestContext,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    if !same_origin(&req, &state) {
        return Err(
            ApiError::new(ErrorCode::CsrfFailed).with_message("Cross-site requests are refused.")
        );
    }
    let next_raw = url::form_urlencoded::parse(&body)
        .chain(url::form_urlencoded::parse(req.query_string().as_bytes()))
        .find(|(k, _)| k == "next")
        .map(|(_, v)| v.into_owned());
    let next = next_raw
        .as_deref()
        .and_then(safe_next)
        .unwrap_or("/")
        .to_string();

    let names = cookies::names(state.https);
    let refreshed = match req.cookie(names.refresh) {
        Some(cookie) if !cookie.value().is_empty() => {
            login::refresh(&state.login(), cookie.value(), &ctx).await
        }
        _ => Err(ApiError::new(ErrorCode::InvalidToken)),
    };
    let res = match refreshed {
        Ok(grant) => {
            let mut res = HttpResponse::SeeOther()
                .insert_header((header::LOCATION, next.as_str()))
                .finish();
            set_session_cookies(&mut res, &state, &grant)?;
            res
        }
        Err(e) if matches!(e.code, ErrorCode::InvalidToken | ErrorCode::TokenReused) => {
            let login_url = format!(
                "/login?next={}",
                url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
            );
            let mut res = HttpResponse::SeeOther()
                .insert_header((header::LOCATION, login_url))
                .finish();
            clear_session_cookies(&mut res, &state)?;
            res
        }
        Err(e) => return Err(e),
    };
    Ok(no_store(res))
}
