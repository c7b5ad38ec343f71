//! Online, consistent backup. It owns the write gate a shard closes while a
//! backup takes its cut, the phases a shard runs for a backup (pause, resume,
//! finish, abort), and the coordinator that runs those phases on every shard
//! for one BACKUP request.
//!
//! Why the cut is consistent (docs/architecture.md, "Backup"): the coordinator
//! pauses the shards one after another and resumes them only once all are
//! paused. A paused shard appends nothing, so a write that lands after some
//! shard's cut is acknowledged only after every shard was cut, and whatever a
//! client issues after that acknowledgement lands after every cut too. Each
//! client's history in the backup is therefore a prefix, across shards.
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

use std::cell::{Cell, RefCell};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, TryRecvError};
use std::time::{Duration, Instant};

use futures_lite::future;

use crate::core::backup_format::{
    BackupBody, BackupFileEntry, BackupShardEntry, BACKUP_FORMAT_VERSION,
};
use crate::core::status::Status;
use crate::core::types::ShardId;
use crate::io::backup_files::{
    copy_wal_tail, link_shard_tables, prepare_backup_target, seal_backup, seal_shard,
    BackupFileError, WalCut,
};
use crate::io::std_disk::StdDisk;
use crate::io::Disk;

use super::context::ShardContext;
use super::ops::{OpKind, ReplyBatch};
use super::router::RoutedBatch;
use super::state::ShardState;
use super::sync::{sleep_unless_simulated, WaitQueue};

/// Writes never wait for a backup longer than this: a shard paused this long
/// lifts the pause itself, and the backup fails.
pub const PAUSE_DEADLINE: Duration = Duration::from_secs(10);

const PHASE_PAUSE: u8 = 1;
const PHASE_RESUME: u8 = 2;
const PHASE_FINISH: u8 = 3;
const PHASE_ABORT: u8 = 4;

/// Why a backup failed: the status to answer with and a sentence for the
/// operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupFailure {
    pub status: Status,
    pub detail: String,
}

impl BackupFailure {
    fn failed(detail: String) -> BackupFailure {
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

/// One shard's backup state. Lives on the shard's core.
#[derive(Default)]
pub struct BackupGate {
    /// The backup that has writes paused, and when the pause lifts itself.
    paused: Cell<Option<(u64, Instant)>>,
    /// A pause that reached its deadline and lifted itself: that backup fails.
    expired: Cell<Option<u64>>,
    /// The backup holding WAL recycling, from its pause to its finish.
    held_by: Cell<Option<u64>>,
    /// What the pause captured, for the finish: target, data dir, WAL cut.
    cut: RefCell<Option<(PathBuf, PathBuf, WalCut)>>,
    /// Write operations past the gate that may still append.
    writers: Cell<usize>,
    changed: WaitQueue,
}

/// Held by a write from the gate until it has appended (or given up).
pub struct WriteTicket<'a> {
    gate: &'a BackupGate,
}

impl Drop for WriteTicket<'_> {
    fn drop(&mut self) {
        let left = self.gate.writers.get() - 1;
        self.gate.writers.set(left);
        if left == 0 && self.gate.paused.get().is_some() {
            self.gate.changed.wake_all();
        }
    }
}

impl BackupGate {
    /// Wait while a backup has writes paused, then count this write in until
    /// the ticket drops. Costs two Cell updates when no backup runs.
    pub async fn enter_write(&self) -> WriteTicket<'_> {
        while let Some((id, deadline)) = self.paused.get() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.expire(id);
                break;
            }
            let opened = self
                .changed
                .until(|| self.paused.get().is_none().then_some(()));
            future::or(opened, sleep_unless_simulated(left)).await;
        }
        // No await between the check above and this: a pause that begins now
        // sees this write and waits for it.
        self.writers.set(self.writers.get() + 1);
        WriteTicket { gate: self }
    }

    fn expire(&self, id: u64) {
        if matches!(self.paused.get(), Some((p, _)) if p == id) {
            self.paused.set(None);
            self.expired.set(Some(id));
            self.changed.wake_all();
            tracing::warn!(
                error = "BACKUP_FAILED",
                "a backup kept writes paused past {PAUSE_DEADLINE:?}: writes resumed and that backup fails"
            );
        }
    }

    fn lift(&self, id: u64) {
        if matches!(self.paused.get(), Some((p, _)) if p == id) {
            self.paused.set(None);
            self.changed.wake_all();
        }
    }

    /// Whether a backup is between its pause and its finish here.
    pub fn is_busy(&self) -> bool {
        self.paused.get().is_some() || self.held_by.get().is_some()
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
trait FileJob: Send + 'static {
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
struct Seal {
    target: PathBuf,
    data_dir: PathBuf,
    body: BackupBody,
}

impl FileJob for Seal {
    type Out = BackupBody;
    async fn run<X: Disk>(self, disk: &X) -> Result<BackupBody, BackupFileError> {
        seal_backup(disk, &self.target, &self.data_dir, self.body).await
    }
}

/// Run `job` where `D` says bulk copies belong: on a helper thread through
/// the blocking [`StdDisk`] (production), or on `disk` itself (simulation).
async fn file_work<D: Disk, J: FileJob>(
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
    pub(super) async fn backup_op(&self, key: &[u8], value: &[u8], out: &mut ReplyBatch) {
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

/// Send one phase to one shard and wait for its answer.
async fn phase(
    ctx: &ShardContext,
    batch: &mut RoutedBatch,
    shard: u16,
    id: u64,
    phase: u8,
    arg: &[u8],
) -> Result<Vec<u8>, BackupFailure> {
    batch.clear();
    let mut value = Vec::with_capacity(1 + arg.len());
    value.push(phase);
    value.extend_from_slice(arg);
    batch.push(ShardId(shard), OpKind::Backup, &id.to_le_bytes(), &value);
    ctx.router.execute(batch).await;
    let (status, body) = batch.replies(ShardId(shard)).get(0);
    reply_result(shard, status, body)
}

fn reply_result(shard: u16, status: Status, body: &[u8]) -> Result<Vec<u8>, BackupFailure> {
    let detail = String::from_utf8_lossy(body).into_owned();
    match status {
        Status::Ok => Ok(body.to_vec()),
        Status::BackupFailed | Status::BackupTargetInvalid | Status::BackupInProgress => {
            Err(BackupFailure { status, detail })
        }
        other => Err(BackupFailure::failed(format!(
            "shard {shard}: {}: {detail}",
            other.name()
        ))),
    }
}

async fn abort_all(ctx: &ShardContext, batch: &mut RoutedBatch, id: u64) {
    for s in 0..ctx.shard_count() {
        // Abort undoes only what this backup holds; a shard that never paused
        // has nothing to undo, and one that stopped cannot hold anything.
        let _ = phase(ctx, batch, s, id, PHASE_ABORT, b"").await;
    }
}

/// Coordinate one BACKUP request from the connection's shard: pause every
/// shard in ascending order (each takes its cut and links its tables), resume
/// them all, let every shard copy its WAL tail, then seal the backup with its
/// manifest. Returns a JSON summary for the client.
pub async fn run_backup(ctx: &ShardContext, target: &[u8]) -> Result<Vec<u8>, BackupFailure> {
    let started = Instant::now();
    let target = PathBuf::from(OsStr::from_bytes(target));
    let data_dir = ctx
        .router
        .state()
        .lsm
        .dir()
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| BackupFailure::failed("the shard directory has no parent".into()))?;
    {
        let (t, d) = (target.clone(), data_dir.clone());
        off_executor("prepare the backup directory", move || {
            prepare_backup_target(&t, &d)
        })
        .await??;
    }
    let id = rand::random::<u64>();
    let n = ctx.shard_count();
    let mut batch = ctx.new_batch();
    let arg = target.as_os_str().as_bytes().to_vec();
    let paused_at = Instant::now();
    let mut shards = Vec::with_capacity(usize::from(n));
    for s in 0..n {
        let cut = phase(ctx, &mut batch, s, id, PHASE_PAUSE, &arg)
            .await
            .and_then(|body| {
                serde_json::from_slice::<BackupShardEntry>(&body)
                    .map_err(|e| BackupFailure::failed(format!("shard {s}: bad cut: {e}")))
            });
        match cut {
            Ok(c) => shards.push(c),
            Err(f) => {
                abort_all(ctx, &mut batch, id).await;
                return Err(f);
            }
        }
    }
    let mut resume_failure = None;
    for s in 0..n {
        if let Err(f) = phase(ctx, &mut batch, s, id, PHASE_RESUME, b"").await {
            resume_failure.get_or_insert(f);
        }
    }
    let pause_micros = paused_at.elapsed().as_micros() as u64;
    if let Some(f) = resume_failure {
        abort_all(ctx, &mut batch, id).await;
        return Err(f);
    }
    // Every shard copies its WAL tail at once: one message each.
    batch.clear();
    for s in 0..n {
        batch.push(
            ShardId(s),
            OpKind::Backup,
            &id.to_le_bytes(),
            &[PHASE_FINISH],
        );
    }
    ctx.router.execute(&mut batch).await;
    let mut files = Vec::new();
    let mut failure = None;
    for s in 0..n {
        let (status, body) = batch.replies(ShardId(s)).get(0);
        let listed = reply_result(s, status, body).and_then(|body| {
            serde_json::from_slice::<Vec<BackupFileEntry>>(&body)
                .map_err(|e| BackupFailure::failed(format!("shard {s}: bad file list: {e}")))
        });
        match listed {
            Ok(f) => files.extend(f),
            Err(f) => {
                failure.get_or_insert(f);
            }
        }
    }
    if let Some(f) = failure {
        abort_all(ctx, &mut batch, id).await;
        return Err(f);
    }
    let body = BackupBody {
        format_version: BACKUP_FORMAT_VERSION,
        corekv_version: env!("CARGO_PKG_VERSION").into(),
        created_unix_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        shard_count: n,
        pause_micros,
        shards,
        files,
    };
    let job = Seal {
        target: target.clone(),
        data_dir,
        body,
    };
    let body = file_work(
        &ctx.router.state().lsm.disk,
        "write the backup manifest",
        job,
    )
    .await?;
    let elapsed = started.elapsed();
    tracing::info!(
        target = %target.display(),
        files = body.files.len(),
        bytes = body.total_bytes(),
        pause_micros,
        elapsed_ms = elapsed.as_millis() as u64,
        "backup written"
    );
    let summary = serde_json::json!({
        "path": target.display().to_string(),
        "files": body.files.len(),
        "bytes": body.total_bytes(),
        "pause_micros": pause_micros,
        "elapsed_micros": elapsed.as_micros() as u64,
        "cut_lsns": body.shards.iter().map(|s| s.cut_lsn).collect::<Vec<_>>(),
    });
    serde_json::to_vec(&summary).map_err(|e| BackupFailure::failed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn writes_wait_at_a_closed_gate_and_a_pause_waits_for_writes_past_it() {
        let ex = glommio::LocalExecutor::default();
        ex.run(async {
            let gate = Rc::new(BackupGate::default());
            // A write past the gate before the pause holds the pause's drain.
            let early = gate.enter_write().await;
            gate.paused
                .set(Some((1, Instant::now() + Duration::from_secs(30))));
            let g = gate.clone();
            let late = glommio::spawn_local(async move {
                let _t = g.enter_write().await;
                Instant::now()
            });
            glommio::timer::sleep(Duration::from_millis(20)).await;
            assert_eq!(gate.writers.get(), 1, "the late write waits at the gate");
            let g = gate.clone();
            let drained = glommio::spawn_local(async move {
                g.changed
                    .until(|| (g.writers.get() == 0).then_some(()))
                    .await
            });
            drop(early);
            drained.await;
            let lifted = Instant::now();
            gate.lift(1);
            assert!(
                late.await >= lifted,
                "the late write entered only once lifted"
            );
            assert_eq!(gate.expired.get(), None);
        });
    }

    #[test]
    fn a_pause_past_its_deadline_lifts_itself_and_marks_the_backup_failed() {
        let ex = glommio::LocalExecutor::default();
        ex.run(async {
            let gate = BackupGate::default();
            let started = Instant::now();
            gate.paused
                .set(Some((7, started + Duration::from_millis(50))));
            drop(gate.enter_write().await);
            let waited = started.elapsed();
            assert!(waited >= Duration::from_millis(50), "{waited:?}");
            assert!(waited < Duration::from_secs(5), "{waited:?}");
            assert_eq!(gate.paused.get(), None);
            assert_eq!(gate.expired.get(), Some(7));
            assert_eq!(gate.writers.get(), 0);
        });
    }
}
