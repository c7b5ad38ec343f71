//! Moving work between shards: the router (batches of operations sent to
//! the shards that own their keys over explicit cross-core channels, replies
//! gathered back in order) and the per-connection context built on it
//! (routing a request's keys, merged scans, flush and compaction requests).
//!
//! It sits above the state machine it delivers to (`execute`) and below what
//! coordinates across shards (`txn::coordinator`, `backup::coordinator`) and
//! the runtime that creates the channels. It must never share mutable state
//! between cores except through those channels, or block an executor while a
//! peer is slow.

pub mod context;
pub mod router;
