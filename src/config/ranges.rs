//! Every number and every list in the configuration has a range, and a value
//! outside it is refused in every mode. The settings are found by walking the
//! serialized configuration, so a new numeric setting without a range here
//! fails this module's tests instead of slipping through unchecked.

use serde_json::Value;

use super::{Config, Finding};

/// An inclusive range for the setting at `key` (array elements as `*`).
pub(super) struct Range {
    pub key: &'static str,
    pub min: u64,
    pub max: u64,
}

const fn r(key: &'static str, min: u64, max: u64) -> Range {
    Range { key, min, max }
}

const DAY: u64 = 86_400;
const YEAR: u64 = 365 * DAY;

/// Numbers: the value itself.
pub(super) const NUMBERS: &[Range] = &[
    r("http.max_body_bytes", 1024, 64 * 1024 * 1024),
    r("http.workers", 0, 256),
    r("http.shutdown_timeout_secs", 0, 3600),
    r("database.busy_timeout_ms", 100, 600_000),
    r("database.pool_size", 1, 256),
    r("redis.timeout_ms", 1, 5000),
    r("redis.probe_interval_ms", 100, 60_000),
    r("smtp.port", 1, 65_535),
    r("smtp.timeout_secs", 1, 600),
    r("smtp.retry_base_secs", 1, 3600),
    r("smtp.retry_max_secs", 1, DAY),
    r("auth.code_length", 6, 10),
    r("auth.code_ttl_secs", 1, 600),
    r("auth.code_max_attempts", 1, 100),
    r("auth.send_code_interval_secs", 1, DAY),
    r("auth.send_code_per_hour", 1, 10_000),
    r("auth.send_code_per_ip_per_hour", 1, 1_000_000),
    r("auth.access_ttl_secs", 60, DAY),
    r("auth.session_idle_secs", 60, YEAR),
    r("auth.session_max_secs", 60, YEAR),
    r("auth.refresh_reuse_grace_secs", 0, 300),
    r("keys.default_rate_limit.limit", 1, 1_000_000_000),
    r("keys.default_rate_limit.window_secs", 1, DAY),
    r("keys.cache_capacity", 10, 10_000_000),
    r("keys.negative_cache_ttl_secs", 1, 3600),
    r("keys.cache_ttl_secs", 1, 3600),
    r("usage.flush_interval_secs", 1, 300),
    r("cluster.max_staleness_ms", 100, 60_000),
    r("webhooks.timeout_secs", 1, 300),
    r("webhooks.retry_delays_secs.*", 1, 7 * DAY),
    r("billing.plans.*.max_keys", 0, 10_000_000),
    r(
        "billing.plans.*.monthly_verifications",
        0,
        1_000_000_000_000,
    ),
];

/// Lists: the number of entries.
pub(super) const LIST_LENGTHS: &[Range] = &[
    r("trusted_proxies", 0, 256),
    r("cors.allowed_origins", 0, 100),
    r("webhooks.retry_delays_secs", 1, 20),
    r("billing.plans", 0, 100),
    r("scopes", 0, 1000),
    r("routes", 0, 1000),
];

fn find(table: &'static [Range], key: &str) -> Option<&'static Range> {
    table.iter().find(|r| r.key == key)
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

pub(super) fn check(config: &Config, out: &mut Vec<Finding>) {
    let value = serde_json::to_value(config).expect("the configuration serializes");
    walk(&value, "", "", out);
    let smtp = &config.smtp;
    if smtp.retry_max_secs < smtp.retry_base_secs {
        out.push(Finding::error(
            "smtp.retry_max_secs",
            format!(
                "is {}; it must be at least smtp.retry_base_secs ({})",
                smtp.retry_max_secs, smtp.retry_base_secs
            ),
        ));
    }
}

/// `norm` names the setting with `*` for array elements (the table key);
/// `shown` names it as the message does (`billing.plans[1].max_keys`).
fn walk(value: &Value, norm: &str, shown: &str, out: &mut Vec<Finding>) {
    match value {
        Value::Object(map) => {
            for (k, child) in map {
                walk(child, &join(norm, k), &join(shown, k), out);
            }
        }
        Value::Array(items) => {
            if let Some(range) = find(LIST_LENGTHS, norm) {
                let n = items.len() as u64;
                if n < range.min || n > range.max {
                    out.push(Finding::error(
                        shown,
                        format!(
                            "has {n} entries; allowed {}..={} entries",
                            range.min, range.max
                        ),
                    ));
                }
            }
            for (i, item) in items.iter().enumerate() {
                walk(item, &format!("{norm}.*"), &format!("{shown}[{i}]"), out);
            }
        }
        Value::Number(n) => {
            let Some(range) = find(NUMBERS, norm) else {
                return;
            };
            let inside = match n.as_u64() {
                Some(v) => (range.min..=range.max).contains(&v),
                None => false,
            };
            if !inside {
                out.push(Finding::error(
                    shown,
                    format!("is {n}; allowed {}..={}", range.min, range.max),
                ));
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::unknown::schema_sample;

    /// Every number and list leaf of the configuration, with `*` for elements.
    fn leaves(value: &Value, norm: &str, numbers: &mut Vec<String>, lists: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (k, child) in map {
                    leaves(child, &join(norm, k), numbers, lists);
                }
            }
            Value::Array(items) => {
                lists.push(norm.to_string());
                for item in items {
                    leaves(item, &format!("{norm}.*"), numbers, lists);
                }
            }
            Value::Number(_) => numbers.push(norm.to_string()),
            _ => {}
        }
    }

    #[test]
    fn every_number_and_list_has_a_range_and_every_range_a_setting() {
        let value = serde_json::to_value(schema_sample()).unwrap();
        let (mut numbers, mut lists) = (Vec::new(), Vec::new());
        leaves(&value, "", &mut numbers, &mut lists);
        numbers.sort();
        numbers.dedup();
        lists.sort();
        lists.dedup();
        for key in &numbers {
            assert!(find(NUMBERS, key).is_some(), "{key} has no range");
        }
        for key in &lists {
            assert!(find(LIST_LENGTHS, key).is_some(), "list {key} has no range");
        }
        for range in NUMBERS {
            assert!(
                numbers.iter().any(|k| k == range.key),
                "{} is stale",
                range.key
            );
        }
        for range in LIST_LENGTHS {
            assert!(
                lists.iter().any(|k| k == range.key),
                "{} is stale",
                range.key
            );
        }
    }

    #[test]
    fn the_defaults_are_inside_every_range() {
        let mut out = Vec::new();
        check(&Config::default(), &mut out);
        assert!(out.is_empty(), "{out:?}");
    }

    fn findings(config: &Config) -> Vec<(String, String)> {
        let mut out = Vec::new();
        check(config, &mut out);
        out.into_iter().map(|f| (f.key, f.reason)).collect()
    }

    #[test]
    fn values_outside_their_range_are_refused_with_the_range() {
        let mut c = Config::default();
        c.http.workers = 100_000;
        c.keys.cache_ttl_secs = 0;
        c.webhooks.retry_delays_secs = vec![];
        assert_eq!(
            findings(&c),
            vec![
                ("http.workers".into(), "is 100000; allowed 0..=256".into()),
                (
                    "keys.cache_ttl_secs".into(),
                    "is 0; allowed 1..=3600".into()
                ),
                (
                    "webhooks.retry_delays_secs".into(),
                    "has 0 entries; allowed 1..=20 entries".into()
                ),
            ]
        );
    }

    #[test]
    fn list_elements_and_array_table_entries_are_checked_by_position() {
        let mut c = Config::default();
        c.webhooks.retry_delays_secs = vec![5, 0];
        c.billing.plans.push(crate::config::PlanConfig {
            name: "free".into(),
            stripe_price_id: None,
            max_keys: Some(20_000_000),
            monthly_verifications: None,
        });
        assert_eq!(
            findings(&c),
            vec![
                (
                    "billing.plans[0].max_keys".into(),
                    "is 20000000; allowed 0..=10000000".into()
                ),
                (
                    "webhooks.retry_delays_secs[1]".into(),
                    "is 0; allowed 1..=604800".into()
                ),
            ]
        );
    }

    #[test]
    fn smtp_retry_max_is_at_least_the_base() {
        let mut c = Config::default();
        c.smtp.retry_base_secs = 600;
        c.smtp.retry_max_secs = 60;
        let f = findings(&c);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].0, "smtp.retry_max_secs");
    }

    /// config.example.toml states each number's range next to it.
    #[test]
    fn the_example_file_states_every_range() {
        let example = include_str!("../../config.example.toml");
        for range in NUMBERS.iter().chain(LIST_LENGTHS) {
            let key = range.key.trim_end_matches(".*");
            let leaf = key.rsplit('.').next().unwrap();
            let stated = format!("{}..={}", range.min, range.max);
            let found = example.lines().any(|line| {
                let line = line.trim_start_matches(['#', ' ']);
                (line.starts_with(&format!("{leaf} ")) || line.contains(&format!("[[{key}]]")))
                    && line.contains(&stated)
            });
            assert!(
                found,
                "config.example.toml: `{leaf} = ...  # {stated}` for {}",
                range.key
            );
        }
    }
}
