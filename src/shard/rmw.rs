//! Read-modify-write of one key inside its owning shard (`OpKind::Rmw`):
//! read the current value, run the program (`core::rmw::apply`), log the
//! result as one ordinary PUT or DELETE record. No new record type: replay
//! and backups see a plain write.
//!
//! Atomicity: the shard's tasks interleave at every `.await`, so nothing
//! may touch the key between the read and the write. When the value is in
//! memory (pending writes, memtables) the read, the program and the write
//! run with no await in between, which is atomic by itself. When the read
//! must wait for a table block, the key is first locked exclusively in the
//! shard's lock table: PUT, DELETE, GET and other RMWs of the key wait for
//! it as they wait for a transaction's lock, and a transaction cannot lock
//! the key meanwhile. The lock is taken only after the key was seen
//! unlocked, so it is granted at once, and it is held across one disk read,
//! never across a wait for another key: no deadlock.
//!
//! Durability is PUT's: in sync mode the write goes to `pending` and the
//! reply carries its LSN (held until durable); a reply computed from a
//! pending value that was not written carries that value's LSN.
//!
//! It must never: write a key a transaction holds locked, write past a
//! backup's closed gate, or await between computing a value and logging it.

use crate::core::expiry::is_expired;
use crate::core::rmw::{apply, Current, Effect, Expiry, Program, Write};
use crate::core::status::Status;
use crate::io::Disk;
use crate::shard::locks::{LockSet, LockTable, Mode};
use crate::shard::ops::ReplyBatch;
use crate::shard::state::{read_failure, ShardState};

/// The key's exclusive lock while a table read is outstanding; released on
/// every path, errors included.
struct KeyLock<'a> {
    table: &'a LockTable,
    set: LockSet,
}

impl Drop for KeyLock<'_> {
    fn drop(&mut self) {
        self.table.release(&self.set);
    }
}

/// The current value as read: owned (a table block's bytes), its expiry
/// (unix ms, 0: none) and the LSN the read depends on.
type Read = (Option<Vec<u8>>, u64, u64);

impl<D: Disk> ShardState<D> {
    /// Execute one RMW op; `program` was validated by the codec (native) or
    /// built by the RESP layer.
    pub(super) async fn rmw(&self, key: &[u8], program: &[u8], out: &mut ReplyBatch) {
        self.metrics.rmw();
        let program = match Program::decode(program) {
            Ok(p) => p,
            Err(e) => {
                // Both callers validate the bytes first: ours is the bug.
                debug_assert!(false, "malformed RMW program: {e}");
                return out.push(Status::Internal, e.0.as_bytes(), 0);
            }
        };
        // Entered before the read, as DELETE does: a backup's cut falls on
        // one side of both the read and the write.
        let Some(_gate) = self.enter_write_unlocked(key).await else {
            return out.push(Status::LockTimeout, b"", 0);
        };
        // Fast path: the value is in memory; no await from here to the write.
        if let Some(effect) = self.rmw_in_memory(key, &program) {
            return self.rmw_finish(key, effect, out);
        }
        // Slow path: lock the key for the table read. Nothing ran since the
        // key was seen unlocked, so the grant cannot fail.
        let mut set = LockSet::default();
        set.add(key, Mode::Exclusive);
        set.seal();
        let granted = self.locks.grant_now(&set);
        assert!(granted, "an unlocked key could not be locked");
        let _lock = KeyLock {
            table: &self.locks,
            set,
        };
        let read = match self.rmw_read(key).await {
            Ok(read) => read,
            Err(status) => return out.push(status, b"", 0),
        };
        let effect = self.rmw_apply(&program, read.0.as_deref(), read.1, read.2);
        self.rmw_finish(key, effect, out);
        // `_lock` is released here, after the write is logged and visible.
    }

    /// Run the program on an in-memory value (pending first, then the
    /// memtables), or None if the key is not there (it may be in a table).
    fn rmw_in_memory(&self, key: &[u8], program: &Program<'_>) -> Option<RmwStep> {
        if let Some(p) = self.pending.borrow().get(key) {
            return Some(self.rmw_apply(program, p.value.as_deref(), p.expires_at, p.lsn));
        }
        self.lsm
            .get_in_memory(key, |v, e| self.rmw_apply(program, v, e, 0))
            .ok()
    }

    /// Read the key as stored (expired or not: `apply` judges expiry with
    /// the batch's instant), waiting for a table block if needed.
    async fn rmw_read(&self, key: &[u8]) -> Result<Read, Status> {
        self.read_raw(key, |v, e, lsn| (v.map(<[u8]>::to_vec), e, lsn))
            .await
            .map_err(|e| read_failure(&e))
    }

    fn rmw_apply(
        &self,
        program: &Program<'_>,
        value: Option<&[u8]>,
        expires_at: u64,
        read_lsn: u64,
    ) -> RmwStep {
        let now = self.now_ms();
        let current = value.map(|value| Current {
            value,
            expires_at_ms: expires_at,
        });
        // The expiry a Keep carries over: the live value's (an expired value
        // is absent to the program, and its expiry goes with it).
        let kept = match current {
            Some(c) if !is_expired(c.expires_at_ms, now) => c.expires_at_ms,
            _ => 0,
        };
        RmwStep {
            effect: apply(program, current, now, self.value_bytes_max),
            read_lsn,
            kept,
        }
    }

    fn rmw_finish(&self, key: &[u8], step: RmwStep, out: &mut ReplyBatch) {
        let effect = match step.effect {
            Ok(effect) => effect,
            Err(e) => {
                let status = match e {
                    crate::core::rmw::RmwError::ValueTooLarge => Status::ValueTooLarge,
                    _ => Status::InvalidArgument,
                };
                return out.push_with(status, 0, |o| {
                    o.push(e.code());
                    o.extend_from_slice(e.to_string().as_bytes());
                });
            }
        };
        let Effect { write, reply } = effect;
        let lsn = match write {
            Write::NoWrite => 0,
            Write::Put { value, expiry } => {
                let at = match expiry {
                    Expiry::Keep => step.kept,
                    Expiry::Clear => 0,
                    Expiry::At(at) => at,
                };
                match self.write_expiring(key, Some(&value), at) {
                    Ok(lsn) => lsn,
                    Err(status) => return self.push_write_error(status, out),
                }
            }
            Write::Delete => match self.write(key, None) {
                Ok(lsn) => lsn,
                Err(status) => return self.push_write_error(status, out),
            },
        };
        out.push_with(Status::Ok, lsn.max(step.read_lsn), |o| reply.encode(o));
    }
}

/// A program's outcome and the LSN of the value it read.
struct RmwStep {
    effect: Result<Effect, crate::core::rmw::RmwError>,
    read_lsn: u64,
    /// The expiry `Expiry::Keep` writes (0: none).
    kept: u64,
}
