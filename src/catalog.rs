//! What a project can use: scopes (built in and from `[[scopes]]`), key
//! types, plans and the default rate limit. Built once from the configuration.

use serde::Serialize;
use utoipa::ToSchema;

use crate::config::Config;

/// Built-in scopes: name and description.
pub const BUILTIN_SCOPES: &[(&str, &str)] = &[
    ("full_access", "Passes every scope check."),
    ("keys:read", "List and read the project's API keys."),
    ("analytics:read", "Read usage figures and the audit log."),
    (
        "webhooks:manage",
        "Create, list and delete outgoing webhooks.",
    ),
];

/// Scope names: 1-64 characters of `a-z 0-9 : _ - .`.
pub fn is_valid_scope_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b":_-.".contains(&b))
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Catalog {
    pub scopes: Vec<ScopeInfo>,
    pub key_types: Vec<KeyTypeInfo>,
    pub plans: Vec<PlanInfo>,
    pub default_rate_limit: RateLimitInfo,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ScopeInfo {
    pub name: String,
    pub description: String,
    /// Whether the scope is built into Gatehouse (else it comes from `[[scopes]]`).
    pub builtin: bool,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct KeyTypeInfo {
    /// `secret` or `publishable`.
    #[serde(rename = "type")]
    pub kind: String,
    /// What every key of this type starts with, e.g. `gate_sk_`.
    pub prefix: String,
    pub description: String,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct PlanInfo {
    pub name: String,
    /// `null`: unlimited.
    pub max_keys: Option<u64>,
    /// `null`: unlimited.
    pub monthly_verifications: Option<u64>,
    pub default: bool,
}

#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
pub struct RateLimitInfo {
    pub limit: u32,
    pub window_secs: u32,
}

impl Catalog {
    pub fn from_config(config: &Config) -> Self {
        let mut scopes: Vec<ScopeInfo> = BUILTIN_SCOPES
            .iter()
            .map(|(name, description)| ScopeInfo {
                name: (*name).into(),
                description: (*description).into(),
                builtin: true,
            })
            .collect();
        scopes.extend(config.scopes.iter().map(|s| ScopeInfo {
            name: s.name.clone(),
            description: s.description.clone(),
            builtin: false,
        }));
        let prefix = &config.keys.prefix;
        let key_types = vec![
            KeyTypeInfo {
                kind: "secret".into(),
                prefix: format!("{prefix}_sk_"),
                description: "For servers: any method the key's scopes allow.".into(),
            },
            KeyTypeInfo {
                kind: "publishable".into(),
                prefix: format!("{prefix}_pk_"),
                description: "Safe to embed in clients: read-only (GET, HEAD, OPTIONS).".into(),
            },
        ];
        let default_plan = &config.billing.default_plan;
        let plans = if config.billing.plans.is_empty() {
            vec![PlanInfo {
                name: default_plan.clone(),
                max_keys: None,
                monthly_verifications: None,
                default: true,
            }]
        } else {
            config
                .billing
                .plans
                .iter()
                .map(|p| PlanInfo {
                    name: p.name.clone(),
                    max_keys: p.max_keys,
                    monthly_verifications: p.monthly_verifications,
                    default: &p.name == default_plan,
                })
                .collect()
        };
        let rl = config.keys.default_rate_limit;
        Catalog {
            scopes,
            key_types,
            plans,
            default_rate_limit: RateLimitInfo {
                limit: rl.limit,
                window_secs: rl.window_secs,
            },
        }
    }

    pub fn has_scope(&self, name: &str) -> bool {
        self.scopes.iter().any(|s| s.name == name)
    }
}

/// The scope a forward-auth path needs: the `[[routes]]` rule with the
/// longest `path_prefix` that matches. A prefix matches the path itself and
/// everything below it (`/orders` matches `/orders` and `/orders/7`, not
/// `/ordersx`), unless it ends with `/`, without regard to ASCII case. The
/// path must be normalised first (`keys::forward::normalize_path`).
pub fn scope_for_path<'a>(rules: &'a [crate::config::RouteRule], path: &str) -> Option<&'a str> {
    rules
        .iter()
        .filter(|r| {
            // Without regard to ASCII case: `/ORDERS` is `/orders` to many upstreams.
            let p = r.path_prefix.as_bytes();
            let path = path.as_bytes();
            path.len() >= p.len()
                && path[..p.len()].eq_ignore_ascii_case(p)
                && (path.len() == p.len() || p.ends_with(b"/") || path[p.len()] == b'/')
        })
        .max_by_key(|r| r.path_prefix.len())
        .map(|r| r.scope.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RouteRule;

    #[test]
    fn longest_prefix_wins_on_segment_boundaries() {
        let rules = vec![
            RouteRule {
                path_prefix: "/".into(),
                scope: "read".into(),
            },
            RouteRule {
                path_prefix: "/orders".into(),
                scope: "orders".into(),
            },
            RouteRule {
                path_prefix: "/orders/admin".into(),
                scope: "admin".into(),
            },
        ];
        assert_eq!(scope_for_path(&rules, "/orders"), Some("orders"));
        assert_eq!(scope_for_path(&rules, "/orders/7"), Some("orders"));
        assert_eq!(scope_for_path(&rules, "/orders/admin/x"), Some("admin"));
        assert_eq!(scope_for_path(&rules, "/ordersx"), Some("read"));
        assert_eq!(scope_for_path(&rules, "/ORDERS/7"), Some("orders"));
        assert_eq!(scope_for_path(&rules, "/Orders/Admin"), Some("admin"));
        assert_eq!(scope_for_path(&rules, "/"), Some("read"));
        assert_eq!(scope_for_path(&rules[1..], "/other"), None);
    }
}
