//! Online, consistent backup across shards.
//!
//! Why the cut is consistent (docs/architecture.md, "Backup"): the coordinator
//! pauses the shards one after another and resumes them only once all are
//! paused. A paused shard appends nothing, so a write that lands after some
//! shard's cut is acknowledged only after every shard was cut, and whatever a
//! client issues after that acknowledgement lands after every cut too. Each
//! client's history in the backup is therefore a prefix, across shards.
//!
//! `phases`: what one shard does for a backup (pause, resume, finish,
//! abort), executed as BACKUP operations; `coordinator`: the request that
//! drives them on every shard (it uses the router, the phases never do). The
//! gate that holds writes back is `shard::write_gate`.

pub mod coordinator;
pub mod phases;

pub use coordinator::run_backup;
pub use phases::{BackupFailure, PAUSE_DEADLINE};
