//! Side effects as values: what must commit together with a change to
//! stored state. The code that decides a change builds them; each backend
//! writes them inside the transaction of the change, so an audit row, a
//! webhook event or a message exists exactly when its change committed.

use super::audit::Actor;
use crate::store::work::Outgoing;

/// One audit log row.
#[derive(Clone, Debug)]
pub struct AuditEntry {
    pub project_id: Option<String>,
    pub action: &'static str,
    pub actor: Actor,
    pub target: Option<String>,
    pub details: serde_json::Value,
}

/// One outgoing webhook event, queued for every active endpoint of the
/// project that subscribes to it.
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookEvent {
    pub project_id: String,
    pub event: &'static str,
    pub data: serde_json::Value,
}

#[derive(Clone, Debug, Default)]
pub struct Effects {
    pub audit: Vec<AuditEntry>,
    pub webhooks: Vec<WebhookEvent>,
    pub mail: Vec<Outgoing>,
}

impl Effects {
    pub fn audit(mut self, entry: AuditEntry) -> Self {
        self.audit.push(entry);
        self
    }

    pub fn webhook(mut self, event: WebhookEvent) -> Self {
        self.webhooks.push(event);
        self
    }

    pub fn and(mut self, other: Effects) -> Self {
        self.audit.extend(other.audit);
        self.webhooks.extend(other.webhooks);
        self.mail.extend(other.mail);
        self
    }
}
