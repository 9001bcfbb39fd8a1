//! Login codes, sessions and their tokens behind the storage interface.
//!
//! The rules (throttles, code attempts, refresh rotation and its grace,
//! session lifetimes) are the plain functions of `store::session_rules`; each
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
    /// Exchanges a refresh token for a new pair (`store::session_rules::refresh_decision`).
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

pub use crate::store::session_rules::{
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
    /// When the code expires (`Clock::expires_after` the code's lifetime).
    pub expires_at: i64,
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
    /// When the session ends at the latest (`Clock::expires_after`
    /// `limits.max_secs`).
    pub session_expires_at: i64,
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

/// A login code as stored: its hash, the attempts it had, its expiry.
#[derive(Clone, Debug)]
pub struct StoredCode {
    pub hash: Vec<u8>,
    pub attempts: i64,
    pub expires_at: i64,
}

/// What `verify-code` does, decided on what a backend read in its
/// transaction (the address's code and user).
#[derive(Clone, Debug)]
pub enum LoginPlan {
    /// Count the attempt (the stand-in upsert of
    /// [`SessionRepo::login_with_code`]) and write these effects.
    Refuse(super::effects::Effects),
    /// Spend the code, find or create the user, and open the session.
    Accept,
}

/// Judges a `verify-code` request: the code (`store::session_rules::judge_code`),
/// and whether the address may log in at all (known, or signup is open).
pub fn plan_login(
    stored: Option<&StoredCode>,
    existing: Option<&User>,
    req: &LoginRequest,
    now: i64,
) -> LoginPlan {
    use crate::store::session_rules::burns_code;
    let verdict = judge_code(
        stored.map(|c| (c.hash.as_slice(), c.attempts, c.expires_at)),
        &req.presented_hash,
        now,
        req.max_attempts,
    );
    if verdict == CodeVerdict::Accepted && (existing.is_some() || req.open_signup) {
        return LoginPlan::Accept;
    }
    let burned = burns_code(verdict, stored.map(|c| c.attempts), req.max_attempts);
    LoginPlan::Refuse(
        super::effects::Effects::default().audit(super::effects::AuditEntry {
            project_id: None,
            action: "login.failed",
            actor: Actor {
                id: existing.map(|u| u.id.clone()),
                ..req.actor.clone()
            },
            target: Some(req.email.as_str().to_string()),
            details: serde_json::json!({
                "reason": if burned { "wrong_code_burned" } else { verdict.reason() }
            }),
        }),
    )
}

/// What a successful login records.
pub fn login_succeeded(user: &User, created: bool, req: &LoginRequest) -> super::effects::Effects {
    super::effects::Effects::default().audit(super::effects::AuditEntry {
        project_id: None,
        action: "login.succeeded",
        actor: Actor {
            id: Some(user.id.clone()),
            ..req.actor.clone()
        },
        target: Some(user.id.clone()),
        details: serde_json::json!({
            "session_id": req.session_id,
            "new_user": created,
            "cookie": req.via_cookie,
        }),
    })
}

/// What a reused refresh token records: the session it belongs to is
/// revoked (by the backend) and this row says which token was spent when.
pub fn token_reused(
    user: &User,
    session_id: &str,
    spent_at: Option<i64>,
    actor: Actor,
) -> super::effects::Effects {
    super::effects::Effects::default().audit(super::effects::AuditEntry {
        project_id: None,
        action: "session.token_reused",
        actor: Actor {
            id: Some(user.id.clone()),
            ..actor
        },
        target: Some(session_id.to_string()),
        details: serde_json::json!({ "spent_at": spent_at }),
    })
}

/// What a logout records.
pub fn logged_out(session_id: &str, actor: &Actor) -> super::effects::Effects {
    super::effects::Effects::default().audit(super::effects::AuditEntry {
        project_id: None,
        action: "logout",
        actor: actor.clone(),
        target: Some(session_id.to_string()),
        details: serde_json::json!({}),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(presented: [u8; 32], open_signup: bool) -> LoginRequest {
        LoginRequest {
            email: Email::parse("ana@example.com").unwrap(),
            presented_hash: presented,
            stand_in_hash: [9; 32],
            max_attempts: 5,
            open_signup,
            session_id: "ses_1".into(),
            via_cookie: true,
            tokens: NewTokens {
                access_hash: [1; 32],
                refresh_hash: [2; 32],
                access_expires_at: 900,
            },
            limits: SessionLimits {
                idle_secs: 60,
                max_secs: 3600,
                reuse_grace_secs: 5,
            },
            session_expires_at: 3700,
            personal_project: ("Personal".into(), "free".into()),
            actor: Actor::system(),
            user_agent: None,
        }
    }

    fn user() -> User {
        User {
            id: "usr_1".into(),
            email: "ana@example.com".into(),
            full_name: None,
            created_at: 0,
        }
    }

    fn code(attempts: i64) -> StoredCode {
        StoredCode {
            hash: vec![7; 32],
            attempts,
            expires_at: 600,
        }
    }

    fn refusal(plan: LoginPlan) -> serde_json::Value {
        match plan {
            LoginPlan::Refuse(effects) => {
                assert_eq!(effects.audit.len(), 1);
                assert_eq!(effects.audit[0].action, "login.failed");
                effects.audit[0].details["reason"].clone()
            }
            LoginPlan::Accept => panic!("accepted"),
        }
    }

    #[test]
    fn the_right_code_logs_in_a_known_address_or_an_open_signup() {
        let known = user();
        let right = request([7; 32], false);
        assert!(matches!(
            plan_login(Some(&code(0)), Some(&known), &right, 100),
            LoginPlan::Accept
        ));
        assert!(matches!(
            plan_login(Some(&code(0)), None, &request([7; 32], true), 100),
            LoginPlan::Accept
        ));
        // Invite-only: an unknown address gets the same failure as a wrong code.
        assert_eq!(
            refusal(plan_login(Some(&code(0)), None, &right, 100)),
            serde_json::Value::String(CodeVerdict::Accepted.reason().into())
        );
    }

    #[test]
    fn a_refusal_says_why_and_burns_the_last_attempt() {
        let known = user();
        let wrong = request([8; 32], false);
        assert_eq!(
            refusal(plan_login(Some(&code(4)), Some(&known), &wrong, 100)),
            "wrong_code_burned"
        );
        let reason = refusal(plan_login(Some(&code(0)), Some(&known), &wrong, 100));
        assert_eq!(reason, CodeVerdict::Wrong.reason());
        let reason = refusal(plan_login(
            Some(&code(0)),
            Some(&known),
            &request([7; 32], false),
            600,
        ));
        assert_eq!(reason, CodeVerdict::Expired.reason());
        let reason = refusal(plan_login(None, None, &wrong, 100));
        assert_eq!(reason, CodeVerdict::NoCode.reason());
    }

    #[test]
    fn a_login_records_the_session_and_whether_the_user_is_new() {
        let effects = login_succeeded(&user(), true, &request([7; 32], false));
        let entry = &effects.audit[0];
        assert_eq!(entry.action, "login.succeeded");
        assert_eq!(entry.actor.id.as_deref(), Some("usr_1"));
        assert_eq!(entry.details["session_id"], "ses_1");
        assert_eq!(entry.details["new_user"], true);
    }
}
