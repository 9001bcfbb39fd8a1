//! JSON shapes shared by several routes, and list pagination (SPEC section 4).

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::db::users::{Member, Membership, Project, User};
use crate::error::ApiError;
use crate::types::{rfc3339, Role};

#[derive(Serialize, ToSchema)]
pub struct UserView {
    pub id: String,
    pub email: String,
    pub full_name: Option<String>,
    /// RFC 3339, UTC.
    pub created_at: String,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        UserView {
            id: u.id.clone(),
            email: u.email.clone(),
            full_name: u.full_name.clone(),
            created_at: rfc3339(u.created_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ProjectView {
    pub id: String,
    pub name: String,
    pub plan: String,
    pub created_at: String,
}

impl From<&Project> for ProjectView {
    fn from(p: &Project) -> Self {
        ProjectView {
            id: p.id.clone(),
            name: p.name.clone(),
            plan: p.plan.clone(),
            created_at: rfc3339(p.created_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct MembershipView {
    pub project: ProjectView,
    pub role: Role,
}

impl From<&Membership> for MembershipView {
    fn from(m: &Membership) -> Self {
        MembershipView {
            project: (&m.project).into(),
            role: m.role,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct MemberView {
    pub user: UserView,
    pub role: Role,
    /// When the user joined the project.
    pub created_at: String,
}

impl From<&Member> for MemberView {
    fn from(m: &Member) -> Self {
        MemberView {
            user: (&m.user).into(),
            role: m.role,
            created_at: rfc3339(m.created_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct Pagination {
    pub page: i64,
    pub limit: i64,
    pub total: i64,
    pub pages: i64,
}

/// `?page` (default 1, min 1) and `?limit` (default 20, 1..=100).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// From 1 (default 1).
    #[param(minimum = 1, maximum = 1000000)]
    pub page: Option<i64>,
    /// Items per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
}

#[derive(Clone, Copy, Debug)]
pub struct Paging {
    pub page: i64,
    pub limit: i64,
}

impl PageQuery {
    pub fn paging(&self) -> Result<Paging, ApiError> {
        let page = self.page.unwrap_or(1);
        let limit = self.limit.unwrap_or(20);
        if !(1..=1_000_000).contains(&page) {
            return Err(ApiError::validation("page", "must be at least 1"));
        }
        if !(1..=100).contains(&limit) {
            return Err(ApiError::validation("limit", "must be between 1 and 100"));
        }
        Ok(Paging { page, limit })
    }
}

impl Paging {
    pub fn offset(&self) -> i64 {
        (self.page - 1) * self.limit
    }
    pub fn describe(&self, total: i64) -> Pagination {
        Pagination {
            page: self.page,
            limit: self.limit,
            total,
            pages: (total + self.limit - 1) / self.limit,
        }
    }
}

/// Marks an answer that carries tokens or keys as not to be stored by any cache.
pub fn no_store(mut res: actix_web::HttpResponse) -> actix_web::HttpResponse {
    res.headers_mut().insert(
        actix_web::http::header::CACHE_CONTROL,
        actix_web::http::header::HeaderValue::from_static("no-store"),
    );
    res
}

/// An empty JSON object, `{}`.
#[derive(Serialize, ToSchema)]
pub struct Empty {}

/// The `X-Project-Id` header, for the OpenAPI document (the project is
/// resolved by the `ProjectAccess` extractor).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Header)]
pub struct ProjectHeader {
    /// The project a session acts on; optional when the user belongs to
    /// exactly one project (else 400 `project_required`). A project the user
    /// is not a member of is 404. API keys always act on their own project.
    #[serde(rename = "X-Project-Id")]
    #[param(max_length = 64)]
    pub project_id: Option<String>,
}
