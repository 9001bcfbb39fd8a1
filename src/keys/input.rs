//! Key settings as clients send them, validated into typed values (SPEC
//! section 8). Every problem is a 422 naming the field.

use serde::{Deserialize, Deserializer};
use utoipa::ToSchema;

use crate::catalog::Catalog;
use crate::config::{Cidr, RateLimitConfig};
use crate::error::ApiError;
use crate::keys::credits::{Interval, Refill};
use crate::keys::KeyType;
use crate::types::Name;

const TEN_YEARS: i64 = 3650 * 86_400;
const MAX_METADATA_BYTES: usize = 4096;

#[derive(Clone, Copy, Debug, Deserialize, ToSchema)]
pub struct RateLimitInput {
    pub limit: u64,
    pub window_secs: u64,
}

#[derive(Clone, Copy, Debug, Deserialize, ToSchema)]
pub struct RefillInput {
    pub amount: i64,
    pub interval: Interval,
}

#[derive(Clone, Copy, Debug, Deserialize, ToSchema)]
pub struct CreditsInput {
    pub remaining: i64,
    #[serde(default)]
    pub refill: Option<RefillInput>,
}

/// `POST /api/v1/api-keys`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateKeyBody {
    /// 1-100 characters (trimmed), no control characters.
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    /// `secret` (default) or `publishable`.
    #[serde(default, rename = "type")]
    pub kind: Option<KeyType>,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// A short tag: `production` (default), `staging`, `ci`, ...
    #[serde(default)]
    #[schema(pattern = "^[a-z0-9_-]{1,32}$")]
    pub environment: Option<String>,
    /// 1..=3650; or give `expires_at`, not both.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 3650)]
    pub expires_in_days: Option<i64>,
    /// RFC 3339, in the future, at most 10 years ahead.
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub rate_limit: Option<RateLimitInput>,
    #[serde(default)]
    #[schema(min_length = 1, max_length = 128)]
    pub owner_id: Option<String>,
    #[serde(default)]
    pub credits: Option<CreditsInput>,
    /// CIDR list; the key fails with `forbidden_ip` from elsewhere.
    #[serde(default)]
    pub allowed_ips: Option<Vec<String>>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: Option<serde_json::Value>,
}

/// Distinguishes a field that is absent (`None`) from one set to `null`
/// (`Some(None)`).
fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// `PATCH /api/v1/api-keys/{id}`: absent fields stay; `null` clears.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct PatchKeyBody {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<RateLimitInput>)]
    pub rate_limit: Option<Option<RateLimitInput>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub owner_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<CreditsInput>)]
    pub credits: Option<Option<CreditsInput>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Vec<String>>)]
    pub allowed_ips: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub expires_at: Option<Option<String>>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
}

/// Validated settings of a new key.
#[derive(Clone, Debug)]
pub struct KeySpec {
    pub name: String,
    pub kind: KeyType,
    pub environment: String,
    pub scopes: Vec<String>,
    pub expires_at: Option<i64>,
    pub rate_limit: Option<RateLimitConfig>,
    pub owner_id: Option<String>,
    pub credits: Option<(i64, Option<Refill>)>,
    pub allowed_ips: Option<Vec<Cidr>>,
    pub metadata: serde_json::Value,
}

pub fn name(raw: &str) -> Result<String, ApiError> {
    Name::parse(raw)
        .map(|n| n.as_str().to_string())
        .map_err(|why| ApiError::validation("name", why))
}

pub fn scopes(raw: &[String], catalog: &Catalog) -> Result<Vec<String>, ApiError> {
    if raw.len() > 50 {
        return Err(ApiError::validation("scopes", "at most 50 scopes"));
    }
    let mut out: Vec<String> = Vec::new();
    for s in raw {
        if !catalog.has_scope(s) {
            return Err(ApiError::validation(
                "scopes",
                format!("`{s}` is not in the catalog (GET /api/v1/catalog)"),
            ));
        }
        if !out.contains(s) {
            out.push(s.clone());
        }
    }
    Ok(out)
}

pub fn environment(raw: Option<&str>) -> Result<String, ApiError> {
    let env = raw.unwrap_or("production").trim();
    let ok = (1..=32).contains(&env.len())
        && env
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(env.to_string())
    } else {
        Err(ApiError::validation(
            "environment",
            "must be 1-32 characters of a-z, 0-9, `-`, `_`",
        ))
    }
}

pub fn expires_at(raw: &str, now: i64) -> Result<i64, ApiError> {
    let at = time::OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339)
        .map_err(|_| {
            ApiError::validation(
                "expires_at",
                "must be an RFC 3339 time such as 2027-01-31T00:00:00Z",
            )
        })?
        .unix_timestamp();
    if at <= now {
        return Err(ApiError::validation("expires_at", "must be in the future"));
    }
    if at > now + TEN_YEARS {
        return Err(ApiError::validation(
            "expires_at",
            "must be at most 10 years ahead",
        ));
    }
    Ok(at)
}

pub fn rate_limit(raw: RateLimitInput) -> Result<RateLimitConfig, ApiError> {
    if !(1..=86_400).contains(&raw.window_secs) {
        return Err(ApiError::validation(
            "rate_limit.window_secs",
            "must be between 1 and 86400",
        ));
    }
    if !(1..=1_000_000_000).contains(&raw.limit) {
        return Err(ApiError::validation(
            "rate_limit.limit",
            "must be between 1 and 1000000000",
        ));
    }
    Ok(RateLimitConfig {
        limit: raw.limit as u32,
        window_secs: raw.window_secs as u32,
    })
}

pub fn owner_id(raw: &str) -> Result<String, ApiError> {
    let s = raw.trim();
    if s.is_empty() || s.chars().count() > 128 || s.chars().any(char::is_control) {
        return Err(ApiError::validation(
            "owner_id",
            "must be 1-128 characters without control characters",
        ));
    }
    Ok(s.to_string())
}

pub fn credits(raw: CreditsInput) -> Result<(i64, Option<Refill>), ApiError> {
    if !(0..=1_000_000_000_000).contains(&raw.remaining) {
        return Err(ApiError::validation(
            "credits.remaining",
            "must be between 0 and 10^12",
        ));
    }
    let refill = match raw.refill {
        Some(r) if !(1..=1_000_000_000_000).contains(&r.amount) => {
            return Err(ApiError::validation(
                "credits.refill.amount",
                "must be between 1 and 10^12",
            ))
        }
        Some(r) => Some(Refill {
            amount: r.amount,
            interval: r.interval,
        }),
        None => None,
    };
    Ok((raw.remaining, refill))
}

pub fn allowed_ips(raw: &[String]) -> Result<Vec<Cidr>, ApiError> {
    if raw.is_empty() || raw.len() > 100 {
        return Err(ApiError::validation(
            "allowed_ips",
            "must list 1-100 networks (or be null)",
        ));
    }
    raw.iter()
        .map(|s| {
            s.parse::<Cidr>()
                .map_err(|why| ApiError::validation("allowed_ips", why))
        })
        .collect()
}

pub fn metadata(raw: Option<serde_json::Value>) -> Result<serde_json::Value, ApiError> {
    let value = raw.unwrap_or_else(|| serde_json::json!({}));
    if !value.is_object() {
        return Err(ApiError::validation("metadata", "must be a JSON object"));
    }
    if value.to_string().len() > MAX_METADATA_BYTES {
        return Err(ApiError::validation(
            "metadata",
            "must be at most 4096 bytes of JSON",
        ));
    }
    Ok(value)
}

impl CreateKeyBody {
    pub fn validate(self, catalog: &Catalog, now: i64) -> Result<KeySpec, ApiError> {
        let expires_at = match (self.expires_in_days, self.expires_at.as_deref()) {
            (Some(_), Some(_)) => {
                return Err(ApiError::validation(
                    "expires_in_days",
                    "give expires_in_days or expires_at, not both",
                ))
            }
            (Some(days), None) if !(1..=3650).contains(&days) => {
                return Err(ApiError::validation(
                    "expires_in_days",
                    "must be between 1 and 3650",
                ))
            }
            (Some(days), None) => Some(now + days * 86_400),
            (None, Some(at)) => Some(expires_at(at, now)?),
            (None, None) => None,
        };
        Ok(KeySpec {
            name: name(&self.name)?,
            kind: self.kind.unwrap_or(KeyType::Secret),
            environment: environment(self.environment.as_deref())?,
            scopes: scopes(&self.scopes, catalog)?,
            expires_at,
            rate_limit: self.rate_limit.map(rate_limit).transpose()?,
            owner_id: self.owner_id.as_deref().map(owner_id).transpose()?,
            credits: self.credits.map(credits).transpose()?,
            allowed_ips: self.allowed_ips.as_deref().map(allowed_ips).transpose()?,
            metadata: metadata(self.metadata)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: serde_json::Value) -> CreateKeyBody {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn validates_every_field() {
        let catalog = Catalog::from_config(&crate::config::Config::default());
        let now = 1_800_000_000;
        let ok = body(serde_json::json!({"name": " CI key ", "scopes": ["keys:read", "keys:read"], "expires_in_days": 30,
            "rate_limit": {"limit": 5, "window_secs": 10}, "credits": {"remaining": 10, "refill": {"amount": 10, "interval": "daily"}},
            "allowed_ips": ["10.0.0.0/8", "192.0.2.1"], "metadata": {"team": "a"}}))
        .validate(&catalog, now)
        .unwrap();
        assert_eq!(ok.name, "CI key");
        assert_eq!(ok.scopes, ["keys:read"]);
        assert_eq!(ok.expires_at, Some(now + 30 * 86_400));
        assert_eq!(ok.environment, "production");
        assert_eq!(ok.allowed_ips.unwrap().len(), 2);
        for (json, field) in [
            (serde_json::json!({"name": ""}), "name"),
            (
                serde_json::json!({"name": "x", "scopes": ["nope"]}),
                "scopes",
            ),
            (
                serde_json::json!({"name": "x", "expires_in_days": 0}),
                "expires_in_days",
            ),
            (
                serde_json::json!({"name": "x", "expires_in_days": 3651}),
                "expires_in_days",
            ),
            (
                serde_json::json!({"name": "x", "expires_in_days": 1, "expires_at": "2030-01-01T00:00:00Z"}),
                "expires_in_days",
            ),
            (
                serde_json::json!({"name": "x", "expires_at": "2020-01-01T00:00:00Z"}),
                "expires_at",
            ),
            (
                serde_json::json!({"name": "x", "expires_at": "2099-01-01T00:00:00Z"}),
                "expires_at",
            ),
            (
                serde_json::json!({"name": "x", "expires_at": "tomorrow"}),
                "expires_at",
            ),
            (
                serde_json::json!({"name": "x", "rate_limit": {"limit": 1, "window_secs": 0}}),
                "rate_limit.window_secs",
            ),
            (
                serde_json::json!({"name": "x", "rate_limit": {"limit": 1, "window_secs": 86401}}),
                "rate_limit.window_secs",
            ),
            (
                serde_json::json!({"name": "x", "environment": "Prod uction"}),
                "environment",
            ),
            (
                serde_json::json!({"name": "x", "allowed_ips": ["nope"]}),
                "allowed_ips",
            ),
            (
                serde_json::json!({"name": "x", "allowed_ips": []}),
                "allowed_ips",
            ),
            (
                serde_json::json!({"name": "x", "metadata": [1]}),
                "metadata",
            ),
            (
                serde_json::json!({"name": "x", "credits": {"remaining": -1}}),
                "credits.remaining",
            ),
        ] {
            let err = body(json.clone()).validate(&catalog, now).unwrap_err();
            assert!(err.message.starts_with(field), "{json}: {}", err.message);
        }
    }

    proptest::proptest! {
        /// `allowed_ips` accepts exactly lists of 1-100 addresses or CIDR
        /// networks; each entry comes back as its network, which parses to itself.
        #[test]
        fn allowed_ips_accept_exactly_addresses_and_networks(entries in proptest::collection::vec("\\PC{0,20}|[0-9a-f:./]{1,24}", 0..4)) {
            let expected_ok = !entries.is_empty()
                && entries.iter().all(|e| {
                    let e = e.trim();
                    e.parse::<ipnet::IpNet>().is_ok() || e.parse::<std::net::IpAddr>().is_ok()
                });
            match allowed_ips(&entries) {
                Ok(nets) => {
                    proptest::prop_assert!(expected_ok);
                    for net in nets {
                        let again: Cidr = String::from(net).parse().unwrap();
                        proptest::prop_assert_eq!(again, net);
                    }
                }
                Err(e) => {
                    proptest::prop_assert!(!expected_ok);
                    proptest::prop_assert!(e.message.starts_with("allowed_ips"));
                }
            }
        }

        #[test]
        fn networks_round_trip(a: u32, len in 0u8..=32, b: u128, len6 in 0u8..=128) {
            let v4 = format!("{}/{len}", std::net::Ipv4Addr::from(a));
            let v6 = format!("{}/{len6}", std::net::Ipv6Addr::from(b));
            let nets = allowed_ips(&[v4.clone(), v6.clone()]).unwrap();
            proptest::prop_assert!(nets[0].contains(&std::net::Ipv4Addr::from(a).into()));
            proptest::prop_assert!(nets[1].contains(&std::net::Ipv6Addr::from(b).into()));
        }

        /// `expires_at` and `expires_in_days`: no input panics or overflows;
        /// what passes lies in the future, at most ten years ahead.
        #[test]
        fn expiry_is_in_range_for_any_input(raw in "\\PC{0,30}|[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(Z|[+-][0-9]{2}:[0-9]{2})", now in -100_000_000_000i64..100_000_000_000, days: i64) {
            if let Ok(at) = expires_at(&raw, now) {
                proptest::prop_assert!(at > now && at <= now + TEN_YEARS);
            }
            let catalog = Catalog::from_config(&crate::config::Config::default());
            let body = CreateKeyBody { expires_in_days: Some(days), ..body(serde_json::json!({"name": "x"})) };
            match body.validate(&catalog, now) {
                Ok(spec) => {
                    proptest::prop_assert!((1..=3650).contains(&days));
                    proptest::prop_assert_eq!(spec.expires_at, Some(now + days * 86_400));
                }
                Err(e) => proptest::prop_assert!(e.message.starts_with("expires_in_days")),
            }
        }
    }
}
