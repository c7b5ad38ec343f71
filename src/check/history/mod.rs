//! Strict-serializability checker for recorded key-value histories.
//!
//! # Model
//!
//! The store is a map from keys to values, starting at [`History::initial`]. Every
//! operation that took effect must appear to happen atomically at one instant
//! between its invocation and its completion. A history is strictly serializable
//! when some total order of those operations respects real time (if A completed
//! before B was invoked, A comes first) and, replayed from the initial state,
//! reproduces every observation: values read by GET and MGET, the truth of every
//! condition of a transaction reported `Ok`, and the first false condition of one
//! reported `ConditionFailed`. When every operation touches one key this is
//! exactly linearizability.
//!
//! What the client could not see constrains nothing: failed or unanswered reads
//! are dropped, failed writes are dropped, and a write whose reply never came
//! (`Unknown`) is optional: it may take effect at any instant after its
//! invocation, or never. Giving it an unbounded completion time models that
//! directly: it never forces anything to come after it, and the search may finish
//! without placing it.
//!
//! # Algorithm
//!
//! Wing & Gong's search as refined by Lowe ("Testing for linearizability") and
//! Porcupine: walk a time-ordered list of call and return events; every call
//! that precedes the first pending return names an operation that may be placed
//! next (nothing still pending completed before it was invoked). Place one if its
//! observation matches the current state, remove its events and start over;
//! reaching a return event means that operation had to be placed already, so
//! backtrack. The list is doubly linked and removal is undone in reverse order,
//! so backtracking costs O(1) per step.
//!
//! Most orders reach the same configuration many times, so every (set of placed
//! operations, state) pair is remembered and never explored twice; this is what
//! makes the search practical. The set of placed operations is a bitset and the
//! state is a vector of interned value ids, so a configuration is a short `[u64]`.
//!
//! Observations do not branch: an eligible operation that writes nothing and
//! matches the current state can be moved to the front of any valid
//! continuation, so it is placed at once and only writes are ever chosen
//! between. Reads dominate real histories, so this removes most of the
//! branching; only overlapping writes to the same keys still multiply.
//!
//! Strict serializability is compositional over disjoint sets of keys, just as
//! linearizability is local: if no operation touches keys from two groups, the
//! history is valid exactly when each group's sub-history is. Keys are therefore
//! joined into groups (union-find over the keys each operation touches) and each
//! group is searched on its own. With single-key operations that is one search
//! per key, which keeps real test histories small.
//!
//! The problem is NP-complete, so the search has a budget of distinct
//! configurations; exhausting it yields [`CheckError::TooLarge`], never a verdict.
//!
//! # Layout
//!
//! Imports point one way, from here down: `model` is what a caller records
//! and the verdicts (re-exported here); `compile` turns operations into the
//! predicates the search evaluates; `search` decides one key group; `explain`
//! words a violation for a person; this file's [`check`] splits a history
//! into key groups and runs them.

mod compile;
mod explain;
mod model;
mod search;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

use compile::{compile, CompiledOp, Interner, UnionFind, ABSENT};
use explain::explain;
pub use model::*;
use search::{search, SearchFailure};

/// Decides whether `history` is strictly serializable, with
/// [`DEFAULT_MAX_STATES`] as the search budget.
pub fn check(history: &History) -> Result<(), CheckError> {
    check_with_budget(history, DEFAULT_MAX_STATES)
}

/// Like [`check`], but the search of each key group gives up after `max_states`
/// distinct configurations. Every group is still checked, so a violation
/// anywhere is reported even if another group was too large to decide;
/// [`CheckError::TooLarge`] is returned only when no group is a violation.
pub fn check_with_budget(history: &History, max_states: u64) -> Result<(), CheckError> {
    let mut interner = Interner::default();
    let mut compiled = Vec::new();
    for (index, op) in history.ops.iter().enumerate() {
        if let Some(c) = compile(index, op, &mut interner)? {
            compiled.push(c);
        }
    }

    // Group keys that some operation touches together.
    let mut groups = UnionFind::new(interner.key_names.len());
    for op in &compiled {
        let mut keys = op.keys();
        if let Some(first) = keys.next() {
            for k in keys {
                groups.union(first, k);
            }
        }
    }
    // Operations arrive in history order, so groups come out ordered by their
    // first operation: the reported violation does not depend on hashing.
    let mut by_group: Vec<Vec<CompiledOp>> = Vec::new();
    let mut group_slot: HashMap<usize, usize> = HashMap::new();
    for op in compiled {
        // Operations touching no key observe and change nothing; any place works.
        let Some(first) = op.keys().next() else {
            continue;
        };
        let root = groups.find(first);
        let slot = *group_slot.entry(root).or_insert_with(|| {
            by_group.push(Vec::new());
            by_group.len() - 1
        });
        by_group[slot].push(op);
    }

    let mut initial = vec![ABSENT; interner.key_names.len()];
    for (g, slot) in initial.iter_mut().enumerate() {
        if let Some(v) = history.initial.get(interner.key_names[g]) {
            *slot = interner.value(v);
        }
    }

    let mut undecided = None;
    for mut ops in by_group {
        // Renumber the group's keys densely so its state vector stays short.
        let mut local_of: HashMap<usize, usize> = HashMap::new();
        let mut global_of: Vec<usize> = Vec::new();
        for op in &mut ops {
            op.map_keys(|g| {
                *local_of.entry(g).or_insert_with(|| {
                    global_of.push(g);
                    global_of.len() - 1
                })
            });
        }
        let state: Vec<u32> = global_of.iter().map(|&g| initial[g]).collect();
        let mut budget = max_states;
        match search(&ops, state, &mut budget) {
            Ok(()) => {}
            Err(SearchFailure::Budget) => {
                undecided.get_or_insert(CheckError::TooLarge {
                    explored: max_states,
                    group_ops: ops.len(),
                });
            }
            Err(SearchFailure::Stuck(stuck)) => {
                return Err(CheckError::Violation(explain(
                    history, &interner, &ops, &global_of, stuck,
                )))
            }
        }
    }
    undecided.map_or(Ok(()), Err)
}
