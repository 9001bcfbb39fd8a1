//! deploy/gatehouse.service: `systemd-analyze verify` accepts it without a
//! single warning, and `systemd-analyze security --offline=true` rates its
//! sandbox no worse than the figure the README states. End-to-end: skipped
//! without systemd-analyze unless GATEHOUSE_REQUIRE_E2E is set.

use std::path::Path;
use std::process::Command;

use crate::helpers::{e2e_available, gatehouse, run, BIN};

/// The exposure score `systemd-analyze security` gives the unit (0 = fully
/// sandboxed, 10 = no sandbox). Keep in step with docs/service.md.
const MAX_EXPOSURE: f64 = 1.2;

fn systemd_analyze_available() -> bool {
    Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn unit_text() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/gatehouse.service"))
        .unwrap()
}

/// The unit with its binary path pointing at the binary under test (the only
/// change), in a directory of its own, plus the manual pages it names.
fn prepared_unit(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let text = unit_text();
    assert!(
        text.contains("ExecStart=/usr/local/bin/gatehouse serve"),
        "the unit runs /usr/local/bin/gatehouse serve"
    );
    let unit = dir.join("gatehouse.service");
    std::fs::write(&unit, text.replace("/usr/local/bin/gatehouse", BIN)).unwrap();
    let man = dir.join("man");
    let out = run(gatehouse(dir)
        .arg("man")
        .arg("--out-dir")
        .arg(man.join("man1")));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    (unit, man)
}

#[test]
fn the_unit_passes_systemd_analyze_verify_without_warnings() {
    if !e2e_available(systemd_analyze_available(), "systemd-analyze") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (unit, man) = prepared_unit(dir.path());
    // MANPATH lets verify find gatehouse(1), which Documentation= names.
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .env("MANPATH", &man)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "verify failed:\n{stdout}{stderr}");
    assert!(
        stdout.trim().is_empty() && stderr.trim().is_empty(),
        "verify reported:\n{stdout}{stderr}"
    );
}

#[test]
fn the_unit_sandbox_scores_within_the_stated_exposure() {
    if !e2e_available(systemd_analyze_available(), "systemd-analyze") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (unit, _) = prepared_unit(dir.path());
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no overall score in:\n{stdout}"));
    // "→ Overall exposure level for gatehouse.service: 1.2 OK 🙂"
    let score: f64 = line
        .rsplit(':')
        .next()
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the score in {line:?}"));
    assert!(
        score <= MAX_EXPOSURE,
        "exposure rose to {score} (allowed {MAX_EXPOSURE}):\n{stdout}"
    );
    assert!(line.contains(" OK") || line.contains("SAFE"), "{line}");
}

#[test]
fn the_unit_hands_secrets_over_as_credentials_to_the_file_settings() {
    let text = unit_text();
    for (credential, variable) in [
        ("session_key", "GATEHOUSE_SECRETS__SESSION_KEY_FILE"),
        ("ops_token", "GATEHOUSE_SECRETS__OPS_TOKEN_FILE"),
    ] {
        assert!(
            text.contains(&format!(
                "\nLoadCredential={credential}:/etc/gatehouse/credentials/{credential}\n"
            )),
            "{credential} is loaded as a credential"
        );
        assert!(
            text.contains(&format!("\nEnvironment={variable}=%d/{credential}\n")),
            "{variable} points at the credential"
        );
    }
    // The settings those variables name exist (an unknown GATEHOUSE_*
    // variable would be reported as a typo at start).
    let dir = tempfile::tempdir().unwrap();
    let session = crate::helpers::write(
        dir.path(),
        "session_key",
        &gatehouse::config::generate_secret(),
    );
    let ops = crate::helpers::write(
        dir.path(),
        "ops_token",
        &gatehouse::config::generate_secret(),
    );
    let out = run(gatehouse(dir.path())
        .arg("check-config")
        .env("GATEHOUSE_SECRETS__SESSION_KEY_FILE", &session)
        .env("GATEHOUSE_SECRETS__OPS_TOKEN_FILE", &ops));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(!out.stderr.contains("unknown"), "{}", out.stderr);
    assert!(!out.stderr.contains("secrets."), "{}", out.stderr);
}
