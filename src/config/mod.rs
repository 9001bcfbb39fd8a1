//! Configuration: the typed settings, how they are layered (`load`), the
//! fail-closed startup checks (`check`), local-mode secrets and `init`.
//!
//! Every setting has a default, so an empty configuration is a complete local
//! demo. Outside local mode the checks in [`check`] refuse to serve with missing
//! or placeholder secrets.

pub mod check;
pub mod init;
pub mod load;
pub mod local;
mod ranges;
mod secret;
pub mod ui;
mod unknown;

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use check::{Finding, Report, Severity};
pub use load::{load, ConfigSources, LoadError};
pub use secret::{generate_secret, is_placeholder, Secret};

/// How the appliance runs. Only `local` tolerates missing or placeholder
/// secrets, plain-http URLs and the test toggles under `[dev]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Local,
    Staging,
    Production,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Local => "local",
            Mode::Staging => "staging",
            Mode::Production => "production",
        }
    }
    pub fn is_local(self) -> bool {
        self == Mode::Local
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct Config {
    pub mode: Mode,
    /// The URL people and proxies use to reach Gatehouse. Defaults to
    /// `http://{listen}` in local mode; required (and https) otherwise.
    pub public_url: Option<url::Url>,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Peers whose `X-Forwarded-For` / `X-Forwarded-Proto` are believed.
    pub trusted_proxies: Vec<Cidr>,
    pub log: LogConfig,
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    pub secrets: SecretsConfig,
    pub smtp: SmtpConfig,
    pub auth: AuthConfig,
    pub keys: KeysConfig,
    pub usage: UsageConfig,
    pub cors: CorsConfig,
    pub webhooks: WebhooksConfig,
    pub billing: BillingConfig,
    pub scopes: Vec<ScopeConfig>,
    pub routes: Vec<RouteRule>,
    pub forward_auth: ForwardAuthConfig,
    pub telemetry: TelemetryConfig,
    pub cluster: ClusterConfig,
    pub ui: ui::UiConfig,
    pub dev: DevConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::Local,
            public_url: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./gatehouse-data"),
            trusted_proxies: Vec::new(),
            log: LogConfig::default(),
            http: HttpConfig::default(),
            database: DatabaseConfig::default(),
            redis: RedisConfig::default(),
            secrets: SecretsConfig::default(),
            smtp: SmtpConfig::default(),
            auth: AuthConfig::default(),
            keys: KeysConfig::default(),
            usage: UsageConfig::default(),
            cors: CorsConfig::default(),
            webhooks: WebhooksConfig::default(),
            billing: BillingConfig::default(),
            scopes: Vec::new(),
            routes: Vec::new(),
            forward_auth: ForwardAuthConfig::default(),
            telemetry: TelemetryConfig::default(),
            cluster: ClusterConfig::default(),
            ui: ui::UiConfig::default(),
            dev: DevConfig::default(),
        }
    }
}

impl Config {
    /// The public URL, or `http://{listen}` when none is configured (local mode).
    pub fn effective_public_url(&self) -> url::Url {
        match &self.public_url {
            Some(url) => url.clone(),
            None => {
                let host = match self.listen.ip() {
                    ip if ip.is_unspecified() => "127.0.0.1".to_string(),
                    std::net::IpAddr::V6(ip) => format!("[{ip}]"),
                    ip => ip.to_string(),
                };
                url::Url::parse(&format!("http://{host}:{}/", self.listen.port()))
                    .expect("a socket address always forms a valid URL")
            }
        }
    }

    /// The PostgreSQL URL when `database.url` names one; `None` for SQLite.
    pub fn postgres_url(&self) -> Option<&str> {
        self.database
            .url
            .as_ref()
            .map(|u| u.expose().trim())
            .filter(|u| !u.is_empty())
    }

    /// Whether this node keeps its data in PostgreSQL (several nodes may
    /// share it) rather than in its own SQLite file.
    pub fn uses_postgres(&self) -> bool {
        self.postgres_url().is_some()
    }

    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("gatehouse.db")
    }

    /// Billing is on when a Stripe webhook secret or any plan is configured.
    pub fn billing_enabled(&self) -> bool {
        self.billing.stripe_webhook_secret.is_some() || !self.billing.plans.is_empty()
    }
}

/// An IP network in CIDR form; a bare address means that single host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct Cidr(pub ipnet::IpNet);

impl Cidr {
    /// Compared in canonical form: `::ffff:10.1.2.3` is `10.1.2.3`, whether
    /// the address or the network is written as IPv4-mapped IPv6.
    pub fn contains(&self, ip: &std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        match (ip.to_canonical(), self.0) {
            (IpAddr::V4(v4), ipnet::IpNet::V6(_)) => {
                self.0.contains(&IpAddr::V6(v4.to_ipv6_mapped()))
            }
            (ip, net) => net.contains(&ip),
        }
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(net) = s.parse::<ipnet::IpNet>() {
            return Ok(Cidr(net.trunc()));
        }
        s.parse::<std::net::IpAddr>()
            .map(|ip| Cidr(ipnet::IpNet::from(ip)))
            .map_err(|_| format!("`{s}` is not an IP address or CIDR network"))
    }
}

impl From<Cidr> for String {
    fn from(c: Cidr) -> String {
        c.0.to_string()
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct LogConfig {
    /// A tracing filter directive (`info`, `gatehouse=debug,actix_web=warn`).
    /// Libraries stay at `info` or above whatever it says
    /// (`crate::telemetry::library_cap`).
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct HttpConfig {
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Worker threads; 0 = one per CPU core.
    pub workers: usize,
    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT; then
    /// as long again for webhook deliveries and mail being sent.
    pub shutdown_timeout_secs: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_body_bytes: 64 * 1024,
            workers: 0,
            shutdown_timeout_secs: 10,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    Off,
    Normal,
    #[default]
    Full,
    Extra,
}

impl Synchronous {
    pub fn as_str(self) -> &'static str {
        match self {
            Synchronous::Off => "OFF",
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
            Synchronous::Extra => "EXTRA",
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct DatabaseConfig {
    /// Empty (default): SQLite at `<data_dir>/gatehouse.db`. A
    /// `postgres://` or `postgresql://` URL: that PostgreSQL database
    /// (libpq URL parameters such as `sslmode` honoured).
    pub url: Option<Secret>,
    pub url_file: Option<PathBuf>,
    /// `full` (default): an acknowledged write survives a power cut.
    pub synchronous: Synchronous,
    pub busy_timeout_ms: u64,
    pub pool_size: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: None,
            url_file: None,
            synchronous: Synchronous::Full,
            busy_timeout_ms: 5000,
            pool_size: 8,
        }
    }
}

/// Several nodes on one database (SPEC section 14).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct ClusterConfig {
    /// While this node is not following the key change feed (its
    /// subscription lost, the database unreachable), a cached key older
    /// than this is read again from the database before it is trusted, and
    /// the check fails closed (503) when that read fails.
    pub max_staleness_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            max_staleness_ms: 1000,
        }
    }
}

/// Shared rate-limit windows for several nodes (SPEC section 14).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]` or `rediss://` (TLS); unset
    /// = every node keeps its own windows.
    pub url: Option<Secret>,
    pub url_file: Option<PathBuf>,
    /// Prepended to every Redis key Gatehouse writes, so deployments (or
    /// tests) can share one Redis.
    pub key_prefix: String,
    /// How long a check waits for Redis before it decides on the node's own
    /// window instead.
    pub timeout_ms: u64,
    /// While Redis is unreachable, how often to try it again.
    pub probe_interval_ms: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: None,
            url_file: None,
            key_prefix: "gatehouse:".into(),
            timeout_ms: 50,
            probe_interval_ms: 1000,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, Default)]
#[serde(default)]
pub struct SecretsConfig {
    /// Keys the HMAC of session tokens and CSRF tokens. At least 32 bytes.
    pub session_key: Option<Secret>,
    pub session_key_file: Option<PathBuf>,
    /// Bearer token for `/metrics` outside local mode. At least 32 bytes.
    pub ops_token: Option<Secret>,
    pub ops_token_file: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    #[default]
    Starttls,
    Tls,
    None,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct SmtpConfig {
    pub host: Option<String>,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub password_file: Option<PathBuf>,
    pub from: String,
    pub tls: SmtpTls,
    /// Seconds before an SMTP conversation is abandoned (and retried later).
    pub timeout_secs: u64,
    /// First retry delay after a failed delivery; doubles each attempt.
    pub retry_base_secs: u64,
    /// Longest delay between two attempts.
    pub retry_max_secs: u64,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            host: None,
            port: 587,
            username: None,
            password: None,
            password_file: None,
            from: "Gatehouse <gatehouse@localhost>".into(),
            tls: SmtpTls::Starttls,
            timeout_secs: 15,
            retry_base_secs: 5,
            retry_max_secs: 900,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Signup {
    #[default]
    Open,
    Invite,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct AuthConfig {
    pub signup: Signup,
    pub code_length: u32,
    pub code_ttl_secs: u64,
    pub code_max_attempts: u32,
    pub send_code_interval_secs: u64,
    pub send_code_per_hour: u32,
    pub send_code_per_ip_per_hour: u32,
    pub access_ttl_secs: u64,
    pub session_idle_secs: u64,
    pub session_max_secs: u64,
    pub refresh_reuse_grace_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            signup: Signup::Open,
            code_length: 6,
            code_ttl_secs: 600,
            code_max_attempts: 5,
            send_code_interval_secs: 60,
            send_code_per_hour: 10,
            send_code_per_ip_per_hour: 30,
            access_ttl_secs: 3600,
            session_idle_secs: 24 * 3600,
            session_max_secs: 7 * 24 * 3600,
            refresh_reuse_grace_secs: 10,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct RateLimitConfig {
    pub limit: u32,
    pub window_secs: u32,
}

impl Default for RateLimitConfig {
    /// `keys.default_rate_limit`: 100 requests per 60 seconds.
    fn default() -> Self {
        RateLimitConfig {
            limit: 100,
            window_secs: 60,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct KeysConfig {
    /// First part of every key: `{prefix}_sk_...`. `[a-z0-9]{2,12}`.
    pub prefix: String,
    pub default_rate_limit: RateLimitConfig,
    /// Keys kept in the in-memory verification cache.
    pub cache_capacity: usize,
    /// Seconds an unknown key is remembered as unknown.
    pub negative_cache_ttl_secs: u64,
    /// Seconds before a cached key's settings are re-read from storage
    /// (picks up changes made by another process, such as the CLI).
    pub cache_ttl_secs: u64,
}

impl Default for KeysConfig {
    fn default() -> Self {
        KeysConfig {
            prefix: "gate".into(),
            default_rate_limit: RateLimitConfig::default(),
            cache_capacity: 100_000,
            negative_cache_ttl_secs: 30,
            cache_ttl_secs: 60,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct UsageConfig {
    pub flush_interval_secs: u64,
}

impl Default for UsageConfig {
    fn default() -> Self {
        UsageConfig {
            flush_interval_secs: 2,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, Default)]
#[serde(default)]
pub struct CorsConfig {
    /// Exact origins (`https://app.example.com`) allowed to call the API from
    /// a browser. Empty: no CORS headers at all.
    pub allowed_origins: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct WebhooksConfig {
    pub retry_delays_secs: Vec<u64>,
    pub allow_private_targets: bool,
    pub timeout_secs: u64,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            retry_delays_secs: vec![5, 300, 1800, 7200, 18000, 36000],
            allow_private_targets: false,
            timeout_secs: 10,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct BillingConfig {
    pub stripe_webhook_secret: Option<Secret>,
    pub stripe_webhook_secret_file: Option<PathBuf>,
    pub default_plan: String,
    pub plans: Vec<PlanConfig>,
}

impl Default for BillingConfig {
    fn default() -> Self {
        BillingConfig {
            stripe_webhook_secret: None,
            stripe_webhook_secret_file: None,
            default_plan: "free".into(),
            plans: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct PlanConfig {
    pub name: String,
    #[serde(default)]
    pub stripe_price_id: Option<String>,
    /// `None`: unlimited.
    #[serde(default)]
    pub max_keys: Option<u64>,
    /// `None`: unlimited.
    #[serde(default)]
    pub monthly_verifications: Option<u64>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct ScopeConfig {
    pub name: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct RouteRule {
    pub path_prefix: String,
    pub scope: String,
}

/// What forward-auth does with path parameters (`;` in a path segment,
/// which Java servlet containers strip, reading `..;` as `..`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PathParameters {
    /// A `;` anywhere in the path: 403 `forbidden`.
    #[default]
    Refuse,
    /// Each segment's `;...` is removed before the path is normalised and
    /// the `[[routes]]` rules are matched.
    Strip,
}

/// Forward-auth (`/api/v1/auth/check`, `crate::keys::forward`).
#[derive(Clone, Debug, Deserialize, Serialize, Default)]
#[serde(default)]
pub struct ForwardAuthConfig {
    pub path_parameters: PathParameters,
}

/// Trace export (`crate::telemetry::traces`). Off unless an endpoint is set
/// here or in the standard `OTEL_EXPORTER_OTLP_*` environment variables.
#[derive(Clone, Debug, Deserialize, Serialize, Default)]
#[serde(default)]
pub struct TelemetryConfig {
    /// Base URL of an OTLP/HTTP collector (`http://127.0.0.1:4318`); spans
    /// are posted to `{otlp_endpoint}/v1/traces`.
    pub otlp_endpoint: Option<url::Url>,
}

#[derive(Clone, Debug, Deserialize, Serialize, Default)]
#[serde(default)]
pub struct DevConfig {
    /// Return login codes in API responses (automated demos). Test-only:
    /// refused outside local mode.
    pub expose_codes: bool,
}

impl DevConfig {
    /// Every test-only toggle that is switched on, by key name.
    pub fn enabled_toggles(&self) -> Vec<&'static str> {
        let mut on = Vec::new();
        if self.expose_codes {
            on.push("dev.expose_codes");
        }
        on
    }
}
