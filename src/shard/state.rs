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
use std::time::Duration;

use crate::core::config::EngineConfig;
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
use crate::shard::write_gate::BackupGate;

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
            scan_page(&self.lsm, &mut merge, &params, &mut filter, &mut page).await
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
                .map(|(k, w)| (k.to_vec(), w.value.clone(), w.lsn))
                .collect(),
        )
    }

    pub(super) async fn get(&self, key: &[u8], out: &mut ReplyBatch) {
        if let Some(p) = self.pending.borrow().get(key) {
            return match &p.value {
                Some(v) => out.push(Status::Ok, v, p.lsn),
                None => out.push(Status::NotFound, b"", p.lsn),
            };
        }
        let push = |v: Option<&[u8]>, out: &mut ReplyBatch| match v {
            Some(v) => out.push(Status::Ok, v, 0),
            None => out.push(Status::NotFound, b"", 0),
        };
        if self.lsm.get_in_memory(key, |v| push(v, out)).is_ok() {
            return;
        }
        // Captured with no await since the memtables were checked: a flush
        // that completes while we read moves nothing out of our view.
        let version = self.lsm.version();
        match self.lsm.get_in_tables(&version, key).await {
            Ok(Some((block, Some(range)))) => push(Some(&block[range]), out),
            Ok(Some((_, None))) | Ok(None) => push(None, out),
            Err(e) => out.push(read_failure(&e), b"", 0),
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

    /// Whether `key` exists, and the LSN that answer depends on.
    pub(super) async fn exists(&self, key: &[u8]) -> Result<(bool, u64), TableError> {
        if let Some(p) = self.pending.borrow().get(key) {
            return Ok((p.value.is_some(), p.lsn));
        }
        if let Ok(found) = self.lsm.get_in_memory(key, |v| v.is_some()) {
            return Ok((found, 0));
        }
        let version = self.lsm.version();
        let found = self.lsm.get_in_tables(&version, key).await?;
        Ok((matches!(found, Some((_, Some(_)))), 0))
    }

    /// Log a write; in sync mode it becomes visible through `pending`, in async
    /// mode it goes to the store at once.
    pub(super) fn write(&self, key: &[u8], value: Option<&[u8]>) -> Result<u64, Status> {
        if let Some((status, _)) = self.lsm.refusal() {
            return Err(status);
        }
        if self.lsm.must_stall() {
            return Err(Status::Overloaded);
        }
        let lsn = self.commit.append(|lsn| match value {
            Some(value) => Record::Put { lsn, key, value },
            None => Record::Delete { lsn, key },
        })?;
        match self.durability {
            Durability::Sync => {
                self.pending.borrow_mut().insert(key, lsn, value);
                Ok(lsn)
            }
            Durability::Async => {
                self.lsm.apply(key.to_vec(), value.map(<[u8]>::to_vec), lsn);
                // Acknowledged at once: nothing to wait for.
                Ok(0)
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
        Some((key, value)) => lsm.apply(key, value, lsn),
        None => replay_record(lsm, record),
    }
}

/// A transaction's writes at `lsn`, now durable, into the storage (replay).
pub fn apply_txn_writes<D: Disk>(lsm: &Lsm<D>, writes: WriteIter<'_>, lsn: u64) {
    // First, so that a part with no writes is covered too, and so that a
    // freeze triggered by the last write keeps the LSN with its writes.
    lsm.note_applied(lsn);
    for w in writes {
        lsm.apply(w.key().to_vec(), w.value().map(<[u8]>::to_vec), lsn);
    }
}

/// Stage a transaction's writes at `lsn` in `pending`, like single-key writes.
pub(super) fn stage_txn_writes(pending: &mut Pending, writes: WriteIter<'_>, lsn: u64) {
    for w in writes {
        pending.insert(w.key(), lsn, w.value());
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
            Some((key, value)) => lsm.apply(key, value, lsn),
            None => lsm.apply(w.key().to_vec(), w.value().map(<[u8]>::to_vec), lsn),
        }
    }
}

/// Apply one recovered (or superseded) single-key record to the storage;
/// transaction records are replayed by `recovery`.
pub fn replay_record<D: Disk>(lsm: &Lsm<D>, record: Record<'_>) {
    match record {
        Record::Put { lsn, key, value } => lsm.apply(key.to_vec(), Some(value.to_vec()), lsn),
        Record::Delete { lsn, key } => lsm.apply(key.to_vec(), None, lsn),
        Record::Txn { .. } => {}
    }
}
