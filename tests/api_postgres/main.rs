//! The HTTP suite on PostgreSQL: the modules of `tests/api` whose
//! behaviour does not depend on the backend, each app on a fresh
//! PostgreSQL database of its own (`helpers::backend` picks PostgreSQL in
//! this binary). The modules that test SQLite itself (its files, pragmas,
//! backups and fault drills) or nothing of storage (the CLI's texts, the
//! README, the browser) run only in `tests/api`.
//!
//! The server comes from `GATEHOUSE_TEST_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`). Without one the whole
//! binary is skipped, saying so, unless `GATEHOUSE_REQUIRE_E2E` is set.

// Helpers the modules run here do not all use.
#![allow(dead_code)]

#[path = "../api/helpers.rs"]
mod helpers;
#[path = "../common/pg.rs"]
mod pg;

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
mod feed;
mod nodes;
mod outage;
