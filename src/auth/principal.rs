//! Who is calling (SPEC section 5): one extractor, [`Principal`], turns the
//! credential of a request into a caller, and [`ProjectAccess`] adds the
//! project it acts on. Credentials, in order: `Authorization: Bearer`,
//! `X-API-Key`, the session cookie. A bearer value that starts with
//! `{keys.prefix}_sk_` / `_pk_` is an API key; otherwise an access token.
//! An API key is never accepted from a cookie.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use actix_web::http::header::{self, HeaderMap};
use actix_web::http::Method;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};

use crate::error::{ApiError, ErrorCode};
use crate::http::extract::bearer_token;
use crate::http::ratelimit::RateHeaders;
use crate::http::RequestContext;
use crate::keys::limiter::RateStatus;
use crate::keys::looks_like_key;
use crate::keys::record::KeyRecord;
use crate::keys::store::{CheckInput, Denial, Purpose};
use crate::state::AppState;
use crate::store::audit::{Actor, ActorType};
use crate::store::directory::{Membership, Project, User};
use crate::types::Role;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    Bearer,
    Cookie,
}

#[derive(Clone, Debug)]
pub struct SessionPrincipal {
    pub session_id: String,
    pub user: User,
    pub via: Via,
}

#[derive(Clone, Debug)]
pub struct KeyPrincipal {
    pub key: Arc<KeyRecord>,
}

#[derive(Clone, Debug)]
pub enum Principal {
    Session(SessionPrincipal),
    Key(KeyPrincipal),
}

impl Principal {
    /// The session caller; an API key gets 403 `forbidden` (keys may not
    /// manage people, projects or other keys).
    pub fn session(&self) -> Result<&SessionPrincipal, ApiError> {
        match self {
            Principal::Session(s) => Ok(s),
            Principal::Key(_) => Err(ApiError::new(ErrorCode::Forbidden)
                .with_message("API keys cannot do this; log in as a member of the project.")),
        }
    }

    pub fn actor(&self, ctx: &RequestContext) -> Actor {
        let (kind, id) = match self {
            Principal::Session(s) => (ActorType::User, s.user.id.clone()),
            Principal::Key(k) => (ActorType::Key, k.key.id.to_string()),
        };
        Actor {
            kind,
            id: Some(id),
            ip: Some(ctx.ip().to_string()),
            request_id: Some(ctx.request_id.to_string()),
        }
    }
}

/// The error for a refused key, with `Retry-After` when rate limited.
pub fn denial_error(denial: Denial, rate: Option<RateStatus>) -> ApiError {
    let mut err = ApiError::new(denial.code());
    if denial == Denial::RateLimited {
        let retry = rate.map(|r| r.reset_secs.max(1)).unwrap_or(1);
        err = err
            .with_message(format!(
                "The key's rate limit is reached; retry in {retry} s."
            ))
            .with_header(header::RETRY_AFTER, header::HeaderValue::from(retry));
    }
    err
}

fn state_of(req: &HttpRequest) -> Result<web::Data<AppState>, ApiError> {
    req.app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or_else(|| ApiError::internal("application state missing"))
}

fn cookie_value(req: &HttpRequest, name: &str) -> Option<String> {
    req.cookie(name)
        .map(|c| c.value().to_string())
        .filter(|v| !v.is_empty())
}

impl FromRequest for Principal {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { authenticate(&req).await })
    }
}

async fn authenticate(req: &HttpRequest) -> Result<Principal, ApiError> {
    let state = state_of(req)?;
    let prefix = state.config.keys.prefix.as_str();
    if req.headers().contains_key(header::AUTHORIZATION) {
        let token = bearer_token(req.headers()).ok_or_else(|| {
            ApiError::new(ErrorCode::MissingAuthorization)
                .with_message("Use `Authorization: Bearer <token>`.")
        })?;
        if looks_like_key(token, prefix) || state.keys.hash_of(token).is_some() {
            return authenticate_key(req, &state, token).await;
        }
        return Ok(Principal::Session(
            authenticate_session(&state, token, Via::Bearer).await?,
        ));
    }
    if let Some(value) = req.headers().get("x-api-key") {
        let raw = value.to_str().unwrap_or_default().trim();
        return authenticate_key(req, &state, raw).await;
    }
    let names = crate::auth::cookies::names(state.https);
    if let Some(token) = cookie_value(req, names.access) {
        let session = authenticate_session(&state, &token, Via::Cookie).await?;
        check_csrf(req, &state, &session.session_id)?;
        return Ok(Principal::Session(session));
    }
    // The browser drops the access cookie when it expires while the refresh
    // cookie lives on: that is an expired session (the UI offers
    // `/auth/refresh`), not a visitor who never logged in.
    if cookie_value(req, names.refresh).is_some() {
        return Err(ApiError::new(ErrorCode::InvalidToken)
            .with_message("Your session has expired; refresh it to continue."));
    }
    Err(ApiError::new(ErrorCode::MissingAuthorization))
}

/// API keys: shape and checksum first (`malformed_key`, no storage), then
/// the key checks of SPEC section 8 for this request's method and client
/// address. The call counts against the key's rate-limit window, and the
/// answer carries the RateLimit fields.
async fn authenticate_key(
    req: &HttpRequest,
    state: &AppState,
    raw: &str,
) -> Result<Principal, ApiError> {
    let ctx = crate::http::RequestContext::extract(req)
        .await
        .map_err(|_| ApiError::internal("request context"))?;
    let checked = state
        .keys
        .check(
            raw,
            &CheckInput {
                method: req.method().as_str(),
                scopes: &[],
                ip: Some(ctx.ip()),
                cost: 0,
                purpose: Purpose::OwnApi,
            },
            None,
        )
        .await?;
    if let Some(rate) = checked.rate {
        let policy = checked.rendered.as_ref().map(|r| r.policy());
        req.extensions_mut().insert(RateHeaders(rate, policy));
    }
    match (checked.outcome, checked.key) {
        (Ok(()), Some(key)) => Ok(Principal::Key(KeyPrincipal { key })),
        (Err(denial), _) => Err(denial_error(denial, checked.rate)),
        (Ok(()), None) => Err(ApiError::new(ErrorCode::InvalidKey)),
    }
}

async fn authenticate_session(
    state: &AppState,
    token: &str,
    via: Via,
) -> Result<SessionPrincipal, ApiError> {
    if token.len() > 200 {
        return Err(ApiError::new(ErrorCode::InvalidToken));
    }
    let hash = state.keyring.token_hash(token);
    let auth = state
        .store
        .authenticate_access_token(hash, state.session_limits())
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::InvalidToken))?;
    Ok(SessionPrincipal {
        session_id: auth.session_id,
        user: auth.user,
        via,
    })
}

fn is_safe_method(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether the request comes from our own pages: `Sec-Fetch-Site` is not
/// `cross-site`, and an `Origin`, when sent, names this host (as the browser
/// addressed it, or as `public_url` says).
pub fn same_origin(req: &HttpRequest, state: &AppState) -> bool {
    same_origin_headers(req.headers(), &state.public_url)
}

fn same_origin_headers(headers: &HeaderMap, public_url: &url::Url) -> bool {
    let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if fetch_site.is_some_and(|v| v.eq_ignore_ascii_case("cross-site")) {
        return false;
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Some(origin) = origin.to_str().ok().and_then(|o| url::Url::parse(o).ok()) else {
        // `Origin: null`. Browsers send it for a form post from our own pages
        // too, because they carry `Referrer-Policy: no-referrer`; then the
        // browser's own `Sec-Fetch-Site: same-origin`, which no page can set,
        // vouches for the request. Anything else with a null origin is refused.
        return fetch_site.is_some_and(|v| v.eq_ignore_ascii_case("same-origin"));
    };
    let Some(origin_host) = origin.host_str() else {
        return false;
    };
    let origin_authority = match origin.port() {
        Some(p) => format!("{origin_host}:{p}"),
        None => origin_host.to_string(),
    };
    let host_header = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let public_authority = match public_url.port() {
        Some(p) => format!("{}:{p}", public_url.host_str().unwrap_or_default()),
        None => public_url.host_str().unwrap_or_default().to_string(),
    };
    host_header.is_some_and(|h| h.eq_ignore_ascii_case(&origin_authority))
        || origin_authority.eq_ignore_ascii_case(&public_authority)
}

/// Cookie-authenticated mutations need the session's CSRF token in
/// `X-CSRF-Token` (compared in constant time) and must not come from a
/// foreign origin.
fn check_csrf(req: &HttpRequest, state: &AppState, session_id: &str) -> Result<(), ApiError> {
    if is_safe_method(req.method()) {
        return Ok(());
    }
    let csrf_failed = || ApiError::new(ErrorCode::CsrfFailed);
    if !same_origin(req, state) {
        return Err(csrf_failed().with_message("Cross-site requests are refused."));
    }
    let presented = req
        .headers()
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| csrf_failed().with_message("The X-CSRF-Token header is missing."))?;
    let expected = state.keyring.csrf_token(session_id);
    if !crate::crypto::secure_eq(presented.as_bytes(), expected.as_bytes()) {
        return Err(csrf_failed().with_message("The X-CSRF-Token header is wrong."));
    }
    Ok(())
}

/// The project a request acts on, with the caller's role in it (`None`
/// for an API key, which acts on its own project by its scopes).
#[derive(Clone, Debug)]
pub struct ProjectAccess {
    pub principal: Principal,
    pub project: Project,
    pub role: Option<Role>,
}

impl ProjectAccess {
    /// 403 `forbidden` unless a session caller's role is at least `min`;
    /// API keys are refused.
    pub fn require(&self, min: Role) -> Result<(), ApiError> {
        match self.role {
            Some(role) if role >= min => Ok(()),
            Some(_) => Err(ApiError::new(ErrorCode::Forbidden)
                .with_message(format!("This needs the {} role or higher.", min.as_str()))),
            None => self.principal.session().map(|_| ()),
        }
    }

    /// A session with at least `min`, or an API key with `scope` (or
    /// `full_access`; else 403 `insufficient_scope`).
    pub fn require_role_or_scope(&self, min: Role, scope: &str) -> Result<(), ApiError> {
        match &self.principal {
            Principal::Key(k) if k.key.has_scope(scope) => Ok(()),
            Principal::Key(_) => Err(ApiError::new(ErrorCode::InsufficientScope)
                .with_message(format!("This needs a key with the `{scope}` scope."))),
            Principal::Session(_) => self.require(min),
        }
    }

    /// The session caller's role; API keys get 403 `forbidden`.
    pub fn session_role(&self) -> Result<Role, ApiError> {
        self.principal.session()?;
        self.role.ok_or_else(|| ApiError::new(ErrorCode::Forbidden))
    }

    /// The caller's user id, for sessions.
    pub fn user_id(&self) -> Option<&str> {
        match &self.principal {
            Principal::Session(s) => Some(&s.user.id),
            Principal::Key(_) => None,
        }
    }
}

impl FromRequest for ProjectAccess {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let principal = authenticate(&req).await?;
            let state = state_of(&req)?;
            match &principal {
                Principal::Session(session) => {
                    let membership = resolve_project(&req, &state, &session.user).await?;
                    Ok(ProjectAccess {
                        principal,
                        project: membership.project,
                        role: Some(membership.role),
                    })
                }
                Principal::Key(k) => {
                    let project = state
                        .store
                        .project(k.key.project_id.to_string().into())
                        .await?
                        .ok_or_else(|| ApiError::new(ErrorCode::InvalidKey))?;
                    Ok(ProjectAccess {
                        principal,
                        project,
                        role: None,
                    })
                }
            }
        })
    }
}

/// `X-Project-Id` when given (a project the user is not in is 404, no
/// existence oracle), else the user's only project, else 400 `project_required`.
async fn resolve_project(
    req: &HttpRequest,
    state: &AppState,
    user: &User,
) -> Result<Membership, ApiError> {
    if let Some(value) = req.headers().get("x-project-id") {
        let id = value.to_str().map(str::trim).unwrap_or_default();
        if id.is_empty() || id.len() > 64 {
            return Err(ApiError::not_found().with_message("No such project."));
        }
        return state
            .store
            .project_role(user.id.clone().into(), id.to_string().into())
            .await?
            .ok_or_else(|| ApiError::not_found().with_message("No such project."));
    }
    let mut memberships = state.store.memberships(user.id.clone().into()).await?;
    match memberships.len() {
        1 => Ok(memberships.remove(0)),
        _ => Err(ApiError::new(ErrorCode::ProjectRequired)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                header::HeaderName::from_static(k),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    /// Only GET, HEAD and OPTIONS skip the CSRF check: every method that
    /// can change something (PUT too, though no route takes it today)
    /// needs the token.
    #[test]
    fn only_safe_methods_skip_the_csrf_check() {
        for m in [Method::GET, Method::HEAD, Method::OPTIONS] {
            assert!(is_safe_method(&m), "{m}");
        }
        for m in [
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::from_bytes(b"PROPPATCH").unwrap(),
        ] {
            assert!(!is_safe_method(&m), "{m}");
        }
    }

    #[test]
    fn origin_rules() {
        let public: url::Url = "https://keys.acme.test".parse().unwrap();
        assert!(same_origin_headers(
            &headers(&[("host", "127.0.0.1:8080")]),
            &public
        ));
        assert!(same_origin_headers(
            &headers(&[
                ("host", "127.0.0.1:8080"),
                ("origin", "http://127.0.0.1:8080")
            ]),
            &public
        ));
        assert!(same_origin_headers(
            &headers(&[
                ("host", "internal:9000"),
                ("origin", "https://keys.acme.test")
            ]),
            &public
        ));
        assert!(!same_origin_headers(
            &headers(&[
                ("host", "keys.acme.test"),
                ("origin", "https://evil.example")
            ]),
            &public
        ));
        assert!(!same_origin_headers(
            &headers(&[("host", "keys.acme.test"), ("origin", "null")]),
            &public
        ));
        // A same-origin form post under `Referrer-Policy: no-referrer`.
        assert!(same_origin_headers(
            &headers(&[
                ("host", "keys.acme.test"),
                ("origin", "null"),
                ("sec-fetch-site", "same-origin")
            ]),
            &public
        ));
        assert!(!same_origin_headers(
            &headers(&[
                ("host", "keys.acme.test"),
                ("origin", "null"),
                ("sec-fetch-site", "same-site")
            ]),
            &public
        ));
        assert!(!same_origin_headers(
            &headers(&[("host", "keys.acme.test"), ("sec-fetch-site", "cross-site")]),
            &public
        ));
    }
}
