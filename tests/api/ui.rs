//! The admin UI: the shell and its assets under the Content-Security-Policy,
//! the session rules the UI relies on, and the whole UI driven in a real
//! headless Chromium (tests/ui/admin.mjs, playwright-core with Debian's
//! /usr/bin/chromium). The browser test is skipped when node,
//! tests/ui/node_modules or Chromium is missing, unless GATEHOUSE_REQUIRE_E2E
//! is set (as in CI). It checks every page with axe-core (pinned in
//! tests/ui/package.json) and for horizontal overflow at 1280, 390 and 360 px
//! wide, light and dark (tests/ui/a11y.mjs). Screenshots land in
//! target/ui-screenshots/<script>/, emptied before each run so only this
//! run's files are checked.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::auth::cookie_login;
use crate::helpers::{send, send_body, spawn_app, spawn_app_with};

const CHROMIUM: &str = "/usr/bin/chromium";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every file under `assets/`, as paths relative to it.
fn asset_files() -> Vec<String> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, base, out);
            } else {
                let rel = path.strip_prefix(base).unwrap();
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    let base = root().join("assets");
    let mut out = Vec::new();
    walk(&base, &base, &mut out);
    out.sort();
    out
}

#[test]
fn every_page_serves_the_shell_under_a_strict_csp() {
    let app = spawn_app();
    for page in gatehouse::ui::PAGES {
        let res = app.get(page);
        assert_eq!(res.status, 200, "{page}");
        assert_eq!(
            res.header("content-type"),
            Some("text/html; charset=utf-8"),
            "{page}"
        );
        let csp = res.header("content-security-policy").unwrap();
        for directive in [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{directive} in {csp}");
        }
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert!(res
            .body
            .contains(r#"<script type="module" src="/assets/js/app.js">"#));
        assert!(res.body.contains(r#"action="/auth/refresh""#));
    }
}

#[test]
fn every_asset_is_served_and_every_module_import_resolves() {
    let app = spawn_app();
    let files = asset_files();
    for file in &files {
        // Pages (index.html, docs.html) are served at their own paths.
        if file.ends_with(".html") {
            continue;
        }
        let res = app.get(&format!("/assets/{file}"));
        assert_eq!(res.status, 200, "{file}");
        let expected = match file.rsplit('.').next() {
            Some("js") => "text/javascript; charset=utf-8",
            Some("css") => "text/css; charset=utf-8",
            Some("svg") => "image/svg+xml",
            other => panic!("unexpected asset type {other:?} ({file})"),
        };
        assert_eq!(res.header("content-type"), Some(expected), "{file}");
    }
    // Relative imports (static and dynamic) point at files that exist.
    for file in files.iter().filter(|f| f.ends_with(".js")) {
        let text = std::fs::read_to_string(root().join("assets").join(file)).unwrap();
        let dir = Path::new(file).parent().unwrap_or(Path::new(""));
        for quote in ['"', '\'', '`'] {
            for (i, _) in text.match_indices(quote) {
                let rest = &text[i + 1..];
                if !(rest.starts_with("./") || rest.starts_with("../")) {
                    continue;
                }
                let Some(end) = rest.find(quote) else {
                    continue;
                };
                let spec = &rest[..end];
                if !spec.ends_with(".js") {
                    continue;
                }
                let mut target = dir.to_path_buf();
                for part in spec.split('/') {
                    match part {
                        "." => {}
                        ".." => {
                            target.pop();
                        }
                        p => target.push(p),
                    }
                }
                let target = target.to_string_lossy().replace('\\', "/");
                assert!(
                    files.contains(&target),
                    "{file} imports {spec}, but assets/{target} does not exist"
                );
            }
        }
    }
}

/// The CSP forbids inline script and style; this keeps them out of the
/// source, and keeps server text from ever being parsed as markup.
#[test]
fn assets_hold_no_inline_script_style_or_markup_injection() {
    for file in asset_files() {
        let text = std::fs::read_to_string(root().join("assets").join(&file)).unwrap();
        let lower = text.to_ascii_lowercase();
        if file.ends_with(".html") {
            assert!(!lower.contains("<style"), "{file}: <style> block");
            assert!(!lower.contains(" style="), "{file}: style attribute");
            for (i, _) in lower.match_indices("<script") {
                let tag = &lower[i..i + lower[i..].find('>').unwrap()];
                assert!(tag.contains(" src="), "{file}: inline <script>");
            }
            for handler in [" onclick=", " onload=", " onerror=", " onsubmit="] {
                assert!(!lower.contains(handler), "{file}: inline handler {handler}");
            }
        }
        if file.ends_with(".js") {
            for banned in [
                "innerhtml",
                "outerhtml =",
                "insertadjacenthtml",
                "document.write",
                "eval(",
                "new function",
                "setattribute(\"style\"",
            ] {
                assert!(!lower.contains(banned), "{file}: uses {banned}");
            }
        }
    }
}

#[test]
fn a_refresh_cookie_without_an_access_cookie_is_an_expired_session() {
    let app = spawn_app();
    let (res, _) = cookie_login(&app, "ui-expiry@acme.test");
    let refresh = res.cookie("gatehouse_refresh").unwrap();
    // The browser dropped the access cookie when it expired: the UI must be
    // told to offer /auth/refresh, not to start over at the login page.
    let body = send(
        app.request("GET", "/api/v1/me")
            .set("Cookie", &format!("gatehouse_refresh={refresh}")),
    )
    .assert_error(401, "invalid_token");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("expired"));
    // No session cookie at all: never logged in.
    app.get("/api/v1/me")
        .assert_error(401, "missing_authorization");
}

#[test]
fn the_session_expired_form_is_accepted_from_the_ui_and_refused_cross_site() {
    let app = spawn_app();
    let (res, _) = cookie_login(&app, "ui-form@acme.test");
    let refresh = res.cookie("gatehouse_refresh").unwrap();
    let post = |refresh: &str, headers: &[(&str, &str)]| {
        let mut req = app
            .request("POST", "/auth/refresh")
            .set("Content-Type", "application/x-www-form-urlencoded")
            .set("Cookie", &format!("gatehouse_refresh={refresh}"));
        for (k, v) in headers {
            req = req.set(k, v);
        }
        send_body(req, "next=%2Fusage%3Frange%3D7d")
    };
    // What Chromium sends for the panel's form under `Referrer-Policy: no-referrer`.
    let res = post(
        &refresh,
        &[("Origin", "null"), ("Sec-Fetch-Site", "same-origin")],
    );
    assert_eq!(res.status, 303, "{}", res.body);
    assert_eq!(res.header("location"), Some("/usage?range=7d"));
    let refresh = res
        .cookie("gatehouse_refresh")
        .expect("a fresh refresh cookie");
    assert!(res.cookie("gatehouse_access").is_some());
    // A null origin that the browser does not vouch for, or a cross-site post.
    post(&refresh, &[("Origin", "null")]).assert_error(403, "csrf_failed");
    post(
        &refresh,
        &[("Origin", "null"), ("Sec-Fetch-Site", "cross-site")],
    )
    .assert_error(403, "csrf_failed");
    post(&refresh, &[("Origin", "https://evil.example")]).assert_error(403, "csrf_failed");
}

/// What the browser test needs, or why it cannot run.
fn browser_prerequisites() -> Option<PathBuf> {
    let ui_dir = root().join("tests/ui");
    let mut missing = Vec::new();
    let node_ok = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !node_ok {
        missing.push("node (apt-get install nodejs npm)".to_string());
    }
    if !["playwright-core", "axe-core"]
        .iter()
        .all(|m| ui_dir.join("node_modules").join(m).is_dir())
    {
        missing.push("tests/ui/node_modules (run `npm ci` in tests/ui)".to_string());
    }
    if !Path::new(CHROMIUM).is_file() {
        missing.push(format!("{CHROMIUM} (apt-get install chromium)"));
    }
    crate::helpers::e2e_available(missing.is_empty(), &missing.join("; ")).then_some(ui_dir)
}

/// An empty directory for one script's screenshots (what an earlier run
/// left there is removed first, so a screenshot this run did not write
/// cannot pass for one it did).
fn fresh_screenshots_dir(script: &str) -> std::path::PathBuf {
    let dir = root().join("target/ui-screenshots").join(script);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => panic!("cannot empty {}: {e}", dir.display()),
    }
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `node tests/ui/<script> <base> <screenshots>` and returns whether it
/// passed, with its stdout and stderr (printed too).
fn run_browser_script(
    ui_dir: &Path,
    script: &str,
    base: &str,
    shots: &Path,
) -> (bool, String, String) {
    run_browser_script_with(ui_dir, script, base, shots, &[])
}

/// The same, with more arguments after the screenshot directory.
fn run_browser_script_with(
    ui_dir: &Path,
    script: &str,
    base: &str,
    shots: &Path,
    extra: &[&str],
) -> (bool, String, String) {
    std::fs::create_dir_all(shots).unwrap();
    let mut child = crate::helpers::dies_with_the_test(&mut Command::new("node"))
        .arg(ui_dir.join(script))
        .arg(base)
        .arg(shots)
        .args(extra)
        .env("CHROMIUM_PATH", CHROMIUM)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node starts");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    // The script has its own timeouts; this only guards against a hung browser.
    let deadline = Instant::now() + Duration::from_secs(600);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    println!("{stdout}");
    eprintln!("{stderr}");
    let status = status.unwrap_or_else(|| panic!("{script} finished within 600 s"));
    (status.success(), stdout, stderr)
}

#[test]
fn the_admin_ui_works_in_headless_chromium() {
    let Some(ui_dir) = browser_prerequisites() else {
        return;
    };
    let app = spawn_app_with(|_| {});
    let shots = fresh_screenshots_dir("admin");
    let (ok, stdout, stderr) = run_browser_script(&ui_dir, "admin.mjs", &app.base, &shots);
    assert!(ok, "the browser test failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("ui: all steps passed"), "{stdout}");
    // Every page was checked with axe-core and for overflow, and
    // photographed, at both widths in both themes.
    assert!(
        stdout.contains("pass axe-core (no serious or critical violation) and fit their width"),
        "{stdout}"
    );
    let mut expected = vec![
        "keys-created.png".to_string(),
        "usage.png".to_string(),
        "session-expired-1280-light.png".to_string(),
        "session-expired-390-dark.png".to_string(),
    ];
    for page in [
        "login",
        "keys",
        "key",
        "members",
        "usage",
        "audit",
        "webhooks",
        "billing",
        "projects",
        "mailbox",
        "docs",
        "keys-create-dialog",
    ] {
        for width in [1280, 390] {
            for theme in ["light", "dark"] {
                expected.push(format!("{page}-{width}-{theme}.png"));
            }
        }
    }
    for shot in expected {
        let meta = std::fs::metadata(shots.join(&shot))
            .unwrap_or_else(|_| panic!("screenshot {shot} was written"));
        assert!(meta.len() > 1000, "{shot} is not empty");
    }
}

/// The login page and /docs under a team's brand, in the browser: its name,
/// logo and accent, in both themes at both widths, passing axe-core and
/// fitting the width (tests/ui/branding.mjs).
#[test]
fn a_branded_login_page_and_reference_in_headless_chromium() {
    let Some(ui_dir) = browser_prerequisites() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let logo = dir.path().join("logo.svg");
    std::fs::write(
        &logo,
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><circle cx="16" cy="16" r="15" fill="#0b6e4f"/><path d="M9 22 16 8l7 14z" fill="#fff"/></svg>"##,
    )
    .unwrap();
    let app = spawn_app_with(|c| {
        c.ui.product_name = "Acme API".into();
        c.ui.accent_color = "#0b6e4f".into();
        c.ui.logo_file = Some(logo.clone());
    });
    let shots = fresh_screenshots_dir("branding");
    let (ok, stdout, stderr) = run_browser_script_with(
        &ui_dir,
        "branding.mjs",
        &app.base,
        &shots,
        &["Acme API", "#0b6e4f"],
    );
    assert!(ok, "the branding test failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("branding: all steps passed"), "{stdout}");
    for page in ["login", "docs"] {
        for width in [1280, 390] {
            for theme in ["light", "dark"] {
                let shot = format!("{page}-{width}-{theme}.png");
                let meta = std::fs::metadata(shots.join(&shot))
                    .unwrap_or_else(|_| panic!("screenshot {shot} was written"));
                assert!(meta.len() > 1000, "{shot} is not empty");
            }
        }
    }
}

/// /docs draws every operation of the OpenAPI document in the browser with
/// no console error, failed request or CSP violation (tests/ui/docs.mjs).
#[test]
fn the_api_reference_renders_in_headless_chromium() {
    let Some(ui_dir) = browser_prerequisites() else {
        return;
    };
    let app = spawn_app();
    let shots = fresh_screenshots_dir("docs");
    let (ok, stdout, stderr) = run_browser_script(&ui_dir, "docs.mjs", &app.base, &shots);
    assert!(ok, "the API reference test failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("docs: all steps passed"), "{stdout}");
    let meta = std::fs::metadata(shots.join("docs.png")).expect("docs.png was written");
    assert!(meta.len() > 1000);
}

/// The reference page is served at /docs only, as HTML under the UI's CSP,
/// and loads nothing but its own embedded assets.
#[test]
fn the_api_reference_page_is_embedded_and_under_the_csp() {
    let app = spawn_app();
    let res = app.get("/docs");
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-type"), Some("text/html; charset=utf-8"));
    let csp = res.header("content-security-policy").unwrap();
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} in {csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert!(res
        .body
        .contains(r#"<script type="module" src="/assets/js/docs/reference.js">"#));
    for (i, _) in res
        .body
        .match_indices("src=\"")
        .chain(res.body.match_indices("href=\""))
    {
        let rest = &res.body[i..];
        let value = &rest[rest.find('"').unwrap() + 1..];
        let value = &value[..value.find('"').unwrap()];
        assert!(
            value.starts_with('/') || value.starts_with('#'),
            "{value} is not served by Gatehouse"
        );
    }
    for module in [
        "/assets/js/docs/reference.js",
        "/assets/js/docs/model.js",
        "/assets/docs.css",
    ] {
        assert_eq!(app.get(module).status, 200, "{module}");
    }
    // Pages are not served a second time under /assets.
    assert_eq!(app.get("/assets/docs.html").status, 404);
    assert_eq!(app.get("/assets/index.html").status, 404);
    assert_eq!(app.get("/docs/").status, 404);
}

/// `[ui]`: the product name in every page (escaped), the accent colour's
/// shades in /branding/theme.css, and the team's logo, read at start,
/// served from /branding/logo as the image it is.
#[test]
fn the_pages_carry_the_teams_name_colour_and_logo() {
    let dir = tempfile::tempdir().unwrap();
    let logo = dir.path().join("logo.png");
    // The smallest PNG: a signature and an IHDR chunk are all the check reads.
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";
    std::fs::write(&logo, png).unwrap();
    let app = spawn_app_with(|c| {
        c.ui.product_name = "Acme <API>".into();
        c.ui.accent_color = "#0b6e4f".into();
        c.ui.logo_file = Some(logo.clone());
    });
    for page in ["/login", "/keys", "/keys/key_anything", "/docs"] {
        let res = app.get(page);
        assert_eq!(res.status, 200, "{page}");
        assert!(
            res.body.contains("Acme &lt;API&gt;"),
            "{page}: {}",
            res.body
        );
        assert!(
            !res.body.contains("<API>") && !res.body.contains("{{"),
            "{page}"
        );
        assert!(res.body.contains(r#"href="/branding/theme.css""#), "{page}");
        assert!(res.body.contains(r#"src="/branding/logo""#), "{page}");
    }
    assert!(app
        .get("/docs")
        .body
        .contains("<title>API reference · Acme &lt;API&gt;</title>"));
    let css = app.get("/branding/theme.css");
    assert_eq!(css.status, 200);
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
    assert!(css.body.contains("--accent: #0b6e4f;"), "{}", css.body);
    assert!(
        css.body.contains("prefers-color-scheme: dark"),
        "{}",
        css.body
    );
    let res = app.get("/branding/logo");
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-type"), Some("image/png"));
    // The body is read as text: compare what survives that.
    assert_eq!(res.body, String::from_utf8_lossy(png));
    // Not a page: the API's CSP, under which nothing in it can run.
    assert!(res
        .header("content-security-policy")
        .unwrap()
        .starts_with("default-src 'none'"));

    // Without [ui]: the built-in name, colour and mark.
    let plain = spawn_app();
    assert!(plain
        .get("/login")
        .body
        .contains("<title>Gatehouse</title>"));
    assert!(plain
        .get("/branding/theme.css")
        .body
        .contains("--accent: #1f4fd1;"));
    let mark = plain.get("/branding/logo");
    assert_eq!(mark.header("content-type"), Some("image/svg+xml"));
    assert!(mark.body.contains("<svg"));
}
