//! Users, projects and members behind the storage interface.
//!
//! The role rules are `store::directory::may_change` (plain, unit-tested); the
//! last-owner rule is kept by each backend: SQLite by its one writer,
//! PostgreSQL by locking the project's membership rows before counting the
//! owners. Adding a member never duplicates one: the membership's primary
//! key decides between concurrent adds.

use async_trait::async_trait;

use super::audit::Actor;
use super::effects::{AuditEntry, Effects, WebhookEvent};
use super::{ProjectId, StoreResult, UserId};
use crate::store::work::Outgoing;
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
    /// the role rules (`store::directory::may_change`), never leaving the project
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

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub email: String,
    pub full_name: Option<String>,
    pub created_at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Project {
    pub id: String,
    pub name: String,
    pub plan: String,
    pub created_at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    pub project: Project,
    pub role: Role,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub user: User,
    pub role: Role,
    pub created_at: i64,
}

/// A member as webhook payloads show it.
pub(crate) fn member_json(m: &Member) -> serde_json::Value {
    serde_json::json!({
        "user": {
            "id": m.user.id,
            "email": m.user.email,
            "full_name": m.user.full_name,
            "created_at": crate::types::rfc3339(m.user.created_at),
        },
        "role": m.role.as_str(),
        "created_at": crate::types::rfc3339(m.created_at),
    })
}

/// What a role change or removal records and announces (both backends).
pub fn member_change_effects(
    project_id: &str,
    current: &Member,
    to: Option<Role>,
    actor: &Actor,
) -> crate::store::effects::Effects {
    use crate::store::effects::{AuditEntry, Effects, WebhookEvent};
    let effects = Effects::default().audit(AuditEntry {
        project_id: Some(project_id.to_string()),
        action: if to.is_some() {
            "member.role_changed"
        } else {
            "member.removed"
        },
        actor: actor.clone(),
        target: Some(current.user.id.clone()),
        details: serde_json::json!({
            "email": current.user.email,
            "from": current.role.as_str(),
            "to": to.map(Role::as_str),
        }),
    });
    match to {
        Some(_) => effects,
        None => effects.webhook(WebhookEvent {
            project_id: project_id.to_string(),
            event: "member.removed",
            data: member_json(current),
        }),
    }
}

/// Why a membership change was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberChangeError {
    NotFound,
    AlreadyMember,
    /// The project would be left without an owner.
    LastOwner,
    /// The acting role may not do this to that member.
    Forbidden,
}

/// The role rules of SPEC section 7, without storage: whether `actor` may
/// set a member's role from `from` (None = not a member yet) to `to`
/// (None = remove).
pub fn may_change(
    actor: Role,
    actor_is_target: bool,
    from: Option<Role>,
    to: Option<Role>,
) -> bool {
    match (from, to) {
        // Adding: owners add anyone; admins add admins and members.
        (None, Some(to)) => actor == Role::Owner || (actor == Role::Admin && to != Role::Owner),
        // Changing a role: owners only.
        (Some(_), Some(_)) => actor == Role::Owner,
        // Removing: anyone may leave; owners remove anyone; admins remove admins and members.
        (Some(from), None) => {
            actor_is_target || actor == Role::Owner || (actor == Role::Admin && from != Role::Owner)
        }
        (None, None) => false,
    }
}

#[derive(Debug, Clone)]
pub struct BootstrapOutcome {
    pub user: User,
    pub user_created: bool,
    pub project: Option<Project>,
    pub project_created: bool,
    pub role: Option<Role>,
}

/// What creating a project records.
pub fn project_created(project: &Project, actor: &Actor) -> Effects {
    Effects::default().audit(AuditEntry {
        project_id: Some(project.id.clone()),
        action: "project.created",
        actor: actor.clone(),
        target: Some(project.id.clone()),
        details: serde_json::json!({ "name": project.name }),
    })
}

/// What adding a member records and announces: the audit row, the
/// `member.added` event and the message to the new member.
pub fn member_added(project_id: &str, member: &Member, actor: &Actor, notify: Outgoing) -> Effects {
    let mut effects = Effects::default()
        .audit(AuditEntry {
            project_id: Some(project_id.to_string()),
            action: "member.added",
            actor: actor.clone(),
            target: Some(member.user.id.clone()),
            details: serde_json::json!({ "email": member.user.email, "role": member.role.as_str() }),
        })
        .webhook(WebhookEvent {
            project_id: project_id.to_string(),
            event: "member.added",
            data: member_json(member),
        });
    effects.mail.push(notify);
    effects
}

/// Which project `gatehouse users add --project NAME` means, from every
/// project of that name: none (create it), one, or several (refused).
pub fn bootstrap_project(name: &str, mut named: Vec<Project>) -> Result<Option<Project>, String> {
    match named.len() {
        0 => Ok(None),
        1 => Ok(named.pop()),
        n => Err(format!("{n} projects are named {name:?}; rename one first")),
    }
}

/// The membership `gatehouse users add` gives `user` in the project
/// `name`: the role asked for (by default owner of a project it created,
/// member of one that existed), and the effects of adding it, or none when
/// the user holds that role already. A different role already held is
/// refused (the CLI never changes a role silently).
pub fn bootstrap_membership(
    user: &User,
    project: &Project,
    created: bool,
    requested: Option<Role>,
    held: Option<Role>,
) -> Result<(Role, Option<Effects>), String> {
    let role = requested.unwrap_or(if created { Role::Owner } else { Role::Member });
    match held {
        Some(held) if held != role => Err(format!(
            "{} is already a {} of {:?}",
            user.email,
            held.as_str(),
            project.name
        )),
        Some(_) => Ok((role, None)),
        None => Ok((
            role,
            Some(Effects::default().audit(AuditEntry {
                project_id: Some(project.id.clone()),
                action: "member.added",
                actor: Actor::system(),
                target: Some(user.id.clone()),
                details: serde_json::json!({ "email": user.email, "role": role.as_str(), "via": "cli" }),
            })),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Role::*;

    fn project(name: &str) -> Project {
        Project {
            id: format!("prj_{name}"),
            name: name.into(),
            plan: "free".into(),
            created_at: 0,
        }
    }

    #[test]
    fn the_cli_names_one_project_or_creates_it() {
        assert_eq!(bootstrap_project("a", vec![]), Ok(None));
        assert_eq!(
            bootstrap_project("a", vec![project("a")]),
            Ok(Some(project("a")))
        );
        let err = bootstrap_project("a", vec![project("a"), project("a")]).unwrap_err();
        assert!(err.contains("2 projects are named \"a\""), "{err}");
    }

    #[test]
    fn the_cli_adds_a_member_once_and_never_changes_a_role() {
        let user = User {
            id: "usr_1".into(),
            email: "ana@example.com".into(),
            full_name: None,
            created_at: 0,
        };
        let p = project("a");
        let (role, effects) = bootstrap_membership(&user, &p, true, None, None).unwrap();
        assert_eq!(role, Owner);
        let entry = &effects.unwrap().audit[0];
        assert_eq!(
            (entry.action, entry.details["via"].as_str()),
            ("member.added", Some("cli"))
        );
        assert_eq!(
            bootstrap_membership(&user, &p, false, None, None)
                .unwrap()
                .0,
            Member
        );
        // Already a member with that role: nothing to write.
        assert!(
            bootstrap_membership(&user, &p, false, Some(Admin), Some(Admin))
                .unwrap()
                .1
                .is_none()
        );
        let err = bootstrap_membership(&user, &p, false, Some(Owner), Some(Member)).unwrap_err();
        assert_eq!(err, "ana@example.com is already a member of \"a\"");
    }

    #[test]
    fn role_rules() {
        assert!(may_change(Owner, false, None, Some(Owner)));
        assert!(may_change(Admin, false, None, Some(Admin)));
        assert!(!may_change(Admin, false, None, Some(Owner)));
        assert!(!may_change(Member, false, None, Some(Member)));
        assert!(may_change(Owner, false, Some(Member), Some(Admin)));
        assert!(!may_change(Admin, false, Some(Member), Some(Admin)));
        assert!(may_change(Admin, false, Some(Member), None));
        assert!(!may_change(Admin, false, Some(Owner), None));
        assert!(!may_change(Member, false, Some(Member), None));
        assert!(may_change(Member, true, Some(Member), None));
    }
}
