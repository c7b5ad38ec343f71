//! Transactions inside a shard: a participant's side (prepare, resolve, single-shard commit,
//! snapshot reads), the coordinator's side (which runs a cross-shard
//! transaction from the connection's shard through the router), and recovery
//! (replaying and settling in-doubt transactions at startup).
//!
//! The bookkeeping a shard keeps (`shard::txn_table`) and the key locks
//! (`shard::locks`) are plain state below `ShardState`, outside this folder.
//! Dependencies: participant and recovery use the state; the coordinator uses
//! the participant and the router (`shard::route`). Nothing below `execute`
//! may call up into the coordinator.
//!
//! It must never: apply a prepared transaction's writes without a commit
//! decision, or release a participant's locks while its outcome is in doubt.

pub mod coordinator;
pub mod participant;
pub mod recovery;
