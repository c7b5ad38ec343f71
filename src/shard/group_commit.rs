//! Group commit: turns the records written by many requests into few WAL batches.
//!
//! Requests append encoded records to the *open* batch and get an LSN back. A
//! single flusher task takes the whole open batch, writes it with one durable
//! write (a write and an fdatasync, one `RWF_DSYNC` write on the O_DIRECT disk),
//! then advances `durable_lsn` and wakes the requests whose records that batch
//! made durable (no one else). Records that arrive while a flush is in flight
//! wait in the next open batch: the busier the shard, the larger the batches.
//!
//! - sync durability: the flusher starts as soon as there is work; replies wait
//!   for `durable_lsn >= their LSN`.
//! - async durability: replies do not wait; the flusher lets records collect for
//!   up to `sync_interval` (or until the batch is large) before syncing.
//!
//! After the first WAL failure `failure` is set for good: appends are refused,
//! waiters for LSNs past `durable_lsn` get an error, and nothing is retried.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::time::Duration;

use futures_lite::future;

use crate::core::limits::WAL_BATCH_BYTES_TARGET;
use crate::core::status::Status;
use crate::core::types::Durability;
use crate::core::wal_format::{encode_record, Record};
use crate::io::wal_writer::{WalError, WalWriter};
use crate::io::Disk;

use crate::shard::clock::Clock;
use crate::shard::metrics::LatencyHist;
use crate::shard::wake::{Event, WaitQueue};

/// Counters of the flusher's work, read by metrics.
#[derive(Default)]
pub struct CommitStats {
    pub batches: Cell<u64>,
    pub records: Cell<u64>,
    pub bytes: Cell<u64>,
    pub sync_nanos_total: Cell<u64>,
    pub sync_nanos_max: Cell<u64>,
    pub largest_batch_records: Cell<u64>,
    pub segments_recycled: Cell<u64>,
    /// Time of each batch's write + fdatasync.
    pub sync_latency: LatencyHist,
}

/// A full batch waiting for the flusher, sealed so that no batch outgrows what
/// one WAL segment can hold.
struct Sealed {
    bytes: Vec<u8>,
    first_lsn: u64,
    count: u32,
}

struct CommitState {
    open: Vec<u8>,
    open_first_lsn: u64,
    open_count: u32,
    sealed: VecDeque<Sealed>,
    sealed_bytes: usize,
    next_lsn: u64,
    durable_lsn: u64,
    failure: Option<String>,
}

pub struct Commit {
    durability: Durability,
    sync_interval: Duration,
    /// Appends past this many pending bytes are refused with OVERLOADED.
    open_bytes_max: usize,
    /// A batch is sealed before it grows past this (a single larger record
    /// still forms a batch of its own).
    batch_bytes_max: usize,
    st: RefCell<CommitState>,
    durable_changed: WaitQueue,
    work_arrived: WaitQueue,
    stop: Event,
    /// WAL segments wholly at or below this LSN may be deleted (set after a
    /// flush is recorded in the manifest); `recycled` is how far that was done.
    recycle_through: Cell<u64>,
    recycled: Cell<u64>,
    /// Async durability: someone waits for the open batch (a transaction's
    /// prepare or decision), so sync it now instead of after `sync_interval`.
    urgent: Cell<bool>,
    /// Backups that need every WAL segment kept until they copied it.
    recycle_holds: Cell<u32>,
    /// The WAL failed for want of space.
    disk_full: Cell<bool>,
    /// (segment, offset) where the WAL ends after the last durable batch,
    /// published by the flusher, which owns the writer.
    wal_end: Cell<(u64, u64)>,
    pub stats: CommitStats,
}

impl Commit {
    /// `next_lsn` is one past the last LSN recovered from the WAL.
    /// `batch_bytes_max` must leave room for a batch header and the segment
    /// header in one WAL segment.
    pub fn new(
        durability: Durability,
        sync_interval: Duration,
        open_bytes_max: usize,
        batch_bytes_max: usize,
        next_lsn: u64,
    ) -> Commit {
        assert!(next_lsn >= 1);
        assert!(batch_bytes_max > 0);
        Commit {
            durability,
            sync_interval,
            open_bytes_max,
            batch_bytes_max,
            st: RefCell::new(CommitState {
                open: Vec::with_capacity(64 * 1024),
                open_first_lsn: next_lsn,
                open_count: 0,
                sealed: VecDeque::new(),
                sealed_bytes: 0,
                next_lsn,
                durable_lsn: next_lsn - 1,
                failure: None,
            }),
            durable_changed: WaitQueue::default(),
            work_arrived: WaitQueue::default(),
            stop: Event::default(),
            recycle_through: Cell::new(0),
            recycled: Cell::new(0),
            urgent: Cell::new(false),
            recycle_holds: Cell::new(0),
            disk_full: Cell::new(false),
            wal_end: Cell::new((0, 0)),
            stats: CommitStats::default(),
        }
    }

    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Encode one record into the open batch; returns its LSN.
    pub fn append<'a>(&self, make: impl FnOnce(u64) -> Record<'a>) -> Result<u64, Status> {
        let mut st = self.st.borrow_mut();
        if st.failure.is_some() {
            return Err(Status::WalFailed);
        }
        if self.stop.is_set() {
            return Err(Status::ShuttingDown);
        }
        if st.open.len() + st.sealed_bytes >= self.open_bytes_max {
            return Err(Status::Overloaded);
        }
        let lsn = st.next_lsn;
        let record = make(lsn);
        assert_eq!(record.lsn(), lsn, "a record carries the LSN it was given");
        if st.open_count > 0 && st.open.len() + record.encoded_len() > self.batch_bytes_max {
            // While a flush is in flight the open batch keeps growing; sealing it
            // here keeps every batch within a segment, however long the flush.
            let st = &mut *st;
            let bytes = std::mem::replace(&mut st.open, Vec::with_capacity(64 * 1024));
            st.sealed_bytes += bytes.len();
            st.sealed.push_back(Sealed {
                bytes,
                first_lsn: st.open_first_lsn,
                count: st.open_count,
            });
            st.open_count = 0;
        }
        if st.open_count == 0 {
            st.open_first_lsn = lsn;
        }
        encode_record(&mut st.open, &record);
        st.open_count += 1;
        st.next_lsn += 1;
        drop(st);
        self.work_arrived.wake_all();
        Ok(lsn)
    }

    pub fn durable_lsn(&self) -> u64 {
        self.st.borrow().durable_lsn
    }

    /// One past the last LSN handed out.
    pub fn next_lsn(&self) -> u64 {
        self.st.borrow().next_lsn
    }

    pub fn failure(&self) -> Option<String> {
        self.st.borrow().failure.clone()
    }

    /// The WAL failed because its disk was full (refusals say DISK_FULL).
    pub fn failed_disk_full(&self) -> bool {
        self.disk_full.get()
    }

    pub fn is_failed(&self) -> bool {
        self.st.borrow().failure.is_some()
    }

    /// Bytes appended and not yet handed to the WAL.
    pub fn open_bytes(&self) -> usize {
        let st = self.st.borrow();
        st.open.len() + st.sealed_bytes
    }

    /// Resolve once `lsn` is durable; `Err` if the WAL failed first.
    pub async fn wait_durable(&self, lsn: u64) -> Result<(), ()> {
        self.durable_changed
            .until_key(lsn, || {
                let st = self.st.borrow();
                if st.durable_lsn >= lsn {
                    Some(Ok(()))
                } else if st.failure.is_some() {
                    Some(Err(()))
                } else {
                    None
                }
            })
            .await
    }

    /// Sync what is open without waiting for the async interval (sync mode
    /// always does).
    pub fn request_sync(&self) {
        self.urgent.set(true);
        self.work_arrived.wake_all();
    }

    /// Every record at or below `lsn` is in durable tables: the flusher may
    /// delete the WAL segments that hold nothing newer.
    pub fn request_recycle(&self, lsn: u64) {
        if lsn > self.recycle_through.get() {
            self.recycle_through.set(lsn);
            self.work_arrived.wake_all();
        }
    }

    fn recycle_due(&self) -> bool {
        self.recycle_through.get() > self.recycled.get() && self.recycle_holds.get() == 0
    }

    /// Keep every WAL segment until [`Self::release_recycling`]: a backup is
    /// copying segments a newer manifest no longer needs.
    pub fn hold_recycling(&self) {
        self.recycle_holds.set(self.recycle_holds.get() + 1);
    }

    pub fn release_recycling(&self) {
        self.recycle_holds
            .set(self.recycle_holds.get().saturating_sub(1));
        self.work_arrived.wake_all();
    }

    /// (segment sequence, byte offset) just past the last durable batch. Once
    /// `durable_lsn() == next_lsn() - 1` and nothing is appended, this is where
    /// the log ends on disk.
    pub fn wal_end(&self) -> (u64, u64) {
        self.wal_end.get()
    }

    async fn recycle<D: Disk>(&self, wal: &mut WalWriter<D>) {
        let through = self.recycle_through.get();
        match wal.remove_segments_through(through).await {
            Ok(n) => {
                if n > 0 {
                    crate::failpoint!("wal-after-recycle");
                }
                self.recycled.set(through);
                self.stats
                    .segments_recycled
                    .set(self.stats.segments_recycled.get() + n as u64);
            }
            Err(e) => {
                // Not a durability problem (the data is in tables); try again
                // after the next flush rather than in a tight loop.
                self.recycled.set(through);
                tracing::warn!("could not delete WAL segments covered by tables: {e}");
            }
        }
    }

    /// Ask the flusher to write what is open and stop. New appends are refused.
    pub fn request_stop(&self) {
        self.stop.set();
        self.work_arrived.wake_all();
    }

    fn has_work(&self) -> bool {
        let st = self.st.borrow();
        st.open_count > 0 || !st.sealed.is_empty()
    }

    /// Run the flusher until stopped (or the WAL fails). `on_durable` sees every
    /// batch after its fdatasync succeeded; `on_failed` runs once if the WAL fails.
    pub async fn run_flusher<D: Disk, C: Clock>(
        &self,
        wal: &mut WalWriter<D>,
        clock: &C,
        mut on_durable: impl FnMut(&[u8], u64, u32),
        on_failed: impl FnOnce(&str),
    ) {
        let mut spare: Vec<u8> = Vec::with_capacity(64 * 1024);
        let end = wal.position();
        self.wal_end.set((end.seq, end.offset));
        loop {
            if !self.has_work() {
                if self.stop.is_set() {
                    return;
                }
                if self.recycle_due() {
                    self.recycle(wal).await;
                    continue;
                }
                match wal.background_step().await {
                    Ok(true) => continue,
                    Ok(false) => {}
                    Err(e) => {
                        self.fail(&e, on_failed);
                        return;
                    }
                }
                self.work_arrived
                    .until(|| {
                        (self.has_work() || self.stop.is_set() || self.recycle_due()).then_some(())
                    })
                    .await;
                continue;
            }
            if self.durability == Durability::Async && !self.stop.is_set() {
                let sleep = clock.sleep(self.sync_interval);
                let big = self.work_arrived.until(|| {
                    let st = self.st.borrow();
                    (st.open.len() >= WAL_BATCH_BYTES_TARGET
                        || !st.sealed.is_empty()
                        || self.urgent.get()
                        || self.stop.is_set())
                    .then_some(())
                });
                future::or(sleep, big).await;
            }
            self.urgent.set(false);
            let (first_lsn, count) = {
                let mut st = self.st.borrow_mut();
                match st.sealed.pop_front() {
                    Some(sealed) => {
                        st.sealed_bytes -= sealed.bytes.len();
                        spare = sealed.bytes;
                        (sealed.first_lsn, sealed.count)
                    }
                    None => {
                        std::mem::swap(&mut st.open, &mut spare);
                        let taken = (st.open_first_lsn, st.open_count);
                        st.open_count = 0;
                        st.open_first_lsn = st.next_lsn;
                        taken
                    }
                }
            };
            let started = clock.now();
            match wal.append_batch(&spare, first_lsn, count).await {
                Ok(written) => {
                    let nanos = (clock.now() - started).as_nanos() as u64;
                    self.record_stats(count, written.bytes, nanos);
                    on_durable(&spare, first_lsn, count);
                    let end = wal.position();
                    self.wal_end.set((end.seq, end.offset));
                    let durable = first_lsn + u64::from(count) - 1;
                    self.st.borrow_mut().durable_lsn = durable;
                    // Only this batch's waiters: the next batch's (appended
                    // while this one was written) would poll for nothing.
                    self.durable_changed.wake_through(durable);
                }
                Err(e) => {
                    self.fail(&e, on_failed);
                    return;
                }
            }
            spare.clear();
            if spare.capacity() > 4 * WAL_BATCH_BYTES_TARGET {
                // One huge value should not pin its buffer forever.
                spare = Vec::with_capacity(64 * 1024);
            }
            // Preparing the next segment runs when the shard is idle (top of the
            // loop); under continuous load only once the active segment is
            // nearly full, so that it does not add a chunk write to every
            // group commit.
            if wal.background_urgent() {
                if let Err(e) = wal.background_step().await {
                    self.fail(&e, on_failed);
                    return;
                }
            }
        }
    }

    fn fail(&self, e: &WalError, on_failed: impl FnOnce(&str)) {
        let reason = e.describe();
        let reason = reason.as_str();
        self.disk_full.set(e.is_disk_full());
        {
            let mut st = self.st.borrow_mut();
            st.failure = Some(reason.to_string());
            st.open.clear();
            st.open_count = 0;
            st.sealed.clear();
            st.sealed_bytes = 0;
        }
        on_failed(reason);
        self.durable_changed.wake_all();
    }

    fn record_stats(&self, count: u32, bytes: u64, sync_nanos: u64) {
        let s = &self.stats;
        s.batches.set(s.batches.get() + 1);
        s.records.set(s.records.get() + u64::from(count));
        s.bytes.set(s.bytes.get() + bytes);
        s.sync_nanos_total
            .set(s.sync_nanos_total.get() + sync_nanos);
        s.sync_nanos_max.set(s.sync_nanos_max.get().max(sync_nanos));
        s.sync_latency.record(sync_nanos);
        s.largest_batch_records
            .set(s.largest_batch_records.get().max(u64::from(count)));
    }
}
