//! One core's state machine and the runtime that runs one per core.
//!
//! It owns: the per-shard store and its pending (not yet durable) writes, group
//! commit, recovery, routing of operations between shards, and the executors.
//!
//! It must never: touch the network or the wire format (that is `net`), share
//! mutable state between cores except through explicit messages, or acknowledge a
//! write in sync mode before the fdatasync covering it completed.

pub mod backup;
pub mod buffer_pool;
pub mod clock;
pub mod commit;
pub mod compaction;
pub mod context;
pub mod locks;
pub mod log_check;
pub mod lsm;
pub mod maintenance;
pub mod memtable;
pub mod merge;
pub mod metrics;
pub mod ops;
pub mod pending;
pub mod recovery;
pub mod router;
pub mod runtime;
pub mod scan;
pub mod state;
pub mod sync;
pub mod telemetry;
pub mod txn_coordinator;
pub mod txn_participant;
pub mod txn_recovery;

pub use context::ShardContext;
pub use ops::OpKind;
pub use router::{RoutedBatch, Router};
pub use runtime::{Engine, EngineInfo, ShardExit, StartError};
pub use scan::ScanRequest;
