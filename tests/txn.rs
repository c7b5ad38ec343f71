//! Transactions against a real 2-shard server: TXN conditions and atomicity,
//! MPUT, snapshot MGET, the single-shard fast path, contention on hot keys.

use crate::common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use common::start_server;
use corekv::core::hash::shard_for_key;
use corekv::core::status::Status;
use corekv::core::txn_format::{Cond, Write};
use corekv::net::client::{ClientError, TxnResult};

/// A key with `prefix` owned by `shard` of 2.
fn key_on(prefix: &str, shard: u16) -> Vec<u8> {
    (0..)
        .map(|i| format!("{prefix}-{i}").into_bytes())
        .find(|k| shard_for_key(k, 2).0 == shard)
        .expect("some key lands on every shard")
}

fn status_of(e: &ClientError) -> Option<Status> {
    match e {
        ClientError::Status { status, .. } => Some(*status),
        _ => None,
    }
}

#[test]
fn conditions_atomicity_and_snapshots_across_shards() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_server(dir.path(), &["--shards", "2"]);
    let mut c = server.client();
    let (a, b) = (key_on("acct", 0), key_on("acct", 1));
    let (a2, b2) = (key_on("other", 0), key_on("more", 0));

    // MPUT across both shards, read back as one snapshot.
    c.mput(&[(&a, b"100"), (&b, b"50")]).expect("mput");
    let got = c.mget(&[&a, &b, b"missing"]).expect("mget");
    assert_eq!(got, vec![Some(b"100".to_vec()), Some(b"50".to_vec()), None]);

    // A transfer whose conditions hold commits on both shards.
    let r = c
        .txn(
            &[Cond::Equals(&a, b"100"), Cond::Equals(&b, b"50")],
            &[Write::Put(&a, b"70"), Write::Put(&b, b"80")],
        )
        .expect("txn");
    assert_eq!(r, TxnResult::Committed);
    assert_eq!(c.get(&a).expect("get"), Some(b"70".to_vec()));
    assert_eq!(c.get(&b).expect("get"), Some(b"80".to_vec()));

    // A false condition on the second shard: nothing applied on either, and
    // the reply names the condition.
    let r = c
        .txn(
            &[
                Cond::Present(&a),
                Cond::Absent(b"nope"),
                Cond::Equals(&b, b"999"),
            ],
            &[Write::Put(&a, b"0"), Write::Delete(&b)],
        )
        .expect("txn");
    assert_eq!(r, TxnResult::ConditionFailed(2));
    assert_eq!(
        c.mget(&[&a, &b]).expect("mget"),
        vec![Some(b"70".to_vec()), Some(b"80".to_vec())]
    );

    // Two false conditions on different shards: the reply names the first
    // (shards are visited in order, so the one on shard 1 is checked last).
    let r = c
        .txn(
            &[Cond::Equals(&b, b"no"), Cond::Equals(&a, b"no")],
            &[Write::Put(&a, b"0")],
        )
        .expect("txn");
    assert_eq!(r, TxnResult::ConditionFailed(0));

    // Deletes and absent conditions.
    let r = c
        .txn(
            &[Cond::Absent(b"fresh")],
            &[Write::Delete(&a), Write::Put(b"fresh", b"1")],
        )
        .expect("txn");
    assert_eq!(r, TxnResult::Committed);
    assert_eq!(c.get(&a).expect("get"), None);
    assert_eq!(c.get(b"fresh").expect("get"), Some(b"1".to_vec()));

    // Single-shard fast path (both keys on shard 0).
    let r = c
        .txn(
            &[Cond::Absent(&a2)],
            &[Write::Put(&a2, b"x"), Write::Put(&b2, b"y")],
        )
        .expect("txn");
    assert_eq!(r, TxnResult::Committed);
    assert_eq!(
        c.mget(&[&a2, &b2]).expect("mget"),
        vec![Some(b"x".to_vec()), Some(b"y".to_vec())]
    );

    // Writing a key twice in one transaction is refused.
    let e = c
        .txn(&[], &[Write::Put(&a, b"1"), Write::Delete(&a)])
        .expect_err("duplicate write");
    assert_eq!(status_of(&e), Some(Status::InvalidArgument), "{e}");

    // Everything survives a restart (decisions and prepares replayed).
    drop(c);
    let (code, _) = server.stop();
    assert_eq!(code, Some(0));
    let server = start_server(dir.path(), &["--shards", "2"]);
    let mut c = server.client();
    assert_eq!(
        c.mget(&[&a, &b, b"fresh", &a2, &b2]).expect("mget"),
        vec![
            None,
            Some(b"80".to_vec()),
            Some(b"1".to_vec()),
            Some(b"x".to_vec()),
            Some(b"y".to_vec())
        ]
    );
}

/// Many connections increment two counters on different shards with
/// compare-and-set transactions, retrying on conflict. No deadlock, every
/// attempt ends (committed, condition failed, or aborted and retried), and both
/// counters end at the number of commits. Readers meanwhile never see the
/// counters differ.
#[test]
fn hot_keys_under_contention() {
    hot_keys(&[]);
}

/// Async durability takes the other commit path (apply after the forced sync).
#[test]
fn hot_keys_under_contention_async() {
    hot_keys(&["--durability", "async"]);
}

/// A snapshot MGET, retried as a client would when it meets contention
/// (TXN_ABORTED: its shared locks were not free within the lock timeout, which
/// on a loaded machine happens to any reader of hot keys). Other errors fail.
fn snapshot(c: &mut corekv::net::client::Client, keys: &[&[u8]]) -> Vec<Option<Vec<u8>>> {
    for _ in 0..1000 {
        match c.mget(keys) {
            Ok(v) => return v,
            Err(e) if status_of(&e) == Some(Status::TxnAborted) => {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            Err(e) => panic!("snapshot read: {e}"),
        }
    }
    panic!("snapshot read aborted 1000 times in a row");
}

fn hot_keys(extra: &[&str]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut args = vec!["--shards", "2", "--lock-timeout-ms", "200"];
    args.extend_from_slice(extra);
    let server = start_server(dir.path(), &args);
    let (a, b) = (key_on("hot", 0), key_on("hot", 1));
    server
        .client()
        .mput(&[(&a, b"0"), (&b, b"0")])
        .expect("init");
    let commits = Arc::new(AtomicU64::new(0));
    let aborts = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let mut c = server.client();
        let (a, b, stop) = (a.clone(), b.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut reads = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let v = snapshot(&mut c, &[&a, &b]);
                assert_eq!(v[0], v[1], "a snapshot saw half a transaction");
                reads += 1;
            }
            reads
        })
    };
    let writers: Vec<_> = (0..8)
        .map(|_| {
            let mut c = server.client();
            let (a, b) = (a.clone(), b.clone());
            let (commits, aborts) = (commits.clone(), aborts.clone());
            std::thread::spawn(move || {
                let mut mine = 0;
                while mine < 25 {
                    let v = snapshot(&mut c, &[&a, &b]);
                    let (va, vb) = (v[0].clone().expect("a"), v[1].clone().expect("b"));
                    let n: u64 = std::str::from_utf8(&va)
                        .expect("utf8")
                        .parse()
                        .expect("num");
                    let next = (n + 1).to_string();
                    match c.txn(
                        &[Cond::Equals(&a, &va), Cond::Equals(&b, &vb)],
                        &[
                            Write::Put(&a, next.as_bytes()),
                            Write::Put(&b, next.as_bytes()),
                        ],
                    ) {
                        Ok(TxnResult::Committed) => {
                            mine += 1;
                            commits.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(TxnResult::ConditionFailed(_)) => {}
                        Err(e) if status_of(&e) == Some(Status::TxnAborted) => {
                            aborts.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => panic!("unexpected transaction error: {e}"),
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer");
    }
    stop.store(true, Ordering::SeqCst);
    let reads = reader.join().expect("reader");
    let n = commits.load(Ordering::SeqCst);
    assert_eq!(n, 200);
    let v = server.client().mget(&[&a, &b]).expect("final read");
    assert_eq!(v[0], Some(n.to_string().into_bytes()));
    assert_eq!(v[1], Some(n.to_string().into_bytes()));
    assert!(reads > 0);
    eprintln!(
        "{n} commits, {} lock-timeout aborts, {reads} snapshot reads",
        aborts.load(Ordering::SeqCst)
    );
}

fn cli(addr: std::net::SocketAddr, args: &[&str], stdin: &str) -> (i32, String, String) {
    use std::io::Write as _;
    let mut child = std::process::Command::new(common::corekv_bin())
        .arg("cli")
        .arg("--addr")
        .arg(addr.to_string())
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn cli");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("cli output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_mput_mget_and_txn_from_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_server(dir.path(), &["--shards", "2"]);
    let a = server.addr;
    assert_eq!(cli(a, &["mput", "x", "1", "y", "2"], "").0, 0);
    let (code, out, _) = cli(a, &["mget", "x", "y"], "");
    assert_eq!((code, out.as_str()), (0, "1\n2\n"));
    let (code, out, _) = cli(a, &["mput", "x", "1", "y"], "");
    assert_eq!(code, 2, "odd pair count refused: {out}");

    let txn = r#"{"if": [{"key": "x", "equals": "1"}, {"key": "z", "absent": true}],
                  "then": [{"put": "x", "value": "10"}, {"delete": "y"}]}"#;
    let (code, out, err) = cli(a, &["txn"], txn);
    assert_eq!((code, out.as_str()), (0, "COMMITTED"), "{err}");
    let (code, out, _) = cli(a, &["mget", "x", "y"], "");
    assert_eq!((code, out.as_str()), (1, "10\n\n"), "y deleted, x updated");

    let (code, out, _) = cli(a, &["txn"], txn);
    assert_eq!((code, out.as_str()), (1, "CONDITION_FAILED 0"));

    let (code, _, err) = cli(a, &["txn"], r#"{"if": [{"key": "x"}]}"#);
    assert_eq!(code, 2);
    assert!(
        err.starts_with("INVALID_ARGUMENT") && err.contains("if[0]"),
        "{err}"
    );
    let (code, _, err) = cli(a, &["txn"], "not json");
    assert_eq!(code, 2);
    assert!(err.contains("not JSON"), "{err}");
}
