//! Usage counts and the audit log behind the storage interface.

use async_trait::async_trait;

use super::{KeyId, ProjectId, StoreError, StoreResult};
use crate::db::audit::StoredEvent;
use crate::db::keys::{UsageBatch, UsageCounts};

#[async_trait]
pub trait UsageRepo: Send + Sync {
    /// Writes a batch in one transaction (counts are added to what is
    /// stored). On failure the batch comes back, to be retried.
    async fn write_usage(&self, batch: UsageBatch) -> Result<(), (StoreError, UsageBatch)>;
    /// Zero-filled buckets of `bucket_secs` between `from` and `to`.
    async fn usage_series(
        &self,
        project: ProjectId,
        key: Option<KeyId>,
        from: i64,
        to: i64,
        bucket_secs: i64,
    ) -> StoreResult<Vec<(i64, UsageCounts)>>;
    /// Valid verifications of a project since `since`.
    async fn project_verifications_since(&self, project: ProjectId, since: i64)
        -> StoreResult<u64>;
}

#[async_trait]
pub trait AuditRepo: Send + Sync {
    /// A page of a project's audit log, newest first, and the total.
    async fn audit_page(
        &self,
        project: ProjectId,
        offset: i64,
        limit: i64,
    ) -> StoreResult<(Vec<StoredEvent>, i64)>;
}
