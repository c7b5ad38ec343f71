//! `corekv verify --data-dir DIR`: offline integrity check of a stopped server's
//! data directory: the metadata file, and for every shard its manifest, every
//! block of every table (checksum, name, key order, index, bloom, footer) and
//! every WAL record, read without repairing anything.
//!
//! `--backup DIR` checks a backup instead: its manifest's checksum, every
//! file's size and CRC32C, then the same checks on the backup directory (a
//! backup has a data directory's layout).
//!
//! Exit codes: 0 clean (a torn tail left by a crash is reported but is not
//! damage: nothing in it was acknowledged); 1 damage found (each problem names
//! shard, file and offset); 2 could not check (directory missing, locked by a
//! running server, unreadable).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use corekv::core::wal_format::Record;
use corekv::io::backup_files::check_backup;
use corekv::io::data_dir::{decode_meta, lock_for_reading, shard_dir, wal_dir, META_FILE};
use corekv::io::manifest::load_manifest;
use corekv::io::table_file::{check_table, parse_table_file_name};
use corekv::io::wal_reader::{replay_log, ScanOptions};
use corekv::io::{Disk, DmaDisk};
use corekv::shard::log_check::check_log;
use corekv::shard::txn::recovery::TxnReplay;

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The data directory of a stopped server.
    #[arg(long, env = "COREKV_DATA_DIR", default_value = "./corekv-data")]
    pub data_dir: PathBuf,
    /// Check this backup (written by `corekv backup`) instead of the data
    /// directory; --data-dir and COREKV_DATA_DIR are then not used.
    // No `conflicts_with = "data_dir"`: clap counts an environment value as
    // given, so an exported COREKV_DATA_DIR (as the systemd unit and the
    // docs' shells have) made every `verify --backup` a usage error.
    #[arg(long)]
    pub backup: Option<PathBuf>,
}

pub fn run(args: VerifyArgs) -> ExitCode {
    // Relative paths are resolved here, once: the disk layer needs absolute ones.
    let code = match &args.backup {
        Some(dir) => verify_backup(&super::settings::absolute(dir)),
        None => check_dir(&super::settings::absolute(&args.data_dir)),
    };
    ExitCode::from(code)
}

/// Check a stopped server's data directory (or a backup), printing one line
/// per shard. Returns the exit code: 0 clean, 1 damage, 2 could not check.
pub fn check_dir(dir: &Path) -> u8 {
    let dir = dir.to_path_buf();
    let meta_path = dir.join(META_FILE);
    let shards = match std::fs::read(&meta_path) {
        Ok(bytes) => match decode_meta(&bytes) {
            Ok(n) => n,
            Err(detail) => {
                println!(
                    "DAMAGE {}: DATA_DIR_META_CORRUPT: {detail}",
                    meta_path.display()
                );
                return 1;
            }
        },
        Err(e) => {
            eprintln!(
                "VERIFY_FAILED: cannot read {}: {e} (is this a corekv data directory?)",
                meta_path.display()
            );
            return 2;
        }
    };
    // Holding the lock proves no server writes while we read. A shared lock on
    // the existing LOCK file: nothing is created, so read-only media and
    // backups can be checked and stay as they were.
    let _lock = match lock_for_reading(&dir) {
        Ok(lock) => lock,
        Err(e) => {
            eprintln!("VERIFY_FAILED: {}: {e}\n  fix: {}", e.name(), e.fix());
            return 2;
        }
    };
    let outcome = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .spawn(move || async move {
            DmaDisk.prime_device_probe(&meta_path).await.map_err(|e| e.to_string())?;
            let mut damaged = 0usize;
            for shard in 0..shards {
                let (cutoff, applied, storage_ok) = verify_storage(&dir, shard).await;
                if !storage_ok {
                    damaged += 1;
                }
                let wal = wal_dir(&dir, shard);
                let opts = ScanOptions { shard_id: shard, repair: false, truncate_corruption: false };
                // The same replay and checks as the server's recovery.
                let mut txns = TxnReplay::new(cutoff, applied);
                let scanned = replay_log(&DmaDisk, &wal, &opts, |r| {
                    if let Record::Txn { lsn, txn } = r {
                        if lsn > cutoff {
                            txns.replay(txn, lsn, &mut |_, _| {});
                        }
                    }
                })
                .await;
                match scanned {
                    Ok(r) => {
                        let torn = match &r.torn {
                            Some(t) => format!(
                                "; torn tail of {} bytes at {}:{} (an unacknowledged write cut by a crash; discarded at the next start)",
                                t.bytes,
                                t.path.display(),
                                t.offset
                            ),
                            None => String::new(),
                        };
                        if let Err(e) = check_log(&wal, &r, &txns, false) {
                            damaged += 1;
                            println!("DAMAGE shard {shard}: WAL_CORRUPT: {e}");
                        } else {
                            println!(
                                "ok     shard {shard}: WAL {} segments, {} batches, {} records, last LSN {}, {} bytes read{torn}",
                                r.segments, r.batches, r.records, r.last_lsn, r.bytes_read
                            );
                        }
                    }
                    Err(e) => {
                        if storage_ok {
                            damaged += 1;
                        }
                        println!("DAMAGE shard {shard}: {e}");
                    }
                }
            }
            Ok::<usize, String>(damaged)
        })
        .map_err(|e| e.to_string())
        .and_then(|h| h.join().map_err(|e| e.to_string()));
    match outcome {
        Ok(Ok(0)) => {
            println!("verified {shards} shard(s): no damage");
            0
        }
        Ok(Ok(n)) => {
            println!("{n} shard(s) damaged: see docs/operations.md (R2)");
            1
        }
        Ok(Err(e)) | Err(e) => {
            eprintln!("VERIFY_FAILED: {e}");
            2
        }
    }
}

/// Check one shard's manifest and every table it names. Returns the WAL cutoff,
/// the highest LSN the tables may hold, and whether everything was intact.
async fn verify_storage(dir: &Path, shard: u16) -> (u64, u64, bool) {
    let sdir = shard_dir(dir, shard);
    let manifest = match load_manifest(&DmaDisk, &sdir, shard).await {
        Ok(Some(m)) => m,
        Ok(None) => {
            println!("ok     shard {shard}: no tables yet (no manifest)");
            return (0, 0, true);
        }
        Err(e) => {
            println!("DAMAGE shard {shard}: {}: {e}", e.name());
            return (0, 0, false);
        }
    };
    let tables_dir = sdir.join("tables");
    let on_disk: Vec<u64> = DmaDisk
        .list_dir(&tables_dir)
        .await
        .unwrap_or_default()
        .iter()
        .filter_map(|n| parse_table_file_name(n))
        .collect();
    let mut ok = true;
    let (mut blocks, mut entries, mut bytes) = (0u64, 0u64, 0u64);
    for t in &manifest.tables {
        if !on_disk.contains(&t.id) {
            ok = false;
            println!(
                "DAMAGE shard {shard}: the manifest names table {:016x}.sst (level {}), which is missing",
                t.id, t.level
            );
            continue;
        }
        let check = check_table(&DmaDisk, &tables_dir, t.id).await;
        blocks += check.blocks;
        entries += check.entries;
        bytes += t.file_bytes;
        for p in &check.problems {
            ok = false;
            println!("DAMAGE shard {shard}: {p}");
        }
        if check.problems.is_empty() && check.entries != t.entries {
            ok = false;
            println!(
                "DAMAGE shard {shard}: table {:016x}.sst holds {} entries, the manifest says {}",
                t.id, check.entries, t.entries
            );
        }
    }
    let mut l1: Vec<_> = manifest.tables.iter().filter(|t| t.level == 1).collect();
    l1.sort_by(|a, b| a.smallest.cmp(&b.smallest));
    for w in l1.windows(2) {
        if w[0].largest >= w[1].smallest {
            ok = false;
            println!(
                "DAMAGE shard {shard}: level-1 tables {:016x}.sst and {:016x}.sst overlap",
                w[0].id, w[1].id
            );
        }
    }
    let orphans = on_disk
        .iter()
        .filter(|id| !manifest.tables.iter().any(|t| t.id == **id))
        .count();
    if ok {
        println!(
            "ok     shard {shard}: manifest edition {}, {} tables, {blocks} blocks, {entries} entries, {bytes} bytes, WAL covered up to LSN {}{}",
            manifest.edition,
            manifest.tables.len(),
            manifest.wal_cutoff_lsn,
            if orphans > 0 {
                format!("; {orphans} table file(s) no manifest names (an interrupted flush or compaction; removed at the next start)")
            } else {
                String::new()
            }
        );
    }
    (manifest.wal_cutoff_lsn, manifest.applied_lsn, ok)
}

/// Check a backup: manifest checksum, every file against its size and
/// CRC32C, then the structural checks of `corekv verify`. Prints what it
/// finds; returns the exit code (0 good, 1 damaged, 2 could not check).
pub fn verify_backup(dir: &Path) -> u8 {
    let check = match check_backup(dir) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.name() == "BACKUP_DAMAGED" { 1 } else { 2 };
            println!("DAMAGE {}: {e}", e.name());
            return code;
        }
    };
    if !check.damaged.is_empty() {
        for e in &check.damaged {
            println!("DAMAGE {}: {e}", e.name());
        }
        println!(
            "{} file(s) of the backup do not match its manifest",
            check.damaged.len()
        );
        return 1;
    }
    println!(
        "ok     backup manifest: {} files, {} bytes, checksums match",
        check.body.files.len(),
        check.body.total_bytes()
    );
    check_dir(dir)
}
