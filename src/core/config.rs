//! The engine's configuration as plain data, with the checks that need no I/O.
//!
//! Where values come from (flags, environment, file) is the command layer's
//! business (its table of settings, src/cmd/settings.rs, maps each setting's
//! name onto a field here; problems name the setting, not the field); this
//! module only says what a valid configuration is.

use std::path::PathBuf;
use std::time::Duration;

use super::limits::{
    KEY_BYTES_MAX, SECTOR_BYTES, SHARDS_MAX, VALUE_BYTES_CEILING, VALUE_BYTES_MAX_DEFAULT,
    WAL_SEGMENT_BYTES_DEFAULT, WAL_SEGMENT_BYTES_MIN,
};
use super::types::Durability;
use super::wal_format::{put_record_bytes, BATCH_HEADER_BYTES, SEGMENT_HEADER_BYTES};

#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub data_dir: PathBuf,
    /// `None`: the count recorded in the data directory, or the number of usable
    /// cores for a new directory.
    pub shards: Option<u16>,
    pub durability: Durability,
    /// In async mode, the longest a written record waits before its fdatasync starts.
    pub sync_interval: Duration,
    pub value_bytes_max: usize,
    pub wal_segment_bytes: u64,
    /// On WAL corruption before the tail, truncate there instead of refusing to start.
    pub recover_truncate: bool,
    /// CPUs to pin shards to, in shard order (shard i on `cpus[i % len]`). `None`:
    /// the CPUs this process may run on.
    pub cpus: Option<Vec<usize>>,
    /// Memory glommio registers with io_uring per shard for DMA buffers.
    pub io_memory_bytes: usize,
    /// How long an idle shard spins before sleeping in the kernel. Spinning
    /// trades CPU for latency: a sleeping shard must be woken by an
    /// inter-processor interrupt, which is slow (tens of µs) on many VMs.
    pub spin_before_park: std::time::Duration,
    /// Block cache for the whole server, split evenly across shards.
    pub cache_bytes: usize,
    /// A shard's memtable is flushed to a table past this many bytes.
    pub memtable_bytes: usize,
    /// Compaction output tables are about this large.
    pub table_target_bytes: u64,
    /// Level-0 tables that trigger a compaction.
    pub l0_trigger: usize,
    /// How long a request waits for a key a transaction has locked.
    pub lock_timeout: Duration,
    /// How often each shard's expiry sweeper runs (`shard::expiry_sweeper`).
    pub expiry_sweep_interval: Duration,
}

impl EngineConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        EngineConfig {
            data_dir: data_dir.into(),
            shards: None,
            durability: Durability::Sync,
            sync_interval: Duration::from_millis(10),
            value_bytes_max: VALUE_BYTES_MAX_DEFAULT,
            wal_segment_bytes: WAL_SEGMENT_BYTES_DEFAULT,
            recover_truncate: false,
            cpus: None,
            io_memory_bytes: 2 * 1024 * 1024,
            spin_before_park: Duration::ZERO,
            cache_bytes: 256 * 1024 * 1024,
            memtable_bytes: 64 * 1024 * 1024,
            table_target_bytes: 64 * 1024 * 1024,
            l0_trigger: 4,
            lock_timeout: Duration::from_secs(1),
            expiry_sweep_interval: Duration::from_millis(100),
        }
    }

    /// Check every relation between values; each problem is one line naming the
    /// setting, the value and the rule.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if let Some(n) = self.shards {
            if n == 0 || usize::from(n) > SHARDS_MAX {
                problems.push(format!("shards = {n}: must be between 1 and {SHARDS_MAX}"));
            }
        }
        if self.value_bytes_max == 0 || self.value_bytes_max > VALUE_BYTES_CEILING {
            problems.push(format!(
                "value_bytes_max = {}: must be between 1 and {VALUE_BYTES_CEILING}",
                self.value_bytes_max
            ));
        }
        if self.wal_segment_bytes < WAL_SEGMENT_BYTES_MIN
            || self.wal_segment_bytes % SECTOR_BYTES as u64 != 0
        {
            problems.push(format!(
                "wal_segment_bytes = {}: must be a multiple of {SECTOR_BYTES} and at least {WAL_SEGMENT_BYTES_MIN}",
                self.wal_segment_bytes
            ));
        }
        let largest_batch = self.largest_batch_bytes();
        if largest_batch > self.wal_segment_bytes {
            problems.push(format!(
                "wal_segment_bytes = {}: a segment must hold the largest record ({largest_batch} bytes with \
                 value_bytes_max = {}); raise it or lower value_bytes_max",
                self.wal_segment_bytes, self.value_bytes_max
            ));
        }
        if self.sync_interval.is_zero() || self.sync_interval > Duration::from_secs(10) {
            problems.push(format!(
                "sync_interval_ms = {}: must be between 1 and 10000",
                self.sync_interval.as_millis()
            ));
        }
        if self.spin_before_park > Duration::from_secs(1) {
            problems.push(format!(
                "spin_before_park_us = {}: at most 1000000",
                self.spin_before_park.as_micros()
            ));
        }
        if self.cache_bytes < 1024 * 1024 {
            problems.push(format!(
                "cache_bytes = {}: at least 1 MiB (1048576)",
                self.cache_bytes
            ));
        }
        if self.memtable_bytes < 64 * 1024 {
            problems.push(format!(
                "memtable_bytes = {}: at least 64 KiB (65536)",
                self.memtable_bytes
            ));
        }
        if self.table_target_bytes < 64 * 1024 {
            problems.push(format!(
                "table_target_bytes = {}: at least 64 KiB (65536)",
                self.table_target_bytes
            ));
        }
        if !(2..=64).contains(&self.l0_trigger) {
            problems.push(format!(
                "l0_trigger = {}: between 2 and 64",
                self.l0_trigger
            ));
        }
        if self.lock_timeout.is_zero() || self.lock_timeout > Duration::from_secs(600) {
            problems.push(format!(
                "lock_timeout_ms = {}: between 1 and 600000",
                self.lock_timeout.as_millis()
            ));
        }
        if let Some(cpus) = &self.cpus {
            if cpus.is_empty() {
                problems.push("cpus: the list is empty".to_string());
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// The largest batch a single record can need, segment header included.
    pub fn largest_batch_bytes(&self) -> u64 {
        let record = put_record_bytes(KEY_BYTES_MAX, self.value_bytes_max);
        crate::core::limits::align_up_u64(
            (SEGMENT_HEADER_BYTES.max(SECTOR_BYTES) + BATCH_HEADER_BYTES + record) as u64,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        EngineConfig::new("/tmp/x").validate().unwrap();
    }

    #[test]
    fn each_problem_is_named() {
        let mut c = EngineConfig::new("/tmp/x");
        c.shards = Some(0);
        c.wal_segment_bytes = 1000;
        c.sync_interval = Duration::ZERO;
        let problems = c.validate().unwrap_err();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems.iter().any(|p| p.starts_with("shards = 0")));
        assert!(problems.iter().any(|p| p.starts_with("sync_interval")));
    }

    #[test]
    fn segment_must_hold_largest_record() {
        let mut c = EngineConfig::new("/tmp/x");
        c.wal_segment_bytes = WAL_SEGMENT_BYTES_MIN;
        assert!(c.validate().is_err());
        c.value_bytes_max = 64 * 1024;
        c.validate().unwrap();
    }
}
