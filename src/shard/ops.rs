//! Batches of operations and their replies: the unit of work a shard executes and
//! the payload of cross-core messages.
//!
//! A batch owns its bytes in one buffer (keys and values back to back) so that
//! moving it to another core is one message, and so that its allocations are
//! reused: a batch travels to the owning shard and comes back, cleared, with the
//! replies.

use std::ops::Range;

use crate::core::status::Status;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum OpKind {
    Get,
    Put,
    Delete,
    /// Key: the start key; value: encoded `scan::ScanParams`. Reply: a page.
    Scan,
    /// A transaction whose keys all live on this shard. Value: the shard form
    /// of its body (`core::txn_format`).
    Txn,
    /// Two-phase commit, phase one. Key: the txn id bytes; value: this shard's part.
    TxnPrepare,
    /// Phase two. Key: the txn id bytes; value: `[1]` commit, `[0]` abort.
    TxnDecide,
    /// After a false condition on another shard: lock and check this shard's
    /// part, keep the locks under the txn id (released by `SnapRelease`).
    TxnCheck,
    /// Read keys (value: `len u32 | key` items) under shared locks. Key: empty
    /// to release at once, or the snapshot id whose locks stay held.
    SnapRead,
    /// Release the locks a `SnapRead` holds. Key: the snapshot id.
    SnapRelease,
    /// One phase of an online backup (`shard::backup`). Key: the backup id
    /// (u64 LE); value: the phase byte, then its argument.
    Backup,
    /// The length of the key's value (u32 LE; NOT_FOUND when absent), not the
    /// value: lets a multi-key reply be sized before any value is copied.
    ValueLen,
    /// PUT with an expiry. Value: `expires_at_ms u64 LE | value`.
    PutEx,
    /// Change a key's expiry. Value: `mode u8 | expires_at_ms u64 LE`
    /// (`core::expiry::ExpireMode`). Reply: `[1]` applied, `[0]` not.
    Expire,
    /// The key's expiry: `u64 LE` unix ms (0: none), or NOT_FOUND.
    Ttl,
    /// A read-modify-write of the key (`shard::rmw`). Value: the program
    /// (`core::rmw::Program::encode`). Reply: the program's reply
    /// (`core::rmw::Reply::encode`), or INVALID_ARGUMENT / VALUE_TOO_LARGE
    /// with `[RmwError code u8] | text`.
    Rmw,
}

#[derive(Clone, Debug)]
struct Op {
    kind: OpKind,
    key: Range<u32>,
    value: Range<u32>,
}

/// Operations bound for one shard, executed in order.
#[derive(Default, Debug)]
pub struct OpBatch {
    bytes: Vec<u8>,
    ops: Vec<Op>,
    /// Reply bytes after which the executing shard stops (0: no limit). The
    /// ops it did not reach get no reply; the sender sends them again once
    /// it has written out what came back (connection back-pressure).
    reply_budget: usize,
}

/// One operation, borrowing from its batch.
#[derive(Copy, Clone, Debug)]
pub struct OpRef<'a> {
    pub kind: OpKind,
    pub key: &'a [u8],
    pub value: &'a [u8],
}

impl OpBatch {
    pub fn push(&mut self, kind: OpKind, key: &[u8], value: &[u8]) {
        let k0 = self.bytes.len();
        self.bytes.extend_from_slice(key);
        let v0 = self.bytes.len();
        self.bytes.extend_from_slice(value);
        let v1 = self.bytes.len();
        assert!(v1 <= u32::MAX as usize, "op batch past 4 GiB");
        self.ops.push(Op {
            kind,
            key: k0 as u32..v0 as u32,
            value: v0 as u32..v1 as u32,
        });
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ops.clear();
        self.reply_budget = 0;
    }

    /// See [`OpBatch::reply_budget`]; reset by `clear`.
    pub fn set_reply_budget(&mut self, bytes: usize) {
        self.reply_budget = bytes;
    }

    pub fn reply_budget(&self) -> usize {
        self.reply_budget
    }

    pub fn get(&self, i: usize) -> OpRef<'_> {
        let op = &self.ops[i];
        OpRef {
            kind: op.kind,
            key: &self.bytes[op.key.start as usize..op.key.end as usize],
            value: &self.bytes[op.value.start as usize..op.value.end as usize],
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = OpRef<'_>> {
        (0..self.ops.len()).map(move |i| self.get(i))
    }

    pub fn payload_bytes(&self) -> usize {
        self.bytes.len()
    }
}

#[derive(Clone, Debug)]
struct Reply {
    status: Status,
    value: Range<u32>,
    /// The reply may only be released once this LSN is durable (0: at once).
    wait_lsn: u64,
}

/// Replies to an [`OpBatch`], one per op, in the same order.
#[derive(Default, Debug)]
pub struct ReplyBatch {
    bytes: Vec<u8>,
    replies: Vec<Reply>,
}

impl ReplyBatch {
    pub fn push(&mut self, status: Status, value: &[u8], wait_lsn: u64) {
        let v0 = self.bytes.len();
        self.bytes.extend_from_slice(value);
        assert!(
            self.bytes.len() <= u32::MAX as usize,
            "reply batch past 4 GiB"
        );
        self.replies.push(Reply {
            status,
            value: v0 as u32..self.bytes.len() as u32,
            wait_lsn,
        });
    }

    /// Append a reply whose value is written by `fill` straight into the buffer.
    pub fn push_with(&mut self, status: Status, wait_lsn: u64, fill: impl FnOnce(&mut Vec<u8>)) {
        let v0 = self.bytes.len();
        fill(&mut self.bytes);
        assert!(
            self.bytes.len() <= u32::MAX as usize,
            "reply batch past 4 GiB"
        );
        self.replies.push(Reply {
            status,
            value: v0 as u32..self.bytes.len() as u32,
            wait_lsn,
        });
    }

    /// Start a reply whose value is written in place by code that may await
    /// (a scan page): no copy of a large value. The reply exists once
    /// [`OpenReply::close`] is called; dropped unclosed, its bytes are removed.
    pub fn open(&mut self) -> OpenReply<'_> {
        let start = self.bytes.len();
        OpenReply { batch: self, start }
    }

    pub fn len(&self) -> usize {
        self.replies.len()
    }

    /// Set the wait LSN of the reply pushed last (known only after filling it).
    pub fn set_last_wait_lsn(&mut self, lsn: u64) {
        if let Some(r) = self.replies.last_mut() {
            r.wait_lsn = lsn;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.replies.is_empty()
    }

    /// Bytes of every reply value held.
    pub fn value_bytes(&self) -> usize {
        self.bytes.len()
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
        self.replies.clear();
    }

    /// Clear, and give back the memory a batch of large values left behind:
    /// a reused batch keeps its capacity, and one burst of large replies must
    /// not pin that much memory for the life of a connection.
    pub fn clear_and_trim(&mut self, keep: usize) {
        self.clear();
        if self.bytes.capacity() > keep {
            self.bytes = Vec::with_capacity(keep);
        }
    }

    pub fn get(&self, i: usize) -> (Status, &[u8]) {
        let r = &self.replies[i];
        (
            r.status,
            &self.bytes[r.value.start as usize..r.value.end as usize],
        )
    }

    /// Remove the reply pushed last, and its bytes.
    pub fn pop(&mut self) {
        if let Some(r) = self.replies.pop() {
            self.bytes.truncate(r.value.start as usize);
        }
    }

    /// Highest LSN any reply waits for.
    pub fn wait_lsn(&self) -> u64 {
        self.replies.iter().map(|r| r.wait_lsn).max().unwrap_or(0)
    }

    /// After the WAL failed at `durable_lsn`: every reply that depended on a later
    /// LSN becomes `status` (its write was never made durable; its read saw such a
    /// write), with no value.
    pub fn fail_after(&mut self, durable_lsn: u64, status: Status) {
        for r in &mut self.replies {
            if r.wait_lsn > durable_lsn {
                r.status = status;
                r.value = r.value.start..r.value.start;
            }
        }
    }
}

/// A reply being written in place; derefs to the batch's buffer, whose bytes
/// from where it was opened are the value.
pub struct OpenReply<'a> {
    batch: &'a mut ReplyBatch,
    start: usize,
}

impl OpenReply<'_> {
    pub fn close(mut self, status: Status, wait_lsn: u64) {
        let end = self.batch.bytes.len();
        assert!(end <= u32::MAX as usize, "reply batch past 4 GiB");
        self.batch.replies.push(Reply {
            status,
            value: self.start as u32..end as u32,
            wait_lsn,
        });
        // Closed: the bytes stay.
        self.start = end;
    }
}

impl std::ops::Deref for OpenReply<'_> {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.batch.bytes
    }
}

impl std::ops::DerefMut for OpenReply<'_> {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.batch.bytes
    }
}

impl Drop for OpenReply<'_> {
    fn drop(&mut self) {
        self.batch.bytes.truncate(self.start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_round_trip() {
        let mut b = OpBatch::default();
        b.push(OpKind::Put, b"k1", b"v1");
        b.push(OpKind::Get, b"k2", b"");
        assert_eq!(b.len(), 2);
        let ops: Vec<_> = b
            .iter()
            .map(|o| (o.kind, o.key.to_vec(), o.value.to_vec()))
            .collect();
        assert_eq!(ops[0], (OpKind::Put, b"k1".to_vec(), b"v1".to_vec()));
        assert_eq!(ops[1], (OpKind::Get, b"k2".to_vec(), vec![]));
        b.clear();
        assert!(b.is_empty());
    }

    #[test]
    fn fail_after_only_touches_later_replies() {
        let mut r = ReplyBatch::default();
        r.push(Status::Ok, b"durable", 5);
        r.push(Status::Ok, b"pending", 9);
        r.push(Status::NotFound, b"", 0);
        assert_eq!(r.wait_lsn(), 9);
        r.fail_after(5, Status::WalFailed);
        assert_eq!(r.get(0), (Status::Ok, &b"durable"[..]));
        assert_eq!(r.get(1), (Status::WalFailed, &b""[..]));
        assert_eq!(r.get(2), (Status::NotFound, &b""[..]));
    }
}
