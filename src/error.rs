//! The one error type of the HTTP surface and its JSON envelope:
//! `{"error": {"code", "message", "request_id"}}`.
//!
//! Handlers return [`ApiError`]; the envelope middleware
//! (`http::envelope`) renders every error response, including the ones actix
//! itself produces (404, 405, 413, extractor failures), so no error can leave
//! the server in another shape.

use std::fmt;

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

/// Every error code Gatehouse answers with (SPEC sections 4 and 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    MissingAuthorization,
    MalformedKey,
    InvalidKey,
    InvalidToken,
    InvalidCode,
    TokenReused,
    Forbidden,
    InsufficientScope,
    CsrfFailed,
    PlanLimit,
    ForbiddenIp,
    RateLimited,
    UsageExceeded,
    QuotaExceeded,
    NotFound,
    MethodNotAllowed,
    ValidationError,
    PayloadTooLarge,
    UnsupportedMediaType,
    BadRequest,
    Conflict,
    ProjectRequired,
    InvalidSignature,
    Unavailable,
    Internal,
}

impl ErrorCode {
    pub fn status(self) -> StatusCode {
        use ErrorCode::*;
        match self {
            MissingAuthorization | MalformedKey | InvalidKey | InvalidToken | InvalidCode
            | TokenReused => StatusCode::UNAUTHORIZED,
            Forbidden | InsufficientScope | CsrfFailed | PlanLimit | ForbiddenIp => {
                StatusCode::FORBIDDEN
            }
            RateLimited | UsageExceeded | QuotaExceeded => StatusCode::TOO_MANY_REQUESTS,
            NotFound => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ValidationError => StatusCode::UNPROCESSABLE_ENTITY,
            PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            BadRequest => StatusCode::BAD_REQUEST,
            Conflict => StatusCode::CONFLICT,
            ProjectRequired | InvalidSignature => StatusCode::BAD_REQUEST,
            Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            MissingAuthorization => "missing_authorization",
            MalformedKey => "malformed_key",
            InvalidKey => "invalid_key",
            InvalidToken => "invalid_token",
            InvalidCode => "invalid_code",
            TokenReused => "token_reused",
            Forbidden => "forbidden",
            InsufficientScope => "insufficient_scope",
            CsrfFailed => "csrf_failed",
            PlanLimit => "plan_limit",
            ForbiddenIp => "forbidden_ip",
            RateLimited => "rate_limited",
            UsageExceeded => "usage_exceeded",
            QuotaExceeded => "quota_exceeded",
            NotFound => "not_found",
            MethodNotAllowed => "method_not_allowed",
            ValidationError => "validation_error",
            PayloadTooLarge => "payload_too_large",
            UnsupportedMediaType => "unsupported_media_type",
            BadRequest => "bad_request",
            Conflict => "conflict",
            ProjectRequired => "project_required",
            InvalidSignature => "invalid_signature",
            Unavailable => "unavailable",
            Internal => "internal",
        }
    }

    /// The message used when nothing more specific is known.
    pub fn default_message(self) -> &'static str {
        use ErrorCode::*;
        match self {
            MissingAuthorization => "No credential was presented.",
            MalformedKey => "The API key is malformed.",
            InvalidKey => "The API key is unknown, revoked or expired.",
            InvalidToken => "The token is unknown, expired or revoked.",
            InvalidCode => "The code is wrong, expired or already used.",
            TokenReused => "This refresh token was already used; the session has been revoked.",
            Forbidden => "You may not do this.",
            InsufficientScope => "The key lacks the scope this needs.",
            CsrfFailed => "The CSRF check failed.",
            PlanLimit => "The project's plan does not allow this.",
            ForbiddenIp => "The key may not be used from this address.",
            RateLimited => "Too many requests; retry later.",
            UsageExceeded => "The key's credits are spent.",
            QuotaExceeded => "The project's monthly verification quota is used up.",
            NotFound => "Not found.",
            MethodNotAllowed => "Method not allowed on this route.",
            ValidationError => "The request is invalid.",
            PayloadTooLarge => "The request body is too large.",
            UnsupportedMediaType => "Unsupported content type; send application/json.",
            BadRequest => "The request is malformed or not allowed from this origin.",
            Conflict => "The request conflicts with the current state.",
            ProjectRequired => "Name the project with the X-Project-Id header.",
            InvalidSignature => "The signature is missing, wrong or stale.",
            Unavailable => "The service is not ready.",
            Internal => "An internal error occurred.",
        }
    }

    /// The code a bare status maps to, for errors actix produces itself.
    pub fn for_status(status: StatusCode) -> ErrorCode {
        match status.as_u16() {
            400 => ErrorCode::BadRequest,
            422 => ErrorCode::ValidationError,
            401 => ErrorCode::MissingAuthorization,
            403 => ErrorCode::Forbidden,
            404 => ErrorCode::NotFound,
            405 => ErrorCode::MethodNotAllowed,
            409 => ErrorCode::Conflict,
            413 => ErrorCode::PayloadTooLarge,
            415 => ErrorCode::UnsupportedMediaType,
            429 => ErrorCode::RateLimited,
            503 => ErrorCode::Unavailable,
            _ => ErrorCode::Internal,
        }
    }
}

/// An error answer: a code, a message safe to show a client, extra headers
/// (`Retry-After`, RateLimit fields) and, for faults, the cause to log.
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    cause: Option<String>,
}

impl ApiError {
    pub fn new(code: ErrorCode) -> Self {
        ApiError {
            code,
            message: code.default_message().to_string(),
            headers: Vec::new(),
            cause: None,
        }
    }

    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn not_found() -> Self {
        Self::new(ErrorCode::NotFound)
    }

    /// 422 naming the field at fault.
    pub fn validation(field: &str, problem: impl fmt::Display) -> Self {
        Self::new(ErrorCode::ValidationError).with_message(format!("{field}: {problem}"))
    }

    /// 500 with an opaque message; the cause goes to the log only.
    pub fn internal(cause: impl fmt::Display) -> Self {
        let mut e = Self::new(ErrorCode::Internal);
        e.cause = Some(cause.to_string());
        e
    }

    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    pub fn cause(&self) -> Option<&str> {
        self.cause.as_deref()
    }
}

impl fmt::Debug for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiError")
            .field("code", &self.code.as_str())
            .field("message", &self.message)
            .field("cause", &self.cause)
            .finish()
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    /// The body is written by the envelope middleware, which knows the
    /// request id; here only the status and headers are set.
    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::new(self.status());
        for (name, value) in &self.headers {
            res.headers_mut().append(name.clone(), value.clone());
        }
        res
    }
}

/// The JSON shape of every error response.
#[derive(Serialize, ToSchema)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// A stable, machine-readable code such as `invalid_key`.
    #[schema(example = "not_found")]
    pub code: String,
    /// A human-readable explanation, safe to show to users.
    pub message: String,
    /// The same value as the `X-Request-Id` response header.
    #[schema(example = "req_3kTq8Z0mP1xW9cVb2nL4")]
    pub request_id: String,
}

pub type ApiResult<T> = Result<T, ApiError>;

/// A storage failure: 503 `unavailable` with `Retry-After` when the
/// database cannot take the work now (nothing was written, and the same
/// request can succeed once it clears), else 500 with the cause logged.
impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::{StoreError, Unavailable};
        let unavailable = |kind: Unavailable| {
            ApiError::new(ErrorCode::Unavailable)
                .with_message(kind.message())
                .with_header(
                    HeaderName::from_static("retry-after"),
                    HeaderValue::from(kind.retry_after_secs()),
                )
        };
        match e {
            StoreError::Unavailable { kind, cause } => {
                let mut err = unavailable(kind);
                err.cause = Some(cause);
                err
            }
            StoreError::Contended => unavailable(Unavailable::Busy),
            StoreError::Internal(cause) => ApiError::internal(cause),
            too_new @ StoreError::TooNew { .. } => ApiError::internal(too_new),
        }
    }
}
