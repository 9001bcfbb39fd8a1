//! The startup checks of SPEC section 2, run by `serve` and `check-config`:
//! one pass that collects every problem, names the key and the reason, and
//! never prints a configured secret.

use std::fmt::Write as _;

use super::unknown::env_name;
use super::{generate_secret, is_placeholder, Config, Mode, Secret, SmtpTls, Synchronous};

/// The example configuration shipped with the product; its secret values are
/// placeholders by definition.
const EXAMPLE_CONFIG: &str = include_str!("../../config.example.toml");
const MIN_SECRET_BYTES: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Worth knowing; never stops the server.
    Warning,
    /// Unsafe outside local mode: refuses staging/production, warns in local.
    Unsafe,
    /// The configuration cannot work in any mode.
    Error,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    /// The setting's name (`secrets.session_key`) or environment variable.
    pub key: String,
    pub reason: String,
    pub hint: Option<String>,
}

impl Finding {
    pub fn warning(key: &str, reason: impl Into<String>) -> Self {
        Self::new(Severity::Warning, key, reason)
    }
    pub fn unsafe_(key: &str, reason: impl Into<String>) -> Self {
        Self::new(Severity::Unsafe, key, reason)
    }
    pub fn error(key: &str, reason: impl Into<String>) -> Self {
        Self::new(Severity::Error, key, reason)
    }
    fn new(severity: Severity, key: &str, reason: impl Into<String>) -> Self {
        Finding {
            severity,
            key: key.to_string(),
            reason: reason.into(),
            hint: None,
        }
    }
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// Everything the checks found, judged for one mode.
#[derive(Clone, Debug)]
pub struct Report {
    pub mode: Mode,
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn new(mode: Mode, mut findings: Vec<Finding>) -> Self {
        findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
        Report { mode, findings }
    }

    fn blocks(&self, f: &Finding) -> bool {
        match f.severity {
            Severity::Error => true,
            Severity::Unsafe => !self.mode.is_local(),
            Severity::Warning => false,
        }
    }

    /// Whether the configuration may not serve in its mode.
    pub fn refuses(&self) -> bool {
        self.findings.iter().any(|f| self.blocks(f))
    }

    /// A human-readable account for the terminal, one problem per line, as
    /// `serve` gives it ("refusing to start ...").
    pub fn render(&self) -> String {
        self.render_headed("refusing to start")
    }

    /// The same account as a verdict on the configuration, for the commands
    /// that start nothing (`check-config`, `init`).
    pub fn render_check(&self) -> String {
        self.render_headed("the configuration may not serve")
    }

    fn render_headed(&self, refusal: &str) -> String {
        let mut out = String::new();
        let problems = self.findings.iter().filter(|f| self.blocks(f)).count();
        if problems > 0 {
            let _ = writeln!(
                out,
                "{refusal} in {} mode: {} problem{} found",
                self.mode.as_str(),
                problems,
                if problems == 1 { "" } else { "s" }
            );
        }
        for f in &self.findings {
            let label = if self.blocks(f) { "error" } else { "warning" };
            let local_note = if f.severity == Severity::Unsafe && self.mode.is_local() {
                " (allowed in local mode only)"
            } else {
                ""
            };
            let _ = writeln!(out, "  {label}: {}: {}{local_note}", f.key, f.reason);
            if let Some(hint) = &f.hint {
                let _ = writeln!(out, "      hint: {hint}");
            }
        }
        out
    }
}

/// Runs the checks of the configuration on its own (what needs the
/// storage, cluster, catalog or telemetry modules to judge a value is in
/// `crate::preflight`, which runs these too). The result is judged by
/// [`Report::refuses`] for the mode.
pub fn check(config: &Config) -> Vec<Finding> {
    let mut out = Vec::new();
    check_secrets(config, &mut out);
    check_urls_and_network(config, &mut out);
    check_smtp(config, &mut out);
    for toggle in config.dev.enabled_toggles() {
        out.push(
            Finding::unsafe_(toggle, "is a test-only toggle and must be off")
                .with_hint(format!("remove `{toggle}` from the configuration")),
        );
    }
    check_database(config, &mut out);
    super::ranges::check(config, &mut out);
    super::ui::check(&config.ui, &mut out);
    out
}

/// Secret values that `config.example.toml` ships.
pub(crate) fn shipped_example_secrets() -> Vec<String> {
    let Ok(doc) = EXAMPLE_CONFIG.parse::<toml::Table>() else {
        return Vec::new();
    };
    let mut values = Vec::new();
    for (section, key) in [
        ("secrets", "session_key"),
        ("secrets", "ops_token"),
        ("smtp", "password"),
        ("billing", "stripe_webhook_secret"),
    ] {
        if let Some(v) = doc
            .get(section)
            .and_then(|s| s.get(key))
            .and_then(|v| v.as_str())
        {
            values.push(v.to_string());
        }
    }
    values
}

/// Who issues a secret decides what it must look like and what the hint
/// may say: Gatehouse's own secrets are ours to generate, a mail provider's
/// password or Stripe's signing secret are not, so no value is ever invented
/// for those.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Issuer {
    /// Gatehouse's own (session key, ops token): at least 32 bytes.
    Gatehouse,
    /// The mail provider's: any length.
    MailProvider,
    /// Stripe's webhook signing secret: `whsec_...`.
    Stripe,
}

const STRIPE_SECRET_PREFIX: &str = "whsec_";

fn secret_hint(key: &str, issuer: Issuer) -> String {
    let (section, name) = key.split_once('.').unwrap_or(("", key));
    let file_var = format!("{}_FILE=/path/to/file", env_name(key));
    match issuer {
        Issuer::Gatehouse => format!(
            "set [{section}] {name} = \"{}\" (a freshly generated value), or {file_var}, or run `gatehouse init`",
            generate_secret()
        ),
        Issuer::MailProvider => format!(
            "set [{section}] {name} (or {name}_file, or {file_var}) to the password your mail provider gave for smtp.username"
        ),
        Issuer::Stripe => format!(
            "set [{section}] {name} (or {name}_file, or {file_var}) to the endpoint's signing secret (whsec_...) from the Stripe dashboard"
        ),
    }
}

fn check_secret(
    key: &str,
    value: Option<&Secret>,
    required: bool,
    issuer: Issuer,
    shipped: &[String],
    out: &mut Vec<Finding>,
) {
    let problem = match value {
        None if required => "is missing".to_string(),
        None => return,
        Some(secret) => {
            let value = secret.expose();
            let body = match issuer {
                Issuer::Stripe => value.strip_prefix(STRIPE_SECRET_PREFIX).unwrap_or(value),
                _ => value,
            };
            if is_placeholder(value, shipped) || is_placeholder(body, shipped) {
                "is a placeholder, not a secret".to_string()
            } else if issuer == Issuer::Gatehouse && value.len() < MIN_SECRET_BYTES {
                format!(
                    "is {} bytes long; at least {MIN_SECRET_BYTES} are required",
                    value.len()
                )
            } else if issuer == Issuer::Stripe && !value.starts_with(STRIPE_SECRET_PREFIX) {
                "is not a Stripe webhook signing secret (those start with `whsec_`)".to_string()
            } else {
                return;
            }
        }
    };
    out.push(Finding::unsafe_(key, problem).with_hint(secret_hint(key, issuer)));
}

fn check_secrets(config: &Config, out: &mut Vec<Finding>) {
    let shipped = shipped_example_secrets();
    let secrets = [
        (
            "secrets.session_key",
            config.secrets.session_key.as_ref(),
            true,
            Issuer::Gatehouse,
        ),
        (
            "secrets.ops_token",
            config.secrets.ops_token.as_ref(),
            true,
            Issuer::Gatehouse,
        ),
        (
            "billing.stripe_webhook_secret",
            config.billing.stripe_webhook_secret.as_ref(),
            config.billing_enabled(),
            Issuer::Stripe,
        ),
        (
            "smtp.password",
            config.smtp.password.as_ref(),
            config.smtp.username.is_some(),
            Issuer::MailProvider,
        ),
    ];
    for (key, value, required, issuer) in secrets {
        check_secret(key, value, required, issuer, &shipped, out);
    }
}

/// The `public_url` rules, shared with `gatehouse init` so that it refuses
/// with the very message `check-config` would give.
pub fn check_public_url(public_url: Option<&url::Url>, out: &mut Vec<Finding>) {
    match public_url {
        None => out.push(
            Finding::unsafe_(
                "public_url",
                "is missing; it must be the https:// address users reach",
            )
            .with_hint("public_url = \"https://keys.your-company.com\""),
        ),
        Some(url) if url.scheme() != "https" => out.push(
            Finding::unsafe_("public_url", "must start with https://").with_hint(
                "terminate TLS at your reverse proxy and set public_url to its https:// address",
            ),
        ),
        Some(url) if url.host_str().is_none() => {
            out.push(Finding::error("public_url", "has no host"))
        }
        Some(_) => {}
    }
}

fn check_database(config: &Config, out: &mut Vec<Finding>) {
    match config.database.synchronous {
        Synchronous::Off => out.push(
            Finding::unsafe_(
                "database.synchronous",
                "is \"off\": an acknowledged write could be lost in a crash",
            )
            .with_hint("use \"full\" (the default) or \"extra\""),
        ),
        Synchronous::Normal => out.push(
            Finding::warning(
                "database.synchronous",
                "is \"normal\": a power cut may lose the last transactions (a process crash loses none)",
            )
            .with_hint("use \"full\" (the default) if every acknowledged write must survive"),
        ),
        Synchronous::Full | Synchronous::Extra => {}
    }
    // On PostgreSQL nothing is kept in the data directory outside local mode.
    if !config.mode.is_local() && !config.uses_postgres() && config.data_dir.is_relative() {
        let cwd = std::env::current_dir()
            .map(|d| d.display().to_string())
            .unwrap_or_else(|_| "?".into());
        out.push(
            Finding::warning(
                "data_dir",
                format!(
                    "`{}` is relative: it resolves against the directory Gatehouse is started in (now {cwd})",
                    config.data_dir.display()
                ),
            )
            .with_hint("use an absolute path (`gatehouse init` writes one)"),
        );
    }
}

fn check_urls_and_network(config: &Config, out: &mut Vec<Finding>) {
    let mut url = Vec::new();
    check_public_url(config.public_url.as_ref(), &mut url);
    // Local mode serves on http://{listen} without a public_url: only a
    // URL that cannot work at all is worth a word there.
    out.extend(
        url.into_iter()
            .filter(|f| !config.mode.is_local() || f.severity == Severity::Error),
    );
    if config.mode.is_local() && !config.listen.ip().is_loopback() {
        out.push(
            Finding::warning(
                "listen",
                format!(
                    "local mode is listening on the non-loopback address {}: the demo, its generated secrets and its mailbox are reachable from the network",
                    config.listen.ip()
                ),
            )
            .with_hint("listen = \"127.0.0.1:8080\", or run in staging/production mode"),
        );
    }
    for (i, origin) in config.cors.allowed_origins.iter().enumerate() {
        if !is_exact_origin(origin) {
            out.push(Finding::error(
                &format!("cors.allowed_origins[{i}]"),
                format!("`{origin}` is not an exact origin like https://app.example.com (no path, no wildcard)"),
            ));
        }
    }
}

/// `scheme://host[:port]` and nothing else.
fn is_exact_origin(origin: &str) -> bool {
    match url::Url::parse(origin) {
        Ok(url) => {
            matches!(url.scheme(), "http" | "https")
                && url.host_str().is_some()
                && !origin.contains('*')
                && url.path() == "/"
                && !origin.ends_with('/')
                && url.query().is_none()
                && url.username().is_empty()
        }
        Err(_) => false,
    }
}

fn check_smtp(config: &Config, out: &mut Vec<Finding>) {
    // Local mode delivers to the local mailbox; SMTP is optional there.
    match config.smtp.host.as_deref().map(str::trim) {
        None | Some("") if !config.mode.is_local() => out.push(
            Finding::unsafe_(
                "smtp.host",
                "is missing: login codes could not be delivered",
            )
            .with_hint(
                "set [smtp] host, port, from (and username/password if your server needs them)",
            ),
        ),
        _ => {}
    }
    if config.smtp.tls == SmtpTls::None && config.smtp.username.is_some() {
        out.push(
            Finding::unsafe_(
                "smtp.tls",
                "is \"none\" while smtp.username is set: the password would cross the network in clear",
            )
            .with_hint("use tls = \"starttls\" or \"tls\""),
        );
    }
    if config
        .smtp
        .from
        .parse::<lettre::message::Mailbox>()
        .is_err()
    {
        out.push(Finding::error(
            "smtp.from",
            "must be an email address, optionally with a name: `Gatehouse <keys@acme.test>`",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preflight::{check, check_redis};

    fn production() -> Config {
        Config {
            mode: Mode::Production,
            public_url: Some("https://keys.acme.test".parse().unwrap()),
            data_dir: "/var/lib/gatehouse".into(),
            secrets: crate::config::SecretsConfig {
                session_key: Some(Secret::new(generate_secret())),
                ops_token: Some(Secret::new(generate_secret())),
                ..Default::default()
            },
            smtp: crate::config::SmtpConfig {
                host: Some("smtp.acme.test".into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn keys_of(config: &Config) -> Vec<String> {
        check(config).into_iter().map(|f| f.key).collect()
    }

    #[test]
    fn redis_urls_are_checked_like_secrets() {
        let mut c = production();
        c.redis.url = Some(Secret::new(format!(
            "rediss://gatehouse:{}@redis.acme.test:6380/2",
            generate_secret().replace('/', "_").replace('+', "-")
        )));
        assert!(!Report::new(Mode::Production, check(&c)).refuses());
        c.redis.url = Some(Secret::new("redis://:changeme@redis.acme.test:6379"));
        let report = Report::new(Mode::Production, check(&c));
        assert!(report.refuses(), "a placeholder password is refused");
        assert!(!report.render().contains("changeme"), "never shown");
        c.mode = Mode::Local;
        assert!(!Report::new(Mode::Local, check(&c)).refuses());
        c.redis.url = Some(Secret::new("http://redis.acme.test"));
        assert_eq!(keys_of(&c), ["redis.url"]);
        c.redis.url = Some(Secret::new("redis://redis.acme.test/x"));
        assert_eq!(keys_of(&c), ["redis.url"]);
        c.redis.url = None;
        c.redis.key_prefix = "has space".into();
        assert!(keys_of(&c).is_empty(), "the prefix is only used with a URL");
    }

    #[test]
    fn several_nodes_without_redis_are_warned_about() {
        let c = production();
        let mut out = Vec::new();
        check_redis(&c, true, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].severity, Severity::Warning);
        assert!(out[0].reason.contains("own rate-limit windows"));
        out.clear();
        check_redis(&c, false, &mut out);
        assert!(out.is_empty(), "one SQLite process needs no shared windows");
    }

    #[test]
    fn a_complete_production_config_passes() {
        let report = Report::new(Mode::Production, check(&production()));
        assert!(!report.refuses(), "{}", report.render());
    }

    #[test]
    fn the_shipped_example_values_are_placeholders() {
        let shipped = shipped_example_secrets();
        assert!(
            shipped.len() >= 2,
            "config.example.toml ships example secrets"
        );
        let mut c = production();
        c.secrets.session_key = Some(Secret::new(shipped[0].clone()));
        assert_eq!(keys_of(&c), vec!["secrets.session_key"]);
    }

    #[test]
    fn each_problem_names_its_key_and_never_the_value() {
        let mut c = production();
        c.secrets.session_key = Some(Secret::new("0123456789abcdefghij"));
        c.public_url = Some("http://keys.acme.test".parse().unwrap());
        c.smtp.host = None;
        c.dev.expose_codes = true;
        let report = Report::new(Mode::Production, check(&c));
        assert!(report.refuses());
        let text = report.render();
        for key in [
            "secrets.session_key",
            "public_url",
            "smtp.host",
            "dev.expose_codes",
        ] {
            assert!(text.contains(key), "{key} missing from:\n{text}");
        }
        assert!(!text.contains("0123456789abcdefghij"));
        assert!(text.starts_with("refusing to start in production mode: 4 problems found\n"));
        assert!(report
            .render_check()
            .starts_with("the configuration may not serve in production mode: 4 problems found\n"));
        let local = Report::new(Mode::Local, check(&c));
        assert!(!local.refuses());
    }

    #[test]
    fn local_mode_warns_only_about_what_is_wrong_there() {
        // The zero-config demo once serve has filled in its secrets: no
        // public_url, no SMTP (mail goes to the local mailbox).
        let mut c = Config::default();
        assert!(c.mode.is_local());
        c.secrets.session_key = Some(Secret::new(generate_secret()));
        c.secrets.ops_token = Some(Secret::new(generate_secret()));
        assert_eq!(keys_of(&c), Vec::<String>::new());
        c.public_url = Some("http://gate.lan:8080".parse().unwrap());
        assert_eq!(keys_of(&c), Vec::<String>::new());
        // What is wrong in local mode too is still said.
        c.smtp.host = Some("smtp.acme.test".into());
        c.smtp.username = Some("gatehouse".into());
        c.smtp.tls = SmtpTls::None;
        c.dev.expose_codes = true;
        let mut keys = keys_of(&c);
        keys.sort();
        assert_eq!(keys, ["dev.expose_codes", "smtp.password", "smtp.tls"]);
    }

    #[test]
    fn billing_needs_a_real_stripe_secret_outside_local_mode() {
        let mut c = production();
        c.billing.plans.push(crate::config::PlanConfig {
            name: "free".into(),
            stripe_price_id: None,
            max_keys: Some(1),
            monthly_verifications: None,
        });
        assert_eq!(
            keys_of(&c),
            vec!["billing.stripe_webhook_secret"],
            "plans without a secret"
        );
        c.billing.stripe_webhook_secret =
            Some(Secret::new("whsec_REPLACE_ME_WITH_THE_REAL_ONE_123"));
        assert_eq!(
            keys_of(&c),
            vec!["billing.stripe_webhook_secret"],
            "a placeholder"
        );
        c.billing.stripe_webhook_secret =
            Some(Secret::new("whsec_k2J9s8dLq0Zx7Vb3Nm4Rt6Yp1Wc5Hf8G"));
        assert!(keys_of(&c).is_empty());
        c.billing.default_plan = "gold".into();
        assert_eq!(keys_of(&c), vec!["billing.default_plan"]);
    }

    #[test]
    fn smtp_password_is_required_with_a_username() {
        let mut c = production();
        c.smtp.username = Some("mailer".into());
        assert_eq!(keys_of(&c), vec!["smtp.password"]);
    }

    fn finding(config: &Config, key: &str) -> Finding {
        check(config)
            .into_iter()
            .find(|f| f.key == key)
            .unwrap_or_else(|| panic!("no finding for {key}"))
    }

    #[test]
    fn database_url_names_postgres_and_carries_a_real_password() {
        let mut c = production();
        let url_findings = |c: &Config| {
            check(c)
                .into_iter()
                .filter(|f| f.key == "database.url")
                .count()
        };
        c.database.url = Some(Secret::new(
            "postgres://gh:Zq8vR2mK9xLp@db.internal/gatehouse",
        ));
        assert_eq!(url_findings(&c), 0, "{:?}", check(&c));
        assert!(c.uses_postgres());
        // Several nodes without Redis: said, not refused.
        assert_eq!(finding(&c, "redis.url").severity, Severity::Warning);
        c.database.url = Some(Secret::new(
            "postgres://gh@db.internal/gatehouse?sslmode=disable",
        ));
        assert_eq!(
            url_findings(&c),
            0,
            "no password: trust authentication is the operator's choice"
        );
        for placeholder in ["changeme", "PASSWORD", "your-password", "xxxx"] {
            c.database.url = Some(Secret::new(format!(
                "postgresql://gh:{placeholder}@db.internal:5432/gatehouse"
            )));
            let f = finding(&c, "database.url");
            assert_eq!(f.severity, Severity::Unsafe, "{placeholder}");
            assert!(!f.reason.contains(placeholder), "the value is never shown");
        }
        c.database.url = Some(Secret::new("mysql://gh:Zq8vR2mK9xLp@db/gatehouse"));
        let f = finding(&c, "database.url");
        assert_eq!(f.severity, Severity::Error);
        assert!(!f.reason.contains("Zq8vR2mK9xLp"));
        c.database.url = Some(Secret::new(
            "postgres://gh:Zq8vR2mK9xLp@db/x?sslmode=sometimes",
        ));
        let f = finding(&c, "database.url");
        assert_eq!(f.severity, Severity::Error);
        assert!(!f.reason.contains("Zq8vR2mK9xLp"), "{}", f.reason);
        // Empty is SQLite.
        c.database.url = Some(Secret::new(""));
        assert!(!c.uses_postgres());
        assert!(keys_of(&c).is_empty());
    }

    #[test]
    fn a_mail_providers_password_may_have_any_length_and_its_hint_invents_nothing() {
        let mut c = production();
        c.smtp.username = Some("mailer".into());
        c.smtp.password = Some(Secret::new("abcd efgh ijkl mnop"));
        assert!(keys_of(&c).is_empty(), "a 16-character app password passes");
        c.smtp.password = Some(Secret::new("changeme"));
        let f = finding(&c, "smtp.password");
        assert_eq!(f.severity, Severity::Unsafe);
        assert_eq!(f.reason, "is a placeholder, not a secret");
        let hint = f.hint.unwrap();
        assert!(hint.contains("your mail provider gave"), "{hint}");
        assert!(!hint.contains("freshly generated"), "{hint}");
        assert!(!hint.contains(" = \""), "no value is offered: {hint}");
    }

    #[test]
    fn the_stripe_secret_must_look_like_one_and_its_hint_invents_nothing() {
        let mut c = production();
        c.billing.stripe_webhook_secret = Some(Secret::new("k2J9s8dLq0Zx7Vb3Nm4Rt6Yp1Wc5Hf8G"));
        let f = finding(&c, "billing.stripe_webhook_secret");
        assert!(f.reason.contains("start with `whsec_`"), "{}", f.reason);
        let hint = f.hint.unwrap();
        assert!(hint.contains("Stripe dashboard"), "{hint}");
        assert!(!hint.contains(" = \""), "no value is offered: {hint}");
        for placeholder in ["whsec_", "whsec_aaaaaaaaaaaaaaaa", "whsec_..."] {
            c.billing.stripe_webhook_secret = Some(Secret::new(placeholder));
            let f = finding(&c, "billing.stripe_webhook_secret");
            assert_eq!(f.reason, "is a placeholder, not a secret", "{placeholder}");
        }
        c.billing.stripe_webhook_secret = Some(Secret::new("whsec_Ab12"));
        assert!(
            keys_of(&c).is_empty(),
            "Stripe's secrets have no length rule here"
        );
    }

    #[test]
    fn gatehouses_own_secrets_need_32_bytes_and_the_hint_offers_one() {
        let mut c = production();
        c.secrets.ops_token = Some(Secret::new("k2J9s8dLq0Zx7Vb3"));
        let f = finding(&c, "secrets.ops_token");
        assert_eq!(f.reason, "is 16 bytes long; at least 32 are required");
        assert!(f.hint.unwrap().contains("freshly generated"));
    }

    #[test]
    fn synchronous_off_is_refused_outside_local_mode_and_normal_warns() {
        let mut c = production();
        c.database.synchronous = crate::config::Synchronous::Off;
        assert_eq!(
            finding(&c, "database.synchronous").severity,
            Severity::Unsafe
        );
        assert!(Report::new(Mode::Production, check(&c)).refuses());
        assert!(!Report::new(Mode::Local, check(&c)).refuses());
        c.database.synchronous = crate::config::Synchronous::Normal;
        let f = finding(&c, "database.synchronous");
        assert_eq!(f.severity, Severity::Warning);
        assert!(f.reason.contains("power cut"), "{}", f.reason);
        assert!(!Report::new(Mode::Production, check(&c)).refuses());
    }

    #[test]
    fn smtp_without_tls_may_not_carry_a_password_outside_local_mode() {
        let mut c = production();
        c.smtp.tls = SmtpTls::None;
        assert!(keys_of(&c).is_empty(), "no username, nothing to leak");
        c.smtp.username = Some("mailer".into());
        c.smtp.password = Some(Secret::new("k2J9s8dLq0Zx7Vb3"));
        assert_eq!(keys_of(&c), vec!["smtp.tls"]);
        assert!(Report::new(Mode::Production, check(&c)).refuses());
        assert!(!Report::new(Mode::Local, check(&c)).refuses());
    }

    #[test]
    fn a_relative_data_dir_is_pointed_out_outside_local_mode() {
        let mut c = production();
        c.data_dir = "./gatehouse-data".into();
        let f = finding(&c, "data_dir");
        assert_eq!(f.severity, Severity::Warning);
        assert!(
            f.reason.contains("resolves against the directory"),
            "{}",
            f.reason
        );
        c.mode = Mode::Local;
        assert!(!keys_of(&c).contains(&"data_dir".to_string()));
    }

    #[test]
    fn invalid_values_refuse_in_every_mode() {
        let mut c = production();
        c.mode = Mode::Local;
        c.auth.code_length = 4;
        c.keys.prefix = "Gate!".into();
        let report = Report::new(Mode::Local, check(&c));
        assert!(report.refuses());
    }

    #[test]
    fn origins_must_be_exact() {
        assert!(is_exact_origin("https://app.acme.test"));
        assert!(is_exact_origin("http://localhost:3000"));
        assert!(!is_exact_origin("https://app.acme.test/"));
        assert!(!is_exact_origin("https://*.acme.test"));
        assert!(!is_exact_origin("*"));
        assert!(!is_exact_origin("https://app.acme.test/path"));
    }
}
