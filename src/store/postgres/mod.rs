//! The PostgreSQL backend: tokio-postgres connections in a deadpool pool.
//!
//! Connections carry `application_name = gatehouse` (unless the URL names
//! one), so operators can tell Gatehouse's connections apart in
//! `pg_stat_activity`. TLS follows libpq's `sslmode` (see [`tls`]).

pub mod billing;
pub mod directory;
pub mod effects;
pub mod keys;
pub mod listen;
pub mod maintenance;
pub mod migrate;
pub mod sessions;
pub mod spend;
pub mod tls;
pub mod usage;
pub mod work;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};

pub use migrate::{latest_version, migrate, migrations};

/// `application_name` of the pooled connections.
pub const APPLICATION_NAME: &str = "gatehouse";

/// How long to wait for a connection (from the pool or a new one).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("database.url: {0}")]
    Config(String),
    #[error("postgresql: {0}")]
    Pool(String),
    #[error("postgresql: {}", chain(.0))]
    Query(#[from] tokio_postgres::Error),
    #[error(
        "the database is at schema version {found}, newer than this Gatehouse supports ({supported}); \
         run the newer Gatehouse release"
    )]
    TooNew { found: u32, supported: u32 },
    #[error("migration failed: {0}")]
    Migration(String),
    /// A stored value that Gatehouse never writes.
    #[error("unreadable stored value in {0}")]
    Corrupt(String),
}

impl PgError {
    /// A fault of the database or the way to it, not of the request: the
    /// same request can succeed later (503, never 500).
    pub fn is_unavailable(&self) -> bool {
        self.unavailability().is_some()
    }

    /// Why the database cannot take this work now, when that is the
    /// cause (by SQLSTATE class: 08 connection, 53 out of resources such as
    /// a full disk, 57P shutting down, 40001/40P01 retry the transaction).
    pub fn unavailability(&self) -> Option<crate::store::Unavailable> {
        use crate::store::Unavailable;
        match self {
            PgError::Pool(_) => Some(Unavailable::Unreachable),
            PgError::Query(e) if e.is_closed() || e.as_db_error().is_none() => {
                Some(Unavailable::Unreachable)
            }
            PgError::Query(e) => {
                let code = e.code()?.code();
                if code == "40001" || code == "40P01" {
                    Some(Unavailable::Busy)
                } else if code.starts_with("53") {
                    Some(Unavailable::CannotWrite)
                } else if code.starts_with("08") || code.starts_with("57P") {
                    Some(Unavailable::Unreachable)
                } else {
                    None
                }
            }
            _ => None,
        }
    }
}

/// PostgreSQL's errors as the storage interface classifies them.
impl From<PgError> for crate::store::StoreError {
    fn from(e: PgError) -> Self {
        if let PgError::TooNew { found, supported } = e {
            return crate::store::StoreError::TooNew { found, supported };
        }
        match e.unavailability() {
            Some(kind) => crate::store::StoreError::Unavailable {
                kind,
                cause: e.to_string(),
            },
            None => crate::store::StoreError::Internal(e.to_string()),
        }
    }
}

impl From<deadpool_postgres::PoolError> for PgError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        PgError::Pool(chain(&e))
    }
}

/// An error with its causes (`a: b: c`): the driver's own messages are
/// terse ("db error", "error performing TLS handshake") and the reason
/// an operator needs is in the cause.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

/// Whether `url` names a PostgreSQL database (`postgres://` or `postgresql://`).
pub fn is_postgres_url(url: &str) -> bool {
    let lower = url.trim_start().to_ascii_lowercase();
    lower.starts_with("postgres://") || lower.starts_with("postgresql://")
}

/// A connection pool for `url` (a libpq-style URL). Nothing is connected
/// until the pool is first used.
pub fn pool(url: &str, max_size: usize) -> Result<Pool, PgError> {
    let parsed = tls::split_url(url)?;
    let mut config: tokio_postgres::Config = parsed
        .url
        .parse()
        .map_err(|e: tokio_postgres::Error| PgError::Config(e.to_string()))?;
    if config.get_application_name().is_none() {
        config.application_name(APPLICATION_NAME);
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    config.ssl_mode(parsed.tls.ssl_mode());
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = match parsed.tls.connector()? {
        None => Manager::from_config(config, tokio_postgres::NoTls, manager_config),
        Some(tls) => Manager::from_config(config, tls, manager_config),
    };
    Pool::builder(manager)
        .max_size(max_size.max(1))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(CONNECT_TIMEOUT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .recycle_timeout(Some(CONNECT_TIMEOUT))
        .build()
        .map_err(|e| PgError::Config(e.to_string()))
}

/// `url` with any password replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "(an unparsable URL)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_postgres_urls_and_hides_passwords() {
        assert!(is_postgres_url("postgres://u@h/db"));
        assert!(is_postgres_url("PostgreSQL://u@h/db"));
        assert!(!is_postgres_url("sqlite:///x"));
        assert!(!is_postgres_url(""));
        assert_eq!(
            redact_url("postgres://gh:s3cret@db.internal:5432/gatehouse?sslmode=require"),
            "postgres://gh:***@db.internal:5432/gatehouse?sslmode=require"
        );
        assert!(!redact_url("postgres://gh:s3cret@db/x").contains("s3cret"));
    }

    #[test]
    fn a_pool_is_built_without_connecting() {
        // Nothing listens on port 1: building the pool must not try.
        pool("postgres://gh@127.0.0.1:1/gatehouse?sslmode=disable", 4).unwrap();
        assert!(matches!(
            pool("postgres://gh@127.0.0.1:1/x?sslmode=sometimes", 4),
            Err(PgError::Config(_))
        ));
    }
}

/// The PostgreSQL backend behind the storage interface.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    /// Where every time this backend writes or compares comes from.
    clock: crate::clock::Clock,
    home: std::sync::Arc<ConnectionHome>,
    /// For the listening connection, which is not pooled.
    url: std::sync::Arc<str>,
}

/// Where the pool's connections live. A tokio-postgres connection is a
/// task on the runtime that opened it; the server's worker threads each
/// run a runtime of their own that ends when the worker stops, which would
/// close every connection a worker happened to open while the pool still
/// hands them out (the usage flush at shutdown would find them dead). So
/// connections are opened on this runtime, on a thread of its own that
/// lives as long as the store; queries still run from any thread (a
/// client talks to its connection task through a channel).
struct ConnectionHome {
    handle: tokio::runtime::Handle,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl ConnectionHome {
    fn start() -> std::io::Result<ConnectionHome> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("gatehouse-pg".into())
            .spawn(move || {
                // Runs until the store is dropped (the sender with it).
                let _ = runtime.block_on(stopped);
            })?;
        Ok(ConnectionHome {
            handle,
            _stop: stop,
        })
    }
}

impl PgStore {
    /// `url` is the one `pool` was made from (the listening connection
    /// uses it too).
    pub fn new(pool: Pool, url: &str) -> Self {
        let home = ConnectionHome::start().expect("a thread for the database connections");
        PgStore {
            pool,
            clock: crate::clock::Clock::system(),
            home: std::sync::Arc::new(home),
            url: url.into(),
        }
    }

    /// The same store read through `clock` (tests move it).
    pub fn with_clock(mut self, clock: crate::clock::Clock) -> Self {
        self.clock = clock;
        self
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// A pooled connection; a new one is opened on the connections' own
    /// runtime (see [`ConnectionHome`]).
    pub(super) async fn client(&self) -> Result<deadpool_postgres::Client, PgError> {
        let pool = self.pool.clone();
        match self
            .home
            .handle
            .spawn(async move { pool.get().await })
            .await
        {
            Ok(client) => Ok(client?),
            Err(_) => Err(PgError::Pool("the connection thread has stopped".into())),
        }
    }
}

impl crate::store::Clocked for PgStore {
    fn clock(&self) -> &crate::clock::Clock {
        &self.clock
    }
}
