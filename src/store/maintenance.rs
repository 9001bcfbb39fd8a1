//! Keeping the database in order, behind the storage interface.

use async_trait::async_trait;

use super::StoreResult;

/// How long what `cleanup` removes is kept.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    /// A session unused this long is dead (`auth.session_idle_secs`).
    pub session_idle_secs: i64,
}

#[async_trait]
pub trait Maintenance: Send + Sync {
    /// The database answers (for `/readyz`).
    async fn ping(&self) -> StoreResult<()>;
    /// Removes expired codes, throttle records, tokens, dead sessions and old
    /// mail in one transaction; returns how many rows went.
    async fn cleanup(&self, retention: Retention) -> StoreResult<usize>;
}
