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
use crate::keys::admin::KeyService;
use crate::keys::credits::Balance;
use crate::keys::events::KeyEvents;
use crate::keys::input::{self, KeySpec};
use crate::keys::record::KeyRecord;
use crate::keys::KeyType;
use crate::store::audit::Actor;
use crate::store::keys::KeyFilter;
use crate::store::Store;
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

/// Every field an import line may carry, with what it means; `--help`
/// prints this list and a test keeps it equal to what import accepts.
const IMPORT_FIELDS: &[(&str, &str)] = &[
    (
        "hash",
        "required: the SHA-256 of the key, 64 hex characters",
    ),
    ("name", "required: the key's name"),
    ("type", "\"secret\" (default) or \"publishable\""),
    (
        "scopes",
        "list of scopes from the catalog, e.g. [\"orders:write\"]",
    ),
    ("environment", "a short tag (default \"production\")"),
    ("owner_id", "your customer's id"),
    ("metadata", "a JSON object, up to 4 KiB"),
    ("expires_at", "RFC 3339 time, e.g. \"2027-01-31T00:00:00Z\""),
    (
        "prefix",
        "what to show as the key's prefix, at most 16 characters (default \"imported\")",
    ),
    ("rate_limit", "{\"limit\": 100, \"window_secs\": 60}"),
    (
        "credits",
        "{\"remaining\": 1000, \"refill\": {\"amount\": 1000, \"interval\": \"monthly\"}}",
    ),
    (
        "allowed_ips",
        "list of client addresses or CIDR networks, e.g. [\"203.0.113.0/24\"]",
    ),
];

fn import_help() -> String {
    let mut out =
        String::from("Each line of FILE is one JSON object; unknown fields are refused. Fields:\n");
    for (name, what) in IMPORT_FIELDS {
        out.push_str(&format!("  {name:<12} {what}\n"));
    }
    out.push_str("All lines are imported or none.");
    out
}

#[derive(Args, Debug)]
#[command(after_help = import_help())]
pub struct ImportArgs {
    /// JSON lines, one key per line (fields below).
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

pub async fn run(config: &Config, store: &dyn Store, command: KeysCommand) -> Result<(), String> {
    let catalog = Catalog::from_config(config);
    let now = store.clock().now();
    match command {
        KeysCommand::Create(a) => {
            let project = store
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
            let (record, key) = KeyService::new(store, config, None)
                .create(&project, spec, Actor::system())
                .await
                .map_err(|e| e.message)?;
            println!(
                "Created {} ({}) in project {:?}.",
                record.id, record.name, project.name
            );
            println!("Key (shown once, store it now):");
            println!("{}", key.expose());
            Ok(())
        }
        KeysCommand::List(a) => {
            let project = store
                .find_project(a.project)
                .await
                .map_err(|e| e.to_string())??;
            let filter = KeyFilter {
                include_inactive: a.all,
                owner_id: None,
            };
            let (keys, total) = store
                .keys_page(project.id.clone().into(), filter, 0, 1_000_000)
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
            let project_id = store
                .find_key_by_id(a.id.as_str().into())
                .await
                .map_err(|e| e.to_string())?
                .map(|k| k.project_id.to_string())
                .ok_or_else(|| format!("no key has the id {:?}", a.id))?;
            let key = KeyService::new(store, config, None)
                .revoke(&project_id, &a.id, Actor::system())
                .await
                .map_err(|e| e.message)?;
            println!(
                "Revoked {} ({}). A running server stops accepting it within a second.",
                key.id, key.name
            );
            Ok(())
        }
        KeysCommand::Import(a) => {
            let project = store
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
            let events = KeyEvents {
                default_rate: config.keys.default_rate_limit,
                now,
            };
            let n = store
                .import_keys(records, Box::new(move |k| events.imported(k)))
                .await
                .map_err(|e| e.to_string())??;
            println!(
                "Imported {n} key(s) into {:?}. Restart a running server so it recognises imported keys that are not in Gatehouse's own format.",
                project.name
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The field names serde accepts for `T`, read from its derived impl.
    fn field_names<'de, T: Deserialize<'de>>() -> Vec<&'static str> {
        struct Names(std::cell::RefCell<Vec<&'static str>>);
        impl<'de> serde::Deserializer<'de> for &Names {
            type Error = serde::de::value::Error;
            fn deserialize_any<V: serde::de::Visitor<'de>>(
                self,
                _: V,
            ) -> Result<V::Value, Self::Error> {
                Err(serde::de::Error::custom("names only"))
            }
            fn deserialize_struct<V: serde::de::Visitor<'de>>(
                self,
                _: &'static str,
                fields: &'static [&'static str],
                _: V,
            ) -> Result<V::Value, Self::Error> {
                self.0.borrow_mut().extend_from_slice(fields);
                Err(serde::de::Error::custom("names only"))
            }
            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
                bytes byte_buf option unit unit_struct newtype_struct seq tuple
                tuple_struct map enum identifier ignored_any
            }
        }
        let names = Names(Default::default());
        let _ = T::deserialize(&names);
        names.0.into_inner()
    }

    #[test]
    fn the_help_lists_exactly_the_fields_import_accepts() {
        let mut accepted = field_names::<ImportLine>();
        let mut documented: Vec<&str> = IMPORT_FIELDS.iter().map(|f| f.0).collect();
        accepted.sort();
        documented.sort();
        assert_eq!(documented, accepted);
        let help = import_help();
        for name in accepted {
            assert!(
                help.contains(&format!("  {name} ")),
                "{name} missing from the help"
            );
        }
    }
}
