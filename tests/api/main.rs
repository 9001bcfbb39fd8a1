//! The integration test binary: every HTTP and CLI behaviour, against the
//! app started in-process (`helpers::spawn_app`) or the built binary, and
//! the admin UI in headless Chromium (`ui`, which runs tests/ui/admin.mjs).

/// Tests that need several nodes on one database exist only in the
/// PostgreSQL binary (a SQLite data directory is served by one process):
/// here they are not compiled, rather than passing without running.
macro_rules! postgres_only {
    ($($test:item)*) => {};
}

mod helpers;
#[path = "../common/multinode.rs"]
mod multinode;
#[path = "../common/pg.rs"]
mod pg;
#[path = "../common/skip.rs"]
mod skip;

mod auth;
mod billing;
mod cli;
mod cli_docs;
// Its several-node helpers serve only the PostgreSQL binary (`postgres_only!`).
#[allow(dead_code)]
mod cluster;
mod config;
mod conventions;
mod copy_data;
mod docs;
mod drills;
mod fuzzing;
mod key_state;
mod keys;
mod local_demo;
mod members;
mod openapi;
mod ops;
mod otel;
mod parsers;
mod proxies;
mod readme;
mod service;
mod signals;
mod smtp;
mod storage;
mod telemetry;
mod ui;
mod webhooks;
