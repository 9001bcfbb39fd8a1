//! The integration test binary: every HTTP and CLI behaviour, against the
//! app started in-process (`helpers::spawn_app`) or the built binary.

mod helpers;

mod cli;
mod conventions;
mod openapi;
mod ops;
mod storage;
