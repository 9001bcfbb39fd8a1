//! Login codes, sessions and their tokens behind the storage interface.
//!
//! The rules (throttles, code attempts, refresh rotation and its grace,
//! session lifetimes) are the plain functions of `auth::rules`; each
//! backend reads the rows they need inside one transaction and calls them.
//! How each backend keeps them true under concurrency:
//!
//! - SQLite: every method is one `BEGIN IMMEDIATE` transaction, so writers
//!   take turns.
//! - PostgreSQL: `request_login_code` and `login_with_code` hold a
//!   transaction-scoped advisory lock on the address (and `send-code` one
//!   on the client address too, always in that order), so the throttle
//!   counts and the code's attempts cannot be read by two nodes at once;
//!   `refresh_session` locks the presented token's row (`FOR UPDATE`), so of
//!   two concurrent refreshes the second sees the token spent and the grace
//!   rule decides.

use async_trait::async_trait;

use super::audit::Actor;
use super::directory::User;
use super::work::Outgoing;
use super::StoreResult;
use crate::types::Email;

#[async_trait]
pub trait SessionRepo: Send + Sync {
    /// `send-code`: throttles, then (when the address may log in) replaces
    /// the address's code and queues its message. The request counts
    /// against the throttles whether or not a code is sent.
    async fn request_login_code(&self, req: CodeRequest) -> StoreResult<CodeRequestOutcome>;
    /// `verify-code`: judges and spends the code, creates the user (and a
    /// personal project for a user without one) and the session. Every
    /// failure does the same work (see `store::sessions::login_with_code`).
    async fn login_with_code(&self, req: LoginRequest) -> StoreResult<LoginOutcome>;
    /// Exchanges a refresh token for a new pair (`auth::rules::refresh_decision`).
    async fn refresh_session(
        &self,
        presented: [u8; 32],
        tokens: NewTokens,
        limits: SessionLimits,
        actor: Actor,
    ) -> StoreResult<RefreshOutcome>;
    /// Revokes the session a refresh token (spent or not) belongs to.
    async fn revoke_by_refresh_token(&self, presented: [u8; 32]) -> StoreResult<Option<String>>;
    /// Revokes a session (logout), with its audit row.
    async fn revoke_session(
        &self,
        session_id: String,
        reason: &'static str,
        actor: Actor,
    ) -> StoreResult<()>;
    /// The live session behind an access token; records its use at most
    /// once a minute (best effort).
    async fn authenticate_access_token(
        &self,
        presented: [u8; 32],
        limits: SessionLimits,
    ) -> StoreResult<Option<SessionAuth>>;
}

pub use crate::auth::rules::{
    judge_code, CodeLimits, CodeRequestHistory, CodeVerdict, RefreshDecision, SessionLimits,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeRequestOutcome {
    /// A code was stored and its message queued.
    Sent,
    /// Nothing was sent (invite-only and the address is unknown); the
    /// client gets the same answer as for `Sent`.
    Suppressed,
    Throttled {
        retry_after_secs: i64,
    },
}

pub struct CodeRequest {
    pub email: Email,
    /// The client as the per-address limit counts it
    /// ([`crate::auth::throttle::ThrottleSubject`]: its /64 on IPv6).
    pub ip: String,
    pub code_hash: [u8; 32],
    pub limits: CodeLimits,
    /// Whether an unknown address may sign up (`auth.signup = "open"`).
    pub open_signup: bool,
    pub message: Outgoing,
}

/// Tokens minted for a session; only their hashes are stored.
pub struct NewTokens {
    pub access_hash: [u8; 32],
    pub refresh_hash: [u8; 32],
    pub access_expires_at: i64,
}

pub struct LoginRequest {
    pub email: Email,
    pub presented_hash: [u8; 32],
    /// Random bytes written as the hash of the stand-in code a failed
    /// attempt on an address without a code leaves (see [`login_with_code`]).
    pub stand_in_hash: [u8; 32],
    pub max_attempts: i64,
    pub open_signup: bool,
    pub session_id: String,
    pub via_cookie: bool,
    pub tokens: NewTokens,
    pub limits: SessionLimits,
    pub personal_project: (String, String),
    pub actor: Actor,
    pub user_agent: Option<String>,
}

#[derive(Debug, Clone)]
pub enum LoginOutcome {
    Success { user: User, created: bool },
    Failed,
}

#[derive(Debug, Clone)]
pub enum RefreshOutcome {
    Rotated {
        user: User,
        session_id: String,
        via_cookie: bool,
    },
    Invalid,
    Reused,
}

/// The session behind a valid access token.
#[derive(Debug, Clone)]
pub struct SessionAuth {
    pub session_id: String,
    pub user: User,
    pub via_cookie: bool,
}
