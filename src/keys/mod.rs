//! API keys: the key format and checksum (`format`). Issuance,
//! verification, the cache and the rate limiter live beside it.

pub mod format;

pub use format::{looks_like_key, ApiKey, KeyType, MalformedKey};
