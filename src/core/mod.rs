//! Pure building blocks shared by every layer: types, limits, wire status codes,
//! checksums, the key→shard hash, configuration, and the WAL byte format.
//!
//! Nothing here performs I/O, spawns tasks or touches a clock. Everything here is
//! deterministic, so the same bytes decode the same way on every machine and in the
//! simulator.

pub mod auth;
pub mod backup_format;
pub mod block_format;
pub mod cert_name;
pub mod checksum;
pub mod config;
pub mod expiry;
pub mod filter;
pub mod hash;
pub mod limits;
pub mod manifest_format;
pub mod rmw;
pub mod scan_format;
pub mod status;
pub mod table_format;
pub mod txn_format;
pub mod types;
pub mod wal_format;
