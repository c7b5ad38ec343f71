//! Unit tests of `codec`: round trips, and every length field bounded.

use super::*;

const LIMITS: Limits = Limits {
    key_bytes_max: KEY_BYTES_MAX,
    value_bytes_max: 1024,
};

fn server_parse(buf: &[u8]) -> Parsed<'_> {
    parse_frame(buf, Side::Server, LIMITS.body_bytes_max())
}

fn round_trip(req: Request<'_>) {
    let mut buf = Vec::new();
    encode_request(&mut buf, 42, &req);
    match server_parse(&buf) {
        Parsed::Frame { header, body, len } => {
            assert_eq!(len, buf.len());
            assert_eq!(header.request_id.get(), 42);
            assert_eq!(decode_request(&header, body, &LIMITS).unwrap(), req);
        }
        other => panic!("{other:?}"),
    }
    // Every strict prefix is incomplete, never an error or a frame.
    for cut in 0..buf.len() {
        match server_parse(&buf[..cut]) {
            Parsed::Incomplete { needed } => assert!(needed > cut),
            other => panic!("prefix {cut}: {other:?}"),
        }
    }
}

#[test]
fn every_request_round_trips() {
    round_trip(Request::Hello);
    round_trip(Request::Ping { payload: b"" });
    round_trip(Request::Ping { payload: b"hello" });
    round_trip(Request::Get { key: b"k" });
    let mut buf = Vec::new();
    round_trip(Request::put_ex(b"k", 1_700_000_000_000, b"v", &mut buf));
    round_trip(Request::Expire {
        key: b"k",
        arg: &[3, 1, 2, 3, 4, 5, 6, 7, 8],
    });
    round_trip(Request::Ttl { key: b"k" });
    round_trip(Request::Get { key: b"" });
    round_trip(Request::Delete { key: b"some key" });
    round_trip(Request::Put {
        key: b"k",
        value: b"v",
    });
    round_trip(Request::Put {
        key: b"",
        value: b"",
    });
    round_trip(Request::Put {
        key: &[0u8, 255, 10],
        value: &[7u8; 1024],
    });
    round_trip(Request::Backup {
        target: b"/var/backups/corekv-1",
    });
    let mut program = Vec::new();
    crate::core::rmw::Program::IncrBy(-3).encode(&mut program);
    round_trip(Request::Rmw {
        key: b"counter",
        program: &program,
    });
    round_trip(Request::Auth {
        user: b"alice",
        password: b"pw",
    });
    round_trip(Request::Auth {
        user: b"a",
        password: b"",
    });
    let e = bad(&frame(Opcode::Auth as u8, &9u32.to_le_bytes()));
    assert_eq!((e.status, e.fatal), (Status::MalformedBody, true));
    let mut body = 1u32.to_le_bytes().to_vec();
    body.push(b'u');
    body.extend_from_slice(&[b'p'; PASSWORD_BYTES_MAX + 1]);
    let e = bad(&frame(Opcode::Auth as u8, &body));
    assert_eq!((e.status, e.fatal), (Status::InvalidArgument, false));
    assert!(!e.detail.contains("ppp"), "{}", e.detail);
    for body in [&b""[..], b"/a\0b", &[b'/'; BACKUP_PATH_BYTES_MAX + 1]] {
        let e = bad(&frame(Opcode::Backup as u8, body));
        assert_eq!((e.status, e.fatal), (Status::InvalidArgument, false));
    }
}

#[test]
fn every_response_round_trips() {
    for &status in Status::ALL {
        for &op in Opcode::ALL {
            let mut buf = Vec::new();
            encode_response(&mut buf, op as u8, 7, status, b"body");
            match parse_frame(&buf, Side::Client, usize::MAX) {
                Parsed::Frame { header, body, .. } => {
                    assert_eq!(Status::from_code(header.status.get()), Some(status));
                    assert_eq!(header.opcode, op as u8);
                    assert_eq!(body, b"body");
                }
                other => panic!("{other:?}"),
            }
        }
    }
    let hello = HelloInfo {
        protocol_version: 1,
        shard_count: 3,
        key_bytes_max: 65536,
        value_bytes_max: 1 << 24,
        server_version: "0.1.0".into(),
        shard: 2,
    };
    let mut body = Vec::new();
    hello.encode(&mut body);
    assert_eq!(HelloInfo::decode(&body), Some(hello));
    assert_eq!(HelloInfo::decode(&body[..body.len() - 1]), None);
    let mut framed = Vec::new();
    encode_response_with(&mut framed, Opcode::Get as u8, 9, Status::Ok, |o| {
        o.extend_from_slice(b"xyz")
    });
    assert_eq!(&framed[16..20], &3u32.to_le_bytes());
}

fn frame(opcode: u8, body: &[u8]) -> Vec<u8> {
    let mut buf = Vec::new();
    put_header(&mut buf, opcode, 0, 5, body.len());
    buf.extend_from_slice(body);
    buf
}

fn bad(buf: &[u8]) -> WireError {
    match server_parse(buf) {
        Parsed::Bad { error, .. } => error,
        Parsed::Frame { header, body, .. } => decode_request(&header, body, &LIMITS).unwrap_err(),
        other => panic!("{other:?}"),
    }
}

/// RMW bodies: a key length past the body closes the connection; a
/// program that does not decode, or a value over the limit, is refused
/// softly.
#[test]
fn rmw_bodies_are_bounded() {
    let e = bad(&frame(Opcode::Rmw as u8, &9u32.to_le_bytes()));
    assert_eq!((e.status, e.fatal), (Status::MalformedBody, true));
    let e = bad(&frame(Opcode::Rmw as u8, b"ab"));
    assert_eq!((e.status, e.fatal), (Status::MalformedBody, true));
    let mut body = 1u32.to_le_bytes().to_vec();
    body.push(b'k');
    for program in [&[][..], &[99], &[1, 2, 3]] {
        let mut b = body.clone();
        b.extend_from_slice(program);
        let e = bad(&frame(Opcode::Rmw as u8, &b));
        assert_eq!((e.status, e.fatal), (Status::InvalidArgument, false));
    }
    let mut b = body.clone();
    crate::core::rmw::Program::Append(&[0; 1025]).encode(&mut b);
    let e = bad(&frame(Opcode::Rmw as u8, &b));
    assert_eq!((e.status, e.fatal), (Status::ValueTooLarge, false));
    let mut b = (KEY_BYTES_MAX as u32 + 1).to_le_bytes().to_vec();
    b.extend_from_slice(&vec![0; KEY_BYTES_MAX + 1]);
    crate::core::rmw::Program::GetDel.encode(&mut b);
    let e = bad(&frame(Opcode::Rmw as u8, &b));
    assert_eq!((e.status, e.fatal), (Status::KeyTooLarge, false));
}

/// A SCAN may start one byte past the key limit (a page's `next`), and the
/// refusal of a longer start names that limit; a TXN whose writes exceed
/// the value limit in total is VALUE_TOO_LARGE, as protocol.md says.
#[test]
fn scan_start_and_txn_size_limits_name_the_right_limit() {
    let scan = |start_len: usize| {
        let mut body = (start_len as u32).to_le_bytes().to_vec();
        body.extend(std::iter::repeat_n(b'a', start_len));
        body.extend_from_slice(&0u32.to_le_bytes());
        body.extend_from_slice(&10u32.to_le_bytes());
        body.push(0);
        body.extend_from_slice(&0u32.to_le_bytes());
        frame(Opcode::Scan as u8, &body)
    };
    let ok = scan(LIMITS.key_bytes_max + 1);
    let Parsed::Frame { header, body, .. } = server_parse(&ok) else {
        panic!("a frame")
    };
    assert!(decode_request(&header, body, &LIMITS).is_ok());
    let e = bad(&scan(LIMITS.key_bytes_max + 2));
    assert_eq!((e.status, e.fatal), (Status::KeyTooLarge, false));
    let limit = LIMITS.key_bytes_max + 1;
    assert!(
        e.detail
            .contains(&format!("{} bytes; the limit is {limit}", limit + 1)),
        "{}",
        e.detail
    );

    let half = vec![b'v'; LIMITS.value_bytes_max / 2 + 1];
    let mut body = Vec::new();
    crate::core::txn_format::encode_txn(
        &mut body,
        &[],
        &[
            crate::core::txn_format::Write::Put(b"a", &half),
            crate::core::txn_format::Write::Put(b"b", &half),
        ],
    );
    let e = bad(&frame(Opcode::Txn as u8, &body));
    assert_eq!(
        (e.status, e.fatal),
        (Status::ValueTooLarge, false),
        "{}",
        e.detail
    );
}

#[test]
fn malformed_frames_get_the_right_status() {
    // Short header.
    assert!(matches!(
        server_parse(&[b'C', b'K', 1]),
        Parsed::Incomplete {
            needed: HEADER_BYTES
        }
    ));
    let mut b = frame(Opcode::Get as u8, b"k");
    b[0] = b'X';
    assert_eq!(bad(&b).status, Status::BadFrame);
    assert!(bad(&b).fatal);
    let mut b = frame(Opcode::Get as u8, b"k");
    b[2] = 9;
    assert_eq!(bad(&b).status, Status::UnsupportedVersion);
    let mut b = frame(Opcode::Get as u8, b"k");
    b[4] = 1;
    assert_eq!(bad(&b).status, Status::BadFrame);
    let mut b = frame(Opcode::Get as u8, b"k");
    b[6] = 1;
    assert_eq!(bad(&b).status, Status::BadFrame);
    // Unknown opcode: answered, connection kept.
    let e = bad(&frame(99, b"abc"));
    assert_eq!((e.status, e.fatal), (Status::UnknownOpcode, false));
    // Declared length over the limit: rejected from the header alone.
    let mut b = frame(Opcode::Put as u8, b"");
    b[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
    let e = bad(&b);
    assert_eq!((e.status, e.fatal), (Status::FrameTooLarge, true));
    // Key length past the end of the body.
    let mut body = 100u32.to_le_bytes().to_vec();
    body.extend_from_slice(b"short");
    let e = bad(&frame(Opcode::Put as u8, &body));
    assert_eq!((e.status, e.fatal), (Status::MalformedBody, true));
    let e = bad(&frame(Opcode::Put as u8, b"ab"));
    assert_eq!(e.status, Status::MalformedBody);
    // HELLO with a body.
    assert_eq!(
        bad(&frame(Opcode::Hello as u8, b"x")).status,
        Status::MalformedBody
    );
    // Key and value over their limits: answered, connection kept.
    let e = bad(&frame(Opcode::Get as u8, &vec![0u8; KEY_BYTES_MAX + 1]));
    assert_eq!((e.status, e.fatal), (Status::KeyTooLarge, false));
    let mut body = 1u32.to_le_bytes().to_vec();
    body.push(b'k');
    body.extend_from_slice(&[0u8; 1025]);
    let e = bad(&frame(Opcode::Put as u8, &body));
    assert_eq!((e.status, e.fatal), (Status::ValueTooLarge, false));
}

#[test]
fn length_past_the_frame_waits_for_more() {
    // A declared body longer than what arrived is incomplete, not a frame
    // that reads into the next one.
    let mut b = frame(Opcode::Get as u8, b"key");
    b[16..20].copy_from_slice(&10u32.to_le_bytes());
    match server_parse(&b) {
        Parsed::Incomplete { needed } => assert_eq!(needed, HEADER_BYTES + 10),
        other => panic!("{other:?}"),
    }
}

proptest::proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
        if let Parsed::Frame { header, body, .. } = server_parse(&bytes) {
            let _ = decode_request(&header, body, &LIMITS);
        }
    }
}
