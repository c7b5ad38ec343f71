//! Per-shard counters and latency histograms. Plain `Cell`s and `RefCell`s: only
//! the owning core writes them; other threads see the snapshots that the shard
//! publishes (see `telemetry`), never these cells.

use std::cell::{Cell, RefCell};

use hdrhistogram::Histogram;

use crate::core::status::Status;

/// A latency histogram in nanoseconds, 1 ns .. 60 s, 2 significant digits
/// (≤1% error), recorded without allocation.
pub struct LatencyHist(pub RefCell<Histogram<u64>>);

impl Default for LatencyHist {
    fn default() -> Self {
        let h = Histogram::new_with_bounds(1, 60_000_000_000, 2)
            .expect("static histogram bounds are valid");
        LatencyHist(RefCell::new(h))
    }
}

impl LatencyHist {
    pub fn record(&self, nanos: u64) {
        self.0.borrow_mut().saturating_record(nanos.max(1));
    }

    pub fn snapshot(&self) -> Histogram<u64> {
        self.0.borrow().clone()
    }
}

/// Request kinds that get their own counters and latency histogram.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum OpClass {
    Get = 0,
    Put = 1,
    Delete = 2,
    Other = 3,
    /// TXN and MPUT.
    Txn = 4,
}

pub const OP_CLASSES: usize = 5;

impl OpClass {
    pub const ALL: [OpClass; OP_CLASSES] = [
        OpClass::Get,
        OpClass::Put,
        OpClass::Delete,
        OpClass::Other,
        OpClass::Txn,
    ];

    pub fn name(self) -> &'static str {
        match self {
            OpClass::Get => "get",
            OpClass::Put => "put",
            OpClass::Delete => "delete",
            OpClass::Other => "other",
            OpClass::Txn => "txn",
        }
    }
}

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
    /// Bytes of connection buffers (partial input frames beyond each
    /// connection's base buffer, plus replies being sent) held now.
    pub conn_buffer_bytes: Cell<u64>,
    /// Times a connection was paused (not read) because the shard's buffer
    /// budget was spent.
    pub connections_paused: Cell<u64>,
    /// Connections closed because their replies stayed unread too long.
    pub connections_closed_by_limit: Cell<u64>,
    /// Requests answered by connections on this shard, by op class.
    pub requests: [Cell<u64>; OP_CLASSES],
    /// Request latency (parse to response written) by op class, on this shard's
    /// connections, whichever shard owned the key.
    pub latency: [LatencyHist; OP_CLASSES],
    /// Non-OK responses by status (index in `Status::ALL`).
    pub errors: RefCell<Vec<u64>>,
}

impl ShardMetrics {
    pub fn incr(cell: &Cell<u64>) {
        cell.set(cell.get() + 1);
    }

    /// One answered request.
    pub fn record_request(&self, op: OpClass, status: Status, nanos: u64) {
        let i = op as usize;
        Self::incr(&self.requests[i]);
        self.latency[i].record(nanos);
        if !matches!(status, Status::Ok | Status::NotFound) {
            let idx = Status::ALL.iter().position(|s| *s == status).unwrap_or(0);
            let mut errors = self.errors.borrow_mut();
            if errors.len() < Status::ALL.len() {
                errors.resize(Status::ALL.len(), 0);
            }
            errors[idx] += 1;
        }
    }
}
