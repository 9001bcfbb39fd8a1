//! `gatehouse completions` and `gatehouse man`: the bash script is sourced
//! in a real bash and asked to complete, the manual page is rendered by
//! `man -l`. Both need programs outside Rust: skipped without them unless
//! GATEHOUSE_REQUIRE_E2E is set.

use std::path::Path;
use std::process::Command;

use crate::helpers::{e2e_available, gatehouse, run};

fn available(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// What bash completes for `line` (the cursor at its end), one word a line.
fn complete(script: &Path, line: &str) -> Vec<String> {
    // COMP_WORDS as bash itself splits a command line; an empty last word
    // when the line ends in a space.
    let program = format!(
        r#"source {script}
line={line:?}
read -r -a COMP_WORDS <<< "$line"
[[ "$line" == *" " ]] && COMP_WORDS+=("")
COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
COMP_LINE="$line"
COMP_POINT=${{#line}}
cur="${{COMP_WORDS[COMP_CWORD]}}"
prev="${{COMP_WORDS[COMP_CWORD-1]}}"
complete -p gatehouse >/dev/null || exit 3
_gatehouse gatehouse "$cur" "$prev"
printf '%s\n' "${{COMPREPLY[@]}}"
"#,
        script = script.display()
    );
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &program])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bash failed for {line:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

#[test]
fn bash_completes_subcommands_and_flags() {
    if !e2e_available(available("bash", "--version"), "bash") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = run(gatehouse(dir.path()).args(["completions", "bash"]));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let script = dir.path().join("gatehouse.bash");
    std::fs::write(&script, &out.stdout).unwrap();

    let top = complete(&script, "gatehouse ");
    for sub in [
        "serve",
        "init",
        "check-config",
        "migrate",
        "backup",
        "users",
        "keys",
        "billing",
        "completions",
        "man",
    ] {
        assert!(top.iter().any(|w| w == sub), "{sub} in {top:?}");
    }

    assert_eq!(complete(&script, "gatehouse che"), ["check-config"]);

    let keys = complete(&script, "gatehouse keys ");
    for sub in ["create", "list", "revoke", "import"] {
        assert!(keys.iter().any(|w| w == sub), "{sub} in {keys:?}");
    }

    let create = complete(&script, "gatehouse keys create --");
    for flag in [
        "--project",
        "--name",
        "--scopes",
        "--type",
        "--config",
        "--data-dir",
    ] {
        assert!(create.iter().any(|w| w == flag), "{flag} in {create:?}");
    }
    // Flags belong to their subcommand: serve's are not offered to init.
    let init = complete(&script, "gatehouse init --");
    assert!(init.iter().any(|w| w == "--public-url"), "{init:?}");
    assert!(init.iter().any(|w| w == "--out"), "{init:?}");
    assert!(!init.iter().any(|w| w == "--listen"), "{init:?}");

    // Values of an enum flag.
    let modes = complete(&script, "gatehouse serve --mode ");
    assert_eq!(modes, ["local", "staging", "production"]);
    let shells = complete(&script, "gatehouse completions ");
    for shell in ["bash", "zsh", "fish"] {
        assert!(shells.iter().any(|w| w == shell), "{shell} in {shells:?}");
    }
}

#[test]
fn zsh_and_fish_scripts_name_every_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    for (shell, marker) in [
        ("zsh", "#compdef gatehouse"),
        ("fish", "complete -c gatehouse"),
    ] {
        let out = run(gatehouse(dir.path()).args(["completions", shell]));
        assert_eq!(out.code, Some(0), "{shell}: {}", out.stderr);
        assert!(
            out.stdout.contains(marker),
            "{shell} script:\n{}",
            out.stdout
        );
        for sub in ["check-config", "backup", "completions", "man"] {
            assert!(out.stdout.contains(sub), "{shell} script lacks {sub}");
        }
    }
    let out = run(gatehouse(dir.path()).args(["completions", "tcsh"]));
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("possible values"), "{}", out.stderr);
}

#[test]
fn the_manual_page_renders_with_man() {
    if !e2e_available(available("man", "--version"), "man (man-db)") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = run(gatehouse(dir.path()).arg("man"));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.starts_with(".ie") || out.stdout.contains(".TH gatehouse 1"));
    let page = dir.path().join("gatehouse.1");
    std::fs::write(&page, &out.stdout).unwrap();

    let rendered = Command::new("man")
        .arg("-l")
        .arg(&page)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .env("LANG", "C.UTF-8")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&rendered.stdout);
    let errors = String::from_utf8_lossy(&rendered.stderr);
    assert!(rendered.status.success(), "man -l failed: {errors}");
    // groff reports markup it cannot handle on stderr.
    assert!(errors.trim().is_empty(), "man -l warned: {errors}");
    // Bold and underline come out as overstrikes when not on a terminal.
    let plain: String = {
        let mut s = String::new();
        for c in text.chars() {
            if c == '\u{8}' {
                s.pop();
            } else {
                s.push(c);
            }
        }
        s
    };
    for needle in [
        "NAME",
        "gatehouse - Self-hosted API keys and email-code login in one binary",
        "SYNOPSIS",
        "--config",
        "SUBCOMMANDS",
        "gatehouse-check-config(1)",
        "ENVIRONMENT",
        "GATEHOUSE_<KEY>",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "EXIT STATUS",
        "DATA_DIR/gatehouse.lock",
    ] {
        assert!(plain.contains(needle), "{needle:?} in:\n{plain}");
    }
    // The synopsis says what each option takes.
    let synopsis = plain
        .split("SYNOPSIS")
        .nth(1)
        .and_then(|rest| rest.split("DESCRIPTION").next())
        .unwrap();
    let synopsis = synopsis.split_whitespace().collect::<Vec<_>>().join(" ");
    for needle in [
        "gatehouse [--config FILE] [--data-dir DIR] [--mode MODE] [--listen ADDR] [--public-url URL]",
        "[COMMAND]",
    ] {
        assert!(synopsis.contains(needle), "{needle:?} in {synopsis:?}");
    }

    // Every page into a directory: one per subcommand, each renders.
    let pages = dir.path().join("man1");
    let out = run(gatehouse(dir.path()).args(["man", "--out-dir"]).arg(&pages));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    // Every page gatehouse(1) refers to is among them (no gatehouse-help(1)).
    for word in plain.split_whitespace() {
        if let Some(name) = word.strip_suffix("(1)") {
            if name.starts_with("gatehouse-") {
                assert!(
                    pages.join(format!("{name}.1")).is_file(),
                    "gatehouse(1) names {word}, which is not written"
                );
            }
        }
    }
    for name in [
        "gatehouse.1",
        "gatehouse-serve.1",
        "gatehouse-keys-create.1",
        "gatehouse-users-add.1",
        "gatehouse-billing-link.1",
    ] {
        let rendered = Command::new("man")
            .arg("-l")
            .arg(pages.join(name))
            .env("MANPAGER", "cat")
            .output()
            .unwrap();
        assert!(rendered.status.success(), "{name}");
        assert!(
            rendered.stderr.is_empty(),
            "{name}: {}",
            String::from_utf8_lossy(&rendered.stderr)
        );
        assert!(!rendered.stdout.is_empty(), "{name}");
    }
}
