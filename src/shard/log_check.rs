//! The invariants that tie one shard's WAL to its tables, in one place: the
//! server's recovery and `corekv verify` both run [`check_log`] over the same
//! replay ([`TxnReplay`]), so a directory that verify calls clean starts, and a
//! refusal at start is reproduced by verify with the same status and words.
//!
//! The invariants (docs/transactions.md, "What survives a flush"):
//! 1. The log continues the tables: the oldest kept segment starts at or
//!    below `cutoff + 1` (segments are retired only when every record in them
//!    is at or below the cutoff).
//! 2. Every TXN_RESOLVE above the cutoff either finds its TXN_PREPARE above
//!    the cutoff, or lies at or below the manifest's `applied_lsn` (its writes
//!    were flushed with it before the prepare's pin was released).
//!
//! Salvage (`--recover-truncate`) brings a shard up despite a broken
//! invariant and returns exactly what was given up, for the operator's log.
//!
//! It must never: repair or write anything (callers decide), or accept a state
//! the engine cannot produce without saying so.

use std::path::Path;

use crate::io::wal_reader::ScanReport;
use crate::io::wal_writer::{segment_file_name, WalError};

use crate::shard::txn::recovery::TxnReplay;

/// What salvage gave up, one line each, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Salvaged {
    /// Records in this LSN range were in neither the tables nor the log.
    MissingRange { first: u64, last: u64 },
    /// A committed transaction part whose writes were lost with its prepare.
    OrphanResolve { txn: String, lsn: u64 },
}

impl std::fmt::Display for Salvaged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Salvaged::MissingRange { first, last } => {
                write!(f, "LSNs {first}..={last} are missing (neither in the tables nor in the log)")
            }
            Salvaged::OrphanResolve { txn, lsn } => write!(
                f,
                "{txn} resolved at LSN {lsn}: its prepare (and so its writes on this shard) is missing; \
                 the transaction's writes on other shards were kept"
            ),
        }
    }
}

/// Check the invariants over a finished replay. `Err`: the first broken one,
/// as recovery refuses to start with it. With `salvage`, every violation is
/// returned as [`Salvaged`] instead.
pub fn check_log(
    wal_dir: &Path,
    report: &ScanReport,
    txns: &TxnReplay,
    salvage: bool,
) -> Result<Vec<Salvaged>, WalError> {
    let cutoff = txns.cutoff;
    let mut salvaged = Vec::new();
    if let Some(&(seq, first)) = report.segment_starts.first() {
        if first > cutoff + 1 {
            if !salvage {
                return Err(WalError::Corrupt {
                    path: wal_dir.join(segment_file_name(seq)),
                    offset: 0,
                    detail: format!(
                        "the log starts at LSN {first} but the tables cover only up to LSN \
                         {cutoff}: the records in between are missing"
                    ),
                });
            }
            salvaged.push(Salvaged::MissingRange {
                first: cutoff + 1,
                last: first - 1,
            });
        }
    }
    for (id, lsn) in &txns.orphans {
        if !salvage {
            return Err(WalError::Corrupt {
                path: wal_dir.to_path_buf(),
                offset: 0,
                detail: format!(
                    "the log resolves {id} at LSN {lsn} but holds no prepare record for it above \
                     the tables' cutoff (LSN {cutoff}), and the tables hold effects only up to \
                     LSN {}: its writes are missing",
                    txns.applied
                ),
            });
        }
        salvaged.push(Salvaged::OrphanResolve {
            txn: id.to_string(),
            lsn: *lsn,
        });
    }
    Ok(salvaged)
}
