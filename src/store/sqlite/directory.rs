//! Users, projects and memberships.

use crate::store::directory::DirectoryRepo;
use crate::store::directory::{
    bootstrap_membership, bootstrap_project, may_change, member_added, member_change_effects,
    project_created, BootstrapOutcome, Member, MemberChangeError, Membership, Project, User,
};
use crate::store::{ProjectId, StoreResult, UserId};
use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

use super::{DbResult, SqliteStore};
use crate::crypto::new_id;
use crate::store::audit::Actor;
use crate::types::{Email, Role};

pub(crate) const USER_COLUMNS: &str = "u.id, u.email, u.full_name, u.created_at";
const PROJECT_COLUMNS: &str = "p.id, p.name, p.plan, p.created_at";

/// Reads a user from `USER_COLUMNS` starting at column `at`.
pub(crate) fn user_from(r: &Row<'_>, at: usize) -> rusqlite::Result<User> {
    Ok(User {
        id: r.get(at)?,
        email: r.get(at + 1)?,
        full_name: r.get(at + 2)?,
        created_at: r.get(at + 3)?,
    })
}

fn project_from(r: &Row<'_>, at: usize) -> rusqlite::Result<Project> {
    Ok(Project {
        id: r.get(at)?,
        name: r.get(at + 1)?,
        plan: r.get(at + 2)?,
        created_at: r.get(at + 3)?,
    })
}

fn role_from(r: &Row<'_>, at: usize) -> rusqlite::Result<Role> {
    let s: String = r.get(at)?;
    Role::parse(&s).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            at,
            rusqlite::types::Type::Text,
            "unknown role".into(),
        )
    })
}

pub(crate) fn find_user_by_email(conn: &Connection, email: &str) -> DbResult<Option<User>> {
    Ok(conn
        .query_row(
            &format!("SELECT {USER_COLUMNS} FROM users u WHERE u.email = ?1"),
            [email],
            |r| user_from(r, 0),
        )
        .optional()?)
}

/// Returns the user with this address, creating it if needed (`true` = created).
pub(crate) fn find_or_create_user(
    conn: &Connection,
    email: &Email,
    now: i64,
) -> DbResult<(User, bool)> {
    if let Some(user) = find_user_by_email(conn, email.as_str())? {
        return Ok((user, false));
    }
    let user = User {
        id: new_id("usr"),
        email: email.as_str().to_string(),
        full_name: None,
        created_at: now,
    };
    conn.execute(
        "INSERT INTO users (id, email, full_name, created_at) VALUES (?1, ?2, NULL, ?3)",
        params![user.id, user.email, now],
    )?;
    Ok((user, true))
}

pub(crate) fn insert_project(
    conn: &Connection,
    name: &str,
    plan: &str,
    now: i64,
) -> DbResult<Project> {
    let project = Project {
        id: new_id("prj"),
        name: name.to_string(),
        plan: plan.to_string(),
        created_at: now,
    };
    conn.execute(
        "INSERT INTO projects (id, name, plan, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![project.id, project.name, project.plan, now],
    )?;
    Ok(project)
}

pub(crate) fn insert_membership(
    conn: &Connection,
    project_id: &str,
    user_id: &str,
    role: Role,
    now: i64,
) -> DbResult<()> {
    conn.execute(
        "INSERT INTO memberships (project_id, user_id, role, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![project_id, user_id, role.as_str(), now],
    )?;
    Ok(())
}

pub(crate) fn memberships_of(conn: &Connection, user_id: &str) -> DbResult<Vec<Membership>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {PROJECT_COLUMNS}, m.role FROM memberships m JOIN projects p ON p.id = m.project_id
         WHERE m.user_id = ?1 ORDER BY m.created_at, p.id"
    ))?;
    let rows = stmt.query_map([user_id], |r| {
        Ok(Membership {
            project: project_from(r, 0)?,
            role: role_from(r, 4)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

fn member_row(conn: &Connection, project_id: &str, user_id: &str) -> DbResult<Option<Member>> {
    Ok(conn
        .query_row(
            &format!(
                "SELECT {USER_COLUMNS}, m.role, m.created_at FROM memberships m JOIN users u ON u.id = m.user_id
                 WHERE m.project_id = ?1 AND m.user_id = ?2"
            ),
            params![project_id, user_id],
            |r| {
                Ok(Member {
                    user: user_from(r, 0)?,
                    role: role_from(r, 4)?,
                    created_at: r.get(5)?,
                })
            },
        )
        .optional()?)
}

fn owner_count(conn: &Connection, project_id: &str) -> DbResult<i64> {
    Ok(conn.query_row(
        "SELECT count(*) FROM memberships WHERE project_id = ?1 AND role = 'owner'",
        [project_id],
        |r| r.get(0),
    )?)
}

#[async_trait]
impl DirectoryRepo for SqliteStore {
    async fn project(&self, id: ProjectId) -> StoreResult<Option<Project>> {
        let id = id.to_string();
        self.call(move |c| {
            Ok(c.query_row(
                &format!("SELECT {PROJECT_COLUMNS} FROM projects p WHERE p.id = ?1"),
                [id],
                |r| project_from(r, 0),
            )
            .optional()?)
        })
        .await
    }

    /// A project by id, or by name when exactly one project has it (CLI).
    async fn find_project(&self, id_or_name: String) -> StoreResult<Result<Project, String>> {
        self.call(move |c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {PROJECT_COLUMNS} FROM projects p WHERE p.id = ?1 OR p.name = ?1 ORDER BY p.id = ?1 DESC"
            ))?;
            let rows: Vec<Project> = stmt
                .query_map([&id_or_name], |r| project_from(r, 0))?
                .collect::<Result<_, _>>()?;
            Ok(match rows.as_slice() {
                [] => Err(format!("no project has the id or name {id_or_name:?}")),
                [one, ..] if one.id == id_or_name => Ok(one.clone()),
                [one] => Ok(one.clone()),
                many => Err(format!("{} projects are named {id_or_name:?}; use the project id", many.len())),
            })
        })
        .await
    }

    async fn memberships(&self, user: UserId) -> StoreResult<Vec<Membership>> {
        let user_id = user.to_string();
        self.call(move |c| memberships_of(c, &user_id)).await
    }

    /// The user's role in the project, or `None` when not a member.
    async fn project_role(
        &self,
        user: UserId,
        project: ProjectId,
    ) -> StoreResult<Option<Membership>> {
        let project_id = project.to_string();
        let user_id = user.to_string();
        self.call(move |c| {
            Ok(c.query_row(
                &format!(
                    "SELECT {PROJECT_COLUMNS}, m.role FROM memberships m JOIN projects p ON p.id = m.project_id
                     WHERE m.user_id = ?1 AND m.project_id = ?2"
                ),
                params![user_id, project_id],
                |r| {
                    Ok(Membership {
                        project: project_from(r, 0)?,
                        role: role_from(r, 4)?,
                    })
                },
            )
            .optional()?)
        })
        .await
    }

    /// Creates a project with `user_id` as its owner.
    async fn create_project(
        &self,
        user: UserId,
        name: String,
        plan: String,
        actor: Actor,
    ) -> StoreResult<Project> {
        let user_id = user.to_string();
        let clock = self.clock.clone();
        self.call(move |c| {
            let now = clock.now();
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let project = insert_project(&tx, &name, &plan, now)?;
            insert_membership(&tx, &project.id, &user_id, Role::Owner, now)?;
            super::effects::write(&tx, &project_created(&project, &actor), now)?;
            tx.commit()?;
            Ok(project)
        })
        .await
    }

    /// One page of the user's projects with their role, and the total count.
    async fn projects_page(
        &self,
        user: UserId,
        offset: i64,
        limit: i64,
    ) -> StoreResult<(Vec<Membership>, i64)> {
        let user_id = user.to_string();
        self.call(move |c| {
            let total: i64 =
                c.query_row("SELECT count(*) FROM memberships WHERE user_id = ?1", [&user_id], |r| r.get(0))?;
            let mut stmt = c.prepare(&format!(
                "SELECT {PROJECT_COLUMNS}, m.role FROM memberships m JOIN projects p ON p.id = m.project_id
                 WHERE m.user_id = ?1 ORDER BY m.created_at, p.id LIMIT ?2 OFFSET ?3"
            ))?;
            let rows = stmt.query_map(params![user_id, limit, offset], |r| {
                Ok(Membership {
                    project: project_from(r, 0)?,
                    role: role_from(r, 4)?,
                })
            })?;
            Ok((rows.collect::<Result<Vec<_>, _>>()?, total))
        })
        .await
    }

    async fn members_page(
        &self,
        project: ProjectId,
        offset: i64,
        limit: i64,
    ) -> StoreResult<(Vec<Member>, i64)> {
        let project_id = project.to_string();
        self.call(move |c| {
            let total: i64 = c.query_row(
                "SELECT count(*) FROM memberships WHERE project_id = ?1",
                [&project_id],
                |r| r.get(0),
            )?;
            let mut stmt = c.prepare(&format!(
                "SELECT {USER_COLUMNS}, m.role, m.created_at FROM memberships m JOIN users u ON u.id = m.user_id
                 WHERE m.project_id = ?1 ORDER BY m.created_at, u.email LIMIT ?2 OFFSET ?3"
            ))?;
            let rows = stmt.query_map(params![project_id, limit, offset], |r| {
                Ok(Member {
                    user: user_from(r, 0)?,
                    role: role_from(r, 4)?,
                    created_at: r.get(5)?,
                })
            })?;
            Ok((rows.collect::<Result<Vec<_>, _>>()?, total))
        })
        .await
    }

    /// Adds `email` (creating the user if needed) with `role`; `notify` is
    /// queued in the same transaction.
    async fn add_member(
        &self,
        project: ProjectId,
        email: Email,
        role: Role,
        actor_role: Role,
        actor: Actor,
        notify: crate::store::work::Outgoing,
    ) -> StoreResult<Result<Member, MemberChangeError>> {
        let project_id = project.to_string();
        let clock = self.clock.clone();
        self.call(move |c| {
            let now = clock.now();
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if !may_change(actor_role, false, None, Some(role)) {
                return Ok(Err(MemberChangeError::Forbidden));
            }
            let (user, _) = find_or_create_user(&tx, &email, now)?;
            if member_row(&tx, &project_id, &user.id)?.is_some() {
                return Ok(Err(MemberChangeError::AlreadyMember));
            }
            insert_membership(&tx, &project_id, &user.id, role, now)?;
            let member = member_row(&tx, &project_id, &user.id)?.expect("just inserted");
            let effects = member_added(&project_id, &member, &actor, notify);
            super::effects::write(&tx, &effects, now)?;
            tx.commit()?;
            Ok(Ok(member))
        })
        .await
    }

    /// Changes a member's role (`Some`) or removes the member (`None`),
    /// keeping at least one owner.
    async fn change_member(
        &self,
        project: ProjectId,
        user: UserId,
        to: Option<Role>,
        actor_role: Role,
        actor: Actor,
    ) -> StoreResult<Result<Option<Member>, MemberChangeError>> {
        let project_id = project.to_string();
        let user_id = user.to_string();
        let clock = self.clock.clone();
        self.call(move |c| {
            let now = clock.now();
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let Some(current) = member_row(&tx, &project_id, &user_id)? else {
                return Ok(Err(MemberChangeError::NotFound));
            };
            let actor_is_target = actor.id.as_deref() == Some(user_id.as_str());
            if !may_change(actor_role, actor_is_target, Some(current.role), to) {
                return Ok(Err(MemberChangeError::Forbidden));
            }
            let loses_owner = current.role == Role::Owner && to != Some(Role::Owner);
            if loses_owner && owner_count(&tx, &project_id)? <= 1 {
                return Ok(Err(MemberChangeError::LastOwner));
            }
            match to {
                Some(role) => tx.execute(
                    "UPDATE memberships SET role = ?3 WHERE project_id = ?1 AND user_id = ?2",
                    params![project_id, user_id, role.as_str()],
                )?,
                None => tx.execute(
                    "DELETE FROM memberships WHERE project_id = ?1 AND user_id = ?2",
                    params![project_id, user_id],
                )?,
            };
            let effects = member_change_effects(&project_id, &current, to, &actor);
            super::effects::write(&tx, &effects, now)?;
            let after = member_row(&tx, &project_id, &user_id)?;
            tx.commit()?;
            Ok(Ok(after))
        })
        .await
    }

    /// `gatehouse users add`: the user, and optionally a membership in the
    /// project of that name (created when none exists).
    async fn bootstrap_user(
        &self,
        email: Email,
        project: Option<(String, Option<Role>)>,
        plan: String,
    ) -> StoreResult<Result<BootstrapOutcome, String>> {
        let clock = self.clock.clone();
        self.call(move |c| {
            let now = clock.now();
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let (user, user_created) = find_or_create_user(&tx, &email, now)?;
            let mut outcome = BootstrapOutcome {
                user,
                user_created,
                project: None,
                project_created: false,
                role: None,
            };
            if let Some((name, role)) = project {
                let named: Vec<Project> = {
                    let mut stmt = tx.prepare(&format!(
                        "SELECT {PROJECT_COLUMNS} FROM projects p WHERE p.name = ?1"
                    ))?;
                    let rows = stmt.query_map([&name], |r| project_from(r, 0))?;
                    rows.collect::<Result<Vec<_>, _>>()?
                };
                let (project, created) = match bootstrap_project(&name, named) {
                    Ok(Some(p)) => (p, false),
                    Ok(None) => (insert_project(&tx, &name, &plan, now)?, true),
                    Err(why) => return Ok(Err(why)),
                };
                let held = member_row(&tx, &project.id, &outcome.user.id)?.map(|m| m.role);
                let role = match bootstrap_membership(&outcome.user, &project, created, role, held)
                {
                    Ok((role, None)) => role,
                    Ok((role, Some(effects))) => {
                        insert_membership(&tx, &project.id, &outcome.user.id, role, now)?;
                        super::effects::write(&tx, &effects, now)?;
                        role
                    }
                    Err(why) => return Ok(Err(why)),
                };
                outcome.project = Some(project);
                outcome.project_created = created;
                outcome.role = Some(role);
            }
            tx.commit()?;
            Ok(Ok(outcome))
        })
        .await
    }
}
