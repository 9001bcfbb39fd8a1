//! Settings Gatehouse does not know: in the file (nested tables and every
//! `[[billing.plans]]`, `[[routes]]` and `[[scopes]]` entry included) and in
//! `GATEHOUSE_*` variables. Each is reported with the nearest known name; a
//! warning in local mode, a refusal elsewhere, so a mistyped plan limit never
//! silently becomes "unlimited".
//!
//! The known names come from the settings structs themselves (their
//! serialized defaults, with one entry in each array of tables), so the list
//! cannot fall behind the code.

use std::collections::BTreeMap;

use figment::value::{Dict, Value};

use super::{Config, Finding, PlanConfig, RouteRule, ScopeConfig};

/// A configuration with one entry in every array of tables, so that the
/// fields of those entries appear when it is serialized.
pub(super) fn schema_sample() -> Config {
    let mut config = Config::default();
    config.scopes.push(ScopeConfig {
        name: String::new(),
        description: String::new(),
    });
    config.routes.push(RouteRule {
        path_prefix: String::new(),
        scope: String::new(),
    });
    config.billing.plans.push(PlanConfig {
        name: String::new(),
        stripe_price_id: None,
        max_keys: Some(0),
        monthly_verifications: Some(0),
    });
    config
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Table,
    /// An array of tables; its entries' fields are known as `key.*.field`.
    Tables,
    Value,
}

/// Every known setting, by dotted name with `*` for an array entry.
pub(super) struct Schema(BTreeMap<String, Kind>);

impl Schema {
    pub(super) fn new() -> Schema {
        let value = serde_json::to_value(schema_sample()).expect("the configuration serializes");
        let mut known = BTreeMap::new();
        collect(&value, "", &mut known);
        Schema(known)
    }

    fn kind(&self, key: &str) -> Option<Kind> {
        self.0.get(key).copied()
    }

    /// The known name closest to `key` (edit distance over dotted names).
    fn nearest(&self, key: &str, allow_entries: bool) -> Option<&str> {
        self.0
            .keys()
            .filter(|k| allow_entries || !k.contains('*'))
            .min_by_key(|k| strsim::levenshtein(k, key))
            .map(String::as_str)
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn collect(value: &serde_json::Value, prefix: &str, out: &mut BTreeMap<String, Kind>) {
    let serde_json::Value::Object(map) = value else {
        return;
    };
    for (k, v) in map {
        let key = join(prefix, k);
        let kind = match v {
            serde_json::Value::Object(_) => Kind::Table,
            serde_json::Value::Array(items) if items.iter().any(|i| i.is_object()) => Kind::Tables,
            _ => Kind::Value,
        };
        out.insert(key.clone(), kind);
        match kind {
            Kind::Table => collect(v, &key, out),
            Kind::Tables => {
                for item in v.as_array().into_iter().flatten() {
                    collect(item, &format!("{key}.*"), out);
                }
            }
            Kind::Value => {}
        }
    }
}

/// Replaces each `.*` of a known name with the entry positions of `shown`
/// (`billing.plans.*.max_keys` + `billing.plans[2].max_key` ->
/// `billing.plans[2].max_keys`).
fn with_positions(known: &str, shown: &str) -> String {
    let mut positions = shown
        .split('[')
        .skip(1)
        .filter_map(|part| part.split(']').next());
    let mut out = String::new();
    for (i, segment) in known.split('.').enumerate() {
        if segment == "*" {
            out.push_str(&format!("[{}]", positions.next().unwrap_or("0")));
        } else {
            if i > 0 {
                out.push('.');
            }
            out.push_str(segment);
        }
    }
    out
}

/// Unknown keys in one source's data (a file), as findings naming the source.
pub(super) fn in_file(data: &Dict, schema: &Schema, source: &str) -> Vec<Finding> {
    let mut unknown = Vec::new();
    walk(data, "", "", schema, &mut unknown);
    unknown
        .into_iter()
        .map(|(norm, shown)| {
            let mut finding = Finding::unsafe_(
                &shown,
                format!("is not a setting Gatehouse knows (in {source})"),
            );
            if let Some(near) = schema.nearest(&norm, true) {
                finding = finding.with_hint(format!(
                    "the nearest known name is `{}`",
                    with_positions(near, &shown)
                ));
            }
            finding
        })
        .collect()
}

fn walk(dict: &Dict, norm: &str, shown: &str, schema: &Schema, out: &mut Vec<(String, String)>) {
    for (k, v) in dict {
        let (norm_key, shown_key) = (join(norm, k), join(shown, k));
        match (schema.kind(&norm_key), v) {
            (None, _) => out.push((norm_key, shown_key)),
            (Some(Kind::Table), Value::Dict(_, inner)) => {
                walk(inner, &norm_key, &shown_key, schema, out)
            }
            (Some(Kind::Tables), Value::Array(_, items)) => {
                for (i, item) in items.iter().enumerate() {
                    if let Value::Dict(_, inner) = item {
                        let entry_norm = format!("{norm_key}.*");
                        let entry_shown = format!("{shown_key}[{i}]");
                        walk(inner, &entry_norm, &entry_shown, schema, out);
                    }
                }
            }
            _ => {}
        }
    }
}

pub(super) const ENV_PREFIX: &str = "GATEHOUSE_";
/// `GATEHOUSE_*` variables that are not settings.
pub(super) const NON_SETTING_ENV: &[&str] = &["CONFIG", "REQUIRE_E2E"];

/// The environment variable that sets `key` (`smtp.host` -> `GATEHOUSE_SMTP__HOST`).
pub(super) fn env_name(key: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        key.to_ascii_uppercase().replace('.', "__")
    )
}

/// Unknown `GATEHOUSE_*` variables (a typo such as `GATEHOUSE_SMTP_HOST`).
pub(super) fn in_env(
    vars: impl Iterator<Item = (String, String)>,
    schema: &Schema,
) -> Vec<Finding> {
    let mut out = Vec::new();
    for (name, _) in vars {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if NON_SETTING_ENV.iter().any(|n| n.eq_ignore_ascii_case(rest)) {
            continue;
        }
        let key = rest.to_ascii_lowercase().replace("__", ".");
        if schema.kind(&key).is_some() {
            continue;
        }
        let mut finding = Finding::unsafe_(
            &name,
            "is not a setting Gatehouse knows (environment variable; nested keys use `__`)",
        );
        if let Some(near) = schema.nearest(&key, false) {
            finding = finding.with_hint(format!("the nearest known name is {}", env_name(near)));
        }
        out.push(finding);
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::providers::{Format, Toml};
    use figment::{Figment, Provider};

    fn file_findings(toml: &str) -> Vec<(String, Option<String>)> {
        let data = Figment::from(Toml::string(toml)).data().unwrap();
        let schema = Schema::new();
        data.values()
            .flat_map(|dict| in_file(dict, &schema, "test.toml"))
            .map(|f| (f.key, f.hint))
            .collect()
    }

    fn hint(near: &str) -> Option<String> {
        Some(format!("the nearest known name is `{near}`"))
    }

    #[test]
    fn known_settings_pass_everywhere() {
        let toml = r#"
            mode = "local"
            trusted_proxies = ["127.0.0.1"]
            [secrets]
            session_key_file = "/run/x"
            [keys.default_rate_limit]
            limit = 7
            [[billing.plans]]
            name = "free"
            max_keys = 5
            [[scopes]]
            name = "a"
            description = "b"
            [[routes]]
            path_prefix = "/a"
            scope = "a"
        "#;
        assert_eq!(file_findings(toml), vec![]);
    }

    #[test]
    fn typos_in_array_tables_are_found_with_the_nearest_name() {
        let toml = r#"
            [[billing.plans]]
            name = "free"
            max_keys = 5
            [[billing.plans]]
            name = "pro"
            max_key = 5
            [[routes]]
            path_prefix = "/a"
            scop = "a"
            [[scopes]]
            name = "a"
            descripton = "b"
        "#;
        assert_eq!(
            file_findings(toml),
            vec![
                (
                    "billing.plans[1].max_key".into(),
                    hint("billing.plans[1].max_keys")
                ),
                ("routes[0].scop".into(), hint("routes[0].scope")),
                ("scopes[0].descripton".into(), hint("scopes[0].description")),
            ]
        );
    }

    #[test]
    fn typos_in_nested_tables_and_at_the_top_are_found() {
        let toml = r#"
            pubic_url = "https://x"
            [keys.default_rate_limit]
            limt = 7
            [smtp]
            hots = "x"
            [nonsense]
            a = 1
        "#;
        let found = file_findings(toml);
        let keys: Vec<&str> = found.iter().map(|f| f.0.as_str()).collect();
        assert_eq!(
            keys,
            vec![
                "keys.default_rate_limit.limt",
                "nonsense",
                "pubic_url",
                "smtp.hots"
            ]
        );
        assert_eq!(found[0].1, hint("keys.default_rate_limit.limit"));
        assert_eq!(found[2].1, hint("public_url"));
        assert_eq!(found[3].1, hint("smtp.host"));
    }

    #[test]
    fn unknown_variables_are_named_with_the_nearest_variable() {
        let vars = vec![
            ("GATEHOUSE_SMTP__HOST".to_string(), "x".to_string()),
            (
                "GATEHOUSE_KEYS__DEFAULT_RATE_LIMIT__LIMIT".to_string(),
                "7".to_string(),
            ),
            ("GATEHOUSE_SMTP_HOST".to_string(), "x".to_string()),
            ("GATEHOUSE_REQUIRE_E2E".to_string(), "1".to_string()),
            ("GATEHOUSE_CONFIG".to_string(), "g.toml".to_string()),
            ("PATH".to_string(), "/bin".to_string()),
        ];
        let found = in_env(vars.into_iter(), &Schema::new());
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].key, "GATEHOUSE_SMTP_HOST");
        assert_eq!(
            found[0].hint.as_deref(),
            Some("the nearest known name is GATEHOUSE_SMTP__HOST")
        );
    }

    #[test]
    fn positions_are_put_back_into_the_suggestion() {
        assert_eq!(
            with_positions("billing.plans.*.max_keys", "billing.plans[3].max_key"),
            "billing.plans[3].max_keys"
        );
        assert_eq!(with_positions("smtp.host", "smtp.hots"), "smtp.host");
    }
}
