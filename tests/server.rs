//! A real `corekv serve` with several shards, driven over TCP: connections land
//! on every core, keys owned by every shard are written and read from any
//! connection, pipelined requests come back in order, and the CLI behaves.

use crate::common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::process::Command;

use corekv::core::hash::shard_for_key;
use corekv::core::status::Status;
use corekv::net::codec::Request;

fn metric(admin: std::net::SocketAddr, name: &str) -> Vec<(String, f64)> {
    let mut s = std::net::TcpStream::connect(admin).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| {
            l.rsplit_once(' ')
                .map(|(k, v)| (k.to_string(), v.parse().unwrap_or(0.0)))
        })
        .collect()
}

#[test]
fn every_shard_serves_keys_of_every_shard() {
    for shards in [2u16, 3] {
        let dir = tempfile::tempdir().unwrap();
        let server = common::start_server(dir.path(), &["--shards", &shards.to_string()]);
        let mut clients: Vec<_> = (0..16).map(|_| server.client()).collect();
        assert_eq!(clients[0].hello().unwrap().shard_count, shards);
        // Every connection writes keys of every shard...
        let mut owners = HashSet::new();
        for (ci, c) in clients.iter_mut().enumerate() {
            for k in 0..30 {
                let key = format!("c{ci}-k{k}");
                owners.insert(shard_for_key(key.as_bytes(), shards).0);
                c.put(key.as_bytes(), format!("v{ci}-{k}").as_bytes())
                    .unwrap();
            }
        }
        assert_eq!(owners.len(), usize::from(shards), "keys cover every shard");
        // ...and reads back other connections' keys.
        for (ci, c) in clients.iter_mut().enumerate() {
            let other = (ci + 7) % 16;
            for k in 0..30 {
                let v = c.get(format!("c{other}-k{k}").as_bytes()).unwrap();
                assert_eq!(v, Some(format!("v{other}-{k}").into_bytes()));
            }
        }
        // SO_REUSEPORT spread the connections: every shard accepted some, and
        // requests crossed cores in both directions.
        std::thread::sleep(std::time::Duration::from_millis(600));
        let accepted = metric(server.admin, "corekv_connections_accepted_total");
        assert_eq!(accepted.len(), usize::from(shards));
        let busy = accepted.iter().filter(|(_, v)| *v > 0.0).count();
        assert!(
            busy >= 2,
            "connections landed on only {busy} shard(s): {accepted:?}"
        );
        let forwarded_in = metric(server.admin, "corekv_forwarded_batches_in_total");
        assert!(
            forwarded_in.iter().filter(|(_, v)| *v > 0.0).count() >= 2,
            "{forwarded_in:?}"
        );
    }
}

#[test]
fn pipelined_requests_come_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_server(dir.path(), &["--shards", "2"]);
    let mut c = server.client();
    let mut expected = Vec::new();
    for i in 0..1000u32 {
        let key = format!("p{}", i % 37).into_bytes();
        let id = match i % 4 {
            0 | 1 => c.queue(&Request::Put {
                key: &key,
                value: &i.to_le_bytes(),
            }),
            2 => c.queue(&Request::Get { key: &key }),
            _ => c.queue(&Request::Delete { key: &key }),
        };
        expected.push((id, i % 4));
    }
    c.flush().unwrap();
    let mut model = std::collections::HashMap::<Vec<u8>, Vec<u8>>::new();
    for (n, (id, kind)) in expected.into_iter().enumerate() {
        let r = c.recv().unwrap();
        assert_eq!(r.request_id, id, "response {n} out of order");
        let key = format!("p{}", n as u32 % 37).into_bytes();
        match kind {
            0 | 1 => {
                assert_eq!(r.status, Status::Ok);
                model.insert(key, (n as u32).to_le_bytes().to_vec());
            }
            2 => match model.get(&key) {
                Some(v) => assert_eq!(
                    (r.status, &r.body),
                    (Status::Ok, v),
                    "GET {n} sees the writes before it"
                ),
                None => assert_eq!(r.status, Status::NotFound),
            },
            _ => {
                let existed = model.remove(&key).is_some();
                assert_eq!(r.body, vec![u8::from(existed)]);
            }
        }
    }
}

#[test]
fn restart_with_another_shard_count_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_server(dir.path(), &["--shards", "2"]);
    server.client().put(b"k", b"v").unwrap();
    assert_eq!(server.stop().0, Some(0));
    let err = common::try_start_server(dir.path(), &["--shards", "3"])
        .err()
        .expect("must refuse");
    assert!(err.contains("SHARD_COUNT_MISMATCH"), "{err}");
    let server = common::start_server(dir.path(), &[]);
    assert_eq!(
        server.client().get(b"k").unwrap().as_deref(),
        Some(&b"v"[..])
    );
}

/// `connection_shards = [1]`: every connection, native and RESP, lands on
/// shard 1 and none on shard 0, and keys of both shards are still written and
/// read through them (shard 0 serves what is forwarded to it).
#[test]
fn only_the_connection_shards_accept_and_every_key_is_still_served() {
    use common::resp::{Conn, V};
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_server(
        dir.path(),
        &[
            "--shards",
            "2",
            "--connection-shards",
            "1",
            "--connections-per-shard-max",
            "100",
        ],
    );
    let mut clients: Vec<_> = (0..12).map(|_| server.client()).collect();
    for c in clients.iter_mut() {
        let hello = c.hello().unwrap();
        assert_eq!((hello.shard, hello.shard_count), (1, 2));
    }
    let keys = common::resp::keys_across_shards("cs", 40);
    for (i, key) in keys.iter().enumerate() {
        clients[i % 12]
            .put(key.as_bytes(), format!("v{i}").as_bytes())
            .unwrap();
    }
    for (i, key) in keys.iter().enumerate() {
        let v = clients[(i + 5) % 12].get(key.as_bytes()).unwrap();
        assert_eq!(v, Some(format!("v{i}").into_bytes()), "{key}");
    }
    let resp = server.resp.expect("the RESP listener is on");
    let mut conns: Vec<Conn> = (0..6).map(|_| Conn::open(resp)).collect();
    for (i, key) in keys.iter().enumerate() {
        let got = conns[i % 6].cmd(&[b"GET", key.as_bytes()]);
        assert_eq!(got, V::Bulk(format!("v{i}").into_bytes()), "{key}");
    }
    // The limit INFO reports is what the accepting shard can take, not
    // what both would.
    match conns[0].cmd(&[b"INFO", b"clients"]) {
        V::Bulk(info) => {
            let info = String::from_utf8_lossy(&info).into_owned();
            assert!(info.contains("maxclients:100\r\n"), "{info}");
        }
        other => panic!("INFO: {other:?}"),
    }
    // The shards publish their counters a few times a second.
    let on = |accepted: &[(String, f64)], shard: &str| {
        accepted
            .iter()
            .find(|(k, _)| k.contains(&format!("shard=\"{shard}\"")))
            .map(|(_, v)| *v)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let accepted = loop {
        let accepted = metric(server.admin, "corekv_connections_accepted_total");
        if on(&accepted, "1") == Some(18.0) || std::time::Instant::now() > deadline {
            break accepted;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(on(&accepted, "0"), Some(0.0), "{accepted:?}");
    assert_eq!(on(&accepted, "1"), Some(18.0), "{accepted:?}");
    let forwarded_in = metric(server.admin, "corekv_forwarded_batches_in_total");
    assert!(
        forwarded_in
            .iter()
            .any(|(k, v)| k.contains("shard=\"0\"") && *v > 0.0),
        "shard 0 served forwarded requests: {forwarded_in:?}"
    );
    drop((clients, conns));
    assert_eq!(server.stop().0, Some(0));
    // Its data directory now has 2 shards: a shard beyond them is refused
    // before the start, naming the count, and the data is untouched.
    let err = common::try_start_server(dir.path(), &["--connection-shards", "2"])
        .err()
        .expect("shard 2 of 2 must be refused");
    assert!(err.contains("CONFIG_INVALID"), "{err}");
    assert!(err.contains("shard count 2: shards 0 to 1"), "{err}");
    // `config check` says the same without starting anything.
    let o = common::run_corekv(&[
        "config",
        "check",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--connection-shards",
        "0,2",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "off",
        "--resp-listen",
        "off",
    ]);
    let text = common::output_text(&o);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(
        text.contains(
            "connection_shards = [0, 2]: shard(s) [2] do not exist (shard count 2: shards 0 to 1)"
        ),
        "{text}"
    );
    let server = common::start_server(dir.path(), &["--connection-shards", "0,1"]);
    assert_eq!(
        server.client().get(keys[0].as_bytes()).unwrap(),
        Some(b"v0".to_vec())
    );
    // A new directory is refused before its shard count is fixed: with one
    // CPU the default is one shard, and nothing is created.
    let fresh = dir.path().join("fresh");
    let err = common::try_start_server(&fresh, &["--cpus", "0", "--connection-shards", "1"])
        .err()
        .expect("shard 1 of 1 must be refused");
    assert!(err.contains("shard count 1: shards 0 to 0"), "{err}");
    assert!(
        !fresh.exists(),
        "a refused start created {}",
        fresh.display()
    );
}

#[test]
fn cli_exit_codes_and_binary_values() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_server(dir.path(), &["--shards", "2"]);
    let addr = server.addr.to_string();
    let cli = |args: &[&str]| {
        Command::new(common::corekv_bin())
            .args(["cli", "--addr", &addr])
            .args(args)
            .output()
            .unwrap()
    };
    let o = cli(&["ping"]);
    assert_eq!(
        (o.status.code(), o.stdout.as_slice()),
        (Some(0), &b"PONG"[..])
    );
    let o = cli(&["put", "bin", "a\nb\tc"]);
    assert_eq!(o.status.code(), Some(0));
    let o = cli(&["get", "bin"]);
    assert_eq!(
        (o.status.code(), o.stdout.as_slice()),
        (Some(0), &b"a\nb\tc"[..]),
        "bytes exactly, no newline added"
    );
    // A value with a NUL byte, written by the client library, read by the CLI.
    server.client().put(b"nul", b"x\0y\xff").unwrap();
    let o = cli(&["get", "nul"]);
    assert_eq!(o.stdout, b"x\0y\xff");
    let o = cli(&["get", "missing"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).starts_with("NOT_FOUND"));
    let o = cli(&["del", "bin"]);
    assert_eq!((o.status.code(), o.stdout.as_slice()), (Some(0), &b"1"[..]));
    // Errors exit 2 and name themselves.
    let long_key = "k".repeat(70_000);
    let o = cli(&["get", &long_key]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).starts_with("KEY_TOO_LARGE"),
        "{o:?}"
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let o = Command::new(common::corekv_bin())
        .args(["cli", "--addr", &closed, "ping"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).starts_with("CONNECT_FAILED"),
        "{o:?}"
    );
}

/// After a crash, a restart on the same port must not be refused because of the
/// old connections' TIME_WAIT remains (the listener sets SO_REUSEADDR, which
/// they inherit).
#[test]
fn restart_on_the_same_port_after_sigkill_with_connections_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = common::start_server(dir.path(), &["--shards", "2"]);
    let port = server.addr.port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let mut clients: Vec<_> = (0..8).map(|_| server.client()).collect();
    for c in &mut clients {
        c.put(b"k", b"v").expect("put");
    }
    server.kill();
    // Closing after the server's FIN (without sending) leaves the server side
    // of each connection in TIME_WAIT.
    std::thread::sleep(std::time::Duration::from_millis(100));
    drop(clients);
    std::thread::sleep(std::time::Duration::from_millis(100));
    let restarted = common::try_start_server(dir.path(), &["--listen", &listen]);
    let server = restarted.unwrap_or_else(|e| panic!("restart on {listen} refused: {e}"));
    assert_eq!(server.client().get(b"k").expect("get"), Some(b"v".to_vec()));
}
