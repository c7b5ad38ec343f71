//! The native RMW operation (opcode 17) against a real server: concurrent
//! INCRs through the Rust client lose nothing, on both shards, in both
//! durability modes; every acknowledged INCR survives a SIGKILL; an INCR
//! racing a cross-shard transaction on the same key stays atomic; errors
//! and the other programs answer as docs/protocol.md says.

use crate::common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::start_server;
use corekv::core::hash::shard_for_key;
use corekv::core::rmw::{Program, Reply, SetCond};
use corekv::core::status::Status;
use corekv::core::txn_format::{Cond, Write};
use corekv::net::client::{ClientError, TxnResult};
use corekv::net::codec::Request;

/// `n` keys, alternately on shard 0 and shard 1 of 2.
fn keys_on_both_shards(n: usize) -> Vec<Vec<u8>> {
    let mut candidates = (0..).map(|i| format!("ctr-{i}").into_bytes());
    (0..n)
        .map(|i| {
            candidates
                .by_ref()
                .find(|k| usize::from(shard_for_key(k, 2).0) == i % 2)
                .unwrap()
        })
        .collect()
}

fn value_of(c: &mut corekv::net::client::Client, key: &[u8]) -> i64 {
    let v = c.get(key).expect("get").unwrap_or_else(|| b"0".to_vec());
    String::from_utf8(v).unwrap().parse().unwrap()
}

/// 4 clients × 400 pipelined INCRs (batches of 50) over 8 keys on both
/// shards: every key ends at exactly the number of INCRs sent to it.
fn concurrent_pipelined_incrs_lose_nothing(durability: &str) {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &["--shards", "2", "--durability", durability]);
    let keys = Arc::new(keys_on_both_shards(8));
    let (clients, per_client, depth) = (4, 400, 50);
    let threads: Vec<_> = (0..clients)
        .map(|t| {
            let keys = keys.clone();
            let mut c = server.client();
            std::thread::spawn(move || {
                let mut program = Vec::new();
                Program::IncrBy(1).encode(&mut program);
                let mut sent = 0;
                while sent < per_client {
                    for i in 0..depth {
                        let key = &keys[(t + sent + i) % keys.len()];
                        c.queue(&Request::Rmw {
                            key,
                            program: &program,
                        });
                    }
                    c.flush().expect("flush");
                    for _ in 0..depth {
                        let r = c.recv().expect("reply");
                        assert_eq!(r.status, Status::Ok, "{r:?}");
                    }
                    sent += depth;
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("incr thread");
    }
    let mut c = server.client();
    let total: i64 = keys.iter().map(|k| value_of(&mut c, k)).sum();
    assert_eq!(
        total,
        (clients * per_client) as i64,
        "an increment was lost"
    );
    for k in keys.iter() {
        assert_eq!(
            value_of(&mut c, k),
            (clients * per_client / keys.len()) as i64,
            "{}",
            String::from_utf8_lossy(k)
        );
    }
}

#[test]
fn concurrent_incrs_lose_nothing_sync() {
    concurrent_pipelined_incrs_lose_nothing("sync");
}

#[test]
fn concurrent_incrs_lose_nothing_async() {
    concurrent_pipelined_incrs_lose_nothing("async");
}

/// Clients INCR until the server is SIGKILLed: after the restart each
/// key's value is at least the INCRs acknowledged (sync durability: an
/// acknowledged INCR is durable) and at most the INCRs sent.
#[test]
fn acknowledged_incrs_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &["--shards", "2"]);
    let keys = keys_on_both_shards(4);
    let acked: Arc<Vec<AtomicU64>> = Arc::new(keys.iter().map(|_| AtomicU64::new(0)).collect());
    let sent: Arc<Vec<AtomicU64>> = Arc::new(keys.iter().map(|_| AtomicU64::new(0)).collect());
    let threads: Vec<_> = (0..keys.len())
        .map(|i| {
            let (acked, sent, key) = (acked.clone(), sent.clone(), keys[i].clone());
            let mut c = server.client();
            std::thread::spawn(move || loop {
                sent[i].fetch_add(1, Ordering::SeqCst);
                match c.incr_by(&key, 1) {
                    Ok(n) => {
                        // Each key has one writer: the value is its count.
                        assert_eq!(n as u64, acked[i].fetch_add(1, Ordering::SeqCst) + 1);
                    }
                    Err(_) => return,
                }
            })
        })
        .collect();
    // Poll until every key has acknowledged increments, then kill.
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.iter().any(|a| a.load(Ordering::SeqCst) < 50) {
        assert!(Instant::now() < deadline, "INCRs made no progress");
        std::thread::sleep(Duration::from_millis(10));
    }
    server.kill();
    for t in threads {
        t.join().expect("incr thread ends when the server dies");
    }
    let server = start_server(dir.path(), &["--shards", "2"]);
    let mut c = server.client();
    for (i, k) in keys.iter().enumerate() {
        let v = value_of(&mut c, k) as u64;
        let (a, s) = (
            acked[i].load(Ordering::SeqCst),
            sent[i].load(Ordering::SeqCst),
        );
        assert!(
            a <= v && v <= s,
            "key {i}: {v} after restart, {a} acknowledged, {s} sent"
        );
    }
    // And INCR continues from the recovered value.
    assert_eq!(c.incr_by(&keys[0], 1).unwrap(), value_of(&mut c, &keys[0]));
}

/// One thread INCRs a key; another increments the same key by a
/// cross-shard transaction (condition: the value it read; writes: the
/// value + 1 and a key on the other shard). Neither may overwrite the
/// other's increment: the final value is the sum of both counts.
#[test]
fn incr_racing_a_cross_shard_txn_stays_atomic() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &["--shards", "2"]);
    let key = b"shared".to_vec();
    let other = (0..)
        .map(|i| format!("other-{i}").into_bytes())
        .find(|k| shard_for_key(k, 2) != shard_for_key(&key, 2))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let incrs = {
        let (mut c, key, stop) = (server.client(), key.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) || n < 200 {
                c.incr_by(&key, 1).expect("incr");
                n += 1;
            }
            n
        })
    };
    let mut c = server.client();
    let mut committed = 0u64;
    let mut failed = 0u64;
    while committed < 200 {
        let cur = c.get(&key).unwrap();
        let next = cur.as_deref().map_or(0, |v| {
            std::str::from_utf8(v).unwrap().parse::<i64>().unwrap()
        }) + 1;
        let next = next.to_string();
        let cond = match &cur {
            Some(v) => Cond::Equals(&key, v),
            None => Cond::Absent(&key),
        };
        let writes = [
            Write::Put(&key, next.as_bytes()),
            Write::Put(&other, next.as_bytes()),
        ];
        match c.txn(&[cond], &writes) {
            Ok(TxnResult::Committed) => committed += 1,
            Ok(TxnResult::ConditionFailed(_)) => failed += 1,
            Err(ClientError::Status {
                status: Status::TxnAborted | Status::LockTimeout,
                ..
            }) => failed += 1,
            Err(e) => panic!("txn: {e}"),
        }
    }
    stop.store(true, Ordering::SeqCst);
    let n = incrs.join().expect("incr thread");
    assert_eq!(
        value_of(&mut c, &key) as u64,
        n + committed,
        "{n} INCRs and {committed} transactions ({failed} retried)"
    );
}

/// Each program's reply and errors, as docs/protocol.md "RMW body" says.
#[test]
fn programs_answer_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &["--shards", "2", "--value-bytes-max", "65536"]);
    let mut c = server.client();
    assert_eq!(c.incr_by(b"n", 5).unwrap(), 5);
    assert_eq!(c.incr_by(b"n", -7).unwrap(), -2);
    c.put(b"s", b"10.5").unwrap();
    let e = c.incr_by(b"s", 1).unwrap_err();
    assert_eq!(e.name(), "INVALID_ARGUMENT");
    assert_eq!(e.message(), "value is not an integer or out of range");
    c.put(b"max", i64::MAX.to_string().as_bytes()).unwrap();
    let e = c.incr_by(b"max", 1).unwrap_err();
    assert_eq!(e.message(), "increment or decrement would overflow");
    assert_eq!(
        c.rmw(b"s", &Program::IncrByFloat(0.1)).unwrap(),
        Reply::Bulk(b"10.6".to_vec())
    );
    assert_eq!(c.append(b"a", b"ab").unwrap(), 2);
    assert_eq!(c.append(b"a", b"cd").unwrap(), 4);
    let e = c.append(b"a", &vec![b'x'; 65536]).unwrap_err();
    assert_eq!(e.name(), "INVALID_ARGUMENT", "{e:?}");
    assert_eq!(c.get(b"a").unwrap().as_deref(), Some(&b"abcd"[..]));
    let r = c
        .rmw(
            b"r",
            &Program::SetRange {
                offset: 2,
                bytes: b"z",
            },
        )
        .unwrap();
    assert_eq!(r, Reply::Int(3));
    assert_eq!(c.get(b"r").unwrap().as_deref(), Some(&b"\0\0z"[..]));
    assert_eq!(c.get_set(b"g", b"1").unwrap(), None);
    assert_eq!(c.get_set(b"g", b"2").unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(c.get_del(b"g").unwrap().as_deref(), Some(&b"2"[..]));
    assert_eq!(c.get_del(b"g").unwrap(), None);
    assert_eq!(c.get(b"g").unwrap(), None);
    let set = |cond, get| Program::Set {
        value: b"v",
        cond,
        get,
        keep_ttl: false,
        expires_at_ms: 0,
    };
    assert_eq!(c.rmw(b"x", &set(SetCond::Xx, false)).unwrap(), Reply::Nil);
    assert_eq!(c.rmw(b"x", &set(SetCond::Nx, false)).unwrap(), Reply::Ok);
    assert_eq!(
        c.rmw(b"x", &set(SetCond::Nx, true)).unwrap(),
        Reply::Bulk(b"v".to_vec())
    );
    // A program that does not decode is refused; the connection stays.
    c.queue(&Request::Rmw {
        key: b"k",
        program: &[99],
    });
    c.flush().unwrap();
    let r = c.recv().unwrap();
    assert_eq!(r.status, Status::InvalidArgument);
    c.ping().unwrap();
}

/// `corekv cli incr` and `append` print the new value and length.
#[test]
fn cli_incr_and_append() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &[]);
    let addr = server.addr.to_string();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(common::corekv_bin())
            .args(["cli", "--addr", &addr])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        )
    };
    assert_eq!(cli(&["incr", "c"]).1, "1");
    assert_eq!(cli(&["incr", "c", "41"]).1, "42");
    assert_eq!(cli(&["incr", "c", "-2"]).1, "40");
    assert_eq!(cli(&["append", "c", "x"]).1, "3");
    let (code, _, err) = cli(&["incr", "c"]);
    assert_eq!(code, Some(2));
    assert_eq!(
        err,
        "INVALID_ARGUMENT: value is not an integer or out of range"
    );
}

/// The shard's own atomicity, without the network: several tasks of one
/// shard INCR a few keys while a filler's writes flush the memtable again
/// and again, so the counters are often only in a table and an INCR's
/// read waits for a block (the simulated disk yields on every I/O). Those
/// waits interleave the tasks: without the key lock `shard::rmw` holds
/// across the read, two INCRs of one key read the same value and one
/// increment is lost.
fn shard_tasks_lose_no_increment(durability: corekv::core::types::Durability) {
    use corekv::core::config::EngineConfig;
    use corekv::core::types::ShardId;
    use corekv::io::sim_disk::SimDisk;
    use corekv::shard::clock::GlommioClock;
    use corekv::shard::maintenance::run_flushes;
    use corekv::shard::ops::{OpBatch, OpKind, ReplyBatch};
    use corekv::shard::recovery::recover;
    use corekv::shard::wake::Event;
    use std::cell::RefCell;
    use std::rc::Rc;

    const KEYS: usize = 4;
    const TASKS: usize = 6;
    const INCRS: usize = 150;
    glommio::LocalExecutor::default().run(async move {
        let disk = SimDisk::new(7);
        disk.set_interleave(true);
        let mut cfg = EngineConfig::new("/data");
        cfg.durability = durability;
        cfg.wal_segment_bytes = 1024 * 1024;
        cfg.memtable_bytes = 3 * 1024;
        cfg.cache_bytes = 64 * 1024;
        cfg.table_target_bytes = 16 * 1024;
        // No compaction runs here: level 0 must never count as full, or
        // flushes would wait for one and writes meet OVERLOADED.
        cfg.l0_trigger = 100_000;
        let r = recover(disk, &cfg, ShardId(0), 1)
            .await
            .map_err(|e| e.to_string())
            .expect("recover");
        let (state, mut wal) = (r.state, r.wal);
        let flusher = {
            let state = state.clone();
            glommio::spawn_local(async move {
                state
                    .run_wal_flusher(&mut wal, &GlommioClock::default())
                    .await;
            })
            .detach()
        };
        let stop = Rc::new(Event::default());
        let flushes = glommio::spawn_local(run_flushes(state.clone(), stop.clone())).detach();
        let done = Rc::new(std::cell::Cell::new(false));
        let filler = {
            let (state, done) = (state.clone(), done.clone());
            glommio::spawn_local(async move {
                let mut i = 0u64;
                while !done.get() {
                    let mut ops = OpBatch::default();
                    ops.push(
                        OpKind::Put,
                        format!("filler-{}", i % 64).as_bytes(),
                        &[b'f'; 300],
                    );
                    let mut out = ReplyBatch::default();
                    state.execute(&ops, &mut out).await;
                    state.settle(&mut out).await;
                    i += 1;
                    // A write that never waits would starve the other tasks.
                    futures_lite::future::yield_now().await;
                }
                i
            })
        };
        let counts = Rc::new(RefCell::new([0u64; KEYS]));
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let (state, counts) = (state.clone(), counts.clone());
                glommio::spawn_local(async move {
                    let mut program = Vec::new();
                    Program::IncrBy(1).encode(&mut program);
                    let mut x = t as u64 * 7919 + 1;
                    let mut done = 0;
                    while done < INCRS {
                        x = x
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        let k = (x >> 33) as usize % KEYS;
                        let mut ops = OpBatch::default();
                        ops.push(OpKind::Rmw, format!("n{k}").as_bytes(), &program);
                        let mut out = ReplyBatch::default();
                        state.execute(&ops, &mut out).await;
                        state.settle(&mut out).await;
                        let (status, body) = out.get(0);
                        match status {
                            Status::Ok => {
                                counts.borrow_mut()[k] += 1;
                                done += 1;
                            }
                            // Refused before anything was logged.
                            Status::Overloaded => {}
                            other => panic!("INCR: {other:?} {body:?}"),
                        }
                        futures_lite::future::yield_now().await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await;
        }
        done.set(true);
        let fills = filler.await;
        assert!(fills > 0);
        let tables = state.lsm.version().l0.len() + state.lsm.version().l1.len();
        assert!(tables > 0, "the memtable never flushed");
        for k in 0..KEYS {
            let mut ops = OpBatch::default();
            ops.push(OpKind::Get, format!("n{k}").as_bytes(), b"");
            let mut out = ReplyBatch::default();
            state.execute(&ops, &mut out).await;
            state.settle(&mut out).await;
            let (status, body) = out.get(0);
            assert_eq!(status, Status::Ok);
            assert_eq!(
                std::str::from_utf8(body).unwrap(),
                counts.borrow()[k].to_string(),
                "key n{k}: an increment was lost"
            );
        }
        stop.set();
        drop((flusher, flushes));
    });
}

#[test]
fn shard_tasks_lose_no_increment_sync() {
    shard_tasks_lose_no_increment(corekv::core::types::Durability::Sync);
}

#[test]
fn shard_tasks_lose_no_increment_async() {
    shard_tasks_lose_no_increment(corekv::core::types::Durability::Async);
}
