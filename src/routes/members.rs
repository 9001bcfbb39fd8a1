//! Members of the current project (SPEC section 7). Owners and admins add
//! and remove members (admins cannot grant or remove owners), owners change
//! roles, and the last owner can be neither removed nor demoted.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::ProjectAccess;
use crate::error::{ApiError, ApiResult, ErrorCode, ErrorEnvelope};
use crate::http::RequestContext;
use crate::routes::views::{Empty, MemberView, ObjectBody, PageQuery, Pagination, ProjectHeader};
use crate::state::AppState;
use crate::store::directory::MemberChangeError;
use crate::store::{ProjectId, UserId};
use crate::types::PathId;
use crate::types::{Email, Role};

#[derive(Deserialize, ToSchema)]
pub struct AddMemberBody {
    #[schema(format = Email, max_length = 254)]
    pub email: String,
    pub role: Role,
}

#[derive(Deserialize, ToSchema)]
pub struct ChangeRoleBody {
    pub role: Role,
}

#[derive(Serialize, ToSchema)]
pub struct MemberList {
    pub items: Vec<MemberView>,
    pub pagination: Pagination,
}

fn refused(e: MemberChangeError) -> ApiError {
    match e {
        MemberChangeError::NotFound => ApiError::not_found().with_message("No such member."),
        MemberChangeError::AlreadyMember => {
            ApiError::new(ErrorCode::Conflict).with_message("That user is already a member.")
        }
        MemberChangeError::LastOwner => ApiError::new(ErrorCode::Conflict)
            .with_message("A project needs at least one owner; make someone else owner first."),
        MemberChangeError::Forbidden => ApiError::new(ErrorCode::Forbidden)
            .with_message("Your role does not allow this change."),
    }
}

/// The project's members.
#[utoipa::path(get, path = "/api/v1/members", tag = "members", operation_id = "listMembers",
    params(PageQuery, ProjectHeader),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "One page of members", body = MemberList),
        (status = 400, description = "project_required", body = ErrorEnvelope),
        (status = 404, description = "Not a member of that project", body = ErrorEnvelope)))]
pub async fn list(
    state: web::Data<AppState>,
    access: ProjectAccess,
    query: web::Query<PageQuery>,
) -> ApiResult<HttpResponse> {
    access.session_role()?;
    let paging = query.paging()?;
    let (rows, total) = state
        .store
        .members_page(
            access.project.id.clone().into(),
            paging.offset(),
            paging.limit,
        )
        .await?;
    Ok(HttpResponse::Ok().json(MemberList {
        items: rows.iter().map(Into::into).collect(),
        pagination: paging.describe(total),
    }))
}

/// Add a member by email (owner/admin; admins cannot grant owner). The
/// person gets an email and logs in with a code.
#[utoipa::path(post, path = "/api/v1/members", tag = "members", operation_id = "addMember",
    request_body = AddMemberBody,
    params(ProjectHeader),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 201, description = "Added", body = MemberView, links(
            ("UpdateMemberRole" = (operation_id = "updateMemberRole", parameters(("user_id" = "$response.body#/user/id")))),
            ("RemoveMember" = (operation_id = "removeMember", parameters(("user_id" = "$response.body#/user/id")))))),
        (status = 403, description = "forbidden", body = ErrorEnvelope),
        (status = 409, description = "Already a member", body = ErrorEnvelope),
        (status = 422, description = "Invalid email or role", body = ErrorEnvelope)))]
pub async fn add(
    state: web::Data<AppState>,
    ctx: RequestContext,
    access: ProjectAccess,
    body: web::Json<ObjectBody<AddMemberBody>>,
) -> ApiResult<HttpResponse> {
    access.require(Role::Admin)?;
    let email = Email::parse(&body.email).map_err(|why| ApiError::validation("email", why))?;
    let inviter = access.principal.session()?.user.email.clone();
    let notice = state.mailer.member_added(
        &email,
        &access.project.name,
        &inviter,
        body.role.as_str(),
        state.store.clock().now(),
    );
    let member = state
        .store
        .add_member(
            access.project.id.clone().into(),
            email,
            body.role,
            access.session_role()?,
            access.principal.actor(&ctx),
            notice.clone(),
        )
        .await?
        .map_err(refused)?;
    state.mailer.queued(&notice);
    Ok(HttpResponse::Created().json(MemberView::from(&member)))
}

/// Change a member's role (owner only).
#[utoipa::path(patch, path = "/api/v1/members/{user_id}", tag = "members", operation_id = "updateMemberRole",
    request_body = ChangeRoleBody,
    params(("user_id" = String, Path, description = "The member's user id (`usr_...`)"), ProjectHeader),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "Changed", body = MemberView, links(
            ("RemoveMember" = (operation_id = "removeMember", parameters(("user_id" = "$response.body#/user/id")))))),
        (status = 403, description = "forbidden", body = ErrorEnvelope),
        (status = 404, description = "No such member", body = ErrorEnvelope),
        (status = 409, description = "The last owner cannot be demoted", body = ErrorEnvelope)))]
pub async fn change(
    state: web::Data<AppState>,
    ctx: RequestContext,
    access: ProjectAccess,
    user_id: web::Path<PathId>,
    body: web::Json<ObjectBody<ChangeRoleBody>>,
) -> ApiResult<HttpResponse> {
    access.require(Role::Owner)?;
    let member = state
        .store
        .change_member(
            ProjectId::from(access.project.id.as_str()),
            UserId::from(user_id.into_inner().into_string()),
            Some(body.role),
            access.session_role()?,
            access.principal.actor(&ctx),
        )
        .await?
        .map_err(refused)?
        .ok_or_else(|| ApiError::internal("member vanished after a role change"))?;
    Ok(HttpResponse::Ok().json(MemberView::from(&member)))
}

/// Remove a member (owner/admin; anyone may leave). The last owner cannot be removed.
#[utoipa::path(delete, path = "/api/v1/members/{user_id}", tag = "members", operation_id = "removeMember",
    params(("user_id" = String, Path, description = "The member's user id (`usr_...`)"), ProjectHeader),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "Removed", body = Empty),
        (status = 403, description = "forbidden", body = ErrorEnvelope),
        (status = 404, description = "No such member", body = ErrorEnvelope),
        (status = 409, description = "The last owner cannot be removed", body = ErrorEnvelope)))]
pub async fn remove(
    state: web::Data<AppState>,
    ctx: RequestContext,
    access: ProjectAccess,
    user_id: web::Path<PathId>,
) -> ApiResult<HttpResponse> {
    state
        .store
        .change_member(
            ProjectId::from(access.project.id.as_str()),
            UserId::from(user_id.into_inner().into_string()),
            None,
            access.session_role()?,
            access.principal.actor(&ctx),
        )
        .await?
        .map_err(refused)?;
    Ok(HttpResponse::Ok().json(Empty {}))
}
