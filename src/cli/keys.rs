//! `gatehouse keys create|list|revoke|import`: key management for scripts run
//! on the host, straight against the database. A running server sees a
//! revocation made here within a second (through the key change feed) and
//! new keys at once; keys imported in a foreign format are recognised after
//! a restart.

use std::io::BufRead;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Subcommand};
use serde::Deserialize;

use crate::catalog::Catalog;
use crate::config::{Cidr, Config};
use crate::crypto::new_id;
use crate::db::audit::Actor;
use crate::db::keys::KeyFilter;
use crate::db::Db;
use crate::keys::credits::Balance;
use crate::keys::input::{self, KeySpec};
use crate::keys::record::KeyRecord;
use crate::keys::KeyType;
use crate::types::rfc3339;

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Issue a key and print it (shown once).
    Create(CreateArgs),
    /// List a project's keys.
    List(ListArgs),
    /// Revoke a key by id.
    Revoke(RevokeArgs),
    /// Import existing keys' SHA-256 hashes (JSON lines) from another key service.
    Import(ImportArgs),
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Project id or (unique) name.
    #[arg(long)]
    project: String,
    #[arg(long)]
    name: String,
    #[arg(long = "type", value_parser = ["secret", "publishable"], default_value = "secret")]
    kind: String,
    /// Comma-separated scopes from the catalog.
    #[arg(long, value_delimiter = ',')]
    scopes: Vec<String>,
    #[arg(long, default_value = "production")]
    environment: String,
    #[arg(long)]
    expires_in_days: Option<i64>,
    #[arg(long)]
    owner_id: Option<String>,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Project id or (unique) name.
    #[arg(long)]
    project: String,
    /// Include revoked and expired keys.
    #[arg(long)]
    all: bool,
}

#[derive(Args, Debug)]
pub struct RevokeArgs {
    /// The key id (`key_...`).
    id: String,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// JSON lines: {"hash": "<sha256 hex>", "name", "type", "scopes", "environment",
    /// "owner_id", "metadata", "expires_at", "prefix", "rate_limit", "credits"}.
    file: PathBuf,
    /// Project id or (unique) name the keys belong to.
    #[arg(long)]
    project: String,
}

/// One line of an import file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportLine {
    hash: String,
    name: String,
    #[serde(default, rename = "type")]
    kind: Option<KeyType>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    environment: Option<String>,
    #[serde(default)]
    owner_id: Option<String>,
    #[serde(default)]
    metadata: Option<serde_json::Value>,
    #[serde(default)]
    expires_at: Option<String>,
    /// What to show as the key's prefix (its first characters, never the whole key).
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    rate_limit: Option<input::RateLimitInput>,
    #[serde(default)]
    credits: Option<input::CreditsInput>,
    #[serde(default)]
    allowed_ips: Option<Vec<String>>,
}

fn parse_hash(hex: &str) -> Result<[u8; 32], String> {
    let hex = hex.trim();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("hash must be 64 hex characters (SHA-256)".into());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

fn import_record(
    line: ImportLine,
    project_id: &str,
    catalog: &Catalog,
    now: i64,
) -> Result<KeyRecord, String> {
    let err = |e: crate::error::ApiError| e.message;
    let hash = parse_hash(&line.hash)?;
    let prefix: String = line
        .prefix
        .unwrap_or_else(|| "imported".into())
        .chars()
        .take(16)
        .collect();
    let credits = line.credits.map(input::credits).transpose().map_err(err)?;
    Ok(KeyRecord {
        id: Arc::from(new_id("key")),
        project_id: Arc::from(project_id),
        hash,
        prefix,
        name: input::name(&line.name).map_err(err)?,
        kind: line.kind.unwrap_or(KeyType::Secret),
        environment: input::environment(line.environment.as_deref()).map_err(err)?,
        scopes: input::scopes(&line.scopes, catalog).map_err(err)?,
        rate_limit: line
            .rate_limit
            .map(input::rate_limit)
            .transpose()
            .map_err(err)?,
        owner_id: line
            .owner_id
            .as_deref()
            .map(input::owner_id)
            .transpose()
            .map_err(err)?,
        credits: credits.map(|(remaining, refill)| Balance {
            remaining,
            refill,
            period_start: refill.map(|r| r.interval.period_start(now)).unwrap_or(0),
        }),
        allowed_ips: line
            .allowed_ips
            .as_deref()
            .map(input::allowed_ips)
            .transpose()
            .map_err(err)?
            .map(|v: Vec<Cidr>| v),
        metadata: input::metadata(line.metadata).map_err(err)?,
        created_at: now,
        updated_at: now,
        last_used_at: None,
        expires_at: line
            .expires_at
            .as_deref()
            .map(|e| input::expires_at(e, now))
            .transpose()
            .map_err(err)?,
        revoked_at: None,
        created_by: None,
        rotated_to: None,
    })
}

pub async fn run(config: &Config, db: &Db, command: KeysCommand) -> Result<(), String> {
    let catalog = Catalog::from_config(config);
    let now = crate::types::now();
    match command {
        KeysCommand::Create(a) => {
            let project = db
                .find_project(a.project)
                .await
                .map_err(|e| e.to_string())??;
            let expires_at = match a.expires_in_days {
                Some(d) if !(1..=3650).contains(&d) => {
                    return Err("--expires-in-days must be between 1 and 3650".into())
                }
                Some(d) => Some(now + d * 86_400),
                None => None,
            };
            let spec = KeySpec {
                name: input::name(&a.name).map_err(|e| e.message)?,
                kind: KeyType::parse(&a.kind).unwrap_or(KeyType::Secret),
                environment: input::environment(Some(&a.environment)).map_err(|e| e.message)?,
                scopes: input::scopes(&a.scopes, &catalog).map_err(|e| e.message)?,
                expires_at,
                rate_limit: None,
                owner_id: a
                    .owner_id
                    .as_deref()
                    .map(input::owner_id)
                    .transpose()
                    .map_err(|e| e.message)?,
                credits: None,
                allowed_ips: None,
                metadata: serde_json::json!({}),
            };
            let (record, key) =
                crate::keys::admin::mint(spec, &project.id, None, &config.keys.prefix, now);
            let record = db
                .create_key(
                    record,
                    Actor::system(),
                    config.keys.default_rate_limit,
                    crate::billing::limits(config, &project.plan).0,
                )
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("the {} plan's key limit is reached", project.plan))?;
            println!(
                "Created {} ({}) in project {:?}.",
                record.id, record.name, project.name
            );
            println!("Key (shown once, store it now):");
            println!("{}", key.expose());
            Ok(())
        }
        KeysCommand::List(a) => {
            let project = db
                .find_project(a.project)
                .await
                .map_err(|e| e.to_string())??;
            let filter = KeyFilter {
                include_inactive: a.all,
                owner_id: None,
            };
            let (keys, total) = db
                .keys_page(project.id.clone(), filter, 0, 1_000_000)
                .await
                .map_err(|e| e.to_string())?;
            println!("{total} key(s) in {:?}", project.name);
            println!(
                "{:<25} {:<17} {:<12} {:<11} {:<8} {:<20} name",
                "id", "prefix", "type", "environment", "status", "created"
            );
            for k in keys {
                let status = if k.revoked_at.is_some() {
                    "revoked"
                } else if !k.is_active(now) {
                    "expired"
                } else {
                    "active"
                };
                println!(
                    "{:<25} {:<17} {:<12} {:<11} {:<8} {:<20} {}",
                    k.id,
                    k.prefix,
                    k.kind.as_str(),
                    k.environment,
                    status,
                    rfc3339(k.created_at),
                    k.name
                );
            }
            Ok(())
        }
        KeysCommand::Revoke(a) => {
            let project_id = db
                .key_project(a.id.clone())
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("no key has the id {:?}", a.id))?;
            let revoked_at = now;
            let key = db
                .update_key(
                    project_id,
                    a.id.clone(),
                    "key.revoked",
                    Actor::system(),
                    config.keys.default_rate_limit,
                    move |k| {
                        k.revoked_at = Some(k.revoked_at.unwrap_or(revoked_at));
                        serde_json::json!({ "via": "cli" })
                    },
                )
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("no key has the id {:?}", a.id))?;
            println!(
                "Revoked {} ({}). A running server stops accepting it within a second.",
                key.id, key.name
            );
            Ok(())
        }
        KeysCommand::Import(a) => {
            let project = db
                .find_project(a.project)
                .await
                .map_err(|e| e.to_string())??;
            let file =
                std::fs::File::open(&a.file).map_err(|e| format!("{}: {e}", a.file.display()))?;
            let mut records = Vec::new();
            for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
                let line = line.map_err(|e| format!("line {}: {e}", i + 1))?;
                if line.trim().is_empty() {
                    continue;
                }
                let parsed: ImportLine =
                    serde_json::from_str(&line).map_err(|e| format!("line {}: {e}", i + 1))?;
                records.push(
                    import_record(parsed, &project.id, &catalog, now)
                        .map_err(|e| format!("line {}: {e}", i + 1))?,
                );
            }
            let n = db.import_keys(records).await.map_err(|e| e.to_string())??;
            println!(
                "Imported {n} key(s) into {:?}. Restart a running server so it recognises imported keys that are not in Gatehouse's own format.",
                project.name
            );
            Ok(())
        }
    }
}
