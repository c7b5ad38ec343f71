//! README.md's commands, verbatim, from a fresh clone: the way a newcomer meets
//! corekv. The commands are read from README.md (never retyped here), the
//! serve command runs from the clone's root exactly as written (so a relative
//! default data directory is exercised), a key is written and read with the
//! README's own CLI commands, the server is stopped with SIGTERM and started
//! again with the same command, and the key is read back. If the README and
//! reality drift, this fails (issue 16, findings 2 and 5).
//!
//! The clone builds in its own target directory (`target/readme-check`, kept
//! between runs so that later runs are incremental): `cargo test` holds the
//! outer one. The first run compiles corekv in release mode (~3 minutes).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PROTOCOL: &str = "127.0.0.1:7070";
const ADMIN: &str = "127.0.0.1:9070";
const RESP: &str = "127.0.0.1:6380";

/// The fenced ```sh blocks under the `## heading` section, in order.
fn sh_blocks(readme: &str, heading: &str) -> Vec<String> {
    let start = readme
        .find(&format!("\n## {heading}\n"))
        .unwrap_or_else(|| panic!("README.md has no '## {heading}' section"));
    let section = &readme[start + 1..];
    let end = section[3..].find("\n## ").map_or(section.len(), |e| e + 3);
    let mut blocks = Vec::new();
    let mut lines = section[..end].lines();
    while let Some(l) = lines.next() {
        if l.trim() == "```sh" {
            let body: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
            blocks.push(body.join("\n"));
        }
    }
    blocks
}

/// A process group started by the test; killed with everything in it when
/// dropped, so a failing test leaves no server behind.
struct Group {
    child: Child,
    log: PathBuf,
}

impl Group {
    fn start(command: &str, cwd: &Path, target: &Path, log: PathBuf) -> Group {
        let out = std::fs::File::create(&log).unwrap();
        // At the lowest CPU priority, the command itself unchanged: its
        // first run compiles corekv in release mode (minutes of both cores)
        // while the other integration tests run beside it, and those have
        // timing of their own to keep (tests/integration.rs).
        let child = Command::new("nice")
            .args(["-n", "19", "sh", "-c"])
            .arg(command)
            .current_dir(cwd)
            .env("CARGO_TARGET_DIR", target)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0)
            .spawn()
            .expect("spawn sh");
        Group { child, log }
    }

    fn signal(&self, sig: i32) {
        // SAFETY: signalling the process group we created.
        unsafe { libc::killpg(self.child.id() as i32, sig) };
    }

    /// Whether any process of the group (sh, cargo, corekv) is left.
    fn group_alive(&self) -> bool {
        // SAFETY: signal 0 only checks that the group exists.
        unsafe { libc::killpg(self.child.id() as i32, 0) == 0 }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM to the whole group (cargo and the corekv it runs), then wait
    /// for the group to end and the port to be free.
    fn stop(mut self) {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let _ = self.child.try_wait();
            if !self.group_alive() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            !self.group_alive(),
            "processes of the README's serve command still run 60 s after SIGTERM:\n{}",
            self.log()
        );
        assert!(
            port_free(PROTOCOL),
            "the server did not stop on SIGTERM:\n{}",
            self.log()
        );
        assert!(
            self.log().contains("stopped cleanly"),
            "no clean stop:\n{}",
            self.log()
        );
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }
}

fn port_free(addr: &str) -> bool {
    TcpListener::bind(addr).is_ok()
}

fn health_ok() -> bool {
    let addr: SocketAddr = ADMIN.parse().unwrap();
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(s, "GET /health HTTP/1.0\r\nHost: x\r\n\r\n").is_err() {
        return false;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.starts_with("HTTP/1.0 200") || out.starts_with("HTTP/1.1 200")
}

/// Wait for /health; the first start compiles corekv, so be patient, but stop
/// at once if the command exited.
fn wait_healthy(g: &mut Group, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20 * 60);
    while !health_ok() {
        if let Ok(Some(status)) = g.child.try_wait() {
            panic!(
                "{what}: the README's serve command exited ({status}):\n{}",
                g.log()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{what}: no /health within 20 minutes:\n{}",
            g.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Run one README CLI line (`$ ` stripped) from the clone; its stdout.
fn cli(line: &str, cwd: &Path, target: &Path) -> String {
    let o = Command::new("sh")
        .arg("-c")
        .arg(line)
        .current_dir(cwd)
        .env("CARGO_TARGET_DIR", target)
        .stdin(Stdio::null())
        .output()
        .expect("run sh");
    assert!(
        o.status.success(),
        "`{line}` failed:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// The `$ redis-cli ...` lines of "Using Redis clients" and the output
/// each shows (redis-cli prints "(integer) " only to a terminal, so that
/// prefix is dropped).
fn redis_cli_lines(readme: &str) -> Vec<(String, String)> {
    let blocks = sh_blocks(readme, "Using Redis clients");
    let block = blocks.first().expect("a redis-cli example");
    let mut out: Vec<(String, String)> = Vec::new();
    for l in block.lines() {
        if let Some(cmd) = l.strip_prefix("$ ") {
            out.push((cmd.to_string(), String::new()));
        } else if let Some(last) = out.last_mut() {
            let shown = l.strip_prefix("(integer) ").unwrap_or(l);
            if !last.1.is_empty() {
                last.1.push('\n');
            }
            last.1.push_str(shown);
        }
    }
    assert!(
        out.iter().any(|(c, _)| c.starts_with("redis-cli -p 6380")),
        "the README shows redis-cli -p 6380: {out:?}"
    );
    out
}

#[test]
fn readme_commands_work_verbatim_from_a_fresh_clone() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let quick = sh_blocks(&readme, "Quick start");
    assert_eq!(
        quick.len(),
        2,
        "Quick start must hold the serve and the test command: {quick:?}"
    );
    let (serve, test) = (quick[0].trim().to_string(), quick[1].trim().to_string());
    assert!(serve.contains(" serve"), "serve command: {serve:?}");
    assert!(
        test.starts_with("cargo test") && test.contains("--no-fail-fast"),
        "the test command runs every test binary even when one fails: {test:?}"
    );
    let usage = sh_blocks(&readme, "Using the CLI");
    let lines: Vec<&str> = usage
        .first()
        .expect("a CLI example")
        .lines()
        .filter_map(|l| l.strip_prefix("$ "))
        .collect();
    let put = *lines
        .iter()
        .find(|l| l.contains(" cli put "))
        .expect("a `cli put` line");
    let get = *lines
        .iter()
        .find(|l| l.contains(" cli get ") && !l.contains(';'))
        .expect("a `cli get` line");
    let value = put.split_whitespace().last().unwrap().to_string();

    assert!(
        port_free(PROTOCOL) && port_free(ADMIN) && port_free(RESP),
        "the README's server needs {PROTOCOL}, {ADMIN} and {RESP}, and something else listens \
         there (a corekv or redis-server left running? `ss -ltnp`): this test cannot run"
    );
    let redis_lines = redis_cli_lines(&readme);

    let work = tempfile::tempdir().unwrap();
    let clone = work.path().join("corekv");
    let status = Command::new("git")
        .args(["clone", "--quiet"])
        .arg(root)
        .arg(&clone)
        .status()
        .expect("run git");
    assert!(status.success(), "git clone of {}", root.display());
    let target = root.join("target/readme-check");

    let mut g = Group::start(&serve, &clone, &target, work.path().join("serve-1.log"));
    wait_healthy(&mut g, "first start");
    assert_eq!(cli(put, &clone, &target), "OK");
    assert_eq!(cli(get, &clone, &target), value);
    // The Redis section's redis-cli lines, against the same server.
    if Command::new("redis-cli").arg("--version").output().is_ok() {
        for (line, want) in &redis_lines {
            assert_eq!(&cli(line, &clone, &target), want, "README: `{line}`");
        }
    } else {
        eprintln!("SKIPPED: redis-cli is not installed; README's Redis lines not run");
    }
    g.stop();
    assert!(
        clone.join("corekv-data/corekv.meta").exists(),
        "the default data directory is ./corekv-data in the clone"
    );

    let mut g = Group::start(&serve, &clone, &target, work.path().join("serve-2.log"));
    wait_healthy(&mut g, "restart");
    assert_eq!(
        cli(get, &clone, &target),
        value,
        "the key survives a restart"
    );
    g.stop();
}
