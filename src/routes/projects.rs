//! Projects (SPEC section 7): list the caller's projects, create one.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, ErrorEnvelope};
use crate::http::RequestContext;
use crate::routes::views::{ObjectBody, PageQuery, Pagination, ProjectView};
use crate::state::AppState;
use crate::types::{Name, Role};

#[derive(Deserialize, ToSchema)]
pub struct CreateProjectBody {
    /// 1-100 characters (trimmed), no control characters.
    #[schema(example = "Acme API")]
    pub name: String,
}

#[derive(Serialize, ToSchema)]
pub struct ProjectItem {
    #[serde(flatten)]
    pub project: ProjectView,
    /// The caller's role in it.
    pub role: Role,
}

#[derive(Serialize, ToSchema)]
pub struct ProjectList {
    pub items: Vec<ProjectItem>,
    pub pagination: Pagination,
}

/// The projects the caller belongs to, with the caller's role.
#[utoipa::path(get, path = "/api/v1/projects", tag = "projects", operation_id = "listProjects",
    params(PageQuery),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "One page of projects", body = ProjectList),
        (status = 401, description = "Not authenticated", body = ErrorEnvelope),
        (status = 403, description = "API keys cannot list projects", body = ErrorEnvelope)))]
pub async fn list(
    state: web::Data<AppState>,
    principal: Principal,
    query: web::Query<PageQuery>,
) -> ApiResult<HttpResponse> {
    let user = &principal.session()?.user;
    let paging = query.paging()?;
    let (rows, total) = state
        .store
        .projects_page(user.id.clone().into(), paging.offset(), paging.limit)
        .await?;
    Ok(HttpResponse::Ok().json(ProjectList {
        items: rows
            .iter()
            .map(|m| ProjectItem {
                project: (&m.project).into(),
                role: m.role,
            })
            .collect(),
        pagination: paging.describe(total),
    }))
}

/// Create a project; the caller becomes its owner.
#[utoipa::path(post, path = "/api/v1/projects", tag = "projects", operation_id = "createProject",
    request_body = CreateProjectBody,
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 201, description = "Created", body = ProjectItem, links(
            ("ListMembers" = (operation_id = "listMembers", parameters(("X-Project-Id" = "$response.body#/id")),
                description = "The new project's members: the caller, as owner")),
            ("AddMember" = (operation_id = "addMember", parameters(("X-Project-Id" = "$response.body#/id")))),
            ("ListApiKeys" = (operation_id = "listApiKeys", parameters(("X-Project-Id" = "$response.body#/id")))),
            ("CreateApiKey" = (operation_id = "createApiKey", parameters(("X-Project-Id" = "$response.body#/id")))),
            ("ListWebhooks" = (operation_id = "listWebhooks", parameters(("X-Project-Id" = "$response.body#/id")))),
            ("GetBilling" = (operation_id = "getBilling", parameters(("X-Project-Id" = "$response.body#/id")))))),
        (status = 401, description = "Not authenticated", body = ErrorEnvelope),
        (status = 422, description = "Invalid name", body = ErrorEnvelope)))]
pub async fn create(
    state: web::Data<AppState>,
    ctx: RequestContext,
    principal: Principal,
    body: web::Json<ObjectBody<CreateProjectBody>>,
) -> ApiResult<HttpResponse> {
    let user = &principal.session()?.user;
    let name = Name::parse(&body.name).map_err(|why| ApiError::validation("name", why))?;
    let project = state
        .store
        .create_project(
            user.id.clone().into(),
            name.as_str().to_string(),
            state.config.billing.default_plan.clone(),
            principal.actor(&ctx),
        )
        .await?;
    Ok(HttpResponse::Created().json(ProjectItem {
        project: (&project).into(),
        role: Role::Owner,
    }))
}
