//! What the outside world may know about the shards: snapshots of their health,
//! counters and latency histograms, published by each shard a few times a second
//! and read by the admin endpoint on its own thread.
//!
//! Each shard writes only its own slot; the lock is uncontended and taken off the
//! request path (by a timer task), so serving never waits on an observer.
//! This module must never hold a reference into live shard state.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use hdrhistogram::Histogram;

use crate::core::status::Status;
use crate::core::types::Durability;

use crate::shard::metrics::OpClass;
use crate::shard::state::{ShardState, ShardStatus};

/// A shard's health as reported by /health.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// Recovering its WAL.
    Starting,
    Serving,
    /// The WAL failed: reads only.
    ReadOnly {
        reason: String,
    },
    /// The shard's thread ended.
    Stopped,
}

impl Health {
    pub fn name(&self) -> &'static str {
        match self {
            Health::Starting => "starting",
            Health::Serving => "serving",
            Health::ReadOnly { .. } => "read_only",
            Health::Stopped => "stopped",
        }
    }
}

/// One shard's published state.
#[derive(Clone, Debug)]
pub struct ShardSnapshot {
    pub shard: u16,
    pub cpu: usize,
    pub health: Health,
    pub published: SystemTime,
    pub requests: [u64; crate::shard::metrics::OP_CLASSES],
    pub latency: Vec<Histogram<u64>>,
    /// Non-OK responses by status.
    pub errors: Vec<(Status, u64)>,
    pub connections_open: u64,
    pub connections_total: u64,
    pub connections_rejected: u64,
    pub protocol_errors: u64,
    pub conn_buffer_bytes: u64,
    pub connections_paused: u64,
    pub connections_closed_by_limit: u64,
    pub forwarded_batches_out: u64,
    pub forwarded_batches_in: u64,
    pub wal_batches: u64,
    pub wal_records: u64,
    pub wal_bytes: u64,
    pub wal_sync_latency: Histogram<u64>,
    pub wal_largest_batch_records: u64,
    pub durable_lsn: u64,
    pub pending_writes: u64,
    /// Keys (hashes) locked by transactions and snapshot reads right now.
    pub txn_locks_held: u64,
    /// Transactions prepared here and waiting for their coordinator's decision.
    pub txn_prepared: u64,
    /// The executor: times it parked, seconds it spun before parking,
    /// seconds it ran tasks.
    pub runtime_parks: u64,
    pub runtime_spin_seconds: f64,
    pub runtime_busy_seconds: f64,
    pub storage: StorageSnapshot,
}

/// The storage engine's state and counters (memtables, tables, block cache,
/// flushes, compactions).
#[derive(Clone, Debug, Default)]
pub struct StorageSnapshot {
    pub memtable_entries: u64,
    pub memtable_bytes: u64,
    pub frozen_bytes: u64,
    pub l0_tables: u64,
    pub l1_tables: u64,
    pub l0_bytes: u64,
    pub l1_bytes: u64,
    pub pinned_bytes: u64,
    pub cache_capacity_bytes: u64,
    pub cache: crate::shard::lsm::buffer_pool::PoolStats,
    pub flushes: u64,
    pub flush_bytes: u64,
    pub compactions: u64,
    pub compaction_read_bytes: u64,
    pub compaction_write_bytes: u64,
    pub write_stalls: u64,
    pub flush_waits: u64,
    pub read_errors: u64,
    pub block_read_requests: u64,
    pub wal_segments_recycled: u64,
    /// Expired keys removed: by the sweeper for reads that met them, by the
    /// sweeper's walk, by compaction.
    pub expired_lazy: u64,
    pub expired_sweeper: u64,
    pub expired_compaction: u64,
}

impl StorageSnapshot {
    pub fn capture<D: crate::io::Disk>(state: &ShardState<D>) -> StorageSnapshot {
        let lsm = &state.lsm;
        let v = lsm.version();
        let (l0_bytes, l1_bytes) = lsm.table_bytes();
        let st = &lsm.stats;
        StorageSnapshot {
            memtable_entries: lsm.memtable().borrow().len() as u64,
            memtable_bytes: lsm.memtable_bytes() as u64,
            frozen_bytes: lsm.frozen_bytes() as u64,
            l0_tables: v.l0.len() as u64,
            l1_tables: v.l1.len() as u64,
            l0_bytes,
            l1_bytes,
            pinned_bytes: lsm.pinned_bytes() as u64,
            cache_capacity_bytes: lsm.cfg.cache_bytes as u64,
            cache: lsm.pool_stats(),
            flushes: st.flushes.get(),
            flush_bytes: st.flush_bytes.get(),
            compactions: st.compactions.get(),
            compaction_read_bytes: st.compaction_read_bytes.get(),
            compaction_write_bytes: st.compaction_write_bytes.get(),
            write_stalls: st.write_stalls.get(),
            flush_waits: st.flush_waits.get(),
            read_errors: st.read_errors.get(),
            block_read_requests: st.block_read_requests.get(),
            wal_segments_recycled: state.commit.stats.segments_recycled.get(),
            expired_lazy: state.metrics.expired_lazy.get(),
            expired_sweeper: state.metrics.expired_sweeper.get(),
            expired_compaction: st.expired_compaction.get(),
        }
    }
}

impl ShardSnapshot {
    fn empty(shard: u16, cpu: usize) -> ShardSnapshot {
        let h = || {
            Histogram::new_with_bounds(1, 60_000_000_000, 2)
                .expect("static histogram bounds are valid")
        };
        ShardSnapshot {
            shard,
            cpu,
            health: Health::Starting,
            published: SystemTime::now(),
            requests: [0; crate::shard::metrics::OP_CLASSES],
            latency: OpClass::ALL.iter().map(|_| h()).collect(),
            errors: Vec::new(),
            connections_open: 0,
            connections_total: 0,
            connections_rejected: 0,
            protocol_errors: 0,
            conn_buffer_bytes: 0,
            connections_paused: 0,
            connections_closed_by_limit: 0,
            forwarded_batches_out: 0,
            forwarded_batches_in: 0,
            wal_batches: 0,
            wal_records: 0,
            wal_bytes: 0,
            wal_sync_latency: h(),
            wal_largest_batch_records: 0,
            durable_lsn: 0,
            pending_writes: 0,
            txn_locks_held: 0,
            txn_prepared: 0,
            runtime_parks: 0,
            runtime_spin_seconds: 0.0,
            runtime_busy_seconds: 0.0,
            storage: StorageSnapshot::default(),
        }
    }

    /// Read everything from a live shard (on its own core).
    pub fn capture(state: &ShardState, cpu: usize) -> ShardSnapshot {
        let m = &state.metrics;
        let c = &state.commit.stats;
        let errors = m
            .errors
            .borrow()
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(i, n)| (Status::ALL[i], *n))
            .collect();
        ShardSnapshot {
            shard: state.id.0,
            cpu,
            health: match state.status() {
                ShardStatus::Serving => Health::Serving,
                ShardStatus::ReadOnly { reason } => Health::ReadOnly { reason },
            },
            published: SystemTime::now(),
            requests: std::array::from_fn(|i| m.requests[i].get()),
            latency: m.latency.iter().map(|h| h.snapshot()).collect(),
            errors,
            connections_open: m.connections_open.get(),
            connections_total: m.connections_total.get(),
            connections_rejected: m.connections_rejected.get(),
            protocol_errors: m.protocol_errors.get(),
            conn_buffer_bytes: m.conn_buffer_bytes.get(),
            connections_paused: m.connections_paused.get(),
            connections_closed_by_limit: m.connections_closed_by_limit.get(),
            forwarded_batches_out: m.forwarded_batches_out.get(),
            forwarded_batches_in: m.forwarded_batches_in.get(),
            wal_batches: c.batches.get(),
            wal_records: c.records.get(),
            wal_bytes: c.bytes.get(),
            wal_sync_latency: c.sync_latency.snapshot(),
            wal_largest_batch_records: c.largest_batch_records.get(),
            durable_lsn: state.commit.durable_lsn(),
            pending_writes: state.pending_len() as u64,
            txn_locks_held: state.locks_held() as u64,
            txn_prepared: state.prepared_txns() as u64,
            runtime_parks: m.runtime_parks.get(),
            runtime_spin_seconds: m.runtime_spin_ns.get() as f64 / 1e9,
            runtime_busy_seconds: m.runtime_busy_ns.get() as f64 / 1e9,
            storage: StorageSnapshot::capture(state),
        }
    }
}

/// Engine-wide facts plus one slot per shard.
///
/// Created before the engine starts, so that an observer can report "starting"
/// while the shards recover; the engine fills in the shard slots once it knows
/// the data directory's shard count.
pub struct Telemetry {
    pub started: Instant,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    data_dir: Option<PathBuf>,
    durability: Option<Durability>,
    shards: Vec<ShardSnapshot>,
}

/// A consistent copy of everything published.
#[derive(Clone, Debug)]
pub struct TelemetryView {
    pub uptime: std::time::Duration,
    pub data_dir: Option<PathBuf>,
    pub durability: Option<Durability>,
    pub shards: Vec<ShardSnapshot>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("started", &self.started)
            .finish_non_exhaustive()
    }
}

impl TelemetryView {
    /// The server's one-word state, as /health and RESP INFO report it:
    /// `starting` while a shard recovers, `failed` when a shard stopped,
    /// `degraded` when a shard is read-only (its WAL failed), else `serving`.
    pub fn status(&self) -> &'static str {
        let any = |f: fn(&Health) -> bool| self.shards.iter().any(|s| f(&s.health));
        if self.shards.is_empty() || any(|h| matches!(h, Health::Starting)) {
            "starting"
        } else if any(|h| matches!(h, Health::Stopped)) {
            "failed"
        } else if any(|h| matches!(h, Health::ReadOnly { .. })) {
            "degraded"
        } else {
            "serving"
        }
    }
}

impl Telemetry {
    pub fn new() -> Arc<Telemetry> {
        Arc::new(Telemetry {
            started: Instant::now(),
            inner: Mutex::new(Inner::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called once by the engine when the data directory is open.
    pub fn init(&self, data_dir: PathBuf, durability: Durability, cpus: &[usize]) {
        let mut inner = self.lock();
        inner.data_dir = Some(data_dir);
        inner.durability = Some(durability);
        inner.shards = cpus
            .iter()
            .enumerate()
            .map(|(i, cpu)| ShardSnapshot::empty(i as u16, *cpu))
            .collect();
    }

    pub fn publish(&self, snapshot: ShardSnapshot) {
        let mut inner = self.lock();
        let i = usize::from(snapshot.shard);
        if let Some(slot) = inner.shards.get_mut(i) {
            *slot = snapshot;
        }
    }

    pub fn set_health(&self, shard: u16, health: Health) {
        if let Some(slot) = self.lock().shards.get_mut(usize::from(shard)) {
            slot.health = health;
        }
    }

    pub fn view(&self) -> TelemetryView {
        let inner = self.lock();
        TelemetryView {
            uptime: self.started.elapsed(),
            data_dir: inner.data_dir.clone(),
            durability: inner.durability,
            shards: inner.shards.clone(),
        }
    }
}
