//! The operator scripts in tuning/ and perf/ do what they print (issue 22,
//! findings 5 and 7).
//!
//! - tuning/apply.sh's dry run counts every change it lists (it said "4" while
//!   listing 6: the IRQ loop ran in a pipeline subshell) and changes nothing.
//! - Every perf/ script runs in its shortest mode (`SMOKE=1`, perf/lib.sh) with
//!   the binary Cargo built for the tests (`COREKV_BIN`, so nothing compiles),
//!   in a process group of its own and with TMPDIR pointing at a private
//!   directory. It must exit 0; while it runs, no process of its group may
//!   listen on anything but loopback; afterwards no live process may remain in
//!   that group or name that directory on its command line (compare.sh used to
//!   leak a redis-server on every run, bound to every interface). A script whose
//!   tool the host lacks (redis-server, perf, inferno) says "skipped:" and exits
//!   0, and the test says so on stderr instead of passing silently.
//! - Every script parses; every `perf/…` or `tuning/…` script the code and docs
//!   name exists.
//!
//! Scripts run one at a time: they start servers and load generators, and the
//! machine may have two cores.

use std::collections::HashSet;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

struct Proc {
    pid: i32,
    cmdline: String,
}

/// Live processes (not zombies) in process group `pgid` or whose command line
/// mentions `marker`.
fn processes_of(pgid: i32, marker: &str) -> Vec<Proc> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp ...: comm may hold spaces, so split after ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.first() == Some(&"Z") {
            continue;
        }
        let pgrp: Option<i32> = fields.get(2).and_then(|p| p.parse().ok());
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        if pgrp == Some(pgid) || cmdline.contains(marker) {
            out.push(Proc { pid, cmdline });
        }
    }
    out
}

/// Is a /proc/net/tcp{,6} local address (hex, kernel byte order) loopback?
fn loopback(hex_addr: &str) -> bool {
    match hex_addr.len() {
        // 127.0.0.1 is 0100007F: the first octet is the last byte printed.
        8 => hex_addr.ends_with("7F"),
        // ::1, or ::ffff:127.x.x.x.
        32 => {
            hex_addr == "00000000000000000000000001000000"
                || (hex_addr.starts_with("0000000000000000FFFF0000") && hex_addr.ends_with("7F"))
        }
        _ => false,
    }
}

/// Listening TCP sockets held by `procs` whose address is not loopback, as
/// "cmdline: address".
fn non_loopback_listeners(procs: &[Proc]) -> Vec<String> {
    let mut inodes = std::collections::HashMap::new();
    for p in procs {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{}/fd", p.pid)) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let t = target.to_string_lossy();
            if let Some(inode) = t.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')) {
                inodes.insert(inode.to_string(), p.cmdline.clone());
            }
        }
    }
    let mut bad = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
            let (Some(local), Some(state), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
                continue;
            };
            if *state != "0A" {
                continue; // not LISTEN
            }
            let Some(who) = inodes.get(*inode) else {
                continue;
            };
            let addr = local.split(':').next().unwrap_or("");
            if !loopback(addr) {
                bad.push(format!("{who}: {local}"));
            }
        }
    }
    bad
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Run `script args` from the repository root in its own process group with
/// `env`; fail the test if it outlives `limit`, listens off loopback or leaves
/// a process behind.
fn run(script: &str, args: &[&str], env: &[(&str, &str)], limit: Duration) -> Run {
    let tmp = tempfile::tempdir().unwrap();
    let marker = tmp.path().to_string_lossy().into_owned();
    // bash by absolute path: a test may give the script a PATH without it.
    let bash = ["/usr/bin/bash", "/bin/bash"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .unwrap_or("bash");
    let mut child = Command::new(bash)
        .arg(root().join(script))
        .args(args)
        .current_dir(root())
        .env("TMPDIR", tmp.path())
        .env("COREKV_BIN", env!("CARGO_BIN_EXE_corekv"))
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("spawn bash");
    let pgid = child.id() as i32;
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let start = Instant::now();
    let mut exposed: HashSet<String> = HashSet::new();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        exposed.extend(non_loopback_listeners(&processes_of(pgid, &marker)));
        if start.elapsed() > limit {
            // SAFETY: signalling the process group this test created.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Whatever the script started and did not stop is still alive now (its
    // children are reparented, not killed, when it exits). Give exiting
    // processes a moment, then look.
    let mut left = processes_of(pgid, &marker);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        left = processes_of(pgid, &marker);
    }
    for p in &left {
        // SAFETY: these processes were started by the script this test ran.
        unsafe { libc::kill(p.pid, libc::SIGKILL) };
    }
    let r = Run {
        code: status.and_then(|s| s.code()),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    };
    assert!(
        status.is_some(),
        "{script} ran past {limit:?}\n--- stdout\n{}\n--- stderr\n{}",
        r.stdout,
        r.stderr
    );
    let left: Vec<&str> = left.iter().map(|p| p.cmdline.as_str()).collect();
    assert!(
        left.is_empty(),
        "{script} left processes running: {left:?}\n--- stdout\n{}\n--- stderr\n{}",
        r.stdout,
        r.stderr
    );
    assert!(
        exposed.is_empty(),
        "{script} listened on a non-loopback address: {exposed:?}"
    );
    r
}

fn expect_code(r: &Run, code: i32, what: &str) {
    assert_eq!(
        r.code,
        Some(code),
        "{what}\n--- stdout\n{}\n--- stderr\n{}",
        r.stdout,
        r.stderr
    );
}

/// Runs a perf/ script with SMOKE=1; None when it said it skipped (reported
/// on stderr, so a skip is visible in the test output).
fn smoke(script: &str, args: &[&str], env: &[(&str, &str)]) -> Option<Run> {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut env = env.to_vec();
    env.push(("SMOKE", "1"));
    let r = run(script, args, &env, Duration::from_secs(300));
    expect_code(&r, 0, &format!("SMOKE=1 {script}"));
    if let Some(line) = r.stdout.lines().find(|l| l.starts_with("skipped: ")) {
        eprintln!("SKIPPED {script}: {line}");
        return None;
    }
    Some(r)
}

#[test]
fn compare_sh_smoke_stops_redis_and_corekv() {
    let out = tempfile::tempdir().unwrap();
    let Some(r) = smoke(
        "perf/compare.sh",
        &["sync"],
        &[("OUT", out.path().to_str().unwrap())],
    ) else {
        return;
    };
    assert!(r.stdout.contains("## workload C"), "{}", r.stdout);
    assert!(
        r.stdout.contains("ratios against redis-always"),
        "{}",
        r.stdout
    );
    assert!(out.path().join("sync-C.svg").is_file());
}

#[test]
fn txn_sh_smoke_stops_its_servers() {
    let r = smoke("perf/txn.sh", &[], &[]).expect("txn.sh needs no optional tool");
    // One line per op, then the medians.
    let runs = r.stdout.lines().filter(|l| l.starts_with("run 1 ")).count();
    assert_eq!(runs, 3, "{}", r.stdout);
    assert!(r.stdout.contains("median peak: put"), "{}", r.stdout);
}

#[test]
fn stat_sh_smoke_exits_cleanly() {
    let Some(r) = smoke("perf/stat.sh", &[], &[]) else {
        return;
    };
    if r.stdout.contains("does not expose hardware counters")
        || r.stdout.contains("could not count")
    {
        eprintln!("perf/stat.sh: no hardware counters on this host; it said so and exited 0");
        return;
    }
    assert!(r.stdout.contains("per op:"), "{}", r.stdout);
}

#[test]
fn request_cost_sh_smoke_prints_both_servers() {
    let Some(r) = smoke("perf/request_cost.sh", &[], &[]) else {
        return;
    };
    for row in [
        "| corekv | 1 | ping | 1 |",
        "| redis (everysec) | 1 | ping | 1 |",
    ] {
        assert!(r.stdout.contains(row), "no row {row:?} in:\n{}", r.stdout);
    }
}

#[test]
fn spin_sweep_sh_smoke_reports_each_spin() {
    let r = smoke("perf/spin_sweep.sh", &[], &[]).expect("spin_sweep.sh needs no optional tool");
    for row in ["| 1 | ping | 1 | 0 |", "| 1 | ping | 1 | 50 |"] {
        assert!(r.stdout.contains(row), "no row {row:?} in:\n{}", r.stdout);
    }
}

#[test]
fn flamegraph_sh_smoke_exits_cleanly() {
    let out = tempfile::tempdir().unwrap();
    let svg = out.path().join("f.svg");
    let Some(r) = smoke(
        "perf/flamegraph.sh",
        &[svg.to_str().unwrap()],
        &[("SERVER_CPUS", "0")],
    ) else {
        return;
    };
    assert!(svg.is_file(), "{}", r.stdout);
}

/// A host without perf: exit 2 naming it in a real run; "skipped:" and exit 0
/// only with SMOKE=1 (checked here even where perf is installed, with a PATH
/// that holds just the utilities the script needs before that check).
#[test]
fn a_missing_tool_skips_in_smoke_mode_only() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let bin = tempfile::tempdir().unwrap();
    for tool in ["dirname", "mktemp", "rm"] {
        let found = ["/usr/bin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.is_file())
            .unwrap_or_else(|| panic!("{tool} not in /usr/bin or /bin"));
        std::os::unix::fs::symlink(found, bin.path().join(tool)).unwrap();
    }
    let path = bin.path().to_str().unwrap();
    let r = run(
        "perf/stat.sh",
        &[],
        &[("PATH", path), ("SMOKE", "0")],
        Duration::from_secs(60),
    );
    expect_code(&r, 2, "perf/stat.sh without perf");
    assert!(r.stderr.contains("perf not found"), "{}", r.stderr);
    let r = run(
        "perf/stat.sh",
        &[],
        &[("PATH", path), ("SMOKE", "1")],
        Duration::from_secs(60),
    );
    expect_code(&r, 0, "SMOKE=1 perf/stat.sh without perf");
    assert!(
        r.stdout.starts_with("skipped: perf not found"),
        "{}",
        r.stdout
    );
}

#[test]
fn apply_dry_run_counts_what_it_lists_and_changes_nothing() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let swappiness = std::fs::read_to_string("/proc/sys/vm/swappiness").ok();
    let r = run(
        "tuning/apply.sh",
        &[
            "--data-dir",
            env!("CARGO_MANIFEST_DIR"),
            "--irq-cpus",
            "0",
            "--shard-cpus",
            "1",
        ],
        &[],
        Duration::from_secs(60),
    );
    expect_code(&r, 0, "tuning/apply.sh dry run");
    let out = &r.stdout;
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

/// Backslash-continued lines joined into one.
fn logical_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        match line.strip_suffix('\\') {
            Some(l) => cur.push_str(l),
            None => {
                cur.push_str(line);
                out.push(std::mem::take(&mut cur));
            }
        }
    }
    out
}

/// The static half of the runtime checks above, for the paths a smoke run
/// does not take (async/memory modes, a host with perf and inferno).
#[test]
fn perf_scripts_bind_loopback_and_start_background_jobs_through_spawn() {
    for entry in std::fs::read_dir(root().join("perf")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "sh") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for line in logical_lines(&text) {
            let code = line.split(" #").next().unwrap_or("").trim();
            if code.starts_with('#') {
                continue;
            }
            if code.contains("redis-server --") && !code.contains("--version") {
                assert!(
                    code.contains("--bind 127.0.0.1"),
                    "{}: redis-server not bound to loopback: {code}",
                    path.display()
                );
            }
            if code.contains("\" serve ") {
                assert!(
                    code.contains("--listen \"127.0.0.1:")
                        && (code.contains("--admin-listen off")
                            || code.contains("--admin-listen \"127.0.0.1:"))
                        // Not the RESP default (6380, shared by every run
                        // and by a local redis-server).
                        && (code.contains("--resp-listen off")
                            || code.contains("--resp-listen \"127.0.0.1:")),
                    "{}: corekv serve not bound to loopback: {code}",
                    path.display()
                );
            }
            // A background job outside perf/lib.sh's spawn has a PID the
            // cleanup trap never sees.
            if path.file_name().is_some_and(|n| n != "lib.sh") {
                assert!(
                    !code.ends_with('&') && !code.contains("$!"),
                    "{}: background job not started with spawn: {code}",
                    path.display()
                );
            }
        }
    }
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

/// Every `tuning/…` or `perf/…` script the code or docs point operators to exists.
#[test]
fn scripts_the_code_and_docs_name_exist() {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p
                .extension()
                .is_some_and(|x| x == "rs" || x == "md" || x == "service" || x == "sh")
            {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    for dir in ["src", "docs", "tuning", "perf"] {
        walk(&root().join(dir), &mut files);
    }
    files.push(root().join("README.md"));
    let mut missing = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        for dir in ["tuning/", "perf/"] {
            for (i, _) in text.match_indices(dir) {
                let name: String = text[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || "/._-".contains(*c))
                    .collect();
                if name.ends_with(".sh") && !root().join(&name).is_file() {
                    missing.push(format!("{}: {name}", f.display()));
                }
            }
        }
    }
    assert!(missing.is_empty(), "named but missing: {missing:?}");
}
