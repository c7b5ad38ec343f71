//! `corekv restore --from BACKUP --data-dir DIR [--force]`: check a backup
//! (manifest checksum, every file's size and CRC32C), copy it into DIR, and
//! run `corekv verify` on the result. A DIR that exists and is not empty is
//! refused unless `--force`, which moves it aside to
//! `DIR.before-restore-<unix time>`; nothing is ever deleted.
//!
//! Exit codes: 0 restored and verified; 1 the backup (or the restored
//! directory) is damaged, each bad file named; 2 could not restore (the
//! error's stable name first).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use corekv::io::backup_files::{check_backup, restore_backup};

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The backup directory (written by `corekv backup`).
    #[arg(long)]
    pub from: PathBuf,
    /// The data directory to restore into; the server must be stopped.
    #[arg(long, env = "COREKV_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Restore even if --data-dir is not empty: its contents are moved aside
    /// to DIR.before-restore-<unix time>, never deleted.
    #[arg(long)]
    pub force: bool,
}

pub fn run(mut args: RestoreArgs) -> ExitCode {
    // Relative paths are resolved here, once: the disk layer needs absolute ones.
    args.from = super::settings::absolute(&args.from);
    args.data_dir = super::settings::absolute(&args.data_dir);
    let check = match check_backup(&args.from) {
        Ok(c) => c,
        Err(e) => {
            println!("DAMAGE {}: {e}", e.name());
            println!("refusing to restore from {}", args.from.display());
            return ExitCode::from(if e.name() == "BACKUP_DAMAGED" { 1 } else { 2 });
        }
    };
    if !check.damaged.is_empty() {
        for e in &check.damaged {
            println!("DAMAGE {}: {e}", e.name());
        }
        println!(
            "refusing to restore from {}: {} file(s) do not match the backup's manifest",
            args.from.display(),
            check.damaged.len()
        );
        return ExitCode::from(1);
    }
    let restored = match restore_backup(&args.from, &check.body, &args.data_dir, args.force) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{}: {e}", e.name());
            return ExitCode::from(if e.name() == "BACKUP_DAMAGED" { 1 } else { 2 });
        }
    };
    if let Some(aside) = &restored.moved_aside {
        println!(
            "moved the previous contents of {} to {}",
            args.data_dir.display(),
            aside.display()
        );
    }
    let cuts: Vec<String> = check
        .body
        .shards
        .iter()
        .map(|s| format!("shard {}: {}", s.shard, s.cut_lsn))
        .collect();
    println!(
        "restored {} files, {} bytes of a {}-shard backup (cut LSNs {}) from {} into {}",
        restored.files,
        restored.bytes,
        check.body.shard_count,
        cuts.join(", "),
        args.from.display(),
        args.data_dir.display()
    );
    match super::verify::check_dir(&args.data_dir) {
        0 => {
            println!(
                "restore verified: start the server on {}",
                args.data_dir.display()
            );
            ExitCode::SUCCESS
        }
        code => {
            println!("the restored directory failed verification (see above)");
            ExitCode::from(code)
        }
    }
}
