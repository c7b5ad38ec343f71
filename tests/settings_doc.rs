//! docs/settings.md is the settings table of src/cmd/settings.rs, exactly:
//! `corekv config doc` prints the table, and this test fails when the file
//! and the table disagree (regenerate with `corekv config doc > docs/settings.md`).

use crate::common;

use std::process::Command;

#[test]
fn docs_settings_md_is_the_table() {
    let out = Command::new(common::corekv_bin())
        .args(["config", "doc"])
        .output()
        .expect("run corekv config doc");
    assert!(out.status.success(), "{out:?}");
    let generated = String::from_utf8(out.stdout).expect("utf-8");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/settings.md");
    let on_disk = std::fs::read_to_string(path).expect("docs/settings.md exists");
    if generated != on_disk {
        let first = generated
            .lines()
            .zip(on_disk.lines())
            .position(|(a, b)| a != b)
            .map_or_else(
                || "one is a prefix of the other".to_string(),
                |i| {
                    format!(
                        "line {}:\n  table: {}\n  file:  {}",
                        i + 1,
                        generated.lines().nth(i).unwrap_or_default(),
                        on_disk.lines().nth(i).unwrap_or_default()
                    )
                },
            );
        panic!(
            "docs/settings.md disagrees with the settings table ({first}); \
             regenerate it: cargo run -- config doc > docs/settings.md"
        );
    }
    // Every setting `config show` knows has a row (the generator could drop one).
    let show = Command::new(common::corekv_bin())
        .args(["config", "show"])
        .env_clear()
        .output()
        .expect("run corekv config show");
    for l in String::from_utf8_lossy(&show.stdout).lines() {
        let key = l.trim_start_matches("# ").split([' ', '=']).next().unwrap();
        assert!(
            on_disk.contains(&format!("| `{key}` |")),
            "{key} missing from docs/settings.md"
        );
    }
}
