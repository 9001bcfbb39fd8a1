//! Opening the configured backend: `database.url` empty = SQLite in the
//! data directory, a PostgreSQL URL = that database. Pending migrations are
//! applied (on PostgreSQL under an advisory lock, so nodes starting
//! together apply each step once); a schema newer than this build is
//! refused.

use std::sync::Arc;

use super::postgres::{self, PgError, PgStore};
use super::sqlite::SqliteStore;
use super::{KeyHash, Store, StoreError};
use crate::config::Config;
use crate::db::{Db, MigrateOutcome};

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
    /// The SQLite handle when SQLite is the backend (its own operations:
    /// online backup, pragmas).
    pub sqlite: Option<Db>,
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
            let db = Db::open(&path, &config.database)?.with_clock(clock);
            let migrated = db.migrate()?;
            let imported = db.imported_key_hashes()?.into_iter().map(KeyHash).collect();
            Ok(Opened {
                store: Arc::new(SqliteStore::new(db.clone())),
                sqlite: Some(db),
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
                sqlite: None,
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
