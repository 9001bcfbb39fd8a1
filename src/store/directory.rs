//! Users, projects and members behind the storage interface (growing: the
//! lookups the key checks need come first).

use async_trait::async_trait;

use super::{ProjectId, StoreResult, UserId};
use crate::db::audit::Actor;
use crate::db::users::{Member, MemberChangeError, Project};
use crate::types::Role;

#[async_trait]
pub trait DirectoryRepo: Send + Sync {
    async fn project(&self, id: ProjectId) -> StoreResult<Option<Project>>;
    /// Changes a member's role (`Some`) or removes the member (`None`) under
    /// the role rules (`db::users::may_change`), never leaving the project
    /// without an owner, with the change's audit row and webhook event.
    async fn change_member(
        &self,
        project: ProjectId,
        user: UserId,
        to: Option<Role>,
        actor_role: Role,
        actor: Actor,
    ) -> StoreResult<Result<Option<Member>, MemberChangeError>>;
}
