//! API keys: the key format and checksum (`format`), stored settings
//! (`record`), the rate limiter (`limiter`), credits (`credits`), the
//! in-memory verification store (`store`), the change feed that keeps it
//! current (`feed`) and write-behind usage (`usage`).

pub mod admin;
/// Credit balances and their refills live with their storage.
pub use crate::store::credits;
pub mod events;
pub mod feed;
pub mod feed_health;
pub mod format;
pub mod forward;
pub mod input;
pub mod limiter;
/// A stored key lives with its storage.
pub use crate::store::key_record as record;
pub mod store;
pub mod usage;
pub mod view;

pub use format::{looks_like_key, ApiKey, KeyType, MalformedKey};
