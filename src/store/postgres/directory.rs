//! Users, projects and memberships in PostgreSQL.

use super::{PgError, PgStore};
use crate::crypto::new_id;
use crate::store::audit::Actor;
use crate::store::directory::{
    bootstrap_membership, bootstrap_project, may_change, member_added, member_change_effects,
    project_created, BootstrapOutcome, DirectoryRepo, Member, MemberChangeError, Membership,
    Project, User,
};
use crate::store::work::Outgoing;
use crate::store::{ProjectId, StoreResult, UserId};
use crate::types::{Email, Role};
use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

pub const USER_COLUMNS: &str = "u.id, u.email, u.full_name, u.created_at";
const PROJECT_COLUMNS: &str = "p.id, p.name, p.plan, p.created_at";

pub fn user_from(r: &Row, at: usize) -> Result<User, PgError> {
    Ok(User {
        id: r.try_get(at)?,
        email: r.try_get(at + 1)?,
        full_name: r.try_get(at + 2)?,
        created_at: r.try_get(at + 3)?,
    })
}

fn project_from(r: &Row, at: usize) -> Result<Project, PgError> {
    Ok(Project {
        id: r.try_get(at)?,
        name: r.try_get(at + 1)?,
        plan: r.try_get(at + 2)?,
        created_at: r.try_get(at + 3)?,
    })
}

fn role_from(r: &Row, at: usize) -> Result<Role, PgError> {
    Role::parse(r.try_get(at)?).ok_or_else(|| PgError::Corrupt("memberships.role".into()))
}

fn membership_from(r: &Row) -> Result<Membership, PgError> {
    Ok(Membership {
        project: project_from(r, 0)?,
        role: role_from(r, 4)?,
    })
}

fn member_from(r: &Row) -> Result<Member, PgError> {
    Ok(Member {
        user: user_from(r, 0)?,
        role: role_from(r, 4)?,
        created_at: r.try_get(5)?,
    })
}

/// Serialises the transactions that concern one name (an address, a
/// client address, a project name) across every node, until the
/// transaction ends. Two names may share a lock (a 64-bit hash); that only
/// makes unrelated requests take turns.
pub async fn lock_name(client: &impl GenericClient, name: &str) -> Result<(), PgError> {
    client
        .execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            &[&name],
        )
        .await?;
    Ok(())
}

pub async fn project(client: &impl GenericClient, id: &str) -> Result<Option<Project>, PgError> {
    client
        .query_opt(
            &format!("SELECT {PROJECT_COLUMNS} FROM projects p WHERE p.id = $1"),
            &[&id],
        )
        .await?
        .map(|r| project_from(&r, 0))
        .transpose()
}

pub async fn find_project(
    client: &impl GenericClient,
    id_or_name: &str,
) -> Result<Result<Project, String>, PgError> {
    let rows = client
        .query(
            &format!(
                "SELECT {PROJECT_COLUMNS} FROM projects p WHERE p.id = $1 OR p.name = $1
                 ORDER BY p.id = $1 DESC, p.id"
            ),
            &[&id_or_name],
        )
        .await?;
    let projects = rows
        .iter()
        .map(|r| project_from(r, 0))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(match projects.as_slice() {
        [] => Err(format!("no project has the id or name {id_or_name:?}")),
        [one, ..] if one.id == id_or_name => Ok(one.clone()),
        [one] => Ok(one.clone()),
        many => Err(format!(
            "{} projects are named {id_or_name:?}; use the project id",
            many.len()
        )),
    })
}

pub async fn find_user_by_email(
    client: &impl GenericClient,
    email: &str,
) -> Result<Option<User>, PgError> {
    client
        .query_opt(
            &format!("SELECT {USER_COLUMNS} FROM users u WHERE u.email = $1"),
            &[&email],
        )
        .await?
        .map(|r| user_from(&r, 0))
        .transpose()
}

/// The user with this address, created if needed (`true` = created). Two
/// nodes creating the same address at once end with one user: the address
/// is unique and the loser reads the winner's row.
pub async fn find_or_create_user(
    client: &impl GenericClient,
    email: &Email,
    now: i64,
) -> Result<(User, bool), PgError> {
    if let Some(user) = find_user_by_email(client, email.as_str()).await? {
        return Ok((user, false));
    }
    let id = new_id("usr");
    let inserted = client
        .execute(
            "INSERT INTO users (id, email, full_name, created_at) VALUES ($1, $2, NULL, $3)
             ON CONFLICT (email) DO NOTHING",
            &[&id, &email.as_str(), &now],
        )
        .await?;
    if inserted == 1 {
        return Ok((
            User {
                id,
                email: email.as_str().to_string(),
                full_name: None,
                created_at: now,
            },
            true,
        ));
    }
    let user = find_user_by_email(client, email.as_str())
        .await?
        .ok_or_else(|| PgError::Corrupt("users.email".into()))?;
    Ok((user, false))
}

pub async fn insert_project(
    client: &impl GenericClient,
    name: &str,
    plan: &str,
    now: i64,
) -> Result<Project, PgError> {
    let project = Project {
        id: new_id("prj"),
        name: name.to_string(),
        plan: plan.to_string(),
        created_at: now,
    };
    client
        .execute(
            "INSERT INTO projects (id, name, plan, created_at) VALUES ($1, $2, $3, $4)",
            &[&project.id, &project.name, &project.plan, &now],
        )
        .await?;
    Ok(project)
}

/// Adds a membership; `false` when the user already is a member.
pub async fn insert_membership(
    client: &impl GenericClient,
    project_id: &str,
    user_id: &str,
    role: Role,
    now: i64,
) -> Result<bool, PgError> {
    let n = client
        .execute(
            "INSERT INTO memberships (project_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (project_id, user_id) DO NOTHING",
            &[&project_id, &user_id, &role.as_str(), &now],
        )
        .await?;
    Ok(n == 1)
}

pub async fn memberships_of(
    client: &impl GenericClient,
    user_id: &str,
) -> Result<Vec<Membership>, PgError> {
    client
        .query(
            &format!(
                "SELECT {PROJECT_COLUMNS}, m.role FROM memberships m JOIN projects p ON p.id = m.project_id
                 WHERE m.user_id = $1 ORDER BY m.created_at, p.id"
            ),
            &[&user_id],
        )
        .await?
        .iter()
        .map(membership_from)
        .collect()
}

pub async fn member_row(
    client: &impl GenericClient,
    project_id: &str,
    user_id: &str,
) -> Result<Option<Member>, PgError> {
    client
        .query_opt(
            &format!(
                "SELECT {USER_COLUMNS}, m.role, m.created_at FROM memberships m JOIN users u ON u.id = m.user_id
                 WHERE m.project_id = $1 AND m.user_id = $2"
            ),
            &[&project_id, &user_id],
        )
        .await?
        .as_ref()
        .map(member_from)
        .transpose()
}

pub async fn project_role(
    client: &impl GenericClient,
    user_id: &str,
    project_id: &str,
) -> Result<Option<Membership>, PgError> {
    client
        .query_opt(
            &format!(
                "SELECT {PROJECT_COLUMNS}, m.role FROM memberships m JOIN projects p ON p.id = m.project_id
                 WHERE m.user_id = $1 AND m.project_id = $2"
            ),
            &[&user_id, &project_id],
        )
        .await?
        .as_ref()
        .map(membership_from)
        .transpose()
}

pub async fn create_project(
    client: &mut deadpool_postgres::Client,
    owner: &str,
    name: &str,
    plan: &str,
    actor: &Actor,
    now: i64,
) -> Result<Project, PgError> {
    let tx = client.transaction().await?;
    let project = insert_project(&tx, name, plan, now).await?;
    insert_membership(&tx, &project.id, owner, Role::Owner, now).await?;
    super::effects::write(&tx, &project_created(&project, actor), now).await?;
    tx.commit().await?;
    Ok(project)
}

pub async fn projects_page(
    client: &impl GenericClient,
    user_id: &str,
    offset: i64,
    limit: i64,
) -> Result<(Vec<Membership>, i64), PgError> {
    let total: i64 = client
        .query_one(
            "SELECT count(*) FROM memberships WHERE user_id = $1",
            &[&user_id],
        )
        .await?
        .try_get(0)?;
    let rows = client
        .query(
            &format!(
                "SELECT {PROJECT_COLUMNS}, m.role FROM memberships m JOIN projects p ON p.id = m.project_id
                 WHERE m.user_id = $1 ORDER BY m.created_at, p.id LIMIT $2 OFFSET $3"
            ),
            &[&user_id, &limit, &offset],
        )
        .await?;
    Ok((
        rows.iter().map(membership_from).collect::<Result<_, _>>()?,
        total,
    ))
}

pub async fn members_page(
    client: &impl GenericClient,
    project_id: &str,
    offset: i64,
    limit: i64,
) -> Result<(Vec<Member>, i64), PgError> {
    let total: i64 = client
        .query_one(
            "SELECT count(*) FROM memberships WHERE project_id = $1",
            &[&project_id],
        )
        .await?
        .try_get(0)?;
    let rows = client
        .query(
            &format!(
                "SELECT {USER_COLUMNS}, m.role, m.created_at FROM memberships m JOIN users u ON u.id = m.user_id
                 WHERE m.project_id = $1 ORDER BY m.created_at, u.email LIMIT $2 OFFSET $3"
            ),
            &[&project_id, &limit, &offset],
        )
        .await?;
    Ok((
        rows.iter().map(member_from).collect::<Result<_, _>>()?,
        total,
    ))
}

#[allow(clippy::too_many_arguments)]
pub async fn add_member(
    client: &mut deadpool_postgres::Client,
    project_id: &str,
    email: &Email,
    role: Role,
    actor_role: Role,
    actor: &Actor,
    notify: &Outgoing,
    now: i64,
) -> Result<Result<Member, MemberChangeError>, PgError> {
    if !may_change(actor_role, false, None, Some(role)) {
        return Ok(Err(MemberChangeError::Forbidden));
    }
    let tx = client.transaction().await?;
    let (user, _) = find_or_create_user(&tx, email, now).await?;
    if !insert_membership(&tx, project_id, &user.id, role, now).await? {
        return Ok(Err(MemberChangeError::AlreadyMember));
    }
    let member = member_row(&tx, project_id, &user.id)
        .await?
        .ok_or_else(|| PgError::Corrupt("memberships".into()))?;
    let effects = member_added(project_id, &member, actor, notify.clone());
    super::effects::write(&tx, &effects, now).await?;
    tx.commit().await?;
    Ok(Ok(member))
}

/// `gatehouse users add`. Runs under an advisory lock on the project name,
/// so two runs naming a new project at once create it once.
pub async fn bootstrap_user(
    client: &mut deadpool_postgres::Client,
    email: &Email,
    project: Option<(String, Option<Role>)>,
    plan: &str,
    now: i64,
) -> Result<Result<BootstrapOutcome, String>, PgError> {
    let tx = client.transaction().await?;
    let (user, user_created) = find_or_create_user(&tx, email, now).await?;
    let mut outcome = BootstrapOutcome {
        user,
        user_created,
        project: None,
        project_created: false,
        role: None,
    };
    if let Some((name, role)) = project {
        lock_name(&tx, &format!("gatehouse:project-name:{name}")).await?;
        let rows = tx
            .query(
                &format!("SELECT {PROJECT_COLUMNS} FROM projects p WHERE p.name = $1"),
                &[&name],
            )
            .await?;
        let named = rows
            .iter()
            .map(|r| project_from(r, 0))
            .collect::<Result<Vec<_>, _>>()?;
        let (project, created) = match bootstrap_project(&name, named) {
            Ok(Some(p)) => (p, false),
            Ok(None) => (insert_project(&tx, &name, plan, now).await?, true),
            Err(why) => return Ok(Err(why)),
        };
        let held = member_row(&tx, &project.id, &outcome.user.id)
            .await?
            .map(|m| m.role);
        let role = match bootstrap_membership(&outcome.user, &project, created, role, held) {
            Ok((role, None)) => role,
            Ok((role, Some(effects))) => {
                insert_membership(&tx, &project.id, &outcome.user.id, role, now).await?;
                super::effects::write(&tx, &effects, now).await?;
                role
            }
            Err(why) => return Ok(Err(why)),
        };
        outcome.project = Some(project);
        outcome.project_created = created;
        outcome.role = Some(role);
    }
    tx.commit().await?;
    Ok(Ok(outcome))
}

#[async_trait]
impl DirectoryRepo for PgStore {
    async fn find_project(&self, id_or_name: String) -> StoreResult<Result<Project, String>> {
        let client = self.client().await?;
        Ok(find_project(&client, &id_or_name).await?)
    }

    async fn memberships(&self, user: UserId) -> StoreResult<Vec<Membership>> {
        let client = self.client().await?;
        Ok(memberships_of(&client, user.as_str()).await?)
    }

    async fn project_role(
        &self,
        user: UserId,
        project: ProjectId,
    ) -> StoreResult<Option<Membership>> {
        let client = self.client().await?;
        Ok(project_role(&client, user.as_str(), project.as_str()).await?)
    }

    async fn create_project(
        &self,
        owner: UserId,
        name: String,
        plan: String,
        actor: Actor,
    ) -> StoreResult<Project> {
        let mut client = self.client().await?;
        Ok(create_project(
            &mut client,
            owner.as_str(),
            &name,
            &plan,
            &actor,
            self.clock.now(),
        )
        .await?)
    }

    async fn projects_page(
        &self,
        user: UserId,
        offset: i64,
        limit: i64,
    ) -> StoreResult<(Vec<Membership>, i64)> {
        let client = self.client().await?;
        Ok(projects_page(&client, user.as_str(), offset, limit).await?)
    }

    async fn members_page(
        &self,
        project: ProjectId,
        offset: i64,
        limit: i64,
    ) -> StoreResult<(Vec<Member>, i64)> {
        let client = self.client().await?;
        Ok(members_page(&client, project.as_str(), offset, limit).await?)
    }

    async fn add_member(
        &self,
        project: ProjectId,
        email: Email,
        role: Role,
        actor_role: Role,
        actor: Actor,
        notify: Outgoing,
    ) -> StoreResult<Result<Member, MemberChangeError>> {
        let mut client = self.client().await?;
        Ok(add_member(
            &mut client,
            project.as_str(),
            &email,
            role,
            actor_role,
            &actor,
            &notify,
            self.clock.now(),
        )
        .await?)
    }

    async fn bootstrap_user(
        &self,
        email: Email,
        project: Option<(String, Option<Role>)>,
        plan: String,
    ) -> StoreResult<Result<BootstrapOutcome, String>> {
        let mut client = self.client().await?;
        Ok(bootstrap_user(&mut client, &email, project, &plan, self.clock.now()).await?)
    }

    async fn project(&self, id: ProjectId) -> StoreResult<Option<Project>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT id, name, plan, created_at FROM projects WHERE id = $1",
                &[&id.as_str()],
            )
            .await
            .map_err(PgError::from)?;
        Ok(row
            .map(|r| -> Result<Project, PgError> {
                Ok(Project {
                    id: r.try_get(0)?,
                    name: r.try_get(1)?,
                    plan: r.try_get(2)?,
                    created_at: r.try_get(3)?,
                })
            })
            .transpose()?)
    }

    /// The last-owner rule holds across nodes: every membership row of
    /// the project is locked before the owners are counted, so two
    /// demotions (or removals) of the last two owners take turns and the
    /// second sees one owner left.
    async fn change_member(
        &self,
        project: ProjectId,
        user: UserId,
        to: Option<Role>,
        actor_role: Role,
        actor: Actor,
    ) -> StoreResult<Result<Option<Member>, MemberChangeError>> {
        let now = self.clock.now();
        let mut client = self.client().await?;
        let run = async {
            let tx = client.transaction().await?;
            let roles = tx
                .query(
                    "SELECT user_id, role FROM memberships WHERE project_id = $1 FOR UPDATE",
                    &[&project.as_str()],
                )
                .await?;
            let owners = roles
                .iter()
                .filter(|r| r.get::<_, &str>(1) == "owner")
                .count();
            let row = tx
                .query_opt(
                    "SELECT u.id, u.email, u.full_name, u.created_at, m.role, m.created_at
                     FROM memberships m JOIN users u ON u.id = m.user_id
                     WHERE m.project_id = $1 AND m.user_id = $2",
                    &[&project.as_str(), &user.as_str()],
                )
                .await?;
            let Some(row) = row else {
                return Ok(Err(MemberChangeError::NotFound));
            };
            let current = Member {
                user: User {
                    id: row.try_get(0)?,
                    email: row.try_get(1)?,
                    full_name: row.try_get(2)?,
                    created_at: row.try_get(3)?,
                },
                role: Role::parse(row.try_get(4)?)
                    .ok_or_else(|| PgError::Corrupt("memberships.role".into()))?,
                created_at: row.try_get(5)?,
            };
            let actor_is_target = actor.id.as_deref() == Some(user.as_str());
            if !may_change(actor_role, actor_is_target, Some(current.role), to) {
                return Ok(Err(MemberChangeError::Forbidden));
            }
            if current.role == Role::Owner && to != Some(Role::Owner) && owners <= 1 {
                return Ok(Err(MemberChangeError::LastOwner));
            }
            match to {
                Some(role) => {
                    tx.execute(
                        "UPDATE memberships SET role = $3 WHERE project_id = $1 AND user_id = $2",
                        &[&project.as_str(), &user.as_str(), &role.as_str()],
                    )
                    .await?
                }
                None => {
                    tx.execute(
                        "DELETE FROM memberships WHERE project_id = $1 AND user_id = $2",
                        &[&project.as_str(), &user.as_str()],
                    )
                    .await?
                }
            };
            let effects_of = member_change_effects(project.as_str(), &current, to, &actor);
            super::effects::write(&tx, &effects_of, now).await?;
            tx.commit().await?;
            Ok::<_, PgError>(Ok(to.map(|role| Member { role, ..current })))
        };
        Ok(run.await?)
    }
}
