//! Users, projects and members behind the storage interface (growing: the
//! lookups the key checks need come first).

use async_trait::async_trait;

use super::{ProjectId, StoreResult};
use crate::db::users::Project;

#[async_trait]
pub trait DirectoryRepo: Send + Sync {
    async fn project(&self, id: ProjectId) -> StoreResult<Option<Project>>;
}
