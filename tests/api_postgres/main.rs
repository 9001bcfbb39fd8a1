//! The HTTP suite on PostgreSQL: the modules of `tests/api` whose
//! behaviour does not depend on the backend, each app on a fresh
//! PostgreSQL database of its own (`helpers::backend` picks PostgreSQL in
//! this binary). The modules that test SQLite itself (its files, pragmas,
//! backups and fault drills) or nothing of storage (the CLI's texts, the
//! README, the browser) run only in `tests/api`.
//!
//! The server comes from `GATEHOUSE_TEST_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`). It is checked before the
//! first test runs: without one the whole binary is skipped, saying so,
//! unless `GATEHOUSE_REQUIRE_E2E` is set (then every test fails). A server
//! that stops answering later fails the tests it hits.

// Helpers the modules run here do not all use.
#![allow(dead_code)]

/// The several-node tests of the shared modules (`tests/api` leaves them
/// out: a SQLite data directory is served by one process).
macro_rules! postgres_only {
    ($($test:item)*) => { $($test)* };
}

#[path = "../api/helpers.rs"]
mod helpers;
#[path = "../common/multinode.rs"]
mod multinode;
#[path = "../common/pg.rs"]
mod pg;
#[path = "../common/skip.rs"]
mod skip;

#[path = "../api/auth.rs"]
mod auth;
#[path = "../api/billing.rs"]
mod billing;
#[path = "../api/conventions.rs"]
mod conventions;
#[path = "../api/key_state.rs"]
mod key_state;
#[path = "../api/keys.rs"]
mod keys;
#[path = "../api/members.rs"]
mod members;
#[path = "../api/openapi.rs"]
mod openapi;
#[path = "../api/ops.rs"]
mod ops;
#[path = "../api/parsers.rs"]
mod parsers;
#[path = "../api/proxies.rs"]
mod proxies;
#[path = "../api/smtp.rs"]
mod smtp;
#[path = "../api/telemetry.rs"]
mod telemetry;
#[path = "../api/webhooks.rs"]
mod webhooks;

#[path = "../api/cluster.rs"]
mod cluster;
mod drills;
mod feed;
mod nodes;
mod outage;

/// Runs before the test harness starts (an ELF constructor): the only
/// moment a whole-binary skip cannot hide a result another test recorded.
#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array"]
static CHECK_POSTGRES_FIRST: extern "C" fn() = check_postgres_first;

#[cfg(target_os = "linux")]
extern "C" fn check_postgres_first() {
    use std::io::Write;
    if std::env::var_os("GATEHOUSE_REQUIRE_E2E").is_some() {
        return;
    }
    if let Err(why) = pg::server_answers() {
        let _ = writeln!(
            std::io::stderr(),
            "\nSKIPPED the whole PostgreSQL HTTP suite (api_postgres) before its first test: \
             no PostgreSQL server answers ({why}); set GATEHOUSE_TEST_PG_URL, or \
             GATEHOUSE_REQUIRE_E2E=1 to make this a failure\n"
        );
        std::process::exit(0);
    }
}
