//! The metadata of a key as every API answer and webhook shows it (never
//! the key or its hash).

use serde::Serialize;
use utoipa::ToSchema;

use crate::config::RateLimitConfig;
use crate::keys::credits::Refill;
use crate::keys::record::KeyRecord;
use crate::keys::KeyType;
use crate::types::rfc3339;

#[derive(Serialize, ToSchema)]
pub struct RateLimitView {
    pub limit: u32,
    pub window_secs: u32,
}

#[derive(Serialize, ToSchema)]
pub struct CreditsView {
    pub remaining: i64,
    pub refill: Option<Refill>,
}

/// Key metadata: every read returns this; never the key or its hash.
#[derive(Serialize, ToSchema)]
pub struct KeyView {
    pub id: String,
    pub project_id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: KeyType,
    pub environment: String,
    /// The first 16 characters, e.g. `gate_sk_Ab3dE6gH`.
    pub prefix: String,
    pub scopes: Vec<String>,
    /// The key's own limit, or the configured default.
    pub rate_limit: RateLimitView,
    pub owner_id: Option<String>,
    /// `null`: unlimited.
    pub credits: Option<CreditsView>,
    pub allowed_ips: Option<Vec<String>>,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    pub is_active: bool,
    pub created_at: String,
    pub updated_at: String,
    pub last_used_at: Option<String>,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    /// The user who created it.
    pub created_by: Option<String>,
}

impl KeyView {
    /// The metadata of `k`, with the default rate limit resolved. Its
    /// credit balance is the stored one: spends are made in storage.
    pub fn new(k: &KeyRecord, default_rate: RateLimitConfig, now: i64) -> Self {
        let rl = k.effective_rate_limit(default_rate);
        let credits = k.credits;
        KeyView {
            id: k.id.to_string(),
            project_id: k.project_id.to_string(),
            name: k.name.clone(),
            kind: k.kind,
            environment: k.environment.clone(),
            prefix: k.prefix.clone(),
            scopes: k.scopes.clone(),
            rate_limit: RateLimitView {
                limit: rl.limit,
                window_secs: rl.window_secs,
            },
            owner_id: k.owner_id.clone(),
            credits: credits.map(|c| CreditsView {
                remaining: c.remaining,
                refill: c.refill,
            }),
            allowed_ips: k
                .allowed_ips
                .as_ref()
                .map(|ips| ips.iter().map(|c| String::from(*c)).collect()),
            metadata: k.metadata.clone(),
            is_active: k.is_active(now),
            created_at: rfc3339(k.created_at),
            updated_at: rfc3339(k.updated_at),
            last_used_at: k.last_used_at.map(rfc3339),
            expires_at: k.expires_at.map(rfc3339),
            revoked_at: k.revoked_at.map(rfc3339),
            created_by: k.created_by.clone(),
        }
    }
}

/// The metadata as JSON, for webhook payloads.
pub fn key_json(k: &KeyRecord, default_rate: RateLimitConfig, now: i64) -> serde_json::Value {
    serde_json::to_value(KeyView::new(k, default_rate, now)).expect("key metadata serializes")
}
