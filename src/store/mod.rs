//! Storage backends. SQLite (`crate::db`, rusqlite + r2d2) is the embedded
//! default; PostgreSQL ([`postgres`]) serves several Gatehouse nodes that
//! share one database. `database.url` chooses: empty for SQLite in the data
//! directory, `postgres://` or `postgresql://` for PostgreSQL.
//!
//! Both keep the same tables and columns (`schema.sql` and
//! `schema.postgres.sql`), so rows move between them unchanged.

pub mod postgres;
