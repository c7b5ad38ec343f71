//! What a caller records: operations with their keys, values, outcomes and
//! real-time bounds ([`History`]), and the verdicts ([`CheckError`],
//! [`Violation`]).
//!
//! Plain data with no logic beyond display; it must never import the
//! checker's other parts, which all build on it.

use std::collections::BTreeMap;
use std::fmt;

pub type Key = Vec<u8>;
pub type Value = Vec<u8>;

/// Default bound on distinct configurations one key group's search may explore
/// before giving up. A configuration costs about `ops / 8 + 50` bytes of memo
/// and a microsecond or two, so a hopeless search stops after a few seconds and
/// well under 300 MB even for groups of thousands of operations.
pub const DEFAULT_MAX_STATES: u64 = 1_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cond {
    Equals(Key, Value),
    Absent(Key),
    Present(Key),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    Put(Key, Value),
    Delete(Key),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Completed and took effect (for reads: the observation is valid).
    Ok,
    /// Definitely had no effect (e.g. `TXN_ABORTED`, an error reply). Excluded.
    Failed,
    /// A transaction whose condition number `i` was false, all earlier ones true;
    /// it wrote nothing. This is an observation and is placed in the order like a
    /// read.
    ConditionFailed(usize),
    /// No reply (timeout, connection lost, server killed): it may or may not have
    /// taken effect, at any point after its invocation (its completion time is
    /// unbounded).
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpKind {
    Get {
        key: Key,
        observed: Option<Value>,
    },
    Put {
        key: Key,
        value: Value,
    },
    Delete {
        key: Key,
    },
    /// All conditions are checked and all writes applied atomically.
    Txn {
        conds: Vec<Cond>,
        writes: Vec<Write>,
    },
    /// One consistent snapshot of several keys.
    Mget {
        keys: Vec<Key>,
        observed: Vec<Option<Value>>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    pub client: u32,
    /// Nanoseconds on one monotonic clock shared by all clients of the history.
    pub invoke: u64,
    /// `None` when the outcome is Unknown (and ignored if given for Unknown).
    pub complete: Option<u64>,
    pub kind: OpKind,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    pub initial: BTreeMap<Key, Value>,
    pub ops: Vec<Op>,
}

/// Proof that no valid order exists, reduced to what the search saw at the
/// deepest point it reached in the key group that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Index in [`History::ops`] of the operation the search could not get past:
    /// at the deepest point reached, it was the earliest-completing one not yet
    /// placed (so it had to precede everything invoked after it completed), and
    /// neither it nor any write that could precede it led anywhere.
    pub op: usize,
    /// Operations placed before the search got stuck, in order (indices into
    /// [`History::ops`]).
    pub prefix: Vec<usize>,
    /// State of the group's keys after `prefix` (`None`: absent).
    pub state: Vec<(Key, Option<Value>)>,
    /// Other operations that could have gone next but whose observation or
    /// conditions did not match `state` either.
    pub also_stuck: Vec<usize>,
    /// All of the above, rendered for a human with each operation described.
    pub message: String,
}

/// Why [`check`] did not accept a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckError {
    /// The history is not strictly serializable.
    Violation(Violation),
    /// The search explored `explored` distinct configurations (the budget) in a
    /// group of `group_ops` operations without deciding. Says nothing about the
    /// history; retry with a larger budget or record a smaller history.
    TooLarge { explored: u64, group_ops: usize },
    /// Operation `op` cannot be interpreted (e.g. `Ok` without a completion time,
    /// `ConditionFailed` on a non-transaction, MGET keys and values of different
    /// lengths).
    Malformed { op: usize, reason: String },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Violation {}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckError::Violation(v) => v.fmt(f),
            CheckError::TooLarge {
                explored,
                group_ops,
            } => write!(
                f,
                "undecided: explored {explored} configurations of a {group_ops}-operation key group \
                 without a verdict (budget exhausted)"
            ),
            CheckError::Malformed { op, reason } => write!(f, "malformed op #{op}: {reason}"),
        }
    }
}

impl std::error::Error for CheckError {}
