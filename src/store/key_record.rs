//! A stored key's settings, as loaded from storage and cached for checks.

use std::net::IpAddr;
use std::sync::Arc;

use super::credits::{Balance, Refill};
use crate::config::{Cidr, RateLimitConfig};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A key's type, named in its text (`sk` or `pk`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    /// `sk`: for servers.
    Secret,
    /// `pk`: read-only, safe to embed in clients.
    Publishable,
}

impl KeyType {
    pub fn tag(self) -> &'static str {
        match self {
            KeyType::Secret => "sk",
            KeyType::Publishable => "pk",
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Secret => "secret",
            KeyType::Publishable => "publishable",
        }
    }
    pub fn parse(s: &str) -> Option<KeyType> {
        match s {
            "secret" => Some(KeyType::Secret),
            "publishable" => Some(KeyType::Publishable),
            _ => None,
        }
    }
}

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
        now < self.active_until()
    }

    /// The first second the key is not usable: never for an unrevoked key
    /// without expiry (`i64::MAX`), always for a revoked one (`i64::MIN`).
    pub fn active_until(&self) -> i64 {
        match (self.revoked_at, self.expires_at) {
            (Some(_), _) => i64::MIN,
            (None, expires) => expires.unwrap_or(i64::MAX),
        }
    }

    /// `full_access` passes every scope check.
    pub fn has_scope(&self, scope: &str) -> bool {
        has_scope(self.scopes.iter().map(String::as_str), scope)
    }

    /// The address is compared in canonical form: an IPv4-mapped IPv6
    /// address (`::ffff:10.1.2.3`) is the IPv4 address it carries.
    pub fn ip_allowed(&self, ip: Option<IpAddr>) -> bool {
        ip_allowed(self.allowed_ips.as_deref(), ip)
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
    ["GET", "HEAD", "OPTIONS"]
        .iter()
        .any(|safe| method.eq_ignore_ascii_case(safe))
}

// The rules themselves, shared with the verification cache's compact copy
// of a key (`keys::store`).

/// Whether a key with `scopes` may do what needs `scope`; `full_access`
/// passes every check.
pub fn has_scope<'a>(mut scopes: impl Iterator<Item = &'a str>, scope: &str) -> bool {
    scopes.any(|s| s == scope || s == "full_access")
}

/// Whether `ip` is within `allowed` (`None`: anywhere). The address is
/// compared in canonical form: an IPv4-mapped IPv6 address
/// (`::ffff:10.1.2.3`) is the IPv4 address it carries.
pub fn ip_allowed(allowed: Option<&[Cidr]>, ip: Option<IpAddr>) -> bool {
    match allowed {
        None => true,
        Some(nets) => ip.is_some_and(|ip| {
            let ip = ip.to_canonical();
            nets.iter().any(|n| n.contains(&ip))
        }),
    }
}
