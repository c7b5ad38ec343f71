//! corekv: a thread-per-core, shared-nothing storage engine.
//!
//! Layers, each depending only on the ones after it:
//! - [`net`]: wire protocol codec, server, client.
//! - [`shard`]: one core's state machine, routing between cores, the runtime.
//! - [`io`]: every disk byte (O_DIRECT files, WAL writer and reader, data dir).
//! - [`core`]: pure types, formats, checksums, limits.
//!
//! Embedding: [`shard::Engine::start`] opens a data directory and runs a service
//! future on every shard's core with a [`shard::ShardContext`], which routes
//! operations to whichever shard owns each key.

#![forbid(unsafe_op_in_unsafe_fn)]

pub mod bench;
pub mod check;
pub mod core;
#[doc(hidden)]
pub mod failpoint;
#[doc(hidden)]
pub mod fuzzing;
pub mod io;
pub mod net;
pub mod shard;
#[doc(hidden)]
pub mod sim;
