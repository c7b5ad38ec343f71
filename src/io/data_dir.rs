//! The data directory as a whole: its lock, its metadata file and its layout.
//!
//! ```text
//! <data-dir>/
//!   corekv.meta          4 KiB: magic, format version, shard count, creation time, CRC32C
//!   LOCK                 flock()ed by the process that owns the directory
//!   shard-000/wal/       one WAL segment file per 16-hex-digit sequence number
//!   shard-001/wal/ ...
//! ```
//!
//! This runs once at startup, before any shard thread exists, so it uses blocking
//! std calls. The metadata file is replaced atomically (write temp, fsync, rename,
//! fsync directory); it is exactly one sector long so shards can also open it with
//! O_DIRECT (see `DmaDisk::prime_device_probe`).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::core::checksum::crc32c;
use crate::core::limits::{SECTOR_BYTES, SHARDS_MAX};

use super::error::{IoError, IoOp};

pub const META_FILE: &str = "corekv.meta";
pub const LOCK_FILE: &str = "LOCK";
const META_MAGIC: &[u8; 8] = b"CKVMETA\x01";
const META_FORMAT_VERSION: u32 = 1;

/// Directory of one shard's files.
pub fn shard_dir(data_dir: &Path, shard: u16) -> PathBuf {
    data_dir.join(format!("shard-{shard:03}"))
}

/// Directory of one shard's WAL segments.
pub fn wal_dir(data_dir: &Path, shard: u16) -> PathBuf {
    shard_dir(data_dir, shard).join("wal")
}

#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("cannot create or open the data directory {path}: {source}")]
    Unusable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("data directory {path} is locked by another process (pid in {path}/LOCK: {holder})")]
    Locked { path: PathBuf, holder: String },
    #[error("{path} is damaged: {detail}")]
    MetaCorrupt { path: PathBuf, detail: String },
    #[error("{path} has shard directories but no {META_FILE}; refusing to guess its shard count")]
    MetaMissing { path: PathBuf },
    #[error(
        "data directory {path} was created with {stored} shards but {requested} were requested"
    )]
    ShardCountMismatch {
        path: PathBuf,
        stored: u16,
        requested: u16,
    },
    #[error("the filesystem of {path} does not support O_DIRECT ({source}); tmpfs and some overlay filesystems cannot hold corekv data")]
    DirectIoUnsupported {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create the data directory {path}: its parent {parent} does not exist (corekv never creates missing parents: a missing parent is usually a volume that is not mounted or a mistyped path)")]
    ParentMissing { path: PathBuf, parent: PathBuf },
    #[error("refusing to create a new data directory {path}: {mount_point} is a mount point in /etc/fstab but nothing is mounted there, so the data would go to the file system underneath")]
    NotMounted { path: PathBuf, mount_point: PathBuf },
    #[error(transparent)]
    Io(#[from] IoError),
}

impl DataDirError {
    /// Stable name, listed in docs/errors.md.
    pub fn name(&self) -> &'static str {
        match self {
            DataDirError::Unusable { .. } => "DATA_DIR_UNUSABLE",
            DataDirError::Locked { .. } => "DATA_DIR_LOCKED",
            DataDirError::MetaCorrupt { .. } => "DATA_DIR_META_CORRUPT",
            DataDirError::MetaMissing { .. } => "DATA_DIR_META_MISSING",
            DataDirError::ShardCountMismatch { .. } => "SHARD_COUNT_MISMATCH",
            DataDirError::DirectIoUnsupported { .. } => "DIRECT_IO_UNSUPPORTED",
            DataDirError::ParentMissing { .. } => "DATA_DIR_PARENT_MISSING",
            DataDirError::NotMounted { .. } => "DATA_DIR_NOT_MOUNTED",
            DataDirError::Io(_) => "DATA_DIR_IO",
        }
    }

    /// What the operator should do.
    pub fn fix(&self) -> String {
        match self {
            DataDirError::Unusable { .. } => {
                "check that the path exists or can be created and that this user may write it"
                    .into()
            }
            DataDirError::Locked { .. } => {
                "stop the other corekv process using this directory, or choose another --data-dir"
                    .into()
            }
            DataDirError::MetaCorrupt { .. } => {
                "restore the directory from a backup (docs/operations.md, 'Restore from backup')"
                    .into()
            }
            DataDirError::MetaMissing { .. } => {
                "restore corekv.meta from a backup; do not start on a partial directory".into()
            }
            DataDirError::ShardCountMismatch { stored, .. } => {
                format!("start with --shards {stored} (or omit --shards); the shard count of a directory is fixed")
            }
            DataDirError::DirectIoUnsupported { .. } => {
                "put --data-dir on ext4 or xfs on a real block device".into()
            }
            DataDirError::ParentMissing { parent, .. } => format!(
                "check the path; if it is right, mount the volume that holds it or create the parent \
                 yourself (`mkdir -p {}`, owned by the service user)",
                parent.display()
            ),
            DataDirError::NotMounted { mount_point, .. } => format!(
                "mount it (`mount {}`; check `findmnt {}` and `dmesg`), then start again",
                mount_point.display(),
                mount_point.display()
            ),
            DataDirError::Io(_) => {
                "check the disk and the permissions of the data directory".into()
            }
        }
    }
}

/// An opened, locked data directory. The lock is held while this value lives.
#[derive(Debug)]
pub struct DataDir {
    pub path: PathBuf,
    pub shard_count: u16,
    /// True when this open created the directory's metadata.
    pub created: bool,
    /// True when this open created the directory itself.
    created_dir: bool,
    _lock: File,
}

impl DataDir {
    pub fn meta_path(&self) -> PathBuf {
        self.path.join(META_FILE)
    }

    /// Open (or create) `path`. `requested` is the shard count asked for;
    /// `default_shards` applies to a new directory when nothing was asked.
    ///
    /// A new directory (no corekv.meta yet) is refused when its parent does
    /// not exist (missing parents are never created) or when it would lie
    /// under an /etc/fstab mount point with nothing mounted: both usually mean
    /// a volume that is not mounted, and serving an empty database from the
    /// file system underneath would look healthy while the data is elsewhere.
    pub fn open(
        path: &Path,
        requested: Option<u16>,
        default_shards: u16,
    ) -> Result<DataDir, DataDirError> {
        check_creatable(path)?;
        // 0700: the directory holds every key and value in the clear.
        let created_dir = match super::disk::create_private_dir(path) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && path.is_dir() => false,
            Err(source) => {
                return Err(DataDirError::Unusable {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let lock = lock(path)?;
        check_direct_io(path)?;
        let (shard_count, created) = match recorded_shard_count(path)? {
            Some(stored) => {
                if let Some(requested) = requested {
                    if requested != stored {
                        return Err(DataDirError::ShardCountMismatch {
                            path: path.to_path_buf(),
                            stored,
                            requested,
                        });
                    }
                }
                (stored, false)
            }
            None => {
                if has_shard_dirs(path)? {
                    return Err(DataDirError::MetaMissing {
                        path: path.to_path_buf(),
                    });
                }
                let count = requested.unwrap_or(default_shards);
                assert!(count >= 1 && usize::from(count) <= SHARDS_MAX);
                write_meta(path, count)?;
                (count, true)
            }
        };
        Ok(DataDir {
            path: path.to_path_buf(),
            shard_count,
            created,
            created_dir,
            _lock: lock,
        })
    }

    /// Undo a first start that failed before it served: remove the
    /// corekv.meta this open wrote and the shard directories created after it
    /// (nothing was ever acknowledged from them), and the directory itself if
    /// this open created it and it is then empty. The next start is a first
    /// start again, free to choose its shard count. Does nothing for a
    /// directory that already had a corekv.meta: its data is never touched.
    /// Best effort: what cannot be removed is logged and left.
    pub fn discard_unserved(self) {
        if !self.created {
            return;
        }
        let mut targets = vec![self.path.join(META_FILE)];
        if let Ok(entries) = fs::read_dir(&self.path) {
            // Every shard-* entry was made after `open` found none (else it
            // would have refused with DATA_DIR_META_MISSING).
            targets.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with("shard-"))
                    .map(|e| e.path()),
            );
        }
        for target in &targets {
            let removed = if target.is_dir() {
                fs::remove_dir_all(target)
            } else {
                fs::remove_file(target)
            };
            if let Err(e) = removed {
                tracing::warn!(
                    "could not remove {} after a failed first start: {e}",
                    target.display()
                );
            }
        }
        tracing::info!(
            "removed the corekv.meta and shard directories this failed first start created in {}: the next start is a first start",
            self.path.display()
        );
        if self.created_dir {
            let _ = fs::remove_file(self.path.join(LOCK_FILE));
            // Fails (and keeps the directory) if anything else is inside.
            let _ = fs::remove_dir(&self.path);
        }
        drop(self._lock);
    }
}

/// The rule for a data directory that has never served (no corekv.meta):
/// its parent must exist (corekv never creates missing parents) and it must
/// not lie under an /etc/fstab mount point with nothing mounted. `serve`
/// (through [`DataDir::open`]) and `config check` both apply it, so check's
/// "ok" means serve will start. A directory with a corekv.meta has served and
/// is opened as it is.
pub fn check_creatable(path: &Path) -> Result<(), DataDirError> {
    let exists = path.is_dir();
    if exists && path.join(META_FILE).exists() {
        return Ok(());
    }
    check_mounted(path)?;
    if !exists {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            if !parent.is_dir() {
                return Err(DataDirError::ParentMissing {
                    path: path.to_path_buf(),
                    parent: parent.to_path_buf(),
                });
            }
        }
    }
    Ok(())
}

/// DATA_DIR_NOT_MOUNTED when `path` lies under (or is) an /etc/fstab mount
/// point that /proc/self/mountinfo does not show mounted. Without either
/// file (containers, other systems) there is nothing to check.
fn check_mounted(path: &Path) -> Result<(), DataDirError> {
    let (Ok(fstab), Ok(mountinfo)) = (
        fs::read_to_string("/etc/fstab"),
        fs::read_to_string("/proc/self/mountinfo"),
    ) else {
        return Ok(());
    };
    match unmounted_fstab_ancestor(path, &fstab, &mountinfo) {
        Some(mount_point) => Err(DataDirError::NotMounted {
            path: path.to_path_buf(),
            mount_point,
        }),
        None => Ok(()),
    }
}

/// The nearest ancestor of `path` (itself included) that `fstab` lists as a
/// mount point and `mountinfo` (the text of /proc/self/mountinfo) does not
/// show mounted. Swap entries and `/` are ignored. Pure, for tests.
pub fn unmounted_fstab_ancestor(path: &Path, fstab: &str, mountinfo: &str) -> Option<PathBuf> {
    let listed: Vec<PathBuf> = fstab
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let (point, fstype) = (fields.get(1)?, fields.get(2).copied().unwrap_or(""));
            (point.starts_with('/') && *point != "/" && fstype != "swap")
                .then(|| PathBuf::from(unescape_mount_field(point)))
        })
        .collect();
    let mounted: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(|p| PathBuf::from(unescape_mount_field(p)))
        .collect();
    path.ancestors()
        .find(|a| listed.iter().any(|l| l == a) && !mounted.iter().any(|m| m == a))
        .map(Path::to_path_buf)
}

/// fstab and mountinfo write a space as `\040` (and tab, newline, backslash
/// likewise, in octal).
fn unescape_mount_field(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                let v = d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                out.push(v as u8);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// For read-only checks (`corekv verify`): hold a shared lock on the
/// directory's LOCK file if it has one, so no server can start on it while it
/// is read, without creating or writing anything (the directory may be on
/// read-only media, or a backup that must stay as it was). `None`: no LOCK
/// file, so no server has ever run here (a backup, or a never-started
/// directory).
pub fn lock_for_reading(path: &Path) -> Result<Option<File>, DataDirError> {
    let lock_path = path.join(LOCK_FILE);
    let file = match File::open(&lock_path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(DataDirError::Unusable {
                path: lock_path,
                source,
            })
        }
    };
    flock(&file, libc::LOCK_SH, path, &lock_path)?;
    Ok(Some(file))
}

/// Whether something holds `path`'s LOCK file (a server, or a reader such as
/// `verify`); false when there is no LOCK file. For a restore that must not
/// write into a directory in use. The probe takes the lock exclusively, as a
/// server would, and lets it go at once.
pub fn is_held(path: &Path) -> Result<bool, IoError> {
    let lock_path = path.join(LOCK_FILE);
    let file = match File::open(&lock_path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(IoError::new(IoOp::Open, &lock_path, None, e)),
    };
    Ok(flock(&file, libc::LOCK_EX, path, &lock_path).is_err())
}

/// How long a lock recorded as this process's own may take to come free.
/// A flock belongs to the open file description, and a child that another
/// thread of this process is spawning holds a copy of every descriptor from
/// its fork until its exec closes them (O_CLOEXEC). A directory closed by one
/// engine and reopened by the next in the same process (an embedding
/// application, the test suite) can meet that window; it lasts microseconds to
/// milliseconds. A directory that this process really still holds stays
/// locked, and is reported as such once the bound has passed; so is one held
/// by a process in another PID namespace that has our number (corekv as PID 1
/// in two containers sharing a volume), only a second later.
const OWN_LOCK_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// `flock(op | LOCK_NB)` on `file`, the LOCK file of `path`: DATA_DIR_LOCKED if
/// another process holds it. When the holder recorded in the file is this
/// process, retried for up to [`OWN_LOCK_GRACE`] first (see there).
fn flock(file: &File, op: libc::c_int, path: &Path, lock_path: &Path) -> Result<(), DataDirError> {
    let started = std::time::Instant::now();
    let me = std::process::id().to_string();
    loop {
        // SAFETY: flock on a file descriptor we own; no memory is shared with the kernel.
        let rc = unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(());
        }
        let err = locked(path, lock_path);
        let own = matches!(&err, DataDirError::Locked { holder, .. } if *holder == me);
        if !own || started.elapsed() >= OWN_LOCK_GRACE {
            return Err(err);
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// The error for a directory another process holds, naming its pid.
fn locked(path: &Path, lock_path: &Path) -> DataDirError {
    let holder = fs::read_to_string(lock_path)
        .unwrap_or_default()
        .trim()
        .to_string();
    DataDirError::Locked {
        path: path.to_path_buf(),
        holder,
    }
}

fn lock(path: &Path) -> Result<File, DataDirError> {
    let lock_path = path.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(super::disk::PRIVATE_FILE_MODE)
        .open(&lock_path)
        .map_err(|source| DataDirError::Unusable {
            path: lock_path.clone(),
            source,
        })?;
    flock(&file, libc::LOCK_EX, path, &lock_path)?;
    // Record who holds it, for the error message another process would print.
    file.set_len(0)
        .map_err(|e| IoError::new(IoOp::Truncate, &lock_path, None, e))?;
    file.write_all(format!("{}\n", std::process::id()).as_bytes())
        .map_err(|e| IoError::new(IoOp::Write, &lock_path, None, e))?;
    Ok(file)
}

/// Fail with DIRECT_IO_UNSUPPORTED unless files in `path` can be opened with O_DIRECT.
pub fn check_direct_io(path: &Path) -> Result<(), DataDirError> {
    let probe = path.join(".direct-io-probe");
    let result = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .mode(super::disk::PRIVATE_FILE_MODE)
        .open(&probe);
    let _ = fs::remove_file(&probe);
    match result {
        Ok(_) => Ok(()),
        Err(source) if source.raw_os_error() == Some(libc::EINVAL) => {
            Err(DataDirError::DirectIoUnsupported {
                path: path.to_path_buf(),
                source,
            })
        }
        Err(source) => Err(DataDirError::Unusable {
            path: probe,
            source,
        }),
    }
}

fn has_shard_dirs(path: &Path) -> Result<bool, DataDirError> {
    let entries = fs::read_dir(path).map_err(|e| IoError::new(IoOp::ListDir, path, None, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| IoError::new(IoOp::ListDir, path, None, e))?;
        if entry.file_name().to_string_lossy().starts_with("shard-") {
            return Ok(true);
        }
    }
    Ok(false)
}

pub fn encode_meta(shard_count: u16, created_unix_ms: u64) -> Vec<u8> {
    let mut block = vec![0u8; SECTOR_BYTES];
    block[0..8].copy_from_slice(META_MAGIC);
    block[8..12].copy_from_slice(&META_FORMAT_VERSION.to_le_bytes());
    block[12..14].copy_from_slice(&shard_count.to_le_bytes());
    block[16..24].copy_from_slice(&created_unix_ms.to_le_bytes());
    let crc = crc32c(&block[..SECTOR_BYTES - 4]);
    block[SECTOR_BYTES - 4..].copy_from_slice(&crc.to_le_bytes());
    block
}

/// The shard count recorded in `path`'s corekv.meta, read without locking or
/// creating anything: `Ok(None)` when the directory has none yet. The one
/// reader of the file, for `open` and for checks before a start (`config
/// check`, `connection_shards`).
pub fn recorded_shard_count(path: &Path) -> Result<Option<u16>, DataDirError> {
    let meta_path = path.join(META_FILE);
    match fs::read(&meta_path) {
        Ok(bytes) => decode_meta(&bytes)
            .map(Some)
            .map_err(|detail| DataDirError::MetaCorrupt {
                path: meta_path,
                detail,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(IoError::new(IoOp::Read, &meta_path, None, e).into()),
    }
}

/// The shard count recorded in a metadata block, or what is wrong with it.
pub fn decode_meta(bytes: &[u8]) -> Result<u16, String> {
    if bytes.len() != SECTOR_BYTES {
        return Err(format!(
            "expected {SECTOR_BYTES} bytes, found {}",
            bytes.len()
        ));
    }
    if &bytes[0..8] != META_MAGIC {
        return Err("wrong magic: not a corekv metadata file".into());
    }
    let stored_crc = u32::from_le_bytes([bytes[4092], bytes[4093], bytes[4094], bytes[4095]]);
    let crc = crc32c(&bytes[..SECTOR_BYTES - 4]);
    if crc != stored_crc {
        return Err(format!(
            "checksum mismatch (stored {stored_crc:#010x}, computed {crc:#010x})"
        ));
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version != META_FORMAT_VERSION {
        return Err(format!(
            "format version {version} is not supported (this build reads {META_FORMAT_VERSION})"
        ));
    }
    let count = u16::from_le_bytes([bytes[12], bytes[13]]);
    if count == 0 || usize::from(count) > SHARDS_MAX {
        return Err(format!("impossible shard count {count}"));
    }
    Ok(count)
}

fn write_meta(dir: &Path, shard_count: u16) -> Result<(), DataDirError> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let tmp = dir.join(format!("{META_FILE}.tmp"));
    let dst = dir.join(META_FILE);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(super::disk::PRIVATE_FILE_MODE)
        .open(&tmp)
        .map_err(|e| IoError::new(IoOp::Open, &tmp, None, e))?;
    f.write_all(&encode_meta(shard_count, now_ms))
        .map_err(|e| IoError::new(IoOp::Write, &tmp, None, e))?;
    f.sync_all()
        .map_err(|e| IoError::new(IoOp::Sync, &tmp, None, e))?;
    drop(f);
    fs::rename(&tmp, &dst).map_err(|e| IoError::new(IoOp::Rename, &tmp, None, e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| IoError::new(IoOp::SyncDir, dir, None, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trip_and_damage() {
        let block = encode_meta(7, 123);
        assert_eq!(decode_meta(&block), Ok(7));
        for i in [0usize, 12, 100, 4095] {
            let mut bad = block.clone();
            bad[i] ^= 0x40;
            assert!(decode_meta(&bad).is_err(), "flip at {i} not detected");
        }
        assert!(decode_meta(&block[..100]).is_err());
    }

    /// A copy of the LOCK file's descriptor that outlives the engine's own
    /// (a child between fork and exec) keeps the flock for a moment; a reopen
    /// in the same process waits for it instead of failing DATA_DIR_LOCKED.
    /// Without the grace this reopen fails at once (the storage model test
    /// met it in CI: `engine starts: DataDir(Locked { .. holder: <own pid> })`).
    #[test]
    fn a_lock_copy_held_for_a_moment_does_not_refuse_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock(dir.path()).unwrap();
        // SAFETY: dup of a descriptor we own; the copy is closed below.
        let copy = unsafe { libc::dup(first.as_raw_fd()) };
        assert!(copy >= 0);
        drop(first);
        let closer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            // SAFETY: closes the copy made above, once.
            unsafe { libc::close(copy) };
        });
        let started = std::time::Instant::now();
        let second = lock(dir.path());
        closer.join().unwrap();
        assert!(second.is_ok(), "{:?}", second.err());
        assert!(started.elapsed() >= std::time::Duration::from_millis(90));
        // Held for real (not released), it is still reported, after the grace.
        let held = lock(dir.path()).unwrap_err();
        assert_eq!(held.name(), "DATA_DIR_LOCKED");
        drop(second);
    }

    #[test]
    fn create_reopen_and_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        let d = DataDir::open(&path, None, 3).unwrap();
        assert_eq!(d.shard_count, 3);
        assert!(d.created);
        let locked = DataDir::open(&path, None, 3).unwrap_err();
        assert_eq!(locked.name(), "DATA_DIR_LOCKED");
        drop(d);
        let d = DataDir::open(&path, None, 8).unwrap();
        assert_eq!(d.shard_count, 3, "stored count wins when none is requested");
        assert!(!d.created);
        drop(d);
        let err = DataDir::open(&path, Some(4), 8).unwrap_err();
        assert_eq!(err.name(), "SHARD_COUNT_MISMATCH");
        assert!(err.fix().contains("--shards 3"));
    }

    const MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
23 22 8:17 / /srv/data rw,relatime shared:2 - xfs /dev/sdb1 rw
24 22 8:33 / /mnt/with\\040space rw,relatime shared:3 - xfs /dev/sdc1 rw
";

    const FSTAB: &str = "\
# <file system> <mount point> <type> <options> <dump> <pass>
UUID=aaaa /             ext4 errors=remount-ro 0 1
UUID=bbbb /srv/data     xfs  defaults,nofail   0 2
UUID=cccc /mnt/disk2    xfs  defaults,nofail   0 2
UUID=dddd /mnt/with\\040space xfs defaults 0 2
/swapfile none          swap sw                0 0
";

    #[test]
    fn fstab_mount_points_that_are_not_mounted_are_found() {
        let check = |p: &str| unmounted_fstab_ancestor(Path::new(p), FSTAB, MOUNTINFO);
        // Under a listed mount point that is not mounted: refused, naming it.
        assert_eq!(
            check("/mnt/disk2/corekv"),
            Some(PathBuf::from("/mnt/disk2"))
        );
        assert_eq!(check("/mnt/disk2"), Some(PathBuf::from("/mnt/disk2")));
        // Mounted, or not a mount point at all, or the root: fine.
        assert_eq!(check("/srv/data/corekv"), None);
        assert_eq!(check("/mnt/with space/corekv"), None);
        assert_eq!(check("/var/lib/corekv"), None);
        assert_eq!(
            check("/mnt/disk"),
            None,
            "a prefix of a name is not an ancestor"
        );
        // Swap and comments are no mount points.
        assert_eq!(check("/swapfile/x"), None);
        // With the second disk unmounted as well, its path is named.
        let without_sdb = MOUNTINFO.replace("/srv/data", "/elsewhere");
        assert_eq!(
            unmounted_fstab_ancestor(Path::new("/srv/data/d"), FSTAB, &without_sdb),
            Some(PathBuf::from("/srv/data"))
        );
    }

    #[test]
    fn a_missing_parent_is_never_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not-there").join("data");
        let err = DataDir::open(&path, None, 1).unwrap_err();
        assert_eq!(err.name(), "DATA_DIR_PARENT_MISSING");
        assert!(err.fix().contains("mkdir -p"), "{}", err.fix());
        assert!(!dir.path().join("not-there").exists());
    }

    #[test]
    fn discarding_a_failed_first_start_leaves_a_first_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        let d = DataDir::open(&path, Some(3), 3).unwrap();
        fs::create_dir_all(wal_dir(&path, 0)).unwrap();
        d.discard_unserved();
        assert!(!path.exists(), "the directory this start created is gone");
        // A directory that existed keeps everything but what the start made.
        fs::create_dir(&path).unwrap();
        fs::write(path.join("notes.txt"), b"mine").unwrap();
        let d = DataDir::open(&path, Some(3), 3).unwrap();
        fs::create_dir_all(wal_dir(&path, 2)).unwrap();
        d.discard_unserved();
        assert!(path.join("notes.txt").exists());
        assert!(!path.join(META_FILE).exists());
        assert!(!shard_dir(&path, 2).exists());
        let d = DataDir::open(&path, Some(1), 3).unwrap();
        assert_eq!(d.shard_count, 1, "the next start chose its own count");
        drop(d);
        // A directory that had a corekv.meta is never touched.
        let d = DataDir::open(&path, None, 3).unwrap();
        assert!(!d.created);
        d.discard_unserved();
        assert!(path.join(META_FILE).exists());
    }

    #[test]
    fn missing_meta_with_shards_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(shard_dir(dir.path(), 0)).unwrap();
        let err = DataDir::open(dir.path(), None, 2).unwrap_err();
        assert_eq!(err.name(), "DATA_DIR_META_MISSING");
    }
}
