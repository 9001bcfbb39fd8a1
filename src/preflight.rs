//! The startup checks of SPEC section 2, whole: the configuration's own
//! (`config::check`) and those that need another module to judge a value
//! (a database or Redis URL, the scope catalog, log filters and trace
//! export). Run by `serve` and `check-config`; it sits above those modules,
//! so the configuration never reaches up into them.

use crate::config::check::shipped_example_secrets;
use crate::config::{is_placeholder, Config, Finding};

/// Runs every check. The result is judged by
/// [`crate::config::Report::refuses`] for the mode.
pub fn check(config: &Config) -> Vec<Finding> {
    let mut out = crate::config::check::check(config);
    check_database_url(config, &mut out);
    check_redis(config, config.uses_postgres(), &mut out);
    check_catalog(config, &mut out);
    if !crate::telemetry::is_valid_level(&config.log.level) {
        out.push(Finding::error(
            "log.level",
            format!(
                "`{}` is not a log filter (try `info` or `gatehouse=debug,info`)",
                config.log.level
            ),
        ));
    }
    // Trace export as `serve` would set it up (the OTEL_* variables included).
    if let Err(e) = crate::telemetry::traces::plan(&config.telemetry, |k| std::env::var(k).ok()) {
        out.push(Finding::error("telemetry", e.to_string()));
    }
    out
}

/// `database.url`: empty for SQLite, else a PostgreSQL URL whose password
/// (when it has one) is a real secret outside local mode.
fn check_database_url(config: &Config, out: &mut Vec<Finding>) {
    let Some(url) = config.postgres_url() else {
        return;
    };
    const HINT: &str = "set database.url (or database.url_file) to postgres://USER:PASSWORD@HOST:5432/DBNAME, or leave it empty for SQLite in the data directory";
    if !crate::store::open::is_postgres_url(url) {
        out.push(
            Finding::error(
                "database.url",
                "is not a postgres:// or postgresql:// URL (SQLite needs no URL)",
            )
            .with_hint(HINT),
        );
        return;
    }
    let parsed = match url::Url::parse(url) {
        Ok(u) => u,
        Err(e) => {
            out.push(
                Finding::error("database.url", format!("is not a valid URL: {e}")).with_hint(HINT),
            );
            return;
        }
    };
    // The URL's text never goes into the message: it may hold the password.
    if let Some(why) = crate::store::open::url_problem(url) {
        out.push(Finding::error("database.url", format!("cannot be used: {why}")).with_hint(HINT));
        return;
    }
    if let Some(password) = parsed.password() {
        let password = percent_encoding::percent_decode_str(password).decode_utf8_lossy();
        // Beyond the general placeholder rules, the words that stand for a
        // password in examples (this project's own docs write PASSWORD).
        let stand_in = ["password", "passwd", "pass", "secret"]
            .iter()
            .any(|w| password.eq_ignore_ascii_case(w));
        if stand_in || is_placeholder(&password, &shipped_example_secrets()) {
            out.push(
                Finding::unsafe_("database.url", "has a placeholder password, not a secret")
                    .with_hint(
                    "put the database user's real password in the URL (or in database.url_file)",
                ),
            );
        }
    }
}

/// `redis.url`: a `redis://` or `rediss://` URL whose password is no
/// placeholder; and, on PostgreSQL (where several nodes may share the
/// data), a warning when rate limits are not shared.
pub(crate) fn check_redis(config: &Config, uses_postgres: bool, out: &mut Vec<Finding>) {
    let Some(url) = &config.redis.url else {
        if uses_postgres {
            out.push(
                Finding::warning(
                    "redis.url",
                    "is unset: every node keeps its own rate-limit windows, so N nodes may \
                     together allow up to N times a key's limit (credits and quotas stay exact)",
                )
                .with_hint("set redis.url (or redis.url_file) to share the windows between nodes"),
            );
        }
        return;
    };
    let parsed = match crate::cluster::redis::parse_url(url.expose()) {
        Ok(parsed) => parsed,
        Err(reason) => {
            out.push(Finding::error("redis.url", reason));
            return;
        }
    };
    if let Some(password) = parsed.password() {
        let shipped = shipped_example_secrets();
        let decoded = percent_encoding::percent_decode_str(password).decode_utf8_lossy();
        if is_placeholder(&decoded, &shipped) {
            out.push(
                Finding::unsafe_("redis.url", "has a placeholder password, not a secret")
                    .with_hint(
                        "put the Redis server's real password in the URL (or in redis.url_file)",
                    ),
            );
        }
    }
    let prefix = &config.redis.key_prefix;
    if prefix.len() > 64 || prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
        out.push(Finding::error(
            "redis.key_prefix",
            "must be at most 64 characters without spaces",
        ));
    }
}

/// Scope, route and plan definitions must form a consistent catalog.
fn check_catalog(config: &Config, out: &mut Vec<Finding>) {
    let mut names: Vec<&str> = crate::catalog::BUILTIN_SCOPES.iter().map(|s| s.0).collect();
    for (i, scope) in config.scopes.iter().enumerate() {
        if !crate::catalog::is_valid_scope_name(&scope.name) {
            out.push(Finding::error(
                &format!("scopes[{i}].name"),
                format!(
                    "`{}` must be 1-64 characters of a-z, 0-9, `:`, `_`, `-`, `.`",
                    scope.name
                ),
            ));
        } else if names.contains(&scope.name.as_str()) {
            out.push(Finding::error(
                &format!("scopes[{i}].name"),
                format!("`{}` is defined twice (or is built in)", scope.name),
            ));
        } else {
            names.push(&scope.name);
        }
    }
    for (i, route) in config.routes.iter().enumerate() {
        if !route.path_prefix.starts_with('/') {
            out.push(Finding::error(
                &format!("routes[{i}].path_prefix"),
                format!("`{}` must start with /", route.path_prefix),
            ));
        }
        if !names.contains(&route.scope.as_str()) {
            out.push(
                Finding::error(
                    &format!("routes[{i}].scope"),
                    format!("`{}` is not a known scope", route.scope),
                )
                .with_hint("declare it with [[scopes]] name = \"...\""),
            );
        }
    }
    let mut plan_names: Vec<&str> = Vec::new();
    for (i, plan) in config.billing.plans.iter().enumerate() {
        if plan.name.trim().is_empty() || plan_names.contains(&plan.name.as_str()) {
            out.push(Finding::error(
                &format!("billing.plans[{i}].name"),
                "must be non-empty and unique",
            ));
        }
        plan_names.push(&plan.name);
    }
    if !config.billing.plans.is_empty()
        && !plan_names.contains(&config.billing.default_plan.as_str())
    {
        out.push(Finding::error(
            "billing.default_plan",
            format!(
                "`{}` is not one of the [[billing.plans]]",
                config.billing.default_plan
            ),
        ));
    }
}
