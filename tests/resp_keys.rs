//! RENAME, RENAMENX, COPY and RANDOMKEY, and the expiry commands inside
//! MULTI, against a real corekv server and a real redis-server in the same
//! run: every reply compared byte for byte (RESP2 and RESP3), with the
//! source and destination keys on different shards so each RENAME/COPY is a
//! cross-shard transaction. Then the combinations: a RENAME racing a reader
//! (never half moved), and a renamed key's expiry surviving SIGKILL.

use crate::common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::resp::{cmd, keys_across_shards, start_redis, start_two_shards, Conn, V};
use corekv::core::hash::shard_for_key;

/// The script, with `a`..`f` replaced by keys that alternate shards (so
/// a→b, b→c, ... each cross shards). Times are absolute (EXAT far ahead) or
/// whole seconds far from a rounding edge, so both servers answer the same.
fn script() -> Vec<Vec<String>> {
    let k = keys_across_shards("rk", 6);
    let raw: &[&[&str]] = &[
        &["SET", "a", "1", "EXAT", "4000000000"],
        &["RENAME", "a", "b"],
        &["GET", "a"],
        &["GET", "b"],
        &["EXPIRETIME", "b"],
        &["TTL", "a"],
        &["RENAME", "nope", "c"],
        &["RENAMENX", "nope", "c"],
        &["RENAMENX", "b", "b"],
        &["RENAME", "b", "b"],
        &["GET", "b"],
        &["SET", "c", "v"],
        &["RENAMENX", "b", "c"],
        &["COPY", "b", "c"],
        &["COPY", "b", "c", "REPLACE"],
        &["GET", "c"],
        &["EXPIRETIME", "c"],
        &["COPY", "b", "b"],
        &["COPY", "b", "d", "DB", "x"],
        &["COPY", "b", "d", "BOGUS"],
        &["COPY", "nope", "d"],
        &["COPY", "b", "d", "DB", "0"],
        &["EXPIRETIME", "d"],
        &["RENAMENX", "d", "e"],
        &["MGET", "b", "c", "d", "e"],
        &["RENAME", "e", "c"],
        &["EXPIRETIME", "c"],
        // Expiry inside MULTI, and what each command does to a TTL there.
        &["MULTI"],
        &["SET", "a", "5", "EX", "1000"],
        &["INCR", "a"],
        &["TTL", "a"],
        &["APPEND", "a", "x"],
        &["SETRANGE", "a", "0", "7"],
        &["TTL", "a"],
        &["PERSIST", "a"],
        &["PERSIST", "a"],
        &["TTL", "a"],
        &["EXPIRE", "a", "100", "GT"],
        &["EXPIRE", "a", "100", "XX"],
        &["EXPIRE", "a", "100"],
        &["EXPIRE", "a", "50", "GT"],
        &["EXPIRE", "a", "50", "LT"],
        &["TTL", "a"],
        &["SET", "a", "plain"],
        &["TTL", "a"],
        &["SETEX", "f", "100", "v"],
        &["GETEX", "f", "PERSIST"],
        &["TTL", "f"],
        &["GETEX", "f", "EXAT", "4000000001"],
        &["EXPIRETIME", "f"],
        &["SET", "f", "w", "KEEPTTL"],
        &["EXPIRETIME", "f"],
        &["GETSET", "f", "x"],
        &["TTL", "f"],
        &["PSETEX", "f", "100000", "y"],
        &["RENAME", "f", "e"],
        &["TTL", "e"],
        &["PEXPIREAT", "e", "1"],
        &["EXISTS", "e"],
        &["SET", "e", "v", "EX", "0"],
        &["SET", "e", "v", "EX", "x"],
        &["EXPIRE", "e", "10", "NX", "XX"],
        &["TTL", "nope"],
        &["COPY", "a", "e"],
        &["TTL", "e"],
        &["EXEC"],
        &["TTL", "a"],
        &["GET", "e"],
        &["SETBIT", "c", "1", "1"],
        &["EXPIRETIME", "c"],
        &["SET", "nx", "v", "EXAT", "4000000000"],
        &["INCR", "nx"],
        &["APPEND", "c", "z"],
        &["EXPIRETIME", "c"],
    ];
    let names = ["a", "b", "c", "d", "e", "f"];
    raw.iter()
        .map(|c| {
            let mut args: Vec<String> = Vec::new();
            for (i, arg) in c.iter().enumerate() {
                // Arguments after the command name that are one of a..f are
                // keys; other arguments stay as written.
                match names.iter().position(|n| n == arg) {
                    Some(at) if i > 0 => args.push(k[at].clone()),
                    _ => args.push(arg.to_string()),
                }
            }
            args
        })
        .collect()
}

fn same_replies(ours: &mut Conn, theirs: &mut Conn, script: &[Vec<String>]) {
    for c in script {
        let args: Vec<&str> = c.iter().map(String::as_str).collect();
        let a = cmd(ours, &args);
        let b = cmd(theirs, &args);
        assert_eq!(a, b, "replies differ for {c:?}");
    }
}

#[test]
fn rename_copy_randomkey_and_ttls_in_multi_match_redis() {
    let Some(redis) = start_redis(&[]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (_server, resp) = start_two_shards(dir.path(), &[]);
    let mut ours = Conn::open(resp);
    let mut theirs = Conn::open(redis.addr);
    let script = script();
    same_replies(&mut ours, &mut theirs, &script);
    // RANDOMKEY: nil on an empty store, the one key when there is one.
    for c in [&mut ours, &mut theirs] {
        assert_eq!(cmd(c, &["FLUSHALL"]), V::Simple("OK".into()));
        assert_eq!(cmd(c, &["RANDOMKEY"]), V::NilBulk);
        assert_eq!(cmd(c, &["SET", "only", "1"]), V::Simple("OK".into()));
        assert_eq!(cmd(c, &["RANDOMKEY"]), V::Bulk(b"only".to_vec()));
        assert_eq!(cmd(c, &["FLUSHALL"]), V::Simple("OK".into()));
        assert!(matches!(cmd(c, &["HELLO", "3"]), V::Map(_)));
        assert_eq!(cmd(c, &["RANDOMKEY"]), V::Null);
    }
    same_replies(&mut ours, &mut theirs, &script);
    // corekv has one database: COPY to another is refused (Redis, with 16,
    // copies).
    assert_eq!(
        cmd(&mut ours, &["COPY", "only", "x", "DB", "1"]),
        V::Err("ERR DB index is out of range".into())
    );
}

/// RANDOMKEY over many keys on both shards comes back with different keys,
/// each one that exists.
#[test]
fn randomkey_returns_keys_from_both_shards() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, resp) = start_two_shards(dir.path(), &[]);
    let mut c = Conn::open(resp);
    let keys = keys_across_shards("rand", 40);
    for k in &keys {
        assert_eq!(cmd(&mut c, &["SET", k, "1"]), V::Simple("OK".into()));
    }
    let mut seen = std::collections::HashSet::new();
    for _ in 0..200 {
        match cmd(&mut c, &["RANDOMKEY"]) {
            V::Bulk(k) => {
                let k = String::from_utf8(k).unwrap();
                assert!(keys.contains(&k), "RANDOMKEY gave {k}, never written");
                seen.insert(k);
            }
            other => panic!("RANDOMKEY answered {other:?}"),
        }
    }
    let shards: std::collections::HashSet<u16> = seen
        .iter()
        .map(|k| shard_for_key(k.as_bytes(), 2).0)
        .collect();
    assert!(seen.len() >= 10, "only {} distinct keys", seen.len());
    assert_eq!(shards.len(), 2, "keys from one shard only: {seen:?}");
}

/// A key renamed back and forth between the two shards is, to a reader's
/// MGET (one snapshot), always in exactly one place, with its value; after
/// SIGKILL and a restart it is still in one place with its expiry.
#[test]
fn rename_across_shards_is_atomic_and_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let (server, resp) = start_two_shards(dir.path(), &[]);
    let k = keys_across_shards("mv", 2);
    let (a, b) = (k[0].clone(), k[1].clone());
    let mut c = Conn::open(resp);
    assert_eq!(
        cmd(&mut c, &["SET", &a, "payload", "EXAT", "4000000000"]),
        V::Simple("OK".into())
    );
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (a, b, stop) = (a.clone(), b.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut r = Conn::open(resp);
            let mut reads = 0;
            while !stop.load(Ordering::Relaxed) {
                let V::Array(got) = cmd(&mut r, &["MGET", &a, &b]) else {
                    panic!("MGET did not answer an array");
                };
                let present: Vec<&V> = got.iter().filter(|v| **v != V::NilBulk).collect();
                assert_eq!(
                    present,
                    vec![&V::Bulk(b"payload".to_vec())],
                    "MGET saw {got:?}"
                );
                reads += 1;
            }
            reads
        })
    };
    for i in 0..400 {
        let (from, to) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        assert_eq!(cmd(&mut c, &["RENAME", from, to]), V::Simple("OK".into()));
    }
    stop.store(true, Ordering::Relaxed);
    let reads = reader.join().expect("the reader saw every MGET whole");
    assert!(reads > 10, "the reader ran only {reads} MGETs");
    // One more move, acknowledged, then SIGKILL.
    assert_eq!(cmd(&mut c, &["RENAME", &a, &b]), V::Simple("OK".into()));
    drop(c);
    server.kill();
    let (_server, resp) = start_two_shards(dir.path(), &[]);
    let mut c = Conn::open(resp);
    assert_eq!(cmd(&mut c, &["EXISTS", &a]), V::Int(0));
    assert_eq!(cmd(&mut c, &["GET", &b]), V::Bulk(b"payload".to_vec()));
    assert_eq!(cmd(&mut c, &["EXPIRETIME", &b]), V::Int(4_000_000_000));
}

/// An EXEC that keeps a key's expiry (INCR inside MULTI) racing EXPIREATs
/// of the same key from another client: the expiry the key ends with is the
/// last EXPIREAT acknowledged, at every moment. The EXEC's conditions include the expiry it
/// read, so one that read the old expiry runs again instead of writing it
/// back over the new one.
#[test]
fn exec_never_writes_back_an_expiry_changed_under_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, resp) = start_two_shards(dir.path(), &[]);
    let mut c = Conn::open(resp);
    assert_eq!(
        cmd(&mut c, &["SET", "n", "0", "EXAT", "4000000000"]),
        V::Simple("OK".into())
    );
    let stop = Arc::new(AtomicBool::new(false));
    // Four clients INCR in EXECs, so one is usually between its snapshot
    // and its commit when an EXPIREAT lands.
    let incrs: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut c = Conn::open(resp);
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    assert_eq!(cmd(&mut c, &["MULTI"]), V::Simple("OK".into()));
                    assert_eq!(cmd(&mut c, &["INCR", "n"]), V::Simple("QUEUED".into()));
                    match cmd(&mut c, &["EXEC"]) {
                        V::Array(_) => n += 1,
                        // Contention past the retry budget: nothing was
                        // written, so nothing to count.
                        V::Err(e)
                            if e.starts_with("TXN_ABORTED") || e.starts_with("LOCK_TIMEOUT") => {}
                        other => panic!("EXEC answered {other:?}"),
                    }
                }
                n
            })
        })
        .collect();
    let mut last = 0u64;
    for i in 0..600u64 {
        last = 4_000_000_000 + i;
        let at = last.to_string();
        assert_eq!(cmd(&mut c, &["EXPIREAT", "n", &at]), V::Int(1));
        // Only this client changes the expiry: whatever EXEC committed
        // since, the key carries the last one set.
        assert_eq!(cmd(&mut c, &["EXPIRETIME", "n"]), V::Int(last as i64));
    }
    stop.store(true, Ordering::Relaxed);
    let incrs: u64 = incrs
        .into_iter()
        .map(|t| t.join().expect("every EXEC answered"))
        .sum();
    assert!(incrs > 10, "only {incrs} EXECs ran");
    assert_eq!(cmd(&mut c, &["EXPIRETIME", "n"]), V::Int(last as i64));
    assert_eq!(
        cmd(&mut c, &["GET", "n"]),
        V::Bulk(incrs.to_string().into_bytes())
    );
}

/// CLIENT LIST shows another connection's MULTI state (flags=x, the queue
/// length) and how long it has been idle, from whichever shard serves it;
/// every field a client library parses as a number is there.
#[test]
fn client_list_shows_multi_state_and_idle_time() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, resp) = start_two_shards(dir.path(), &[]);
    let mut a = Conn::open(resp);
    let mut b = Conn::open(resp);
    assert_eq!(
        cmd(&mut a, &["CLIENT", "SETNAME", "queuer"]),
        V::Simple("OK".into())
    );
    assert_eq!(cmd(&mut a, &["MULTI"]), V::Simple("OK".into()));
    assert_eq!(cmd(&mut a, &["SET", "x", "1"]), V::Simple("QUEUED".into()));
    assert_eq!(cmd(&mut a, &["INCR", "x"]), V::Simple("QUEUED".into()));
    let line = |b: &mut Conn| -> std::collections::HashMap<String, String> {
        let V::Bulk(list) = cmd(b, &["CLIENT", "LIST"]) else {
            panic!("CLIENT LIST is a bulk string in RESP2");
        };
        let list = String::from_utf8(list).unwrap();
        let l = list
            .lines()
            .find(|l| l.contains("name=queuer"))
            .unwrap_or_else(|| panic!("no queuer in {list}"));
        l.split(' ')
            .map(|f| {
                let (k, v) = f.split_once('=').expect("key=value");
                (k.to_string(), v.to_string())
            })
            .collect()
    };
    let f = line(&mut b);
    assert_eq!(
        (f["flags"].as_str(), f["multi"].as_str()),
        ("x", "2"),
        "{f:?}"
    );
    for k in [
        "idle",
        "sub",
        "psub",
        "qbuf",
        "qbuf-free",
        "argv-mem",
        "obl",
        "oll",
        "omem",
        "tot-mem",
    ] {
        assert!(f[k].parse::<i64>().is_ok(), "{k} in {f:?}");
    }
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let f = line(&mut b);
    assert!(f["idle"].parse::<u64>().unwrap() >= 2, "{f:?}");
    assert!(matches!(cmd(&mut a, &["EXEC"]), V::Array(_)));
    let f = line(&mut b);
    assert_eq!(
        (f["flags"].as_str(), f["multi"].as_str(), f["idle"].as_str()),
        ("N", "-1", "0"),
        "{f:?}"
    );
}
