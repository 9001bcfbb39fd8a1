//! Users, projects and members behind the storage interface.
//!
//! The role rules are `db::users::may_change` (plain, unit-tested); the
//! last-owner rule is kept by each backend: SQLite by its one writer,
//! PostgreSQL by locking the project's membership rows before counting the
//! owners. Adding a member never duplicates one: the membership's primary
//! key decides between concurrent adds.

use async_trait::async_trait;

use super::{ProjectId, StoreResult, UserId};
use crate::db::audit::Actor;
use crate::db::mail::Outgoing;
use crate::db::users::{BootstrapOutcome, Member, MemberChangeError, Membership, Project};
use crate::types::Email;
use crate::types::Role;

#[async_trait]
pub trait DirectoryRepo: Send + Sync {
    async fn project(&self, id: ProjectId) -> StoreResult<Option<Project>>;
    /// A project by id, or by name when exactly one project has it (CLI);
    /// otherwise why not, in words for the operator.
    async fn find_project(&self, id_or_name: String) -> StoreResult<Result<Project, String>>;
    /// Every project the user belongs to, with the role, oldest first.
    async fn memberships(&self, user: UserId) -> StoreResult<Vec<Membership>>;
    /// The user's role in the project, or `None` when not a member.
    async fn project_role(
        &self,
        user: UserId,
        project: ProjectId,
    ) -> StoreResult<Option<Membership>>;
    /// Creates a project with `owner` as its owner, with its audit row.
    async fn create_project(
        &self,
        owner: UserId,
        name: String,
        plan: String,
        actor: Actor,
    ) -> StoreResult<Project>;
    /// One page of the user's projects with their role, and the total.
    async fn projects_page(
        &self,
        user: UserId,
        offset: i64,
        limit: i64,
    ) -> StoreResult<(Vec<Membership>, i64)>;
    /// One page of a project's members, and the total.
    async fn members_page(
        &self,
        project: ProjectId,
        offset: i64,
        limit: i64,
    ) -> StoreResult<(Vec<Member>, i64)>;
    /// Adds `email` (creating the user if needed) with `role`, with the
    /// audit row, the `member.added` event and `notify` queued.
    async fn add_member(
        &self,
        project: ProjectId,
        email: Email,
        role: Role,
        actor_role: Role,
        actor: Actor,
        notify: Outgoing,
    ) -> StoreResult<Result<Member, MemberChangeError>>;
    /// `gatehouse users add`: the user, and optionally a membership in the
    /// project of that name (created when none exists).
    async fn bootstrap_user(
        &self,
        email: Email,
        project: Option<(String, Option<Role>)>,
        plan: String,
    ) -> StoreResult<Result<BootstrapOutcome, String>>;
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
