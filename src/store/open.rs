//! Opening the configured backend: `database.url` empty = SQLite in the
//! data directory, a PostgreSQL URL = that database. Pending migrations are
//! applied (on PostgreSQL under an advisory lock, so nodes starting
//! together apply each step once); a schema newer than this build is
//! refused.

use std::sync::Arc;

use super::migrate::MigrateOutcome;
use super::postgres::{self, PgError, PgStore};
use super::sqlite::SqliteStore;
use super::{KeyHash, Store, StoreError};
use crate::config::Config;

/// Which backend a configuration selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of(config: &Config) -> Backend {
        if config.uses_postgres() {
            Backend::Postgres
        } else {
            Backend::Sqlite
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// An open, migrated store.
pub struct Opened {
    pub store: Arc<dyn Store>,
    pub backend: Backend,
    pub migrated: MigrateOutcome,
    /// Where the data is, for messages: the SQLite file, or the
    /// PostgreSQL URL without its password.
    pub location: String,
    /// Hashes of imported keys (their format predates Gatehouse's own).
    pub imported: Vec<KeyHash>,
}

/// Opens and migrates the configured database. On PostgreSQL the
/// migration runs on a short-lived runtime of its own (this is called
/// before the server's runtime exists, and may be called inside one by
/// the CLI), and the returned store's pool connects lazily on first use.
pub fn open(config: &Config) -> Result<Opened, StoreError> {
    open_with_clock(config, crate::clock::Clock::system())
}

/// [`open`], the store reading time from `clock`.
pub fn open_with_clock(config: &Config, clock: crate::clock::Clock) -> Result<Opened, StoreError> {
    match config.postgres_url() {
        None => {
            let path = config.database_path();
            let db = SqliteStore::open(&path, &config.database)?.with_clock(clock);
            let migrated = db.migrate()?;
            let imported = db.imported_key_hashes_now()?;
            Ok(Opened {
                store: Arc::new(db),
                backend: Backend::Sqlite,
                migrated,
                location: path.display().to_string(),
                imported,
            })
        }
        Some(url) => {
            let url = url.to_string();
            let (migrated, imported) = on_own_runtime({
                let url = url.clone();
                async move {
                    let pool = postgres::pool(&url, 1)?;
                    let migrated = postgres::migrate(&pool).await?;
                    let client = pool.get().await?;
                    let imported = postgres::keys::imported_key_hashes(&client).await?;
                    Ok::<_, PgError>((migrated, imported))
                }
            })?;
            let pool = postgres::pool(&url, config.database.pool_size as usize)?;
            Ok(Opened {
                store: Arc::new(PgStore::new(pool, &url).with_clock(clock)),
                backend: Backend::Postgres,
                migrated,
                location: postgres::redact_url(&url),
                imported: imported.into_iter().map(KeyHash).collect(),
            })
        }
    }
}

/// Runs `f` to completion on a fresh current-thread runtime on a thread of
/// its own (safe whether or not the caller is inside a runtime).
pub fn on_own_runtime<T: Send>(
    f: impl std::future::Future<Output = Result<T, PgError>> + Send,
) -> Result<T, PgError> {
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| PgError::Pool(format!("cannot start a runtime: {e}")))?
                .block_on(f)
        })
        .join()
        .unwrap_or_else(|_| Err(PgError::Pool("the migration thread panicked".into())))
    })
}

/// Where the configured data lives, for messages: the SQLite file, or the
/// PostgreSQL URL without its password.
pub fn location(config: &Config) -> String {
    match config.postgres_url() {
        Some(url) => format!("PostgreSQL at {}", postgres::redact_url(url)),
        None => format!("SQLite at {}", config.database_path().display()),
    }
}

/// `url` with any password replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    postgres::redact_url(url)
}

/// Whether `url` names a database the PostgreSQL backend serves
/// (`postgres://` or `postgresql://`).
pub fn is_postgres_url(url: &str) -> bool {
    postgres::is_postgres_url(url)
}

/// Why `url` cannot be used to reach PostgreSQL (an unknown `sslmode`, a
/// malformed host...), found without connecting. The words never quote
/// the URL, which may hold a password.
pub fn url_problem(url: &str) -> Option<String> {
    match postgres::pool(url, 1) {
        Ok(_) => None,
        Err(PgError::Config(why)) => Some(why),
        Err(other) => Some(other.to_string()),
    }
}

/// What the configured database holds, read without changing anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaCheck {
    /// No database (SQLite) or no Gatehouse schema (PostgreSQL) yet:
    /// `serve` or `migrate` creates it at the location given.
    NotCreated(String),
    /// This build can use it (pending steps are applied at start).
    Usable { version: u32 },
    /// Written by a newer Gatehouse: refused at start.
    TooNew { found: u32, supported: u32 },
    /// The SQLite file is there but cannot be read as a database.
    Unreadable(String),
    /// PostgreSQL does not answer now (the configuration may still be right).
    NoAnswer(String),
}

/// Checks the configured database's schema version (`check-config`).
pub fn check_schema(config: &Config) -> SchemaCheck {
    match config.postgres_url() {
        None => {
            let path = config.database_path();
            if !path.exists() {
                return SchemaCheck::NotCreated(path.display().to_string());
            }
            match super::sqlite::check_version(&path) {
                Ok(version) => SchemaCheck::Usable { version },
                Err(super::sqlite::DbError::TooNew { found, supported }) => {
                    SchemaCheck::TooNew { found, supported }
                }
                Err(e) => SchemaCheck::Unreadable(format!("{}: {e}", path.display())),
            }
        }
        Some(url) => {
            let location = postgres::redact_url(url);
            let url = url.to_string();
            let version = on_own_runtime(async move {
                let pool = postgres::pool(&url, 1)?;
                postgres::migrate::applied_schema_version(&pool).await
            });
            let supported = postgres::latest_version();
            match version {
                Ok(found) if found > supported => SchemaCheck::TooNew { found, supported },
                Ok(0) => SchemaCheck::NotCreated(location),
                Ok(version) => SchemaCheck::Usable { version },
                Err(e) => SchemaCheck::NoAnswer(e.to_string()),
            }
        }
    }
}

/// The newest schema version this build knows, for the configured backend.
pub fn latest_schema_version(config: &Config) -> u32 {
    match Backend::of(config) {
        Backend::Sqlite => super::sqlite::latest_version(),
        Backend::Postgres => postgres::latest_version(),
    }
}

pub use super::sqlite::BackupOutcome;

/// `gatehouse backup`: an online, consistent copy of the SQLite database
/// into `out` (see [`super::sqlite::backup`]). `None` on PostgreSQL, whose
/// own tools back it up.
pub fn backup(config: &Config, out: &std::path::Path) -> Option<Result<BackupOutcome, String>> {
    match Backend::of(config) {
        Backend::Postgres => None,
        Backend::Sqlite => {
            Some(super::sqlite::backup(&config.database_path(), out).map_err(|e| e.to_string()))
        }
    }
}
