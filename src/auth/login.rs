//! The email-code login flow and session refresh (SPEC section 6), between
//! the HTTP handlers and storage.

use actix_web::http::header::{HeaderName, HeaderValue};

use crate::auth::tokens::Keyring;
use crate::auth::tokens::{generate_code, new_access_token, new_refresh_token, new_session_id};
use crate::config::Config;
use crate::error::{ApiError, ErrorCode};
use crate::http::RequestContext;
use crate::mail::Mailer;
use crate::store::audit::{Actor, ActorType};
use crate::store::directory::User;
use crate::store::sessions::{
    CodeLimits, CodeRequest, CodeRequestOutcome, LoginOutcome, LoginRequest, NewTokens,
    RefreshOutcome,
};
use crate::store::Store;
use crate::types::Email;

/// A fresh token pair for a session; the plaintexts exist only here and in
/// the response.
pub struct Grant {
    pub user: User,
    pub session_id: String,
    pub access_token: String,
    pub refresh_token: String,
    pub via_cookie: bool,
}

fn anonymous_actor(ctx: &RequestContext) -> Actor {
    Actor {
        kind: ActorType::User,
        id: None,
        ip: Some(ctx.ip().to_string()),
        request_id: Some(ctx.request_id.to_string()),
    }
}

/// What the login flow needs, and nothing else: storage, the keyring that
/// hashes codes and tokens, the mailer and the configuration.
pub struct Login<'a> {
    pub store: &'a dyn Store,
    pub keyring: &'a Keyring,
    pub mailer: &'a Mailer,
    pub config: &'a Config,
}

impl Login<'_> {
    fn session_limits(&self) -> crate::store::sessions::SessionLimits {
        crate::auth::rules::SessionLimits::of(&self.config.auth)
    }
}

fn mint(state: &Login<'_>) -> (String, String, NewTokens) {
    let access = new_access_token();
    let refresh = new_refresh_token();
    let tokens = NewTokens {
        access_hash: state.keyring.token_hash(&access),
        refresh_hash: state.keyring.token_hash(&refresh),
        access_expires_at: state
            .store
            .clock()
            .expires_after(state.config.auth.access_ttl_secs as i64),
    };
    (access, refresh, tokens)
}

pub fn rate_limited(retry_after_secs: u64) -> ApiError {
    ApiError::new(ErrorCode::RateLimited)
        .with_message(format!(
            "Too many codes requested; retry in {retry_after_secs} s."
        ))
        .with_header(
            HeaderName::from_static("retry-after"),
            HeaderValue::from(retry_after_secs.max(1)),
        )
}

/// Sends a code when the address may log in. The answer is the same either
/// way (no account enumeration). Returns the code only when
/// `dev.expose_codes` is on (local mode).
pub async fn send_code(
    state: &Login<'_>,
    email: Email,
    ctx: &RequestContext,
) -> Result<Option<String>, ApiError> {
    let a = &state.config.auth;
    let code = generate_code(a.code_length);
    let message = state
        .mailer
        .login_code(&email, &code, state.store.clock().now());
    let outcome = state
        .store
        .request_login_code(CodeRequest {
            code_hash: state.keyring.code_hash(&email, &code),
            email: email.clone(),
            ip: ctx.throttle_subject().to_string(),
            limits: CodeLimits {
                interval_secs: a.send_code_interval_secs as i64,
                per_hour: a.send_code_per_hour as i64,
                per_ip_per_hour: a.send_code_per_ip_per_hour as i64,
            },
            open_signup: a.signup == crate::config::Signup::Open,
            expires_at: state.store.clock().expires_after(a.code_ttl_secs as i64),
            message: message.clone(),
        })
        .await?;
    match outcome {
        CodeRequestOutcome::Throttled { retry_after_secs } => {
            Err(rate_limited(retry_after_secs as u64))
        }
        CodeRequestOutcome::Sent => {
            state.mailer.queued(&message);
            Ok(state.config.dev.expose_codes.then_some(code))
        }
        CodeRequestOutcome::Suppressed => {
            tracing::info!(request_id = %ctx.request_id, "login code not sent: address may not sign up");
            Ok(None)
        }
    }
}

/// Random bytes for the stand-in code of a failed attempt (never a code's hash).
fn stand_in_hash() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .expect("the system CSPRNG is available");
    bytes
}

/// Checks the code and opens a session. Every failure is the same 401
/// `invalid_code`, after the same work (the hashes here are computed
/// before storage is asked anything, on every path; storage does the
/// same statements on every failure: `store::sessions::login_with_code`).
pub async fn verify_code(
    state: &Login<'_>,
    email: Email,
    code: &str,
    via_cookie: bool,
    ctx: &RequestContext,
    user_agent: Option<String>,
) -> Result<Grant, ApiError> {
    let a = &state.config.auth;
    let (access, refresh, tokens) = mint(state);
    let session_id = new_session_id();
    let outcome = state
        .store
        .login_with_code(LoginRequest {
            presented_hash: state.keyring.code_hash(&email, code.trim()),
            stand_in_hash: stand_in_hash(),
            email,
            max_attempts: a.code_max_attempts as i64,
            open_signup: a.signup == crate::config::Signup::Open,
            session_id: session_id.clone(),
            via_cookie,
            tokens,
            limits: state.session_limits(),
            session_expires_at: state
                .store
                .clock()
                .expires_after(state.session_limits().max_secs),
            personal_project: ("Personal".into(), state.config.billing.default_plan.clone()),
            actor: anonymous_actor(ctx),
            user_agent,
        })
        .await?;
    match outcome {
        LoginOutcome::Success { user, .. } => Ok(Grant {
            user,
            session_id,
            access_token: access,
            refresh_token: refresh,
            via_cookie,
        }),
        LoginOutcome::Failed => Err(ApiError::new(ErrorCode::InvalidCode)),
    }
}

/// Rotates a refresh token into a new pair.
pub async fn refresh(
    state: &Login<'_>,
    refresh_token: &str,
    ctx: &RequestContext,
) -> Result<Grant, ApiError> {
    if refresh_token.is_empty() || refresh_token.len() > 200 {
        return Err(ApiError::new(ErrorCode::InvalidToken));
    }
    let (access, refresh, tokens) = mint(state);
    let presented = state.keyring.token_hash(refresh_token);
    match state
        .store
        .refresh_session(
            presented,
            tokens,
            state.session_limits(),
            anonymous_actor(ctx),
        )
        .await?
    {
        RefreshOutcome::Rotated {
            user,
            session_id,
            via_cookie,
        } => Ok(Grant {
            user,
            session_id,
            access_token: access,
            refresh_token: refresh,
            via_cookie,
        }),
        RefreshOutcome::Invalid => Err(ApiError::new(ErrorCode::InvalidToken)),
        RefreshOutcome::Reused => Err(ApiError::new(ErrorCode::TokenReused)),
    }
}
