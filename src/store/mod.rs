//! Storage backends. SQLite ([`sqlite`], rusqlite + r2d2) is the embedded
//! default; PostgreSQL ([`postgres`]) serves several Gatehouse nodes that
//! share one database. `database.url`
//! chooses: empty for SQLite in the data directory, `postgres://` or
//! `postgresql://` for PostgreSQL.
//!
//! Both keep the same tables and columns (`schema.sql` and
//! `schema.postgres.sql`), so rows move between them unchanged.
//!
//! # The interface
//!
//! Every request goes through it; nothing outside `src/store` names
//! rusqlite, tokio-postgres, SQL or a backend module (a unit test below
//! holds this). Each feature has one file here (its trait, its value
//! types, its pure rules) and a file of the same name in each backend that
//! implements the trait:
//!
//! - One trait per thing the product does, async at the surface, each
//!   method one transaction: `KeyRepo` (find by hash/id, page, create,
//!   update, rotate, revoke-leaked, import, the change feed), `UsageRepo`
//!   (add usage increments, series, project totals), `SessionRepo` (codes,
//!   sessions, tokens), `DirectoryRepo` (users, projects, members),
//!   `AuditRepo`, `WebhookRepo` (endpoints, deliveries claimed with a
//!   lease), `MailRepo` (outbox claimed with a lease), `BillingRepo`
//!   (Stripe events), `Maintenance` (migrate, ping, backup, cleanup).
//!   `Store` is all of them; the server holds an `Arc<dyn Store>`.
//! - Typed ids ([`ids`]) in every signature.
//! - Side effects that must commit with a change (audit rows, webhook
//!   outbox rows, mail, key change feed entries) are passed in as values,
//!   or built by a caller-supplied function of the changed record, and
//!   written by the backend in the same transaction. The store never
//!   renders API JSON itself.
//! - Policy is plain functions both backends call inside their
//!   transactions (code attempts and burning, send-code throttles, refresh
//!   reuse and its grace, member role rules, rotation rules, Stripe
//!   reconciliation), unit-tested without a database.
//! - Races that SQLite closes by having one writer are closed natively on
//!   PostgreSQL: `max_keys` and rotation by locking the project row before
//!   counting (see [`postgres::keys::create_key`]); the last-owner rule by
//!   locking the project's membership rows (`FOR UPDATE`) before counting
//!   owners; refresh-token rotation and code attempts by locking the token
//!   or code row (`FOR UPDATE`) and deciding on what the lock returned.

pub mod audit;
pub mod billing;
pub mod billing_link;
pub mod copy;
pub mod credits;
pub mod dir_lock;
pub mod directory;
pub mod effects;
pub mod ids;
pub mod key_record;
pub mod keys;
pub mod maintenance;
pub mod migrate;
pub mod open;
pub mod postgres;
pub mod session_rules;
pub mod sessions;
pub mod spend;
pub mod sqlite;
pub mod usage;
pub mod work;

pub use ids::{KeyHash, KeyId, ProjectId, UserId};

/// A storage failure, the same whichever backend: each backend classifies
/// its own errors into these (`From<DbError>`, `From<PgError>`), so nothing
/// outside `store` looks at a driver's error.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot take this work now; nothing was written, and
    /// the same work can succeed once the condition clears (503
    /// `unavailable` with `Retry-After`).
    #[error("the database cannot take this work now ({kind:?}): {cause}")]
    Unavailable { kind: Unavailable, cause: String },
    /// What was read kept changing under concurrent writes; retry shortly.
    #[error("the stored value kept changing while it was read")]
    Contended,
    /// The database was written by a newer Gatehouse (refused at start).
    #[error(
        "the database is at schema version {found}, newer than this Gatehouse supports ({supported}); \
         run the newer Gatehouse release, or restore a backup made before the upgrade"
    )]
    TooNew { found: u32, supported: u32 },
    /// Anything else: a fault of Gatehouse or of the stored data (500).
    #[error("{0}")]
    Internal(String),
}

/// Why the database cannot take work right now: a condition of the
/// machine or the network, not of the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unavailable {
    /// A lock, or every connection, is held past the wait (SQLite's busy
    /// timeout, an exhausted pool, a PostgreSQL serialization failure or
    /// deadlock).
    Busy,
    /// The database takes no writes: a full disk, a read-only file, an I/O
    /// failure.
    CannotWrite,
    /// The database cannot be reached, or is starting or stopping.
    Unreachable,
}

impl Unavailable {
    /// What a client is told to wait before trying again.
    pub fn retry_after_secs(self) -> u64 {
        match self {
            Unavailable::Busy | Unavailable::Unreachable => 1,
            Unavailable::CannotWrite => 5,
        }
    }

    /// What the client is told (the error envelope's message).
    pub fn message(self) -> &'static str {
        match self {
            Unavailable::Busy => "The database is busy; retry shortly.",
            Unavailable::CannotWrite => {
                "The database cannot take writes right now; nothing was changed. Retry later."
            }
            Unavailable::Unreachable => {
                "The database cannot take this request right now; retry shortly."
            }
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The clock a backend reads every time it writes or compares from, and
/// that the code around it reads too, so one moved clock moves them all.
pub trait Clocked {
    fn clock(&self) -> &crate::clock::Clock;
}

/// Everything a backend provides; the server holds an `Arc<dyn Store>`.
pub trait Store:
    Clocked
    + keys::KeyRepo
    + usage::UsageRepo
    + audit::AuditRepo
    + work::WebhookRepo
    + work::MailRepo
    + directory::DirectoryRepo
    + sessions::SessionRepo
    + billing::BillingRepo
    + maintenance::Maintenance
    + spend::SpendRepo
{
}

impl<T> Store for T where
    T: Clocked
        + keys::KeyRepo
        + usage::UsageRepo
        + audit::AuditRepo
        + work::WebhookRepo
        + work::MailRepo
        + directory::DirectoryRepo
        + sessions::SessionRepo
        + billing::BillingRepo
        + maintenance::Maintenance
        + spend::SpendRepo
{
}

#[cfg(test)]
mod layout {
    use std::path::Path;

    /// What only a backend may name: its driver crates and its module.
    const BACKEND_NAMES: [&str; 6] = [
        "rusqlite",
        "r2d2",
        "tokio_postgres",
        "deadpool_postgres",
        "store::sqlite",
        "store::postgres",
    ];

    fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// A line without its string literals and comments (log targets and
    /// docs may name a driver; code may not).
    fn code_of(line: &str) -> String {
        let mut code = String::new();
        let mut in_string = false;
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' if in_string => {
                    chars.next();
                }
                '"' => in_string = !in_string,
                '/' if !in_string && chars.peek() == Some(&'/') => break,
                _ if !in_string => code.push(c),
                _ => {}
            }
        }
        code
    }

    #[test]
    fn nothing_outside_storage_names_a_backend() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let mut found = Vec::new();
        for file in files {
            let relative = file.strip_prefix(&src).unwrap();
            if relative.starts_with("store") {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap();
            for (n, line) in text.lines().enumerate() {
                let code = code_of(line);
                for name in BACKEND_NAMES {
                    if code.contains(name) {
                        found.push(format!("src/{}:{}: {name}", relative.display(), n + 1));
                    }
                }
            }
        }
        assert!(
            found.is_empty(),
            "only src/store may name a backend or its driver:\n{}",
            found.join("\n")
        );
    }
}
