//! A flush or a compaction that fails at any write or fdatasync (a full
//! disk, an I/O error) leaves no table file that the stored manifest does not
//! name: it removes what it wrote, also when the table was complete and only
//! the manifest naming it could not be stored. A clean stop after a full
//! disk then leaves nothing for `verify` to clean up (tests/disk_full.rs
//! found two such tables when the manifest's own write hit the full disk).
//! The engine's own code over the simulated disk, every fault point swept.

use std::path::Path;

use corekv::io::manifest::load_manifest;
use corekv::io::sim_disk::{Fault, FaultKind, SimDisk};
use corekv::io::table_file::table_file_name;
use corekv::io::Disk;
use corekv::shard::lsm::compaction::compact;
use corekv::shard::lsm::{Lsm, LsmConfig};
use futures_lite::future::block_on;

const SHARD_DIR: &str = "/data/shard-0";

fn config() -> LsmConfig {
    LsmConfig {
        memtable_bytes: 1 << 20,
        cache_bytes: 1 << 20,
        table_target_bytes: 8 * 1024,
        l0_trigger: 2,
    }
}

/// Fill the memtable with `n` keys from `lsn` on and freeze it.
fn fill(lsm: &Lsm<SimDisk>, lsn: u64, n: u64) {
    for i in 0..n {
        let key = format!("key{:05}", (i * 7919 + lsn) % 2000).into_bytes();
        lsm.apply(key, Some(vec![b'v'; 300]), lsn + i);
    }
    assert!(lsm.freeze_now());
}

/// Every table file on the disk is one the stored manifest names.
async fn no_unnamed_tables(disk: &SimDisk, what: &str) {
    let dir = Path::new(SHARD_DIR);
    let named: Vec<String> = load_manifest(disk, dir, 0)
        .await
        .expect("manifest readable")
        .map(|m| m.tables.iter().map(|t| table_file_name(t.id)).collect())
        .unwrap_or_default();
    let on_disk = disk
        .list_dir(&dir.join("tables"))
        .await
        .expect("list tables");
    let unnamed: Vec<&String> = on_disk.iter().filter(|n| !named.contains(n)).collect();
    assert!(
        unnamed.is_empty(),
        "{what}: table files the manifest does not name: {unnamed:?} (named: {named:?})"
    );
}

/// Two flushes, then a compaction of their tables; the fault, if any, is
/// armed at the `nth` operation of its kind. Returns how many operations of
/// that kind the run made, and whether a step failed.
fn run(kind: FaultKind, nth: Option<u64>) -> (u64, bool) {
    let disk = SimDisk::new(nth.unwrap_or(0));
    block_on(async {
        let lsm = Lsm::open(disk.clone(), Path::new(SHARD_DIR), 0, config())
            .await
            .expect("open");
        let before = disk.op_count(kind);
        if let Some(nth) = nth {
            disk.add_fault(Fault {
                kind,
                nth: before + nth,
                sticky: true,
            });
        }
        let mut failed = false;
        for (step, lsn) in [(1u64, 1u64), (2, 1001)] {
            fill(&lsm, lsn, 400);
            if let Err(e) = lsm.flush_frozen().await {
                failed = true;
                no_unnamed_tables(&disk, &format!("{kind:?} #{nth:?}, flush {step}: {e}")).await;
                break;
            }
        }
        if !failed {
            if let Err(e) = compact(&lsm, 2).await {
                failed = true;
                no_unnamed_tables(&disk, &format!("{kind:?} #{nth:?}, compaction: {e}")).await;
            }
        }
        (disk.op_count(kind) - before, failed)
    })
}

#[test]
fn a_failed_flush_or_compaction_leaves_no_unnamed_table() {
    let mut faults = 0;
    for kind in [
        FaultKind::WriteEnospc,
        FaultKind::WriteEio,
        FaultKind::SyncEio,
    ] {
        let (total, failed) = run(kind, None);
        assert!(
            !failed && total > 3,
            "{kind:?}: the clean run made {total} operations"
        );
        for nth in 1..=total {
            let (_, failed) = run(kind, Some(nth));
            assert!(failed, "{kind:?} #{nth}: the fault did not fail the run");
            faults += 1;
        }
    }
    eprintln!("{faults} fault points: no table file left unnamed");
}
