//! Issue 21's per-source connection limit, refusal metrics and file modes,
//! against real server processes and real files: N+1 connections from one
//! address with limit N (over two shards and both client listeners), the
//! refusal's status on each protocol, `corekv_refusals_total{reason}` for
//! every refusal kind, and the modes of the data directory and a backup.

use crate::common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use corekv::net::client::Client;
use corekv::net::codec::HEADER_BYTES;

use common::resp::{Conn, V};

/// Everything the server sends on `s` until it closes it.
fn drain(mut s: TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// GET `path` from the admin endpoint, optionally with basic auth: (code, body).
fn http_get(addr: SocketAddr, path: &str, basic: Option<(&str, &str)>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect admin");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = basic.map_or(String::new(), |(u, p)| {
        format!(
            "Authorization: Basic {}\r\n",
            corekv::net::auth::base64_encode(format!("{u}:{p}").as_bytes())
        )
    });
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n{auth}\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let code = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// `corekv_refusals_total{reason="<reason>"}` in a /metrics body.
fn refusals(metrics: &str, reason: &str) -> Option<f64> {
    let prefix = format!("corekv_refusals_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// Poll `f` until it returns `Some`, for up to 60 s.
fn poll<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn native(addr: SocketAddr) -> Client {
    let mut c = Client::connect(addr).expect("connect");
    c.set_timeout(Some(Duration::from_secs(30))).unwrap();
    c.ping().expect("an admitted connection is served");
    c
}

/// With `--connections-per-source-max 3`, two native connections and one
/// RESP connection from 127.0.0.1 fill the address's places, whichever
/// shards the kernel put them on; the next one on either listener is
/// refused with the documented status, counted, and a place freed by a
/// close lets a new connection in.
#[test]
fn one_source_holds_at_most_its_limit_over_every_shard_and_listener() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_server(
        dir.path(),
        &["--shards", "2", "--connections-per-source-max", "3"],
    );
    let resp = server.resp.expect("the RESP listener is on");
    let first = native(server.addr);
    let _second = native(server.addr);
    let mut third = Conn::open(resp);
    assert_eq!(third.cmd(&[b"PING"]), V::Simple("PONG".into()));

    // Native: TOO_MANY_CONNECTIONS (202) in a response header, then close.
    let refused = drain(TcpStream::connect(server.addr).unwrap());
    assert!(refused.len() >= HEADER_BYTES, "no response: {refused:?}");
    let status = u16::from_le_bytes([refused[6], refused[7]]);
    assert_eq!(status, 202, "TOO_MANY_CONNECTIONS: {refused:?}");
    let body = String::from_utf8_lossy(&refused[HEADER_BYTES..]);
    assert!(body.contains("connections_per_source_max"), "{body}");
    // The client library reports it by name.
    let mut c = Client::connect(server.addr).unwrap();
    c.set_timeout(Some(Duration::from_secs(30))).unwrap();
    let err = c.ping().expect_err("over the per-source limit");
    assert_eq!(err.name(), "TOO_MANY_CONNECTIONS", "{}", err.message());
    drop(c);

    // RESP: Redis's maxclients text, with the reason after it.
    let refused = drain(TcpStream::connect(resp).unwrap());
    assert_eq!(
        String::from_utf8_lossy(&refused),
        "-ERR max number of clients reached from this address (connections_per_source_max)\r\n"
    );

    // Counted: 3 refusals so far (the admin endpoint's own connections
    // are not limited, or this scrape would be refused too).
    let counted = poll("the refusals to be counted", || {
        let (_, m) = http_get(server.admin, "/metrics", None);
        refusals(&m, "connections_per_source").filter(|n| *n >= 3.0)
    });
    assert_eq!(counted, 3.0);
    let (_, m) = http_get(server.admin, "/metrics", None);
    assert_eq!(refusals(&m, "connections_per_shard"), Some(0.0));

    // The admitted ones are still served.
    assert_eq!(third.cmd(&[b"PING"]), V::Simple("PONG".into()));

    // Closing one frees a place (the server notices the close
    // asynchronously: poll until a new connection is served).
    drop(first);
    let mut back = poll("a place to be freed", || {
        let mut c = Client::connect(server.addr).ok()?;
        c.set_timeout(Some(Duration::from_secs(30))).ok()?;
        c.ping().ok().map(|_| c)
    });
    back.put(b"k", b"v").expect("served");
    // And the place is taken again.
    let refused = drain(TcpStream::connect(resp).unwrap());
    assert!(
        String::from_utf8_lossy(&refused).starts_with("-ERR max number of clients reached"),
        "{refused:?}"
    );
    let stderr = server.kill();
    assert!(
        stderr.contains(
            "connection refused: this source address holds connections_per_source_max connections"
        ),
        "the refusal is logged: {stderr}"
    );
}

/// Every refusal kind of the network listeners is counted in
/// `corekv_refusals_total{reason}`: failed and throttled AUTH, the admin
/// endpoint's 401, 403 and 429, and the shard's connection limit.
#[test]
fn every_refusal_kind_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    common::user_add(&users, "root", "admin", "root-pw");
    common::user_add(&users, "reader", "read", "reader-pw");
    let data = dir.path().join("data");
    let server = common::start_server(
        &data,
        &[
            "--shards",
            "1",
            "--connections-per-shard-max",
            "2",
            "--users-file",
            users.to_str().unwrap(),
        ],
    );
    let admin = Some(("root", "root-pw"));
    let scrape = |reason: &str| {
        let (code, m) = http_get(server.admin, "/metrics", admin);
        assert_eq!(code, 200, "{m}");
        refusals(&m, reason).unwrap_or_else(|| panic!("no refusals sample for {reason}: {m}"))
    };
    for reason in [
        "connections_per_source",
        "connections_per_shard",
        "auth_failed",
        "auth_throttled",
        "admin_unauthorized",
        "admin_forbidden",
        "admin_throttled",
    ] {
        assert_eq!(scrape(reason), 0.0, "{reason} before anything was refused");
    }

    // Native AUTH: wrong passwords until the throttle refuses one without
    // checking it (its delay doubles per failure, so it soon outlasts a
    // verification however slow the machine is).
    let mut c = Client::connect(server.addr).unwrap();
    c.set_timeout(Some(Duration::from_secs(30))).unwrap();
    let (mut failed, mut throttled) = (0.0, 0.0);
    while throttled == 0.0 {
        assert!(failed < 20.0, "never throttled");
        match c
            .auth("root", b"guess-Wr0ng-9931")
            .expect_err("wrong password")
            .name()
        {
            "AUTH_FAILED" => failed += 1.0,
            "AUTH_THROTTLED" => throttled += 1.0,
            other => panic!("{other}"),
        }
    }
    assert!(failed >= 3.0, "3 failures are free: {failed}");
    assert_eq!(scrape("auth_failed"), failed);
    assert_eq!(scrape("auth_throttled"), throttled);

    // The shard's limit (2): `c` and one more; the third is refused.
    let _d = native(server.addr);
    let refused = drain(TcpStream::connect(server.addr).unwrap());
    assert_eq!(u16::from_le_bytes([refused[6], refused[7]]), 202);
    assert_eq!(scrape("connections_per_shard"), 1.0);
    assert_eq!(scrape("connections_per_source"), 0.0);

    // Admin: 401 without credentials, 403 for a reader. (The admin
    // throttle is per address: these come before the failures that trip
    // it, and the admin's own scrapes succeed.)
    assert_eq!(http_get(server.admin, "/metrics", None).0, 401);
    assert_eq!(
        http_get(server.admin, "/metrics", Some(("reader", "reader-pw"))).0,
        403
    );
    assert_eq!(scrape("admin_unauthorized"), 1.0);
    assert_eq!(scrape("admin_forbidden"), 1.0);
    // Wrong passwords until the throttle answers 429.
    let (mut wrong, mut too_many) = (0.0, 0.0);
    while too_many == 0.0 {
        assert!(wrong < 20.0, "never throttled");
        match http_get(server.admin, "/metrics", Some(("root", "guess-n0pe-7712"))).0 {
            401 => wrong += 1.0,
            429 => too_many += 1.0,
            other => panic!("{other}"),
        }
    }
    // The admin's own scrapes come from the same throttled address: they
    // get 429 (counted too) until the back-off ends.
    let (unauthorized, throttled) = poll("the admin throttle to lift", || {
        let (code, m) = http_get(server.admin, "/metrics", admin);
        if code == 429 {
            too_many += 1.0;
        }
        (code == 200).then(|| {
            (
                refusals(&m, "admin_unauthorized").unwrap_or(-1.0),
                refusals(&m, "admin_throttled").unwrap_or(-1.0),
            )
        })
    });
    assert_eq!(unauthorized, 1.0 + wrong);
    assert_eq!(throttled, too_many);
    let stderr = server.kill();
    for secret in [
        "root-pw",
        "reader-pw",
        "guess-Wr0ng-9931",
        "guess-n0pe-7712",
    ] {
        assert!(
            !stderr.contains(secret),
            "a password reached the log: {secret}"
        );
    }
}

/// Octal mode bits of `p`.
fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Every directory under `root` (itself included) is 0700 and every file
/// 0600.
fn assert_private(root: &Path) {
    let mut seen = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = mode(&p);
        if p.is_dir() {
            assert_eq!(m, 0o700, "directory {} has mode {m:o}", p.display());
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            assert_eq!(m, 0o600, "file {} has mode {m:o}", p.display());
        }
        seen += 1;
    }
    assert!(seen > 3, "too little to check under {}", root.display());
}

/// A data directory `serve` creates, and a backup `corekv backup` writes,
/// are the owner's alone (0700 directories, 0600 files) even under a
/// permissive umask; an existing data directory open to others is served
/// with a warning naming the fix.
#[test]
fn the_data_dir_and_backups_are_private() {
    // SAFETY: umask only changes this process's file-creation mask; the
    // server inherits it. 022 is the usual permissive one: the modes below
    // must come from corekv, not from the umask.
    unsafe { libc::umask(0o022) };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = common::start_server(&data, &["--shards", "2"]);
    let mut c = server.client();
    for i in 0..50u32 {
        c.put(format!("key-{i}").as_bytes(), b"value").expect("put");
    }
    let backup = dir.path().join("backup");
    let out = Command::new(common::corekv_bin())
        .args(["backup", "--addr", &server.addr.to_string(), "--to"])
        .arg(&backup)
        .output()
        .expect("run corekv backup");
    assert!(out.status.success(), "backup: {out:?}");
    drop(c);
    let (code, stderr) = server.stop();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("chmod 700"), "a fresh directory: {stderr}");
    assert_private(&data);
    assert_private(&backup);

    // An existing directory keeps the operator's mode, with a warning.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let server = common::start_server(&data, &["--shards", "2"]);
    let stderr = server.kill();
    assert_eq!(mode(&data), 0o755, "corekv does not change it");
    assert!(
        stderr.contains(&format!("chmod 700 {}", data.display())),
        "the warning names the fix: {stderr}"
    );
}
