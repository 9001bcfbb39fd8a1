//! The SQLite backend (rusqlite + r2d2), the embedded default: one file in
//! the data directory. Each feature file implements its trait of the
//! storage interface directly; every method runs its statements on the
//! blocking thread pool ([`SqliteStore::call`]), never on the async
//! executor's threads, and every mutating method is one `BEGIN IMMEDIATE`
//! transaction, so writers take turns.

pub mod audit;
pub mod billing;
pub mod directory;
pub mod effects;
pub mod keys;
pub mod maintenance;
pub mod migrate;
pub mod sessions;
pub mod spend;
pub mod usage;
pub mod work;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use r2d2::Pool;
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, OpenFlags};

use crate::config::DatabaseConfig;
use crate::store::{StoreError, StoreResult, Unavailable};

pub use crate::store::migrate::MigrateOutcome;
pub use migrate::latest_version;

/// Why the database cannot take work right now: a condition of the
/// machine, not of the request. Answered with 503 `unavailable` and
/// `Retry-After`; the work can be tried again once the condition clears.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Another writer holds the lock past the busy timeout (SQLITE_BUSY,
    /// SQLITE_LOCKED), or no pooled connection came free in time.
    Busy,
    /// The disk (or the database's size limit) is full (SQLITE_FULL).
    Full,
    /// The file or its directory cannot be written (SQLITE_READONLY,
    /// SQLITE_CANTOPEN, SQLITE_PERM).
    ReadOnly,
    /// The operating system failed a read or write (SQLITE_IOERR).
    Io,
}

impl Fault {
    /// What a client is told to wait before trying again.
    pub fn retry_after_secs(self) -> u64 {
        match self {
            Fault::Busy => 1,
            Fault::Full | Fault::ReadOnly | Fault::Io => 5,
        }
    }

    /// The SQLite result codes that are faults of the machine, by primary code.
    pub fn of_sqlite(code: rusqlite::ErrorCode) -> Option<Fault> {
        use rusqlite::ErrorCode as C;
        match code {
            C::DatabaseBusy | C::DatabaseLocked => Some(Fault::Busy),
            C::DiskFull => Some(Fault::Full),
            C::ReadOnly | C::CannotOpen | C::PermissionDenied => Some(Fault::ReadOnly),
            C::SystemIoFailure => Some(Fault::Io),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("the database is busy")]
    Busy,
    /// A fault of the machine (see [`Fault`]), with SQLite's or the pool's words.
    #[error("the database cannot take this work now ({0:?}): {1}")]
    Unavailable(Fault, String),
    #[error("database connection pool: {0}")]
    Pool(String),
    #[error("sqlite: {0}")]
    Sqlite(rusqlite::Error),
    #[error(
        "the database is at schema version {found}, newer than this Gatehouse supports ({supported}); \
         run the newer Gatehouse release, or restore a backup made before the upgrade"
    )]
    TooNew { found: u32, supported: u32 },
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("{0}")]
    Io(String),
    #[error("a database task stopped unexpectedly")]
    TaskFailed,
}

impl DbError {
    /// The fault of the machine behind this error, if it is one.
    pub fn fault(&self) -> Option<Fault> {
        match self {
            DbError::Busy | DbError::Pool(_) => Some(Fault::Busy),
            DbError::Unavailable(fault, _) => Some(*fault),
            _ => None,
        }
    }
}

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code().and_then(Fault::of_sqlite) {
            Some(fault) => DbError::Unavailable(fault, e.to_string()),
            None => DbError::Sqlite(e),
        }
    }
}

/// r2d2's one error: no connection came free (or could be opened) in time.
impl From<r2d2::Error> for DbError {
    fn from(e: r2d2::Error) -> Self {
        DbError::Pool(e.to_string())
    }
}

pub type DbResult<T> = Result<T, DbError>;

/// SQLite's errors as the storage interface classifies them.
impl From<DbError> for StoreError {
    fn from(e: DbError) -> Self {
        if let DbError::TooNew { found, supported } = e {
            return StoreError::TooNew { found, supported };
        }
        match e.fault() {
            Some(fault) => StoreError::Unavailable {
                kind: match fault {
                    Fault::Busy => Unavailable::Busy,
                    Fault::Full | Fault::ReadOnly | Fault::Io => Unavailable::CannotWrite,
                },
                cause: e.to_string(),
            },
            None => StoreError::Internal(e.to_string()),
        }
    }
}

#[derive(Clone)]
pub struct SqliteStore {
    pool: Pool<SqliteConnectionManager>,
    path: PathBuf,
    drill: Arc<FaultDrill>,
    /// Where every time this backend writes or compares comes from.
    clock: crate::clock::Clock,
}

/// A storage fault to simulate, for reliability tests and drills: it makes
/// every pooled connection fail writes the way a real fault would.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimulatedFault {
    /// The database may not grow (SQLite's `max_page_count` at the current
    /// size): inserts that need a new page fail with SQLITE_FULL.
    DiskFull,
    /// Every write fails with SQLITE_READONLY (`query_only`).
    ReadOnly,
}

/// The simulated fault in force. Costs one atomic load per storage call
/// until a fault is first simulated.
#[derive(Default)]
struct FaultDrill {
    /// 0 = none, 1 = disk full, 2 = read-only.
    active: AtomicU8,
    /// Once any fault was simulated, every checkout sets the pragmas.
    used: AtomicBool,
    /// `max_page_count` of a fresh connection, to lift the limit again.
    max_pages: AtomicU64,
}

impl FaultDrill {
    fn apply(&self, c: &Connection) -> rusqlite::Result<()> {
        if !self.used.load(Ordering::Acquire) {
            return Ok(());
        }
        let (max_pages, query_only) = match self.active.load(Ordering::Acquire) {
            1 => (1, 0),
            2 => (self.max_pages.load(Ordering::Relaxed), 1),
            _ => (self.max_pages.load(Ordering::Relaxed), 0),
        };
        c.query_row(&format!("PRAGMA max_page_count = {max_pages}"), [], |_| {
            Ok(())
        })?;
        c.execute_batch(&format!("PRAGMA query_only = {query_only};"))
    }
}

/// The page cache of each pooled connection, in KiB (SQLite's default is
/// 2,000). Every connection keeps its own, and a key lookup in a table of
/// 1,000,000 keys touches pages all over it, so with the default the pool
/// ends up holding 16 MiB of pages the operating system caches anyway. 512
/// KiB keeps the upper levels of the key indexes; cache hits never read
/// storage at all.
const CONNECTION_CACHE_KIB: u32 = 512;

impl SqliteStore {
    /// Opens (creating if needed) the database file, switches it to WAL and
    /// builds the pool; every pooled connection gets foreign keys, the busy
    /// timeout, the configured `synchronous` level and a page cache of
    /// [`CONNECTION_CACHE_KIB`].
    pub fn open(path: &Path, cfg: &DatabaseConfig) -> DbResult<SqliteStore> {
        let max_pages: u64 = {
            let conn = Connection::open(path)?;
            let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(DbError::Io(format!(
                    "{} cannot use WAL journaling (got {mode})",
                    path.display()
                )));
            }
            conn.query_row("PRAGMA max_page_count", [], |r| r.get(0))?
        };
        let busy = cfg.busy_timeout_ms;
        let sync = cfg.synchronous.as_str();
        let manager = SqliteConnectionManager::file(path)
            .with_flags(OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .with_init(move |c| {
                c.execute_batch(&format!(
                    "PRAGMA foreign_keys = ON; PRAGMA busy_timeout = {busy}; PRAGMA synchronous = {sync}; \
                     PRAGMA cache_size = -{CONNECTION_CACHE_KIB};"
                ))
            });
        let pool = Pool::builder()
            .max_size(cfg.pool_size)
            .connection_timeout(Duration::from_millis(busy.max(1000)))
            .build(manager)?;
        let drill = FaultDrill::default();
        drill.max_pages.store(max_pages, Ordering::Relaxed);
        Ok(SqliteStore {
            pool,
            path: path.to_path_buf(),
            drill: Arc::new(drill),
            clock: crate::clock::Clock::system(),
        })
    }

    /// The same database read through `clock` (tests move it).
    pub fn with_clock(mut self, clock: crate::clock::Clock) -> SqliteStore {
        self.clock = clock;
        self
    }

    /// Simulates a storage fault on every pooled connection until called
    /// with `None` (see [`SimulatedFault`]). For reliability tests.
    #[doc(hidden)]
    pub fn simulate_fault(&self, fault: Option<SimulatedFault>) {
        let code = match fault {
            None => 0,
            Some(SimulatedFault::DiskFull) => 1,
            Some(SimulatedFault::ReadOnly) => 2,
        };
        self.drill.used.store(true, Ordering::Release);
        self.drill.active.store(code, Ordering::Release);
    }

    /// A connection of the pool, for work that must hold one transaction
    /// across awaits (`gatehouse copy-data`).
    pub fn pool_connection(&self) -> DbResult<r2d2::PooledConnection<SqliteConnectionManager>> {
        Ok(self.pool.get()?)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` with a pooled connection on the current thread. For start-up
    /// and CLI code that is not on the async executor.
    pub fn blocking<T>(&self, f: impl FnOnce(&mut Connection) -> DbResult<T>) -> DbResult<T> {
        let mut conn = self.pool.get()?;
        self.drill.apply(&conn)?;
        f(&mut conn)
    }

    /// Runs `f` with a pooled connection on the blocking thread pool.
    pub async fn call<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> DbResult<T> + Send + 'static,
    {
        let pool = self.pool.clone();
        // The caller's trace context, so work queued here (webhook events,
        // mail) records the request that caused it.
        let trace = opentelemetry::Context::current();
        let drill = self.drill.clone();
        tokio::task::spawn_blocking(move || {
            let _trace = trace.attach();
            let mut conn = pool.get()?;
            drill.apply(&conn)?;
            f(&mut conn)
        })
        .await
        .map_err(|_| DbError::TaskFailed)
        .and_then(|r| r)
        .map_err(StoreError::from)
    }

    pub fn migrate(&self) -> DbResult<MigrateOutcome> {
        self.blocking(migrate::migrate)
    }

    /// [`crate::store::keys::KeyRepo::imported_key_hashes`], on the
    /// current thread (start-up runs before the server's runtime).
    pub fn imported_key_hashes_now(&self) -> DbResult<Vec<crate::store::KeyHash>> {
        self.blocking(|c| keys::imported_key_hashes(c))
    }

    /// The values of the connection-level pragmas, as a pooled connection sees them.
    pub async fn pragmas(&self) -> StoreResult<Pragmas> {
        self.call(|c| {
            Ok(Pragmas {
                journal_mode: c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?,
                foreign_keys: c.query_row("PRAGMA foreign_keys", [], |r| r.get(0))?,
                synchronous: c.query_row("PRAGMA synchronous", [], |r| r.get(0))?,
                busy_timeout_ms: c.query_row("PRAGMA busy_timeout", [], |r| r.get(0))?,
            })
        })
        .await
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pragmas {
    pub journal_mode: String,
    pub foreign_keys: i64,
    /// 0 = OFF, 1 = NORMAL, 2 = FULL, 3 = EXTRA.
    pub synchronous: i64,
    pub busy_timeout_ms: i64,
}

/// Checks that the database at `path` can be used by this version without
/// changing it: refuses a schema newer than this binary knows.
pub fn check_version(path: &Path) -> DbResult<u32> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let found = migrate::user_version(&conn)?;
    let supported = latest_version();
    if found > supported {
        return Err(DbError::TooNew { found, supported });
    }
    Ok(found)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupOutcome {
    pub pages: i64,
    pub bytes: u64,
}

/// An online, consistent copy of the database at `source` into `out` (which
/// must not exist), using SQLite's backup API while other processes keep
/// reading and writing. The copy is written beside `out` and renamed into
/// place only once complete and checked.
pub fn backup(source: &Path, out: &Path) -> DbResult<BackupOutcome> {
    if out.exists() {
        return Err(DbError::Io(format!(
            "{} already exists; backup never overwrites a file",
            out.display()
        )));
    }
    if !source.exists() {
        return Err(DbError::Io(format!("no database at {}", source.display())));
    }
    let src = Connection::open_with_flags(source, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    src.busy_timeout(Duration::from_secs(30))?;
    let partial = out.with_file_name(format!(
        ".{}.partial",
        out.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "backup".into())
    ));
    let _ = std::fs::remove_file(&partial);
    let result = (|| {
        let mut dst = Connection::open(&partial)?;
        {
            let backup = rusqlite::backup::Backup::new(&src, &mut dst)?;
            // All pages in one step (-1): one read transaction, so one
            // consistent snapshot even while writers carry on.
            loop {
                match backup.step(-1)? {
                    rusqlite::backup::StepResult::Done => break,
                    rusqlite::backup::StepResult::More => {}
                    _ => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
        // A backup is one self-contained file, not a WAL database.
        let _: String = dst.query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))?;
        let ok: String = dst.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        if ok != "ok" {
            return Err(DbError::Io(format!(
                "the copy failed its integrity check: {ok}"
            )));
        }
        let pages: i64 = dst.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        dst.close().map_err(|(_, e)| DbError::from(e))?;
        Ok(pages)
    })();
    let pages = match result {
        Ok(p) => p,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    std::fs::File::open(&partial)
        .and_then(|f| f.sync_all())
        .and_then(|_| std::fs::rename(&partial, out))
        .map_err(|e| DbError::Io(format!("cannot write {}: {e}", out.display())))?;
    let bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    Ok(BackupOutcome { pages, bytes })
}

impl crate::store::Clocked for SqliteStore {
    fn clock(&self) -> &crate::clock::Clock {
        &self.clock
    }
}
