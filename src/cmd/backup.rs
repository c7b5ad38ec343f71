//! `corekv backup --addr HOST:PORT --to DIR`: ask a running server for an
//! online, consistent backup into DIR (a path on the server's host), then
//! verify the backup here before calling it good: the manifest's checksum,
//! every file's size and CRC32C, and the checks `corekv verify` runs.
//! That verification is `verify::verify_backup`, shared with `corekv verify
//! --backup` (this module uses verify, never the reverse).
//!
//! Exit codes: 0 backup written and verified; 1 the backup failed
//! verification (each bad file is named); 2 no backup could be taken (the
//! error's stable name first on stderr).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;

use corekv::net::client::Client;

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Server address.
    #[arg(long, env = "COREKV_ADDR", default_value = "127.0.0.1:7070")]
    pub addr: String,
    /// Directory to write the backup into, on the server's host (this command
    /// verifies it, so it must be readable here too). It must not exist or be
    /// empty, and its parent must exist. Put it on the data directory's
    /// filesystem: tables are then hard-linked instead of copied.
    #[arg(long)]
    pub to: PathBuf,
    /// Give up waiting for the server after this many seconds.
    #[arg(long, default_value_t = 3600)]
    pub timeout_secs: u64,
    /// BACKUP needs the admin role on a server with users.
    #[command(flatten)]
    pub credentials: super::user::Credentials,
}

pub fn run(args: BackupArgs) -> ExitCode {
    let started = Instant::now();
    let target = match std::path::absolute(&args.to) {
        Ok(p) => p,
        Err(e) => {
            eprintln!(
                "BACKUP_TARGET_INVALID: cannot make {} absolute: {e}",
                args.to.display()
            );
            return ExitCode::from(2);
        }
    };
    let credentials = match args.credentials.resolve() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("CREDENTIALS_MISSING: {e}");
            return ExitCode::from(2);
        }
    };
    let summary = Client::connect(args.addr.as_str()).and_then(|mut c| {
        c.set_timeout(Some(Duration::from_secs(args.timeout_secs.max(1))))?;
        if let Some((user, password)) = &credentials {
            c.auth(user, password)?;
        }
        c.backup(target.as_os_str().as_encoded_bytes())
    });
    let summary = match summary {
        Ok(s) => serde_json::from_slice::<serde_json::Value>(&s).unwrap_or_default(),
        Err(e) => {
            eprintln!("{}: {}", e.name(), e.message());
            return ExitCode::from(2);
        }
    };
    let written = started.elapsed();
    match super::verify::verify_backup(&target) {
        0 => {}
        code => {
            println!(
                "backup at {} is NOT usable: it failed verification (see above)",
                target.display()
            );
            return ExitCode::from(code);
        }
    }
    let cuts = summary["cut_lsns"]
        .as_array()
        .map(|a| {
            a.iter()
                .enumerate()
                .map(|(i, l)| format!("shard {i}: {}", l.as_u64().unwrap_or(0)))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    println!(
        "backup ok: {}: {} files, {} bytes; cut LSNs {cuts}; writes paused {:.1} ms; written in {:.2} s, verified in {:.2} s",
        target.display(),
        summary["files"].as_u64().unwrap_or(0),
        summary["bytes"].as_u64().unwrap_or(0),
        summary["pause_micros"].as_u64().unwrap_or(0) as f64 / 1000.0,
        written.as_secs_f64(),
        (started.elapsed() - written).as_secs_f64(),
    );
    ExitCode::SUCCESS
}
