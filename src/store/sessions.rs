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

use super::StoreResult;
use crate::db::audit::Actor;
use crate::db::sessions::{
    CodeRequest, CodeRequestOutcome, LoginOutcome, LoginRequest, NewTokens, RefreshOutcome,
    SessionAuth, SessionLimits,
};

#[async_trait]
pub trait SessionRepo: Send + Sync {
    /// `send-code`: throttles, then (when the address may log in) replaces
    /// the address's code and queues its message. The request counts
    /// against the throttles whether or not a code is sent.
    async fn request_login_code(&self, req: CodeRequest) -> StoreResult<CodeRequestOutcome>;
    /// `verify-code`: judges and spends the code, creates the user (and a
    /// personal project for a user without one) and the session. Every
    /// failure does the same work (see `db::sessions::login_with_code`).
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
