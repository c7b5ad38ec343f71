//! `corekv verify --data-dir DIR`: offline integrity check of a stopped server's
//! data directory: the metadata file and every WAL record of every shard, read
//! without repairing anything.
//!
//! Exit codes: 0 clean (a torn tail left by a crash is reported but is not
//! damage: nothing in it was acknowledged); 1 damage found (each problem names
//! shard, file and offset); 2 could not check (directory missing, locked by a
//! running server, unreadable).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use corekv::io::data_dir::{decode_meta, wal_dir, DataDir, META_FILE};
use corekv::io::wal_reader::{scan, ScanOptions};
use corekv::io::DmaDisk;

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The data directory of a stopped server.
    #[arg(long, env = "COREKV_DATA_DIR", default_value = "./corekv-data")]
    pub data_dir: PathBuf,
}

pub fn run(args: VerifyArgs) -> ExitCode {
    let dir = args.data_dir;
    let meta_path = dir.join(META_FILE);
    let shards = match std::fs::read(&meta_path) {
        Ok(bytes) => match decode_meta(&bytes) {
            Ok(n) => n,
            Err(detail) => {
                println!(
                    "DAMAGE {}: DATA_DIR_META_CORRUPT: {detail}",
                    meta_path.display()
                );
                return ExitCode::from(1);
            }
        },
        Err(e) => {
            eprintln!(
                "VERIFY_FAILED: cannot read {}: {e} (is this a corekv data directory?)",
                meta_path.display()
            );
            return ExitCode::from(2);
        }
    };
    // Holding the lock proves no server writes while we read.
    let _lock = match DataDir::open(&dir, Some(shards), shards) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("VERIFY_FAILED: {}: {e}\n  fix: {}", e.name(), e.fix());
            return ExitCode::from(2);
        }
    };
    let outcome = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .spawn(move || async move {
            DmaDisk.prime_device_probe(&meta_path).await.map_err(|e| e.to_string())?;
            let mut damaged = 0usize;
            for shard in 0..shards {
                let wal = wal_dir(&dir, shard);
                let opts = ScanOptions { shard_id: shard, repair: false, truncate_corruption: false };
                match scan(&DmaDisk, &wal, &opts, |_| {}).await {
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
                        println!(
                            "ok     shard {shard}: {} segments, {} batches, {} records, last LSN {}, {} bytes read{torn}",
                            r.segments, r.batches, r.records, r.last_lsn, r.bytes_read
                        );
                    }
                    Err(e) => {
                        damaged += 1;
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
            ExitCode::SUCCESS
        }
        Ok(Ok(n)) => {
            println!("{n} shard(s) damaged: see docs/operations.md (R2)");
            ExitCode::from(1)
        }
        Ok(Err(e)) | Err(e) => {
            eprintln!("VERIFY_FAILED: {e}");
            ExitCode::from(2)
        }
    }
}
