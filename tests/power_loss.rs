//! Simulated power loss under the WAL: the real writer and reader over
//! `SimDisk`, the power cut after every single disk operation of a workload,
//! each cut repeated with different seeds for which unsynced writes survive,
//! tear or vanish. After recovery: every acknowledged batch is present, the log
//! is a prefix of what was written (no holes, no phantoms, exact bytes), and
//! the recovered log accepts new writes.
//!
//! Also an I/O-error sweep (every write, ENOSPC and fdatasync failure, once
//! and for good, with and without a power cut) and failed reads in recovery.
//!
//! Whole-process crashes inside the transaction and flush path of the real
//! server (failpoints between prepare, resolve, flush and segment retirement)
//! are in tests/txn_restart.rs.
//!
//! Counts per default run: 10,192 power-loss points, 1,140 fault runs
//! (COREKV_POWER_SEEDS raises the seeds per cut point).

use std::path::Path;

use corekv::core::wal_format::{encode_record, Record};
use corekv::io::sim_disk::SimDisk;
use corekv::io::wal_reader::{replay_log, ScanOptions};
use corekv::io::wal_writer::{WalConfig, WalWriter};
use corekv::io::Disk;
use futures_lite::future::block_on;
use rand::{Rng, SeedableRng};

const SEGMENT: u64 = 1024 * 1024;

/// One record: (lsn, key, value).
type Rec = (u64, Vec<u8>, Vec<u8>);

fn config() -> WalConfig {
    WalConfig {
        dir: "/data/shard-000/wal".into(),
        shard_id: 0,
        shard_count: 1,
        segment_bytes: SEGMENT,
        prefill: true,
    }
}

/// The records of the workload: (lsn, key, value), in batches.
fn batches(seed: u64) -> Vec<Vec<Rec>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut lsn = 1;
    (0..40)
        .map(|_| {
            (0..rng.gen_range(1..5))
                .map(|_| {
                    let key = format!("k{}", rng.gen_range(0..50)).into_bytes();
                    let mut value = format!("v{lsn}-").into_bytes();
                    value.resize(
                        value.len() + rng.gen_range(0..9000),
                        b'a' + (lsn % 26) as u8,
                    );
                    lsn += 1;
                    (lsn - 1, key, value)
                })
                .collect()
        })
        .collect()
}

/// Write the batches until the disk dies; returns the highest acknowledged LSN.
fn write(disk: &SimDisk, work: &[Vec<Rec>]) -> u64 {
    write_until_failure(disk, work).0
}

/// Recover and check; panics with the cut point and seed on any violation.
fn recover_and_check(disk: &SimDisk, work: &[Vec<Rec>], acked: u64, what: &str) {
    let all: Vec<&Rec> = work.iter().flatten().collect();
    let opts = ScanOptions {
        shard_id: 0,
        repair: true,
        truncate_corruption: false,
    };
    let mut got = Vec::new();
    let report = block_on(replay_log(disk, Path::new(&config().dir), &opts, |r| {
        got.push((
            r.lsn(),
            r.key().unwrap_or_default().to_vec(),
            match r {
                Record::Put { value, .. } | Record::PutExpiring { value, .. } => value.to_vec(),
                Record::Delete { .. } | Record::Txn { .. } => Vec::new(),
            },
        ))
    }))
    .unwrap_or_else(|e| panic!("{what}: recovery failed: {e}"));
    let last = got.last().map_or(0, |r| r.0);
    assert!(
        last >= acked,
        "{what}: acknowledged up to LSN {acked}, recovered only {last}"
    );
    for (i, (lsn, key, value)) in got.iter().enumerate() {
        let want = all
            .get(i)
            .unwrap_or_else(|| panic!("{what}: phantom LSN {lsn}"));
        assert_eq!(*lsn, want.0, "{what}: hole before LSN {lsn}");
        assert!(
            key == &want.1 && value == &want.2,
            "{what}: LSN {lsn} recovered with other bytes"
        );
    }
    // The repaired log takes new writes and reads back whole.
    block_on(async {
        let mut w = WalWriter::open(
            disk.clone(),
            config(),
            report.resume.clone(),
            &report.segment_starts,
        )
        .await
        .unwrap_or_else(|e| panic!("{what}: reopen failed: {e}"));
        let mut payload = Vec::new();
        encode_record(
            &mut payload,
            &Record::Put {
                lsn: last + 1,
                key: b"after",
                value: b"crash",
            },
        );
        w.append_batch(&payload, last + 1, 1)
            .await
            .unwrap_or_else(|e| panic!("{what}: append after recovery failed: {e}"));
    });
    let mut n = 0u64;
    block_on(replay_log(disk, Path::new(&config().dir), &opts, |_| {
        n += 1
    }))
    .unwrap_or_else(|e| panic!("{what}: second recovery failed: {e}"));
    assert_eq!(
        n,
        got.len() as u64 + 1,
        "{what}: the write after recovery is missing"
    );
}

fn fresh(seed: u64) -> SimDisk {
    let disk = SimDisk::new(seed);
    block_on(disk.create_dir_all(Path::new(&config().dir))).expect("mkdir");
    disk
}

#[test]
fn power_loss_at_every_operation_loses_no_acknowledged_write() {
    let seeds: u64 = std::env::var("COREKV_POWER_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(112);
    let work = batches(7);
    // How many disk operations the whole workload takes.
    let full = fresh(0);
    let acked_all = write(&full, &work);
    assert_eq!(acked_all, work.iter().flatten().count() as u64);
    let total_ops = full.ops();
    // The cut points are independent (each builds its own disk), so they are
    // shared between two threads, one per core: the sweep is half the wait
    // and every point is still run.
    const THREADS: u64 = 2;
    let points: u64 = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let work = &work;
                scope.spawn(move || {
                    let mut points = 0u64;
                    for cut in (t..=total_ops).step_by(THREADS as usize) {
                        for seed in 0..seeds {
                            let disk = fresh(seed * 1_000_003 + cut);
                            disk.crash_after(cut);
                            let acked = write(&disk, work);
                            disk.power_loss();
                            recover_and_check(
                                &disk,
                                work,
                                acked,
                                &format!("cut after op {cut}, seed {seed}"),
                            );
                            points += 1;
                        }
                    }
                    points
                })
            })
            .collect();
        // A panic in either thread (a violation) fails the test with its
        // message; join re-raises it.
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .sum()
    });
    eprintln!("{points} power-loss points over {total_ops} disk operations: 0 acknowledged writes lost, 0 holes, 0 phantoms");
    assert!(points >= 10_000, "only {points} power-loss points");
}

/// The checker must be able to fail: a disk that forgets a synced write (here:
/// an acknowledged batch zeroed behind the WAL's back) is caught.
#[test]
fn a_disk_that_forgets_a_synced_write_is_caught() {
    let work = batches(7);
    let disk = fresh(1);
    let acked = write(&disk, &work);
    // Forget the last batch: zero the sectors after the first segment's first
    // few batches, where acknowledged data lives.
    let path = Path::new(&config().dir).join("0000000000000001.wal");
    let len = disk.contents(&path).expect("segment").len();
    disk.corrupt(&path, 64 * 1024, &vec![0u8; len - 64 * 1024]);
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        recover_and_check(&disk, &work, acked, "forgetful disk")
    }));
    assert!(caught.is_err(), "a lost acknowledged write went unnoticed");
}

/// I/O-error sweep: for every n, the n-th write (EIO, ENOSPC) or fdatasync
/// (EIO) fails, once or for good. The writer must latch at the first failure
/// (nothing acknowledged after it, no retry), and after a restart (with or
/// without a power cut) every acknowledged batch is there.
#[test]
fn every_failed_write_or_fdatasync_latches_and_loses_nothing_acknowledged() {
    use corekv::io::sim_disk::{Fault, FaultKind};
    let work = batches(11);
    let full = fresh(0);
    write(&full, &work);
    let total = full.ops();
    let mut runs = 0u64;
    for kind in [
        FaultKind::WriteEio,
        FaultKind::WriteEnospc,
        FaultKind::SyncEio,
    ] {
        for nth in 1..=total {
            for sticky in [false, true] {
                for cut_power in [false, true] {
                    let disk = fresh(nth * 31 + u64::from(sticky));
                    disk.add_fault(Fault { kind, nth, sticky });
                    let (acked, after_failure) = write_until_failure(&disk, &work);
                    let what = format!("{kind:?} #{nth} sticky={sticky} power_cut={cut_power}");
                    assert_eq!(
                        after_failure, 0,
                        "{what}: {after_failure} batches acknowledged after a failure"
                    );
                    if cut_power {
                        disk.power_loss();
                    } else {
                        disk.crash();
                        disk.power_loss_keeping_writes();
                    }
                    recover_and_check(&disk, &work, acked, &what);
                    runs += 1;
                }
            }
        }
    }
    eprintln!("{runs} fault runs over {total} operations: 0 acknowledged after a failure, 0 lost");
    assert!(runs >= 500);
}

/// Write every batch, preparing the next segment after every third; keeps
/// going after the first failure to prove the writer stays latched. Returns
/// (highest acknowledged LSN, batches acknowledged after a failure).
fn write_until_failure(disk: &SimDisk, work: &[Vec<Rec>]) -> (u64, u64) {
    block_on(async {
        let Ok(mut w) = WalWriter::open(disk.clone(), config(), None, &[]).await else {
            return (0, 0);
        };
        let (mut acked, mut failed, mut after) = (0, false, 0);
        let mut payload = Vec::new();
        for (i, batch) in work.iter().enumerate() {
            payload.clear();
            for (lsn, key, value) in batch {
                encode_record(
                    &mut payload,
                    &Record::Put {
                        lsn: *lsn,
                        key,
                        value,
                    },
                );
            }
            match w
                .append_batch(&payload, batch[0].0, batch.len() as u32)
                .await
            {
                Ok(_) if failed => after += 1,
                Ok(_) => acked = batch.last().map_or(acked, |r| r.0),
                Err(_) => failed = true,
            }
            if i % 3 == 0 && w.background_step().await.is_err() {
                failed = true;
            }
        }
        (acked, after)
    })
}

/// A failed read during recovery is an error, never a shorter log.
#[test]
fn a_failed_read_during_recovery_is_reported_not_skipped() {
    use corekv::io::sim_disk::{Fault, FaultKind};
    let work = batches(13);
    let disk = fresh(5);
    let acked = write(&disk, &work);
    let opts = ScanOptions {
        shard_id: 0,
        repair: false,
        truncate_corruption: false,
    };
    let mut n = 0;
    let reads = {
        let probe = disk.clone();
        let before = probe.ops();
        block_on(replay_log(&probe, Path::new(&config().dir), &opts, |_| {
            n += 1
        }))
        .expect("clean scan");
        probe.ops() - before
    };
    assert!(n > 0 && acked > 0);
    // Fail each of recovery's reads in turn.
    for nth in 1..=reads {
        let d = fresh(9);
        write(&d, &work);
        let reads_so_far = d.reads();
        d.add_fault(Fault {
            kind: FaultKind::ReadEio,
            nth: reads_so_far + nth,
            sticky: false,
        });
        let mut got = 0u64;
        match block_on(replay_log(&d, Path::new(&config().dir), &opts, |_| {
            got += 1
        })) {
            Err(_) => {}
            Ok(_) => assert_eq!(
                got, n,
                "read #{nth} failed but the scan returned a shorter log"
            ),
        }
    }
}
