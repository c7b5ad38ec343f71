//! Every error name the code can produce is documented in docs/errors.md.
//!
//! Names are found two ways: every wire status, and every upper-case string
//! literal returned from a match arm (`=> "NAME"`), logged as `error = "NAME"`
//! or passed to `startup_failed("NAME"` anywhere under src/, which is how every
//! error type spells its `name()`.

use std::path::Path;

use corekv::core::status::Status;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Upper-case literals that follow `=>` or `error =` (whitespace allowed).
fn names_in(source: &str) -> Vec<String> {
    let mut names = Vec::new();
    for marker in ["=>", "error =", "startup_failed("] {
        for (i, _) in source.match_indices(marker) {
            let rest = source[i + marker.len()..].trim_start();
            let Some(rest) = rest.strip_prefix('"') else {
                continue;
            };
            let Some(end) = rest.find('"') else { continue };
            let lit = &rest[..end];
            let is_name = lit.len() >= 3
                && lit
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                && lit.contains('_');
            if is_name {
                names.push(lit.to_string());
            }
        }
    }
    names
}

#[test]
fn every_error_name_is_documented() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/errors.md")).unwrap();
    let mut names: Vec<String> = Status::ALL.iter().map(|s| s.name().to_string()).collect();
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    for f in &files {
        names.extend(names_in(&std::fs::read_to_string(f).unwrap()));
    }
    names.sort();
    names.dedup();
    assert!(
        names.len() > 30,
        "the scan found too few names to be working: {names:?}"
    );
    let missing: Vec<_> = names
        .iter()
        .filter(|n| !doc.contains(&format!("### {n}\n")))
        .collect();
    assert!(
        missing.is_empty(),
        "error names missing a `### NAME` entry in docs/errors.md: {missing:?}"
    );
}

#[test]
fn scanner_finds_names_it_should() {
    let src = "match x { A => \"SOME_ERROR\", B =>\n  \"OTHER_ONE\", C => \"lower\" }\n error = \"LOGGED_NAME\"";
    assert_eq!(names_in(src), ["SOME_ERROR", "OTHER_ONE", "LOGGED_NAME"]);
}
