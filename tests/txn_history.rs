//! Histories recorded from concurrent clients of a real 2-shard server are
//! strictly serializable (checked by `corekv::check::history`), and the same
//! history with one observation altered is rejected, so the check can fail.

use crate::common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::start_server;
use corekv::check::history::{self, CheckError, Cond, History, Op, OpKind, Outcome, Write};
use corekv::core::hash::shard_for_key;
use corekv::core::txn_format as wire;
use corekv::net::client::{ClientError, TxnResult};
use rand::{Rng, SeedableRng};

/// Four keys, two on each shard.
fn keys() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for shard in [0u16, 0, 1, 1] {
        let k = (0..)
            .map(|i| format!("h{i}").into_bytes())
            .find(|k| shard_for_key(k, 2).0 == shard && !out.contains(k))
            .expect("keys on every shard");
        out.push(k);
    }
    out
}

fn record(server: &common::Server, clients: u32, ops_each: u32) -> History {
    let keys = Arc::new(keys());
    let origin = Instant::now();
    let ops = Arc::new(Mutex::new(Vec::new()));
    let mut setup = server.client();
    let initial: BTreeMap<Vec<u8>, Vec<u8>> =
        keys.iter().map(|k| (k.clone(), b"init".to_vec())).collect();
    let pairs: Vec<(&[u8], &[u8])> = initial.iter().map(|(k, v)| (&k[..], &v[..])).collect();
    setup.mput(&pairs).expect("initial values");
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let (keys, ops) = (keys.clone(), ops.clone());
            let mut client = server.client();
            std::thread::spawn(move || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(u64::from(c) + 1);
                let now = || origin.elapsed().as_nanos() as u64;
                for n in 0..ops_each {
                    let k = |i: usize| keys[i].clone();
                    let (a, b) = (rng.gen_range(0..4), rng.gen_range(0..4));
                    let value = format!("c{c}-{n}").into_bytes();
                    let invoke = now();
                    let (kind, outcome) = match rng.gen_range(0..10) {
                        0..=2 => match client.get(&keys[a]) {
                            Ok(v) => (
                                OpKind::Get {
                                    key: k(a),
                                    observed: v,
                                },
                                Outcome::Ok,
                            ),
                            Err(e) => (
                                OpKind::Get {
                                    key: k(a),
                                    observed: None,
                                },
                                failed(&e),
                            ),
                        },
                        3..=4 => {
                            let r = client.put(&keys[a], &value);
                            let o = r.map_or_else(|e| failed(&e), |()| Outcome::Ok);
                            (
                                OpKind::Put {
                                    key: k(a),
                                    value: value.clone(),
                                },
                                o,
                            )
                        }
                        5..=7 => {
                            // Compare-and-set over two keys, usually on two shards.
                            let b = if a == b { (a + 2) % 4 } else { b };
                            let seen = client.mget(&[&keys[a], &keys[b]]);
                            let Ok(seen) = seen else {
                                continue;
                            };
                            let conds = vec![
                                match &seen[0] {
                                    Some(v) => Cond::Equals(k(a), v.clone()),
                                    None => Cond::Absent(k(a)),
                                },
                                match &seen[1] {
                                    Some(v) => Cond::Equals(k(b), v.clone()),
                                    None => Cond::Absent(k(b)),
                                },
                            ];
                            let writes = vec![
                                Write::Put(k(a), value.clone()),
                                Write::Put(k(b), value.clone()),
                            ];
                            let wc: Vec<wire::Cond<'_>> = conds
                                .iter()
                                .map(|c| match c {
                                    Cond::Equals(k, v) => wire::Cond::Equals(k, v),
                                    Cond::Absent(k) => wire::Cond::Absent(k),
                                    Cond::Present(k) => wire::Cond::Present(k),
                                })
                                .collect();
                            let ww = [
                                wire::Write::Put(&keys[a], &value),
                                wire::Write::Put(&keys[b], &value),
                            ];
                            let invoke = now();
                            let o = match client.txn(&wc, &ww) {
                                Ok(TxnResult::Committed) => Outcome::Ok,
                                Ok(TxnResult::ConditionFailed(i)) => {
                                    Outcome::ConditionFailed(i as usize)
                                }
                                Err(e) => failed(&e),
                            };
                            let complete = (o != Outcome::Unknown).then(now);
                            ops.lock().expect("lock").push(Op {
                                client: c,
                                invoke,
                                complete,
                                kind: OpKind::Txn { conds, writes },
                                outcome: o,
                            });
                            continue;
                        }
                        _ => {
                            let all: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
                            match client.mget(&all) {
                                Ok(v) => (
                                    OpKind::Mget {
                                        keys: keys.to_vec(),
                                        observed: v,
                                    },
                                    Outcome::Ok,
                                ),
                                Err(e) => (
                                    OpKind::Mget {
                                        keys: keys.to_vec(),
                                        observed: vec![None; 4],
                                    },
                                    failed(&e),
                                ),
                            }
                        }
                    };
                    let complete = (outcome != Outcome::Unknown).then(now);
                    ops.lock().expect("lock").push(Op {
                        client: c,
                        invoke,
                        complete,
                        kind,
                        outcome,
                    });
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
    let mut ops = ops.lock().expect("lock").clone();
    ops.sort_by_key(|o| o.invoke);
    History { initial, ops }
}

fn failed(e: &ClientError) -> Outcome {
    match e {
        ClientError::Status { .. } => Outcome::Failed,
        _ => Outcome::Unknown,
    }
}

#[test]
fn recorded_histories_are_strictly_serializable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_server(dir.path(), &["--shards", "2"]);
    for round in 0..3 {
        let h = record(&server, 6, 30);
        let txns = h
            .ops
            .iter()
            .filter(|o| matches!(o.kind, OpKind::Txn { .. }) && o.outcome == Outcome::Ok)
            .count();
        assert!(
            txns >= 5,
            "round {round}: only {txns} committed transactions"
        );
        let started = Instant::now();
        if let Err(e) = history::check(&h) {
            panic!(
                "round {round}: corekv's history was rejected: {e}\n{:#?}",
                h.ops
            );
        }
        eprintln!(
            "round {round}: {} ops ({txns} committed txns) checked in {:?}",
            h.ops.len(),
            started.elapsed()
        );
        assert!(started.elapsed() < Duration::from_secs(60));

        // The same history with one snapshot observation changed must fail:
        // the check is not vacuous.
        let mut bad = h.clone();
        let i = bad
            .ops
            .iter()
            .position(|o| matches!(o.kind, OpKind::Mget { .. }) && o.outcome == Outcome::Ok)
            .expect("some snapshot read");
        if let OpKind::Mget { observed, .. } = &mut bad.ops[i].kind {
            observed[0] = Some(b"a value nobody wrote".to_vec());
        }
        assert!(
            matches!(history::check(&bad), Err(CheckError::Violation(_))),
            "a forged observation was accepted"
        );
    }
}
