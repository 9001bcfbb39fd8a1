//! The documentation stands alone: README.md and docs/ link only to files
//! that exist inside the repository (web pages aside),
//! and docs/configuration.md names every setting the code knows.

use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn documents() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("a docs/ folder")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    assert!(docs.len() >= 5, "{docs:?}");
    files.extend(docs);
    files
}

/// Markdown link targets: `[text](target)`.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices("](") {
        let rest = &text[i + 2..];
        if let Some(end) = rest.find(')') {
            out.push(rest[..end].to_string());
        }
    }
    out
}

#[test]
fn documents_link_only_inside_the_repository() {
    let repo = root().canonicalize().unwrap();
    for file in documents() {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.strip_prefix(root()).unwrap().display().to_string();
        for banned in ["../shared", "SPEC.md", "SPEC section"] {
            assert!(!text.contains(banned), "{name} refers to {banned}");
        }
        for target in links(&text) {
            // Web pages are fine; files must be the repository's own.
            if target.starts_with("https://")
                || target.starts_with("http://")
                || target.starts_with('#')
            {
                continue;
            }
            assert!(
                !target.contains("://"),
                "{name} links to a file outside the repository: {target}"
            );
            let path = target.split('#').next().unwrap();
            let resolved = file.parent().unwrap().join(path);
            let resolved = resolved
                .canonicalize()
                .unwrap_or_else(|_| panic!("{name} links to {target}, which does not exist"));
            assert!(
                resolved.starts_with(&repo),
                "{name} links outside the repository: {target}"
            );
        }
    }
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    assert!(
        readme.contains("](docs/README.md)"),
        "the README links to docs/"
    );
}

#[test]
fn the_configuration_reference_names_every_setting() {
    let text = std::fs::read_to_string(root().join("docs/configuration.md")).unwrap();
    let defaults = serde_json::to_value(gatehouse::config::Config::default()).unwrap();
    // A setting is named in backticks in its table's section, possibly with
    // its parent (`default_rate_limit.limit`); a list of tables as `[[name]]`.
    let described = |path: &str| {
        let leaf = path.rsplit('.').next().unwrap();
        let named = text.contains(&format!("`{leaf}`"))
            || text.contains(&format!(".{leaf}`"))
            || text.contains(&format!("`{leaf},"))
            || text.contains(&format!(" {leaf}`"));
        let table = path.split('.').next().unwrap();
        let section = path == table
            || text.contains(&format!("[{table}]"))
            || text.contains(&format!("`{table}."));
        (named && section) || text.contains(&format!("[[{path}]]"))
    };
    let mut missing = Vec::new();
    let mut stack = vec![(String::new(), &defaults)];
    while let Some((path, value)) = stack.pop() {
        match value {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    let child = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    stack.push((child, v));
                }
            }
            _ if !described(&path) => missing.push(path),
            _ => {}
        }
    }
    assert!(
        missing.is_empty(),
        "docs/configuration.md does not describe {missing:?}"
    );
}

/// docs/several-nodes.md's "same on every node" configuration, its files
/// written as it says: check-config accepts it (before the schema exists,
/// with a warning that serve will create it), and nodes serve with it
/// without a data directory and without PostgreSQL's notices in the log.
#[test]
fn the_several_nodes_configuration_passes_check_config_and_serves() {
    use crate::helpers::{gatehouse, run, Server};
    let Some(pg) = crate::pg::TestDb::create() else {
        crate::helpers::e2e_available(false, "PostgreSQL");
        return;
    };
    let text = std::fs::read_to_string(root().join("docs/several-nodes.md")).unwrap();
    let start = text.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let block = &text[start..start + text[start..].find("```").unwrap()];
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    let config = block.replace("/etc/gatehouse/", &format!("{}/", etc.display()));
    let redis = std::env::var("GATEHOUSE_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string());
    let secret = gatehouse::config::generate_secret;
    for (file, value) in [
        ("gatehouse.toml", config),
        ("database-url", pg.url.clone()),
        ("redis-url", redis),
        ("session-key", secret()),
        ("ops-token", secret()),
        ("smtp-password", secret()),
    ] {
        std::fs::write(etc.join(file), value).unwrap();
    }
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let config = etc.join("gatehouse.toml");

    let out = run(gatehouse(&work)
        .arg("check-config")
        .arg("--config")
        .arg(&config));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr.contains("there is no Gatehouse schema in"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("data_dir"), "{}", out.stderr);

    // The first start creates the schema, the second finds it.
    for start in ["first", "second"] {
        let server = Server::start(
            gatehouse(&work)
                .args(["serve", "--listen", "127.0.0.1:0", "--config"])
                .arg(&config),
        );
        // Ready once its database and its Redis answer (Redis is connected
        // in the background after the server starts listening).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while server.get("/readyz").status != 200 {
            assert!(
                std::time::Instant::now() < deadline,
                "{start} start: not ready after 20 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let (code, stdout, stderr) = server.terminate();
        assert_eq!(code, Some(0), "{stderr}");
        let output = format!("{}\n{stderr}", stdout.join("\n"));
        assert!(output.contains("INFO"), "the log is read:\n{output}");
        assert!(!output.contains("NOTICE"), "{start} start:\n{output}");
        assert!(!output.contains("data_dir"), "{start} start:\n{output}");
        assert!(
            !work.join("gatehouse-data").exists(),
            "{start} start created a data directory"
        );
    }
    let out = run(gatehouse(&work)
        .arg("check-config")
        .arg("--config")
        .arg(&config));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stderr.trim().is_empty(), "{}", out.stderr);
}

/// The README's first paragraph names both backends: SQLite by default,
/// PostgreSQL for several nodes.
#[test]
fn the_readme_introduction_names_both_storage_backends() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let intro = readme.split("\n\n").nth(1).unwrap();
    assert!(
        intro.contains("SQLite file by default") && intro.contains("PostgreSQL"),
        "{intro}"
    );
}
