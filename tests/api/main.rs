//! The integration test binary: every HTTP and CLI behaviour, against the
//! app started in-process (`helpers::spawn_app`) or the built binary, and
//! the admin UI in headless Chromium (`ui`, which runs tests/ui/admin.mjs).

mod helpers;

mod auth;
mod billing;
mod cli;
mod config;
mod conventions;
mod fuzzing;
mod key_state;
mod keys;
mod local_demo;
mod members;
mod openapi;
mod ops;
mod parsers;
mod proxies;
mod readme;
mod smtp;
mod storage;
mod ui;
mod webhooks;
