//! A stored key's settings, as loaded from storage and cached for checks.

use std::net::IpAddr;
use std::sync::Arc;

use crate::config::{Cidr, RateLimitConfig};
use crate::keys::credits::{Balance, Refill};
use crate::keys::KeyType;

#[derive(Clone, Debug, PartialEq)]
pub struct KeyRecord {
    pub id: Arc<str>,
    pub project_id: Arc<str>,
    pub hash: [u8; 32],
    pub prefix: String,
    pub name: String,
    pub kind: KeyType,
    pub environment: String,
    pub scopes: Vec<String>,
    /// `None`: the configured default.
    pub rate_limit: Option<RateLimitConfig>,
    pub owner_id: Option<String>,
    /// `None`: unlimited.
    pub credits: Option<Balance>,
    /// `None`: usable from anywhere.
    pub allowed_ips: Option<Vec<Cidr>>,
    pub metadata: serde_json::Value,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_used_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub created_by: Option<String>,
    /// The successor, once the key was rotated. During the grace period the
    /// key draws on its successor's credits and rate-limit window.
    pub rotated_to: Option<Arc<str>>,
}

impl KeyRecord {
    /// Revoked or past its expiry (checked against the clock, to the second).
    pub fn is_active(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| now < e)
    }

    /// `full_access` passes every scope check.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope || s == "full_access")
    }

    /// The address is compared in canonical form: an IPv4-mapped IPv6
    /// address (`::ffff:10.1.2.3`) is the IPv4 address it carries.
    pub fn ip_allowed(&self, ip: Option<IpAddr>) -> bool {
        match &self.allowed_ips {
            None => true,
            Some(nets) => ip.is_some_and(|ip| {
                let ip = ip.to_canonical();
                nets.iter().any(|n| n.contains(&ip))
            }),
        }
    }

    pub fn effective_rate_limit(&self, default: RateLimitConfig) -> RateLimitConfig {
        self.rate_limit.unwrap_or(default)
    }

    /// The id whose live state (window and credits) this key draws on: its
    /// successor's once rotated, else its own. A line of rotations never has
    /// more than two live keys, so one step is enough.
    pub fn state_id(&self) -> &Arc<str> {
        self.rotated_to.as_ref().unwrap_or(&self.id)
    }

    pub fn refill(&self) -> Option<Refill> {
        self.credits.and_then(|c| c.refill)
    }
}

/// GET, HEAD and OPTIONS: the only methods a publishable key may use.
pub fn is_safe_method(method: &str) -> bool {
    matches!(
        method.to_ascii_uppercase().as_str(),
        "GET" | "HEAD" | "OPTIONS"
    )
}
