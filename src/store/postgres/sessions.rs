//! Login codes, sessions and tokens in PostgreSQL. The rules are
//! `store::session_rules`; what keeps them true across nodes is said per function.

use super::directory::{
    find_or_create_user, find_user_by_email, insert_membership, insert_project, lock_name,
    memberships_of, user_from, USER_COLUMNS,
};
use super::effects::enqueue_mail;
use super::{PgError, PgStore};
use crate::store::audit::Actor;
use crate::store::session_rules::{
    refresh_decision, send_code_throttle, session_alive, should_touch_session, CodeRequestHistory,
    RefreshDecision,
};
use crate::store::sessions::{
    logged_out, login_succeeded, plan_login, token_reused, CodeRequest, CodeRequestOutcome,
    LoginOutcome, LoginPlan, LoginRequest, NewTokens, RefreshOutcome, SessionAuth, SessionLimits,
    SessionRepo, StoredCode,
};
use crate::store::StoreResult;
use crate::types::Role;
use async_trait::async_trait;
use deadpool_postgres::GenericClient;

async fn count_since(
    client: &impl GenericClient,
    column: &str,
    value: &str,
    since: i64,
) -> Result<(i64, Option<i64>), PgError> {
    let row = client
        .query_one(
            &format!(
                "SELECT count(*), min(created_at) FROM code_requests WHERE {column} = $1 AND created_at > $2"
            ),
            &[&value, &since],
        )
        .await?;
    Ok((row.try_get(0)?, row.try_get(1)?))
}

/// `send-code`. The address and the client address are locked (advisory,
/// in that order, for the transaction) before the throttle counts are
/// read, so requests alternating between nodes are counted like requests
/// to one.
pub async fn request_login_code(
    client: &mut deadpool_postgres::Client,
    req: &CodeRequest,
    now: i64,
) -> Result<CodeRequestOutcome, PgError> {
    let l = req.limits;
    let email = req.email.as_str();
    let tx = client.transaction().await?;
    lock_name(&tx, &format!("gatehouse:email:{email}")).await?;
    lock_name(&tx, &format!("gatehouse:ip:{}", req.ip)).await?;
    let hour_ago = now - 3600;
    let last_for_email: Option<i64> = tx
        .query_one(
            "SELECT max(created_at) FROM code_requests WHERE email = $1",
            &[&email],
        )
        .await?
        .try_get(0)?;
    let history = CodeRequestHistory {
        last_for_email,
        email_last_hour: count_since(&tx, "email", email, hour_ago).await?,
        ip_last_hour: count_since(&tx, "ip", &req.ip, hour_ago).await?,
    };
    if let Some(retry_after_secs) = send_code_throttle(&history, &l, now) {
        return Ok(CodeRequestOutcome::Throttled { retry_after_secs });
    }
    tx.execute(
        "INSERT INTO code_requests (email, ip, created_at) VALUES ($1, $2, $3)",
        &[&email, &req.ip, &now],
    )
    .await?;
    let may_log_in = req.open_signup || find_user_by_email(&tx, email).await?.is_some();
    let outcome = if may_log_in {
        tx.execute(
            "INSERT INTO login_codes (email, code_hash, attempts, expires_at, created_at) VALUES ($1, $2, 0, $3, $4)
             ON CONFLICT (email) DO UPDATE SET code_hash = excluded.code_hash, attempts = 0,
                 expires_at = excluded.expires_at, created_at = excluded.created_at",
            &[&email, &&req.code_hash[..], &req.expires_at, &now],
        )
        .await?;
        enqueue_mail(&tx, &req.message, now).await?;
        CodeRequestOutcome::Sent
    } else {
        CodeRequestOutcome::Suppressed
    };
    tx.commit().await?;
    Ok(outcome)
}

/// `verify-code`: the same steps as SQLite's `store::sessions::login_with_code`
/// (every failure does the same work), under the address's advisory lock:
/// attempts on one code from several nodes take turns, so a code is spent
/// once and burned after exactly `max_attempts` wrong tries.
pub async fn login_with_code(
    client: &mut deadpool_postgres::Client,
    req: &LoginRequest,
    now: i64,
) -> Result<LoginOutcome, PgError> {
    let email = req.email.as_str();
    let tx = client.transaction().await?;
    lock_name(&tx, &format!("gatehouse:email:{email}")).await?;
    let stored = tx
        .query_opt(
            "SELECT code_hash, attempts, expires_at FROM login_codes WHERE email = $1",
            &[&email],
        )
        .await?
        .map(|r| -> Result<_, PgError> {
            Ok(StoredCode {
                hash: r.try_get(0)?,
                attempts: r.try_get(1)?,
                expires_at: r.try_get(2)?,
            })
        })
        .transpose()?;
    let existing = find_user_by_email(&tx, email).await?;
    if let LoginPlan::Refuse(effects) = plan_login(stored.as_ref(), existing.as_ref(), req, now) {
        tx.execute(
            "INSERT INTO login_codes (email, code_hash, attempts, expires_at, created_at) VALUES ($1, $2, 1, $3, $3)
             ON CONFLICT (email) DO UPDATE SET attempts = login_codes.attempts + 1",
            &[&email, &&req.stand_in_hash[..], &now],
        )
        .await?;
        super::effects::write(&tx, &effects, now).await?;
        tx.commit().await?;
        return Ok(LoginOutcome::Failed);
    }
    tx.execute("DELETE FROM login_codes WHERE email = $1", &[&email])
        .await?;
    let (user, created) = match existing {
        Some(u) => (u, false),
        None => find_or_create_user(&tx, &req.email, now).await?,
    };
    if memberships_of(&tx, &user.id).await?.is_empty() {
        let (name, plan) = &req.personal_project;
        let project = insert_project(&tx, name, plan, now).await?;
        insert_membership(&tx, &project.id, &user.id, Role::Owner, now).await?;
    }
    tx.execute(
        "INSERT INTO sessions (id, user_id, via_cookie, created_at, last_used_at, expires_at, ip, user_agent)
         VALUES ($1, $2, $3, $4, $4, $5, $6, $7)",
        &[
            &req.session_id,
            &user.id,
            &req.via_cookie,
            &now,
            &req.session_expires_at,
            &req.actor.ip,
            &req.user_agent,
        ],
    )
    .await?;
    insert_tokens(&tx, &req.session_id, &req.tokens, None, now).await?;
    super::effects::write(&tx, &login_succeeded(&user, created, req), now).await?;
    tx.commit().await?;
    Ok(LoginOutcome::Success { user, created })
}

async fn insert_tokens(
    client: &impl GenericClient,
    session_id: &str,
    t: &NewTokens,
    parent: Option<&[u8]>,
    now: i64,
) -> Result<(), PgError> {
    client
        .execute(
            "INSERT INTO refresh_tokens (token_hash, session_id, parent_hash, created_at) VALUES ($1, $2, $3, $4)",
            &[&&t.refresh_hash[..], &session_id, &parent, &now],
        )
        .await?;
    client
        .execute(
            "INSERT INTO access_tokens (token_hash, session_id, expires_at) VALUES ($1, $2, $3)",
            &[&&t.access_hash[..], &session_id, &t.access_expires_at],
        )
        .await?;
    Ok(())
}

async fn revoke(
    client: &impl GenericClient,
    session_id: &str,
    reason: &str,
    now: i64,
) -> Result<(), PgError> {
    client
        .execute(
            "UPDATE sessions SET revoked_at = coalesce(revoked_at, $2), revoked_reason = coalesce(revoked_reason, $3) WHERE id = $1",
            &[&session_id, &now, &reason],
        )
        .await?;
    client
        .execute(
            "DELETE FROM access_tokens WHERE session_id = $1",
            &[&session_id],
        )
        .await?;
    Ok(())
}

/// Rotation. The presented token's row is locked (`FOR UPDATE OF r`)
/// before it is judged: of two nodes refreshing the same token at once,
/// the second waits, then sees it spent, and the grace rule decides
/// (another pair within the grace, else reuse and the session revoked).
pub async fn refresh_session(
    client: &mut deadpool_postgres::Client,
    presented: &[u8; 32],
    tokens: &NewTokens,
    limits: &SessionLimits,
    actor: Actor,
    now: i64,
) -> Result<RefreshOutcome, PgError> {
    let tx = client.transaction().await?;
    let row = tx
        .query_opt(
            &format!(
                "SELECT r.session_id, r.used_at, s.via_cookie, s.last_used_at, s.expires_at, s.revoked_at, {USER_COLUMNS}
                 FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id JOIN users u ON u.id = s.user_id
                 WHERE r.token_hash = $1 FOR UPDATE OF r"
            ),
            &[&&presented[..]],
        )
        .await?;
    let Some(row) = row else {
        return Ok(RefreshOutcome::Invalid);
    };
    let session_id: String = row.try_get(0)?;
    let used_at: Option<i64> = row.try_get(1)?;
    let via_cookie: bool = row.try_get(2)?;
    let user = user_from(&row, 6)?;
    if !session_alive(
        now,
        row.try_get(3)?,
        row.try_get(4)?,
        row.try_get(5)?,
        limits,
    ) {
        return Ok(RefreshOutcome::Invalid);
    }
    let spent_children: i64 = match used_at {
        None => 0,
        Some(_) => tx
            .query_one(
                "SELECT count(*) FROM refresh_tokens WHERE parent_hash = $1 AND used_at IS NOT NULL",
                &[&&presented[..]],
            )
            .await?
            .try_get(0)?,
    };
    match refresh_decision(used_at, spent_children, now, limits) {
        RefreshDecision::Reuse => {
            revoke(&tx, &session_id, "token_reused", now).await?;
            let effects = token_reused(&user, &session_id, used_at, actor);
            super::effects::write(&tx, &effects, now).await?;
            tx.commit().await?;
            return Ok(RefreshOutcome::Reused);
        }
        RefreshDecision::Grace => {}
        RefreshDecision::Rotate => {
            tx.execute(
                "UPDATE refresh_tokens SET used_at = $2 WHERE token_hash = $1",
                &[&&presented[..], &now],
            )
            .await?;
        }
    }
    insert_tokens(&tx, &session_id, tokens, Some(&presented[..]), now).await?;
    tx.execute(
        "UPDATE sessions SET last_used_at = $2 WHERE id = $1",
        &[&session_id, &now],
    )
    .await?;
    tx.commit().await?;
    Ok(RefreshOutcome::Rotated {
        user,
        session_id,
        via_cookie,
    })
}

pub async fn revoke_by_refresh_token(
    client: &mut deadpool_postgres::Client,
    presented: &[u8; 32],
    now: i64,
) -> Result<Option<String>, PgError> {
    let tx = client.transaction().await?;
    let session: Option<String> = tx
        .query_opt(
            "SELECT session_id FROM refresh_tokens WHERE token_hash = $1",
            &[&&presented[..]],
        )
        .await?
        .map(|r| r.try_get(0))
        .transpose()?;
    if let Some(id) = &session {
        revoke(&tx, id, "revoked", now).await?;
    }
    tx.commit().await?;
    Ok(session)
}

pub async fn revoke_session(
    client: &mut deadpool_postgres::Client,
    session_id: &str,
    reason: &str,
    actor: &Actor,
    now: i64,
) -> Result<(), PgError> {
    let tx = client.transaction().await?;
    revoke(&tx, session_id, reason, now).await?;
    super::effects::write(&tx, &logged_out(session_id, actor), now).await?;
    tx.commit().await?;
    Ok(())
}

/// The live session behind an access token. Revocation deletes the
/// session's access tokens in the revoking transaction, and every request
/// reads here, so a logout on one node holds on every node at once.
pub async fn authenticate_access_token(
    client: &impl GenericClient,
    presented: &[u8; 32],
    limits: &SessionLimits,
    now: i64,
) -> Result<Option<SessionAuth>, PgError> {
    let row = client
        .query_opt(
            &format!(
                "SELECT s.id, s.via_cookie, s.last_used_at, s.expires_at, s.revoked_at, {USER_COLUMNS}
                 FROM access_tokens a JOIN sessions s ON s.id = a.session_id JOIN users u ON u.id = s.user_id
                 WHERE a.token_hash = $1 AND a.expires_at > $2"
            ),
            &[&&presented[..], &now],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    let session_id: String = row.try_get(0)?;
    let last_used: i64 = row.try_get(2)?;
    if !session_alive(now, last_used, row.try_get(3)?, row.try_get(4)?, limits) {
        return Ok(None);
    }
    if should_touch_session(now, last_used, limits) {
        // Best effort, as on SQLite: a failed write does not fail the read.
        if let Err(e) = client
            .execute(
                "UPDATE sessions SET last_used_at = greatest(last_used_at, $2) WHERE id = $1",
                &[&session_id, &now],
            )
            .await
        {
            let e = PgError::from(e);
            if !e.is_unavailable() {
                return Err(e);
            }
            tracing::warn!(error = %e, "session use not recorded; will retry on a later request");
        }
    }
    Ok(Some(SessionAuth {
        session_id,
        via_cookie: row.try_get(1)?,
        user: user_from(&row, 5)?,
    }))
}

#[async_trait]
impl SessionRepo for PgStore {
    async fn request_login_code(&self, req: CodeRequest) -> StoreResult<CodeRequestOutcome> {
        let mut client = self.client().await?;
        Ok(request_login_code(&mut client, &req, self.clock.now()).await?)
    }

    async fn login_with_code(&self, req: LoginRequest) -> StoreResult<LoginOutcome> {
        let mut client = self.client().await?;
        Ok(login_with_code(&mut client, &req, self.clock.now()).await?)
    }

    async fn refresh_session(
        &self,
        presented: [u8; 32],
        tokens: NewTokens,
        limits: SessionLimits,
        actor: Actor,
    ) -> StoreResult<RefreshOutcome> {
        let mut client = self.client().await?;
        Ok(refresh_session(
            &mut client,
            &presented,
            &tokens,
            &limits,
            actor,
            self.clock.now(),
        )
        .await?)
    }

    async fn revoke_by_refresh_token(&self, presented: [u8; 32]) -> StoreResult<Option<String>> {
        let mut client = self.client().await?;
        Ok(revoke_by_refresh_token(&mut client, &presented, self.clock.now()).await?)
    }

    async fn revoke_session(
        &self,
        session_id: String,
        reason: &'static str,
        actor: Actor,
    ) -> StoreResult<()> {
        let mut client = self.client().await?;
        Ok(revoke_session(&mut client, &session_id, reason, &actor, self.clock.now()).await?)
    }

    async fn authenticate_access_token(
        &self,
        presented: [u8; 32],
        limits: SessionLimits,
    ) -> StoreResult<Option<SessionAuth>> {
        let client = self.client().await?;
        Ok(authenticate_access_token(&client, &presented, &limits, self.clock.now()).await?)
    }
}
