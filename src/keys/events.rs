//! What a change to a key records and announces: its audit row and its
//! webhook event (with the key's metadata as the API shows it). Built here,
//! as values, and written by the storage backend in the change's own
//! transaction.

use crate::config::RateLimitConfig;
use crate::keys::record::KeyRecord;
use crate::keys::view::key_json;
use crate::store::audit::Actor;
use crate::store::effects::{AuditEntry, Effects, WebhookEvent};

/// Builds the effects of key changes; needs the default rate limit, which
/// key metadata shows for keys without their own.
#[derive(Clone, Copy, Debug)]
pub struct KeyEvents {
    pub default_rate: RateLimitConfig,
    /// When the events happen (key metadata says whether it is active).
    pub now: i64,
}

fn audit(
    key: &KeyRecord,
    action: &'static str,
    actor: &Actor,
    details: serde_json::Value,
) -> AuditEntry {
    AuditEntry {
        project_id: Some(key.project_id.to_string()),
        action,
        actor: actor.clone(),
        target: Some(key.id.to_string()),
        details,
    }
}

impl KeyEvents {
    fn webhook(&self, key: &KeyRecord, event: &'static str) -> WebhookEvent {
        WebhookEvent {
            project_id: key.project_id.to_string(),
            event,
            data: key_json(key, self.default_rate, self.now),
        }
    }

    pub fn created(&self, key: &KeyRecord, actor: &Actor) -> Effects {
        let details = serde_json::json!({ "name": key.name, "type": key.kind.as_str() });
        Effects::default()
            .audit(audit(key, "key.created", actor, details))
            .webhook(self.webhook(key, "key.created"))
    }

    /// An edit or revocation (`key.updated`, `key.revoked`).
    pub fn changed(
        &self,
        key: &KeyRecord,
        action: &'static str,
        actor: &Actor,
        details: serde_json::Value,
    ) -> Effects {
        Effects::default()
            .audit(audit(key, action, actor, details))
            .webhook(self.webhook(key, action))
    }

    pub fn leaked(&self, key: &KeyRecord, actor: &Actor, report: serde_json::Value) -> Effects {
        let mut event = self.webhook(key, "key.leaked");
        event.data["report"] = report.clone();
        Effects::default()
            .audit(audit(key, "key.leaked", actor, report))
            .webhook(event)
    }

    /// `old` rotated to `new`; `ended` is the predecessor of `old` whose
    /// grace the rotation ended.
    pub fn rotated(
        &self,
        old: &KeyRecord,
        new: &KeyRecord,
        ended: Option<&KeyRecord>,
        actor: &Actor,
    ) -> Effects {
        let mut effects = match ended {
            Some(p) => self.changed(
                p,
                "key.revoked",
                actor,
                serde_json::json!({ "reason": "successor rotated", "successor_rotated": &*old.id }),
            ),
            None => Effects::default(),
        };
        effects = effects
            .audit(audit(
                old,
                "key.rotated",
                actor,
                serde_json::json!({ "new_key_id": &*new.id, "old_expires_at": old.expires_at, "old_revoked_at": old.revoked_at }),
            ))
            .audit(audit(
                new,
                "key.created",
                actor,
                serde_json::json!({ "name": new.name, "rotated_from": &*old.id }),
            ));
        let mut event = self.webhook(new, "key.rotated");
        event.data["rotated_from"] = serde_json::json!({
            "id": &*old.id,
            "expires_at": old.expires_at.map(crate::types::rfc3339),
            "revoked_at": old.revoked_at.map(crate::types::rfc3339),
        });
        effects.webhook(event)
    }

    /// Keys imported from another service: audited, not announced.
    pub fn imported(&self, key: &KeyRecord) -> Effects {
        Effects::default().audit(audit(
            key,
            "key.imported",
            &Actor::system(),
            serde_json::json!({ "name": key.name }),
        ))
    }
}

pub use crate::store::keys::{check_rotation, RotationRefusal};

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn key() -> KeyRecord {
        KeyRecord {
            id: Arc::from("key_a"),
            project_id: Arc::from("proj_1"),
            hash: [1; 32],
            prefix: "gate_sk_x".into(),
            name: "a".into(),
            kind: crate::keys::KeyType::Secret,
            environment: "production".into(),
            scopes: vec![],
            rate_limit: None,
            owner_id: None,
            credits: None,
            allowed_ips: None,
            metadata: serde_json::json!({}),
            created_at: 0,
            updated_at: 0,
            last_used_at: None,
            expires_at: None,
            revoked_at: None,
            created_by: None,
            rotated_to: None,
        }
    }

    #[test]
    fn rotation_rules() {
        let k = key();
        assert_eq!(check_rotation(&k, false, 1, Some(2), true, 10), Ok(()));
        assert_eq!(
            check_rotation(&k, false, 2, Some(2), true, 10),
            Err(RotationRefusal::PlanLimit)
        );
        assert_eq!(
            check_rotation(&k, true, 2, Some(2), true, 10),
            Ok(()),
            "ending the predecessor's grace frees its slot"
        );
        assert_eq!(
            check_rotation(&k, false, 2, Some(2), false, 10),
            Ok(()),
            "grace 0 replaces the key"
        );
        assert_eq!(check_rotation(&k, false, 99, None, true, 10), Ok(()));
        let revoked = KeyRecord {
            revoked_at: Some(5),
            ..key()
        };
        assert_eq!(
            check_rotation(&revoked, false, 0, None, false, 10),
            Err(RotationRefusal::Inactive)
        );
        let rotated = KeyRecord {
            rotated_to: Some(Arc::from("key_b")),
            ..key()
        };
        assert_eq!(
            check_rotation(&rotated, false, 0, None, false, 10),
            Err(RotationRefusal::AlreadyRotated(Arc::from("key_b")))
        );
    }

    #[test]
    fn a_rotation_records_both_keys_and_announces_the_new_one() {
        let events = KeyEvents {
            default_rate: RateLimitConfig {
                limit: 100,
                window_secs: 60,
            },
            now: 1_795_000_000,
        };
        let old = KeyRecord {
            expires_at: Some(1000),
            ..key()
        };
        let new = KeyRecord {
            id: Arc::from("key_b"),
            ..key()
        };
        let pred = KeyRecord {
            id: Arc::from("key_0"),
            ..key()
        };
        let e = events.rotated(&old, &new, Some(&pred), &Actor::system());
        let actions: Vec<_> = e
            .audit
            .iter()
            .map(|a| (a.action, a.target.clone()))
            .collect();
        assert_eq!(
            actions,
            vec![
                ("key.revoked", Some("key_0".into())),
                ("key.rotated", Some("key_a".into())),
                ("key.created", Some("key_b".into()))
            ]
        );
        let hooks: Vec<_> = e.webhooks.iter().map(|w| w.event).collect();
        assert_eq!(hooks, vec!["key.revoked", "key.rotated"]);
        assert_eq!(e.webhooks[1].data["id"], "key_b");
        assert_eq!(e.webhooks[1].data["rotated_from"]["id"], "key_a");
    }
}
