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
