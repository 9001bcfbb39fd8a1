//! The audit log behind the storage interface: who did what, from where,
//! and the page of a project's log. Rows are written by each backend in the
//! transaction of the change they describe (see [`super::effects`]).

use async_trait::async_trait;

use super::{ProjectId, StoreResult};

#[async_trait]
pub trait AuditRepo: Send + Sync {
    /// A page of a project's audit log (the entries `filter` lets through),
    /// newest first, and their total.
    async fn audit_page(
        &self,
        project: ProjectId,
        filter: AuditFilter,
        offset: i64,
        limit: i64,
    ) -> StoreResult<(Vec<StoredEvent>, i64)>;
}

/// Which audit entries a page holds; every part is optional and they all
/// apply together.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only this action (`key.created`, ...).
    pub action: Option<String>,
    /// Only entries by this kind of actor (`user`, `key`, `system`).
    pub actor_type: Option<String>,
    /// Only entries by this actor (a user or key id).
    pub actor_id: Option<String>,
    /// Only entries about this target (a key, user, project or session id).
    pub target: Option<String>,
    /// Only entries recorded at or after this time (epoch seconds).
    pub since: Option<i64>,
    /// Only entries recorded before this time (epoch seconds).
    pub until: Option<i64>,
}

/// The rows of a project's audit page, the same statement text for both
/// backends (SQLite's placeholders are `?N`: it replaces `$` by `?`).
/// Parameters: $1 the project, then the parts of [`AuditFilter`] in order
/// ($2 action, $3 actor type, $4 actor id, $5 target, $6 since, $7 until),
/// each NULL when absent. A project's log is its own entries and the
/// sign-ins of its current members.
pub const AUDIT_PAGE_ROWS: &str = "(project_id = $1 OR (project_id IS NULL
        AND action IN ('login.succeeded', 'login.failed', 'logout', 'session.token_reused')
        AND actor_id IN (SELECT user_id FROM memberships WHERE project_id = $1)))
    AND (CAST($2 AS TEXT) IS NULL OR action = $2)
    AND (CAST($3 AS TEXT) IS NULL OR actor_type = $3)
    AND (CAST($4 AS TEXT) IS NULL OR actor_id = $4)
    AND (CAST($5 AS TEXT) IS NULL OR target = $5)
    AND (CAST($6 AS BIGINT) IS NULL OR created_at >= $6)
    AND (CAST($7 AS BIGINT) IS NULL OR created_at < $7)";

/// The columns of a stored audit entry, in [`StoredEvent`]'s order.
pub const AUDIT_COLUMNS: &str =
    "id, project_id, action, actor_type, actor_id, target, ip, request_id, details, created_at";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActorType {
    User,
    Key,
    System,
}

impl ActorType {
    pub fn as_str(self) -> &'static str {
        match self {
            ActorType::User => "user",
            ActorType::Key => "key",
            ActorType::System => "system",
        }
    }
}

/// Who did something, from where, in which request.
#[derive(Clone, Debug)]
pub struct Actor {
    pub kind: ActorType,
    pub id: Option<String>,
    pub ip: Option<String>,
    pub request_id: Option<String>,
}

impl Actor {
    pub fn system() -> Self {
        Actor {
            kind: ActorType::System,
            id: None,
            ip: None,
            request_id: None,
        }
    }
}

/// Stored audit events, newest first (tests and the audit-log route).
#[derive(Clone, Debug, PartialEq)]
pub struct StoredEvent {
    pub id: i64,
    pub project_id: Option<String>,
    pub action: String,
    pub actor_type: String,
    pub actor_id: Option<String>,
    pub target: Option<String>,
    pub ip: Option<String>,
    pub request_id: Option<String>,
    pub details: serde_json::Value,
    pub created_at: i64,
}

/// An audit row as a backend writes it.
#[derive(Clone, Debug)]
pub struct AuditEvent<'a> {
    pub project_id: Option<&'a str>,
    pub action: &'a str,
    pub actor: &'a Actor,
    pub target: Option<&'a str>,
    pub details: serde_json::Value,
}
