//! The integration test binary: every HTTP and CLI behaviour, against the
//! app started in-process (`helpers::spawn_app`) or the built binary, and
//! the admin UI in headless Chromium (`ui`, which runs tests/ui/admin.mjs).

mod helpers;
#[path = "../common/pg.rs"]
mod pg;
#[path = "../common/skip.rs"]
mod skip;

mod auth;
mod billing;
mod cli;
mod cli_docs;
mod cluster;
mod config;
mod conventions;
mod copy_data;
mod docs;
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
