//! MULTI/EXEC/DISCARD/WATCH/UNWATCH, the bit commands, LCS, OBJECT
//! ENCODING, FLUSHDB/FLUSHALL, WAIT, DEBUG SLEEP, LASTSAVE and CLIENT
//! LIST/KILL on the RESP listener, against a real redis-server in the same
//! run (identical replies, errors included, RESP2 and RESP3); EXEC is
//! all-or-nothing across shards (a concurrent reader never sees half of
//! one, concurrent read-modify-write EXECs lose nothing); WATCH makes EXEC
//! answer nil when another client changed a watched key, and only then;
//! CLIENT KILL closes connections served by any shard.
//!
//! Tests that need redis-server print "SKIPPED: ..." and return when it is
//! missing (CI installs it).

use crate::common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::resp::{cmd, keys_across_shards, start_redis, start_two_shards, Conn, V};

/// Send every command to both servers and compare the replies.
fn same_replies(corekv: &mut Conn, redis: &mut Conn, script: &[&[&str]]) {
    for c in script {
        let ours = cmd(corekv, c);
        let theirs = cmd(redis, c);
        assert_eq!(ours, theirs, "replies differ for {c:?}");
    }
}

/// Two keys on different shards of a 2-shard server, with a prefix.
fn keys_on_both_shards(prefix: &str) -> (String, String) {
    let mut keys = keys_across_shards(prefix, 2);
    let b = keys.pop().expect("two keys");
    (keys.pop().expect("two keys"), b)
}

const MULTI_SCRIPT: &[&[&str]] = &[
    &["EXEC"],
    &["DISCARD"],
    &["MULTI"],
    &["MULTI"],
    &["WATCH", "x"],
    &["SET", "a", "1"],
    &["INCR", "a"],
    &["GET", "a"],
    &["SET", "s", "text"],
    &["INCR", "s"],
    &["APPEND", "s", "!"],
    &["MSET", "m1", "1", "m2", "2"],
    &["MGET", "m1", "m2", "nope"],
    &["DEL", "m1", "m1", "nope"],
    &["EXISTS", "m1", "m2", "m2"],
    &["SETNX", "m2", "x"],
    &["GETSET", "m2", "y"],
    &["GETDEL", "m2"],
    &["STRLEN", "s"],
    &["GETRANGE", "s", "0", "1"],
    &["SETRANGE", "s", "1", "EE"],
    &["SET", "s", "v", "BOGUS"],
    &["SET", "n", "1", "NX", "GET"],
    &["INCRBY", "n", "x"],
    &["DECRBY", "n", "5"],
    &["MSETNX", "n", "1", "o", "2"],
    &["TYPE", "n"],
    &["TYPE", "zz"],
    &["PING"],
    &["ECHO", "e"],
    &["UNWATCH"],
    &["EXEC"],
    &["EXEC"],
    // Errors while queuing doom the EXEC; the queue is then gone.
    &["MULTI"],
    &["SET", "a", "2"],
    &["GET"],
    &["EXEC"],
    &["GET", "a"],
    &["MULTI"],
    &["SET", "a", "3"],
    &["NOSUCHCOMMAND", "x"],
    &["EXEC"],
    &["GET", "a"],
    // DISCARD drops the queue.
    &["MULTI"],
    &["SET", "a", "4"],
    &["DISCARD"],
    &["GET", "a"],
    &["MULTI"],
    &["EXEC"],
    // WATCH with no change: EXEC runs.
    &["WATCH", "a", "w2"],
    &["GET", "a"],
    &["MULTI"],
    &["SET", "w2", "1"],
    &["EXEC"],
    &["UNWATCH"],
    &["WATCH"],
    // The bit commands, LCS and OBJECT ENCODING, inside and outside MULTI.
    &["SETBIT", "bits", "7", "1"],
    &["SETBIT", "bits", "7", "0"],
    &["SETBIT", "bits", "100", "1"],
    &["SETBIT", "bits", "-1", "1"],
    &["SETBIT", "bits", "1", "2"],
    &["SETBIT", "bits", "x", "1"],
    &["GETBIT", "bits", "100"],
    &["GETBIT", "bits", "99"],
    &["GETBIT", "bits", "100000"],
    &["GETBIT", "nobits", "3"],
    &["GETBIT", "bits", "-3"],
    &["GET", "bits"],
    &["SET", "foo", "foobar"],
    &["BITCOUNT", "foo"],
    &["BITCOUNT", "foo", "0", "0"],
    &["BITCOUNT", "foo", "1", "1"],
    &["BITCOUNT", "foo", "1", "1", "BYTE"],
    &["BITCOUNT", "foo", "5", "30", "BIT"],
    &["BITCOUNT", "foo", "-2", "-1"],
    &["BITCOUNT", "foo", "-1", "-2"],
    &["BITCOUNT", "foo", "2", "1"],
    &["BITCOUNT", "foo", "0", "100"],
    &["BITCOUNT", "foo", "0"],
    &["BITCOUNT", "foo", "0", "1", "BOTH"],
    &["BITCOUNT", "foo", "a", "1"],
    &["BITCOUNT", "missing", "a", "1"],
    &["BITCOUNT", "missing"],
    &["SET", "bp", "\u{00ff}\u{00f0}"],
    &["SET", "zeros", "\x00\x00\x00"],
    &["SET", "ones", "\x7f\x7f"],
    &["BITPOS", "zeros", "1"],
    &["BITPOS", "zeros", "0"],
    &["BITPOS", "ones", "0"],
    &["BITPOS", "ones", "1"],
    &["BITPOS", "ones", "1", "1"],
    &["BITPOS", "ones", "0", "1"],
    &["BITPOS", "ones", "0", "1", "-1"],
    &["BITPOS", "ones", "1", "2"],
    &["BITPOS", "ones", "0", "3", "10", "BIT"],
    &["BITPOS", "ones", "1", "9", "15", "BIT"],
    &["BITPOS", "ones", "0", "9", "15", "BIT"],
    &["BITPOS", "ones", "0", "9", "-1", "BIT"],
    &["BITPOS", "ones", "0", "9", "8", "BIT"],
    &["BITPOS", "ones", "0", "0", "-1", "BYTE"],
    &["BITPOS", "ones", "0", "0", "-1", "NOPE"],
    &["BITPOS", "ones", "2"],
    &["BITPOS", "ones", "x"],
    &["BITPOS", "missing", "0"],
    &["BITPOS", "missing", "1"],
    &["SET", "empty", ""],
    &["BITPOS", "empty", "0"],
    &["BITCOUNT", "empty"],
    &["SET", "k1", "foobar"],
    &["SET", "k2", "abcdef"],
    &["BITOP", "AND", "dest", "k1", "k2"],
    &["GET", "dest"],
    &["BITOP", "or", "dest", "k1", "k2", "ones"],
    &["GET", "dest"],
    &["BITOP", "XOR", "dest", "k1", "ones"],
    &["GET", "dest"],
    &["BITOP", "NOT", "dest", "ones"],
    &["GET", "dest"],
    &["BITOP", "NOT", "dest", "ones", "k1"],
    &["BITOP", "NAND", "dest", "k1"],
    &["BITOP", "AND", "dest", "missing1", "missing2"],
    &["EXISTS", "dest"],
    &["MULTI"],
    &["SETBIT", "mb", "3", "1"],
    &["GETBIT", "mb", "3"],
    &["BITCOUNT", "mb"],
    &["BITOP", "OR", "mb2", "mb", "k1"],
    &["GET", "mb2"],
    &["EXEC"],
    &["SET", "l1", "ohmytext"],
    &["SET", "l2", "mynewtext"],
    &["LCS", "l1", "l2"],
    &["LCS", "l1", "l2", "LEN"],
    &["LCS", "l1", "l2", "IDX"],
    &["LCS", "l1", "l2", "IDX", "MINMATCHLEN", "4"],
    &["LCS", "l1", "l2", "IDX", "MINMATCHLEN", "4", "WITHMATCHLEN"],
    &["LCS", "l1", "l2", "IDX", "LEN"],
    &["LCS", "l1", "l2", "BOGUS"],
    &["LCS", "l1", "missing"],
    &["LCS", "l1", "missing", "IDX"],
    &["SET", "i", "12345"],
    &["SET", "e", "short"],
    &[
        "SET",
        "r",
        "a value that is longer than forty-four bytes, so raw",
    ],
    &["OBJECT", "ENCODING", "i"],
    &["OBJECT", "ENCODING", "e"],
    &["OBJECT", "ENCODING", "r"],
    &["OBJECT", "ENCODING", "missing"],
    &["OBJECT", "BOGUS", "i"],
];

#[test]
fn multi_and_bit_commands_match_redis() {
    let Some(redis) = start_redis(&[]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (_server, resp) = start_two_shards(dir.path(), &["--durability", "async"]);
    let mut ours = Conn::open(resp);
    let mut theirs = Conn::open(redis.addr);
    same_replies(&mut ours, &mut theirs, MULTI_SCRIPT);
    // The same in RESP3, after wiping both.
    for c in [&mut ours, &mut theirs] {
        assert_eq!(cmd(c, &["FLUSHALL"]), V::Simple("OK".into()));
        assert!(matches!(cmd(c, &["HELLO", "3"]), V::Map(_)));
    }
    same_replies(&mut ours, &mut theirs, MULTI_SCRIPT);
}

/// A reader never sees half of an EXEC whose writes span both shards (each
/// EXEC sets both keys to the same value; the reader's MULTI GET GET EXEC
/// and its MGET are snapshots); two clients moving units between the keys
/// with read-modify-write EXECs lose nothing.
#[test]
fn exec_is_atomic_across_shards() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, resp) = start_two_shards(dir.path(), &[]);
    let (a, b) = keys_on_both_shards("acct-");
    let mut setup = Conn::open(resp);
    assert_eq!(
        cmd(&mut setup, &["MSET", &a, "0", &b, "0"]),
        V::Simple("OK".into())
    );
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (a, b, done) = (a.clone(), b.clone(), done.clone());
        std::thread::spawn(move || {
            let mut c = Conn::open(resp);
            let mut reads = 0;
            while !done.load(Ordering::SeqCst) || reads == 0 {
                assert_eq!(cmd(&mut c, &["MULTI"]), V::Simple("OK".into()));
                assert_eq!(cmd(&mut c, &["GET", &a]), V::Simple("QUEUED".into()));
                assert_eq!(cmd(&mut c, &["GET", &b]), V::Simple("QUEUED".into()));
                let V::Array(vals) = cmd(&mut c, &["EXEC"]) else {
                    panic!("EXEC answers an array")
                };
                assert_eq!(vals[0], vals[1], "an EXEC saw half of another EXEC");
                let V::Array(vals) = cmd(&mut c, &["MGET", &a, &b]) else {
                    panic!("MGET answers an array")
                };
                assert_eq!(vals[0], vals[1], "an MGET saw half of an EXEC");
                reads += 1;
            }
            reads
        })
    };
    for i in 1..=150 {
        let v = i.to_string();
        assert_eq!(cmd(&mut setup, &["MULTI"]), V::Simple("OK".into()));
        assert_eq!(
            cmd(&mut setup, &["SET", &a, &v]),
            V::Simple("QUEUED".into())
        );
        assert_eq!(
            cmd(&mut setup, &["SET", &b, &v]),
            V::Simple("QUEUED".into())
        );
        assert_eq!(
            cmd(&mut setup, &["EXEC"]),
            V::Array(vec![V::Simple("OK".into()), V::Simple("OK".into())])
        );
    }
    done.store(true, Ordering::SeqCst);
    assert!(reader.join().expect("the reader saw only whole EXECs") > 0);

    // Transfers: each EXEC reads both balances (INCRBY/DECRBY), so two
    // concurrent clients conflict and retry; the total never changes and
    // no transfer is lost.
    assert_eq!(
        cmd(&mut setup, &["MSET", &a, "1000", &b, "1000"]),
        V::Simple("OK".into())
    );
    let movers: Vec<_> = [(a.clone(), b.clone()), (b.clone(), a.clone())]
        .into_iter()
        .map(|(from, to)| {
            std::thread::spawn(move || {
                let mut c = Conn::open(resp);
                for _ in 0..100 {
                    assert_eq!(cmd(&mut c, &["MULTI"]), V::Simple("OK".into()));
                    cmd(&mut c, &["DECRBY", &from, "3"]);
                    cmd(&mut c, &["INCRBY", &to, "3"]);
                    let V::Array(r) = cmd(&mut c, &["EXEC"]) else {
                        panic!("EXEC answers an array")
                    };
                    assert!(matches!(r[..], [V::Int(_), V::Int(_)]), "{r:?}");
                }
            })
        })
        .collect();
    let mut sums = 0;
    while movers.iter().any(|m| !m.is_finished()) {
        let V::Array(vals) = cmd(&mut setup, &["MGET", &a, &b]) else {
            panic!("MGET answers an array")
        };
        let n = |v: &V| match v {
            V::Bulk(b) => String::from_utf8_lossy(b).parse::<i64>().unwrap(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            n(&vals[0]) + n(&vals[1]),
            2000,
            "money appeared or vanished"
        );
        sums += 1;
    }
    for m in movers {
        m.join().expect("mover");
    }
    assert!(sums > 0);
    // 100 moves each way of 3: back where they started.
    assert_eq!(cmd(&mut setup, &["GET", &a]), V::Bulk(b"1000".to_vec()));
    assert_eq!(cmd(&mut setup, &["GET", &b]), V::Bulk(b"1000".to_vec()));
}

/// WATCH: another client's change to a watched key makes EXEC answer nil
/// and write nothing (on corekv exactly as on Redis); without a change EXEC
/// runs; EXEC, DISCARD and UNWATCH end the watch.
#[test]
fn watch_aborts_exec_when_another_client_changed_the_key() {
    let Some(redis) = start_redis(&[]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (_server, resp) = start_two_shards(dir.path(), &["--durability", "async"]);
    let (wk, other) = keys_on_both_shards("w-");
    for addr in [resp, redis.addr] {
        let mut c1 = Conn::open(addr);
        let mut c2 = Conn::open(addr);
        let run = |c: &mut Conn, script: &[&[&str]]| -> Vec<V> {
            script.iter().map(|s| cmd(c, s)).collect()
        };
        let ok = || V::Simple("OK".into());
        let queued = || V::Simple("QUEUED".into());
        cmd(&mut c1, &["SET", &wk, "1"]);
        // Changed by another client after WATCH: nil, nothing written.
        assert_eq!(cmd(&mut c1, &["WATCH", &wk]), ok());
        assert_eq!(cmd(&mut c2, &["SET", &wk, "2"]), ok());
        let got = run(
            &mut c1,
            &[
                &["MULTI"],
                &["SET", &wk, "3"],
                &["SET", &other, "x"],
                &["EXEC"],
            ],
        );
        assert_eq!(got, vec![ok(), queued(), queued(), V::NilArray], "{addr}");
        assert_eq!(cmd(&mut c1, &["GET", &wk]), V::Bulk(b"2".to_vec()));
        assert_eq!(cmd(&mut c1, &["GET", &other]), V::NilBulk);
        // Deleted by another client: nil too.
        assert_eq!(cmd(&mut c1, &["WATCH", &wk]), ok());
        assert_eq!(cmd(&mut c2, &["DEL", &wk]), V::Int(1));
        let got = run(&mut c1, &[&["MULTI"], &["GET", &wk], &["EXEC"]]);
        assert_eq!(got, vec![ok(), queued(), V::NilArray]);
        // Created by another client after WATCH of a missing key: nil.
        assert_eq!(cmd(&mut c1, &["WATCH", &wk]), ok());
        assert_eq!(cmd(&mut c2, &["SET", &wk, "new"]), ok());
        let got = run(&mut c1, &[&["MULTI"], &["SET", &other, "x"], &["EXEC"]]);
        assert_eq!(got, vec![ok(), queued(), V::NilArray]);
        // No change: EXEC runs.
        assert_eq!(cmd(&mut c1, &["WATCH", &wk, &other]), ok());
        assert_eq!(cmd(&mut c2, &["GET", &wk]), V::Bulk(b"new".to_vec()));
        let got = run(
            &mut c1,
            &[
                &["MULTI"],
                &["SET", &wk, "mine"],
                &["SET", &other, "y"],
                &["EXEC"],
            ],
        );
        assert_eq!(
            got,
            vec![ok(), queued(), queued(), V::Array(vec![ok(), ok()])]
        );
        assert_eq!(cmd(&mut c2, &["GET", &other]), V::Bulk(b"y".to_vec()));
        // EXEC ended the watch: a later change does not matter.
        assert_eq!(cmd(&mut c2, &["SET", &wk, "later"]), ok());
        let got = run(&mut c1, &[&["MULTI"], &["GET", &wk], &["EXEC"]]);
        assert_eq!(
            got,
            vec![ok(), queued(), V::Array(vec![V::Bulk(b"later".to_vec())])]
        );
        // UNWATCH ends it too.
        assert_eq!(cmd(&mut c1, &["WATCH", &wk]), ok());
        assert_eq!(cmd(&mut c1, &["UNWATCH"]), ok());
        assert_eq!(cmd(&mut c2, &["SET", &wk, "again"]), ok());
        let got = run(&mut c1, &[&["MULTI"], &["GET", &wk], &["EXEC"]]);
        assert_eq!(
            got,
            vec![ok(), queued(), V::Array(vec![V::Bulk(b"again".to_vec())])]
        );
    }
}

/// Right after EXEC's reply, EXISTS, STRLEN and TYPE on either shard see
/// the whole transaction: they wait for its locks as GET does (before, they
/// could see a participant shard's keys as they were before the EXEC).
#[test]
fn key_probes_see_the_whole_exec() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, resp) = start_two_shards(dir.path(), &["--durability", "async"]);
    let (a, b) = keys_on_both_shards("probe-");
    let mut setup = Conn::open(resp);
    for _ in 0..300 {
        assert_eq!(
            cmd(&mut setup, &["MSET", &a, "x", &b, "x"]),
            V::Simple("OK".into())
        );
        assert_eq!(cmd(&mut setup, &["MULTI"]), V::Simple("OK".into()));
        cmd(&mut setup, &["DEL", &a]);
        cmd(&mut setup, &["DEL", &b]);
        assert_eq!(
            cmd(&mut setup, &["EXEC"]),
            V::Array(vec![V::Int(1), V::Int(1)])
        );
        assert_eq!(
            cmd(&mut setup, &["EXISTS", &a, &b]),
            V::Int(0),
            "EXISTS saw half an EXEC"
        );
        assert_eq!(cmd(&mut setup, &["STRLEN", &a]), V::Int(0));
        assert_eq!(cmd(&mut setup, &["STRLEN", &b]), V::Int(0));
    }
}

/// The queue is bounded (RESP_MULTI_COMMANDS_MAX commands): the command
/// past the bound is refused with a clear error and EXEC aborts, as for
/// any command refused while queuing; a command corekv cannot run inside
/// MULTI is refused the same way.
#[test]
fn multi_queue_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, resp) = start_two_shards(dir.path(), &["--durability", "async"]);
    let mut c = Conn::open(resp);
    let max = corekv::core::limits::RESP_MULTI_COMMANDS_MAX;
    assert_eq!(cmd(&mut c, &["MULTI"]), V::Simple("OK".into()));
    for _ in 0..max + 1 {
        c.send(&[b"INCR", b"bounded"]);
    }
    for _ in 0..max {
        assert_eq!(c.read(), V::Simple("QUEUED".into()));
    }
    match c.read() {
        V::Err(e) => assert!(e.starts_with("ERR MULTI queue is full"), "{e}"),
        other => panic!("the command past the bound is refused, got {other:?}"),
    }
    assert_eq!(
        cmd(&mut c, &["EXEC"]),
        V::Err("EXECABORT Transaction discarded because of previous errors.".into())
    );
    assert_eq!(cmd(&mut c, &["GET", "bounded"]), V::NilBulk);
    // Within the bound, the whole queue runs at once.
    assert_eq!(cmd(&mut c, &["MULTI"]), V::Simple("OK".into()));
    for _ in 0..max {
        c.send(&[b"INCR", b"bounded"]);
    }
    for _ in 0..max {
        assert_eq!(c.read(), V::Simple("QUEUED".into()));
    }
    let V::Array(replies) = cmd(&mut c, &["EXEC"]) else {
        panic!("EXEC answers an array")
    };
    assert_eq!(replies.len(), max);
    assert_eq!(replies[max - 1], V::Int(max as i64));
    // A command corekv does not run inside MULTI.
    assert_eq!(cmd(&mut c, &["MULTI"]), V::Simple("OK".into()));
    match cmd(&mut c, &["KEYS", "*"]) {
        V::Err(e) => assert!(e.contains("inside MULTI is not supported by corekv"), "{e}"),
        other => panic!("KEYS inside MULTI is refused, got {other:?}"),
    }
    assert!(matches!(cmd(&mut c, &["EXEC"]), V::Err(e) if e.starts_with("EXECABORT")));
}

const SERVER_SCRIPT: &[&[&str]] = &[
    // Plain SETs, not MSET: DBSIZE is a scan, which takes no locks and may
    // miss a transaction's keys for a moment after its reply.
    &["SET", "f1", "1"],
    &["SET", "f2", "2"],
    &["SET", "f3", "3"],
    &["FLUSHDB", "BOGUS"],
    &["FLUSHALL", "ASYNC", "x"],
    &["DBSIZE"],
    &["FLUSHDB", "sync"],
    &["DBSIZE"],
    &["SET", "f1", "1"],
    &["FLUSHALL", "ASYNC"],
    &["GET", "f1"],
    &["FLUSHALL"],
    &["WAIT", "0", "0"],
    &["WAIT", "1", "-1"],
    &["WAIT", "x", "0"],
    &["WAIT", "0", "x"],
    &["DEBUG", "SLEEP", "0"],
    &["DEBUG", "SLEEP", "0.01"],
    &["DEBUG", "SLEEP", "x"],
    &["DEBUG", "BOGUS"],
    &["DEBUG", "SLEEP", "0", "1"],
    &["CLIENT", "KILL", "1.2.3.4:5"],
    &["CLIENT", "KILL", "ID", "0"],
    &["CLIENT", "KILL", "ID", "x"],
    &["CLIENT", "KILL", "ID", "999999"],
    &["CLIENT", "KILL", "ADDR", "1.2.3.4:5", "SKIPME", "no"],
    &["CLIENT", "KILL", "ID"],
    &["CLIENT", "KILL", "BOGUS", "x"],
    &["CLIENT", "KILL", "SKIPME", "maybe"],
    &["CLIENT", "LIST", "TYPE", "bogus"],
    &["CLIENT", "LIST", "ID", "x"],
];

/// FLUSHDB/FLUSHALL (options and errors as Redis; every key gone, on every
/// shard, also past one delete page), WAIT, DEBUG SLEEP, LASTSAVE, and
/// CLIENT KILL's errors, against redis-server.
#[test]
fn flush_and_server_commands_match_redis() {
    let Some(redis) = start_redis(&["--enable-debug-command", "yes"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (_server, resp) = start_two_shards(dir.path(), &["--durability", "async"]);
    let mut ours = Conn::open(resp);
    let mut theirs = Conn::open(redis.addr);
    same_replies(&mut ours, &mut theirs, SERVER_SCRIPT);
    assert!(matches!(cmd(&mut ours, &["LASTSAVE"]), V::Int(t) if t > 1_600_000_000));
    // corekv does not queue FLUSHALL (it is not one transaction).
    assert_eq!(cmd(&mut ours, &["MULTI"]), V::Simple("OK".into()));
    assert!(
        matches!(cmd(&mut ours, &["FLUSHALL"]), V::Err(e) if e.contains("inside MULTI is not supported"))
    );
    assert!(matches!(cmd(&mut ours, &["EXEC"]), V::Err(e) if e.starts_with("EXECABORT")));
    // More keys than one delete page (1000), on both shards.
    for chunk in 0..5 {
        for i in 0..500 {
            ours.send(&[b"SET", format!("bulk:{chunk}:{i}").as_bytes(), b"v"]);
        }
        for _ in 0..500 {
            assert_eq!(ours.read(), V::Simple("OK".into()));
        }
    }
    assert_eq!(cmd(&mut ours, &["DBSIZE"]), V::Int(2500));
    assert_eq!(cmd(&mut ours, &["FLUSHALL"]), V::Simple("OK".into()));
    assert_eq!(cmd(&mut ours, &["DBSIZE"]), V::Int(0));
    assert_eq!(cmd(&mut ours, &["GET", "bulk:4:499"]), V::NilBulk);
}

/// CLIENT LIST shows every connection of the server (whichever shard
/// serves it), with its name; CLIENT KILL ID and ADDR close connections
/// served by any shard; the old form may kill the caller itself.
#[test]
fn client_list_and_kill_reach_every_shard() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let (_server, resp) = start_two_shards(dir.path(), &["--durability", "async"]);
    let mut admin = Conn::open(resp);
    // Several connections, so both shards serve some.
    let mut victims: Vec<(Conn, i64)> = (0..6)
        .map(|i| {
            let mut c = Conn::open(resp);
            assert_eq!(
                cmd(&mut c, &["CLIENT", "SETNAME", &format!("victim{i}")]),
                V::Simple("OK".into())
            );
            let V::Int(id) = cmd(&mut c, &["CLIENT", "ID"]) else {
                panic!("CLIENT ID answers an integer")
            };
            (c, id)
        })
        .collect();
    let V::Bulk(list) = cmd(&mut admin, &["CLIENT", "LIST"]) else {
        panic!("CLIENT LIST answers a bulk string")
    };
    let list = String::from_utf8(list).unwrap();
    for (i, (_, id)) in victims.iter().enumerate() {
        assert!(
            list.lines()
                .any(|l| l.starts_with(&format!("id={id} "))
                    && l.contains(&format!(" name=victim{i} "))),
            "CLIENT LIST lacks victim {i}: {list}"
        );
    }
    let V::Bulk(one) = cmd(
        &mut admin,
        &["CLIENT", "LIST", "ID", &victims[0].1.to_string()],
    ) else {
        panic!("CLIENT LIST ID answers a bulk string")
    };
    assert_eq!(String::from_utf8(one).unwrap().lines().count(), 1);
    // Kill half by ID, the other half by address.
    for (i, (c, id)) in victims.iter_mut().enumerate() {
        let got = if i % 2 == 0 {
            cmd(&mut admin, &["CLIENT", "KILL", "ID", &id.to_string()])
        } else {
            let addr = c.r.get_ref().local_addr().unwrap().to_string();
            cmd(&mut admin, &["CLIENT", "KILL", "ADDR", &addr])
        };
        assert_eq!(got, V::Int(1), "victim {i}");
        // The victim's connection ends (read gives end of stream).
        let mut buf = [0u8; 64];
        c.r.get_mut()
            .set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        let n =
            c.r.get_mut()
                .read(&mut buf)
                .expect("the kill ends the read");
        assert_eq!(n, 0, "victim {i} was not disconnected");
    }
    // Each killed connection leaves the list when its own shard closes it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let V::Bulk(list) = cmd(&mut admin, &["CLIENT", "LIST"]) else {
            panic!("CLIENT LIST answers a bulk string")
        };
        let list = String::from_utf8(list).unwrap();
        if list.lines().count() == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "killed clients still listed: {list}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The old form kills the caller too, after its +OK.
    let mut me = Conn::open(resp);
    let addr = me.r.get_ref().local_addr().unwrap().to_string();
    assert_eq!(
        cmd(&mut me, &["CLIENT", "KILL", &addr]),
        V::Simple("OK".into())
    );
    let mut buf = [0u8; 64];
    assert_eq!(me.r.get_mut().read(&mut buf).expect("closed after +OK"), 0);
    assert_eq!(cmd(&mut admin, &["PING"]), V::Simple("PONG".into()));
}

/// The new commands' COMMAND INFO rows have Redis's arity and key
/// positions (what redis-cli's hints and cluster-aware clients read).
#[test]
fn command_table_rows_match_redis() {
    let Some(redis) = start_redis(&[]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (_server, resp) = start_two_shards(dir.path(), &["--durability", "async"]);
    let mut ours = Conn::open(resp);
    let mut theirs = Conn::open(redis.addr);
    let shape = |v: V| -> Vec<V> {
        let V::Array(mut rows) = v else {
            panic!("COMMAND INFO answers an array")
        };
        let V::Array(row) = rows.remove(0) else {
            panic!("a command row, got {rows:?}")
        };
        // name, arity, (flags), first key, last key, step
        vec![
            row[0].clone(),
            row[1].clone(),
            row[3].clone(),
            row[4].clone(),
            row[5].clone(),
        ]
    };
    for name in [
        "multi", "exec", "discard", "watch", "unwatch", "setbit", "getbit", "bitcount", "bitpos",
        "bitop", "lcs", "flushdb", "flushall", "lastsave", "wait",
    ] {
        let o = shape(cmd(&mut ours, &["COMMAND", "INFO", name]));
        let t = shape(cmd(&mut theirs, &["COMMAND", "INFO", name]));
        assert_eq!(o, t, "{name}");
    }
}

/// SETBIT is an atomic read-modify-write: clients setting different bits
/// of one value at once lose none; MULTI pipelined with plain GET/SET in
/// one write queues them (they do not join a batched run).
#[test]
fn setbit_loses_no_bit_and_pipelined_multi_queues() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, resp) = start_two_shards(dir.path(), &[]);
    let setters: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let mut c = Conn::open(resp);
                for i in 0..50 {
                    let bit = (i * 4 + t).to_string();
                    assert_eq!(cmd(&mut c, &["SETBIT", "bitmap", &bit, "1"]), V::Int(0));
                }
            })
        })
        .collect();
    for s in setters {
        s.join().expect("setter");
    }
    let mut c = Conn::open(resp);
    assert_eq!(cmd(&mut c, &["BITCOUNT", "bitmap"]), V::Int(200));
    c.send_all(&[
        &[b"SET", b"p", b"0"],
        &[b"MULTI"],
        &[b"SET", b"p", b"1"],
        &[b"GET", b"p"],
        &[b"EXEC"],
        &[b"GET", b"p"],
    ]);
    let got: Vec<V> = (0..6).map(|_| c.read()).collect();
    let ok = || V::Simple("OK".into());
    let queued = || V::Simple("QUEUED".into());
    assert_eq!(
        got,
        vec![
            ok(),
            ok(),
            queued(),
            queued(),
            V::Array(vec![ok(), V::Bulk(b"1".to_vec())]),
            V::Bulk(b"1".to_vec())
        ]
    );
}
