//! What one shard does for a backup: pause (close the write gate, wait for
//! the writes past it, make everything appended durable, note the cut, link
//! the tables), resume, finish (copy the WAL tail up to the cut and checksum)
//! and abort, each executed as a BACKUP operation sent by the coordinator.
//!
//! The file work (linking tables, copying the WAL tail, checksums, the
//! manifest) is `io::backup_files`, generic over the disk: in production it
//! runs on a helper thread through the blocking `StdDisk`; in the simulation
//! it runs on the simulated disk, interleaved with everything else.
//!
//! It must never: block the executor (file work runs on a helper thread),
//! fail a write because of a backup (writes wait at the gate, and a pause
//! lifts itself at its deadline), copy bulk data while writes are paused
//! (tables are hard-linked; the WAL is copied after resuming), or let WAL
//! segments a running backup still needs be recycled.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, TryRecvError};
use std::time::{Duration, Instant};

use futures_lite::future;

use crate::core::backup_format::{BackupBody, BackupFileEntry, BackupShardEntry};
use crate::core::status::Status;
use crate::io::backup_files::{
    copy_wal_tail, link_shard_tables, seal_backup, seal_shard, BackupFileError, WalCut,
};
use crate::io::std_disk::StdDisk;
use crate::io::Disk;

use crate::shard::ops::ReplyBatch;
use crate::shard::state::ShardState;
use crate::shard::wake::sleep_unless_simulated;
pub use crate::shard::write_gate::PAUSE_DEADLINE;

pub(in crate::shard) const PHASE_PAUSE: u8 = 1;
pub(in crate::shard) const PHASE_RESUME: u8 = 2;
pub(in crate::shard) const PHASE_FINISH: u8 = 3;
pub(in crate::shard) const PHASE_ABORT: u8 = 4;

/// Why a backup failed: the status to answer with and a sentence for the
/// operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupFailure {
    pub status: Status,
    pub detail: String,
}

impl BackupFailure {
    pub(in crate::shard) fn failed(detail: String) -> BackupFailure {
        BackupFailure {
            status: Status::BackupFailed,
            detail,
        }
    }
}

impl From<BackupFileError> for BackupFailure {
    fn from(e: BackupFileError) -> Self {
        let status = match e {
            BackupFileError::TargetInvalid { .. } => Status::BackupTargetInvalid,
            _ => Status::BackupFailed,
        };
        BackupFailure {
            status,
            detail: e.to_string(),
        }
    }
}

/// Run `f` on a helper thread, off the shard's core, and wait for it without
/// blocking the executor (polled with timer sleeps; the work takes
/// milliseconds to seconds, so a few milliseconds of polling delay is noise).
pub async fn off_executor<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, BackupFailure> {
    let (tx, rx) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("corekv-backup".into())
        .spawn(move || {
            unpin_from_shard_core();
            let _ = tx.send(f());
        })
        .map_err(|e| BackupFailure::failed(format!("cannot start a thread to {what}: {e}")))?;
    let mut nap = Duration::from_micros(100);
    loop {
        match rx.try_recv() {
            Ok(v) => return Ok(v),
            Err(TryRecvError::Empty) => {
                glommio::timer::sleep(nap).await;
                nap = (nap * 2).min(Duration::from_millis(5));
            }
            Err(TryRecvError::Disconnected) => {
                return Err(BackupFailure {
                    status: Status::Internal,
                    detail: format!("the thread that was to {what} panicked"),
                })
            }
        }
    }
}

/// A thread spawned by a shard inherits its pinning to the shard's core; give
/// it the process's CPUs instead so that copying does not compete with the
/// shard. Best effort: if it fails, the copy just shares the core.
fn unpin_from_shard_core() {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity of the process id
    // reads the main (unpinned) thread's mask into it and sched_setaffinity(0)
    // applies it to this thread. No memory is shared beyond the call.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let size = std::mem::size_of::<libc::cpu_set_t>();
        if libc::sched_getaffinity(libc::getpid(), size, &mut set) == 0 {
            libc::sched_setaffinity(0, size, &set);
        }
    }
}

/// One step of a backup's file work, owning its arguments so that it can go
/// to a helper thread, and generic over the disk it runs on.
pub(in crate::shard) trait FileJob: Send + 'static {
    type Out: Send + 'static;
    async fn run<X: Disk>(self, disk: &X) -> Result<Self::Out, BackupFileError>;
}

/// Link (or copy) a shard's tables and manifest into the backup.
struct LinkTables {
    data_dir: PathBuf,
    target: PathBuf,
    shard: u16,
    table_ids: Vec<u64>,
}

impl FileJob for LinkTables {
    type Out = ();
    async fn run<X: Disk>(self, disk: &X) -> Result<(), BackupFileError> {
        link_shard_tables(
            disk,
            &self.data_dir,
            &self.target,
            self.shard,
            &self.table_ids,
        )
        .await
    }
}

/// Copy a shard's WAL up to its cut, then checksum its files.
struct CopyWal {
    data_dir: PathBuf,
    target: PathBuf,
    shard: u16,
    cut: WalCut,
}

impl FileJob for CopyWal {
    type Out = Vec<BackupFileEntry>;
    async fn run<X: Disk>(self, disk: &X) -> Result<Vec<BackupFileEntry>, BackupFileError> {
        copy_wal_tail(disk, &self.data_dir, &self.target, self.shard, self.cut).await?;
        seal_shard(disk, &self.target, self.shard).await
    }
}

/// Copy corekv.meta and write the backup's manifest, last.
pub(in crate::shard) struct Seal {
    pub(in crate::shard) target: PathBuf,
    pub(in crate::shard) data_dir: PathBuf,
    pub(in crate::shard) body: BackupBody,
}

impl FileJob for Seal {
    type Out = BackupBody;
    async fn run<X: Disk>(self, disk: &X) -> Result<BackupBody, BackupFileError> {
        seal_backup(disk, &self.target, &self.data_dir, self.body).await
    }
}

/// Run `job` where `D` says bulk copies belong: on a helper thread through
/// the blocking [`StdDisk`] (production), or on `disk` itself (simulation).
pub(in crate::shard) async fn file_work<D: Disk, J: FileJob>(
    disk: &D,
    what: &'static str,
    job: J,
) -> Result<J::Out, BackupFailure> {
    if D::BULK_COPIES_ON_HELPER_THREAD {
        // StdDisk's futures are ready at once: block_on never parks.
        Ok(off_executor(what, move || {
            futures_lite::future::block_on(job.run(&StdDisk))
        })
        .await??)
    } else {
        Ok(job.run(disk).await?)
    }
}

impl<D: Disk> ShardState<D> {
    /// Execute one backup phase sent by a coordinator.
    pub(in crate::shard) async fn backup_op(&self, key: &[u8], value: &[u8], out: &mut ReplyBatch) {
        let Ok(id) = <[u8; 8]>::try_from(key).map(u64::from_le_bytes) else {
            return out.push(Status::Internal, b"malformed backup id", 0);
        };
        let result = match value.split_first() {
            Some((&PHASE_PAUSE, target)) => {
                self.backup_pause(id, Path::new(OsStr::from_bytes(target)))
                    .await
            }
            Some((&PHASE_RESUME, _)) => self.backup_resume(id),
            Some((&PHASE_FINISH, _)) => self.backup_finish(id).await,
            Some((&PHASE_ABORT, _)) => {
                self.backup_abort(id);
                Ok(Vec::new())
            }
            _ => Err(BackupFailure {
                status: Status::Internal,
                detail: "malformed backup phase".into(),
            }),
        };
        match result {
            Ok(body) => out.push(Status::Ok, &body, 0),
            Err(f) => out.push(f.status, f.detail.as_bytes(), 0),
        }
    }

    /// The coordinator's steps, one shard at a time: pause (close the gate,
    /// take the cut, link the tables), resume, finish (copy the WAL tail and
    /// checksum), abort. Public for the simulation, which replays the
    /// coordinator step by step; the server reaches them through `backup_op`.
    pub async fn backup_pause(&self, id: u64, target: &Path) -> Result<Vec<u8>, BackupFailure> {
        let gate = &self.backup;
        if gate.is_busy() {
            return Err(BackupFailure {
                status: Status::BackupInProgress,
                detail: format!("shard {}: another backup is running", self.id.0),
            });
        }
        if let Some(reason) = self.commit.failure() {
            return Err(BackupFailure::failed(format!(
                "shard {}: its WAL failed ({reason}); restart the server before a backup",
                self.id.0
            )));
        }
        gate.paused.set(Some((id, Instant::now() + PAUSE_DEADLINE)));
        gate.expired.set(None);
        gate.held_by.set(Some(id));
        self.commit.hold_recycling();
        let cut = future::or(async { Some(self.take_cut(target).await) }, async {
            sleep_unless_simulated(PAUSE_DEADLINE).await;
            None
        })
        .await;
        let result = cut.unwrap_or_else(|| {
            Err(BackupFailure::failed(format!(
                "shard {}: no consistent cut within {PAUSE_DEADLINE:?} (a slow disk, or table \
                 copies across filesystems: put the backup on the data directory's filesystem)",
                self.id.0
            )))
        });
        if result.is_err() {
            self.backup_abort(id);
        }
        result
    }

    /// With the gate closed: wait for the writes already past it, make
    /// everything appended durable, note where the log ends, and link the
    /// tables of the current manifest into the backup.
    async fn take_cut(&self, target: &Path) -> Result<Vec<u8>, BackupFailure> {
        let gate = &self.backup;
        gate.changed
            .until(|| (gate.writers.get() == 0).then_some(()))
            .await;
        let cut_lsn = self.commit.next_lsn() - 1;
        if self.commit.wait_durable(cut_lsn).await.is_err() {
            return Err(BackupFailure::failed(format!(
                "shard {}: the WAL failed while the backup waited for it",
                self.id.0
            )));
        }
        // Nothing appends while paused, so the log ends here until resumed.
        let (segment, offset) = self.commit.wal_end();
        let data_dir = self
            .lsm
            .dir()
            .parent()
            .map(Path::to_path_buf)
            .ok_or_else(|| BackupFailure::failed("the shard directory has no parent".into()))?;
        let (manifest, edit) = self.lsm.hold_manifest().await;
        let ids: Vec<u64> = manifest.tables.iter().map(|t| t.id).collect();
        let shard = self.id.0;
        let job = LinkTables {
            data_dir: data_dir.clone(),
            target: target.to_path_buf(),
            shard,
            table_ids: ids.clone(),
        };
        file_work(&self.lsm.disk, "link tables into the backup", job).await?;
        drop(edit);
        let wal = WalCut {
            cutoff_lsn: manifest.wal_cutoff_lsn,
            segment,
            offset,
        };
        *gate.cut.borrow_mut() = Some((target.to_path_buf(), data_dir, wal));
        let entry = BackupShardEntry {
            shard,
            cut_lsn,
            wal_cutoff_lsn: manifest.wal_cutoff_lsn,
            wal_cut_segment: segment,
            wal_cut_offset: offset,
            tables: ids.len() as u32,
        };
        serde_json::to_vec(&entry).map_err(|e| BackupFailure::failed(e.to_string()))
    }

    pub fn backup_resume(&self, id: u64) -> Result<Vec<u8>, BackupFailure> {
        let gate = &self.backup;
        let late = match gate.paused.get() {
            Some((p, deadline)) if p == id => {
                gate.lift(id);
                Instant::now() > deadline
            }
            _ if gate.expired.get() == Some(id) => true,
            _ => {
                return Err(BackupFailure::failed(format!(
                    "shard {}: not paused for this backup",
                    self.id.0
                )))
            }
        };
        if late {
            return Err(BackupFailure::failed(format!(
                "shard {}: writes stayed paused past {PAUSE_DEADLINE:?}, so the pause was lifted \
                 before every shard was cut; the backup would not be consistent",
                self.id.0
            )));
        }
        Ok(Vec::new())
    }

    /// After every shard resumed: copy this shard's WAL up to its cut, checksum
    /// its files, and let recycling go on.
    pub async fn backup_finish(&self, id: u64) -> Result<Vec<u8>, BackupFailure> {
        let taken = match self.backup.held_by.get() {
            Some(h) if h == id => self.backup.cut.borrow_mut().take(),
            _ => None,
        };
        let Some((target, data_dir, wal)) = taken else {
            return Err(BackupFailure::failed(format!(
                "shard {}: holds no cut for this backup",
                self.id.0
            )));
        };
        let job = CopyWal {
            data_dir,
            target,
            shard: self.id.0,
            cut: wal,
        };
        let copied = file_work(&self.lsm.disk, "copy the WAL into the backup", job).await;
        self.release_hold(id);
        let entries = copied?;
        serde_json::to_vec(&entries).map_err(|e| BackupFailure::failed(e.to_string()))
    }

    fn release_hold(&self, id: u64) {
        if self.backup.held_by.get() == Some(id) {
            self.backup.held_by.set(None);
            self.commit.release_recycling();
        }
    }

    /// Undo whatever this backup holds here. Idempotent.
    pub fn backup_abort(&self, id: u64) {
        self.backup.lift(id);
        if self.backup.held_by.get() == Some(id) {
            *self.backup.cut.borrow_mut() = None;
        }
        self.release_hold(id);
    }
}
