//! Small newtypes that keep shard numbers and log positions from being mixed up
//! with ordinary integers.

use std::fmt;

/// Index of a shard (one per core), `0..shard_count`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardId(pub u16);

impl ShardId {
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shard-{}", self.0)
    }
}

/// When a write is acknowledged relative to the fdatasync that covers it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Acknowledge only after the fdatasync covering the write completed.
    Sync,
    /// Acknowledge at once; the WAL is synced at least every `sync_interval`.
    Async,
}

impl Durability {
    pub fn name(self) -> &'static str {
        match self {
            Durability::Sync => "sync",
            Durability::Async => "async",
        }
    }
}

impl std::str::FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sync" => Ok(Durability::Sync),
            "async" => Ok(Durability::Async),
            other => Err(format!(
                "durability must be 'sync' or 'async', not '{other}'"
            )),
        }
    }
}

/// What an idle shard does before it sleeps in the kernel: spin (poll for
/// work) for a while, or sleep at once. Spinning saves the wake-up of the next
/// request (an interrupt, a context switch, on a VM an exit) and costs the CPU
/// it spins on; docs/tuning.md and docs/performance.md have the measurements
/// behind each policy's window.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ParkPolicy {
    /// Spin long: for dedicated machines whose shard CPUs do nothing else.
    LatencyFirst,
    /// Spin briefly: most of the gain for a small share of a CPU.
    Balanced,
    /// Sleep at once: for CPUs shared with other work.
    Efficient,
}

impl ParkPolicy {
    pub const NAMES: [&'static str; 3] = ["latency-first", "balanced", "efficient"];

    pub fn name(self) -> &'static str {
        match self {
            ParkPolicy::LatencyFirst => "latency-first",
            ParkPolicy::Balanced => "balanced",
            ParkPolicy::Efficient => "efficient",
        }
    }

    /// How long an idle shard spins before it sleeps.
    pub fn spin(self) -> std::time::Duration {
        std::time::Duration::from_micros(match self {
            ParkPolicy::LatencyFirst => crate::core::limits::PARK_SPIN_LATENCY_FIRST_US,
            ParkPolicy::Balanced => crate::core::limits::PARK_SPIN_BALANCED_US,
            ParkPolicy::Efficient => 0,
        })
    }
}

impl std::str::FromStr for ParkPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "latency-first" => Ok(ParkPolicy::LatencyFirst),
            "balanced" => Ok(ParkPolicy::Balanced),
            "efficient" => Ok(ParkPolicy::Efficient),
            other => Err(format!(
                "park_policy must be 'latency-first', 'balanced' or 'efficient', not '{other}'"
            )),
        }
    }
}
