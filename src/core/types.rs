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
