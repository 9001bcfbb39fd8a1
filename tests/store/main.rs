//! The storage backends against real databases: PostgreSQL (a fresh
//! database per test, see `tests/common/pg.rs`) and SQLite files.

#[path = "../common/pg.rs"]
mod pg;
#[path = "../common/skip.rs"]
mod skip;

mod conformance;
mod pg_keys;
mod pg_usage;
mod postgres;
