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

/// Rows `| number | NAME | rest… |` of the first Markdown table after
/// `heading` in `doc`: (number, name, the third cell or "").
fn table_after(doc: &str, heading: &str) -> Vec<(u32, String, String)> {
    let start = doc
        .find(heading)
        .unwrap_or_else(|| panic!("no {heading:?} section"));
    let mut rows = Vec::new();
    let mut in_table = false;
    for line in doc[start..].lines().skip(1) {
        let line = line.trim();
        if !line.starts_with('|') {
            if in_table {
                break;
            }
            continue;
        }
        in_table = true;
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let Ok(code) = cells[0].parse::<u32>() else {
            continue; // header or separator
        };
        let name = cells.get(1).unwrap_or(&"").trim_matches('`').to_string();
        rows.push((code, name, cells.get(2).unwrap_or(&"").to_string()));
    }
    rows
}

fn doc(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("docs")
            .join(name),
    )
    .unwrap()
}

/// errors.md's table of wire statuses is the code's list: every status with
/// its number and name, nothing else, and the retry column says "yes" exactly
/// for the statuses the server calls retryable.
#[test]
fn errors_md_status_table_matches_the_code() {
    let rows = table_after(&doc("errors.md"), "## Wire statuses");
    let mut want: Vec<(u32, String)> = Status::ALL
        .iter()
        .map(|s| (u32::from(s.code()), s.name().to_string()))
        .collect();
    let mut got: Vec<(u32, String)> = rows.iter().map(|(c, n, _)| (*c, n.clone())).collect();
    want.sort();
    got.sort();
    assert_eq!(
        got, want,
        "errors.md's wire status table vs src/core/status.rs"
    );
    for (code, name, retry) in &rows {
        let status = Status::from_code(*code as u16).unwrap();
        if status.is_ok() {
            continue;
        }
        assert_eq!(
            retry.starts_with("yes"),
            status.retryable(),
            "{name}: errors.md says retry {retry:?}, the code says retryable = {}",
            status.retryable()
        );
    }
}

/// protocol.md's status table lists every status, and its retry paragraph
/// names every retryable one; its operations table lists every opcode.
#[test]
fn protocol_md_matches_the_code() {
    use corekv::net::codec::Opcode;
    let protocol = doc("protocol.md");
    let mut got: Vec<(u32, String)> = table_after(&protocol, "## Status codes")
        .into_iter()
        .map(|(c, n, _)| (c, n))
        .collect();
    let mut want: Vec<(u32, String)> = Status::ALL
        .iter()
        .map(|s| (u32::from(s.code()), s.name().to_string()))
        .collect();
    got.sort();
    want.sort();
    assert_eq!(
        got, want,
        "protocol.md's status table vs src/core/status.rs"
    );

    let retry = protocol
        .split("**Which statuses to retry.**")
        .nth(1)
        .and_then(|rest| rest.split("\n\n").next())
        .expect("protocol.md has a 'Which statuses to retry' paragraph");
    for s in Status::ALL.iter().filter(|s| s.retryable()) {
        assert!(
            retry.contains(&format!("`{}`", s.name())),
            "protocol.md's retry paragraph omits {}",
            s.name()
        );
    }

    let mut ops: Vec<(u32, String)> = table_after(&protocol, "## Operations")
        .into_iter()
        .map(|(c, n, _)| (c, n))
        .collect();
    let mut want_ops: Vec<(u32, String)> = Opcode::ALL
        .iter()
        .map(|o| (u32::from(*o as u8), o.name().to_string()))
        .collect();
    ops.sort();
    want_ops.sort();
    assert_eq!(ops, want_ops, "protocol.md's operations table vs the codec");
}
