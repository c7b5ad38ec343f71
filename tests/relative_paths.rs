//! Relative paths work the way a newcomer types them: `serve` with a relative
//! data directory and log file (from flags, the environment or a config
//! file) starts, serves, restarts with its data, and every place that names a
//! path (`config show`, /health, the log) names the absolute one. Issue 16,
//! finding 2: a relative data dir failed with EBADF from glommio's openat.

use crate::common;

use std::process::Command;

fn health(admin: std::net::SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(admin).unwrap();
    write!(s, "GET /health HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn a_relative_data_dir_and_log_file_work_and_are_shown_absolute() {
    let cwd = tempfile::tempdir().unwrap();
    let rel = std::path::Path::new("corekv-data");
    let args = ["--shards", "2", "--log-file", "corekv.log"];
    let server = common::try_start_server_in(Some(cwd.path()), rel, &args, &[])
        .unwrap_or_else(|e| panic!("a relative --data-dir must start: {e}"));
    let abs = cwd.path().join("corekv-data");
    assert!(
        abs.join("corekv.meta").exists(),
        "data went to {}",
        abs.display()
    );
    let h = health(server.admin);
    assert!(
        h.contains(&format!("\"data_dir\": \"{}\"", abs.display())),
        "/health names the absolute path: {h}"
    );
    let mut c = server.client();
    c.put(b"greeting", b"hello").unwrap();
    drop(c);
    assert_eq!(server.stop().0, Some(0));
    let log = std::fs::read_to_string(cwd.path().join("corekv.log")).expect("the log file");
    assert!(
        log.contains(&abs.display().to_string()),
        "the log names the absolute path:\n{log}"
    );

    // The same through the environment, and the data is still there.
    let server = common::try_start_server_in(
        Some(cwd.path()),
        rel,
        &[],
        &[("COREKV_LOG_FILE", "corekv.log")],
    )
    .unwrap_or_else(|e| panic!("restart with a relative --data-dir: {e}"));
    assert_eq!(
        server.client().get(b"greeting").unwrap().as_deref(),
        Some(&b"hello"[..])
    );
    assert_eq!(server.stop().0, Some(0));

    // `config show` and `verify` with the same relative settings.
    let o = Command::new(common::corekv_bin())
        .current_dir(cwd.path())
        .args(["config", "show", "--data-dir", "corekv-data"])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{shown}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(shown.contains(&abs.display().to_string()), "{shown}");
    let o = Command::new(common::corekv_bin())
        .current_dir(cwd.path())
        .args(["verify", "--data-dir", "corekv-data"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
}

/// A config file with a relative data directory (like the shipped example)
/// passes `config check` and `serve` starts with it.
#[test]
fn a_config_file_with_a_relative_data_dir_starts() {
    let cwd = tempfile::tempdir().unwrap();
    std::fs::write(
        cwd.path().join("corekv.toml"),
        "data_dir = \"./data\"\nshards = 1\n",
    )
    .unwrap();
    let o = Command::new(common::corekv_bin())
        .current_dir(cwd.path())
        .args(["config", "check", "--config", "corekv.toml"])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let server = common::try_start_server_in(
        Some(cwd.path()),
        std::path::Path::new("data"),
        &["--config", "corekv.toml"],
        &[],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    server.client().put(b"k", b"v").unwrap();
    assert_eq!(server.stop().0, Some(0));
    assert!(cwd.path().join("data/corekv.meta").exists());
}
