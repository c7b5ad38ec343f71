//! Transactions across crashes of the whole process: the bank invariant over
//! SIGKILL/restart cycles, and a crash at every step of two-phase commit
//! (failpoints, compiled into debug builds only) after which every transaction
//! is all-or-nothing.

use crate::common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{start_server, try_start_server_env};
use corekv::bench::bank;
use corekv::core::hash::shard_for_key;
use corekv::net::client::{Client, ClientError};
use rand::{Rng, SeedableRng};

const ACCOUNTS: u64 = 16;

/// Transfers from several connections and snapshot checks from another, then
/// SIGKILL at a random moment; after every restart the total is intact and no
/// balance is negative. Twenty cycles.
#[test]
fn bank_invariant_survives_sigkill_cycles() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = ["--shards", "2", "--lock-timeout-ms", "300"];
    let server = start_server(dir.path(), &args);
    bank::load(&mut server.client(), ACCOUNTS).expect("load accounts");
    drop(server);
    let keys = bank::account_keys(ACCOUNTS);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut committed_total = 0u64;
    let mut checks_total = 0u64;
    for cycle in 0..20 {
        let server = start_server(dir.path(), &args);
        let mut checker = server.client();
        let refs: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
        let values = checker.mget(&refs).expect("snapshot after restart");
        if let Err(v) = bank::check_values(&keys, &values) {
            panic!("cycle {cycle}: after restart: {v}");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let violation = Arc::new(Mutex::new(None::<String>));
        let movers: Vec<_> = (0..4)
            .map(|i| {
                let mut c = server.client();
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut r = rand::rngs::StdRng::seed_from_u64(cycle * 100 + i);
                    let mut report = bank::BankReport::default();
                    while !stop.load(Ordering::SeqCst) {
                        if bank::transfer(&mut c, &mut r, ACCOUNTS, &mut report).is_err() {
                            break; // the server was killed
                        }
                    }
                    report.transfers
                })
            })
            .collect();
        let watcher = {
            let (stop, violation, keys) = (stop.clone(), violation.clone(), keys.clone());
            std::thread::spawn(move || {
                let refs: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
                let mut checks = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let Ok(values) = checker.mget(&refs) else {
                        break;
                    };
                    if let Err(v) = bank::check_values(&keys, &values) {
                        *violation.lock().expect("lock") = Some(v);
                        break;
                    }
                    checks += 1;
                }
                checks
            })
        };
        std::thread::sleep(Duration::from_millis(rng.gen_range(150..400)));
        server.kill();
        stop.store(true, Ordering::SeqCst);
        for m in movers {
            committed_total += m.join().expect("mover");
        }
        checks_total += watcher.join().expect("watcher");
        let seen = violation.lock().expect("lock").take();
        if let Some(v) = seen {
            panic!("cycle {cycle}: during the run: {v}");
        }
    }
    let server = start_server(dir.path(), &args);
    bank::check(&mut server.client(), ACCOUNTS).expect("after the last restart");
    eprintln!(
        "20 cycles: {committed_total} transfers acknowledged, {checks_total} snapshot checks"
    );
    assert!(committed_total > 100, "the transfers did run");
    assert!(checks_total > 20, "the checks did run");
}

/// A key with `prefix` owned by `shard` of `shards`.
fn key_on(prefix: &str, shard: u16, shards: u16) -> Vec<u8> {
    (0..)
        .map(|i| format!("{prefix}~{i}").into_bytes())
        .find(|k| shard_for_key(k, shards).0 == shard)
        .expect("some key lands on every shard")
}

/// Transaction `i` of a writer: one key on each of the `shards` shards, the
/// same value in all.
fn group(writer: usize, i: u64, shards: u16) -> Vec<Vec<u8>> {
    (0..shards)
        .map(|s| key_on(&format!("w{writer}-{i}-{s}"), s, shards))
        .collect()
}

struct Attempts {
    shards: u16,
    /// (writer, i, acknowledged)
    sent: Vec<(usize, u64, bool)>,
}

/// Run MPUTs over every shard from 4 connections until the server dies.
fn write_until_crash(addr: std::net::SocketAddr, shards: u16) -> Attempts {
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let attempts = attempts.clone();
            std::thread::spawn(move || {
                let Ok(mut c) = Client::connect(addr) else {
                    return;
                };
                let _ = c.set_timeout(Some(Duration::from_secs(20)));
                for i in 0.. {
                    let keys = group(w, i, shards);
                    let v = format!("v{w}-{i}");
                    let pairs: Vec<(&[u8], &[u8])> =
                        keys.iter().map(|k| (&k[..], v.as_bytes())).collect();
                    let acked = c.mput(&pairs);
                    let ok = acked.is_ok();
                    attempts.lock().expect("lock").push((w, i, ok));
                    match acked {
                        Ok(()) => {}
                        Err(ClientError::Status { .. }) => {}
                        Err(_) => return, // connection lost: the server died
                    }
                }
            })
        })
        .collect();
    for w in writers {
        let _ = w.join();
    }
    let sent = attempts.lock().expect("lock").clone();
    Attempts { shards, sent }
}

/// Every attempted transaction is all-or-nothing, every acknowledged one is there.
fn check_groups(client: &mut Client, attempts: &Attempts) -> (usize, usize) {
    let (mut present, mut absent) = (0, 0);
    for &(w, i, acked) in &attempts.sent {
        let keys = group(w, i, attempts.shards);
        let refs: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
        let got = client.mget(&refs).expect("read group");
        let v = format!("v{w}-{i}").into_bytes();
        if got.iter().all(|g| g.as_ref() == Some(&v)) {
            present += 1;
        } else if got.iter().all(Option::is_none) {
            assert!(!acked, "acknowledged transaction w{w}-{i} was lost");
            absent += 1;
        } else {
            panic!("transaction w{w}-{i} is half applied: {got:?}");
        }
    }
    (present, absent)
}

fn crash_at(point: &str, at: u32, shards: u16) -> (tempfile::TempDir, Attempts) {
    let dir = tempfile::tempdir().expect("tempdir");
    let fp = format!("{point}@{at}");
    let n = shards.to_string();
    let server = try_start_server_env(dir.path(), &["--shards", &n], &[("COREKV_FAILPOINT", &fp)])
        .expect("server starts");
    let attempts = write_until_crash(server.addr, shards);
    let started = Instant::now();
    let mut server = server;
    let status = server.child.wait().expect("wait for the crash");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the server did not crash at {point}"
    );
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(libc::SIGABRT),
        "crashed at the failpoint: {status:?}"
    );
    (dir, attempts)
}

/// Restart without the failpoint and check every transaction.
fn restart_and_check(dir: &tempfile::TempDir, attempts: &Attempts) -> (usize, usize) {
    let n = attempts.shards.to_string();
    let server = start_server(dir.path(), &["--shards", &n]);
    check_groups(&mut server.client(), attempts)
}

#[test]
fn crash_after_prepare_aborts_the_transaction() {
    let (dir, attempts) = crash_at("txn-after-prepare", 25, 2);
    let (present, absent) = restart_and_check(&dir, &attempts);
    assert!(present >= 20, "{present} present");
    assert!(absent >= 1, "the transaction prepared at the crash is gone");
}

/// Three shards: two remote participants, so the crash can leave one prepared
/// and the other not.
#[test]
fn crash_after_prepare_on_some_participants_aborts_the_transaction() {
    let (dir, attempts) = crash_at("txn-after-prepare", 41, 3);
    let (present, absent) = restart_and_check(&dir, &attempts);
    assert!(present >= 15, "{present} present");
    assert!(absent >= 1, "the transaction prepared at the crash is gone");
}

#[test]
fn crash_after_decision_commits_the_transaction() {
    let (dir, attempts) = crash_at("txn-after-decision", 25, 2);
    let (present, _) = restart_and_check(&dir, &attempts);
    // The decided transaction was never acknowledged, yet it must be there.
    assert!(present >= 25, "{present} present");
}

#[test]
fn crash_after_partial_apply_completes_the_transaction() {
    let (dir, attempts) = crash_at("txn-after-partial-apply", 25, 2);
    let (present, _) = restart_and_check(&dir, &attempts);
    assert!(present >= 25, "{present} present");
}

/// Three shards: one participant applied its part, the other not yet.
#[test]
fn crash_after_one_of_two_participants_applied_completes_the_transaction() {
    let (dir, attempts) = crash_at("txn-after-partial-apply", 41, 3);
    let (present, _) = restart_and_check(&dir, &attempts);
    assert!(present >= 15, "{present} present");
}

/// A crash after the decision leaves prepared participants; the restart
/// crashes again while settling them; the third start settles them.
#[test]
fn crash_during_recovery_is_recovered() {
    let (dir, attempts) = crash_at("txn-after-decision", 25, 2);
    let again = try_start_server_env(
        dir.path(),
        &["--shards", "2"],
        &[("COREKV_FAILPOINT", "txn-during-recovery")],
    );
    // Either recovery had something to settle and crashed, or it did not.
    let crashed = match again {
        Ok(mut s) => {
            let status = s.child.wait().expect("wait");
            !status.success()
        }
        Err(stderr) => stderr.contains("failpoint txn-during-recovery reached"),
    };
    assert!(
        crashed,
        "recovery had a transaction to settle and crashed doing so"
    );
    let (present, _) = restart_and_check(&dir, &attempts);
    assert!(present >= 25, "{present} present");
}
