//! Layering: built-in defaults < config file < `GATEHOUSE_*` environment <
//! command-line flags, then `*_file` secrets are read and unknown keys reported.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::{Figment, Provider};
use serde::Serialize;

use super::{Config, Finding, Mode, Secret};

/// Environment variables with the `GATEHOUSE_` prefix that are not settings.
const NON_SETTING_ENV: &[&str] = &["CONFIG", "REQUIRE_E2E"];
const ENV_PREFIX: &str = "GATEHOUSE_";
/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "gatehouse.toml";

/// Flags given on the command line; they win over every other source.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CliOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct ConfigSources {
    /// `--config FILE`; when absent, `gatehouse.toml` is read if present.
    pub config_file: Option<PathBuf>,
    pub overrides: CliOverrides,
}

/// The loaded configuration and what loading noticed on the way (unknown
/// keys, unreadable secret files); these join the startup checks' report.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub file: Option<PathBuf>,
    pub findings: Vec<Finding>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("config file {0} does not exist")]
    FileMissing(PathBuf),
    #[error("{0}")]
    Invalid(String),
}

pub fn load(sources: &ConfigSources) -> Result<Loaded, LoadError> {
    let file = match &sources.config_file {
        Some(path) if !path.exists() => return Err(LoadError::FileMissing(path.clone())),
        Some(path) => Some(path.clone()),
        None => Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|p| p.exists()),
    };

    let mut figment = Figment::new();
    if let Some(path) = &file {
        figment = figment.merge(Toml::file_exact(path));
    }
    figment = figment
        .merge(env_provider())
        .merge(Serialized::globals(&sources.overrides));

    let mut config: Config = figment.extract().map_err(describe_figment_error)?;

    let mut findings = Vec::new();
    let known = known_keys();
    if let Some(path) = &file {
        findings.extend(unknown_file_keys(path, &known));
    }
    findings.extend(unknown_env_keys(std::env::vars(), &known));
    findings.extend(read_secret_files(&mut config));
    Ok(Loaded {
        config,
        file,
        findings,
    })
}

fn env_provider() -> Env {
    Env::prefixed(ENV_PREFIX)
        .ignore(NON_SETTING_ENV)
        .split("__")
}

fn describe_figment_error(err: figment::Error) -> LoadError {
    let lines: Vec<String> = err
        .into_iter()
        .map(|e| {
            let key = e
                .path
                .iter()
                .filter(|p| p.as_str() != "default")
                .cloned()
                .collect::<Vec<_>>()
                .join(".");
            let source = e
                .metadata
                .as_ref()
                .map(|m| match &m.source {
                    Some(src) => format!(" (from {} {src})", m.name),
                    None => format!(" (from {})", m.name),
                })
                .unwrap_or_default();
            let key = if key.is_empty() { "config".into() } else { key };
            format!("{key}: {}{source}", e.kind)
        })
        .collect();
    LoadError::Invalid(lines.join("\n"))
}

/// Every setting's dotted path, from the defaults themselves, so the list can
/// never fall behind the structs. Arrays are open: anything below them is known.
fn known_keys() -> KnownKeys {
    let value = serde_json::to_value(Config::default()).expect("config serializes");
    let mut known = KnownKeys::default();
    collect_keys(&value, "", &mut known);
    known
}

#[derive(Default)]
struct KnownKeys {
    exact: BTreeSet<String>,
    open_prefixes: BTreeSet<String>,
}

impl KnownKeys {
    fn contains(&self, path: &str) -> bool {
        self.exact.contains(path)
            || self
                .open_prefixes
                .iter()
                .any(|p| path == p || path.starts_with(&format!("{p}.")))
    }
}

fn collect_keys(value: &serde_json::Value, prefix: &str, out: &mut KnownKeys) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                out.exact.insert(path.clone());
                collect_keys(v, &path, out);
            }
        }
        serde_json::Value::Array(_) => {
            out.open_prefixes.insert(prefix.to_string());
        }
        _ => {}
    }
}

fn leaf_paths(dict: &figment::value::Dict, prefix: &str, out: &mut Vec<String>) {
    for (k, v) in dict {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            figment::value::Value::Dict(_, inner) => leaf_paths(inner, &path, out),
            _ => out.push(path),
        }
    }
}

fn unknown_file_keys(path: &Path, known: &KnownKeys) -> Vec<Finding> {
    let Ok(data) = Figment::from(Toml::file_exact(path)).data() else {
        return Vec::new();
    };
    let mut paths = Vec::new();
    for dict in data.values() {
        leaf_paths(dict, "", &mut paths);
    }
    paths
        .into_iter()
        .filter(|p| !known.contains(p))
        .map(|p| {
            Finding::warning(
                &p,
                format!("unknown setting in {} (ignored)", path.display()),
            )
        })
        .collect()
}

fn unknown_env_keys(
    vars: impl Iterator<Item = (String, String)>,
    known: &KnownKeys,
) -> Vec<Finding> {
    let mut out = Vec::new();
    for (name, _) in vars {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if NON_SETTING_ENV.iter().any(|n| n.eq_ignore_ascii_case(rest)) {
            continue;
        }
        let path = rest.to_ascii_lowercase().replace("__", ".");
        if !known.contains(&path) {
            out.push(Finding::warning(
                &name,
                "unknown environment variable (ignored); nested keys use `__`, e.g. GATEHOUSE_SMTP__HOST",
            ));
        }
    }
    out
}

/// Reads `*_file` secrets. A secret given both inline and as a file is an
/// error, as is a file that cannot be read; the file's content is never shown.
fn read_secret_files(config: &mut Config) -> Vec<Finding> {
    let mut findings = Vec::new();
    let slots: [(&str, &mut Option<Secret>, &Option<PathBuf>); 4] = [
        (
            "secrets.session_key",
            &mut config.secrets.session_key,
            &config.secrets.session_key_file,
        ),
        (
            "secrets.ops_token",
            &mut config.secrets.ops_token,
            &config.secrets.ops_token_file,
        ),
        (
            "smtp.password",
            &mut config.smtp.password,
            &config.smtp.password_file,
        ),
        (
            "billing.stripe_webhook_secret",
            &mut config.billing.stripe_webhook_secret,
            &config.billing.stripe_webhook_secret_file,
        ),
    ];
    for (key, slot, file) in slots {
        let Some(file) = file else { continue };
        if slot.is_some() {
            findings.push(Finding::error(
                &format!("{key}_file"),
                format!("both {key} and {key}_file are set; keep one"),
            ));
            continue;
        }
        match std::fs::read_to_string(file) {
            Ok(content) => {
                *slot = Some(Secret::new(content.trim_end_matches(['\r', '\n'])));
            }
            Err(e) => findings.push(Finding::error(
                &format!("{key}_file"),
                format!("cannot read {}: {}", file.display(), e.kind()),
            )),
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_keys_cover_nested_settings_and_secret_files() {
        let known = known_keys();
        for key in [
            "mode",
            "public_url",
            "secrets.session_key",
            "secrets.session_key_file",
            "smtp.host",
            "keys.default_rate_limit.limit",
            "billing.plans",
            "scopes.0.name",
            "dev.expose_codes",
        ] {
            assert!(known.contains(key), "{key} should be known");
        }
        assert!(!known.contains("smtp_host"));
        assert!(!known.contains("secrets.sesion_key"));
    }

    #[test]
    fn unknown_env_vars_are_reported_by_name() {
        let known = known_keys();
        let vars = vec![
            ("GATEHOUSE_SMTP__HOST".to_string(), "x".to_string()),
            ("GATEHOUSE_SMTP_HOST".to_string(), "x".to_string()),
            ("GATEHOUSE_REQUIRE_E2E".to_string(), "1".to_string()),
            ("PATH".to_string(), "/bin".to_string()),
        ];
        let found = unknown_env_keys(vars.into_iter(), &known);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].key, "GATEHOUSE_SMTP_HOST");
    }
}
