//! Extractor configuration: every way a request can fail to parse becomes an
//! [`ApiError`] (422 naming the field, 413, 415), never actix's plain text.

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::{web, HttpRequest};

use crate::error::{ApiError, ErrorCode};

pub fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .error_handler(|err, _req: &HttpRequest| json_error(err).into())
}

fn json_error(err: JsonPayloadError) -> ApiError {
    match err {
        JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
            ApiError::new(ErrorCode::PayloadTooLarge)
        }
        JsonPayloadError::ContentType => ApiError::new(ErrorCode::UnsupportedMediaType),
        JsonPayloadError::Deserialize(e) => {
            let message = if e.is_data() {
                format!("body: {e}")
            } else {
                format!("body is not valid JSON: {e}")
            };
            ApiError::new(ErrorCode::ValidationError).with_message(message)
        }
        JsonPayloadError::Payload(actix_web::error::PayloadError::Overflow) => {
            ApiError::new(ErrorCode::PayloadTooLarge)
        }
        other => ApiError::new(ErrorCode::ValidationError)
            .with_message(format!("body could not be read: {other}")),
    }
}

pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err, _req| {
        let message = match err {
            QueryPayloadError::Deserialize(e) => format!("query: {e}"),
            other => format!("query: {other}"),
        };
        ApiError::new(ErrorCode::ValidationError)
            .with_message(message)
            .into()
    })
}

/// A path segment that does not parse names nothing that exists.
pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|_err: PathError, _req| ApiError::not_found().into())
}

pub fn payload_config(limit: usize) -> web::PayloadConfig {
    web::PayloadConfig::new(limit)
}

/// The token of an `Authorization: Bearer <token>` header, if any.
pub fn bearer_token(headers: &actix_web::http::header::HeaderMap) -> Option<&str> {
    let value = headers
        .get(actix_web::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Parses a JSON body read as bytes, with the same answers as the JSON
/// extractor (415 without a JSON content type, 422 naming the problem), for
/// handlers on the hot path that skip the extractor's media-type parsing.
pub fn parse_json<'a, T: serde::Deserialize<'a>>(
    req: &HttpRequest,
    body: &'a [u8],
) -> Result<T, ApiError> {
    let is_json = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_json_media_type);
    if !is_json {
        return Err(ApiError::new(ErrorCode::UnsupportedMediaType));
    }
    serde_json::from_slice(body).map_err(|e| json_error(JsonPayloadError::Deserialize(e)))
}

/// Whether a `Content-Type` value names JSON (`application/json` or
/// `application/*+json`, any case, parameters ignored), without allocating.
fn is_json_media_type(value: &str) -> bool {
    let m = value.split(';').next().unwrap_or("").trim().as_bytes();
    const APP: &[u8] = b"application/";
    const JSON: &[u8] = b"+json";
    m.eq_ignore_ascii_case(b"application/json")
        || (m.len() >= APP.len()
            && m[..APP.len()].eq_ignore_ascii_case(APP)
            && m.len() >= JSON.len()
            && m[m.len() - JSON.len()..].eq_ignore_ascii_case(JSON))
}

#[cfg(test)]
mod tests {
    use super::is_json_media_type;

    #[test]
    fn json_media_types() {
        for yes in [
            "application/json",
            "Application/JSON; charset=utf-8",
            " application/json ",
            "application/problem+json",
            "APPLICATION/VND.API+JSON;v=1",
        ] {
            assert!(is_json_media_type(yes), "{yes}");
        }
        for no in [
            "",
            "text/json",
            "application/jsonx",
            "application/",
            "application/xml",
            "text/plain+json",
            "json",
        ] {
            assert!(!is_json_media_type(no), "{no}");
        }
    }
}
