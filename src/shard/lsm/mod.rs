//! One shard's log-structured storage: the memtable, at most one frozen memtable
//! being flushed, and the sorted tables (level 0: flushed memtables, newest
//! first, overlapping; level 1: one sorted run of non-overlapping tables), with
//! the block cache in front of the tables.
//!
//! Writes reach the memtable only once durable in the WAL (the caller's rule).
//! A memtable past its budget is frozen and flushed in the background into a
//! level-0 table; the manifest then records the table and the WAL cutoff (every
//! record at or below it is in a table), after which the WAL segments below the
//! cutoff may be deleted. Compaction merges level 0 into level 1 (see
//! `compaction`).
//!
//! Crash safety, by order of durable steps: table file written and fdatasynced →
//! its directory fsynced → manifest replaced (write new, fdatasync, rename,
//! directory fsync) → only then is anything deleted (compaction inputs, WAL
//! segments). A crash before the manifest step leaves an orphan table file,
//! removed at the next start; after it, the new state is complete.
//!
//! It must never: hold a write the WAL does not cover (the caller waits for the
//! WAL before a flush is recorded), delete a file the manifest still names, or
//! return bytes from a block that failed its checks.

pub mod buffer_pool;
pub mod compaction;
pub mod memtable;
pub mod merge;
pub mod scan;

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::core::block_format::DataBlock;
use crate::core::limits::{L0_STOP_FACTOR, PREFETCH_SPAN_BLOCKS, PREFETCH_SPAN_BYTES};
use crate::core::manifest_format::{ManifestState, TableEntry};
use crate::io::manifest::{load_manifest, store_manifest, ManifestIoError};
use crate::io::table_file::{
    parse_table_file_name, table_file_name, TableError, TableFile, TableSummary, TableWriter,
};
use crate::io::Disk;

use crate::shard::lsm::buffer_pool::{BlockKey, BufferPool, PoolStats};
use crate::shard::lsm::memtable::{Lookup, Memtable};
use crate::shard::wake::{join_all, Boxed, WaitQueue};

/// Sizes that shape one shard's storage.
#[derive(Clone, Debug)]
pub struct LsmConfig {
    /// A memtable is frozen and flushed past this many bytes.
    pub memtable_bytes: usize,
    /// This shard's share of the block cache.
    pub cache_bytes: usize,
    /// Compaction splits its output into tables of about this size.
    pub table_target_bytes: u64,
    /// Compaction starts when level 0 holds this many tables.
    pub l0_trigger: usize,
}

/// A memtable shared with the scans and the flush that still read it after it
/// was replaced.
pub type SharedMem = Rc<RefCell<Memtable>>;

/// An open table and what the manifest says about it.
pub struct Table<D: Disk> {
    pub file: TableFile<D::File>,
    pub meta: TableEntry,
}

impl<D: Disk> Table<D> {
    pub fn id(&self) -> u64 {
        self.meta.id
    }

    /// Whether `key` is within this table's key range.
    pub fn covers(&self, key: &[u8]) -> bool {
        self.meta.smallest.as_slice() <= key && key <= self.meta.largest.as_slice()
    }
}

/// The set of tables readers see; replaced whole, never changed in place, so a
/// reader that holds one sees a consistent set across its awaits.
pub struct Version<D: Disk> {
    /// Newest first.
    pub l0: Vec<Rc<Table<D>>>,
    /// Sorted by key, non-overlapping.
    pub l1: Vec<Rc<Table<D>>>,
}

impl<D: Disk> Version<D> {
    fn empty() -> Self {
        Version {
            l0: Vec::new(),
            l1: Vec::new(),
        }
    }

    pub fn tables(&self) -> impl Iterator<Item = &Rc<Table<D>>> {
        self.l0.iter().chain(self.l1.iter())
    }

    /// The level-1 table that may hold `key`.
    pub fn l1_for(&self, key: &[u8]) -> Option<&Rc<Table<D>>> {
        let i = self.l1.partition_point(|t| t.meta.largest.as_slice() < key);
        self.l1.get(i).filter(|t| t.covers(key))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LsmError {
    #[error(transparent)]
    Table(#[from] TableError),
    #[error(transparent)]
    Manifest(#[from] ManifestIoError),
    #[error("manifest names table {id} at level {level}, which does not exist")]
    BadLevel { id: u64, level: u8 },
}

impl LsmError {
    /// The error came from storing a manifest, before the new one could
    /// replace the old (see [`ManifestIoError::old_manifest_stands`]).
    pub fn old_manifest_stands(&self) -> bool {
        matches!(self, LsmError::Manifest(m) if m.old_manifest_stands())
    }

    /// ENOSPC or EDQUOT underneath: the disk is full, not broken.
    pub fn is_disk_full(&self) -> bool {
        match self {
            LsmError::Table(TableError::Io(e)) | LsmError::Manifest(ManifestIoError::Io(e)) => {
                e.is_disk_full()
            }
            _ => false,
        }
    }

    /// Where the failed I/O was, for a disk-full message.
    pub fn io_path(&self) -> Option<&Path> {
        match self {
            LsmError::Table(TableError::Io(e)) | LsmError::Manifest(ManifestIoError::Io(e)) => {
                Some(&e.path)
            }
            _ => None,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            LsmError::Table(TableError::Corrupt { .. }) => "TABLE_CORRUPT",
            LsmError::Table(TableError::Io(_)) => "TABLE_IO",
            LsmError::Manifest(e) => e.name(),
            LsmError::BadLevel { .. } => "MANIFEST_CORRUPT",
        }
    }
}

/// Counters of the storage's work, read by metrics.
#[derive(Default)]
pub struct LsmStats {
    pub flushes: Cell<u64>,
    pub flush_bytes: Cell<u64>,
    pub compactions: Cell<u64>,
    pub compaction_read_bytes: Cell<u64>,
    pub compaction_write_bytes: Cell<u64>,
    pub write_stalls: Cell<u64>,
    /// Flushes that waited for compaction to bring level 0 under its limit.
    pub flush_waits: Cell<u64>,
    pub read_errors: Cell<u64>,
    /// Device requests for data blocks (a prefetch of neighbours is one).
    pub block_read_requests: Cell<u64>,
    /// Expired values a compaction dropped.
    pub expired_compaction: Cell<u64>,
}

fn bump(c: &Cell<u64>, n: u64) {
    c.set(c.get() + n);
}

pub struct Lsm<D: Disk> {
    pub disk: D,
    pub shard: u16,
    /// The shard directory (holds MANIFEST).
    dir: PathBuf,
    /// Where table files live.
    tables_dir: PathBuf,
    pub cfg: LsmConfig,
    mem: RefCell<SharedMem>,
    imm: RefCell<Option<SharedMem>>,
    /// Records at or above this LSN have writes not yet in the memtable
    /// (transactions between logging and applying): the WAL must keep them.
    wal_floor: Cell<u64>,
    /// `wal_floor` when the frozen memtable was frozen: its flush may not record
    /// a cutoff at or past it, since those writes went to the next memtable.
    imm_floor: Cell<u64>,
    version: RefCell<Rc<Version<D>>>,
    manifest: RefCell<ManifestState>,
    pub pool: BufferPool<Vec<u8>>,
    /// Woken when background work may be due (a frozen memtable, new tables).
    pub work: WaitQueue,
    /// Set for good after a failed flush or compaction.
    failure: RefCell<Option<String>>,
    /// The failure was a full disk (DISK_FULL rather than STORAGE_FAILED).
    failure_disk_full: Cell<bool>,
    /// Manifest edits (clone, store, publish) run one at a time.
    manifest_busy: Cell<bool>,
    manifest_free: WaitQueue,
    /// One compaction at a time (the background task, or a requested one).
    compacting: Cell<bool>,
    /// Set by a clean stop: a running compaction stops at its next entry and
    /// removes its partial output.
    compactions_cancelled: Cell<bool>,
    pub stats: LsmStats,
}

/// A table lookup's answer: the block, the value's range in it (`None`: a
/// tombstone) and its expiry (unix ms, 0: never).
pub type Found = (Rc<Vec<u8>>, Option<Range<usize>>, u64);

impl<D: Disk> Lsm<D> {
    /// Open a shard's storage: load the manifest, remove table files it does not
    /// name (left by a crash mid-flush or mid-compaction), open every table.
    pub async fn open(
        disk: D,
        shard_dir: &Path,
        shard: u16,
        cfg: LsmConfig,
    ) -> Result<Self, LsmError> {
        let tables_dir = shard_dir.join("tables");
        disk.create_dir_all(&tables_dir)
            .await
            .map_err(|e| LsmError::Table(e.into()))?;
        let manifest = load_manifest(&disk, shard_dir, shard)
            .await?
            .unwrap_or(ManifestState {
                next_table_id: 1,
                ..ManifestState::default()
            });
        // The manifest just read may be one whose rename a crash left
        // visible but not durable (killed between store_manifest's rename
        // and its directory fsync). Make its name durable before acting on
        // it: otherwise the orphan removal below (and the WAL retirement
        // after it) would durably delete files the previous manifest needs,
        // and a power loss that brings that manifest back leaves it naming
        // missing tables (found by the transaction simulation, seed 5081).
        disk.sync_dir(shard_dir)
            .await
            .map_err(|e| LsmError::Table(e.into()))?;
        let named: BTreeSet<u64> = manifest.tables.iter().map(|t| t.id).collect();
        let names = disk
            .list_dir(&tables_dir)
            .await
            .map_err(|e| LsmError::Table(e.into()))?;
        let mut removed = 0;
        for name in names {
            let orphan = match parse_table_file_name(&name) {
                Some(id) => !named.contains(&id),
                None => name.ends_with(".sst.tmp"),
            };
            if orphan {
                disk.remove(&tables_dir.join(&name))
                    .await
                    .map_err(|e| LsmError::Table(e.into()))?;
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::info!(
                shard,
                removed,
                "removed table files no manifest names (an interrupted flush or compaction)"
            );
            disk.sync_dir(&tables_dir)
                .await
                .map_err(|e| LsmError::Table(e.into()))?;
        }
        let mut version = Version::empty();
        for entry in &manifest.tables {
            let file = TableFile::open(&disk, &tables_dir, entry.id).await?;
            let table = Rc::new(Table {
                file,
                meta: entry.clone(),
            });
            match entry.level {
                0 => version.l0.push(table),
                1 => version.l1.push(table),
                level => {
                    return Err(LsmError::BadLevel {
                        id: entry.id,
                        level,
                    })
                }
            }
        }
        version.l0.sort_by_key(|t| std::cmp::Reverse(t.id()));
        version
            .l1
            .sort_by(|a, b| a.meta.smallest.cmp(&b.meta.smallest));
        let pool = BufferPool::new(cfg.cache_bytes);
        Ok(Lsm {
            disk,
            shard,
            dir: shard_dir.to_path_buf(),
            tables_dir,
            cfg,
            mem: RefCell::new(Rc::new(RefCell::new(Memtable::default()))),
            imm: RefCell::new(None),
            version: RefCell::new(Rc::new(version)),
            manifest: RefCell::new(manifest),
            pool,
            work: WaitQueue::default(),
            wal_floor: Cell::new(u64::MAX),
            imm_floor: Cell::new(u64::MAX),
            failure: RefCell::new(None),
            failure_disk_full: Cell::new(false),
            manifest_busy: Cell::new(false),
            manifest_free: WaitQueue::default(),
            compacting: Cell::new(false),
            compactions_cancelled: Cell::new(false),
            stats: LsmStats::default(),
        })
    }

    /// Every WAL record at or below this LSN is in the tables.
    pub fn wal_cutoff(&self) -> u64 {
        self.manifest.borrow().wal_cutoff_lsn
    }

    pub fn failure(&self) -> Option<String> {
        self.failure.borrow().clone()
    }

    pub fn tables_dir(&self) -> &Path {
        &self.tables_dir
    }

    /// The shard directory (holds MANIFEST and `tables/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The manifest as stored on disk, with manifest edits held off until the
    /// returned guard drops: the tables it names are not deleted meanwhile (a
    /// compaction deletes its inputs only after its own edit).
    pub async fn hold_manifest(&self) -> (ManifestState, impl Sized + '_) {
        let edit = self.lock_manifest().await;
        let state = self.manifest.borrow().clone();
        (state, edit)
    }

    pub fn version(&self) -> Rc<Version<D>> {
        self.version.borrow().clone()
    }

    pub fn memtable(&self) -> SharedMem {
        self.mem.borrow().clone()
    }

    pub fn frozen(&self) -> Option<SharedMem> {
        self.imm.borrow().clone()
    }

    /// Records from `lsn` on (`None`: none) are logged but their writes are not
    /// in the memtable yet; flushes keep the WAL from there.
    pub fn set_wal_floor(&self, lsn: Option<u64>) {
        self.wal_floor.set(lsn.unwrap_or(u64::MAX));
    }

    /// A record took effect at `lsn` (its writes, if any, were applied with
    /// it): the memtable's max LSN covers it, so that the flush that puts this
    /// memtable in a table also records `lsn` as applied. Needed for records
    /// with no writes, whose LSN no entry carries.
    pub fn note_applied(&self, lsn: u64) {
        self.mem.borrow().borrow_mut().note_lsn(lsn);
    }

    /// The highest LSN whose effects may already be in the tables.
    pub fn applied_lsn(&self) -> u64 {
        self.manifest.borrow().applied_lsn
    }

    /// Apply one durable write (`None` deletes).
    pub fn apply(&self, key: Vec<u8>, value: Option<Vec<u8>>, lsn: u64) {
        self.apply_expiring(key, value, 0, lsn)
    }

    /// Apply one durable write (`None` deletes) with its expiry (0: never).
    pub fn apply_expiring(&self, key: Vec<u8>, value: Option<Vec<u8>>, expires_at: u64, lsn: u64) {
        let full = {
            let mem = self.mem.borrow();
            let mut m = mem.borrow_mut();
            m.apply_expiring(key, value, expires_at, lsn);
            m.bytes() >= self.cfg.memtable_bytes
        };
        if full {
            self.maybe_freeze();
        }
    }

    /// Freeze the memtable if it is past its budget and no flush is running.
    pub fn maybe_freeze(&self) -> bool {
        self.memtable_bytes() >= self.cfg.memtable_bytes && self.freeze()
    }

    /// Freeze whatever the memtable holds (a requested flush).
    pub fn freeze_now(&self) -> bool {
        !self.mem.borrow().borrow().is_empty() && self.freeze()
    }

    /// Hand the memtable to the flush task and start a fresh one, unless a
    /// flush is still running.
    fn freeze(&self) -> bool {
        if self.imm.borrow().is_some() {
            return false;
        }
        let fresh = Rc::new(RefCell::new(Memtable::default()));
        self.imm_floor.set(self.wal_floor.get());
        let old = std::mem::replace(&mut *self.mem.borrow_mut(), fresh);
        *self.imm.borrow_mut() = Some(old);
        self.work.wake_all();
        true
    }

    pub fn memtable_bytes(&self) -> usize {
        self.mem.borrow().borrow().bytes()
    }

    pub fn frozen_bytes(&self) -> usize {
        self.imm.borrow().as_ref().map_or(0, |m| m.borrow().bytes())
    }

    /// Level 0 holds as many tables as it may: the next flush waits for a
    /// compaction. Without this bound, writes faster than compaction grow
    /// level 0 without limit (measured: 29 tables, 2.5 GB over ~256 MB of
    /// live data per shard after a minute of overwrites), and with it every
    /// read's probes and the disk space used.
    pub fn l0_full(&self) -> bool {
        self.version.borrow().l0.len() >= L0_STOP_FACTOR * self.cfg.l0_trigger
    }

    /// Writes should wait: the memtable is far past its budget because flushes
    /// cannot keep up (or have failed).
    pub fn must_stall(&self) -> bool {
        let stall = self.memtable_bytes() >= 4 * self.cfg.memtable_bytes;
        if stall {
            bump(&self.stats.write_stalls, 1);
        }
        stall
    }

    /// Look `key` up in the memtables only (no I/O); `f` gets the value
    /// (`None`: deleted) and its expiry (0: never), expired or not.
    pub fn get_in_memory<R, F: FnOnce(Option<&[u8]>, u64) -> R>(
        &self,
        key: &[u8],
        f: F,
    ) -> Result<R, F> {
        {
            let mem = self.mem.borrow();
            let m = mem.borrow();
            match m.get(key) {
                Lookup::Value(v, e) => return Ok(f(Some(v), e)),
                Lookup::Deleted => return Ok(f(None, 0)),
                Lookup::Absent => {}
            }
        }
        if let Some(imm) = &*self.imm.borrow() {
            match imm.borrow().get(key) {
                Lookup::Value(v, e) => return Ok(f(Some(v), e)),
                Lookup::Deleted => return Ok(f(None, 0)),
                Lookup::Absent => {}
            }
        }
        Err(f)
    }

    /// Look `key` up in the tables of `version`, newest first.
    pub async fn get_in_tables(
        &self,
        version: &Version<D>,
        key: &[u8],
    ) -> Result<Option<Found>, TableError> {
        for t in &version.l0 {
            if let Some(found) = self.table_get(t, key).await? {
                return Ok(Some(found));
            }
        }
        if let Some(t) = version.l1_for(key) {
            return self.table_get(t, key).await;
        }
        Ok(None)
    }

    async fn table_get(&self, t: &Table<D>, key: &[u8]) -> Result<Option<Found>, TableError> {
        if !t.covers(key) || !t.file.bloom().may_contain(key) {
            return Ok(None);
        }
        let Some(i) = t.file.find_block(key) else {
            return Ok(None);
        };
        let block = self.load_block(t, i).await?;
        let parsed = DataBlock::parse(&block).map_err(|e| corrupt(t, i, e))?;
        let (found, expires_at) = match parsed.get(key).map_err(|e| corrupt(t, i, e))? {
            None => return Ok(None),
            Some((None, _)) => (None, 0),
            Some((Some(v), e)) => {
                let start = v.as_ptr() as usize - block.as_ptr() as usize;
                (Some(start..start + v.len()), e)
            }
        };
        Ok(Some((block, found, expires_at)))
    }

    /// Block `i` of `t`, from the cache or read and verified.
    pub async fn load_block(&self, t: &Table<D>, i: usize) -> Result<Rc<Vec<u8>>, TableError> {
        let entry = &t.file.index().blocks[i];
        let key = BlockKey {
            table: t.id(),
            offset: entry.offset.to_native(),
        };
        let bytes = entry.extent.to_native() as usize;
        let r = self
            .pool
            .get_or_load(key, bytes, || {
                bump(&self.stats.block_read_requests, 1);
                t.file.read_block(i)
            })
            .await;
        if let Err(e) = &r {
            bump(&self.stats.read_errors, 1);
            tracing::error!(
                shard = self.shard,
                error = e.name(),
                "table read failed: {e}"
            );
        }
        r
    }

    /// Bring blocks `blocks` of `t` into the cache, reading each run of
    /// neighbouring missing blocks with one request (at most
    /// [`PREFETCH_SPAN_BLOCKS`] blocks and [`PREFETCH_SPAN_BYTES`] bytes per
    /// request), all requests in flight at once. Blocks too large for the
    /// cache are skipped: the read that needs them reads them.
    /// On this machine's disk one 32 KiB read costs about a third of eight
    /// 4 KiB reads in device capacity. Errors are left for the read that
    /// needs the block, which reports them.
    pub async fn prefetch_blocks(&self, t: &Table<D>, blocks: Range<usize>) {
        let index = t.file.index();
        let key_of = |i: usize| BlockKey {
            table: t.id(),
            offset: index.blocks[i].offset.to_native(),
        };
        // Claimed loads end in `finish_load` even if this future is dropped,
        // else waiters for those blocks would wait forever.
        struct Claims<'a, B> {
            pool: &'a BufferPool<B>,
            open: Vec<BlockKey>,
        }
        impl<B> Drop for Claims<'_, B> {
            fn drop(&mut self) {
                for key in self.open.drain(..) {
                    self.pool.finish_load(key, None);
                }
            }
        }
        let mut claims = Claims {
            pool: &self.pool,
            open: Vec::new(),
        };
        let mut runs: Vec<Range<usize>> = Vec::new();
        let mut run_bytes = 0usize;
        for i in blocks {
            // A block the cache would not keep would be read twice: leave it
            // to the read that needs it.
            let bytes = index.blocks[i].extent.to_native() as usize;
            if !self.pool.would_keep(bytes) || !self.pool.claim_load(key_of(i)) {
                continue;
            }
            claims.open.push(key_of(i));
            match runs.last_mut() {
                Some(r)
                    if r.end == i
                        && r.len() < PREFETCH_SPAN_BLOCKS
                        && run_bytes + bytes <= PREFETCH_SPAN_BYTES =>
                {
                    r.end = i + 1;
                    run_bytes += bytes;
                }
                _ => {
                    runs.push(i..i + 1);
                    run_bytes = bytes;
                }
            }
        }
        if runs.is_empty() {
            return;
        }
        type Read = Result<Vec<Result<Vec<u8>, TableError>>, TableError>;
        let reads: Vec<Boxed<'_, Read>> = runs
            .iter()
            .map(|r| Box::pin(t.file.read_blocks(r.clone())) as Boxed<'_, Read>)
            .collect();
        bump(&self.stats.block_read_requests, runs.len() as u64);
        let reads = join_all(reads).await;
        // No await from here on: every claim is finished below.
        claims.open.clear();
        for (run, read) in runs.into_iter().zip(reads) {
            let blocks = read.unwrap_or_default();
            let mut blocks = blocks.into_iter();
            for i in run {
                let key = key_of(i);
                let block = blocks.next().and_then(Result::ok).map(|b| {
                    let bytes = index.blocks[i].extent.to_native() as usize;
                    (Rc::new(b), bytes)
                });
                self.pool.finish_load(key, block);
            }
        }
    }

    pub fn pool_stats(&self) -> PoolStats {
        self.pool.stats()
    }

    /// Flush the frozen memtable, if any, into a level-0 table and record it.
    /// `max_lsn` must be durable in the WAL before this is called.
    // A frozen memtable is never borrowed mutably again (writes go to the new
    // one), so the shared borrow held while its entries are written is safe.
    #[allow(clippy::await_holding_refcell_ref)]
    pub async fn flush_frozen(&self) -> Result<bool, LsmError> {
        let Some(imm) = self.imm.borrow().clone() else {
            return Ok(false);
        };
        let max_lsn = imm.borrow().max_lsn();
        let id = self.alloc_table_id();
        // A frozen memtable is never written again, so this borrow may span awaits.
        let summary = {
            let m = imm.borrow();
            let mut w = TableWriter::create(&self.disk, &self.tables_dir, id, self.shard).await?;
            let mut result = Ok(());
            for (k, v, expires_at) in m.iter() {
                if let Err(e) = w.add_expiring(k, v, expires_at).await {
                    result = Err(e);
                    break;
                }
            }
            let finished = match result {
                Ok(()) if w.entries() > 0 => w.finish(max_lsn).await.map(Some),
                Ok(()) => {
                    w.abandon().await;
                    Ok(None)
                }
                Err(e) => {
                    w.abandon().await;
                    Err(e)
                }
            };
            match finished {
                Ok(Some(s)) => Some(s),
                Ok(None) => {
                    self.remove_table_file(id).await;
                    None
                }
                Err(e) => {
                    // A failed flush (a full disk, say) gives its partial
                    // table's space back at once; the memtable's writes are
                    // safe in the WAL.
                    self.discard_tables(&[id]).await;
                    return Err(e.into());
                }
            }
        };
        if let Err(e) = self.disk.sync_dir(&self.tables_dir).await {
            if summary.is_some() {
                self.remove_table_file(id).await;
            }
            return Err(LsmError::Table(e.into()));
        }
        crate::failpoint!("flush-after-table");
        let new_table = match &summary {
            Some(s) => Some(self.open_table(s, 0).await?),
            None => None,
        };
        let _edit = self.lock_manifest().await;
        let mut next = self.manifest.borrow().clone();
        next.edition += 1;
        let covered = max_lsn.min(self.imm_floor.get().saturating_sub(1));
        next.wal_cutoff_lsn = next.wal_cutoff_lsn.max(covered);
        // Records up to max_lsn are in this table even where the floor keeps
        // the cutoff lower; recovery needs to know (a resolve replayed above
        // the cutoff whose prepare lies below it was applied here).
        next.applied_lsn = next.applied_lsn.max(max_lsn).max(next.wal_cutoff_lsn);
        if let Some(t) = &new_table {
            next.tables.push(t.meta.clone());
        }
        if let Err(e) = store_manifest(&self.disk, &self.dir, self.shard, &next).await {
            // The table is complete but nothing names it: give its space
            // back now (the disk may be full), as a failed table write does.
            // Not if the new manifest may be in place: it names the table.
            if summary.is_some() && e.old_manifest_stands() {
                self.discard_tables(&[id]).await;
            }
            return Err(e.into());
        }
        crate::failpoint!("flush-after-manifest");
        // Durable: publish the new version and drop the frozen memtable.
        {
            let old = self.version.borrow().clone();
            let mut l0 = Vec::with_capacity(old.l0.len() + 1);
            l0.extend(new_table.iter().cloned());
            l0.extend(old.l0.iter().cloned());
            *self.version.borrow_mut() = Rc::new(Version {
                l0,
                l1: old.l1.clone(),
            });
        }
        self.publish_manifest(next);
        *self.imm.borrow_mut() = None;
        bump(&self.stats.flushes, 1);
        bump(
            &self.stats.flush_bytes,
            summary.as_ref().map_or(0, |s| s.file_bytes),
        );
        self.work.wake_all();
        Ok(true)
    }

    /// Salvage (`--recover-truncate`): record that the log before `cutoff + 1`
    /// is gone for good and that records up to `applied` count as applied, so
    /// the next start does not refuse the same loss again. Only recovery calls
    /// this, after the operator asked for salvage and the loss was logged.
    pub async fn accept_loss(&self, cutoff: u64, applied: u64) -> Result<(), LsmError> {
        let _edit = self.lock_manifest().await;
        let mut next = self.manifest.borrow().clone();
        next.edition += 1;
        next.wal_cutoff_lsn = next.wal_cutoff_lsn.max(cutoff);
        next.applied_lsn = next.applied_lsn.max(applied).max(next.wal_cutoff_lsn);
        store_manifest(&self.disk, &self.dir, self.shard, &next).await?;
        self.publish_manifest(next);
        Ok(())
    }

    /// Make `next` (now durable) the in-memory manifest. Ids handed out while
    /// it was being stored (another edit's tables) stay used.
    fn publish_manifest(&self, mut next: ManifestState) {
        next.next_table_id = next.next_table_id.max(self.manifest.borrow().next_table_id);
        *self.manifest.borrow_mut() = next;
    }

    pub fn alloc_table_id(&self) -> u64 {
        let mut m = self.manifest.borrow_mut();
        let id = m.next_table_id;
        m.next_table_id += 1;
        id
    }

    pub async fn open_table(&self, s: &TableSummary, level: u8) -> Result<Rc<Table<D>>, LsmError> {
        let file = TableFile::open(&self.disk, &self.tables_dir, s.id).await?;
        Ok(Rc::new(Table {
            file,
            meta: TableEntry {
                id: s.id,
                level,
                entries: s.entries,
                file_bytes: s.file_bytes,
                max_lsn: s.max_lsn,
                smallest: s.smallest.clone(),
                largest: s.largest.clone(),
            },
        }))
    }

    pub async fn remove_table_file(&self, id: u64) {
        let path = self.tables_dir.join(table_file_name(id));
        if let Err(e) = self.disk.remove(&path).await {
            tracing::warn!(
                shard = self.shard,
                "could not remove {}: {e}",
                path.display()
            );
        }
    }

    /// Remove table files no manifest names (a flush's or a compaction's
    /// output that will not be installed) and make their removal durable.
    /// Best effort: a file left behind is an orphan the next start removes.
    pub async fn discard_tables(&self, ids: &[u64]) {
        if ids.is_empty() {
            return;
        }
        for &id in ids {
            self.remove_table_file(id).await;
        }
        if let Err(e) = self.disk.sync_dir(&self.tables_dir).await {
            tracing::warn!(
                shard = self.shard,
                "could not sync the tables directory: {e}"
            );
        }
    }

    /// Replace `inputs` by `outputs` (level 1) durably, then publish and delete
    /// the inputs' files. On failure, [`LsmError::old_manifest_stands`] says
    /// whether the outputs are certainly unreferenced.
    pub async fn install_compaction(
        &self,
        inputs: &[Rc<Table<D>>],
        outputs: Vec<Rc<Table<D>>>,
    ) -> Result<(), LsmError> {
        let gone: BTreeSet<u64> = inputs.iter().map(|t| t.id()).collect();
        let edit = self.lock_manifest().await;
        let mut next = self.manifest.borrow().clone();
        next.edition += 1;
        next.tables.retain(|t| !gone.contains(&t.id));
        next.tables.extend(outputs.iter().map(|t| t.meta.clone()));
        store_manifest(&self.disk, &self.dir, self.shard, &next).await?;
        crate::failpoint!("compaction-after-manifest");
        {
            let old = self.version.borrow().clone();
            let l0 = old
                .l0
                .iter()
                .filter(|t| !gone.contains(&t.id()))
                .cloned()
                .collect();
            let mut l1: Vec<_> = old
                .l1
                .iter()
                .filter(|t| !gone.contains(&t.id()))
                .cloned()
                .chain(outputs)
                .collect();
            l1.sort_by(|a, b| a.meta.smallest.cmp(&b.meta.smallest));
            debug_assert!(l1
                .windows(2)
                .all(|w| w[0].meta.largest < w[1].meta.smallest));
            *self.version.borrow_mut() = Rc::new(Version { l0, l1 });
        }
        self.publish_manifest(next);
        drop(edit);
        for id in gone {
            self.pool.drop_table(id);
            self.remove_table_file(id).await;
        }
        bump(&self.stats.compactions, 1);
        // A flush may be waiting for level 0 to shrink.
        self.work.wake_all();
        Ok(())
    }

    /// Wait until no other compaction runs, and hold that until the guard drops.
    pub async fn lock_compaction(&self) -> CompactionGuard<'_, D> {
        self.manifest_free
            .until(|| (!self.compacting.get()).then(|| self.compacting.set(true)))
            .await;
        CompactionGuard { lsm: self }
    }

    async fn lock_manifest(&self) -> ManifestEdit<'_, D> {
        self.manifest_free
            .until(|| (!self.manifest_busy.get()).then(|| self.manifest_busy.set(true)))
            .await;
        ManifestEdit { lsm: self }
    }

    /// Latch a background failure: from now on the shard refuses writes.
    pub fn fail(&self, reason: String) {
        self.failure.borrow_mut().get_or_insert(reason);
    }

    /// A clean stop: compactions stop at their next entry and remove their
    /// partial output; no new one starts.
    pub fn cancel_compactions(&self) {
        self.compactions_cancelled.set(true);
    }

    pub fn compactions_cancelled(&self) -> bool {
        self.compactions_cancelled.get()
    }

    /// Latch a failure caused by a full disk: refusals say DISK_FULL.
    pub fn fail_disk_full(&self, reason: String) {
        if self.failure.borrow().is_none() {
            self.failure_disk_full.set(true);
        }
        self.fail(reason);
    }

    /// The status writes are refused with, and why, once storage has failed.
    pub fn refusal(&self) -> Option<(crate::core::status::Status, String)> {
        use crate::core::status::Status;
        let reason = self.failure.borrow().clone()?;
        let status = if self.failure_disk_full.get() {
            Status::DiskFull
        } else {
            Status::StorageFailed
        };
        Some((status, reason))
    }

    /// Bytes of every table file.
    pub fn table_bytes(&self) -> (u64, u64) {
        let v = self.version.borrow();
        let l0 = v.l0.iter().map(|t| t.meta.file_bytes).sum();
        let l1 = v.l1.iter().map(|t| t.meta.file_bytes).sum();
        (l0, l1)
    }

    /// Index and bloom bytes pinned in memory.
    pub fn pinned_bytes(&self) -> usize {
        self.version
            .borrow()
            .tables()
            .map(|t| t.file.pinned_bytes())
            .sum()
    }
}

/// Held while a compaction runs.
pub struct CompactionGuard<'a, D: Disk> {
    lsm: &'a Lsm<D>,
}

impl<D: Disk> Drop for CompactionGuard<'_, D> {
    fn drop(&mut self) {
        self.lsm.compacting.set(false);
        self.lsm.manifest_free.wake_all();
    }
}

/// Held while one manifest edit is in progress.
struct ManifestEdit<'a, D: Disk> {
    lsm: &'a Lsm<D>,
}

impl<D: Disk> Drop for ManifestEdit<'_, D> {
    fn drop(&mut self) {
        self.lsm.manifest_busy.set(false);
        self.lsm.manifest_free.wake_all();
    }
}

fn corrupt<D: Disk>(
    t: &Table<D>,
    i: usize,
    detail: crate::core::block_format::BlockError,
) -> TableError {
    TableError::Corrupt {
        path: t.file.path().to_path_buf(),
        offset: t.file.index().blocks[i].offset.to_native(),
        block: i.to_string(),
        detail,
    }
}
