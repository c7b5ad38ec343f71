//! Per-shard transaction bookkeeping, owned by `ShardState`: the prepared
//! transactions with their locks, the resolves waiting to be durable, the
//! snapshot reads' locks, the WAL pins and the coordinator's id sequence.
//!
//! Plain data: the protocol that fills and empties it is `txn::participant`
//! (and `txn::recovery` at startup). It must never log, apply or lock
//! anything itself.

use std::collections::{BTreeMap, HashMap};

use crate::core::txn_format::{TxnId, ValidPrepare};
use crate::shard::locks::LockSet;

/// A participant's prepared transaction: its locks and writes, until resolved.
pub(super) struct Prepared {
    pub(super) locks: LockSet,
    /// The TXN_PREPARE record body (writes are read from it when committing).
    pub(super) record: ValidPrepare,
    pub(super) lsn: u64,
}

/// Per-shard transaction bookkeeping.
#[derive(Default)]
pub struct TxnTable {
    pub(super) prepared: HashMap<TxnId, Prepared>,
    /// Sync durability: resolves logged and staged, by resolve LSN, until durable.
    pub(super) committing: HashMap<u64, Prepared>,
    pub(super) snapshots: HashMap<TxnId, LockSet>,
    /// LSN → number of holders: records whose writes are not in the memtable
    /// yet, or decisions some participant has not durably resolved.
    pub(super) pins: BTreeMap<u64, u32>,
    /// Next sequence number this shard hands out as a coordinator.
    pub(super) next_seq: u64,
}

impl TxnTable {
    pub fn new(first_seq: u64) -> TxnTable {
        TxnTable {
            next_seq: first_seq,
            ..TxnTable::default()
        }
    }

    pub fn prepared_len(&self) -> usize {
        self.prepared.len()
    }
}
