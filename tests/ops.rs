//! Operator tools against real processes: `corekv diagnose`, `corekv tune check`,
//! the log file and the slow-operation log.

use crate::common;

use std::io::Read;
use std::process::Command;

fn untar(path: &std::path::Path) -> Vec<(String, String)> {
    let gz = flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap());
    let mut archive = tar::Archive::new(gz);
    let mut files = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().display().to_string();
        let mut body = String::new();
        entry.read_to_string(&mut body).unwrap();
        files.push((name, body));
    }
    files
}

#[test]
fn diagnose_collects_everything_from_a_live_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("corekv.log");
    let server = common::start_server(
        &data,
        &["--shards", "2", "--log-file", log.to_str().unwrap()],
    );
    server.client().put(b"k", b"v").unwrap();
    // The server's own settings, as a config file (issue 22, finding 2:
    // diagnose ignored --config's addresses and wrote an empty report).
    let config = dir.path().join("corekv.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{}\"\nadmin_listen = \"{}\"\ndata_dir = \"{}\"\nlog_file = \"{}\"\n",
            server.addr,
            server.admin,
            data.display(),
            log.display()
        ),
    )
    .unwrap();
    let out = dir.path().join("diag.tar.gz");
    let o = Command::new(common::corekv_bin())
        .arg("diagnose")
        .arg("--config")
        .arg(&config)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let files = untar(&out);
    let get = |name: &str| {
        files
            .iter()
            .find(|(n, _)| n == &format!("corekv-diagnose/{name}"))
            .map(|(_, b)| b.as_str())
            .unwrap_or_else(|| panic!("{name} missing from the archive"))
    };
    assert!(get("version.txt").contains(env!("CARGO_PKG_VERSION")));
    assert!(get("config.toml").contains("data_dir = "));
    assert!(
        get("health.json").contains("\"status\": \"serving\""),
        "{}",
        get("health.json")
    );
    assert!(get("metrics.txt").contains("corekv_requests_total"));
    assert!(get("server.txt").contains("shard_count: 2"));
    assert!(
        get("logs.txt").contains("shard recovered"),
        "{}",
        get("logs.txt")
    );
    assert!(get("data_dir.txt").contains("corekv.meta"));
    let system = get("system.txt");
    for want in ["uname", "MemTotal", "io_uring", "memlock"] {
        assert!(system.contains(want), "system.txt lacks {want}");
    }
    assert!(
        get("SUMMARY.txt").contains("complete"),
        "{}",
        get("SUMMARY.txt")
    );
    assert_eq!(
        files.len(),
        9,
        "{:?}",
        files.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
}

#[test]
fn diagnose_works_without_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("d.tar.gz");
    let o = Command::new(common::corekv_bin())
        .args([
            "diagnose",
            "--listen",
            "127.0.0.1:1",
            "--admin-listen",
            "127.0.0.1:1",
            "--data-dir",
        ])
        .arg(dir.path())
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    // The archive is written, but diagnose says what it lacks and fails.
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("DIAGNOSE_INCOMPLETE") && stderr.contains("health.json"),
        "{stderr}"
    );
    let files = untar(&out);
    let health = &files
        .iter()
        .find(|f| f.0.ends_with("health.json"))
        .unwrap()
        .1;
    assert!(health.contains("could not fetch"), "{health}");
    let summary = &files
        .iter()
        .find(|f| f.0.ends_with("SUMMARY.txt"))
        .unwrap()
        .1;
    assert!(summary.contains("INCOMPLETE"), "{summary}");
}

#[test]
fn tune_check_reports_every_item() {
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(common::corekv_bin())
        .args(["tune", "check", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.code() == Some(0) || o.status.code() == Some(1),
        "{o:?}"
    );
    for item in [
        "io_uring",
        "O_DIRECT",
        "scheduler",
        "nr_requests",
        "read_ahead_kb",
        "write cache",
        "governor",
        "SMT",
        "isolated CPUs",
        "IRQ affinity",
        "memlock",
        "open files",
        "transparent huge pages",
        "swap",
    ] {
        assert!(
            out.contains(item),
            "tune check does not report {item}:\n{out}"
        );
    }
    assert!(out.contains("checks:"), "{out}");
}

#[test]
fn slow_batches_are_logged() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("l.log");
    // 0 would disable the log; 1 ms is below any 4 MiB synced write.
    let server = common::start_server(
        &dir.path().join("d"),
        &["--slow-op-ms", "1", "--log-file", log.to_str().unwrap()],
    );
    let mut c = server.client();
    // 4 MiB synced writes take several ms each even on fast flash (> 1 GB/s).
    let value = vec![7u8; 4 << 20];
    for i in 0..5 {
        c.put(format!("k{i}").as_bytes(), &value).unwrap();
    }
    drop(server);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("slow request batch"), "{text}");
    assert!(text.contains("puts=1"), "{text}");
}
