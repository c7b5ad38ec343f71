//! Helpers shared by the integration tests: start a real `corekv serve` process on
//! a free port and a private data directory, talk to it, stop or kill it.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use corekv::net::client::Client;

pub mod resp;

/// Every sample of metric `name` (or `name_total`) on the server's admin
/// endpoint: one per shard for per-shard metrics.
pub fn metric_samples(admin: SocketAddr, name: &str) -> Vec<f64> {
    try_metric_samples(admin, name).expect("admin endpoint answers /metrics")
}

/// Like [`metric_samples`], but `None` when the endpoint cannot be read (the
/// server died): for polling a server that is expected to crash.
pub fn try_metric_samples(admin: SocketAddr, name: &str) -> Option<Vec<f64>> {
    let mut s = std::net::TcpStream::connect(admin).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    std::io::Write::write_all(&mut s, b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(
        text.lines()
            .filter(|l| {
                let rest = l.strip_prefix(name).unwrap_or("#");
                let rest = rest.strip_prefix("_total").unwrap_or(rest);
                rest.starts_with(['{', ' '])
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .collect(),
    )
}

/// Path of the `corekv` binary Cargo built for these tests.
pub fn corekv_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_corekv"))
}

/// A running server process. Killed (SIGKILL) when dropped.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    /// The admin HTTP endpoint (/health, /metrics).
    pub admin: SocketAddr,
    /// The RESP (Redis protocol) listener, if it is on.
    pub resp: Option<SocketAddr>,
    pub data_dir: PathBuf,
    stderr: Option<std::thread::JoinHandle<String>>,
}

/// Start `corekv serve` on `data_dir` with `extra` flags; waits for the startup
/// line and returns the address it printed.
pub fn start_server(data_dir: &Path, extra: &[&str]) -> Server {
    try_start_server(data_dir, extra).unwrap_or_else(|e| panic!("server did not start: {e}"))
}

/// Like [`start_server`] but returns the server's stderr if it exits instead.
pub fn try_start_server(data_dir: &Path, extra: &[&str]) -> Result<Server, String> {
    try_start_server_env(data_dir, extra, &[])
}

/// [`try_start_server`] with extra environment variables (e.g. a failpoint).
pub fn try_start_server_env(
    data_dir: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Result<Server, String> {
    try_start_server_in(None, data_dir, extra, env)
}

/// [`try_start_server_env`] run from the working directory `cwd` (`data_dir`
/// may then be relative to it).
#[allow(dead_code)]
pub fn try_start_server_in(
    cwd: Option<&Path>,
    data_dir: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Result<Server, String> {
    let mut cmd = Command::new(corekv_bin());
    if let Some(cwd) = cwd {
        cmd.current_dir(cwd);
    }
    cmd.arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .args(if extra.contains(&"--listen") {
            &["--admin-listen", "127.0.0.1:0"][..]
        } else {
            &["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"][..]
        })
        .args(extra)
        .env("COREKV_LOG", "info")
        .envs(env.iter().copied());
    // The RESP listener's default port (6380) would collide between tests
    // running at once: a free port unless the test names one.
    if !extra.contains(&"--resp-listen") && !env.iter().any(|(k, _)| *k == "COREKV_RESP_LISTEN") {
        cmd.env("COREKV_RESP_LISTEN", "127.0.0.1:0");
    }
    spawn_server(cmd, data_dir)
}

/// Spawn a prepared `corekv serve` command (piped output) and wait for its
/// startup line.
pub fn spawn_server(mut cmd: Command, data_dir: &Path) -> Result<Server, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn corekv serve");
    let stdout = child.stdout.take().expect("stdout piped");
    let mut stderr_pipe = child.stderr.take().expect("stderr piped");
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr_pipe.read_to_string(&mut s);
        s
    });
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        // Keep draining so the server never blocks on a full pipe.
        for _ in lines {}
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(line) => {
            let addr = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("listen="))
                .unwrap_or_else(|| panic!("no listen= in startup line {line:?}"))
                .parse()
                .expect("listen address parses");
            let admin = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("admin="))
                .unwrap_or_else(|| panic!("no admin= in startup line {line:?}"))
                .parse()
                .expect("admin address parses");
            let resp = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("resp="))
                .and_then(|a| a.parse().ok());
            Ok(Server {
                child,
                addr,
                admin,
                resp,
                data_dir: data_dir.to_path_buf(),
                stderr: Some(stderr),
            })
        }
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(stderr.join().unwrap_or_default())
        }
    }
}

impl Server {
    pub fn client(&self) -> Client {
        let c = Client::connect(self.addr).expect("connect to server");
        c.set_timeout(Some(Duration::from_secs(30)))
            .expect("set timeout");
        c
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// SIGKILL and reap; returns the server's stderr.
    pub fn kill(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }

    /// SIGTERM and wait for a clean exit; returns (exit code, stderr).
    pub fn stop(mut self) -> (Option<i32>, String) {
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let status = self.child.wait().expect("wait for server");
        (
            status.code(),
            self.stderr
                .take()
                .and_then(|h| h.join().ok())
                .unwrap_or_default(),
        )
    }

    /// SIGTERM and wait up to `limit` for the exit: `Ok((exit code, stderr))`,
    /// or `Err(stderr)` if the server was still running then (it is then
    /// SIGKILLed), so a shutdown that hangs fails the test instead of hanging it.
    pub fn stop_within(mut self, limit: Duration) -> Result<(Option<i32>, String), String> {
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let started = std::time::Instant::now();
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if started.elapsed() < limit => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => break None,
            }
        };
        if status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        match status {
            Some(s) => Ok((s.code(), stderr)),
            None => Err(stderr),
        }
    }

    /// Resident set size of the server process, in bytes.
    pub fn rss_bytes(&self) -> u64 {
        self.status_bytes("VmRSS:")
    }

    /// Virtual size of the server process, in bytes: catches buffers that were
    /// allocated (mapped) but not yet touched, which RSS does not show.
    pub fn virtual_bytes(&self) -> u64 {
        self.status_bytes("VmSize:")
    }

    fn status_bytes(&self, field: &str) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Tiny memtables, tables and WAL segments: a few MB of writes flush, compact
/// and roll segments over many times.
pub const TINY_STORAGE: &[&str] = &[
    "--memtable-bytes",
    "65536",
    "--table-target-bytes",
    "65536",
    "--l0-trigger",
    "2",
    "--wal-segment-bytes",
    "1048576",
    "--value-bytes-max",
    "65536",
];

/// Two shards with [`TINY_STORAGE`]: flushes, compactions and segment
/// rollovers happen within seconds of load.
pub fn two_tiny_shards() -> Vec<&'static str> {
    let mut a = vec!["--shards", "2"];
    a.extend_from_slice(TINY_STORAGE);
    a
}

/// Run the corekv binary (a subcommand other than a long-lived serve) to its end.
pub fn run_corekv(args: &[&str]) -> std::process::Output {
    Command::new(corekv_bin())
        .args(args)
        .output()
        .expect("run corekv")
}

/// A finished command's exit code and output, for assertion messages.
pub fn output_text(o: &std::process::Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A loopback port free right now, for a test that needs a fixed address
/// before the server starts (a config file, a restart on the same port).
/// A loopback port no one holds, chosen *below* the kernel's ephemeral range
/// (net.ipv4.ip_local_port_range, 32768-60999 by default). A port from that
/// range can be handed to some client's outgoing socket the moment a killed
/// server lets go of it, and the restart then fails with "Address already in
/// use" (CI saw exactly that in tests/crash.rs). Ports below the range are
/// only ever taken by an explicit bind, so a server can rebind its own.
/// Each process starts at a different place (its pid) and walks on with a
/// counter, so parallel tests and test binaries do not collide.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 10_000;
    const SPAN: u32 = 22_000; // 10000..32000, under the ephemeral range
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7919);
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOW + start.wrapping_add(n.wrapping_mul(13)) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {LOW}..{}", LOW + SPAN)
}

/// `corekv user add` through the real CLI, password on stdin.
pub fn user_add(file: &Path, name: &str, role: &str, password: &str) {
    let mut child = Command::new(corekv_bin())
        .args(["user", "add", name, "--role", role, "--password-stdin"])
        .arg("--users-file")
        .arg(file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "user add: {o:?}");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(!out.contains(password), "user add printed the password");
}
