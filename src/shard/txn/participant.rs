//! One shard's side of transactions and snapshot reads: taking key locks,
//! checking conditions, logging TXN_COMMIT / TXN_PREPARE / TXN_RESOLVE records
//! and applying transactional writes once their record is durable.
//!
//! A transaction's writes reach the memtable only after the record that carries
//! them (or, for a participant, the resolve record) is durable, while the keys
//! are still locked: nobody can observe them earlier, and a failed fsync leaves
//! nothing visible. Because they may be applied after later records of other
//! keys, every such record pins the WAL (see `Lsm::set_wal_floor`) until its
//! writes are in the memtable; a coordinator's decision stays pinned until every
//! participant has durably resolved, so recovery can always find it.
//!
//! It must never: apply a prepared transaction's writes without a commit
//! decision, release a participant's locks while its outcome is in doubt, or
//! hold a lock past the request that took it on any path but the in-doubt one.

use std::time::Instant;

use crate::core::status::Status;
use crate::core::txn_format::{
    write_bytes, CommitRecord, ResolveRecord, TxnId, TxnPart, TxnRecord, TxnView, ValidPrepare,
    WriteIter,
};
use crate::core::types::Durability;
use crate::core::wal_format::Record;
use crate::io::Disk;

use crate::shard::locks::{LockSet, Mode};
use crate::shard::ops::ReplyBatch;
use crate::shard::state::{
    apply_staged, apply_txn_writes, read_failure, stage_txn_writes, ShardState,
};
use crate::shard::txn_table::Prepared;

/// Why a decision or single-shard commit did not take effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitError {
    /// Refused before anything was logged: definitely not committed.
    NotLogged(Status),
    /// Logged, but the WAL failed before it was durable: it may have committed.
    InDoubt,
}

fn push_commit_error(e: CommitError, out: &mut ReplyBatch) {
    match e {
        CommitError::NotLogged(s) => out.push(s, b"", 0),
        // Like a single PUT whose fsync failed: not acknowledged, maybe lost.
        CommitError::InDoubt => out.push(Status::WalFailed, b"", 0),
    }
}

/// Why a shard said no.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Condition `index` (in the client's numbering) was false.
    Condition(u32),
    /// The locks were not free before the deadline.
    LockTimeout,
    Failed(Status),
    /// The shard refuses writes for good (WAL_FAILED, STORAGE_FAILED,
    /// DISK_FULL), with the reason.
    Latched(Status, String),
}

impl Refusal {
    pub fn push(&self, out: &mut ReplyBatch) {
        match self {
            Refusal::Condition(i) => out.push(Status::ConditionFailed, &i.to_le_bytes(), 0),
            Refusal::LockTimeout => out.push(
                Status::TxnAborted,
                b"lock wait timed out (contention); nothing was applied",
                0,
            ),
            Refusal::Failed(s) => out.push(*s, b"", 0),
            Refusal::Latched(s, why) => out.push(*s, why.as_bytes(), 0),
        }
    }
}

/// The locks a transaction part needs: writes exclusive, condition-only keys shared.
pub fn lock_set_of(view: &TxnView<'_>, set: &mut LockSet) {
    set.clear();
    for (_, c) in view.conds() {
        set.add(c.key(), Mode::Shared);
    }
    for w in view.writes() {
        set.add(w.key(), Mode::Exclusive);
    }
    set.seal();
}

impl<D: Disk> ShardState<D> {
    pub fn next_txn_id(&self) -> TxnId {
        let mut t = self.txns.borrow_mut();
        t.next_seq += 1;
        TxnId {
            coordinator: self.id.0,
            seq: t.next_seq,
        }
    }

    /// Never hand out a transaction number at or below `seq` (recovery: above
    /// the clock and every number the log shows).
    pub fn raise_txn_seq(&self, seq: u64) {
        let mut t = self.txns.borrow_mut();
        t.next_seq = t.next_seq.max(seq);
    }

    /// Lock `set` with no owner, until the process ends (in-doubt keys after a
    /// failed recovery resolve). Free at startup, so granted at once.
    pub fn hold_locks_forever(&self, set: &LockSet) {
        let granted = self.locks.grant_now(set);
        debug_assert!(granted, "locks taken before serving");
    }

    pub fn locks_held(&self) -> usize {
        self.locks.len()
    }

    pub fn prepared_txns(&self) -> usize {
        self.txns.borrow().prepared_len()
    }

    pub fn pin(&self, lsn: u64) {
        let mut t = self.txns.borrow_mut();
        *t.pins.entry(lsn).or_insert(0) += 1;
        self.lsm.set_wal_floor(t.pins.keys().next().copied());
    }

    pub fn unpin(&self, lsn: u64) {
        let mut t = self.txns.borrow_mut();
        match t.pins.get_mut(&lsn) {
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                t.pins.remove(&lsn);
            }
            None => panic!("unpinned LSN {lsn} that was not pinned"),
        }
        self.lsm.set_wal_floor(t.pins.keys().next().copied());
    }

    fn check_writable(&self, view: &TxnView<'_>) -> Result<(), Refusal> {
        if let Some((status, why)) = self.write_refusal() {
            return Err(Refusal::Latched(status, why));
        }
        if view.write_count() > 0 && self.lsm.must_stall() {
            return Err(Refusal::Failed(Status::Overloaded));
        }
        if view
            .writes()
            .any(|w| w.value().is_some_and(|v| v.len() > self.value_bytes_max))
        {
            return Err(Refusal::Failed(Status::ValueTooLarge));
        }
        Ok(())
    }

    /// Lock this shard's keys of a transaction and check its conditions (in
    /// index order: the first false one is the lowest-numbered false one here).
    /// On success the locks in `set` are held and must be released by the
    /// caller; on a false condition too if `keep_on_false` (the coordinator
    /// still has to check lower-numbered conditions on later shards while
    /// these stay locked, so that the reply names the first false condition
    /// of one consistent state).
    pub(in crate::shard) async fn lock_and_check(
        &self,
        view: &TxnView<'_>,
        set: &mut LockSet,
        deadline: Instant,
        keep_on_false: bool,
    ) -> Result<(), Refusal> {
        self.check_writable(view)?;
        lock_set_of(view, set);
        if !self.locks.acquire(set, deadline).await {
            return Err(Refusal::LockTimeout);
        }
        for (index, cond) in view.conds() {
            match self.read_cell(cond.key(), |v, e, _| cond.holds(v, e)).await {
                Ok(true) => {}
                Ok(false) => {
                    if !keep_on_false {
                        self.locks.release(set);
                    }
                    return Err(Refusal::Condition(index));
                }
                Err(e) => {
                    self.locks.release(set);
                    return Err(Refusal::Failed(read_failure(&e)));
                }
            }
        }
        Ok(())
    }

    /// Log a transaction record and pin it; in async mode ask for a prompt sync,
    /// since the transaction waits for it.
    pub(in crate::shard) fn log_txn(&self, txn: TxnRecord<'_>) -> Result<u64, Status> {
        let lsn = self.commit.append(|lsn| Record::Txn { lsn, txn })?;
        self.pin(lsn);
        self.commit.request_sync();
        Ok(lsn)
    }

    pub(in crate::shard) fn apply_writes(&self, writes: WriteIter<'_>, lsn: u64) {
        apply_txn_writes(&self.lsm, writes, lsn);
    }

    /// Log a TXN_COMMIT with `view`'s writes: the whole of a single-shard
    /// transaction, or a coordinator's decision with its own writes. The locks
    /// must be held. A decision stays pinned (`keep_pin`) until every
    /// participant has resolved. Then call [`Self::finish_commit`].
    ///
    /// Sync durability: the writes are staged like single-key writes (visible
    /// at once, every reply that saw them held until durable, moved into the
    /// memtable in LSN order when durable), so the caller may release its locks
    /// right after this returns. Async: applied by `finish_commit`, under locks.
    pub(in crate::shard) fn log_commit(
        &self,
        id: TxnId,
        participants: &[u16],
        view: &TxnView<'_>,
        keep_pin: bool,
    ) -> Result<u64, CommitError> {
        let mut body =
            Vec::with_capacity(32 + view.writes().map(|w| write_bytes(&w)).sum::<usize>());
        let txn = TxnRecord::Commit(CommitRecord::encode(&mut body, id, participants, view));
        let record = |lsn| Record::Txn { lsn, txn };
        let lsn = self.commit.append(record).map_err(CommitError::NotLogged)?;
        if keep_pin || !self.sync_mode() {
            self.pin(lsn);
        }
        if self.sync_mode() {
            stage_txn_writes(&mut self.pending.borrow_mut(), view.writes(), lsn);
        } else {
            self.commit.request_sync();
        }
        Ok(lsn)
    }

    /// Wait until a logged commit is durable (async: then apply its writes,
    /// with the locks still held). `Err(InDoubt)`: the WAL failed first.
    pub(in crate::shard) async fn finish_commit(
        &self,
        view: &TxnView<'_>,
        lsn: u64,
        keep_pin: bool,
    ) -> Result<(), CommitError> {
        if self.commit.wait_durable(lsn).await.is_err() {
            return Err(CommitError::InDoubt);
        }
        if !self.sync_mode() {
            self.apply_writes(view.writes(), lsn);
            if !keep_pin {
                self.unpin(lsn);
            }
        }
        Ok(())
    }

    pub(in crate::shard) fn sync_mode(&self) -> bool {
        self.durability == Durability::Sync
    }

    /// A transaction whose keys all live on this shard: one TXN_COMMIT record.
    pub(in crate::shard) async fn txn_single(&self, body: &[u8], out: &mut ReplyBatch) {
        let Ok(view) = TxnView::parse(body, true) else {
            debug_assert!(false, "the coordinator encodes shard bodies");
            return out.push(Status::Internal, b"malformed transaction part", 0);
        };
        let mut set = LockSet::default();
        if let Err(r) = self
            .lock_and_check(&view, &mut set, self.lock_deadline(), false)
            .await
        {
            return r.push(out);
        }
        if view.write_count() == 0 {
            self.locks.release(&set);
            return out.push(Status::Ok, b"", 0);
        }
        let id = TxnId {
            coordinator: self.id.0,
            seq: 0,
        };
        // Backups cut between WAL appends: hold a pause off while appending.
        let gate = self.backup.enter_write().await;
        let logged = self.log_commit(id, &[], &view, false);
        drop(gate);
        let lsn = match logged {
            Ok(lsn) => lsn,
            Err(e) => {
                self.locks.release(&set);
                return push_commit_error(e, out);
            }
        };
        if self.sync_mode() {
            // The reply waits for the record like a PUT's does (`settle`).
            self.locks.release(&set);
            return out.push(Status::Ok, b"", lsn);
        }
        let finished = self.finish_commit(&view, lsn, false).await;
        self.locks.release(&set);
        match finished {
            Ok(()) => out.push(Status::Ok, b"", 0),
            Err(e) => push_commit_error(e, out),
        }
    }

    /// After a false condition elsewhere: lock this shard's keys and check its
    /// conditions, keeping the locks under `id` either way (released by
    /// `SnapRelease`), so the coordinator can name the lowest false condition.
    pub(in crate::shard) async fn txn_check(&self, id: TxnId, body: &[u8], out: &mut ReplyBatch) {
        let Ok(view) = TxnView::parse(body, true) else {
            debug_assert!(false, "the coordinator encodes shard bodies");
            return out.push(Status::Internal, b"malformed transaction part", 0);
        };
        let mut set = LockSet::default();
        let checked = self
            .lock_and_check(&view, &mut set, self.lock_deadline(), true)
            .await;
        match checked {
            Ok(()) | Err(Refusal::Condition(_)) => {
                self.txns.borrow_mut().snapshots.insert(id, set);
            }
            Err(_) => {}
        }
        match checked {
            Ok(()) => out.push(Status::Ok, b"", 0),
            Err(r) => r.push(out),
        }
    }

    /// Phase one on a participant: lock, check, log TXN_PREPARE, wait durable.
    pub(in crate::shard) async fn txn_prepare(&self, id: TxnId, body: &[u8], out: &mut ReplyBatch) {
        let Ok(view) = TxnView::parse(body, true) else {
            debug_assert!(false, "the coordinator encodes shard bodies");
            return out.push(Status::Internal, b"malformed transaction part", 0);
        };
        let mut set = LockSet::default();
        if let Err(r) = self
            .lock_and_check(&view, &mut set, self.lock_deadline(), true)
            .await
        {
            if let Refusal::Condition(_) = r {
                // Held until the coordinator has checked the rest (SnapRelease).
                self.txns.borrow_mut().snapshots.insert(id, set);
            }
            return r.push(out);
        }
        let record = ValidPrepare::encode(id, &view);
        let gate = self.backup.enter_write().await;
        let logged = self.log_txn(TxnRecord::Prepare(record.record()));
        drop(gate);
        let lsn = match logged {
            Ok(lsn) => lsn,
            Err(s) => {
                self.locks.release(&set);
                return out.push(s, b"", 0);
            }
        };
        if self.commit.wait_durable(lsn).await.is_err() {
            // Whether or not the prepare reached the disk, the coordinator will
            // not commit after this answer, and recovery presumes abort.
            self.unpin(lsn);
            self.locks.release(&set);
            return out.push(Status::WalFailed, b"", 0);
        }
        crate::failpoint!("txn-after-prepare");
        self.txns.borrow_mut().prepared.insert(
            id,
            Prepared {
                locks: set,
                record,
                lsn,
            },
        );
        out.push(Status::Ok, b"", 0);
    }

    /// Phase two on a participant. Commit: log TXN_RESOLVE, wait durable, apply
    /// the prepared writes, release. Abort: release (presumed abort needs no record).
    pub(in crate::shard) async fn txn_decide(&self, id: TxnId, commit: bool, out: &mut ReplyBatch) {
        let Some(p) = self.txns.borrow_mut().prepared.remove(&id) else {
            debug_assert!(false, "decision for {id} which is not prepared here");
            return out.push(Status::Internal, b"transaction not prepared here", 0);
        };
        if !commit {
            self.unpin(p.lsn);
            self.locks.release(&p.locks);
            return out.push(Status::Ok, b"", 0);
        }
        let resolve = TxnRecord::Resolve(ResolveRecord { id, commit: true });
        let gate = self.backup.enter_write().await;
        if self.sync_mode() {
            return self.resolve_staged(id, p, resolve, out);
        }
        let logged = self.log_txn(resolve);
        drop(gate);
        let resolved = match logged {
            Ok(lsn) => self
                .commit
                .wait_durable(lsn)
                .await
                .map(|()| lsn)
                .map_err(|()| Status::WalFailed),
            Err(s) => Err(s),
        };
        let lsn = match resolved {
            Ok(lsn) => lsn,
            Err(s) => {
                // In doubt here until restart: keep the locks and the pin so
                // nobody reads around the committed writes; recovery applies them.
                self.txns.borrow_mut().prepared.insert(id, p);
                return out.push(s, b"", 0);
            }
        };
        self.apply_writes(p.record.record().writes(), lsn);
        crate::failpoint!("txn-after-partial-apply");
        self.unpin(lsn);
        self.unpin(p.lsn);
        self.locks.release(&p.locks);
        out.push(Status::Ok, b"", 0);
    }

    /// Sync durability: log TXN_RESOLVE and stage the prepared writes like
    /// single-key writes (visible now, replies held until durable), then
    /// release the locks. The writes reach the memtable, and the prepare's pin
    /// is dropped, when the resolve record is durable (`apply_durable`).
    fn resolve_staged(&self, id: TxnId, p: Prepared, txn: TxnRecord<'_>, out: &mut ReplyBatch) {
        let record = |lsn| Record::Txn { lsn, txn };
        let lsn = match self.commit.append(record) {
            Ok(lsn) => lsn,
            Err(s) => {
                // Nothing logged; the WAL has failed. In doubt until restart:
                // keep the locks and the pin; recovery applies the writes.
                self.txns.borrow_mut().prepared.insert(id, p);
                return out.push(s, b"", 0);
            }
        };
        stage_txn_writes(
            &mut self.pending.borrow_mut(),
            p.record.record().writes(),
            lsn,
        );
        crate::failpoint!("txn-after-partial-apply");
        self.locks.release(&p.locks);
        self.txns.borrow_mut().committing.insert(lsn, p);
        out.push(Status::Ok, b"", lsn);
    }

    /// A TXN_RESOLVE staged by [`Self::resolve_staged`] is durable: its writes
    /// go to the memtable (called in LSN order with the other records of its
    /// batch, `pending` borrowed by the caller).
    pub(in crate::shard) fn apply_resolved(
        &self,
        pending: &mut crate::shard::pending::Pending,
        lsn: u64,
    ) {
        let Some(p) = self.txns.borrow_mut().committing.remove(&lsn) else {
            return; // resolved by recovery, which applies its own writes
        };
        apply_staged(&self.lsm, pending, p.record.record().writes(), lsn);
        self.unpin(p.lsn);
    }

    /// The WAL failed: staged resolves will never be durable here, but their
    /// transactions committed. Lock their keys until restart, so nobody reads
    /// around them; recovery applies them from the prepare and the decision.
    pub(in crate::shard) fn poison_committing(&self) {
        let t = self.txns.borrow();
        for p in t.committing.values() {
            self.locks.poison(&p.locks);
        }
    }

    /// Read `keys` (an MGET key list) under shared locks. `hold`: keep the locks
    /// under `id` until [`Self::snap_release`] (a multi-shard snapshot);
    /// otherwise release them at once. Reply: one `status u16 | len u32 | value`
    /// entry per key, in order.
    pub(in crate::shard) async fn snap_read(
        &self,
        id: Option<TxnId>,
        keys: &[u8],
        out: &mut ReplyBatch,
    ) {
        let mut set = LockSet::default();
        for k in crate::core::txn_format::sized_items(keys) {
            set.add(k, Mode::Shared);
        }
        set.seal();
        if !self.locks.acquire(&set, self.lock_deadline()).await {
            return Refusal::LockTimeout.push(out);
        }
        let mut page = Vec::new();
        let mut failed = None;
        for k in crate::core::txn_format::sized_items(keys) {
            // Entry: status u16 | len u32 | expires_at u64 (0: never) | value.
            // The coordinator keeps the expiry for callers that ask for it.
            let read = self
                .read_cell(k, |v, expires_at, _| {
                    let (status, v) = match v {
                        Some(v) => (Status::Ok, v),
                        None => (Status::NotFound, &b""[..]),
                    };
                    page.extend_from_slice(&status.code().to_le_bytes());
                    page.extend_from_slice(&(v.len() as u32).to_le_bytes());
                    page.extend_from_slice(&expires_at.to_le_bytes());
                    page.extend_from_slice(v);
                })
                .await;
            if let Err(e) = read {
                failed = Some(read_failure(&e));
                break;
            }
        }
        match (failed, id) {
            (Some(s), _) => {
                self.locks.release(&set);
                out.push(s, b"", 0);
            }
            (None, Some(id)) => {
                self.txns.borrow_mut().snapshots.insert(id, set);
                out.push(Status::Ok, &page, 0);
            }
            (None, None) => {
                self.locks.release(&set);
                out.push(Status::Ok, &page, 0);
            }
        }
    }

    pub(in crate::shard) fn snap_release(&self, id: TxnId, out: &mut ReplyBatch) {
        if let Some(set) = self.txns.borrow_mut().snapshots.remove(&id) {
            self.locks.release(&set);
        }
        out.push(Status::Ok, b"", 0);
    }

    /// Lock `set` until restart (keys of an in-doubt transaction).
    pub(in crate::shard) fn poison_locks(&self, set: &LockSet) {
        self.locks.poison(set);
    }

    /// Release locks a coordinator took on its own shard.
    pub(in crate::shard) fn release_locks(&self, set: &LockSet) {
        self.locks.release(set);
    }

    pub(in crate::shard) fn lock_deadline(&self) -> Instant {
        Instant::now() + self.lock_timeout
    }

    /// The decision of a coordinator that owns none of a transaction's keys:
    /// a TXN_COMMIT naming `participants` and no writes, durable when this
    /// returns, pinned until [`Self::release_decision`] (every participant has
    /// resolved). The router's two-phase commit takes this same path
    /// (`log_commit` with an empty own part); the deterministic simulation,
    /// which has no cross-core router, drives it directly.
    #[doc(hidden)]
    pub async fn decide_without_writes(
        &self,
        id: TxnId,
        participants: &[u16],
    ) -> Result<u64, CommitError> {
        let mut empty = Vec::with_capacity(8);
        let view = TxnPart::default().encode(&mut empty);
        let gate = self.backup.enter_write().await;
        let logged = self.log_commit(id, participants, &view, true);
        drop(gate);
        let lsn = logged?;
        self.finish_commit(&view, lsn, true).await?;
        Ok(lsn)
    }

    /// Every participant of the decision at `lsn` has durably resolved.
    #[doc(hidden)]
    pub fn release_decision(&self, lsn: u64) {
        self.unpin(lsn);
    }

    /// Recovery: resolve a prepared transaction found in the log. `commit` comes
    /// from the coordinators' recovered decisions (absent: presumed abort).
    pub async fn resolve_recovered(
        &self,
        id: TxnId,
        prepare: &ValidPrepare,
        commit: bool,
    ) -> Result<(), Status> {
        if !commit {
            // Nothing was applied and no coordinator will ever commit this id.
            return Ok(());
        }
        let lsn = self.log_txn(TxnRecord::Resolve(ResolveRecord { id, commit: true }))?;
        self.commit
            .wait_durable(lsn)
            .await
            .map_err(|()| Status::WalFailed)?;
        self.apply_writes(prepare.record().writes(), lsn);
        self.unpin(lsn);
        crate::failpoint!("txn-during-recovery");
        Ok(())
    }
}
