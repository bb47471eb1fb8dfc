//! The documents that name tests (`SECURITY.md`, `RELIABILITY.md`) name
//! tests that exist: a renamed or removed test cannot leave a defence
//! described as held by nothing.

use std::collections::BTreeSet;
use std::path::Path;

/// Every `async fn` and `fn` name under `tests/api`.
fn test_functions(dir: &Path, names: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            test_functions(&path, names);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            for line in text.lines() {
                let line = line.trim_start();
                let rest = line
                    .strip_prefix("async fn ")
                    .or_else(|| line.strip_prefix("fn "));
                if let Some(rest) = rest {
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    names.insert(name);
                }
            }
        }
    }
}

/// The test names a document cites as `` `module::…::name` ``: the last
/// segment of each backticked path of lowercase words whose first segment
/// is a test module (a file or folder of `tests/api`).
fn cited(text: &str, modules: &BTreeSet<String>) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|span| span.contains("::"))
        .filter(|span| {
            span.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == ':')
        })
        .filter(|span| modules.contains(span.split("::").next().unwrap()))
        .map(|span| {
            span.trim_end_matches("::*")
                .rsplit("::")
                .next()
                .unwrap()
                .to_owned()
        })
        .filter(|name| !name.is_empty() && name != "*")
        .collect()
}

#[test]
fn the_tests_security_and_reliability_cite_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let api = root.join("tests/api");
    let mut names = BTreeSet::new();
    test_functions(&api, &mut names);
    let modules: BTreeSet<String> = std::fs::read_dir(&api)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    let mut checked = 0;
    let mut missing = Vec::new();
    for document in ["SECURITY.md", "RELIABILITY.md"] {
        let text = std::fs::read_to_string(root.join(document)).unwrap();
        for name in cited(&text, &modules) {
            checked += 1;
            if !names.contains(&name) {
                missing.push(format!("{document}: {name}"));
            }
        }
    }
    assert!(checked > 30, "only {checked} citations found");
    assert!(
        missing.is_empty(),
        "cited tests that do not exist:\n{}",
        missing.join("\n")
    );
}
