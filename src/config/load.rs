//! Layering: built-in defaults < config file < `GATEHOUSE_*` environment <
//! command-line flags, then `*_file` secrets are read and unknown keys reported.

use std::path::PathBuf;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::{Figment, Provider};
use serde::Serialize;

use super::unknown::{self, ENV_PREFIX, NON_SETTING_ENV};
use super::{Config, Finding, Mode, Secret};

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

    let mut findings = Vec::new();
    let schema = unknown::Schema::new();
    if let Some(path) = &file {
        let source = path.display().to_string();
        if let Ok(data) = Figment::from(Toml::file_exact(path)).data() {
            for dict in data.values() {
                findings.extend(unknown::in_file(dict, &schema, &source));
            }
        }
    }
    findings.extend(unknown::in_env(std::env::vars(), &schema));

    // A typo can make a value missing (`[[routes]] scop = ...`): the unknown
    // keys, with their nearest names, then explain the load error.
    let mut config: Config = figment.extract().map_err(|e| {
        let mut text = describe_figment_error(e);
        for f in &findings {
            text.push_str(&format!("\n{}: {}", f.key, f.reason));
            if let Some(hint) = &f.hint {
                text.push_str(&format!("; {hint}"));
            }
        }
        LoadError::Invalid(text)
    })?;
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

fn describe_figment_error(err: figment::Error) -> String {
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
    lines.join("\n")
}

/// Reads `*_file` secrets. A secret given both inline and as a file is an
/// error, as is a file that cannot be read; the file's content is never shown.
fn read_secret_files(config: &mut Config) -> Vec<Finding> {
    let mut findings = Vec::new();
    let slots: [(&str, &mut Option<Secret>, &Option<PathBuf>); 5] = [
        (
            "database.url",
            &mut config.database.url,
            &config.database.url_file,
        ),
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
        findings.extend(read_secret_file(key, slot, file));
    }
    findings.extend(read_secret_file(
        "redis.url",
        &mut config.redis.url,
        &config.redis.url_file,
    ));
    findings
}

/// Reads one `*_file` secret into its slot.
fn read_secret_file(
    key: &str,
    slot: &mut Option<Secret>,
    file: &Option<PathBuf>,
) -> Option<Finding> {
    let file = file.as_ref()?;
    if slot.is_some() {
        return Some(Finding::error(
            &format!("{key}_file"),
            format!("both {key} and {key}_file are set; keep one"),
        ));
    }
    match std::fs::read_to_string(file) {
        Ok(content) => {
            *slot = Some(Secret::new(content.trim_end_matches(['\r', '\n'])));
            None
        }
        Err(e) => Some(Finding::error(
            &format!("{key}_file"),
            format!("cannot read {}: {}", file.display(), e.kind()),
        )),
    }
}
