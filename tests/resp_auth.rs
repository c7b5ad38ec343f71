//! Authentication and roles on the RESP listener (issue 21), against real
//! server processes: before AUTH every command of the RESP command table is
//! refused with Redis's NOAUTH; each role runs exactly the commands the
//! table grants it (NOPERM otherwise); pipelined commands after an AUTH in the
//! same read are checked against the new session; wrong passwords get
//! WRONGPASS, then the throttle; redis-cli's --user/--pass and -a, and
//! HELLO 3 AUTH, work; the error texts are a real redis-server's; no password
//! reaches the server's log.
//!
//! Tests that need redis-server or redis-cli print "SKIPPED: ..." and return
//! when the tool is missing (CI installs them).

use crate::common;

use common::resp::{start_redis, which, Conn, V};
use common::user_add;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use corekv::core::auth::{permits, Access, Role};
use corekv::net::resp::commands::COMMANDS;

const ADMIN_PW: &str = "adm1n-resp-canary";
const WRITER_PW: &str = "wr1ter-resp-canary";
const READER_PW: &str = "re4der-resp-canary";
const DEFAULT_PW: &str = "def4ult-resp-canary";

const NOAUTH: &str = "NOAUTH Authentication required.";
const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
const HELLO_NOAUTH: &str = "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time";

/// admin, writer, reader, and "default" (a writer: what `AUTH password`
/// and `redis-cli -a` log in as).
fn users(dir: &Path) -> PathBuf {
    let file = dir.join("users.toml");
    user_add(&file, "admin", "admin", ADMIN_PW);
    user_add(&file, "writer", "write", WRITER_PW);
    user_add(&file, "reader", "read", READER_PW);
    user_add(&file, "default", "write", DEFAULT_PW);
    file
}

/// corekv with those users and a log file: (server, RESP address, log).
fn start(dir: &Path) -> (common::Server, SocketAddr, PathBuf) {
    let users = users(dir);
    let log = dir.join("corekv.log");
    let server = common::start_server(
        &dir.join("data"),
        &[
            "--shards",
            "1",
            "--users-file",
            users.to_str().unwrap(),
            "--log-file",
            log.to_str().unwrap(),
        ],
    );
    let resp = server.resp.expect("the RESP listener is on");
    (server, resp, log)
}

fn err(s: &str) -> V {
    V::Err(s.into())
}

fn noperm(cmd: &str) -> V {
    err(&format!(
        "NOPERM this user has no permissions to run the '{cmd}' command"
    ))
}

/// A command line of the table's arity for `name` (arguments "x"): enough
/// to pass the arity check, which Redis (and corekv) run before NOAUTH.
fn argv_for(name: &str, arity: i32) -> Vec<Vec<u8>> {
    let n = if arity > 0 { arity } else { -arity } as usize;
    let mut argv = vec![name.to_ascii_uppercase().into_bytes()];
    argv.resize(n.max(1), b"x".to_vec());
    argv
}

fn cmd(c: &mut Conn, argv: &[Vec<u8>]) -> V {
    let refs: Vec<&[u8]> = argv.iter().map(Vec::as_slice).collect();
    c.cmd(&refs)
}

fn login(addr: SocketAddr, user: &str, pw: &str) -> Conn {
    let mut c = Conn::open(addr);
    assert_eq!(
        c.cmd(&[b"AUTH", user.as_bytes(), pw.as_bytes()]),
        V::Simple("OK".into())
    );
    c
}

/// Every command of the table before AUTH: NOAUTH, except the four Redis 7
/// answers unauthenticated (AUTH, HELLO, QUIT, RESET), which the table marks
/// Open; then each role runs exactly what `permits` grants it.
#[test]
fn every_command_needs_auth_and_each_role_runs_exactly_its_commands() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr, log) = start(dir.path());
    let mut anon = Conn::open(addr);
    let open: Vec<&str> = COMMANDS
        .iter()
        .filter(|c| c.access == Access::Open)
        .map(|c| c.name)
        .collect();
    assert_eq!(
        open,
        ["auth", "hello", "quit", "reset"],
        "Redis 7's no-auth set"
    );
    for c in COMMANDS.iter().filter(|c| c.access != Access::Open) {
        let argv = argv_for(c.name, c.arity);
        assert_eq!(cmd(&mut anon, &argv), err(NOAUTH), "{}", c.name);
    }
    // The open ones answer, and leave the connection unauthenticated.
    assert_eq!(anon.cmd(&[b"HELLO", b"3"]), err(HELLO_NOAUTH));
    assert_eq!(anon.cmd(&[b"RESET"]), V::Simple("RESET".into()));
    assert_eq!(anon.cmd(&[b"GET", b"k"]), err(NOAUTH));
    assert_eq!(anon.cmd(&[b"QUIT"]), V::Simple("OK".into()));

    // A key for the readers to find.
    let mut w = login(addr, "writer", WRITER_PW);
    assert_eq!(w.cmd(&[b"SET", b"k", b"v"]), V::Simple("OK".into()));
    for (user, pw, role) in [
        ("reader", READER_PW, Role::Read),
        ("writer", WRITER_PW, Role::Write),
        ("admin", ADMIN_PW, Role::Admin),
    ] {
        let mut c = login(addr, user, pw);
        for cm in COMMANDS.iter().filter(|c| c.access != Access::Open) {
            let argv = argv_for(cm.name, cm.arity);
            let got = cmd(&mut c, &argv);
            if permits(Some(role), cm.access) {
                assert!(
                    !matches!(&got, V::Err(e) if e.starts_with("NOPERM") || e.starts_with("NOAUTH")),
                    "{user} may run {}: {got:?}",
                    cm.name
                );
            } else {
                assert_eq!(got, noperm(cm.name), "{user} runs {}", cm.name);
            }
        }
        // The admin's FLUSHDB/FLUSHALL above emptied the keyspace.
        assert_eq!(w.cmd(&[b"SET", b"k", b"v"]), V::Simple("OK".into()));
        // Real outcomes, not just the absence of a refusal.
        assert_eq!(c.cmd(&[b"GET", b"k"]), V::Bulk(b"v".to_vec()), "{user}");
        let set = c.cmd(&[b"SET", b"k", b"v"]);
        if role == Role::Read {
            assert_eq!(set, noperm("set"));
        } else {
            assert_eq!(set, V::Simple("OK".into()));
        }
        // RESET logs the connection out, as in Redis 7.
        assert_eq!(c.cmd(&[b"RESET"]), V::Simple("RESET".into()));
        assert_eq!(c.cmd(&[b"GET", b"k"]), err(NOAUTH));
    }
    // `AUTH password` is the "default" user.
    let mut d = Conn::open(addr);
    assert_eq!(
        d.cmd(&[b"AUTH", DEFAULT_PW.as_bytes()]),
        V::Simple("OK".into())
    );
    assert_eq!(d.cmd(&[b"GET", b"k"]), V::Bulk(b"v".to_vec()));
    let _ = server.stop();
    assert_no_password(&log);
}

/// Commands pipelined in one write behind an AUTH are checked against the
/// session the AUTH established, and plain GET/SET runs (executed as one
/// batch) are checked too: before AUTH they are refused, after it the
/// reader's SET is.
#[test]
fn pipelined_commands_are_checked_against_the_session_of_their_turn() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr, log) = start(dir.path());
    let mut w = login(addr, "writer", WRITER_PW);
    assert_eq!(w.cmd(&[b"SET", b"k", b"v"]), V::Simple("OK".into()));

    let mut c = Conn::open(addr);
    let burst: &[&[&[u8]]] = &[
        &[b"SET", b"k", b"anon"],
        &[b"GET", b"k"],
        &[b"AUTH", b"reader", READER_PW.as_bytes()],
        &[b"GET", b"k"],
        &[b"SET", b"k", b"by-reader"],
        &[b"SET", b"k2", b"by-reader"],
        &[b"GET", b"k"],
        &[b"AUTH", b"writer", WRITER_PW.as_bytes()],
        &[b"SET", b"k", b"by-writer"],
        &[b"GET", b"k"],
    ];
    c.send_all(burst);
    let got: Vec<V> = burst.iter().map(|_| c.read()).collect();
    let ok = V::Simple("OK".into());
    assert_eq!(
        got,
        [
            err(NOAUTH),
            err(NOAUTH),
            ok.clone(),
            V::Bulk(b"v".to_vec()),
            noperm("set"),
            noperm("set"),
            V::Bulk(b"v".to_vec()),
            ok.clone(),
            ok,
            V::Bulk(b"by-writer".to_vec()),
        ]
    );
    assert_eq!(
        w.cmd(&[b"GET", b"k2"]),
        V::NilBulk,
        "the reader wrote nothing"
    );
    let _ = server.stop();
    assert_no_password(&log);
}

/// Wrong credentials: WRONGPASS (AUTH, AUTH user, HELLO AUTH), then the
/// shared throttle; each refusal logged and counted as the native path's.
#[test]
fn wrong_passwords_get_wrongpass_then_the_throttle() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr, log) = start(dir.path());
    let mut c = Conn::open(addr);
    assert_eq!(c.cmd(&[b"AUTH", b"wrong-pw"]), err(WRONGPASS));
    assert_eq!(c.cmd(&[b"AUTH", b"reader", b"wrong-pw"]), err(WRONGPASS));
    assert_eq!(
        c.cmd(&[b"HELLO", b"3", b"AUTH", b"nobody", b"wrong-pw"]),
        err(WRONGPASS)
    );
    let mut failed = 3;
    let throttled = loop {
        match c.cmd(&[b"AUTH", b"reader", b"wrong-pw"]) {
            V::Err(e) if e == WRONGPASS => failed += 1,
            V::Err(e) if e.starts_with("AUTH_THROTTLED") => break e,
            other => panic!("{other:?}"),
        }
        assert!(failed <= 10, "never throttled");
    };
    assert!(throttled.contains("retry in"), "{throttled}");
    // While throttled, the right password is not even checked, and the
    // connection stays as it was (still in RESP2: HELLO 3 failed). (On a
    // stalled machine the wait may be over by now: then it is accepted.)
    match c.cmd(&[b"AUTH", b"reader", READER_PW.as_bytes()]) {
        V::Err(e) if e.starts_with("AUTH_THROTTLED") => {
            assert_eq!(c.cmd(&[b"GET", b"k"]), err(NOAUTH));
        }
        V::Simple(ok) if ok == "OK" => {
            assert_eq!(c.cmd(&[b"RESET"]), V::Simple("RESET".into()));
        }
        other => panic!("{other:?}"),
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match c.cmd(&[b"HELLO", b"3", b"AUTH", b"reader", READER_PW.as_bytes()]) {
            V::Map(m) => {
                assert!(
                    m.contains(&(V::Bulk(b"proto".to_vec()), V::Int(3))),
                    "{m:?}"
                );
                break;
            }
            V::Err(e) if e.starts_with("AUTH_THROTTLED") => {}
            other => panic!("{other:?}"),
        }
        assert!(Instant::now() < deadline, "the throttle never let go");
        std::thread::sleep(Duration::from_millis(100));
    }
    // RESP3 now: a missing key is `_`.
    assert_eq!(c.cmd(&[b"GET", b"k"]), V::Null);
    let metrics = metrics_text(server.admin);
    assert!(metrics.contains("error=\"AUTH_FAILED\""), "{metrics}");
    assert!(metrics.contains("error=\"AUTH_THROTTLED\""), "{metrics}");
    assert!(metrics.contains("error=\"NOAUTH\""), "{metrics}");
    let _ = server.stop();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.matches("AUTH refused").count() > failed,
        "every refusal is logged: {text}"
    );
    assert!(!text.contains("wrong-pw"), "a password was logged: {text}");
    assert_no_password(&log);
}

/// The admin endpoint's /metrics, as the admin user.
fn metrics_text(admin: SocketAddr) -> String {
    let mut s = TcpStream::connect(admin).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let basic = corekv::net::auth::base64_encode(format!("admin:{ADMIN_PW}").as_bytes());
    write!(
        s,
        "GET /metrics HTTP/1.0\r\nHost: x\r\nAuthorization: Basic {basic}\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

fn assert_no_password(log: &Path) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    for pw in [ADMIN_PW, WRITER_PW, READER_PW, DEFAULT_PW] {
        assert!(!text.contains(pw), "the log holds a password: {text}");
    }
}

fn redis_cli(addr: SocketAddr, auth: &[&str], args: &[&str]) -> String {
    let o = Command::new("redis-cli")
        .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .args(auth)
        .args(args)
        .env("REDISCLI_AUTH", "")
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
fn redis_cli_logs_in_with_user_and_pass_or_a() {
    if which("redis-cli").is_none() {
        eprintln!("SKIPPED: redis-cli is not installed (CI installs redis-tools)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (server, addr, log) = start(dir.path());
    let user = ["--user", "writer", "--pass", WRITER_PW, "--no-auth-warning"];
    assert_eq!(redis_cli(addr, &user, &["SET", "cli", "1"]), "OK");
    assert_eq!(redis_cli(addr, &user, &["INCR", "cli"]), "2");
    let a = ["-a", DEFAULT_PW, "--no-auth-warning"];
    assert_eq!(redis_cli(addr, &a, &["GET", "cli"]), "2");
    let reader = ["--user", "reader", "--pass", READER_PW, "--no-auth-warning"];
    assert_eq!(
        redis_cli(addr, &reader, &["DEL", "cli"]),
        "NOPERM this user has no permissions to run the 'del' command"
    );
    assert_eq!(redis_cli(addr, &[], &["GET", "cli"]), NOAUTH);
    // Protocol 3 logs in through HELLO 3 AUTH.
    let resp3 = [
        "-3",
        "--user",
        "reader",
        "--pass",
        READER_PW,
        "--no-auth-warning",
    ];
    assert_eq!(redis_cli(addr, &resp3, &["GET", "cli"]), "2");
    let _ = server.stop();
    assert_no_password(&log);
}

/// The same refusals from a real redis-server 7 with the same users give
/// the same texts.
#[test]
fn refusal_texts_are_redis_servers() {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("users.acl");
    std::fs::write(
        &acl,
        format!(
            "user default on >{DEFAULT_PW} ~* &* +@all\n\
             user reader on >{READER_PW} ~* &* -@all +@read +@connection\n"
        ),
    )
    .unwrap();
    let Some(redis) = start_redis(&["--aclfile", acl.to_str().unwrap()]) else {
        return;
    };
    let (server, addr, _log) = start(dir.path());
    let script: &[&[&[u8]]] = &[
        &[b"GET", b"k"],
        &[b"SET", b"k", b"v"],
        &[b"PING"],
        &[b"HELLO", b"3"],
        &[b"AUTH", b"wrong-pw"],
        &[b"AUTH", b"reader", b"wrong-pw"],
        &[b"HELLO", b"2", b"AUTH", b"reader", b"wrong-pw"],
        &[b"AUTH", b"reader", READER_PW.as_bytes()],
        &[b"GET", b"k"],
        &[b"SET", b"k", b"v"],
        &[b"DEL", b"k"],
        &[b"CONFIG", b"GET", b"maxclients"],
        &[b"INFO"],
        &[b"RESET"],
        &[b"GET", b"k"],
        &[b"HELLO", b"2", b"AUTH", b"reader", READER_PW.as_bytes()],
        &[b"INCR", b"k"],
    ];
    let mut ours = Conn::open(addr);
    let mut theirs = Conn::open(redis.addr);
    for argv in script {
        let (a, b) = (ours.cmd(argv), theirs.cmd(argv));
        let shown: Vec<String> = argv
            .iter()
            .map(|a| String::from_utf8_lossy(a).into())
            .collect();
        match (&a, &b) {
            // HELLO's reply differs in the connection id; errors must match.
            (V::Map(_), V::Map(_)) | (V::Array(_), V::Array(_)) => {}
            _ => assert_eq!(a, b, "{shown:?}"),
        }
    }
    let _ = server.stop();
}
