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
    pub(in crate::shard) gets: Cell<u64>,
    pub(in crate::shard) puts: Cell<u64>,
    pub(in crate::shard) deletes: Cell<u64>,
    pub(in crate::shard) forwarded_batches_out: Cell<u64>,
    pub(in crate::shard) forwarded_batches_in: Cell<u64>,
    pub(in crate::shard) connections_open: Cell<u64>,
    pub(in crate::shard) connections_total: Cell<u64>,
    pub(in crate::shard) connections_rejected: Cell<u64>,
    pub(in crate::shard) protocol_errors: Cell<u64>,
    /// Bytes of connection buffers (partial input frames beyond each
    /// connection's base buffer, plus replies being sent) held now.
    pub(in crate::shard) conn_buffer_bytes: Cell<u64>,
    /// Times a connection was paused (not read) because the shard's buffer
    /// budget was spent.
    pub(in crate::shard) connections_paused: Cell<u64>,
    /// Connections closed because their replies stayed unread too long.
    pub(in crate::shard) connections_closed_by_limit: Cell<u64>,
    /// Requests answered by connections on this shard, by op class.
    pub(in crate::shard) requests: [Cell<u64>; OP_CLASSES],
    /// Request latency (parse to response written) by op class, on this shard's
    /// connections, whichever shard owned the key.
    pub(in crate::shard) latency: [LatencyHist; OP_CLASSES],
    /// Non-OK responses by status (index in `Status::ALL`).
    pub(in crate::shard) errors: RefCell<Vec<u64>>,
    /// The executor under this shard: times it slept in the kernel, time it
    /// spun before sleeping (`spin_before_park_us`), time it ran tasks.
    pub(in crate::shard) runtime_parks: Cell<u64>,
    pub(in crate::shard) runtime_spin_ns: Cell<u64>,
    pub(in crate::shard) runtime_busy_ns: Cell<u64>,
    /// Expired keys deleted by the sweeper: queued by reads that met them
    /// (lazy), and found by its own walk (sweeper).
    pub(in crate::shard) expired_lazy: Cell<u64>,
    pub(in crate::shard) expired_sweeper: Cell<u64>,
    /// Read-modify-write ops (INCR, APPEND, ...) this shard executed.
    pub(in crate::shard) rmws: Cell<u64>,
}

/// The counters are written through these methods only: the network layer
/// says what happened (a connection opened, a frame was bad), the shard owns
/// how it is counted. Reads go through `runtime::telemetry`'s snapshots.
impl ShardMetrics {
    pub(in crate::shard) fn incr(cell: &Cell<u64>) {
        cell.set(cell.get() + 1);
    }

    /// A connection was accepted; `open` connections are open now.
    pub fn connection_opened(&self, open: usize) {
        Self::incr(&self.connections_total);
        self.connections_open.set(open as u64);
    }

    /// A connection closed; `open` are left.
    pub fn connection_closed(&self, open: usize) {
        self.connections_open.set(open as u64);
    }

    /// A connection was refused (TOO_MANY_CONNECTIONS).
    pub fn connection_rejected(&self) {
        Self::incr(&self.connections_rejected);
    }

    /// A client sent a frame that could not be decoded.
    pub fn protocol_error(&self) {
        Self::incr(&self.protocol_errors);
    }

    /// A connection waits (is not read) until the buffer budget has room.
    pub fn connection_paused(&self) {
        Self::incr(&self.connections_paused);
    }

    /// A connection was closed because its replies stayed unread too long.
    pub fn connection_closed_by_limit(&self) {
        Self::incr(&self.connections_closed_by_limit);
    }

    /// Bytes of connection buffers held now.
    pub fn set_conn_buffer_bytes(&self, bytes: usize) {
        self.conn_buffer_bytes.set(bytes as u64);
    }

    /// What the executor reported since the last call: parks, time spun,
    /// time running tasks.
    pub fn add_runtime(&self, parks: u64, spin: std::time::Duration, busy: std::time::Duration) {
        let add = |cell: &Cell<u64>, n: u64| cell.set(cell.get().saturating_add(n));
        add(&self.runtime_parks, parks);
        add(&self.runtime_spin_ns, spin.as_nanos() as u64);
        add(&self.runtime_busy_ns, busy.as_nanos() as u64);
    }

    /// The sweeper deleted `lazy` expired keys that reads had queued and
    /// `swept` that its walk found.
    pub fn note_expired(&self, lazy: u64, swept: u64) {
        self.expired_lazy.set(self.expired_lazy.get() + lazy);
        self.expired_sweeper.set(self.expired_sweeper.get() + swept);
    }

    /// A read-modify-write op ran on this shard.
    pub fn rmw(&self) {
        Self::incr(&self.rmws);
    }

    /// Read-modify-write ops run so far.
    pub fn rmws(&self) -> u64 {
        self.rmws.get()
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
