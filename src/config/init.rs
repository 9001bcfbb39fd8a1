//! `gatehouse init`: a complete configuration file with fresh secrets.

use std::path::Path;

use super::check::check_public_url;
use super::{generate_secret, Mode, Report};

/// The data directory `init` writes when `--data-dir` is not given, made
/// absolute against the current directory.
pub const DEFAULT_DATA_DIR: &str = "gatehouse-data";

/// What `gatehouse init` was asked for.
pub struct InitRequest<'a> {
    pub mode: Mode,
    pub public_url: Option<&'a str>,
    /// Written as given: the caller makes it absolute.
    pub data_dir: &'a Path,
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// The file would be refused by the startup checks (the same report
    /// `check-config` prints).
    #[error("{}", .0.render_check())]
    Refused(Report),
    #[error("the data directory {0} is not valid UTF-8")]
    DataDirNotUtf8(String),
    #[error("{0} already exists; init never overwrites a file (choose another --out)")]
    Exists(String),
    #[error("--public-url is required for {0} mode")]
    PublicUrlRequired(&'static str),
    #[error("--public-url must be an absolute http(s) URL: {0}")]
    BadUrl(String),
    #[error("cannot write {0}: {1}")]
    Io(String, std::io::Error),
}

/// The configuration text for `mode`, with freshly generated secrets.
/// `data_dir` is a TOML string literal.
pub fn render(mode: Mode, public_url: Option<&url::Url>, data_dir: &str) -> String {
    let public_url_line = match public_url {
        Some(url) => format!("public_url = \"{}\"", url.as_str().trim_end_matches('/')),
        None => "# public_url = \"https://keys.acme.test\"   # required outside local mode".into(),
    };
    let smtp_host_line = if mode.is_local() {
        "# host = \"smtp.acme.test\"   # local mode shows mail in the local mailbox instead"
    } else {
        "# host = \"smtp.acme.test\"   # REQUIRED: the server that delivers login codes"
    };
    format!(
        r#"# Gatehouse configuration, written by `gatehouse init --mode {mode}`.
# Every key and its default is documented in config.example.toml.
# This file holds secrets: keep it private (it was created with mode 0600).

mode = "{mode}"
{public_url_line}
# Where Gatehouse listens. Behind a reverse proxy on the same host keep it on loopback.
listen = "127.0.0.1:8080"
# Where gatehouse.db lives. A relative path would resolve against the directory
# Gatehouse is started in (under systemd: /), so this one is absolute.
data_dir = {data_dir}
# Reverse proxies whose X-Forwarded-For / X-Forwarded-Proto are believed (CIDR list).
trusted_proxies = ["127.0.0.1/32", "::1/128"]

[log]
level = "info"
format = "{log_format}"

[secrets]
session_key = "{session_key}"
ops_token = "{ops_token}"

[smtp]
{smtp_host_line}
port = 587
tls = "starttls"
# username = "gatehouse"
# password_file = "/run/secrets/gatehouse-smtp-password"
from = "Gatehouse <keys@acme.test>"

[auth]
# "open": anyone with a working address may sign up; "invite": only existing
# users and invited addresses.
signup = "{signup}"
"#,
        mode = mode.as_str(),
        log_format = if mode.is_local() { "text" } else { "json" },
        session_key = generate_secret(),
        ops_token = generate_secret(),
        signup = if mode.is_local() { "open" } else { "invite" },
    )
}

/// Writes the file, refusing to replace anything that exists, and refusing a
/// public URL that the startup checks would refuse for the mode.
pub fn write(out: &Path, request: &InitRequest) -> Result<(), InitError> {
    let mode = request.mode;
    let url = match request.public_url {
        Some(raw) => {
            let url = url::Url::parse(raw).map_err(|_| InitError::BadUrl(raw.to_string()))?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(InitError::BadUrl(raw.to_string()));
            }
            Some(url)
        }
        None if mode.is_local() => None,
        None => return Err(InitError::PublicUrlRequired(mode.as_str())),
    };
    if !mode.is_local() {
        let mut findings = Vec::new();
        check_public_url(url.as_ref(), &mut findings);
        let report = Report::new(mode, findings);
        if report.refuses() {
            return Err(InitError::Refused(report));
        }
    }
    let data_dir = request
        .data_dir
        .to_str()
        .ok_or_else(|| InitError::DataDirNotUtf8(request.data_dir.display().to_string()))?;
    let data_dir = toml::Value::String(data_dir.to_string()).to_string();
    let text = render(mode, url.as_ref(), &data_dir);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let display = out.display().to_string();
    let mut file = options.open(out).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => InitError::Exists(display.clone()),
        _ => InitError::Io(display.clone(), e),
    })?;
    use std::io::Write;
    file.write_all(text.as_bytes())
        .and_then(|_| file.sync_all())
        .map_err(|e| InitError::Io(display, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn rendered_config_parses_and_has_fresh_secrets() {
        let url: url::Url = "https://keys.acme.test".parse().unwrap();
        let dir = "\"/var/lib/gatehouse\"";
        let a: Config = toml::from_str(&render(Mode::Production, Some(&url), dir)).unwrap();
        let b: Config = toml::from_str(&render(Mode::Production, Some(&url), dir)).unwrap();
        assert_eq!(a.data_dir, std::path::Path::new("/var/lib/gatehouse"));
        assert_eq!(a.mode, Mode::Production);
        assert_eq!(
            a.public_url.as_ref().unwrap().as_str(),
            "https://keys.acme.test/"
        );
        assert_ne!(a.secrets.session_key, b.secrets.session_key);
        assert!(a.smtp.host.is_none());
    }

    #[test]
    fn never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("g.toml");
        std::fs::write(&out, "keep me").unwrap();
        let err = write(&out, &request(Mode::Local, None)).unwrap_err();
        assert!(matches!(err, InitError::Exists(_)));
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "keep me");
    }

    #[test]
    fn production_needs_a_public_url() {
        let dir = tempfile::tempdir().unwrap();
        let err = write(&dir.path().join("g.toml"), &request(Mode::Production, None)).unwrap_err();
        assert!(matches!(err, InitError::PublicUrlRequired("production")));
    }

    fn request(mode: Mode, public_url: Option<&str>) -> InitRequest<'_> {
        InitRequest {
            mode,
            public_url,
            data_dir: Path::new("/srv/gatehouse data/\"quoted\""),
        }
    }

    #[test]
    fn a_plain_http_url_is_refused_outside_local_mode_with_the_checks_message() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("g.toml");
        let err = write(
            &out,
            &request(Mode::Production, Some("http://keys.acme.test")),
        )
        .unwrap_err();
        let InitError::Refused(report) = err else {
            panic!("expected a refusal, got {err:?}");
        };
        let mut findings = Vec::new();
        check_public_url(
            Some(&"http://keys.acme.test".parse().unwrap()),
            &mut findings,
        );
        assert_eq!(
            report.render(),
            Report::new(Mode::Production, findings).render()
        );
        assert!(report
            .render()
            .contains("public_url: must start with https://"));
        assert!(!out.exists());
        write(&out, &request(Mode::Local, Some("http://keys.acme.test"))).unwrap();
    }

    #[test]
    fn the_data_directory_is_written_as_given_and_quoted() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("g.toml");
        write(&out, &request(Mode::Local, None)).unwrap();
        let config: Config = toml::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        assert_eq!(config.data_dir, Path::new("/srv/gatehouse data/\"quoted\""));
    }
}
