//! The operator commands in docs/deployment.md, docs/operations.md and
//! docs/tuning.md work as written, against a real server (issue 22, "docs
//! that describe another build").
//!
//! A fenced ```sh block whose first line is `# test: PHASE` is run literally
//! by bash (`set -euo pipefail`) from the source tree, with the binary Cargo
//! built first on PATH as `corekv`, TMPDIR a private directory, and the shell
//! variables docs/deployment.md defines ("Installing": `config`, `data_dir`,
//! `addr`, `admin`, `backups`) pointing at that directory and at the server
//! this test starts from `config` (as the systemd unit does):
//!
//! - `setup`: before the server starts (config check and show, tune check,
//!   tuning/apply.sh's dry run);
//! - `running`: while it serves (health and metrics, cli, bench, diagnose,
//!   backup, verify);
//! - `stopped`: after SIGTERM stopped it (restore, verify).
//!
//! Every other ```sh block must start with `# not tested: WHY` (root, systemd,
//! host changes), so that no command drops out of the test silently. Every
//! block must exit 0, and the test checks what the docs promise from them:
//! `config check` says ok, the dry run counts its list, /health serves, the
//! key written is read back, the backups exist and verify, SIGTERM exits 0 with
//! "corekv stopped cleanly" in `log_file`, and the restore brings back the data
//! as of the backup (not a later write).

use crate::common;

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use corekv::net::client::Client;

const DOCS: [&str; 3] = ["docs/deployment.md", "docs/tuning.md", "docs/operations.md"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct Block {
    doc: &'static str,
    /// `Some(phase)` for `# test: PHASE`, `None` for `# not tested: WHY`.
    phase: Option<String>,
    text: String,
}

/// The ```sh blocks of `doc`, dedented to their fence; panics on a block that
/// carries neither marker.
fn blocks(doc: &'static str) -> Vec<Block> {
    let text = std::fs::read_to_string(repo().join(doc)).unwrap();
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let fence = line.trim();
        if !fence.starts_with("```") || fence == "```" {
            continue;
        }
        let lang = fence.trim_start_matches('`');
        let indent = line.len() - line.trim_start().len();
        let mut body = Vec::new();
        for l in lines.by_ref() {
            if l.trim() == "```" {
                break;
            }
            body.push(l.get(indent..).unwrap_or(l.trim_start()));
        }
        if !["sh", "bash", "shell", "console"].contains(&lang) {
            continue;
        }
        let first = body.first().copied().unwrap_or("");
        let phase = if let Some(p) = first.strip_prefix("# test: ") {
            Some(p.trim().to_string())
        } else if first.starts_with("# not tested: ") {
            None
        } else {
            panic!(
                "{doc}: a ```{lang} block starts with neither `# test: PHASE` nor \
                 `# not tested: WHY`:\n{}",
                body.join("\n")
            );
        };
        out.push(Block {
            doc,
            phase,
            text: body.join("\n") + "\n",
        });
    }
    out
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// A directory to put first on PATH: `corekv` is the binary under test; on a
/// host without them, `less` is `cat` (what less does when its output is not a
/// terminal) and `curl` a minimal stand-in (GET only, `-s`, `-f`).
fn shim_dir(root: &Path) -> PathBuf {
    let dir = root.join("bin");
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_corekv"), dir.join("corekv")).unwrap();
    if !on_path("less") {
        let cat = ["/usr/bin/cat", "/bin/cat"]
            .into_iter()
            .find(|p| Path::new(p).is_file())
            .expect("cat");
        std::os::unix::fs::symlink(cat, dir.join("less")).unwrap();
    }
    if !on_path("curl") {
        let script = r#"#!/usr/bin/env bash
fail=0; url=""
for a in "$@"; do case "$a" in -*f*) fail=1 ;; -*) ;; *) url=$a ;; esac; done
hostport=${url#http://}; path=/${hostport#*/}; hostport=${hostport%%/*}
exec 3<>"/dev/tcp/${hostport%:*}/${hostport#*:}"
printf 'GET %s HTTP/1.0\r\nHost: x\r\n\r\n' "$path" >&3
resp=$(cat <&3)
code=$(printf '%s' "$resp" | head -1 | cut -d' ' -f2)
printf '%s' "${resp#*$'\r\n\r\n'}"
[ "$fail" = 1 ] && [ "$code" -ge 400 ] && exit 22
exit 0
"#;
        let path = dir.join("curl");
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    }
    dir
}

/// Run one block; panic with its output unless it exits 0 within 5 minutes.
/// Returns its stdout.
fn run_block(b: &Block, env: &[(String, String)]) -> String {
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(format!("set -euo pipefail\n{}", b.text))
        .current_dir(repo())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bash");
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = so.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if start.elapsed() > Duration::from_secs(300) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
    assert!(
        status.is_some_and(|s| s.success()),
        "{} block ({:?}) failed: {status:?}\n--- block\n{}--- stdout\n{stdout}\n--- stderr\n{stderr}",
        b.doc,
        b.phase,
        b.text
    );
    stdout
}

/// `corekv serve --config FILE`, as the unit runs it; killed when dropped.
struct Served {
    child: Child,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(config: &Path, addr: SocketAddr) -> Served {
    let child = Command::new(env!("CARGO_BIN_EXE_corekv"))
        .args(["serve", "--config"])
        .arg(config)
        // Not the RESP default port: other tests' servers may hold it.
        .env("COREKV_RESP_LISTEN", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn corekv serve");
    let served = Served { child };
    // Serving once a PING is answered (generous: a debug build on a loaded
    // machine).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(mut c) = Client::connect(addr) {
            if c.set_timeout(Some(Duration::from_secs(5))).is_ok() && c.ping().is_ok() {
                return served;
            }
        }
        assert!(Instant::now() < deadline, "server never answered at {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn client(addr: SocketAddr) -> Client {
    let c = Client::connect(addr).expect("connect");
    c.set_timeout(Some(Duration::from_secs(30))).unwrap();
    c
}

#[test]
fn documented_operator_commands_run_against_a_real_server() {
    let all: Vec<Block> = DOCS.iter().flat_map(|d| blocks(d)).collect();
    for b in &all {
        if let Some(p) = &b.phase {
            assert!(
                ["setup", "running", "stopped"].contains(&p.as_str()),
                "{}: unknown phase {p:?}",
                b.doc
            );
        }
    }
    // What an operator does first must stay covered: nothing may drop out of
    // the test by losing its marker.
    let tested: String = all
        .iter()
        .filter(|b| b.phase.is_some())
        .map(|b| b.text.as_str())
        .collect();
    for needle in [
        "corekv config check",
        "corekv config show",
        "corekv tune check",
        "tuning/apply.sh",
        "/health",
        "/metrics",
        "corekv cli --addr",
        "corekv bench --addr",
        "corekv diagnose",
        "corekv backup --addr",
        "corekv verify --backup",
        "corekv restore --from",
    ] {
        assert!(tested.contains(needle), "no tested block runs {needle:?}");
    }

    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let data = root.join("data");
    let backups = root.join("backups");
    // What the install step's `install -d` creates.
    std::fs::create_dir_all(&backups).unwrap();
    let log = root.join("log/corekv.log");
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", common::free_port())
        .parse()
        .unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", common::free_port())
        .parse()
        .unwrap();
    let config = root.join("corekv.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\nlisten = \"{addr}\"\nadmin_listen = \"{admin}\"\n\
             shards = 2\ncache_bytes = 16777216\nmemtable_bytes = 4194304\n\
             wal_segment_bytes = 4194304\nvalue_bytes_max = 1048576\nlog_file = \"{}\"\n",
            data.display(),
            log.display()
        ),
    )
    .unwrap();
    let shims = shim_dir(root);
    let env: Vec<(String, String)> = [
        (
            "PATH",
            format!(
                "{}:{}",
                shims.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        ),
        ("TMPDIR", root.display().to_string()),
        ("config", config.display().to_string()),
        ("data_dir", data.display().to_string()),
        ("backups", backups.display().to_string()),
        ("addr", addr.to_string()),
        ("admin", admin.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let phase = |p: &'static str| all.iter().filter(move |b| b.phase.as_deref() == Some(p));

    let mut setup = String::new();
    for b in phase("setup") {
        setup += &run_block(b, &env);
    }
    assert!(
        setup.contains("ok: corekv serve would start"),
        "config check did not pass the shown config:\n{setup}"
    );
    let listed = setup.lines().filter(|l| l.starts_with("would set")).count();
    assert!(
        setup.contains(&format!("dry run: {listed} change(s)")),
        "apply.sh's dry run must count its list:\n{setup}"
    );

    let server = serve(&config, addr);
    client(addr).put(b"restore-marker", b"in-backup").unwrap();
    let mut running = String::new();
    for b in phase("running") {
        running += &run_block(b, &env);
    }
    assert!(running.contains("\"serving\""), "{running}");
    assert!(running.contains("corekv_shard_serving"), "{running}");
    // put answered OK, get printed the value put wrote, del found the key (the
    // CLI writes replies byte for byte, with no newline unless on a terminal).
    assert!(running.contains("OKok1"), "{running}");
    assert!(
        root.join("corekv-diag.tar.gz").is_file(),
        "diagnose wrote no archive"
    );
    let taken = std::fs::read_dir(&backups).unwrap().count();
    assert!(
        taken >= 2,
        "deployment.md and operations.md each take a backup; found {taken}"
    );
    // Written after every backup: a restore must not bring it back.
    client(addr)
        .put(b"restore-marker", b"after-backup")
        .unwrap();

    // SIGTERM, as `systemctl stop` sends: exit 0 and the final line in log_file.
    let mut server = server;
    // SAFETY: signalling the child this test started.
    unsafe { libc::kill(server.child.id() as i32, libc::SIGTERM) };
    let status = server.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "SIGTERM must stop cleanly");
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        logged.contains("corekv stopped cleanly"),
        "log_file lacks the final line:\n{logged}"
    );
    drop(server);

    for b in phase("stopped") {
        run_block(b, &env);
    }
    assert!(
        std::fs::read_dir(root).unwrap().flatten().any(|e| e
            .file_name()
            .to_string_lossy()
            .starts_with("data.before-restore-")),
        "restore --force moves the old directory aside"
    );
    let _server = serve(&config, addr);
    let got = client(addr).get(b"restore-marker").unwrap();
    assert_eq!(
        got.as_deref(),
        Some(&b"in-backup"[..]),
        "the restore did not bring back the data as of the backup"
    );
}
