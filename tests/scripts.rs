//! The operator scripts in tuning/ and perf/ do what they print (issue 22,
//! finding 5 and 7): tuning/apply.sh's dry run counts every change it lists
//! (it said "4" while listing 6: the IRQ loop ran in a pipeline subshell) and
//! changes nothing; every script parses.

use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn apply_dry_run_counts_what_it_lists_and_changes_nothing() {
    let swappiness = std::fs::read_to_string("/proc/sys/vm/swappiness").ok();
    let o = Command::new("bash")
        .arg(root().join("tuning/apply.sh"))
        .args([
            "--data-dir",
            env!("CARGO_MANIFEST_DIR"),
            "--irq-cpus",
            "0",
            "--shard-cpus",
            "1",
        ])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let listed = out.lines().filter(|l| l.starts_with("would set")).count();
    let said: usize = out
        .lines()
        .find_map(|l| l.strip_prefix("dry run: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no dry-run count in:\n{out}"));
    assert_eq!(
        said, listed,
        "the dry run's count must match its list:\n{out}"
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/vm/swappiness").ok(),
        swappiness,
        "a dry run changed the host"
    );
}

#[test]
fn every_script_parses() {
    for dir in ["perf", "tuning", ".ci", "scripts"] {
        for e in std::fs::read_dir(root().join(dir)).unwrap() {
            let p = e.unwrap().path();
            let is_sh = p.extension().is_some_and(|x| x == "sh") || p.ends_with(".ci/run");
            if !is_sh {
                continue;
            }
            let o = Command::new("bash").arg("-n").arg(&p).output().unwrap();
            assert!(
                o.status.success(),
                "{}: {}",
                p.display(),
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
}
