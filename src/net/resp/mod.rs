//! The Redis protocol (RESP2 and RESP3) beside corekv's native protocol, so
//! Redis clients and tools (redis-cli, redis-benchmark, client libraries)
//! work against corekv.
//!
//! It owns RESP framing (codec.rs), the command table and per-connection
//! session (commands.rs), glob patterns (glob.rs), the string and key
//! commands (strings.rs), the expiry commands (expiry.rs) and their argument
//! parsing shared with MULTI (expiry_args.rs), MULTI/EXEC/WATCH and the commands evaluated over a
//! transaction's snapshot (multi.rs, bits.rs, with their state in
//! txn_state.rs), the keyspace walks, FLUSHDB and INFO (keyspace.rs), CLIENT,
//! CONFIG and DEBUG (server.rs) with the process-wide client registry
//! (clients.rs), runs of pipelined plain GETs or SETs executed as one batch
//! (pipeline.rs), and the listener and connection
//! loop (connection.rs). It is served by the same shards, with the same
//! connection limit, timeouts, buffer budget and metrics as the native
//! listener, and the same users and roles (docs/security.md). It must never
//! reach into a shard's state: every command becomes
//! router operations, transactions or scans. docs/redis-compatibility.md
//! lists what is supported and how it differs from Redis.

pub mod bits;
pub mod clients;
pub mod codec;
pub mod commands;
pub mod connection;
pub mod expiry;
pub mod expiry_args;
pub mod glob;
pub mod keyspace;
pub mod multi;
pub mod pipeline;
pub mod server;
pub mod strings;
pub mod txn_state;
