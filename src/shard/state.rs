//! One shard's state machine: executes operations against its store, logs writes
//! through group commit, and decides when replies may be released.
//!
//! Lives on one core (`!Send`, shared between that core's tasks by `Rc`). It never
//! performs I/O itself: the WAL is written by the flusher (see `commit`), and
//! recovery hands it a store rebuilt from the WAL.
//!
//! Invariant (sync durability): the store holds only durable writes; writes not yet
//! durable live in `pending`, and any reply that depends on one carries its LSN and
//! is held until that LSN is durable, or failed if the WAL fails first.

use std::cell::RefCell;

use crate::core::config::EngineConfig;
use crate::core::limits::KEY_BYTES_MAX;
use crate::core::status::Status;
use crate::core::types::{Durability, ShardId};
use crate::core::wal_format::{decode_batch_payload, Record};

use crate::core::filter::Filter;

use super::commit::Commit;
use super::metrics::ShardMetrics;
use super::ops::{OpBatch, OpKind, OpRef, ReplyBatch};
use super::pending::Pending;
use super::scan::{decode_params, scan_shard};
use super::store::Store;

/// Whether the shard accepts writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShardStatus {
    Serving,
    /// The WAL failed; reads are served, writes are refused with WAL_FAILED.
    ReadOnly {
        reason: String,
    },
}

pub struct ShardState {
    pub id: ShardId,
    pub shard_count: u16,
    durability: Durability,
    value_bytes_max: usize,
    store: RefCell<Store>,
    pending: RefCell<Pending>,
    pub commit: Commit,
    pub metrics: ShardMetrics,
}

impl ShardState {
    pub fn new(
        id: ShardId,
        shard_count: u16,
        config: &EngineConfig,
        store: Store,
        next_lsn: u64,
    ) -> ShardState {
        // Pending WAL bytes allowed before OVERLOADED: room for many largest values.
        let open_bytes_max = (config.value_bytes_max * 4).max(64 * 1024 * 1024);
        ShardState {
            id,
            shard_count,
            durability: config.durability,
            value_bytes_max: config.value_bytes_max,
            store: RefCell::new(store),
            pending: RefCell::new(Pending::default()),
            commit: Commit::new(
                config.durability,
                config.sync_interval,
                open_bytes_max,
                // Several batches per segment; a record larger than this still
                // forms one batch, which config validation proves fits a segment.
                (8 << 20).min(config.wal_segment_bytes as usize / 4),
                next_lsn,
            ),
            metrics: ShardMetrics::default(),
        }
    }

    pub fn status(&self) -> ShardStatus {
        match self.commit.failure() {
            None => ShardStatus::Serving,
            Some(reason) => ShardStatus::ReadOnly { reason },
        }
    }

    /// Execute every op of `batch` in order, appending one reply per op to `out`.
    /// Replies may carry a wait LSN; release them with [`Self::settle`].
    pub fn execute(&self, batch: &OpBatch, out: &mut ReplyBatch) {
        for op in batch.iter() {
            self.execute_one(op, out);
        }
    }

    fn execute_one(&self, op: OpRef<'_>, out: &mut ReplyBatch) {
        debug_assert!(op.key.len() <= KEY_BYTES_MAX, "the codec bounds keys");
        match op.kind {
            OpKind::Get => {
                self.metrics.gets.set(self.metrics.gets.get() + 1);
                self.get(op.key, out)
            }
            OpKind::Put => {
                self.metrics.puts.set(self.metrics.puts.get() + 1);
                if op.value.len() > self.value_bytes_max {
                    return out.push(Status::ValueTooLarge, b"", 0);
                }
                match self.write(op.key, Some(op.value)) {
                    Ok(lsn) => out.push(Status::Ok, b"", lsn),
                    Err(status) => out.push(status, b"", 0),
                }
            }
            OpKind::Scan => self.scan(op.key, op.value, out),
            OpKind::Delete => {
                self.metrics.deletes.set(self.metrics.deletes.get() + 1);
                let existed = self.exists(op.key);
                match self.write(op.key, None) {
                    Ok(lsn) => out.push(Status::Ok, &[u8::from(existed.0)], lsn.max(existed.1)),
                    Err(status) => out.push(status, b"", 0),
                }
            }
        }
    }

    fn scan(&self, start: &[u8], params: &[u8], out: &mut ReplyBatch) {
        let Some(params) = decode_params(params) else {
            // The router builds these bytes; a bad one is our bug, not the client's.
            debug_assert!(false, "malformed scan params");
            return out.push(Status::Internal, b"", 0);
        };
        let mut filter = match Filter::compile(params.filter_kind, params.filter_arg) {
            Ok(f) => f,
            Err(e) => return out.push(Status::InvalidArgument, e.to_string().as_bytes(), 0),
        };
        let store = self.store.borrow();
        let pending = self.pending.borrow();
        let mut wait_lsn = 0;
        out.push_with(Status::Ok, 0, |buf| {
            wait_lsn = scan_shard(&store, &pending, start, &params, &mut filter, buf);
        });
        out.set_last_wait_lsn(wait_lsn);
    }

    fn get(&self, key: &[u8], out: &mut ReplyBatch) {
        if let Some(p) = self.pending.borrow().get(key) {
            return match &p.value {
                Some(v) => out.push(Status::Ok, v, p.lsn),
                None => out.push(Status::NotFound, b"", p.lsn),
            };
        }
        match self.store.borrow().get(key) {
            Some(v) => out.push(Status::Ok, v, 0),
            None => out.push(Status::NotFound, b"", 0),
        }
    }

    /// Whether `key` exists, and the LSN that answer depends on.
    fn exists(&self, key: &[u8]) -> (bool, u64) {
        if let Some(p) = self.pending.borrow().get(key) {
            return (p.value.is_some(), p.lsn);
        }
        (self.store.borrow().contains(key), 0)
    }

    /// Log a write; in sync mode it becomes visible through `pending`, in async
    /// mode it goes to the store at once.
    fn write(&self, key: &[u8], value: Option<&[u8]>) -> Result<u64, Status> {
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
                let mut store = self.store.borrow_mut();
                match value {
                    Some(v) => store.put(key.to_vec(), v.to_vec()),
                    None => {
                        store.delete(key);
                    }
                }
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
        let mut store = self.store.borrow_mut();
        let decoded = decode_batch_payload(payload, first_lsn, count, |record| {
            apply_record(&mut store, &mut pending, record);
        });
        // We encoded these bytes ourselves a moment ago.
        assert!(
            decoded.is_ok(),
            "own WAL batch failed to decode: {decoded:?}"
        );
    }

    /// The WAL failed: forget every write that did not become durable.
    pub fn drop_pending(&self) {
        self.pending.borrow_mut().clear();
    }

    pub fn store_len(&self) -> usize {
        self.store.borrow().len()
    }

    pub fn store_live_bytes(&self) -> usize {
        self.store.borrow().live_bytes()
    }

    pub fn pending_len(&self) -> usize {
        self.pending.borrow().len()
    }

    /// Read-only access to the durable store (diagnostics, tests).
    pub fn with_store<T>(&self, f: impl FnOnce(&Store) -> T) -> T {
        f(&self.store.borrow())
    }
}

/// Apply one durable record to the store, reusing the pending entry's buffers when
/// it is still the latest write of its key.
fn apply_record(store: &mut Store, pending: &mut Pending, record: Record<'_>) {
    match pending.take_if_latest(record.key(), record.lsn()) {
        Some((key, Some(value))) => store.put(key, value),
        Some((key, None)) => {
            store.delete(&key);
        }
        None => match record {
            Record::Put { key, value, .. } => store.put(key.to_vec(), value.to_vec()),
            Record::Delete { key, .. } => {
                store.delete(key);
            }
        },
    }
}

/// Replay one recovered record into a store.
pub fn replay_record(store: &mut Store, record: Record<'_>) {
    match record {
        Record::Put { key, value, .. } => store.put(key.to_vec(), value.to_vec()),
        Record::Delete { key, .. } => {
            store.delete(key);
        }
    }
}
