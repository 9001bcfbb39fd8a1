//! The admin UI: static files from `assets/`, embedded in the binary, served
//! with their content type, an `ETag` and `Cache-Control: no-cache` (files
//! are not fingerprinted, so browsers revalidate; unchanged files cost a 304).
//!
//! The UI is a single page (`index.html` plus ES modules) that routes on the
//! path; every page path below serves that shell. `GET /` sends a browser
//! with a session cookie to the keys page and anyone else to the login page.
//!
//! Branding (`[ui]`, [`branding`]): the pages carry the product name
//! (`{{product_name}}` in the HTML), `/branding/theme.css` the accent
//! colour of both themes, and `/branding/logo` the logo read at start.
//!
//! `GET /docs` is the API reference: `docs.html` and its own modules, which
//! render the server's OpenAPI document (`/api/v1/openapi.json`) in the
//! browser, under the same Content-Security-Policy as the UI.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};
use rust_embed::RustEmbed;

pub mod branding;

use crate::error::ApiError;
use crate::state::AppState;

#[derive(RustEmbed)]
#[folder = "assets/"]
struct Assets;

/// Paths of the UI's pages; each serves the application shell.
pub const PAGES: &[&str] = &[
    "/login",
    "/keys",
    "/members",
    "/usage",
    "/audit",
    "/webhooks",
    "/billing",
    "/projects",
    "/dev/mailbox",
];

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/").route(web::get().to(root)));
    cfg.service(web::resource("/docs").route(web::get().to(api_reference)));
    for page in PAGES {
        if *page == MAILBOX_PAGE {
            cfg.service(web::resource(*page).route(web::get().to(mailbox_page)));
        } else {
            cfg.service(web::resource(*page).route(web::get().to(shell)));
        }
    }
    // A key's own page.
    cfg.service(web::resource(KEY_PAGE).route(web::get().to(shell)));
    cfg.service(web::resource("/assets/{file:.+}").route(web::get().to(asset)));
    cfg.service(web::resource("/branding/theme.css").route(web::get().to(theme_css)));
    cfg.service(web::resource("/branding/logo").route(web::get().to(logo)));
}

/// `/`: the dashboard (keys) with a session cookie, else the login page.
async fn root(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let names = crate::auth::cookies::names(state.https);
    let has_session = [names.access, names.refresh]
        .iter()
        .any(|n| req.cookie(n).is_some_and(|c| !c.value().is_empty()));
    let to = if has_session { "/keys" } else { "/login" };
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

/// A key's own page (`/keys/key_...`): the same shell.
pub const KEY_PAGE: &str = "/keys/{id}";

/// The mailbox page holds login codes: the same rule as its API (404
/// outside local mode, only direct requests on this machine).
pub const MAILBOX_PAGE: &str = "/dev/mailbox";

async fn mailbox_page(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    crate::routes::dev::require_mailbox_access(&req, &state)?;
    page(&req, &state, "index.html")
}

async fn shell(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    page(&req, &state, "index.html")
}

/// `/docs`: the API reference page.
async fn api_reference(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    page(&req, &state, "docs.html")
}

/// An HTML page with the product name put in.
fn page(req: &HttpRequest, state: &AppState, path: &str) -> Result<HttpResponse, ApiError> {
    let file = Assets::get(path).ok_or_else(ApiError::not_found)?;
    let html = String::from_utf8_lossy(&file.data);
    let body = state.branding.render_page(&html).into_bytes();
    Ok(respond(req, body, "text/html; charset=utf-8"))
}

async fn theme_css(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    respond(
        &req,
        state.branding.theme_css.clone().into_bytes(),
        "text/css; charset=utf-8",
    )
}

/// The logo: the team's own (`ui.logo_file`), else the built-in mark. An
/// SVG is served as an image under the same CSP as every page, so any
/// script in it cannot run even when it is opened directly.
async fn logo(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    respond(
        &req,
        state.branding.logo.clone(),
        state.branding.logo_content_type,
    )
}

async fn asset(req: HttpRequest, file: web::Path<String>) -> Result<HttpResponse, ApiError> {
    // Pages are served at their own paths only.
    if file.ends_with(".html") {
        return Err(ApiError::not_found());
    }
    serve(&req, &file)
}

fn serve(req: &HttpRequest, path: &str) -> Result<HttpResponse, ApiError> {
    let file = Assets::get(path).ok_or_else(ApiError::not_found)?;
    let mime = file.metadata.mimetype();
    let content_type = if mime.starts_with("text/") || mime.contains("javascript") {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_string()
    };
    Ok(respond(req, file.data.into_owned(), &content_type))
}

/// `body` with its content type, an `ETag` of its content and
/// `Cache-Control: no-cache`; a 304 when the browser has it already.
fn respond(req: &HttpRequest, body: Vec<u8>, content_type: &str) -> HttpResponse {
    let digest = ring::digest::digest(&ring::digest::SHA256, &body);
    let etag = format!("\"{}\"", hex(&digest.as_ref()[..16]));
    let not_modified = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut res = if not_modified {
        HttpResponse::NotModified().finish()
    } else {
        HttpResponse::Ok().body(body)
    };
    let headers = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(content_type) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, v);
    }
    res
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
