//! JSON shapes shared by several routes, and list pagination (SPEC section 4).

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;
use crate::store::directory::{Member, Membership, Project, User};
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
    #[serde(default, deserialize_with = "query_number")]
    pub page: Option<i64>,
    /// Items per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    #[serde(default, deserialize_with = "query_number")]
    pub limit: Option<i64>,
}

/// A query number as text: a value that is no `i64` (too large, not a
/// number, empty) becomes `i64::MIN`, which every range refuses, so the
/// 422 names the field instead of failing the whole query.
pub fn query_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let raw = String::deserialize(d)?;
    Ok(Some(raw.trim().parse().unwrap_or(i64::MIN)))
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
            return Err(ApiError::validation(
                "page",
                "must be a whole number between 1 and 1000000",
            ));
        }
        if !(1..=100).contains(&limit) {
            return Err(ApiError::validation(
                "limit",
                "must be a whole number between 1 and 100",
            ));
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

/// A request body that must be a JSON object. serde also reads a struct
/// from an array of its fields in order (`["a@b.test"]` for `{"email"}`),
/// which no client means and the document does not allow: that is a 422.
/// Numbers that are whole (`2.0`) are read as the integers they are, as JSON
/// Schema (and so the document) counts them as integers.
pub struct ObjectBody<T>(pub T);

impl<T> ObjectBody<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::ops::Deref for ObjectBody<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<'de, T: serde::de::DeserializeOwned> Deserialize<'de> for ObjectBody<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut fields = serde_json::Map::deserialize(d)
            .map_err(|_| D::Error::custom("the body must be a JSON object"))?;
        fields.values_mut().for_each(whole_numbers_as_integers);
        T::deserialize(serde_json::Value::Object(fields))
            .map(ObjectBody)
            .map_err(D::Error::custom)
    }
}

/// The largest magnitude at which every whole f64 is exact.
const EXACT_F64: f64 = 9_007_199_254_740_992.0;

/// `2.0` as the integer 2, in place and in everything `value` contains.
fn whole_numbers_as_integers(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|_| n.is_f64()) {
                if f.fract() == 0.0 && f.abs() <= EXACT_F64 {
                    *value = serde_json::Value::from(f as i64);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(whole_numbers_as_integers),
        serde_json::Value::Object(fields) => {
            fields.values_mut().for_each(whole_numbers_as_integers)
        }
        _ => {}
    }
}

/// An optional integer that may be written as a whole number (`5.0`), for
/// bodies read without [`ObjectBody`] (the verify hot path).
pub fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    use serde::de::Error;
    match Option::<serde_json::Number>::deserialize(d)? {
        None => Ok(None),
        Some(n) => n
            .as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() <= EXACT_F64)
                    .map(|f| f as i64)
            })
            .map(Some)
            .ok_or_else(|| D::Error::custom(format!("expected an integer, got {n}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Debug, PartialEq)]
    struct Body {
        email: String,
        #[serde(default)]
        cookie: bool,
    }

    #[test]
    fn object_bodies_are_objects_only() {
        let ok: ObjectBody<Body> = serde_json::from_str(r#"{"email": "a@b.test"}"#).unwrap();
        assert_eq!(
            ok.0,
            Body {
                email: "a@b.test".into(),
                cookie: false
            }
        );
        for not_an_object in [r#"["a@b.test", true]"#, "null", "1", r#""x""#] {
            let err = serde_json::from_str::<ObjectBody<Body>>(not_an_object)
                .err()
                .unwrap();
            assert!(
                err.to_string().contains("must be a JSON object"),
                "{not_an_object}: {err}"
            );
        }
        // What serde alone would do.
        assert!(serde_json::from_str::<Body>(r#"["a@b.test", true]"#).is_ok());
        // Field errors still say what is wrong.
        let err = serde_json::from_str::<ObjectBody<Body>>(r#"{"email": 1}"#)
            .err()
            .unwrap();
        assert!(err.to_string().contains("expected a string"), "{err}");
    }

    #[derive(Deserialize, Debug, PartialEq)]
    struct Numbers {
        n: i64,
        items: Vec<u32>,
        #[serde(default, deserialize_with = "whole_number")]
        cost: Option<i64>,
    }

    #[test]
    fn whole_numbers_are_integers() {
        let read: ObjectBody<Numbers> =
            serde_json::from_str(r#"{"n": 5.0, "items": [1.0, 2], "cost": -3.0}"#).unwrap();
        assert_eq!(
            read.0,
            Numbers {
                n: 5,
                items: vec![1, 2],
                cost: Some(-3)
            }
        );
        for fraction in [r#"{"n": 5.5, "items": []}"#, r#"{"n": 1e300, "items": []}"#] {
            assert!(
                serde_json::from_str::<ObjectBody<Numbers>>(fraction).is_err(),
                "{fraction}"
            );
        }
        let plain: Numbers = serde_json::from_str(r#"{"n": 1, "items": [], "cost": 7.0}"#).unwrap();
        assert_eq!(plain.cost, Some(7));
        assert!(serde_json::from_str::<Numbers>(r#"{"n": 1, "items": [], "cost": 7.5}"#).is_err());
        let absent: Numbers =
            serde_json::from_str(r#"{"n": 1, "items": [], "cost": null}"#).unwrap();
        assert_eq!(absent.cost, None);
    }
}
