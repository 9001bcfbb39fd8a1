//! API keys: the key format and checksum (`format`), stored settings
//! (`record`), the rate limiter (`limiter`), credits (`credits`), the
//! in-memory verification store (`store`), the change feed that keeps it
//! current (`feed`) and write-behind usage (`usage`).

pub mod admin;
pub mod credits;
pub mod events;
pub mod feed;
pub mod feed_health;
pub mod format;
pub mod forward;
pub mod input;
pub mod limiter;
pub mod record;
pub mod store;
pub mod usage;
pub mod view;

pub use format::{looks_like_key, ApiKey, KeyType, MalformedKey};
