//! What several nodes share. Rate-limit windows can live in Redis
//! ([`redis::SharedWindows`], when `redis.url` is set), each node falling
//! back to its own windows while Redis cannot answer. Credit balances and
//! monthly quotas are spent in the database itself, one conditional update
//! per spend (see [`crate::store::spend`]), so they hold exactly with any
//! number of nodes, with or without Redis.

pub mod redis;
