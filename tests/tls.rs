//! TLS on the native, RESP and admin listeners (issue 21) against real server processes, with
//! throwaway certificates made by the `openssl` tool: the Rust client and
//! `corekv cli` over TLS, protocol versions checked with `openssl s_client`,
//! plaintext and silent clients closed (never a hang), a wrong CA refused,
//! mutual TLS, AUTH over TLS, startup errors, the key never printed, HTTPS
//! on the admin endpoint (curl, diagnose), `corekv bench` over TLS and
//! close_notify on an orderly close, client certificates as users.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use corekv::core::status::Status;
use corekv::net::client::{Client, ClientError, TlsOptions};

/// Certificates for one test: a CA, a server certificate it signed (for
/// localhost and 127.0.0.1), a client certificate it signed, and an
/// unrelated CA.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let o = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl (install it: apt-get install openssl)");
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

fn make_leaf(dir: &Path, name: &str, ca: &str, ext: &str) {
    make_leaf_for_days(dir, name, ca, ext, "2");
}

/// A leaf valid for `days` from now (`"0"`: it expires the second it is made).
fn make_leaf_for_days(dir: &Path, name: &str, ca: &str, ext: &str, days: &str) {
    std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.crt"),
            "-days",
            days,
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
}

fn pki(dir: &Path) -> Pki {
    let dir = dir.join("pki");
    std::fs::create_dir_all(&dir).unwrap();
    make_ca(&dir, "ca");
    make_ca(&dir, "other-ca");
    make_leaf(
        &dir,
        "server",
        "ca",
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    );
    make_leaf(
        &dir,
        "client",
        "ca",
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
    );
    Pki { dir }
}

fn tls_flags(p: &Pki) -> Vec<String> {
    vec![
        "--shards".into(),
        "1".into(),
        "--tls-cert-file".into(),
        p.path("server.crt").display().to_string(),
        "--tls-key-file".into(),
        p.path("server.key").display().to_string(),
        // Short, so the tests of silent clients are quick.
        "--frame-timeout-ms".into(),
        "1000".into(),
    ]
}

fn start(dir: &Path, flags: &[String]) -> common::Server {
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();
    common::start_server(&dir.join("data"), &args)
}

fn options(p: &Pki, ca: &str, client_cert: bool) -> TlsOptions {
    TlsOptions {
        ca_file: p.path(&format!("{ca}.crt")),
        server_name: "localhost".into(),
        client_cert: client_cert.then(|| (p.path("client.crt"), p.path("client.key"))),
    }
}

fn tls_client(server: &common::Server, opts: &TlsOptions) -> Result<Client, ClientError> {
    let c = Client::connect_tls(&server.addr.to_string(), opts)?;
    c.set_timeout(Some(Duration::from_secs(30)))?;
    Ok(c)
}

/// Connect and use the connection: under TLS 1.3 a client learns that the
/// server refused its certificate only when it next reads.
fn connect_and_ping(server: &common::Server, opts: &TlsOptions) -> Result<(), ClientError> {
    let mut c = tls_client(server, opts)?;
    c.ping()
}

/// `openssl s_client` with `extra` flags; closes its stdin at once.
fn s_client(server: &common::Server, p: &Pki, extra: &[&str]) -> Output {
    Command::new("openssl")
        .args(["s_client", "-connect", &server.addr.to_string()])
        .arg("-CAfile")
        .arg(p.path("ca.crt"))
        .args(["-servername", "localhost", "-verify_return_error"])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl s_client")
}

/// The server closes a connection that never completes a handshake:
/// reading returns end-of-file or a reset well before the client's own
/// generous timeout, never a timeout (which would mean a hang).
fn assert_closed_by_server(mut s: TcpStream, what: &str) {
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            // A TLS alert may come before the close.
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!(
                    "{what}: connection still open after {:?}",
                    started.elapsed()
                )
            }
            Err(_) => return,
        }
    }
}

#[test]
fn the_rust_client_and_the_cli_speak_tls_and_openssl_sees_only_tls12_and_13() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let server = start(dir.path(), &tls_flags(&p));

    let mut c = tls_client(&server, &options(&p, "ca", false)).expect("TLS connect");
    c.put(b"k", b"over tls").unwrap();
    assert_eq!(c.get(b"k").unwrap().as_deref(), Some(&b"over tls"[..]));
    // Pipelined and larger than one TLS record (16 KiB).
    let big = vec![7u8; 200_000];
    c.put(b"big", &big).unwrap();
    assert_eq!(c.get(b"big").unwrap(), Some(big));

    // corekv cli, server name from --addr (127.0.0.1 is in the certificate).
    let cli = Command::new(common::corekv_bin())
        .args(["cli", "--addr", &server.addr.to_string(), "--tls-ca-file"])
        .arg(p.path("ca.crt"))
        .args(["get", "k"])
        .output()
        .unwrap();
    assert!(cli.status.success(), "cli over TLS: {cli:?}");
    assert_eq!(String::from_utf8_lossy(&cli.stdout).trim(), "over tls");
    // Without --tls-ca-file the CLI speaks plaintext and says what it met.
    let plain = Command::new(common::corekv_bin())
        .args(["cli", "--addr", &server.addr.to_string(), "--timeout-ms"])
        .arg("20000")
        .args(["get", "k"])
        .output()
        .unwrap();
    assert!(
        !plain.status.success(),
        "plaintext cli on a TLS port: {plain:?}"
    );

    let v12 = s_client(&server, &p, &["-tls1_2"]);
    let out12 = String::from_utf8_lossy(&v12.stdout);
    assert!(
        out12.contains("Protocol  : TLSv1.2") || out12.contains("TLSv1.2, Cipher is"),
        "TLS 1.2 handshake: {out12}\n{}",
        String::from_utf8_lossy(&v12.stderr)
    );
    let v13 = s_client(&server, &p, &["-tls1_3"]);
    assert!(
        String::from_utf8_lossy(&v13.stdout).contains("TLSv1.3"),
        "TLS 1.3 handshake: {v13:?}"
    );
    // SECLEVEL=0 so that openssl itself is willing to offer TLS 1.1: the
    // refusal must come from the server.
    let v11 = s_client(&server, &p, &["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"]);
    let out11 = format!(
        "{}{}",
        String::from_utf8_lossy(&v11.stdout),
        String::from_utf8_lossy(&v11.stderr)
    );
    assert!(!v11.status.success(), "TLS 1.1 accepted: {out11}");
    // s_client prints "Protocol : TLSv1.1" for what it offered even when
    // refused; a negotiated session would name a cipher.
    assert!(
        out11.contains("Cipher is (NONE)") && !out11.contains("TLSv1.1, Cipher is"),
        "TLS 1.1 negotiated: {out11}"
    );
    assert!(
        out11.contains("alert"),
        "TLS 1.1 refused by the server with an alert: {out11}"
    );

    // The server is still fine.
    assert_eq!(c.get(b"k").unwrap().as_deref(), Some(&b"over tls"[..]));
    let (code, _) = server.stop();
    assert_eq!(code, Some(0));
}

#[test]
fn plaintext_and_silent_clients_are_closed_not_left_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let server = start(dir.path(), &tls_flags(&p));

    // A corekv client speaking plaintext: refused at once, with a hint.
    let mut plain = Client::connect(server.addr).unwrap();
    plain.set_timeout(Some(Duration::from_secs(30))).unwrap();
    match plain.ping() {
        Err(ClientError::Timeout { .. }) => panic!("plaintext ping hung until the timeout"),
        Err(_) => {}
        Ok(()) => panic!("plaintext ping answered on a TLS port"),
    }

    // Sends nothing: closed by the handshake timeout (frame_timeout).
    let silent = TcpStream::connect(server.addr).unwrap();
    assert_closed_by_server(silent, "silent client");

    // Sends two bytes of a plaintext header (less than a TLS record
    // header, so rustls waits for more): closed by the timeout as well.
    let mut partial = TcpStream::connect(server.addr).unwrap();
    partial.write_all(b"CK").unwrap();
    assert_closed_by_server(partial, "client that sent 2 plaintext bytes");

    // An HTTP request to the TLS port.
    let mut http = TcpStream::connect(server.addr).unwrap();
    http.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_closed_by_server(http, "HTTP client");

    // Real clients still get in.
    connect_and_ping(&server, &options(&p, "ca", false)).expect("TLS client after the junk");
    let (code, _) = server.stop();
    assert_eq!(code, Some(0));
}

#[test]
fn a_client_trusting_another_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let server = start(dir.path(), &tls_flags(&p));
    match tls_client(&server, &options(&p, "other-ca", false)) {
        Err(ClientError::Tls(msg)) => assert!(
            msg.contains("certificate") || msg.contains("issuer"),
            "reason names the certificate: {msg}"
        ),
        Err(e) => panic!("expected a TLS error, got {e}"),
        Ok(_) => panic!("a client trusting another CA connected"),
    }
    // A name the certificate does not carry.
    let mut wrong_name = options(&p, "ca", false);
    wrong_name.server_name = "db.example.com".into();
    assert!(matches!(
        tls_client(&server, &wrong_name),
        Err(ClientError::Tls(_))
    ));
    connect_and_ping(&server, &options(&p, "ca", false)).expect("right CA");
}

#[test]
fn mutual_tls_admits_only_clients_with_a_certificate_from_the_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let mut flags = tls_flags(&p);
    flags.push("--tls-client-ca-file".into());
    flags.push(p.path("ca.crt").display().to_string());
    let server = start(dir.path(), &flags);

    let without = connect_and_ping(&server, &options(&p, "ca", false));
    assert!(without.is_err(), "a client without a certificate got in");
    assert!(
        !matches!(without, Err(ClientError::Timeout { .. })),
        "refusal must not be a hang: {without:?}"
    );

    let mut c = tls_client(&server, &options(&p, "ca", true)).expect("client certificate");
    c.put(b"m", b"mtls").unwrap();
    assert_eq!(c.get(b"m").unwrap().as_deref(), Some(&b"mtls"[..]));

    // The CLI with its client certificate.
    let cli = Command::new(common::corekv_bin())
        .args(["cli", "--addr", &server.addr.to_string(), "--tls-ca-file"])
        .arg(p.path("ca.crt"))
        .arg("--tls-cert-file")
        .arg(p.path("client.crt"))
        .arg("--tls-key-file")
        .arg(p.path("client.key"))
        .args(["get", "m"])
        .output()
        .unwrap();
    assert!(
        cli.status.success(),
        "cli with a client certificate: {cli:?}"
    );
    assert_eq!(String::from_utf8_lossy(&cli.stdout).trim(), "mtls");
}

#[test]
fn auth_works_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let users = dir.path().join("users.toml");
    common::user_add(&users, "admin", "admin", "tls-adm1n-Pw");
    let mut flags = tls_flags(&p);
    flags.push("--users-file".into());
    flags.push(users.display().to_string());
    let server = start(dir.path(), &flags);

    let mut anon = tls_client(&server, &options(&p, "ca", false)).unwrap();
    match anon.put(b"a", b"b") {
        Err(ClientError::Status { status, .. }) => assert_eq!(status, Status::NoAuth),
        other => panic!("unauthenticated PUT over TLS: {other:?}"),
    }
    let mut c = tls_client(&server, &options(&p, "ca", false)).unwrap();
    c.auth("admin", b"tls-adm1n-Pw").expect("AUTH over TLS");
    c.put(b"a", b"b").unwrap();
    assert_eq!(c.get(b"a").unwrap().as_deref(), Some(&b"b"[..]));
}

#[test]
fn unusable_tls_files_stop_the_start_with_a_named_error_and_never_print_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let key_text = std::fs::read_to_string(p.path("server.key")).unwrap();
    // The base64 body of the key: what must never be printed.
    let key_body: Vec<&str> = key_text
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 16)
        .collect();
    assert!(!key_body.is_empty());
    let leaked = |out: &str| key_body.iter().find(|l| out.contains(**l)).is_some();

    let cases: Vec<(&str, Vec<String>)> = vec![
        (
            "missing cert",
            vec![
                "--tls-cert-file".into(),
                dir.path().join("nope.crt").display().to_string(),
                "--tls-key-file".into(),
                p.path("server.key").display().to_string(),
            ],
        ),
        (
            // The client's key with the server's certificate.
            "key of another certificate",
            vec![
                "--tls-cert-file".into(),
                p.path("server.crt").display().to_string(),
                "--tls-key-file".into(),
                p.path("client.key").display().to_string(),
            ],
        ),
        (
            // The key given as the certificate: its text must not be echoed.
            "key as the certificate",
            vec![
                "--tls-cert-file".into(),
                p.path("server.key").display().to_string(),
                "--tls-key-file".into(),
                p.path("server.key").display().to_string(),
            ],
        ),
        (
            "certificate as the key",
            vec![
                "--tls-cert-file".into(),
                p.path("server.crt").display().to_string(),
                "--tls-key-file".into(),
                p.path("server.crt").display().to_string(),
            ],
        ),
    ];
    for (what, flags) in cases {
        let err = match common::try_start_server(
            &dir.path().join("data"),
            &flags.iter().map(String::as_str).collect::<Vec<_>>(),
        ) {
            Ok(s) => panic!("{what}: started: {}", s.kill()),
            Err(stderr) => stderr,
        };
        assert!(
            err.contains("TLS_CONFIG_INVALID"),
            "{what}: named error: {err}"
        );
        assert!(!leaked(&err), "{what}: the key's text was printed: {err}");
    }

    // Cert without key: a configuration error, before any file is read.
    let half = common::try_start_server(
        &dir.path().join("data"),
        &["--tls-cert-file", p.path("server.crt").to_str().unwrap()],
    );
    match half {
        Ok(s) => panic!("cert without key started: {}", s.kill()),
        Err(e) => assert!(e.contains("tls_key_file"), "{e}"),
    }

    // config show names the paths, never the contents; config check loads.
    let flags = tls_flags(&p);
    for sub in ["show", "check"] {
        let o = Command::new(common::corekv_bin())
            .args(["config", sub, "--data-dir"])
            .arg(dir.path().join("data"))
            .args(&flags)
            .output()
            .unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(!leaked(&all), "config {sub} printed the key: {all}");
        if sub == "show" {
            assert!(
                all.contains("server.key"),
                "config show names the path: {all}"
            );
        }
        assert!(!all.contains("TLS_CONFIG_INVALID"), "config {sub}: {all}");
    }

    // A running server's log, including failed handshakes, at debug.
    let server = common::try_start_server_env(
        &dir.path().join("data"),
        &flags.iter().map(String::as_str).collect::<Vec<_>>(),
        &[("COREKV_LOG", "debug")],
    )
    .expect("start");
    let _ = connect_and_ping(&server, &options(&p, "other-ca", false));
    let mut junk = TcpStream::connect(server.addr).unwrap();
    junk.write_all(b"hello\r\n").unwrap();
    assert_closed_by_server(junk, "junk");
    let log = server.kill();
    assert!(log.contains("TLS 1.2/1.3"), "startup says TLS is on: {log}");
    assert!(!leaked(&log), "the log holds the key: {log}");
}

#[test]
fn sighup_reloads_the_certificate_for_new_connections_and_keeps_old_ones() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    make_leaf(
        &p.dir,
        "server2",
        "other-ca",
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    );
    // The server reads its files from paths the test then overwrites.
    let live_cert = p.path("live.crt");
    let live_key = p.path("live.key");
    std::fs::copy(p.path("server.crt"), &live_cert).unwrap();
    std::fs::copy(p.path("server.key"), &live_key).unwrap();
    let log_file = dir.path().join("server.log");
    let mut flags = tls_flags(&p);
    flags[3] = live_cert.display().to_string();
    flags[5] = live_key.display().to_string();
    flags.push("--log-file".into());
    flags.push(log_file.display().to_string());
    let server = start(dir.path(), &flags);
    let wait_for_log = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let log = std::fs::read_to_string(&log_file).unwrap_or_default();
            if log.contains(needle) {
                return log;
            }
            assert!(Instant::now() < deadline, "no {needle:?} in the log: {log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let mut old = tls_client(&server, &options(&p, "ca", false)).unwrap();
    old.put(b"r", b"1").unwrap();
    let hup = || {
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(server.pid(), libc::SIGHUP) };
    };

    // A broken certificate file: the reload is refused, the old one stays.
    std::fs::write(&live_cert, b"not a certificate").unwrap();
    hup();
    let log = wait_for_log("kept the previous TLS certificate");
    assert!(log.contains("TLS_CONFIG_INVALID"), "{log}");
    connect_and_ping(&server, &options(&p, "ca", false)).expect("old certificate kept");
    // Then the certificate from the other CA (cert and key are replaced one
    // after the other: a reload between the two is refused and retried).
    std::fs::copy(p.path("server2.crt"), &live_cert).unwrap();
    std::fs::copy(p.path("server2.key"), &live_key).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        hup();
        if connect_and_ping(&server, &options(&p, "other-ca", false)).is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "new certificate never served");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        connect_and_ping(&server, &options(&p, "ca", false)).is_err(),
        "the old certificate is still served to new connections"
    );
    // The RESP listener serves the reloaded certificate too.
    let other = p.path("other-ca.crt").display().to_string();
    let o = redis_cli(
        &server,
        &["--tls", "--cacert", &other, "--sni", "localhost", "PING"],
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "PONG", "{o:?}");
    // The connection made before the reload is still up.
    assert_eq!(old.get(b"r").unwrap().as_deref(), Some(&b"1"[..]));
    wait_for_log("reloaded the TLS certificate");
    server.kill();
}

/// `redis-cli` with `args` (TLS flags included by the caller) against the
/// server's RESP listener; stdin closed.
fn redis_cli(server: &common::Server, args: &[&str]) -> Output {
    let resp = server.resp.expect("the RESP listener is on");
    Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &resp.port().to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli (install it: apt-get install redis-tools)")
}

#[test]
fn the_resp_listener_speaks_only_tls_to_redis_cli_with_the_same_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let mut flags = tls_flags(&p);
    flags.push("--tls-client-ca-file".into());
    flags.push(p.path("ca.crt").display().to_string());
    let server = start(dir.path(), &flags);
    let ca = p.path("ca.crt").display().to_string();
    let cert = p.path("client.crt").display().to_string();
    let key = p.path("client.key").display().to_string();
    let tls_args = [
        "--tls",
        "--cacert",
        &ca,
        "--sni",
        "localhost",
        "--cert",
        &cert,
        "--key",
        &key,
    ];

    let mut ping = tls_args.to_vec();
    ping.push("PING");
    let o = redis_cli(&server, &ping);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "PONG", "{o:?}");
    let mut set = tls_args.to_vec();
    set.extend(["SET", "rk", "over tls"]);
    let o = redis_cli(&server, &set);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "OK", "{o:?}");
    // Same keyspace as the native listener, over its own TLS.
    let mut c = tls_client(&server, &options(&p, "ca", true)).unwrap();
    assert_eq!(c.get(b"rk").unwrap().as_deref(), Some(&b"over tls"[..]));

    // mTLS applies here too: no client certificate, no PONG.
    let o = redis_cli(
        &server,
        &["--tls", "--cacert", &ca, "--sni", "localhost", "PING"],
    );
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("PONG"),
        "PONG without a client certificate: {o:?}"
    );
    // A client trusting another CA is refused.
    let other = p.path("other-ca.crt").display().to_string();
    let o = redis_cli(
        &server,
        &[
            "--tls", "--cacert", &other, "--cert", &cert, "--key", &key, "PING",
        ],
    );
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("PONG"),
        "PONG to a client trusting another CA: {o:?}"
    );

    // Plaintext RESP to the TLS port: closed, not answered, not left hanging.
    let o = redis_cli(&server, &["PING"]);
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("PONG"),
        "plaintext PONG on a TLS port: {o:?}"
    );
    let resp = server.resp.unwrap();
    let mut plain = TcpStream::connect(resp).unwrap();
    plain.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
    assert_closed_by_server(plain, "plaintext RESP client");
    let silent = TcpStream::connect(resp).unwrap();
    assert_closed_by_server(silent, "silent RESP client");

    // Still serving.
    let o = redis_cli(&server, &ping);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "PONG", "{o:?}");
    let (code, _) = server.stop();
    assert_eq!(code, Some(0));
}

/// `curl` against the admin endpoint over HTTPS: (HTTP code, body).
fn curl(server: &common::Server, p: &Pki, path: &str, extra: &[&str]) -> (String, String) {
    let o = Command::new("curl")
        .args(["-sS", "--max-time", "30", "--cacert"])
        .arg(p.path("ca.crt"))
        .args(["-w", "\n%{http_code}"])
        .args(extra)
        .arg(format!("https://127.0.0.1:{}{path}", server.admin.port()))
        .stdin(Stdio::null())
        .output()
        .expect("run curl");
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", &out));
    assert!(
        o.status.success(),
        "curl {path}: {o:?} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    (code.to_string(), body.to_string())
}

#[test]
fn the_admin_endpoint_speaks_only_https_and_diagnose_reaches_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let users = dir.path().join("users.toml");
    common::user_add(&users, "admin", "admin", "https-adm1n-Pw");
    let mut flags = tls_flags(&p);
    flags.push("--users-file".into());
    flags.push(users.display().to_string());
    let server = start(dir.path(), &flags);

    // /health stays open without credentials (health_requires_auth is off).
    let (code, body) = curl(&server, &p, "/health", &[]);
    assert_eq!(code, "200", "{body}");
    assert!(body.contains("\"serving\""), "{body}");
    // /metrics needs an admin, over HTTPS as over HTTP.
    let (code, _) = curl(&server, &p, "/metrics", &[]);
    assert_eq!(code, "401");
    let (code, body) = curl(&server, &p, "/metrics", &["-u", "admin:https-adm1n-Pw"]);
    assert_eq!(code, "200", "{body}");
    assert!(body.contains("corekv_"), "{body}");
    let (code, _) = curl(&server, &p, "/nope", &["-u", "admin:https-adm1n-Pw"]);
    assert_eq!(code, "404");

    // Plaintext HTTP to the HTTPS port: closed, never answered or left open.
    let mut http = TcpStream::connect(server.admin).unwrap();
    http.write_all(b"GET /health HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    http.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut got = Vec::new();
    let _ = http.read_to_end(&mut got);
    assert!(
        !String::from_utf8_lossy(&got).contains("serving"),
        "plaintext HTTP answered on the HTTPS port"
    );
    let http = TcpStream::connect(server.admin).unwrap();
    assert_closed_by_server(http, "silent HTTPS client");
    assert!(
        common::try_metric_samples(server.admin, "corekv_connections_open")
            .unwrap_or_default()
            .is_empty(),
        "the plaintext metrics helper got an answer"
    );

    // diagnose, given the server's settings and the CA, fetches both files
    // over HTTPS and HELLO over TLS.
    let settings: Vec<String> = [
        "--data-dir".to_string(),
        server.data_dir.display().to_string(),
        "--listen".into(),
        server.addr.to_string(),
        "--admin-listen".into(),
        server.admin.to_string(),
    ]
    .into_iter()
    .chain(flags.iter().cloned())
    .collect();
    let bundle = dir.path().join("bundle.tar.gz");
    let diag = |tls: bool| {
        let mut cmd = Command::new(common::corekv_bin());
        cmd.arg("diagnose")
            .args(&settings)
            .args(["--user", "admin"])
            .env("COREKV_PASSWORD", "https-adm1n-Pw")
            .arg("--out")
            .arg(&bundle);
        if tls {
            cmd.arg("--tls-ca-file").arg(p.path("ca.crt"));
        }
        cmd.output().unwrap()
    };
    let o = diag(true);
    assert!(o.status.success(), "diagnose over TLS: {o:?}");
    let gz = flate2::read::GzDecoder::new(std::fs::File::open(&bundle).unwrap());
    let mut archive = tar::Archive::new(gz);
    let mut files = std::collections::HashMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().display().to_string();
        let mut body = String::new();
        entry.read_to_string(&mut body).unwrap();
        files.insert(name, body);
    }
    let file = |name: &str| {
        files
            .iter()
            .find(|(n, _)| n.ends_with(name))
            .map(|(_, body)| body.clone())
            .unwrap_or_else(|| panic!("no {name} in the bundle: {:?}", files.keys()))
    };
    assert!(file("health.json").contains("\"serving\""), "{files:?}");
    assert!(file("metrics.txt").contains("corekv_"), "{files:?}");
    assert!(file("server.txt").contains("shard_count: 1"), "{files:?}");
    // Without the CA: incomplete, and it says why.
    let o = diag(false);
    assert!(!o.status.success(), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--tls-ca-file"),
        "{o:?}"
    );
    let (code, _) = server.stop();
    assert_eq!(code, Some(0));
}

#[test]
fn corekv_bench_measures_a_tls_server_with_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let mut flags = tls_flags(&p);
    flags.push("--tls-client-ca-file".into());
    flags.push(p.path("ca.crt").display().to_string());
    let server = start(dir.path(), &flags);
    let addr = server.addr.to_string();
    let bench = |extra: &[&str], cert: bool| {
        let mut cmd = Command::new(common::corekv_bin());
        cmd.args(["bench", "--tls-ca-file"])
            .arg(p.path("ca.crt"))
            .args(["--keys", "200", "--warmup", "0", "--duration", "1"])
            .args(["--connections", "2", "--pipeline", "4", "--quiet"])
            .args(["--reply-timeout", "30"])
            .args(extra)
            .stdin(Stdio::null());
        if cert {
            cmd.arg("--tls-cert-file")
                .arg(p.path("client.crt"))
                .arg("--tls-key-file")
                .arg(p.path("client.key"));
        }
        cmd.output().unwrap()
    };
    // Load (PUTs) and a read-heavy run, pipelined, over TLS with mTLS.
    let json = dir.path().join("run.json");
    let o = bench(
        &[
            "--addr",
            &addr,
            "--workload",
            "B",
            "--load",
            "--json",
            json.to_str().unwrap(),
        ],
        true,
    );
    assert!(o.status.success(), "bench over TLS: {o:?}");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    // Every op's errors are 0 and some ops were counted.
    fn sums(v: &serde_json::Value, key: &str) -> u64 {
        match v {
            serde_json::Value::Object(m) => m
                .iter()
                .map(|(k, v)| {
                    if k == key {
                        v.as_u64().unwrap_or(0)
                    } else {
                        sums(v, key)
                    }
                })
                .sum(),
            serde_json::Value::Array(a) => a.iter().map(|v| sums(v, key)).sum(),
            _ => 0,
        }
    }
    assert_eq!(sums(&doc, "errors"), 0, "{doc}");
    assert!(sums(&doc, "count") > 0, "{doc}");
    // The keys the load wrote are there.
    let mut c = tls_client(&server, &options(&p, "ca", true)).unwrap();
    let mut found = 0;
    let mut key = Vec::new();
    for i in 0..200u64 {
        corekv::bench::keygen::key_for(i, &mut key);
        if c.get(&key).unwrap().is_some() {
            found += 1;
        }
    }
    assert_eq!(found, 200, "the TLS load wrote every record");
    // A TLS target in --target form.
    let target = format!("tls=native+tls@{addr}");
    let o = bench(&["--target", &target, "--workload", "ping"], true);
    assert!(o.status.success(), "bench --target native+tls: {o:?}");
    // Without the client certificate the server refuses: a named failure,
    // not a hang.
    let o = bench(&["--addr", &addr, "--workload", "ping"], false);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("BENCH_FAILED"),
        "{o:?}"
    );
    let (code, _) = server.stop();
    assert_eq!(code, Some(0));
}

/// A raw rustls session to `addr`, handshake done; then wait for the server
/// to end it. `Ok(())`: it ended with close_notify (a read returns 0);
/// `Err`: anything else (a truncation is `UnexpectedEof`).
fn wait_for_close_notify(addr: std::net::SocketAddr, p: &Pki) -> std::io::Result<()> {
    let config = corekv::net::tls::client_config(&p.path("ca.crt"), None).unwrap();
    let name = corekv::net::tls::server_name("localhost").unwrap();
    let conn = rustls::ClientConnection::new(config, name).unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    let mut buf = [0u8; 256];
    match tls.read(&mut buf)? {
        0 => Ok(()),
        n => panic!("unexpected {n} bytes from an idle connection"),
    }
}

#[test]
fn an_idle_timeout_ends_tls_sessions_with_close_notify() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let mut flags = tls_flags(&p);
    flags.push("--idle-timeout-ms".into());
    flags.push("300".into());
    let server = start(dir.path(), &flags);
    wait_for_close_notify(server.addr, &p).expect("native listener: close_notify");
    wait_for_close_notify(server.resp.unwrap(), &p).expect("RESP listener: close_notify");
    let (code, _) = server.stop();
    assert_eq!(code, Some(0));
}

#[test]
fn a_client_certificate_naming_a_user_logs_the_connection_in_as_that_user() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    make_leaf(
        &p.dir,
        "reader",
        "ca",
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
    );
    let users = dir.path().join("users.toml");
    common::user_add(&users, "reader", "read", "reader-Pw-1234");
    let mut flags = tls_flags(&p);
    flags.extend([
        "--tls-client-ca-file".into(),
        p.path("ca.crt").display().to_string(),
        "--users-file".into(),
        users.display().to_string(),
    ]);
    let server = start(dir.path(), &flags);
    let as_reader = TlsOptions {
        ca_file: p.path("ca.crt"),
        server_name: "localhost".into(),
        client_cert: Some((p.path("reader.crt"), p.path("reader.key"))),
    };

    // CN=reader: reads without AUTH, writes refused for the role.
    let mut c = tls_client(&server, &as_reader).unwrap();
    assert_eq!(c.get(b"k").unwrap(), None);
    match c.put(b"k", b"v") {
        Err(ClientError::Status { status, .. }) => assert_eq!(status, Status::PermissionDenied),
        other => panic!("PUT as reader: {other:?}"),
    }
    // CN=client names no user: AUTH is still required.
    let mut c = tls_client(&server, &options(&p, "ca", true)).unwrap();
    match c.get(b"k") {
        Err(ClientError::Status { status, .. }) => assert_eq!(status, Status::NoAuth),
        other => panic!("GET with a certificate naming no user: {other:?}"),
    }

    // The RESP listener maps the certificate the same way.
    let ca = p.path("ca.crt").display().to_string();
    let cert = p.path("reader.crt").display().to_string();
    let key = p.path("reader.key").display().to_string();
    let tls_args = [
        "--tls",
        "--cacert",
        &ca,
        "--sni",
        "localhost",
        "--cert",
        &cert,
        "--key",
        &key,
    ];
    let mut get = tls_args.to_vec();
    get.extend(["GET", "k"]);
    let o = redis_cli(&server, &get);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        !out.contains("NOAUTH") && !out.contains("NOPERM"),
        "GET as reader: {o:?}"
    );
    let mut set = tls_args.to_vec();
    set.extend(["SET", "k", "v"]);
    let o = redis_cli(&server, &set);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("NOPERM"),
        "SET as reader: {o:?}"
    );
    let (code, _) = server.stop();
    assert_eq!(code, Some(0));
}

/// Certificates past their validity are refused on both sides: a client
/// presenting an expired certificate to a server with a client CA, and a
/// client shown an expired server certificate. (`-days 0` makes a
/// certificate whose notAfter is the second it was signed.)
#[test]
fn expired_certificates_are_refused_on_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    make_leaf_for_days(
        &p.dir,
        "expired-client",
        "ca",
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
        "0",
    );
    make_leaf_for_days(
        &p.dir,
        "expired-server",
        "ca",
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        "0",
    );
    std::thread::sleep(Duration::from_millis(2_100));

    // An expired client certificate, against a server that requires one.
    let mut flags = tls_flags(&p);
    flags.push("--tls-client-ca-file".into());
    flags.push(p.path("ca.crt").display().to_string());
    std::fs::create_dir_all(dir.path().join("a")).unwrap();
    let server = start(&dir.path().join("a"), &flags);
    let expired_client = TlsOptions {
        client_cert: Some((p.path("expired-client.crt"), p.path("expired-client.key"))),
        ..options(&p, "ca", false)
    };
    let refused = connect_and_ping(&server, &expired_client);
    assert!(refused.is_err(), "an expired client certificate got in");
    assert!(
        !matches!(refused, Err(ClientError::Timeout { .. })),
        "refusal must not be a hang: {refused:?}"
    );
    // The valid certificate from the same CA still gets in.
    connect_and_ping(&server, &options(&p, "ca", true)).expect("valid client certificate");
    let _ = server.stop();

    // An expired server certificate: the client refuses it, naming why.
    let mut flags = tls_flags(&p);
    let cert = flags.iter().position(|f| f == "--tls-cert-file").unwrap() + 1;
    flags[cert] = p.path("expired-server.crt").display().to_string();
    flags[cert + 2] = p.path("expired-server.key").display().to_string();
    std::fs::create_dir_all(dir.path().join("b")).unwrap();
    let server = start(&dir.path().join("b"), &flags);
    match connect_and_ping(&server, &options(&p, "ca", false)) {
        Err(ClientError::Tls(msg)) => assert!(
            msg.to_lowercase().contains("expired") || msg.contains("certificate"),
            "reason names the certificate: {msg}"
        ),
        other => panic!("a client accepted an expired server certificate: {other:?}"),
    }
    let _ = server.stop();
}
