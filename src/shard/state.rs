//! One shard's state machine: executes operations against its storage, logs
//! writes through group commit, and decides when replies may be released.
//!
//! Lives on one core (`!Send`, shared between that core's tasks by `Rc`). It never
//! writes the WAL itself (the flusher in `commit` does); it reads tables through
//! the storage (`lsm`), which may wait for a block read.
//!
//! Invariant (sync durability): the storage holds only durable writes; writes not
//! yet durable live in `pending`, and any reply that depends on one carries its
//! LSN and is held until that LSN is durable, or failed if the WAL fails first.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use crate::core::config::EngineConfig;
use crate::core::expiry::is_expired;
use crate::core::limits::{WAL_BATCH_BYTES_CAP, WAL_PENDING_BYTES_MIN, WAL_PENDING_VALUES};
use crate::core::status::Status;
use crate::core::txn_format::{TxnRecord, WriteIter};
use crate::core::types::{Durability, ShardId};
use crate::core::wal_format::{decode_batch_payload, Record};
use crate::io::table_file::TableError;
use crate::io::{Disk, DmaDisk};

use crate::core::filter::Filter;

use crate::core::scan_format::decode_params;
use crate::shard::group_commit::Commit;
use crate::shard::locks::LockTable;
use crate::shard::lsm::merge::{Merge, Overlay};
use crate::shard::lsm::scan::scan_page;
use crate::shard::lsm::Lsm;
use crate::shard::metrics::ShardMetrics;
use crate::shard::ops::ReplyBatch;
use crate::shard::pending::{Pending, PendingWrite};
use crate::shard::txn_table::TxnTable;
use crate::shard::write_gate::{BackupGate, WriteTicket};

/// Most keys queued for the sweeper by reads that met them expired.
pub(super) const EXPIRED_QUEUE_MAX: usize = 1024;

/// Whether the shard accepts writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShardStatus {
    Serving,
    /// The WAL failed; reads are served, writes are refused with WAL_FAILED.
    ReadOnly {
        reason: String,
    },
}

pub struct ShardState<D: Disk = DmaDisk> {
    pub id: ShardId,
    pub shard_count: u16,
    pub(super) durability: Durability,
    pub(super) value_bytes_max: usize,
    pub lsm: Lsm<D>,
    pub(super) pending: RefCell<Pending>,
    pub commit: Commit,
    pub metrics: ShardMetrics,
    /// Key locks held by transactions and snapshot reads between phases.
    pub(super) locks: LockTable,
    pub(super) txns: RefCell<TxnTable>,
    /// How long a request waits for a key lock before giving up.
    pub(super) lock_timeout: Duration,
    /// Holds writes back while a backup takes its cut (`shard::backup`).
    pub(super) backup: BackupGate,
    /// "Now" on the wall clock (unix ms) for expiry, read once per batch by
    /// `execute` (and by the sweeper per tick) so that a batch sees one
    /// instant: an MGET never sees a key both live and expired.
    pub(super) now_ms: std::cell::Cell<u64>,
    /// Keys a read found expired, for the sweeper to delete (bounded).
    pub(super) expired_seen: RefCell<Vec<Vec<u8>>>,
}

impl<D: Disk> ShardState<D> {
    pub fn new(
        id: ShardId,
        shard_count: u16,
        config: &EngineConfig,
        lsm: Lsm<D>,
        next_lsn: u64,
        first_txn_seq: u64,
    ) -> ShardState<D> {
        // Pending WAL bytes allowed before OVERLOADED: room for many largest values.
        let open_bytes_max =
            (config.value_bytes_max * WAL_PENDING_VALUES).max(WAL_PENDING_BYTES_MIN);
        ShardState {
            id,
            shard_count,
            durability: config.durability,
            value_bytes_max: config.value_bytes_max,
            lsm,
            pending: RefCell::new(Pending::default()),
            commit: Commit::new(
                config.durability,
                config.sync_interval,
                open_bytes_max,
                // Several batches per segment; a record larger than this still
                // forms one batch, which config validation proves fits a segment.
                WAL_BATCH_BYTES_CAP.min(config.wal_segment_bytes as usize / 4),
                next_lsn,
            ),
            metrics: ShardMetrics::default(),
            locks: LockTable::default(),
            txns: RefCell::new(TxnTable::new(first_txn_seq)),
            lock_timeout: config.lock_timeout,
            backup: BackupGate::default(),
            now_ms: std::cell::Cell::new(crate::shard::clock::wall_clock_ms()),
            expired_seen: RefCell::new(Vec::new()),
        }
    }

    /// The instant expiry is judged at (see `now_ms`).
    pub fn now_ms(&self) -> u64 {
        self.now_ms.get()
    }

    /// Read the wall clock for the batch about to run.
    pub fn tick_clock(&self) {
        self.now_ms.set(crate::shard::clock::wall_clock_ms());
    }

    /// A read met `key` expired: queue it for the sweeper, up to a bound
    /// (past it the sweeper's own walk finds the rest).
    fn note_expired(&self, key: &[u8]) {
        let mut q = self.expired_seen.borrow_mut();
        if q.len() < EXPIRED_QUEUE_MAX && !q.iter().any(|k| k.as_slice() == key) {
            q.push(key.to_vec());
        }
    }

    pub fn status(&self) -> ShardStatus {
        match self.commit.failure().or_else(|| self.lsm.failure()) {
            None => ShardStatus::Serving,
            Some(reason) => ShardStatus::ReadOnly { reason },
        }
    }

    /// Why this shard refuses writes, if it does: a failed WAL (WAL_FAILED, or
    /// DISK_FULL when it ran out of space) or failed storage (STORAGE_FAILED or
    /// DISK_FULL), with the reason, which the refusal's body carries. Cheap
    /// (no allocation) while the shard is healthy.
    pub fn write_refusal(&self) -> Option<(Status, String)> {
        if let Some(reason) = self.commit.failure() {
            let status = if self.commit.failed_disk_full() {
                Status::DiskFull
            } else {
                Status::WalFailed
            };
            return Some((status, format!("shard {}: WAL failed: {reason}", self.id.0)));
        }
        self.lsm.refusal()
    }

    /// A write answered `status`: its reply, with the reason when the shard
    /// has latched a failure (never an empty body for those).
    pub(super) fn push_write_error(&self, status: Status, out: &mut ReplyBatch) {
        match self.write_refusal() {
            Some((latched, why)) if status != Status::Overloaded => {
                out.push(latched, why.as_bytes(), 0)
            }
            _ => out.push(status, b"", 0),
        }
    }

    pub(super) async fn scan(&self, start: &[u8], params: &[u8], out: &mut ReplyBatch) {
        let Some(params) = decode_params(params) else {
            // The router builds these bytes; a bad one is our bug, not the client's.
            debug_assert!(false, "malformed scan params");
            return out.push(Status::Internal, b"", 0);
        };
        let mut filter = match Filter::compile(params.filter_kind, params.filter_arg) {
            Ok(f) => f,
            Err(e) => return out.push(Status::InvalidArgument, e.to_string().as_bytes(), 0),
        };
        let now = self.now_ms();
        let overlay = self.pending_overlay(start, params.end);
        // Unfiltered, the page needs exactly `limit` live entries: the tables
        // read the blocks holding them at once. A filter's yield is unknown.
        let expect = if filter.is_none() {
            params.limit as usize
        } else {
            0
        };
        let sources = Merge::sources_of(&self.lsm, overlay, expect);
        let mut page = out.open();
        let scanned = async {
            let mut merge = Merge::new(&self.lsm, sources, start, params.end).await?;
            scan_page(&self.lsm, &mut merge, &params, &mut filter, &mut page, now).await
        }
        .await;
        match scanned {
            Ok(wait_lsn) => page.close(Status::Ok, wait_lsn),
            Err(e) => {
                drop(page);
                out.push(read_failure(&e), b"", 0);
            }
        }
    }

    /// Pending writes in `[start, end)`, sorted, with their LSNs.
    fn pending_overlay(&self, start: &[u8], end: &[u8]) -> Option<Overlay> {
        let pending = self.pending.borrow();
        if pending.is_empty() {
            return None;
        }
        let mut sorted: Vec<(&[u8], &PendingWrite)> = Vec::new();
        pending.range_sorted(start, end, &mut sorted);
        Some(
            sorted
                .into_iter()
                .map(|(k, w)| (k.to_vec(), w.value.clone(), w.lsn, w.expires_at))
                .collect(),
        )
    }

    /// The newest version of `key` as stored, expired or not: `f` gets the
    /// value (`None`: absent or deleted), its expiry (0: never) and the
    /// pending LSN the answer depends on. Readers use [`Self::read_cell`];
    /// this is for the sweeper and EXPIRE, which must see what is stored.
    pub(in crate::shard) async fn read_raw<R>(
        &self,
        key: &[u8],
        f: impl FnOnce(Option<&[u8]>, u64, u64) -> R,
    ) -> Result<R, TableError> {
        if let Some(p) = self.pending.borrow().get(key) {
            return Ok(f(p.value.as_deref(), p.expires_at, p.lsn));
        }
        // Durable answers depend on no pending LSN.
        let g = match self.lsm.get_in_memory(key, move |v, e| f(v, e, 0)) {
            Ok(r) => return Ok(r),
            Err(g) => g,
        };
        // Captured with no await since the memtables were checked: a flush
        // that completes while we read moves nothing out of our view.
        let version = self.lsm.version();
        Ok(match self.lsm.get_in_tables(&version, key).await? {
            Some((block, Some(range), e)) => g(Some(&block[range]), e),
            Some((_, None, _)) | None => g(None, 0),
        })
    }

    /// The newest version of `key` as every reader sees it: `f` gets the
    /// value (`None`: absent, deleted or expired at this batch's instant), its
    /// expiry (0: never or absent) and the pending LSN the answer depends on.
    /// The one place reads judge expiry, so GET, EXISTS, DELETE's answer,
    /// transaction conditions and snapshot reads agree. A read that meets an
    /// expired key queues it for the sweeper.
    pub(in crate::shard) async fn read_cell<R>(
        &self,
        key: &[u8],
        f: impl FnOnce(Option<&[u8]>, u64, u64) -> R,
    ) -> Result<R, TableError> {
        let now = self.now_ms();
        let mut expired = false;
        let r = self
            .read_raw(key, |v, e, lsn| match v {
                Some(_) if is_expired(e, now) => {
                    expired = true;
                    f(None, 0, lsn)
                }
                Some(v) => f(Some(v), e, lsn),
                None => f(None, 0, lsn),
            })
            .await?;
        if expired {
            self.note_expired(key);
        }
        Ok(r)
    }

    pub(super) async fn get(&self, key: &[u8], out: &mut ReplyBatch) {
        let r = self
            .read_cell(key, |v, _, lsn| match v {
                Some(v) => out.push(Status::Ok, v, lsn),
                None => out.push(Status::NotFound, b"", lsn),
            })
            .await;
        if let Err(e) = r {
            out.push(read_failure(&e), b"", 0)
        }
    }

    /// TTL: the key's expiry (u64 LE unix ms, 0: none) or NOT_FOUND.
    pub(super) async fn ttl(&self, key: &[u8], out: &mut ReplyBatch) {
        let r = self
            .read_cell(key, |v, e, lsn| match v {
                Some(_) => out.push(Status::Ok, &e.to_le_bytes(), lsn),
                None => out.push(Status::NotFound, b"", lsn),
            })
            .await;
        if let Err(e) = r {
            out.push(read_failure(&e), b"", 0)
        }
    }

    /// The length of `key`'s value. Read like a GET (so it sees exactly what
    /// a GET would), then the value is dropped from the batch: at most one
    /// value is held at a time.
    pub(super) async fn value_len(&self, key: &[u8], out: &mut ReplyBatch) {
        let at = out.len();
        self.get(key, out).await;
        let (status, value) = out.get(at);
        let len = value.len() as u32;
        out.pop();
        out.push(status, &len.to_le_bytes(), 0);
    }

    /// Whether `key` exists (expired counts as absent), and the LSN that
    /// answer depends on.
    pub(super) async fn exists(&self, key: &[u8]) -> Result<(bool, u64), TableError> {
        self.read_cell(key, |v, _, lsn| (v.is_some(), lsn)).await
    }

    /// Log a write; in sync mode it becomes visible through `pending`, in async
    /// mode it goes to the store at once.
    pub(super) fn write(&self, key: &[u8], value: Option<&[u8]>) -> Result<u64, Status> {
        self.write_expiring(key, value, crate::core::expiry::NEVER)
    }

    /// Like `write`, the value expiring at `expires_at` (unix ms, 0: never).
    pub(super) fn write_expiring(
        &self,
        key: &[u8],
        value: Option<&[u8]>,
        expires_at: u64,
    ) -> Result<u64, Status> {
        if let Some((status, _)) = self.lsm.refusal() {
            return Err(status);
        }
        if self.lsm.must_stall() {
            return Err(Status::Overloaded);
        }
        let lsn = self.commit.append(|lsn| match value {
            Some(value) => Record::put(lsn, key, value, expires_at),
            None => Record::Delete { lsn, key },
        })?;
        match self.durability {
            Durability::Sync => {
                self.pending
                    .borrow_mut()
                    .insert_expiring(key, lsn, value, expires_at);
                Ok(lsn)
            }
            Durability::Async => {
                self.lsm
                    .apply_expiring(key.to_vec(), value.map(<[u8]>::to_vec), expires_at, lsn);
                // Acknowledged at once: nothing to wait for.
                Ok(0)
            }
        }
    }

    /// Past the backup gate with no transaction holding `key`, for a
    /// single-key write: the gate is entered first, and left again while
    /// waiting for a transaction's lock (a backup's pause must not wait for
    /// a write that waits for a lock). None once the lock timeout passed.
    pub async fn enter_write_unlocked(&self, key: &[u8]) -> Option<WriteTicket<'_>> {
        let deadline = Instant::now() + self.lock_timeout;
        loop {
            let gate = self.backup.enter_write().await;
            // Waiting at the gate may have let a transaction lock the key.
            if !self.locks.is_blocked(key, true) {
                return Some(gate);
            }
            drop(gate);
            if !self.locks.wait_unlocked(key, true, deadline).await {
                return None;
            }
        }
    }

    /// Wait until every reply in `out` may be released; replies that depended on
    /// writes the WAL failed to make durable become WAL_FAILED.
    pub async fn settle(&self, out: &mut ReplyBatch) {
        let lsn = out.wait_lsn();
        if lsn == 0 || lsn <= self.commit.durable_lsn() {
            return;
        }
        if self.commit.wait_durable(lsn).await.is_err() {
            out.fail_after(self.commit.durable_lsn(), Status::WalFailed);
        }
    }

    /// A WAL batch is durable: move its writes from `pending` into the store.
    pub fn apply_durable(&self, payload: &[u8], first_lsn: u64, count: u32) {
        if self.durability == Durability::Async {
            return;
        }
        let mut pending = self.pending.borrow_mut();
        let decoded = decode_batch_payload(payload, first_lsn, count, |record| match record {
            Record::Txn {
                txn: TxnRecord::Resolve(_),
                lsn,
            } => self.apply_resolved(&mut pending, lsn),
            record => apply_record(&self.lsm, &mut pending, record),
        });
        // We encoded these bytes ourselves a moment ago.
        assert!(
            decoded.is_ok(),
            "own WAL batch failed to decode: {decoded:?}"
        );
    }

    /// Run the group-commit flusher over `wal` until the WAL is stopped or
    /// fails: each durable batch reaches the memtable (`apply_durable`); a
    /// failure drops every write that never became durable. Returns the
    /// failure, if any. One call per shard: the runtime's, or a simulation's.
    pub async fn run_wal_flusher<C: crate::shard::clock::Clock>(
        &self,
        wal: &mut crate::io::wal_writer::WalWriter<D>,
        clock: &C,
    ) -> Option<String> {
        let mut reason = None;
        self.commit
            .run_flusher(
                wal,
                clock,
                |payload, first_lsn, count| self.apply_durable(payload, first_lsn, count),
                |why| {
                    self.drop_pending();
                    reason = Some(why.to_string());
                },
            )
            .await;
        reason
    }

    /// The WAL failed: forget every write that did not become durable.
    pub fn drop_pending(&self) {
        self.pending.borrow_mut().clear();
        self.poison_committing();
    }

    pub fn pending_len(&self) -> usize {
        self.pending.borrow().len()
    }
}

/// The status a failed table read gives its request.
pub(super) fn read_failure(e: &TableError) -> Status {
    match e {
        TableError::Corrupt { .. } => Status::StorageCorrupt,
        TableError::Io(_) => Status::IoError,
    }
}

/// Apply one durable record to the storage, reusing the pending entry's buffers
/// when it is still the latest write of its key.
fn apply_record<D: Disk>(lsm: &Lsm<D>, pending: &mut Pending, record: Record<'_>) {
    let lsn = record.lsn();
    if let Record::Txn {
        txn: TxnRecord::Commit(c),
        ..
    } = record
    {
        // Staged in `pending` by `log_commit`, like single-key writes.
        apply_staged(lsm, pending, c.writes(), lsn);
        return;
    }
    // Prepares are applied when resolved; resolves by `apply_resolved`.
    let Some(key) = record.key() else { return };
    match pending.take_if_latest(key, lsn) {
        Some((key, value, expires_at)) => lsm.apply_expiring(key, value, expires_at, lsn),
        None => replay_record(lsm, record),
    }
}

/// A transaction's writes at `lsn`, now durable, into the storage (replay).
pub fn apply_txn_writes<D: Disk>(lsm: &Lsm<D>, writes: WriteIter<'_>, lsn: u64) {
    // First, so that a part with no writes is covered too, and so that a
    // freeze triggered by the last write keeps the LSN with its writes.
    lsm.note_applied(lsn);
    for w in writes {
        lsm.apply_expiring(
            w.key().to_vec(),
            w.value().map(<[u8]>::to_vec),
            w.expires_at(),
            lsn,
        );
    }
}

/// Stage a transaction's writes at `lsn` in `pending`, like single-key writes.
pub(super) fn stage_txn_writes(pending: &mut Pending, writes: WriteIter<'_>, lsn: u64) {
    for w in writes {
        pending.insert_expiring(w.key(), lsn, w.value(), w.expires_at());
    }
}

/// A transaction's staged writes at `lsn` are durable: move them into the
/// storage, reusing the pending buffers where they are still the latest.
pub(super) fn apply_staged<D: Disk>(
    lsm: &Lsm<D>,
    pending: &mut Pending,
    writes: WriteIter<'_>,
    lsn: u64,
) {
    lsm.note_applied(lsn);
    for w in writes {
        match pending.take_if_latest(w.key(), lsn) {
            Some((key, value, expires_at)) => lsm.apply_expiring(key, value, expires_at, lsn),
            None => lsm.apply_expiring(
                w.key().to_vec(),
                w.value().map(<[u8]>::to_vec),
                w.expires_at(),
                lsn,
            ),
        }
    }
}

/// Apply one recovered (or superseded) single-key record to the storage;
/// transaction records are replayed by `recovery`.
pub fn replay_record<D: Disk>(lsm: &Lsm<D>, record: Record<'_>) {
    match record {
        Record::Put { lsn, key, value } => lsm.apply(key.to_vec(), Some(value.to_vec()), lsn),
        Record::Delete { lsn, key } => lsm.apply(key.to_vec(), None, lsn),
        Record::PutExpiring {
            lsn,
            key,
            expires_at,
            value,
        } => lsm.apply_expiring(key.to_vec(), Some(value.to_vec()), expires_at, lsn),
        Record::Txn { .. } => {}
    }
}
