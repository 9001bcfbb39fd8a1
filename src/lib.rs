//! Gatehouse: self-hosted API keys and email-code login in one binary.
//!
//! The library holds everything; `main.rs` only dispatches the command line.
//! See `startup` for how the HTTP server is assembled and `routes` for every
//! route.

pub mod auth;
pub mod billing;
pub mod catalog;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod crypto;
pub mod drain;
pub mod error;
pub mod http;
pub mod keys;
pub mod mail;
pub mod metrics;
pub mod openapi;
pub mod preflight;
pub mod routes;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod types;
pub mod ui;
pub mod webhooks;
