//! Authentication, roles and protected mode against real server processes
//! (issue 21): every opcode for every role, wrong-password throttling, users
//! reload on SIGHUP, the admin endpoint's basic auth, protected mode, and a
//! secrets-leak sweep over everything the server and the tools print.

use crate::common;

use common::user_add;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use corekv::core::auth::{permits, Role};
use corekv::core::scan_format::ScanRequest;
use corekv::core::status::Status;
use corekv::core::txn_format::{encode_txn, MputView, Write as KvWrite};
use corekv::net::auth::base64_encode;
use corekv::net::client::{Client, Response};
use corekv::net::codec::{Opcode, Request};

const ADMIN_PW: &str = "adm1n-canary-Pw";
const WRITER_PW: &str = "wr1ter-canary-Pw";
const READER_PW: &str = "re4der-canary-Pw";

/// A users file with an admin, a writer and a reader.
fn three_users(dir: &Path) -> PathBuf {
    let file = dir.join("users.toml");
    user_add(&file, "admin", "admin", ADMIN_PW);
    user_add(&file, "writer", "write", WRITER_PW);
    user_add(&file, "reader", "read", READER_PW);
    file
}

fn start(dir: &Path, users: &Path, extra: &[&str]) -> common::Server {
    let mut args = vec!["--shards", "1", "--users-file", users.to_str().unwrap()];
    args.extend_from_slice(extra);
    common::start_server(&dir.join("data"), &args)
}

fn send(c: &mut Client, req: &Request<'_>) -> Response {
    c.queue(req);
    c.flush().unwrap();
    c.recv().unwrap()
}

fn connect(addr: SocketAddr) -> Client {
    let c = Client::connect(addr).unwrap();
    c.set_timeout(Some(Duration::from_secs(30))).unwrap();
    c
}

/// GET `path` on the admin endpoint, optionally with basic auth: (status
/// code, whole response).
fn http(admin: SocketAddr, path: &str, basic: Option<(&str, &str)>) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(admin).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = basic.map_or(String::new(), |(u, p)| {
        format!(
            "Authorization: Basic {}\r\n",
            base64_encode(format!("{u}:{p}").as_bytes())
        )
    });
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n{auth}\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text)
}

/// Poll `cond` every 50 ms for up to 30 s.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every opcode, for no user and each role: allowed exactly when
/// `core::auth::permits` says so, refused with NOAUTH (unauthenticated) or
/// PERMISSION_DENIED (authenticated) otherwise. The match has no wildcard:
/// a new opcode does not compile here until it has a case.
#[test]
fn each_role_runs_exactly_its_opcodes() {
    let dir = tempfile::tempdir().unwrap();
    let users = three_users(dir.path());
    let server = start(dir.path(), &users, &[]);
    let mut txn = Vec::new();
    encode_txn(&mut txn, &[], &[KvWrite::Put(b"t", b"v")]);
    let mut mput_body = Vec::new();
    corekv::core::txn_format::encode_mput(&mut mput_body, &[(&b"m"[..], &b"v"[..])]);
    let mut mget = 1u32.to_le_bytes().to_vec();
    mget.extend_from_slice(&1u32.to_le_bytes());
    mget.push(b'k');
    let sessions: [(Option<Role>, &str, &str); 4] = [
        (None, "reader", READER_PW),
        (Some(Role::Read), "reader", READER_PW),
        (Some(Role::Write), "writer", WRITER_PW),
        (Some(Role::Admin), "admin", ADMIN_PW),
    ];
    let mut refused_unauthenticated = 0;
    for (role, user, password) in sessions {
        let mut c = connect(server.addr);
        if let Some(role) = role {
            assert_eq!(c.auth(user, password.as_bytes()).unwrap(), role.name());
        }
        let backup = dir.path().join(format!("backup-{user}-{}", role.is_some()));
        let backup = backup.to_str().unwrap().as_bytes().to_vec();
        // AUTH last: it changes the session.
        let mut rmw = Vec::new();
        corekv::core::rmw::Program::Append(b"x").encode(&mut rmw);
        let mut ops: Vec<Opcode> = Opcode::ALL.to_vec();
        ops.sort_by_key(|op| *op == Opcode::Auth);
        for op in ops {
            let req = match op {
                Opcode::Hello => Request::Hello,
                Opcode::Ping => Request::Ping { payload: b"x" },
                Opcode::Get => Request::Get { key: b"k" },
                Opcode::Put => Request::Put {
                    key: b"k",
                    value: b"v",
                },
                Opcode::Delete => Request::Delete { key: b"gone" },
                Opcode::Scan => Request::Scan(ScanRequest {
                    start: b"",
                    end: b"",
                    limit: 10,
                    filter_kind: 0,
                    filter_arg: b"",
                }),
                Opcode::Mget => Request::Mget {
                    count: 1,
                    keys: &mget[4..],
                },
                Opcode::Txn => {
                    Request::Txn(corekv::core::txn_format::TxnView::parse(&txn, false).unwrap())
                }
                Opcode::Mput => Request::Mput(MputView::parse(&mput_body).unwrap()),
                Opcode::Auth => Request::Auth {
                    user: user.as_bytes(),
                    password: password.as_bytes(),
                },
                Opcode::Backup => Request::Backup { target: &backup },
                Opcode::Rmw => Request::Rmw {
                    key: b"k",
                    program: &rmw,
                },
                Opcode::PutEx => Request::PutEx {
                    key: b"k",
                    timed: &[0xff; 9],
                },
                Opcode::Expire => Request::Expire {
                    key: b"k",
                    arg: &[0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
                },
                Opcode::Ttl => Request::Ttl { key: b"k" },
            };
            let r = send(&mut c, &req);
            let allowed = permits(role, op.access());
            let who = role.map_or("nobody", Role::name);
            if allowed {
                assert!(
                    matches!(r.status, Status::Ok | Status::NotFound),
                    "{who} {}: {:?} {}",
                    op.name(),
                    r.status,
                    String::from_utf8_lossy(&r.body)
                );
            } else {
                let want = if role.is_none() {
                    refused_unauthenticated += 1;
                    Status::NoAuth
                } else {
                    Status::PermissionDenied
                };
                assert_eq!(r.status, want, "{who} {}", op.name());
            }
        }
    }
    // Everything but HELLO, PING and AUTH was refused before authenticating.
    assert_eq!(refused_unauthenticated, Opcode::ALL.len() - 3);
    // The expected role boundaries, spelled out (the table could be wrong
    // in a way `permits` agrees with).
    assert!(permits(Some(Role::Read), Opcode::Scan.access()));
    assert!(!permits(Some(Role::Read), Opcode::Mput.access()));
    assert!(permits(Some(Role::Write), Opcode::Txn.access()));
    assert!(!permits(Some(Role::Write), Opcode::Backup.access()));
    // Refusals are counted by name.
    let metrics = http(server.admin, "/metrics", Some(("admin", ADMIN_PW))).1;
    assert!(metrics.contains("error=\"NOAUTH\""), "{metrics}");
    assert!(metrics.contains("error=\"PERMISSION_DENIED\""));
}

#[test]
fn wrong_passwords_are_refused_then_throttled() {
    let dir = tempfile::tempdir().unwrap();
    let users = three_users(dir.path());
    let log = dir.path().join("corekv.log");
    private_data_dir(dir.path(), 0o700);
    let server = start(dir.path(), &users, &["--log-file", log.to_str().unwrap()]);
    let mut c = connect(server.addr);
    let mut failed = 0;
    let throttled = loop {
        match c.auth("reader", b"wrong") {
            Err(e) if e.name() == "AUTH_FAILED" => failed += 1,
            Err(e) if e.name() == "AUTH_THROTTLED" => break e.message(),
            other => panic!("{other:?}"),
        }
        assert!(failed <= 10, "never throttled");
    };
    assert!(failed >= 3, "throttled after {failed} failures");
    assert!(throttled.contains("retry in"), "{throttled}");
    // While throttled even the right password is not checked...
    assert_eq!(
        c.auth("reader", READER_PW.as_bytes()).unwrap_err().name(),
        "AUTH_THROTTLED"
    );
    // ...and the connection is still unauthenticated.
    assert_eq!(
        send(&mut c, &Request::Get { key: b"k" }).status,
        Status::NoAuth
    );
    // Once the wait is over it is.
    eventually("the throttle lets the right password through", || {
        c.auth("reader", READER_PW.as_bytes()).is_ok()
    });
    assert_eq!(
        send(&mut c, &Request::Get { key: b"k" }).status,
        Status::NotFound
    );
    let metrics = http(server.admin, "/metrics", Some(("admin", ADMIN_PW))).1;
    assert!(metrics.contains("error=\"AUTH_FAILED\""), "{metrics}");
    assert!(metrics.contains("error=\"AUTH_THROTTLED\""));
    let _ = server.stop();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.matches("AUTH refused").count() >= failed,
        "every refusal is logged: {text}"
    );
    assert!(
        !text.contains("other local users may read"),
        "0700 is private"
    );
}

#[test]
fn sighup_reloads_users_and_keeps_connections() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    user_add(&users, "admin", "admin", ADMIN_PW);
    let log = dir.path().join("corekv.log");
    private_data_dir(dir.path(), 0o755);
    let server = start(dir.path(), &users, &["--log-file", log.to_str().unwrap()]);
    let mut old = connect(server.addr);
    old.auth("admin", ADMIN_PW.as_bytes()).unwrap();
    old.put(b"before", b"1").unwrap();
    user_add(&users, "late", "read", READER_PW);
    // Not known until the reload.
    assert_eq!(
        connect(server.addr)
            .auth("late", READER_PW.as_bytes())
            .unwrap_err()
            .name(),
        "AUTH_FAILED"
    );
    // SAFETY: signalling our own child.
    unsafe { libc::kill(server.pid(), libc::SIGHUP) };
    eventually("the reload is logged", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("reloaded the users file"))
    });
    let mut late = connect(server.addr);
    assert_eq!(late.auth("late", READER_PW.as_bytes()).unwrap(), "read");
    assert_eq!(late.get(b"before").unwrap().as_deref(), Some(&b"1"[..]));
    // The connection authenticated before the reload is still up, as admin;
    // a failed AUTH on it leaves it as it was.
    assert_eq!(
        old.auth("late", b"wrong").unwrap_err().name(),
        "AUTH_FAILED"
    );
    old.put(b"after", b"2").unwrap();
    assert_eq!(old.get(b"after").unwrap().as_deref(), Some(&b"2"[..]));
    // A broken file keeps the old users.
    std::fs::write(&users, "[users.x\n").unwrap();
    unsafe { libc::kill(server.pid(), libc::SIGHUP) };
    eventually("the failed reload is logged", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("kept the previous users"))
    });
    assert_eq!(
        connect(server.addr)
            .auth("late", READER_PW.as_bytes())
            .unwrap(),
        "read"
    );
    assert_eq!(server.stop().0, Some(0));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("has mode 755: other local users may read its data"),
        "a readable data dir is warned about: {text}"
    );
}

/// Create the data directory with `mode` before the server does.
fn private_data_dir(dir: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let data = dir.join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn admin_endpoint_needs_an_admin() {
    let dir = tempfile::tempdir().unwrap();
    let users = three_users(dir.path());
    let server = start(dir.path(), &users, &[]);
    let (code, text) = http(server.admin, "/metrics", None);
    assert_eq!(code, 401, "{text}");
    assert!(text.contains("WWW-Authenticate: Basic"), "{text}");
    assert!(!text.contains("corekv_requests"));
    assert_eq!(
        http(server.admin, "/metrics", Some(("admin", "nope"))).0,
        401
    );
    assert_eq!(
        http(server.admin, "/metrics", Some(("reader", READER_PW))).0,
        403
    );
    let (code, text) = http(server.admin, "/metrics", Some(("admin", ADMIN_PW)));
    assert_eq!(code, 200);
    assert!(text.contains("corekv_requests"));
    // /health stays open for load balancers by default...
    assert_eq!(http(server.admin, "/health", None).0, 200);
    drop(server);
    // ...and closes with health_requires_auth.
    let dir2 = tempfile::tempdir().unwrap();
    let server = start(dir2.path(), &users, &["--health-requires-auth"]);
    assert_eq!(http(server.admin, "/health", None).0, 401);
    assert_eq!(
        http(server.admin, "/health", Some(("admin", ADMIN_PW))).0,
        200
    );
}

#[test]
fn protected_mode_refuses_open_non_loopback_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let any = format!("0.0.0.0:{}", common::free_port());
    let err = common::try_start_server(&data, &["--shards", "1", "--listen", &any])
        .err()
        .expect("an open non-loopback listener is refused");
    assert!(err.contains("INSECURE_LISTEN"), "{err}");
    assert!(err.contains("--insecure-no-auth"), "{err}");
    let mut cmd = Command::new(common::corekv_bin());
    cmd.arg("serve")
        .arg("--data-dir")
        .arg(&data)
        .args(["--shards", "1", "--listen", "127.0.0.1:0"])
        .args(["--admin-listen", "0.0.0.0:0"]);
    let err = common::spawn_server(cmd, &data)
        .err()
        .expect("an open non-loopback admin listener is refused");
    assert!(
        err.contains("INSECURE_LISTEN") && err.contains("--admin-listen"),
        "{err}"
    );

    // `config check` says so before a start is tried.
    let o = Command::new(common::corekv_bin())
        .args([
            "config",
            "check",
            "--listen",
            &any,
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        !o.status.success() && out.contains("INSECURE_LISTEN"),
        "{out}"
    );

    let server = common::start_server(
        &data,
        &["--shards", "1", "--listen", &any, "--insecure-no-auth"],
    );
    server.client().put(b"k", b"v").unwrap();
    drop(server);

    let users = dir.path().join("users.toml");
    user_add(&users, "admin", "admin", ADMIN_PW);
    let any = format!("0.0.0.0:{}", common::free_port());
    let server = common::start_server(
        &data,
        &[
            "--shards",
            "1",
            "--listen",
            &any,
            "--users-file",
            users.to_str().unwrap(),
        ],
    );
    let mut c = server.client();
    assert_eq!(c.get(b"k").unwrap_err().name(), "NOAUTH");
    c.auth("admin", ADMIN_PW.as_bytes()).unwrap();
    assert_eq!(c.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
}

/// Start with passwords, go through every error path we can reach, and
/// search everything produced (server stderr and log file, client errors,
/// CLI output, `config show`, the diagnostics bundle) for the passwords and
/// the hashes.
#[test]
fn secrets_never_leak() {
    let dir = tempfile::tempdir().unwrap();
    let users = three_users(dir.path());
    let hashes: Vec<String> = std::fs::read_to_string(&users)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("hash = \""))
        .map(|h| h.trim_end_matches('"').to_string())
        .collect();
    assert_eq!(hashes.len(), 3);
    let log = dir.path().join("corekv.log");
    let server = start(dir.path(), &users, &["--log-file", log.to_str().unwrap()]);
    let mut produced = String::new();
    // The CLI with the right password works (before the failures below
    // throttle this address).
    let o = Command::new(common::corekv_bin())
        .args([
            "cli",
            "--addr",
            &server.addr.to_string(),
            "--user",
            "writer",
        ])
        .env("COREKV_PASSWORD", WRITER_PW)
        .args(["put", "k", "v"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let mut c = connect(server.addr);
    // Wrong passwords that contain the real one, an unknown user with a
    // real password, an over-long password, a right password for the
    // wrong user.
    for (user, pw) in [
        ("admin", format!("{ADMIN_PW}x")),
        ("nobody", ADMIN_PW.to_string()),
        ("reader", format!("{ADMIN_PW}{}", "y".repeat(2000))),
        ("writer", READER_PW.to_string()),
    ] {
        let e = c.auth(user, pw.as_bytes()).unwrap_err();
        produced.push_str(&format!("{} {}\n", e.name(), e.message()));
    }
    // A malformed AUTH frame carrying a password: closes the connection.
    let mut raw = connect(server.addr);
    let mut frame = Vec::new();
    corekv::net::codec::encode_request(
        &mut frame,
        1,
        &Request::Auth {
            user: b"admin",
            password: ADMIN_PW.as_bytes(),
        },
    );
    frame[20..24].copy_from_slice(&9999u32.to_le_bytes());
    raw.queue_raw(&frame);
    raw.flush().unwrap();
    let r = raw.recv().unwrap();
    assert_eq!(r.status, Status::MalformedBody);
    produced.push_str(&String::from_utf8_lossy(&r.body));
    // Admin HTTP with wrong and right credentials.
    produced.push_str(&http(server.admin, "/metrics", Some(("admin", "bad"))).1);
    produced.push_str(&http(server.admin, "/metrics", Some(("admin", ADMIN_PW))).1);
    // The CLI with a wrong password, from the environment and from a file.
    let pwfile = dir.path().join("pw");
    std::fs::write(&pwfile, format!("{READER_PW}z\n")).unwrap();
    for (env, file) in [(Some(format!("{WRITER_PW}q")), None), (None, Some(&pwfile))] {
        let mut cmd = Command::new(common::corekv_bin());
        cmd.args([
            "cli",
            "--addr",
            &server.addr.to_string(),
            "--user",
            "reader",
        ]);
        if let Some(f) = file {
            cmd.arg("--password-file").arg(f);
        }
        if let Some(e) = env {
            cmd.env("COREKV_PASSWORD", e);
        }
        let o = cmd.args(["get", "k"]).output().unwrap();
        assert!(!o.status.success());
        produced.push_str(&String::from_utf8_lossy(&o.stdout));
        produced.push_str(&String::from_utf8_lossy(&o.stderr));
    }
    // `user list`, `config show` and a diagnostics bundle.
    let settings = [
        "--users-file".to_string(),
        users.display().to_string(),
        "--listen".into(),
        server.addr.to_string(),
        "--admin-listen".into(),
        server.admin.to_string(),
        "--log-file".into(),
        log.display().to_string(),
        "--data-dir".into(),
        dir.path().join("data").display().to_string(),
    ];
    let list = Command::new(common::corekv_bin())
        .args(["user", "list", "--users-file"])
        .arg(&users)
        .output()
        .unwrap();
    let list_text = String::from_utf8_lossy(&list.stdout).to_string();
    assert!(list_text.contains("admin\tadmin") && list_text.contains("reader\tread"));
    produced.push_str(&list_text);
    let show = Command::new(common::corekv_bin())
        .args(["config", "show"])
        .args(&settings)
        .output()
        .unwrap();
    produced.push_str(&String::from_utf8_lossy(&show.stdout));
    produced.push_str(&String::from_utf8_lossy(&show.stderr));
    // A SIGHUP with a broken file that holds a hash: the error must not
    // quote it.
    let good = std::fs::read_to_string(&users).unwrap();
    std::fs::write(
        &users,
        format!("{good}\n[users.broken\nhash = \"{}\"\n", hashes[0]),
    )
    .unwrap();
    unsafe { libc::kill(server.pid(), libc::SIGHUP) };
    eventually("the failed reload is logged", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("kept the previous users"))
    });
    std::fs::write(&users, good).unwrap();
    let bundle = dir.path().join("bundle.tar.gz");
    let diag = Command::new(common::corekv_bin())
        .arg("diagnose")
        .args(&settings)
        .args(["--user", "admin"])
        .env("COREKV_PASSWORD", ADMIN_PW)
        .arg("--out")
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(diag.status.success(), "{diag:?}");
    produced.push_str(&String::from_utf8_lossy(&diag.stdout));
    produced.push_str(&String::from_utf8_lossy(&diag.stderr));
    let gz = flate2::read::GzDecoder::new(std::fs::File::open(&bundle).unwrap());
    let mut archive = tar::Archive::new(gz);
    let mut files = 0;
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut body = String::new();
        entry.read_to_string(&mut body).unwrap();
        produced.push_str(&body);
        files += 1;
    }
    assert!(files >= 5, "the bundle has its files");
    assert!(
        produced.contains("corekv_requests"),
        "diagnose read /metrics as admin"
    );
    let (_, stderr) = server.stop();
    produced.push_str(&stderr);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("AUTH refused"), "the refusals were logged");
    produced.push_str(&logged);
    for secret in [ADMIN_PW, WRITER_PW, READER_PW]
        .iter()
        .map(|s| s.to_string())
        .chain(hashes.iter().cloned())
        .chain(
            hashes
                .iter()
                .map(|h| h.rsplit('$').next().unwrap().to_string()),
        )
    {
        assert!(
            !produced.contains(&secret),
            "secret {secret:?} leaked into:\n{produced}"
        );
    }
    // Not vacuous: the sweep did see the things it searched.
    assert!(produced.contains("AUTH_FAILED") && produced.contains("users_file"));
}

/// `corekv bench` and `corekv backup` authenticate with `--user` and
/// `COREKV_PASSWORD`; the role still applies.
#[test]
fn bench_and_backup_authenticate() {
    let dir = tempfile::tempdir().unwrap();
    let users = three_users(dir.path());
    let server = start(dir.path(), &users, &[]);
    let addr = server.addr.to_string();
    let bench = |user: &str, password: &str| {
        Command::new(common::corekv_bin())
            .args(["bench", "--addr", &addr, "--workload", "A", "--keys", "100"])
            .args(["--connections", "2", "--duration", "0.3", "--warmup", "0"])
            .args(["--quiet", "--user", user])
            .env("COREKV_PASSWORD", password)
            .output()
            .unwrap()
    };
    let o = bench("writer", WRITER_PW);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{o:?}");
    assert!(!out.contains("requests failed"), "{out}");
    let o = bench("writer", "wrong");
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("AUTH_FAILED"),
        "{o:?}"
    );
    let o = Command::new(common::corekv_bin())
        .args([
            "bench",
            "--addr",
            &addr,
            "--workload",
            "bank",
            "--load",
            "--keys",
            "20",
        ])
        .args([
            "--connections",
            "2",
            "--duration",
            "0.3",
            "--quiet",
            "--user",
            "writer",
        ])
        .env("COREKV_PASSWORD", WRITER_PW)
        .output()
        .unwrap();
    assert!(o.status.success(), "bank: {o:?}");
    let backup = |user: &str, password: &str, to: &str| {
        Command::new(common::corekv_bin())
            .args(["backup", "--addr", &addr, "--user", user])
            .arg("--to")
            .arg(dir.path().join(to))
            .env("COREKV_PASSWORD", password)
            .output()
            .unwrap()
    };
    let o = backup("writer", WRITER_PW, "b1");
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("PERMISSION_DENIED"),
        "{o:?}"
    );
    let o = backup("admin", ADMIN_PW, "b2");
    assert!(o.status.success(), "{o:?}");
}
