//! The shard's dispatch: one batch of operations in, one reply per operation
//! out. It sits above every part of the state machine it routes to — single
//! key reads and writes (`state`), read-modify-writes (`rmw`), scans,
//! transactions and snapshot reads
//! (`txn::participant`), backup phases (`backup::phases`) — so that none of
//! those needs to know the others exist.
//!
//! It must never: reorder a batch's operations (replies are positional), let
//! a write past a backup's closed gate, or write a key a transaction holds
//! locked.

use std::time::Instant;

use crate::core::limits::KEY_BYTES_MAX;
use crate::core::status::Status;
use crate::core::txn_format::id_from_bytes;
use crate::io::Disk;
use crate::shard::ops::{OpBatch, OpKind, OpRef, ReplyBatch};
use crate::shard::state::{read_failure, ShardState};

impl<D: Disk> ShardState<D> {
    /// Execute every op of `batch` in order, appending one reply per op to `out`.
    /// Replies may carry a wait LSN; release them with [`Self::settle`].
    ///
    /// With a reply budget (`OpBatch::set_reply_budget`) it stops once the
    /// replies hold that many bytes, after at least one op: the ops not
    /// reached get no reply, and, being a suffix of this shard's ops, keep
    /// their order when sent again.
    pub async fn execute(&self, batch: &OpBatch, out: &mut ReplyBatch) {
        let budget = batch.reply_budget();
        let start = out.value_bytes();
        self.tick_clock();
        for (i, op) in batch.iter().enumerate() {
            if budget != 0 && i > 0 && out.value_bytes() - start >= budget {
                break;
            }
            self.execute_one(op, out).await;
        }
    }

    async fn execute_one(&self, op: OpRef<'_>, out: &mut ReplyBatch) {
        debug_assert!(op.key.len() <= KEY_BYTES_MAX, "the codec bounds keys");
        // Single-key operations wait for a transaction that locked their key.
        if !self.locks.is_empty() {
            let write = match op.kind {
                // ValueLen (EXISTS, STRLEN, TYPE) reads the key as Get
                // does: it must not see a transaction's keys half applied.
                OpKind::Get | OpKind::ValueLen | OpKind::Ttl => Some(false),
                OpKind::Put | OpKind::Delete | OpKind::PutEx | OpKind::Rmw => Some(true),
                // Expire takes the key's lock itself, for its read and write.
                _ => None,
            };
            if let Some(write) = write {
                let deadline = Instant::now() + self.lock_timeout;
                if !self.locks.wait_unlocked(op.key, write, deadline).await {
                    return out.push(Status::LockTimeout, b"", 0);
                }
            }
        }
        match op.kind {
            OpKind::Get => {
                self.metrics.gets.set(self.metrics.gets.get() + 1);
                self.get(op.key, out).await
            }
            OpKind::Put => self.put_gated(op.key, op.value, None, out).await,
            OpKind::PutEx => {
                let Some((at, value)) = op.value.split_first_chunk::<8>() else {
                    return out.push(Status::Internal, b"malformed PUT_EX op", 0);
                };
                let expires_at = u64::from_le_bytes(*at);
                self.put_gated(op.key, value, Some(expires_at), out).await
            }
            OpKind::Expire => self.expire(op.key, op.value, out).await,
            OpKind::Ttl => {
                self.metrics.gets.set(self.metrics.gets.get() + 1);
                self.ttl(op.key, out).await
            }
            OpKind::Scan => self.scan(op.key, op.value, out).await,
            OpKind::Txn => self.txn_single(op.value, out).await,
            OpKind::TxnPrepare => match id_from_bytes(op.key) {
                Some(id) => self.txn_prepare(id, op.value, out).await,
                None => out.push(Status::Internal, b"bad transaction id", 0),
            },
            OpKind::TxnCheck => match id_from_bytes(op.key) {
                Some(id) => self.txn_check(id, op.value, out).await,
                None => out.push(Status::Internal, b"bad transaction id", 0),
            },
            OpKind::TxnDecide => match id_from_bytes(op.key) {
                Some(id) => self.txn_decide(id, op.value == [1], out).await,
                None => out.push(Status::Internal, b"bad transaction id", 0),
            },
            OpKind::SnapRead => self.snap_read(id_from_bytes(op.key), op.value, out).await,
            OpKind::SnapRelease => match id_from_bytes(op.key) {
                Some(id) => self.snap_release(id, out),
                None => out.push(Status::Internal, b"bad snapshot id", 0),
            },
            OpKind::Backup => self.backup_op(op.key, op.value, out).await,
            OpKind::ValueLen => self.value_len(op.key, out).await,
            OpKind::Rmw => self.rmw(op.key, op.value, out).await,
            OpKind::Delete => {
                self.metrics.deletes.set(self.metrics.deletes.get() + 1);
                let deadline = Instant::now() + self.lock_timeout;
                let (existed, _gate) = loop {
                    // Entered before the lookup: a pause waits for this delete,
                    // so its answer and its write fall on the same side of the
                    // cut. Not held while waiting for a transaction's lock.
                    let gate = self.backup.enter_write().await;
                    let existed = match self.exists(op.key).await {
                        Ok(e) => e,
                        Err(e) => return out.push(read_failure(&e), b"", 0),
                    };
                    // The lookup may have waited for a block read, and a
                    // transaction may have locked the key meanwhile.
                    if !self.locks.is_blocked(op.key, true) {
                        break (existed, gate);
                    }
                    drop(gate);
                    if !self.locks.wait_unlocked(op.key, true, deadline).await {
                        return out.push(Status::LockTimeout, b"", 0);
                    }
                };
                match self.write(op.key, None) {
                    Ok(lsn) => out.push(Status::Ok, &[u8::from(existed.0)], lsn.max(existed.1)),
                    Err(status) => self.push_write_error(status, out),
                }
            }
        }
    }

    /// PUT and PUT_EX: past the backup gate and clear of any transaction's
    /// lock on the key, then logged (with an expiry for PUT_EX).
    async fn put_gated(
        &self,
        key: &[u8],
        value: &[u8],
        expires_at: Option<u64>,
        out: &mut ReplyBatch,
    ) {
        self.metrics.puts.set(self.metrics.puts.get() + 1);
        if value.len() > self.value_bytes_max {
            return out.push(Status::ValueTooLarge, b"", 0);
        }
        let Some(_gate) = self.enter_write_unlocked(key).await else {
            return out.push(Status::LockTimeout, b"", 0);
        };
        let written = match expires_at {
            None => self.write(key, Some(value)),
            Some(at) => self.write_expiring(key, Some(value), at),
        };
        match written {
            Ok(lsn) => out.push(Status::Ok, b"", lsn),
            Err(status) => self.push_write_error(status, out),
        }
    }
}
