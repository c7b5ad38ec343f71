//! The file work of backups and restores: preparing a backup directory,
//! linking or copying a shard's tables and manifest into it, copying the WAL up
//! to a cut, checksumming, sealing the backup with its manifest, checking a
//! backup against that manifest, and restoring it into a data directory.
//!
//! The backup steps and the check are generic over [`Disk`], so the
//! deterministic simulation runs them on the simulated disk interleaved with
//! flushes, compactions and transactions; in production the shards run them on
//! a helper thread through [`StdDisk`] (blocking, buffered: a backup target
//! need not support O_DIRECT). The target checks and the restore's directory
//! moves use std::fs directly: they run in the CLI or on that helper thread.
//! Nothing here may run blocking calls on a shard executor.
//! It must never change or delete a file of a live data directory (it only
//! reads them and hard-links them), and never delete a data directory it
//! restores over: that one is moved aside.

use std::fs;
use std::path::{Path, PathBuf};

use crate::core::backup_format::{
    decode_backup_manifest, encode_backup_manifest, BackupBody, BackupFileEntry,
    BACKUP_MANIFEST_FILE,
};
use crate::core::checksum::crc32c_append;
use crate::core::limits::SECTOR_BYTES;
use crate::core::wal_format::SegmentHeader;

use super::data_dir::{is_held, shard_dir, wal_dir, META_FILE};
use super::disk::{Disk, DiskFile, OpenMode};
use super::error::{IoError, IoOp};
use super::manifest::MANIFEST_FILE;
use super::std_disk::StdDisk;
use super::table_file::table_file_name;
use super::wal_writer::{parse_segment_file_name, segment_file_name};

const COPY_CHUNK_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum BackupFileError {
    /// A file of a backup does not match its manifest, or the manifest is bad.
    #[error("{path}: {detail}")]
    Damaged { path: PathBuf, detail: String },
    #[error("backup target {path}: {detail}")]
    TargetInvalid { path: PathBuf, detail: String },
    #[error("{path} exists and is not empty; pass --force to move it aside and restore")]
    TargetNotEmpty { path: PathBuf },
    #[error("{path} is locked by a running corekv server; stop it first")]
    TargetLocked { path: PathBuf },
    /// A segment of the live WAL that the cut needs is gone or unreadable.
    #[error("WAL of the data directory at {path}: {detail}")]
    WalUnusable { path: PathBuf, detail: String },
    #[error(transparent)]
    Io(#[from] IoError),
}

impl BackupFileError {
    /// Stable name, listed in docs/errors.md.
    pub fn name(&self) -> &'static str {
        match self {
            BackupFileError::Damaged { .. } => "BACKUP_DAMAGED",
            BackupFileError::TargetInvalid { .. } => "BACKUP_TARGET_INVALID",
            BackupFileError::TargetNotEmpty { .. } => "RESTORE_TARGET_NOT_EMPTY",
            BackupFileError::TargetLocked { .. } => "DATA_DIR_LOCKED",
            BackupFileError::WalUnusable { .. } => "BACKUP_FAILED",
            BackupFileError::Io(_) => "BACKUP_IO",
        }
    }
}

fn io(op: IoOp, path: &Path) -> impl FnOnce(std::io::Error) -> IoError + '_ {
    move |e| IoError::new(op, path, None, e)
}

/// Check that `target` may receive a backup of `data_dir`, and create it.
/// A target that exists must be an empty directory; its parent must exist.
pub fn prepare_backup_target(target: &Path, data_dir: &Path) -> Result<(), BackupFileError> {
    let invalid = |detail: String| BackupFileError::TargetInvalid {
        path: target.to_path_buf(),
        detail,
    };
    if !target.is_absolute() {
        return Err(invalid("must be an absolute path".into()));
    }
    let (Some(parent), Some(name)) = (target.parent(), target.file_name()) else {
        return Err(invalid("names no directory".into()));
    };
    match fs::metadata(parent) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(invalid(format!("{} is not a directory", parent.display()))),
        Err(e) => {
            return Err(invalid(format!(
                "parent directory {} is not usable: {e}",
                parent.display()
            )))
        }
    }
    let canonical_parent = fs::canonicalize(parent).map_err(io(IoOp::Stat, parent))?;
    let canonical_data = fs::canonicalize(data_dir).map_err(io(IoOp::Stat, data_dir))?;
    if canonical_parent.join(name).starts_with(&canonical_data) {
        return Err(invalid(format!(
            "is inside the data directory {}",
            canonical_data.display()
        )));
    }
    match fs::symlink_metadata(target) {
        Ok(m) if m.is_dir() => {
            let mut entries = fs::read_dir(target).map_err(io(IoOp::ListDir, target))?;
            if entries.next().is_some() {
                return Err(invalid(
                    "exists and is not empty (a backup never overwrites anything)".into(),
                ));
            }
            // The operator made it: keep their mode, but say what it exposes.
            let mode = std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    "backup directory {} has mode {mode:o}: other local users may read the backup; fix: chmod 700 {}",
                    target.display(),
                    target.display()
                );
            }
            Ok(())
        }
        Ok(_) => Err(invalid("exists and is not a directory".into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // 0700 like the data directory: a backup holds all its data.
            super::disk::create_private_dir(target).map_err(io(IoOp::CreateDir, target))?;
            Ok(())
        }
        Err(e) => Err(IoError::new(IoOp::Stat, target, None, e).into()),
    }
}

/// Hard-link `src` to `dst`, or copy it where a link is impossible (another
/// filesystem). Returns true if linked.
pub async fn link_or_copy<D: Disk>(disk: &D, src: &Path, dst: &Path) -> Result<bool, IoError> {
    match disk.hard_link(src, dst).await {
        Ok(()) => Ok(true),
        Err(e)
            if matches!(
                e.source.raw_os_error(),
                Some(libc::EXDEV) | Some(libc::EPERM) | Some(libc::EMLINK) | Some(libc::ENOTSUP)
            ) =>
        {
            copy_prefix(disk, src, dst, None).await?;
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Copy `src` to a new file `dst`: all of it, or only its first `limit` bytes
/// with the rest of its length left as zeros. Durable (fdatasync) on return;
/// the name is durable once the caller syncs `dst`'s directory.
pub async fn copy_prefix<D: Disk>(
    disk: &D,
    src: &Path,
    dst: &Path,
    limit: Option<u64>,
) -> Result<(), IoError> {
    let from = disk.open(src, OpenMode::ReadOnly).await?;
    let len = from.size().await?;
    let want = limit.map_or(len, |l| l.min(len));
    let to = disk.open(dst, OpenMode::CreateNew).await?;
    let align = to.alignment().max(from.alignment()) as u64;
    assert!(COPY_CHUNK_BYTES as u64 % align == 0);
    let mut done = 0u64;
    while done < want {
        let n = (want - done).min(COPY_CHUNK_BYTES as u64);
        // Whole aligned blocks both ways; the tail past `want` is zeroed.
        let padded = n.div_ceil(align) * align;
        let read = from.read_at(done, padded as usize).await?;
        if (read.len() as u64) < n {
            return Err(IoError::new(
                IoOp::Read,
                src,
                Some(done),
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                        "the file ended at {} while copying",
                        done + read.len() as u64
                    ),
                ),
            ));
        }
        let mut buf = to.alloc_buf(padded as usize);
        buf.as_mut()[..n as usize].copy_from_slice(&read[..n as usize]);
        to.write_at(buf, done).await?;
        done += n;
    }
    to.truncate(len).await?;
    to.fdatasync().await?;
    let _ = from.close().await;
    to.close().await
}

/// Size and CRC32C of a whole file.
pub async fn file_crc<D: Disk>(disk: &D, path: &Path) -> Result<(u64, u32), IoError> {
    let f = disk.open(path, OpenMode::ReadOnly).await?;
    let (mut crc, mut len) = (0u32, 0u64);
    loop {
        let chunk = f.read_at(len, COPY_CHUNK_BYTES).await?;
        crc = crc32c_append(crc, &chunk);
        len += chunk.len() as u64;
        if chunk.len() < COPY_CHUNK_BYTES {
            let _ = f.close().await;
            return Ok((len, crc));
        }
    }
}

/// A whole small file (a manifest), or None if it does not exist.
async fn read_small<D: Disk>(disk: &D, path: &Path) -> Result<Option<Vec<u8>>, IoError> {
    let f = match disk.open(path, OpenMode::ReadOnly).await {
        Ok(f) => f,
        Err(e) if e.source.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = f.size().await?;
    let align = f.read_alignment() as u64;
    let bytes = f.read_at(0, (len.div_ceil(align) * align) as usize).await?;
    let _ = f.close().await;
    Ok(Some(bytes[..(len as usize).min(bytes.len())].to_vec()))
}

/// Write `bytes` as the new file `path` and make it durable (the name too,
/// once the caller syncs the directory).
async fn write_small<D: Disk>(disk: &D, path: &Path, bytes: &[u8]) -> Result<(), IoError> {
    let f = disk.open(path, OpenMode::CreateNew).await?;
    let align = f.alignment();
    let mut buf = f.alloc_buf(bytes.len().div_ceil(align).max(1) * align);
    buf.as_mut()[..bytes.len()].copy_from_slice(bytes);
    f.write_at(buf, 0).await?;
    f.truncate(bytes.len() as u64).await?;
    f.fdatasync().await?;
    f.close().await
}

/// Make a file's contents durable (files a backup linked: synced by the shard
/// that wrote them already; this covers a crash in between).
async fn sync_file<D: Disk>(disk: &D, path: &Path) -> Result<(), IoError> {
    let f = disk.open(path, OpenMode::ReadWrite).await?;
    f.fdatasync().await?;
    f.close().await
}

/// fsync a directory with the blocking API (restore's staging tree).
pub fn sync_dir(dir: &Path) -> Result<(), IoError> {
    futures_lite::future::block_on(StdDisk.sync_dir(dir))
}

/// The backup's directory for one shard, with its `tables` and `wal`.
pub fn backup_shard_dir(target: &Path, shard: u16) -> PathBuf {
    shard_dir(target, shard)
}

/// While the shard is paused: hard-link (or copy) the tables its manifest
/// names and copy the manifest itself into the backup. Few files, no data
/// copied when linking works, so the pause stays short.
pub async fn link_shard_tables<D: Disk>(
    disk: &D,
    data_dir: &Path,
    target: &Path,
    shard: u16,
    table_ids: &[u64],
) -> Result<(), BackupFileError> {
    let src = shard_dir(data_dir, shard);
    let dst = backup_shard_dir(target, shard);
    for d in [dst.join("tables"), dst.join("wal")] {
        disk.create_dir_all(&d).await?;
    }
    for &id in table_ids {
        let name = table_file_name(id);
        link_or_copy(
            disk,
            &src.join("tables").join(&name),
            &dst.join("tables").join(&name),
        )
        .await?;
    }
    // No manifest yet (no flush): the shard's data is all in its WAL.
    if let Some(bytes) = read_small(disk, &src.join(MANIFEST_FILE)).await? {
        write_small(disk, &dst.join(MANIFEST_FILE), &bytes).await?;
    }
    Ok(())
}

/// Where a shard's WAL was cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalCut {
    /// The cutoff of the manifest in the backup: records at or below it are in
    /// its tables.
    pub cutoff_lsn: u64,
    /// The segment holding the end of the last durable batch, and that end.
    pub segment: u64,
    pub offset: u64,
}

/// After the pause: copy the WAL segments the backup needs, from the oldest
/// holding a record above the cutoff up to the cut. Whole segments before the
/// cut segment; of the cut segment only the bytes below the cut, the rest
/// zeros, which the reader takes for the end of the log. Sound because the
/// writer never rewrites bytes below its position, and recycling is held off
/// by the caller until this returns.
pub async fn copy_wal_tail<D: Disk>(
    disk: &D,
    data_dir: &Path,
    target: &Path,
    shard: u16,
    cut: WalCut,
) -> Result<(), BackupFileError> {
    let src = wal_dir(data_dir, shard);
    let dst = backup_shard_dir(target, shard).join("wal");
    disk.create_dir_all(&dst).await?;
    let mut seqs: Vec<u64> = Vec::new();
    for name in disk.list_dir(&src).await? {
        if let Some(seq) = parse_segment_file_name(&name) {
            // A cut at offset 0 is a segment renamed into place but not written.
            if seq < cut.segment || (seq == cut.segment && cut.offset > 0) {
                seqs.push(seq);
            }
        }
    }
    seqs.sort_unstable();
    // First LSN of each segment; None: deleted by a recycle that was already
    // running when the pause began, which only removes segments the cutoff
    // covers.
    let mut firsts = Vec::with_capacity(seqs.len());
    for &seq in &seqs {
        let path = src.join(segment_file_name(seq));
        let head = match disk.open(&path, OpenMode::ReadOnly).await {
            Ok(f) => {
                let head = f.read_at(0, SECTOR_BYTES).await;
                let _ = f.close().await;
                head?
            }
            Err(e) if e.source.raw_os_error() == Some(libc::ENOENT) => {
                firsts.push(None);
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let header = SegmentHeader::decode(&head).map_err(|e| BackupFileError::WalUnusable {
            path: path.clone(),
            detail: format!("segment header: {e}"),
        })?;
        firsts.push(Some(header.first_lsn.get()));
    }
    let mut keep = Vec::new();
    for i in 0..seqs.len() {
        let Some(first) = firsts[i] else { continue };
        // Like the writer's own recycling: a segment is needed unless the next
        // one starts at or below cutoff + 1. The last one always stays, so that
        // the restored log says where LSNs continue.
        let needed = match firsts.get(i + 1) {
            None => true,
            Some(Some(next_first)) => next_first.saturating_sub(1) > cut.cutoff_lsn,
            Some(None) => false,
        };
        if needed {
            keep.push((seqs[i], first));
        }
    }
    if let Some(&(seq, first)) = keep.first() {
        if first > cut.cutoff_lsn + 1 {
            return Err(BackupFileError::WalUnusable {
                path: src.join(segment_file_name(seq)),
                detail: format!(
                    "the oldest segment left starts at LSN {first} but the tables cover only up to LSN {}",
                    cut.cutoff_lsn
                ),
            });
        }
    }
    if keep.windows(2).any(|w| w[1].0 != w[0].0 + 1) {
        return Err(BackupFileError::WalUnusable {
            path: src.clone(),
            detail: format!("segments are missing between {:?}", keep),
        });
    }
    for &(seq, _) in &keep {
        let name = segment_file_name(seq);
        let limit = (seq == cut.segment).then_some(cut.offset);
        copy_prefix(disk, &src.join(&name), &dst.join(&name), limit).await?;
    }
    Ok(())
}

/// Checksum every file of one shard's part of the backup and make its
/// directories durable; returns their manifest entries.
pub async fn seal_shard<D: Disk>(
    disk: &D,
    target: &Path,
    shard: u16,
) -> Result<Vec<BackupFileEntry>, BackupFileError> {
    let dir = backup_shard_dir(target, shard);
    let mut entries = Vec::new();
    for sub in ["", "tables", "wal"] {
        let d = if sub.is_empty() {
            dir.clone()
        } else {
            dir.join(sub)
        };
        // The shard directory's own subdirectories are not files.
        let mut names: Vec<String> = disk
            .list_dir(&d)
            .await?
            .into_iter()
            .filter(|n| !(sub.is_empty() && (n == "tables" || n == "wal")))
            .collect();
        names.sort();
        for name in names {
            let path = d.join(&name);
            // Linked tables were synced by the shard that wrote them; the
            // copies were synced by copy_prefix. This is for a crash between.
            sync_file(disk, &path).await?;
            let (bytes, crc32c) = file_crc(disk, &path).await?;
            let rel = match sub {
                "" => format!("{}/{name}", dir_name(&dir)),
                _ => format!("{}/{sub}/{name}", dir_name(&dir)),
            };
            entries.push(BackupFileEntry {
                path: rel,
                bytes,
                crc32c,
            });
        }
        disk.sync_dir(&d).await?;
    }
    Ok(entries)
}

fn dir_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Copy the data directory's metadata file, then write the manifest last (via
/// a temporary file and a rename), and make it all durable. A backup without
/// `BACKUP.json` is incomplete and is refused by restore.
pub async fn seal_backup<D: Disk>(
    disk: &D,
    target: &Path,
    data_dir: &Path,
    mut body: BackupBody,
) -> Result<BackupBody, BackupFileError> {
    let meta = target.join(META_FILE);
    copy_prefix(disk, &data_dir.join(META_FILE), &meta, None).await?;
    let (bytes, crc32c) = file_crc(disk, &meta).await?;
    body.files.insert(
        0,
        BackupFileEntry {
            path: META_FILE.into(),
            bytes,
            crc32c,
        },
    );
    let tmp = target.join(format!("{BACKUP_MANIFEST_FILE}.tmp"));
    write_small(disk, &tmp, &encode_backup_manifest(&body)).await?;
    disk.rename(&tmp, &target.join(BACKUP_MANIFEST_FILE))
        .await?;
    disk.sync_dir(target).await?;
    Ok(body)
}

/// What checking a backup found.
#[derive(Debug)]
pub struct BackupCheck {
    pub body: BackupBody,
    /// Every file that is missing or does not match its size or CRC32C.
    pub damaged: Vec<BackupFileError>,
}

/// Read the backup's manifest (checksum verified) and check every file it
/// lists against its size and CRC32C. An unusable manifest is an error; bad
/// files are listed in the result.
pub async fn check_backup_on<D: Disk>(
    disk: &D,
    dir: &Path,
) -> Result<BackupCheck, BackupFileError> {
    let manifest_path = dir.join(BACKUP_MANIFEST_FILE);
    let Some(bytes) = read_small(disk, &manifest_path).await? else {
        return Err(BackupFileError::Damaged {
            path: manifest_path,
            detail: "missing: not a backup, or the backup did not complete".into(),
        });
    };
    let body = decode_backup_manifest(&bytes).map_err(|e| BackupFileError::Damaged {
        path: manifest_path.clone(),
        detail: e.0,
    })?;
    let mut damaged = Vec::new();
    for f in &body.files {
        let path = dir.join(&f.path);
        match file_crc(disk, &path).await {
            Ok((bytes, _)) if bytes != f.bytes => damaged.push(BackupFileError::Damaged {
                path,
                detail: format!("{bytes} bytes, the manifest says {}", f.bytes),
            }),
            Ok((_, crc)) if crc != f.crc32c => damaged.push(BackupFileError::Damaged {
                path,
                detail: format!(
                    "CRC32C {crc:#010x}, the manifest says {:#010x}: the file is damaged",
                    f.crc32c
                ),
            }),
            Ok(_) => {}
            Err(e) => damaged.push(BackupFileError::Damaged {
                path,
                detail: format!("unreadable: {}", e.source),
            }),
        }
    }
    Ok(BackupCheck { body, damaged })
}

/// [`check_backup_on`] with the blocking API, for the CLI (`verify --backup`,
/// `restore`), which runs no executor.
pub fn check_backup(dir: &Path) -> Result<BackupCheck, BackupFileError> {
    futures_lite::future::block_on(check_backup_on(&StdDisk, dir))
}

/// What a restore did.
#[derive(Debug)]
pub struct Restored {
    pub files: usize,
    pub bytes: u64,
    /// Where the directory that was in the way went.
    pub moved_aside: Option<PathBuf>,
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The numeric owner a restore gives every file and directory it writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

impl Owner {
    /// The owner of `path` as it is now (a restore's default target owner).
    pub fn of(path: &Path) -> Result<Owner, IoError> {
        use std::os::unix::fs::MetadataExt;
        let m = fs::symlink_metadata(path).map_err(io(IoOp::Stat, path))?;
        Ok(Owner {
            uid: m.uid(),
            gid: m.gid(),
        })
    }
}

/// lchown `root` and everything under it (symlinks are not followed: a
/// restored tree has none, and following one could hand a file outside it
/// to the service user).
fn chown_tree(root: &Path, owner: Owner) -> Result<(), IoError> {
    std::os::unix::fs::lchown(root, Some(owner.uid), Some(owner.gid))
        .map_err(io(IoOp::Chown, root))?;
    if fs::symlink_metadata(root)
        .map_err(io(IoOp::Stat, root))?
        .is_dir()
    {
        for entry in fs::read_dir(root).map_err(io(IoOp::ListDir, root))? {
            let entry = entry.map_err(io(IoOp::ListDir, root))?;
            chown_tree(&entry.path(), owner)?;
        }
    }
    Ok(())
}

/// Copy a checked backup (`body` from [`check_backup`]) into `to`. The files
/// go to a staging directory next to `to` first and are renamed into place
/// once all are durable, so a crash mid-restore leaves no half-restored data
/// directory. Each file's CRC32C is checked again on the bytes copied.
pub fn restore_backup(
    from: &Path,
    body: &BackupBody,
    to: &Path,
    force: bool,
    owner: Option<Owner>,
) -> Result<Restored, BackupFileError> {
    let name = to
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| BackupFileError::TargetInvalid {
            path: to.to_path_buf(),
            detail: "names no directory".into(),
        })?;
    let parent = match to.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut moved_aside = None;
    let in_the_way = match fs::symlink_metadata(to) {
        Ok(m) if m.is_dir() => fs::read_dir(to)
            .map_err(io(IoOp::ListDir, to))?
            .next()
            .is_some(),
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(IoError::new(IoOp::Stat, to, None, e).into()),
    };
    if in_the_way {
        if is_held(to)? {
            return Err(BackupFileError::TargetLocked {
                path: to.to_path_buf(),
            });
        }
        if !force {
            return Err(BackupFileError::TargetNotEmpty {
                path: to.to_path_buf(),
            });
        }
    }
    fs::create_dir_all(&parent).map_err(io(IoOp::CreateDir, &parent))?;
    let stamp = unix_secs();
    let staging = parent.join(format!(".{name}.restoring-{stamp}-{}", std::process::id()));
    // The staging directory becomes the data directory: 0700, as `serve`
    // would create it.
    super::disk::create_private_dir(&staging).map_err(io(IoOp::CreateDir, &staging))?;
    let mut total = 0u64;
    let mut dirs = std::collections::BTreeSet::new();
    for shard in 0..body.shard_count {
        // Empty shards still get their directories, like a fresh data dir.
        for sub in ["tables", "wal"] {
            let d = shard_dir(&staging, shard).join(sub);
            super::disk::create_private_dir_all(&d).map_err(io(IoOp::CreateDir, &d))?;
            dirs.insert(d);
        }
        dirs.insert(shard_dir(&staging, shard));
    }
    for f in &body.files {
        let src = from.join(&f.path);
        let dst = staging.join(&f.path);
        if let Some(d) = dst.parent() {
            super::disk::create_private_dir_all(d).map_err(io(IoOp::CreateDir, d))?;
            dirs.insert(d.to_path_buf());
        }
        let (bytes, crc) = futures_lite::future::block_on(async {
            copy_prefix(&StdDisk, &src, &dst, None).await?;
            file_crc(&StdDisk, &dst).await
        })?;
        if bytes != f.bytes || crc != f.crc32c {
            return Err(BackupFileError::Damaged {
                path: src,
                detail: format!(
                    "changed while being restored: {bytes} bytes with CRC32C {crc:#010x}, the manifest says {} bytes with {:#010x}",
                    f.bytes, f.crc32c
                ),
            });
        }
        total += bytes;
    }
    // Ownership is set on the staging tree, before it becomes the data
    // directory: a restore run as root must not leave files the service user
    // cannot open (the server would fail at start with DATA_DIR_UNUSABLE or
    // WAL_IO), and the directory never appears under its name half-owned.
    if let Some(owner) = owner {
        chown_tree(&staging, owner)?;
    }
    for d in dirs.iter().rev() {
        sync_dir(d)?;
    }
    sync_dir(&staging)?;
    if in_the_way {
        let mut aside = parent.join(format!("{name}.before-restore-{stamp}"));
        let mut n = 1;
        while fs::symlink_metadata(&aside).is_ok() {
            n += 1;
            aside = parent.join(format!("{name}.before-restore-{stamp}-{n}"));
        }
        fs::rename(to, &aside).map_err(io(IoOp::Rename, to))?;
        moved_aside = Some(aside);
    } else if to.exists() {
        // An empty directory: replaced by the rename below.
        fs::remove_dir(to).map_err(io(IoOp::Remove, to))?;
    }
    fs::rename(&staging, to).map_err(io(IoOp::Rename, &staging))?;
    sync_dir(&parent)?;
    Ok(Restored {
        files: body.files.len(),
        bytes: total,
        moved_aside,
    })
}
