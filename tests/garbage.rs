//! Hostile input on the native port: random bytes, absurd length prefixes,
//! half-sent frames, too many connections. The server must not crash, must keep
//! serving a well-behaved client throughout, must not let memory grow with what
//! clients merely *declare*, and must keep every acknowledged write.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corekv::net::codec::{Request, HEADER_BYTES};
use rand::{Rng, SeedableRng};

fn header(opcode: u8, body_len: u32) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_BYTES);
    h.extend_from_slice(b"CK");
    h.push(1);
    h.push(opcode);
    h.extend_from_slice(&[0, 0, 0, 0]);
    h.extend_from_slice(&42u64.to_le_bytes());
    h.extend_from_slice(&body_len.to_le_bytes());
    h
}

/// Read until the server closes; returns what it sent.
fn drain(mut s: TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

fn status_of(response: &[u8]) -> Option<u16> {
    (response.len() >= HEADER_BYTES).then(|| u16::from_le_bytes([response[6], response[7]]))
}

#[test]
fn garbage_does_not_hurt_the_server_or_other_clients() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_server(dir.path(), &["--shards", "2"]);
    let addr = server.addr;

    // A well-behaved client keeps writing and reading the whole time.
    let stop = Arc::new(AtomicBool::new(false));
    let good = {
        let stop = stop.clone();
        let mut c = server.client();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let key = format!("good-{}", n % 500);
                let value = format!("v{n}");
                c.put(key.as_bytes(), value.as_bytes())
                    .expect("good client put");
                assert_eq!(
                    c.get(key.as_bytes()).expect("good client get").as_deref(),
                    Some(value.as_bytes())
                );
                n += 1;
            }
            n
        })
    };
    let rss_before = server.rss_bytes();
    let virt_before = server.virtual_bytes();

    // 1. Random junk, many connections.
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..200 {
        let mut s = TcpStream::connect(addr).unwrap();
        let len = rng.gen_range(1..4096);
        let junk: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        let _ = s.write_all(&junk);
        let _ = s.shutdown(std::net::Shutdown::Write);
        drain(s);
    }

    // 2. Valid headers with absurd lengths: answered FRAME_TOO_LARGE and closed.
    // One byte over the largest body a request may declare: an RMW of the
    // largest key (64 KiB) and value (16 MiB), whose program header is the
    // longest of any opcode's extra bytes (codec `Limits::body_bytes_max`).
    let over = 4 + 65_536 + (16 << 20) + corekv::core::rmw::PROGRAM_HEADER_BYTES_MAX as u32 + 1;
    for len in [u32::MAX, u32::MAX / 2, 17 << 20, over] {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(&header(4, len)).unwrap();
        let resp = drain(s);
        assert_eq!(
            status_of(&resp),
            Some(103),
            "declared {len} bytes: {resp:?}"
        );
    }

    // 3. Fifty connections each declaring a 16 MiB PUT and sending a few bytes:
    //    the server must not reserve what is merely declared.
    let mut holders = Vec::new();
    for _ in 0..50 {
        let mut s = TcpStream::connect(addr).unwrap();
        let mut frame = header(4, 16 << 20);
        frame.extend_from_slice(&5u32.to_le_bytes());
        frame.extend_from_slice(b"hello");
        s.write_all(&frame).unwrap();
        holders.push(s);
    }
    std::thread::sleep(Duration::from_millis(300));
    let rss_held = server.rss_bytes();
    let grown = rss_held.saturating_sub(rss_before);
    // 50 x 16 MiB would be 800 MiB; each connection may hold its 64 KiB buffer.
    assert!(
        grown < 64 << 20,
        "RSS grew by {} MiB for 50 declared-but-unsent frames",
        grown >> 20
    );
    let virt_grown = server.virtual_bytes().saturating_sub(virt_before);
    assert!(
        virt_grown < 256 << 20,
        "address space grew by {} MiB for declared-but-unsent frames",
        virt_grown >> 20
    );
    drop(holders);

    // 4. Malformed bodies after a valid request on the same connection: the
    //    valid one is answered, then the error, then the connection closes.
    let mut s = TcpStream::connect(addr).unwrap();
    let mut frames = Vec::new();
    corekv::net::codec::encode_request(
        &mut frames,
        1,
        &Request::Put {
            key: b"before-bad",
            value: b"kept",
        },
    );
    let mut bad = header(4, 8);
    bad.extend_from_slice(&100u32.to_le_bytes());
    bad.extend_from_slice(b"abcd");
    frames.extend_from_slice(&bad);
    s.write_all(&frames).unwrap();
    let resp = drain(s);
    assert_eq!(status_of(&resp), Some(0), "the valid PUT first");
    assert_eq!(
        status_of(&resp[HEADER_BYTES..]),
        Some(106),
        "then MALFORMED_BODY"
    );

    stop.store(true, Ordering::SeqCst);
    let served = good.join().expect("the good client never saw an error");
    assert!(
        served > 10,
        "the good client was starved: {served} round trips"
    );
    let mut c = server.client();
    assert_eq!(c.get(b"before-bad").unwrap().as_deref(), Some(&b"kept"[..]));
    // Still alive and still durable after a restart.
    let (code, stderr) = server.stop();
    assert_eq!(code, Some(0), "{stderr}");
    let server = common::start_server(dir.path(), &[]);
    assert_eq!(
        server.client().get(b"before-bad").unwrap().as_deref(),
        Some(&b"kept"[..])
    );
}

#[test]
fn half_sent_frames_time_out_and_connections_are_limited() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_server(
        dir.path(),
        &[
            "--shards",
            "1",
            "--frame-timeout-ms",
            "300",
            "--connections-per-shard-max",
            "3",
        ],
    );
    // A frame that starts and never finishes is cut off with FRAME_TIMEOUT.
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.write_all(&header(3, 10)).unwrap();
    s.write_all(b"abc").unwrap();
    let started = Instant::now();
    let resp = drain(s);
    assert_eq!(status_of(&resp), Some(107), "{resp:?}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // An idle connection (no partial frame) is not cut off by that rule.
    let idle = server.client();
    std::thread::sleep(Duration::from_millis(600));
    let mut idle = idle;
    idle.ping().expect("idle connection still served");

    // At the limit, the next connection gets TOO_MANY_CONNECTIONS and is closed.
    let c2 = server.client();
    let c3 = server.client();
    let s = TcpStream::connect(server.addr).unwrap();
    let resp = drain(s);
    assert_eq!(status_of(&resp), Some(202), "{resp:?}");
    drop((c2, c3));
    std::thread::sleep(Duration::from_millis(100));
    server.client().ping().expect("a slot is free again");
}

#[test]
fn idle_connections_are_closed_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_server(dir.path(), &["--shards", "1", "--idle-timeout-ms", "300"]);
    // An active connection (a request every 100 ms) outlives the timeout.
    let mut active = server.client();
    for _ in 0..10 {
        active.ping().expect("an active connection stays open");
        std::thread::sleep(Duration::from_millis(100));
    }
    // An idle one is closed: the server ends the stream.
    let idle = TcpStream::connect(server.addr).unwrap();
    let started = Instant::now();
    let got = drain(idle);
    assert!(got.is_empty(), "closed without a response");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(5),
        "closed after {waited:?}"
    );
}
