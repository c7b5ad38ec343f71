//! Per-shard counters. Plain `Cell`s: only the owning core writes them; other
//! threads see published snapshots, never these cells.

use std::cell::Cell;

#[derive(Default)]
pub struct ShardMetrics {
    pub gets: Cell<u64>,
    pub puts: Cell<u64>,
    pub deletes: Cell<u64>,
    pub forwarded_batches_out: Cell<u64>,
    pub forwarded_batches_in: Cell<u64>,
    pub connections_open: Cell<u64>,
    pub connections_total: Cell<u64>,
    pub connections_rejected: Cell<u64>,
    pub protocol_errors: Cell<u64>,
}

impl ShardMetrics {
    pub fn incr(cell: &Cell<u64>) {
        cell.set(cell.get() + 1);
    }
}
