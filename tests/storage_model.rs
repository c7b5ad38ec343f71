//! Model-based test of the storage engine: random sequences of put, delete,
//! get, scan, flush, compact and reopen against an embedded engine (real
//! files, real fdatasync) give the same answers as a `BTreeMap`.
//!
//! Memtables are tiny, so automatic flushes and compactions happen between the
//! explicit ones; proptest shrinks a failing sequence to a short one.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corekv::core::config::EngineConfig;
use corekv::shard::{Engine, ShardContext, ShardExit};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Put(u8, u16),
    Delete(u8),
    Get(u8),
    Scan(u8, u8, u32),
    Flush,
    Compact,
    Reopen,
}

#[derive(Debug, PartialEq)]
enum Answer {
    Done,
    Value(Option<Vec<u8>>),
    Existed(bool),
    Entries(Vec<(Vec<u8>, Vec<u8>)>),
}

fn key(k: u8) -> Vec<u8> {
    format!("key-{k:03}").into_bytes()
}

/// Values of varied sizes (up to ~3 KiB) whose bytes say which put made them.
fn value(k: u8, n: u16) -> Vec<u8> {
    let len = (usize::from(n) * 7) % 3000;
    let mut v = format!("{k}:{n}:").into_bytes();
    v.resize(v.len() + len, b'a' + (n % 26) as u8);
    v
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (0..60u8, any::<u16>()).prop_map(|(k, n)| Op::Put(k, n)),
        3 => (0..60u8).prop_map(Op::Delete),
        5 => (0..60u8).prop_map(Op::Get),
        2 => (0..60u8, 0..70u8, 0..30u32).prop_map(|(a, b, l)| Op::Scan(a, b, l)),
        1 => Just(Op::Flush),
        1 => Just(Op::Compact),
        1 => Just(Op::Reopen),
    ]
}

type Request = (Op, mpsc::Sender<Result<Answer, String>>);

/// An engine whose shard-0 service executes the requests it is sent.
struct Running {
    engine: Engine,
    tx: mpsc::Sender<Request>,
}

fn start(dir: &Path) -> Running {
    let mut config = EngineConfig::new(dir);
    config.shards = Some(1);
    config.wal_segment_bytes = 1024 * 1024;
    config.value_bytes_max = 64 * 1024;
    config.memtable_bytes = 64 * 1024;
    config.cache_bytes = 1024 * 1024;
    config.table_target_bytes = 64 * 1024;
    config.l0_trigger = 2;
    let (tx, rx) = mpsc::channel::<Request>();
    let rx = Arc::new(Mutex::new(rx));
    let engine = Engine::start(config, move |ctx: ShardContext| {
        let rx = rx.clone();
        async move {
            loop {
                let next = rx.lock().map_err(|e| e.to_string())?.try_recv();
                match next {
                    Ok((op, reply)) => {
                        let _ = reply.send(execute(&ctx, op).await);
                    }
                    Err(mpsc::TryRecvError::Empty) => {
                        if ctx.shutdown.is_set() {
                            return Ok(());
                        }
                        glommio::timer::sleep(Duration::from_micros(200)).await;
                    }
                    Err(mpsc::TryRecvError::Disconnected) => {
                        ctx.shutdown.wait().await;
                        return Ok(());
                    }
                }
            }
        }
    })
    .expect("engine starts");
    Running { engine, tx }
}

async fn execute(ctx: &ShardContext, op: Op) -> Result<Answer, String> {
    let e = |s: corekv::core::status::Status| s.name().to_string();
    Ok(match op {
        Op::Put(k, n) => {
            ctx.put(&key(k), &value(k, n)).await.map_err(e)?;
            Answer::Done
        }
        Op::Delete(k) => Answer::Existed(ctx.delete(&key(k)).await.map_err(e)?),
        Op::Get(k) => Answer::Value(ctx.get(&key(k)).await.map_err(e)?),
        Op::Scan(a, b, limit) => {
            let end = if b >= 60 { Vec::new() } else { key(b) };
            Answer::Entries(ctx.scan(&key(a), &end, limit).await.map_err(e)?)
        }
        Op::Flush => {
            ctx.flush_local().await?;
            Answer::Done
        }
        Op::Compact => {
            ctx.compact_local().await?;
            Answer::Done
        }
        Op::Reopen => unreachable!("handled by the test"),
    })
}

fn stop(r: Running) {
    drop(r.tx);
    r.engine.request_stop();
    let exits = r.engine.wait();
    assert!(exits.iter().all(|e| *e == ShardExit::Clean), "{exits:?}");
}

fn model_answer(model: &mut BTreeMap<Vec<u8>, Vec<u8>>, op: &Op) -> Answer {
    match *op {
        Op::Put(k, n) => {
            model.insert(key(k), value(k, n));
            Answer::Done
        }
        Op::Delete(k) => Answer::Existed(model.remove(&key(k)).is_some()),
        Op::Get(k) => Answer::Value(model.get(&key(k)).cloned()),
        Op::Scan(a, b, limit) => {
            let start = key(a);
            let entries = model
                .range(start..)
                .filter(|(k, _)| b >= 60 || **k < key(b))
                .take(limit as usize)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            Answer::Entries(entries)
        }
        Op::Flush | Op::Compact | Op::Reopen => Answer::Done,
    }
}

fn run_case(ops: &[Op]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut model = BTreeMap::new();
    let mut running = start(dir.path());
    for (i, op) in ops.iter().enumerate() {
        if let Op::Reopen = op {
            stop(running);
            running = start(dir.path());
            continue;
        }
        let (reply_tx, reply_rx) = mpsc::channel();
        running
            .tx
            .send((op.clone(), reply_tx))
            .expect("service alive");
        let got = reply_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("service answers")
            .map_err(|e| TestCaseError::fail(format!("op {i} {op:?} failed: {e}")))?;
        let want = model_answer(&mut model, op);
        prop_assert_eq!(got, want, "op {} {:?}", i, op);
    }
    // Everything survives a final reopen, read by a full scan.
    stop(running);
    let running = start(dir.path());
    let (reply_tx, reply_rx) = mpsc::channel();
    running
        .tx
        .send((Op::Scan(0, 60, 10_000), reply_tx))
        .expect("service alive");
    let got = reply_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("answer");
    stop(running);
    let want = Answer::Entries(model.into_iter().collect());
    prop_assert_eq!(
        got.map_err(TestCaseError::fail)?,
        want,
        "final state after reopen"
    );
    Ok(())
}

/// Cases per run: 24 by default, COREKV_MODEL_CASES for longer soaks; half
/// of them in each of the two functions below.
fn model_cases() -> u32 {
    std::env::var("COREKV_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24u32)
        .div_ceil(2)
}

// Two functions over the same property, each drawing its own random cases, so
// the two test threads run them side by side: a case spends most of its time
// waiting for fdatasync, and one function alone took 52 s of a CI run.
proptest! {
    #![proptest_config(ProptestConfig {
        cases: model_cases(),
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    })]

    #[test]
    fn storage_matches_a_btreemap(ops in proptest::collection::vec(op(), 1..250)) {
        run_case(&ops)?;
    }

    #[test]
    fn storage_matches_a_btreemap_second_half(ops in proptest::collection::vec(op(), 1..250)) {
        run_case(&ops)?;
    }
}

/// A fixed sequence that exercises every layer at once: values in a level-1
/// table, overwritten in level 0, deleted in the memtable, and re-put after a
/// compaction dropped the tombstone.
#[test]
fn layered_overwrites_and_tombstones() {
    let mut ops = Vec::new();
    for k in 0..60u8 {
        ops.push(Op::Put(k, 1000 + u16::from(k)));
    }
    ops.extend([Op::Flush, Op::Compact]);
    for k in (0..60u8).step_by(2) {
        ops.push(Op::Put(k, 2000 + u16::from(k)));
    }
    ops.push(Op::Flush);
    for k in (0..60u8).step_by(3) {
        ops.push(Op::Delete(k));
    }
    for k in 0..60u8 {
        ops.push(Op::Get(k));
    }
    ops.extend([Op::Scan(0, 60, 100), Op::Flush, Op::Compact, Op::Reopen]);
    for k in (0..60u8).step_by(6) {
        ops.push(Op::Put(k, 3000));
    }
    for k in 0..60u8 {
        ops.push(Op::Get(k));
    }
    ops.push(Op::Scan(5, 50, 100));
    run_case(&ops).unwrap();
}
