//! `corekv restore --from BACKUP --data-dir DIR [--force]`: check a backup
//! (manifest checksum, every file's size and CRC32C), copy it into DIR, and
//! run `corekv verify` on the result. A DIR that exists and is not empty is
//! refused unless `--force`, which moves it aside to
//! `DIR.before-restore-<unix time>`; nothing is ever deleted.
//!
//! Ownership: every restored file and directory gets the owner named by
//! `--owner USER[:GROUP]`, or else the owner DIR had before the restore (so a
//! restore run as root into the service user's directory leaves files the
//! service can open). A DIR that did not exist keeps the invoking user's
//! ownership and, when that is root, the output says to pass `--owner`.
//!
//! Exit codes: 0 restored and verified; 1 the backup (or the restored
//! directory) is damaged, each bad file named; 2 could not restore (the
//! error's stable name first).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use corekv::io::backup_files::{check_backup, restore_backup, Owner};

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
    /// Owner of every restored file: USER or USER:GROUP, names or numeric ids
    /// (GROUP defaults to USER's primary group). Default: the owner --data-dir
    /// had before the restore, when it existed. Changing the owner to another
    /// user needs root.
    #[arg(long, value_name = "USER[:GROUP]")]
    pub owner: Option<String>,
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
    let owner = match &args.owner {
        Some(spec) => match resolve_owner(spec) {
            Ok(o) => Some(o),
            Err(detail) => {
                eprintln!("OWNER_UNKNOWN: --owner {spec}: {detail}");
                return ExitCode::from(2);
            }
        },
        // The directory being replaced says who the service runs as.
        None => Owner::of(&args.data_dir).ok(),
    };
    let restored = match restore_backup(&args.from, &check.body, &args.data_dir, args.force, owner)
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{}: {e}", e.name());
            return ExitCode::from(if e.name() == "BACKUP_DAMAGED" { 1 } else { 2 });
        }
    };
    match owner {
        Some(o) => println!("restored files are owned by uid {} gid {}", o.uid, o.gid),
        // SAFETY: geteuid has no preconditions and cannot fail.
        None if unsafe { libc::geteuid() } == 0 => println!(
            "restored files are owned by root: if the server runs as another user, \
             run `chown -R USER: {}` or restore again with --owner USER",
            args.data_dir.display()
        ),
        None => {}
    }
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

/// USER or USER:GROUP (names or numeric ids) to numeric ids, through the
/// system's user database (getpwnam_r / getgrnam_r, so NSS sources count).
fn resolve_owner(spec: &str) -> Result<Owner, String> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g).filter(|g| !g.is_empty())),
        None => (spec, None),
    };
    if user.is_empty() {
        return Err("names no user".into());
    }
    let (uid, primary_gid) = match user.parse::<u32>() {
        Ok(uid) => (uid, lookup_user(None, uid).map(|(_, gid)| gid)),
        Err(_) => {
            let (uid, gid) =
                lookup_user(Some(user), 0).ok_or_else(|| format!("no user named {user:?}"))?;
            (uid, Some(gid))
        }
    };
    let gid = match group {
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => lookup_group(g).ok_or_else(|| format!("no group named {g:?}"))?,
        },
        None => primary_gid.ok_or_else(|| {
            format!(
                "uid {uid} has no entry in the user database: name the group (--owner {uid}:GID)"
            )
        })?,
    };
    Ok(Owner { uid, gid })
}

/// (uid, primary gid) of the user named `name`, or of `uid` when no name.
fn lookup_user(name: Option<&str>, uid: u32) -> Option<(u32, u32)> {
    let cname = name.map(std::ffi::CString::new).transpose().ok()?;
    // SAFETY: an all-zero passwd is a valid out-parameter for getpw*_r.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; the buffer's length is
    // passed with it, and `result` is only read after the call returns.
    let rc = unsafe {
        match &cname {
            Some(c) => libc::getpwnam_r(
                c.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            ),
            None => libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result),
        }
    };
    (rc == 0 && !result.is_null()).then_some((pwd.pw_uid, pwd.pw_gid))
}

fn lookup_group(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: as in lookup_user.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: as in lookup_user.
    let rc = unsafe {
        libc::getgrnam_r(
            c.as_ptr(),
            &mut grp,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    (rc == 0 && !result.is_null()).then_some(grp.gr_gid)
}
