//! The audit log behind the storage interface: who did what, from where,
//! and the page of a project's log. Rows are written by each backend in the
//! transaction of the change they describe (see [`super::effects`]).

use async_trait::async_trait;

use super::{ProjectId, StoreResult};

#[async_trait]
pub trait AuditRepo: Send + Sync {
    /// A page of a project's audit log, newest first, and the total.
    async fn audit_page(
        &self,
        project: ProjectId,
        offset: i64,
        limit: i64,
    ) -> StoreResult<(Vec<StoredEvent>, i64)>;
}

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
