//! Login codes, their throttles, sessions and their tokens. Every operation
//! is one immediate transaction, so concurrent requests cannot both spend a
//! code or a refresh token.

use crate::store::sessions::SessionRepo;
use crate::store::sessions::*;
use crate::store::StoreResult;
use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::directory::{self, USER_COLUMNS};
use super::work;
use super::{DbResult, SqliteStore};
use crate::store::audit::Actor;
use crate::types::Role;

use crate::store::session_rules::{
    refresh_decision, send_code_throttle, session_alive, should_touch_session,
};

fn count_since(
    conn: &Connection,
    column: &str,
    value: &str,
    since: i64,
) -> DbResult<(i64, Option<i64>)> {
    Ok(conn.query_row(
        &format!("SELECT count(*), min(created_at) FROM code_requests WHERE {column} = ?1 AND created_at > ?2"),
        params![value, since],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?)
}

fn insert_tokens(
    conn: &Connection,
    session_id: &str,
    t: &NewTokens,
    parent: Option<&[u8]>,
    now: i64,
) -> DbResult<()> {
    conn.execute(
        "INSERT INTO refresh_tokens (token_hash, session_id, parent_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![&t.refresh_hash[..], session_id, parent, now],
    )?;
    conn.execute(
        "INSERT INTO access_tokens (token_hash, session_id, expires_at) VALUES (?1, ?2, ?3)",
        params![&t.access_hash[..], session_id, t.access_expires_at],
    )?;
    Ok(())
}

fn revoke(conn: &Connection, session_id: &str, reason: &str, now: i64) -> DbResult<()> {
    conn.execute(
        "UPDATE sessions SET revoked_at = coalesce(revoked_at, ?2), revoked_reason = coalesce(revoked_reason, ?3) WHERE id = ?1",
        params![session_id, now, reason],
    )?;
    conn.execute(
        "DELETE FROM access_tokens WHERE session_id = ?1",
        [session_id],
    )?;
    Ok(())
}

/// `verify-code` in one immediate transaction: checks and spends the code,
/// creates the user (and a personal project when the user belongs to none)
/// and the session.
///
/// Every failure does the same work, whether or not the address exists or
/// has a pending code, so neither timing nor load tells them apart: the
/// same two reads (the code, the user), one comparison, one upsert that
/// counts the attempt (for an address without a code it writes an already
/// expired stand-in that cleanup removes and no code can match) and one
/// audit row. A code is never deleted on failure: an expired or burned one
/// stays unusable until cleanup or a new code replaces it.
pub fn login_with_code(c: &mut Connection, req: LoginRequest, now: i64) -> DbResult<LoginOutcome> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let email = req.email.as_str();
    let stored = tx
        .query_row(
            "SELECT code_hash, attempts, expires_at FROM login_codes WHERE email = ?1",
            [email],
            |r| {
                Ok(StoredCode {
                    hash: r.get(0)?,
                    attempts: r.get(1)?,
                    expires_at: r.get(2)?,
                })
            },
        )
        .optional()?;
    let existing = directory::find_user_by_email(&tx, email)?;
    if let LoginPlan::Refuse(effects) = plan_login(stored.as_ref(), existing.as_ref(), &req, now) {
        tx.execute(
            "INSERT INTO login_codes (email, code_hash, attempts, expires_at, created_at) VALUES (?1, ?2, 1, ?3, ?3)
             ON CONFLICT (email) DO UPDATE SET attempts = attempts + 1",
            params![email, &req.stand_in_hash[..], now],
        )?;
        super::effects::write(&tx, &effects, now)?;
        tx.commit()?;
        return Ok(LoginOutcome::Failed);
    }
    tx.execute("DELETE FROM login_codes WHERE email = ?1", [email])?;
    let (user, created) = match existing {
        Some(u) => (u, false),
        None => directory::find_or_create_user(&tx, &req.email, now)?,
    };
    if directory::memberships_of(&tx, &user.id)?.is_empty() {
        let (name, plan) = &req.personal_project;
        let project = directory::insert_project(&tx, name, plan, now)?;
        directory::insert_membership(&tx, &project.id, &user.id, Role::Owner, now)?;
    }
    tx.execute(
        "INSERT INTO sessions (id, user_id, via_cookie, created_at, last_used_at, expires_at, ip, user_agent)
         VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6, ?7)",
        params![
            req.session_id,
            user.id,
            req.via_cookie,
            now,
            req.session_expires_at,
            req.actor.ip,
            req.user_agent
        ],
    )?;
    insert_tokens(&tx, &req.session_id, &req.tokens, None, now)?;
    super::effects::write(&tx, &login_succeeded(&user, created, &req), now)?;
    tx.commit()?;
    Ok(LoginOutcome::Success { user, created })
}

#[async_trait]
impl SessionRepo for SqliteStore {
    /// `send-code`: throttles, then (when the address may log in) replaces
    /// the address's code and queues its message, all in one transaction.
    /// The request counts against the throttles whether or not a code is sent.
    async fn request_login_code(&self, req: CodeRequest) -> StoreResult<CodeRequestOutcome> {
        let clock = self.clock.clone();
        self.call(move |c| {
            let now = clock.now();
            let l = req.limits;
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let email = req.email.as_str();
            let hour_ago = now - 3600;
            let last_for_email: Option<i64> = tx.query_row(
                "SELECT max(created_at) FROM code_requests WHERE email = ?1",
                [email],
                |r| r.get(0),
            )?;
            let history = CodeRequestHistory {
                last_for_email,
                email_last_hour: count_since(&tx, "email", email, hour_ago)?,
                ip_last_hour: count_since(&tx, "ip", &req.ip, hour_ago)?,
            };
            if let Some(retry_after_secs) = send_code_throttle(&history, &l, now) {
                return Ok(CodeRequestOutcome::Throttled { retry_after_secs });
            }
            tx.execute(
                "INSERT INTO code_requests (email, ip, created_at) VALUES (?1, ?2, ?3)",
                params![email, req.ip, now],
            )?;
            let may_log_in = req.open_signup || directory::find_user_by_email(&tx, email)?.is_some();
            let outcome = if may_log_in {
                tx.execute(
                    "INSERT INTO login_codes (email, code_hash, attempts, expires_at, created_at) VALUES (?1, ?2, 0, ?3, ?4)
                     ON CONFLICT (email) DO UPDATE SET code_hash = excluded.code_hash, attempts = 0,
                         expires_at = excluded.expires_at, created_at = excluded.created_at",
                    params![email, &req.code_hash[..], req.expires_at, now],
                )?;
                work::enqueue(&tx, &req.message, now)?;
                CodeRequestOutcome::Sent
            } else {
                CodeRequestOutcome::Suppressed
            };
            tx.commit()?;
            Ok(outcome)
        })
        .await
    }

    /// `verify-code`: see [`login_with_code`].
    async fn login_with_code(&self, req: LoginRequest) -> StoreResult<LoginOutcome> {
        let clock = self.clock.clone();
        self.call(move |c| login_with_code(c, req, clock.now()))
            .await
    }

    /// Exchanges a refresh token for a new pair (rotation). A spent token is
    /// reuse, which revokes the whole session, except the immediate parent of
    /// a live token presented within the grace period.
    async fn refresh_session(
        &self,
        presented: [u8; 32],
        tokens: NewTokens,
        limits: SessionLimits,
        actor: Actor,
    ) -> StoreResult<RefreshOutcome> {
        let clock = self.clock.clone();
        self.call(move |c| {
            let now = clock.now();
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let row = tx
                .query_row(
                    &format!(
                        "SELECT r.session_id, r.used_at, s.via_cookie, s.last_used_at, s.expires_at, s.revoked_at, {USER_COLUMNS}
                         FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id JOIN users u ON u.id = s.user_id
                         WHERE r.token_hash = ?1"
                    ),
                    [&presented[..]],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, Option<i64>>(1)?,
                            r.get::<_, bool>(2)?,
                            r.get::<_, i64>(3)?,
                            r.get::<_, i64>(4)?,
                            r.get::<_, Option<i64>>(5)?,
                            directory::user_from(r, 6)?,
                        ))
                    },
                )
                .optional()?;
            let Some((session_id, used_at, via_cookie, last_used, expires_at, revoked_at, user)) = row else {
                return Ok(RefreshOutcome::Invalid);
            };
            if !session_alive(now, last_used, expires_at, revoked_at, &limits) {
                return Ok(RefreshOutcome::Invalid);
            }
            let spent_children: i64 = match used_at {
                None => 0,
                Some(_) => tx.query_row(
                    "SELECT count(*) FROM refresh_tokens WHERE parent_hash = ?1 AND used_at IS NOT NULL",
                    [&presented[..]],
                    |r| r.get(0),
                )?,
            };
            match refresh_decision(used_at, spent_children, now, &limits) {
                RefreshDecision::Reuse => {
                    revoke(&tx, &session_id, "token_reused", now)?;
                    let effects = token_reused(&user, &session_id, used_at, actor);
                    super::effects::write(&tx, &effects, now)?;
                    tx.commit()?;
                    return Ok(RefreshOutcome::Reused);
                }
                RefreshDecision::Grace => {}
                RefreshDecision::Rotate => {
                    tx.execute(
                        "UPDATE refresh_tokens SET used_at = ?2 WHERE token_hash = ?1",
                        params![&presented[..], now],
                    )?;
                }
            }
            insert_tokens(&tx, &session_id, &tokens, Some(&presented[..]), now)?;
            tx.execute("UPDATE sessions SET last_used_at = ?2 WHERE id = ?1", params![session_id, now])?;
            tx.commit()?;
            Ok(RefreshOutcome::Rotated {
                user,
                session_id,
                via_cookie,
            })
        })
        .await
    }

    /// Revokes the session a refresh token (spent or not) belongs to.
    async fn revoke_by_refresh_token(&self, presented: [u8; 32]) -> StoreResult<Option<String>> {
        let clock = self.clock.clone();
        self.call(move |c| {
            let now = clock.now();
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let session: Option<String> = tx
                .query_row(
                    "SELECT session_id FROM refresh_tokens WHERE token_hash = ?1",
                    [&presented[..]],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(id) = &session {
                revoke(&tx, id, "revoked", now)?;
            }
            tx.commit()?;
            Ok(session)
        })
        .await
    }

    async fn revoke_session(
        &self,
        session_id: String,
        reason: &'static str,
        actor: Actor,
    ) -> StoreResult<()> {
        let clock = self.clock.clone();
        self.call(move |c| {
            let now = clock.now();
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            revoke(&tx, &session_id, reason, now)?;
            super::effects::write(&tx, &logged_out(&session_id, &actor), now)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// The live session behind an access token. Marks the session used at
    /// most once a minute, so authenticated reads rarely write.
    async fn authenticate_access_token(
        &self,
        presented: [u8; 32],
        limits: SessionLimits,
    ) -> StoreResult<Option<SessionAuth>> {
        let clock = self.clock.clone();
        self.call(move |c| {
            let now = clock.now();
            let row = c
                .query_row(
                    &format!(
                        "SELECT s.id, s.via_cookie, s.last_used_at, s.expires_at, s.revoked_at, {USER_COLUMNS}
                         FROM access_tokens a JOIN sessions s ON s.id = a.session_id JOIN users u ON u.id = s.user_id
                         WHERE a.token_hash = ?1 AND a.expires_at > ?2"
                    ),
                    params![&presented[..], now],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, bool>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, i64>(3)?,
                            r.get::<_, Option<i64>>(4)?,
                            directory::user_from(r, 5)?,
                        ))
                    },
                )
                .optional()?;
            let Some((session_id, via_cookie, last_used, expires_at, revoked_at, user)) = row else {
                return Ok(None);
            };
            if !session_alive(now, last_used, expires_at, revoked_at, &limits) {
                return Ok(None);
            }
            // Record use at most once a minute (more often for very short idle
            // limits). Best effort: when the database cannot take the write
            // (full, read-only, locked), the read goes on; a later request
            // records the use.
            if should_touch_session(now, last_used, &limits) {
                if let Err(e) = c.execute("UPDATE sessions SET last_used_at = ?2 WHERE id = ?1", params![session_id, now]) {
                    let e = super::DbError::from(e);
                    if e.fault().is_none() {
                        return Err(e);
                    }
                    tracing::warn!(error = %e, "session use not recorded; will retry on a later request");
                }
            }
            Ok(Some(SessionAuth {
                session_id,
                user,
                via_cookie,
            }))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::time::Duration;

    use super::*;
    use crate::store::audit::ActorType;
    use crate::types::Email;

    thread_local! {
        static STATEMENTS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    }

    fn record_statement(sql: &str, _: Duration) {
        STATEMENTS.with(|s| s.borrow_mut().push(sql.to_string()));
    }

    const NOW: i64 = 1_800_000_000;
    const MAX_ATTEMPTS: i64 = 5;

    fn database() -> Connection {
        let mut c = Connection::open_in_memory().unwrap();
        crate::store::sqlite::migrate::migrate(&mut c).unwrap();
        c
    }

    fn request(email: &str, code_hash: [u8; 32], open_signup: bool) -> LoginRequest {
        LoginRequest {
            email: Email::parse(email).unwrap(),
            presented_hash: code_hash,
            stand_in_hash: [7; 32],
            max_attempts: MAX_ATTEMPTS,
            open_signup,
            session_id: crate::auth::tokens::new_session_id(),
            via_cookie: false,
            tokens: NewTokens {
                access_hash: [1; 32],
                refresh_hash: [2; 32],
                access_expires_at: NOW + 3600,
            },
            limits: SessionLimits {
                idle_secs: 86_400,
                max_secs: 7 * 86_400,
                reuse_grace_secs: 10,
            },
            session_expires_at: NOW + 7 * 86_400,
            personal_project: ("Personal".into(), "free".into()),
            actor: Actor {
                kind: ActorType::User,
                id: None,
                ip: Some("127.0.0.1".into()),
                request_id: Some("req_test".into()),
            },
            user_agent: None,
        }
    }

    fn store_code(c: &Connection, email: &str, hash: [u8; 32], attempts: i64, expires_at: i64) {
        c.execute(
            "INSERT INTO login_codes (email, code_hash, attempts, expires_at, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![email, &hash[..], attempts, expires_at, NOW - 60],
        )
        .unwrap();
    }

    /// What one verify-code attempt did in storage: its statements, the
    /// rows it changed, and the code comparisons it made.
    #[derive(Debug, PartialEq, Eq)]
    struct Work {
        statements: Vec<String>,
        rows_changed: u64,
        comparisons: u32,
    }

    fn attempt(c: &mut Connection, req: LoginRequest) -> (LoginOutcome, Work) {
        STATEMENTS.with(|s| s.borrow_mut().clear());
        crate::store::session_rules::CODE_COMPARISONS.with(|n| n.set(0));
        let before = c.total_changes();
        c.profile(Some(record_statement));
        let outcome = login_with_code(c, req, NOW).unwrap();
        c.profile(None);
        let work = Work {
            statements: STATEMENTS.with(|s| s.borrow().clone()),
            rows_changed: c.total_changes() - before,
            comparisons: crate::store::session_rules::CODE_COMPARISONS.with(|n| n.get()),
        };
        (outcome, work)
    }

    /// Invite-only: every way a login can fail, for an address that exists
    /// or not, with or without a pending code, does the same work.
    #[test]
    fn every_failed_login_does_the_same_work() {
        let mut c = database();
        let right = [9; 32];
        let wrong = [8; 32];
        let known = |c: &Connection, email: &str| {
            directory::find_or_create_user(c, &Email::parse(email).unwrap(), NOW).unwrap();
        };
        known(&c, "nocode@acme.test");
        known(&c, "wrong@acme.test");
        store_code(&c, "wrong@acme.test", right, 0, NOW + 600);
        known(&c, "expired@acme.test");
        store_code(&c, "expired@acme.test", right, 0, NOW - 1);
        known(&c, "burned@acme.test");
        store_code(&c, "burned@acme.test", right, MAX_ATTEMPTS, NOW + 600);
        known(&c, "last@acme.test");
        store_code(&c, "last@acme.test", right, MAX_ATTEMPTS - 1, NOW + 600);
        // A code for an address that is not (or no longer) a user.
        store_code(&c, "gone@acme.test", right, 0, NOW + 600);
        store_code(&c, "gone-wrong@acme.test", right, 0, NOW + 600);

        let cases = [
            ("stranger@acme.test", wrong, "no_code"),
            ("nocode@acme.test", wrong, "no_code"),
            ("wrong@acme.test", wrong, "wrong_code"),
            ("expired@acme.test", right, "expired"),
            ("burned@acme.test", right, "burned"),
            ("last@acme.test", wrong, "wrong_code_burned"),
            ("gone@acme.test", right, "unknown_user"),
            ("gone-wrong@acme.test", wrong, "wrong_code"),
        ];
        let mut works = Vec::new();
        for (email, presented, reason) in cases {
            let (outcome, work) = attempt(&mut c, request(email, presented, false));
            assert!(matches!(outcome, LoginOutcome::Failed), "{email}");
            let recorded: String = c
                .query_row(
                    "SELECT details FROM audit_events WHERE action = 'login.failed' AND target = ?1",
                    [email],
                    |r| r.get(0),
                )
                .unwrap();
            assert!(recorded.contains(reason), "{email}: {recorded}");
            works.push((email, work));
        }
        let (_, first) = &works[0];
        assert!(first.statements.len() >= 6, "{:?}", first.statements);
        assert_eq!(first.rows_changed, 2, "the attempt and the audit row");
        assert_eq!(first.comparisons, 1);
        for (email, work) in &works {
            assert_eq!(
                work, first,
                "{email} did other work than an unknown address"
            );
        }
        // A second try on an address without a code finds the expired
        // stand-in: still the same work, and still no login.
        let (outcome, work) = attempt(&mut c, request("stranger@acme.test", [7; 32], false));
        assert!(matches!(outcome, LoginOutcome::Failed));
        assert_eq!(&work, first);
    }

    #[test]
    fn the_right_code_logs_in_once_and_wrong_ones_burn_it() {
        let mut c = database();
        let right = [9; 32];
        store_code(&c, "new@acme.test", right, 0, NOW + 600);
        let (outcome, _) = attempt(&mut c, request("new@acme.test", right, true));
        let LoginOutcome::Success { user, created } = outcome else {
            panic!("the right code logs in")
        };
        assert!(created);
        assert_eq!(user.email, "new@acme.test");
        let (again, _) = attempt(&mut c, request("new@acme.test", right, true));
        assert!(matches!(again, LoginOutcome::Failed), "a code is good once");

        store_code(&c, "burn@acme.test", right, 0, NOW + 600);
        for _ in 0..MAX_ATTEMPTS {
            let (o, _) = attempt(&mut c, request("burn@acme.test", [1; 32], true));
            assert!(matches!(o, LoginOutcome::Failed));
        }
        let (o, _) = attempt(&mut c, request("burn@acme.test", right, true));
        assert!(
            matches!(o, LoginOutcome::Failed),
            "burned after five wrong codes"
        );
    }

    #[test]
    fn judging_a_code() {
        let h = [3; 32];
        let stored = Some((&h[..], 0, NOW + 1));
        assert_eq!(judge_code(stored, &h, NOW, 5), CodeVerdict::Accepted);
        assert_eq!(judge_code(stored, &[4; 32], NOW, 5), CodeVerdict::Wrong);
        assert_eq!(
            judge_code(Some((&h[..], 0, NOW)), &h, NOW, 5),
            CodeVerdict::Expired
        );
        assert_eq!(
            judge_code(Some((&h[..], 5, NOW + 1)), &h, NOW, 5),
            CodeVerdict::Burned
        );
        assert_eq!(judge_code(None, &[0; 32], NOW, 5), CodeVerdict::NoCode);
    }
}
