//! One core's state machine and the runtime that runs one per core.
//!
//! It owns: the per-shard store and its pending (not yet durable) writes, group
//! commit, recovery, routing of operations between shards, transactions,
//! backups, and the executors.
//!
//! Its parts import one way, top down (docs/architecture.md, "Inside a
//! shard"): `runtime` → `backup`, `txn` (coordinators) → `route` → `recovery`
//! → `execute` → `rmw`, `txn` (participant), `backup` (phases), `maintenance` →
//! `state` → `lsm` → `group_commit`, `write_gate`, `locks`, `txn_table`,
//! `pending`, `ops`, `metrics`, `wake`, `clock`.
//!
//! It must never: touch the network or the wire format (that is `net`), share
//! mutable state between cores except through explicit messages, or acknowledge a
//! write in sync mode before the fdatasync covering it completed.

pub mod backup;
pub mod clock;
pub mod execute;
pub mod expiry_sweeper;
pub mod group_commit;
pub mod locks;
pub mod log_check;
pub mod lsm;
pub mod maintenance;
pub mod metrics;
pub mod ops;
pub mod pending;
pub mod recovery;
pub mod rmw;
pub mod route;
pub mod runtime;
pub mod state;
pub mod txn;
pub mod txn_table;
pub mod wake;
pub mod write_gate;

pub use crate::core::scan_format::ScanRequest;
pub use ops::OpKind;
pub use route::context::ShardContext;
pub use route::router::{RoutedBatch, Router};
pub use runtime::{Engine, EngineInfo, ShardExit, StartError};
