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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

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

// ---------------------------------------------------------------------------
// Compiled form: keys are dense indices, values are interned ids, and every kind
// of operation becomes "these predicates hold, this one does not, then write".

/// Value id of an absent key. Real values are numbered from 1.
const ABSENT: u32 = 0;

#[derive(Debug, Clone, Copy)]
enum Pred {
    Is(u32),
    Present,
}

impl Pred {
    fn holds(self, v: u32) -> bool {
        match self {
            Pred::Is(x) => v == x,
            Pred::Present => v != ABSENT,
        }
    }
}

#[derive(Debug)]
struct CompiledOp {
    /// Index in `History::ops`.
    orig: usize,
    /// All must hold at the operation's place in the order.
    holds: Vec<(usize, Pred)>,
    /// Must not hold (the first false condition of a `ConditionFailed` txn).
    fails: Option<(usize, Pred)>,
    writes: Vec<(usize, u32)>,
    /// Unknown outcome: may be placed or left out, and never blocks others.
    optional: bool,
    invoke: u64,
    /// Meaningless when `optional`.
    complete: u64,
}

impl CompiledOp {
    fn admissible(&self, state: &[u32]) -> bool {
        self.holds.iter().all(|&(k, p)| p.holds(state[k]))
            && self.fails.is_none_or(|(k, p)| !p.holds(state[k]))
    }

    fn keys(&self) -> impl Iterator<Item = usize> + '_ {
        self.holds
            .iter()
            .map(|&(k, _)| k)
            .chain(self.fails.iter().map(|&(k, _)| k))
            .chain(self.writes.iter().map(|&(k, _)| k))
    }

    fn map_keys(&mut self, mut f: impl FnMut(usize) -> usize) {
        for (k, _) in &mut self.holds {
            *k = f(*k);
        }
        if let Some((k, _)) = &mut self.fails {
            *k = f(*k);
        }
        for (k, _) in &mut self.writes {
            *k = f(*k);
        }
    }
}

#[derive(Default)]
struct Interner<'a> {
    keys: HashMap<&'a [u8], usize>,
    key_names: Vec<&'a [u8]>,
    values: HashMap<&'a [u8], u32>,
    /// `value_names[id - 1]` is the value with id `id`.
    value_names: Vec<&'a [u8]>,
}

impl<'a> Interner<'a> {
    fn key(&mut self, k: &'a [u8]) -> usize {
        let names = &mut self.key_names;
        *self.keys.entry(k).or_insert_with(|| {
            names.push(k);
            names.len() - 1
        })
    }

    fn value(&mut self, v: &'a [u8]) -> u32 {
        let names = &mut self.value_names;
        *self.values.entry(v).or_insert_with(|| {
            names.push(v);
            u32::try_from(names.len()).expect("more than 2^32 distinct values in one history")
        })
    }

    fn opt_value(&mut self, v: Option<&'a [u8]>) -> u32 {
        v.map_or(ABSENT, |v| self.value(v))
    }

    fn value_name(&self, id: u32) -> Option<&'a [u8]> {
        id.checked_sub(1)
            .and_then(|i| self.value_names.get(i as usize).copied())
    }

    fn cond(&mut self, c: &'a Cond) -> (usize, Pred) {
        match c {
            Cond::Equals(k, v) => (self.key(k), Pred::Is(self.value(v))),
            Cond::Absent(k) => (self.key(k), Pred::Is(ABSENT)),
            Cond::Present(k) => (self.key(k), Pred::Present),
        }
    }

    fn write(&mut self, w: &'a Write) -> (usize, u32) {
        match w {
            Write::Put(k, v) => (self.key(k), self.value(v)),
            Write::Delete(k) => (self.key(k), ABSENT),
        }
    }
}

fn compile<'a>(
    index: usize,
    op: &'a Op,
    interner: &mut Interner<'a>,
) -> Result<Option<CompiledOp>, CheckError> {
    let malformed = |reason: &str| CheckError::Malformed {
        op: index,
        reason: reason.to_string(),
    };
    let is_read = matches!(op.kind, OpKind::Get { .. } | OpKind::Mget { .. });
    let optional = match op.outcome {
        Outcome::Failed => return Ok(None),
        Outcome::Unknown if is_read => return Ok(None),
        Outcome::Unknown => true,
        Outcome::Ok | Outcome::ConditionFailed(_) => false,
    };
    let complete = if optional {
        u64::MAX
    } else {
        match op.complete {
            None => return Err(malformed("completed outcome without a completion time")),
            Some(c) if c < op.invoke => return Err(malformed("completes before it is invoked")),
            Some(c) => c,
        }
    };
    let mut c = CompiledOp {
        orig: index,
        holds: Vec::new(),
        fails: None,
        writes: Vec::new(),
        optional,
        invoke: op.invoke,
        complete,
    };
    match (&op.kind, op.outcome) {
        (_, Outcome::ConditionFailed(_)) if !matches!(op.kind, OpKind::Txn { .. }) => {
            return Err(malformed(
                "ConditionFailed on an operation without conditions",
            ));
        }
        (OpKind::Get { key, observed }, _) => {
            let v = interner.opt_value(observed.as_deref());
            c.holds.push((interner.key(key), Pred::Is(v)));
        }
        (OpKind::Mget { keys, observed }, _) => {
            if keys.len() != observed.len() {
                return Err(malformed("MGET with different numbers of keys and values"));
            }
            for (k, v) in keys.iter().zip(observed) {
                let v = interner.opt_value(v.as_deref());
                c.holds.push((interner.key(k), Pred::Is(v)));
            }
        }
        (OpKind::Put { key, value }, _) => {
            let w = (interner.key(key), interner.value(value));
            c.writes.push(w);
        }
        (OpKind::Delete { key }, _) => c.writes.push((interner.key(key), ABSENT)),
        (OpKind::Txn { conds, .. }, Outcome::ConditionFailed(i)) => {
            let Some(failed) = conds.get(i) else {
                return Err(malformed("ConditionFailed index past the last condition"));
            };
            for cond in &conds[..i] {
                c.holds.push(interner.cond(cond));
            }
            c.fails = Some(interner.cond(failed));
        }
        (OpKind::Txn { conds, writes }, _) => {
            for cond in conds {
                c.holds.push(interner.cond(cond));
            }
            for w in writes {
                c.writes.push(interner.write(w));
            }
        }
    }
    // An unanswered op that writes nothing can always be left out.
    if c.optional && c.writes.is_empty() {
        return Ok(None);
    }
    Ok(Some(c))
}

struct UnionFind {
    parent: Vec<usize>,
}

impl UnionFind {
    fn new(n: usize) -> Self {
        UnionFind {
            parent: (0..n).collect(),
        }
    }

    fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }

    fn union(&mut self, a: usize, b: usize) {
        let (a, b) = (self.find(a), self.find(b));
        self.parent[a] = b;
    }
}

// ---------------------------------------------------------------------------
// The search.

const NIL: usize = usize::MAX;

/// Time-ordered call/return events as a doubly linked list with a head sentinel
/// at index 0, so placing an operation and undoing it are O(1) splices.
struct Events {
    next: Vec<usize>,
    prev: Vec<usize>,
    /// Operation of each entry, and whether the entry is its call (else return).
    op: Vec<usize>,
    is_call: Vec<bool>,
    call_of: Vec<usize>,
    /// `NIL` for optional operations, which never return.
    return_of: Vec<usize>,
}

impl Events {
    fn new(ops: &[CompiledOp]) -> Self {
        let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * ops.len());
        for (i, op) in ops.iter().enumerate() {
            events.push((op.invoke, false, i));
            if !op.optional {
                events.push((op.complete, true, i));
            }
        }
        // Calls sort before returns at the same instant: ops that merely touch
        // are treated as concurrent rather than ordered.
        events.sort_unstable();
        let m = events.len();
        let mut ev = Events {
            next: vec![NIL; m + 1],
            prev: vec![NIL; m + 1],
            op: vec![0; m + 1],
            is_call: vec![false; m + 1],
            call_of: vec![NIL; ops.len()],
            return_of: vec![NIL; ops.len()],
        };
        for (j, &(_, is_return, i)) in events.iter().enumerate() {
            let e = j + 1;
            ev.op[e] = i;
            ev.is_call[e] = !is_return;
            if is_return {
                ev.return_of[i] = e;
            } else {
                ev.call_of[i] = e;
            }
            ev.prev[e] = j;
            ev.next[j] = e;
        }
        ev
    }

    fn unlink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    /// Valid only in the reverse order of `unlink`s (dancing links).
    fn relink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = e;
        if n != NIL {
            self.prev[n] = e;
        }
    }

    fn lift(&mut self, op: usize) {
        self.unlink(self.call_of[op]);
        if self.return_of[op] != NIL {
            self.unlink(self.return_of[op]);
        }
    }

    fn unlift(&mut self, op: usize) {
        if self.return_of[op] != NIL {
            self.relink(self.return_of[op]);
        }
        self.relink(self.call_of[op]);
    }
}

/// FxHash: configurations are hashed once per attempted step, and SipHash's
/// DoS resistance buys nothing for data we generated ourselves.
#[derive(Default)]
struct FxHasher {
    hash: u64,
}

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        for &b in chunks.remainder() {
            self.add(u64::from(b));
        }
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        self.hash
    }
}

type Memo = HashSet<Box<[u64]>, BuildHasherDefault<FxHasher>>;

/// Where the search got stuck with the most operations placed. Indices are
/// local to the group.
struct Stuck {
    op: usize,
    prefix: Vec<usize>,
    state: Vec<u32>,
    also_stuck: Vec<usize>,
}

enum SearchFailure {
    Stuck(Stuck),
    Budget,
}

struct Frame {
    op: usize,
    undo_len: usize,
    /// Placed as a fitting pure observation, the only choice tried at its node.
    forced: bool,
}

/// The mutable half of the search: the configuration and how to undo it.
struct Search<'o> {
    ops: &'o [CompiledOp],
    events: Events,
    state: Vec<u32>,
    placed: Vec<u64>,
    memo: Memo,
    /// Scratch for the configuration key, so memo hits allocate nothing.
    config: Vec<u64>,
    undo: Vec<(usize, u32)>,
    stack: Vec<Frame>,
    /// Mandatory operations not yet placed; the search succeeds at zero.
    remaining: usize,
}

impl Search<'_> {
    fn is_placed(&self, i: usize) -> bool {
        self.placed[i / 64] & (1 << (i % 64)) != 0
    }

    /// Places candidate `i` if it fits and leads to an unexplored configuration.
    fn try_place(
        &mut self,
        i: usize,
        forced: bool,
        budget: &mut u64,
    ) -> Result<bool, SearchFailure> {
        let op = &self.ops[i];
        if !op.admissible(&self.state) {
            return Ok(false);
        }
        let undo_len = self.undo.len();
        for &(k, v) in &op.writes {
            self.undo.push((k, self.state[k]));
            self.state[k] = v;
        }
        self.placed[i / 64] |= 1 << (i % 64);
        self.config.clear();
        self.config.extend_from_slice(&self.placed);
        self.config.extend(
            self.state
                .chunks(2)
                .map(|c| u64::from(c[0]) | u64::from(c.get(1).copied().unwrap_or(0)) << 32),
        );
        // Configurations only grow along the current path, so one already in
        // the memo is not an ancestor: it was explored to the end and refuted.
        if self.memo.contains(self.config.as_slice()) {
            self.placed[i / 64] &= !(1 << (i % 64));
            for (k, v) in self.undo.drain(undo_len..).rev() {
                self.state[k] = v;
            }
            return Ok(false);
        }
        if *budget == 0 {
            return Err(SearchFailure::Budget);
        }
        *budget -= 1;
        self.memo.insert(self.config.as_slice().into());
        self.events.lift(i);
        self.stack.push(Frame {
            op: i,
            undo_len,
            forced,
        });
        if !op.optional {
            self.remaining -= 1;
        }
        Ok(true)
    }

    fn pop(&mut self) -> Option<Frame> {
        let frame = self.stack.pop()?;
        let i = frame.op;
        self.events.unlift(i);
        self.placed[i / 64] &= !(1 << (i % 64));
        for (k, v) in self.undo.drain(frame.undo_len..).rev() {
            self.state[k] = v;
        }
        if !self.ops[i].optional {
            self.remaining += 1;
        }
        Some(frame)
    }

    /// First candidate that writes nothing and fits the current state.
    fn fitting_observation(&self) -> Option<usize> {
        let mut e = self.events.next[0];
        while e != NIL && self.events.is_call[e] {
            let op = &self.ops[self.events.op[e]];
            if op.writes.is_empty() && op.admissible(&self.state) {
                return Some(self.events.op[e]);
            }
            e = self.events.next[e];
        }
        None
    }
}

enum Step {
    /// A new configuration: check for success, then choose.
    Enter,
    /// Trying candidates from this event entry on.
    Scan(usize),
    /// The current configuration is refuted.
    Backtrack,
}

fn search(ops: &[CompiledOp], state: Vec<u32>, budget: &mut u64) -> Result<(), SearchFailure> {
    let words = ops.len().div_ceil(64);
    let mut s = Search {
        ops,
        events: Events::new(ops),
        config: Vec::with_capacity(words + state.len().div_ceil(2)),
        state,
        placed: vec![0; words],
        memo: Memo::default(),
        undo: Vec::new(),
        stack: Vec::new(),
        remaining: ops.iter().filter(|o| !o.optional).count(),
    };
    let mut deepest: Option<Stuck> = None;
    let mut step = Step::Enter;
    loop {
        step = match step {
            Step::Enter if s.remaining == 0 => return Ok(()),
            // Partial-order reduction: an eligible op that writes nothing and
            // fits now can be moved to the front of any valid continuation
            // (nothing it precedes there was forced before it, or it would not
            // be eligible), so it is placed without branching. This is what
            // keeps read-heavy histories with many clients tractable.
            Step::Enter => match s.fitting_observation() {
                Some(i) if s.try_place(i, true, budget)? => Step::Enter,
                Some(_) => Step::Backtrack,
                None => Step::Scan(s.events.next[0]),
            },
            Step::Scan(cur) if cur != NIL && s.events.is_call[cur] => {
                let i = s.events.op[cur];
                // Observations here do not fit, or Enter would have taken them.
                if !s.ops[i].writes.is_empty() && s.try_place(i, false, budget)? {
                    Step::Enter
                } else {
                    Step::Scan(s.events.next[cur])
                }
            }
            Step::Scan(cur) => {
                // `cur` is the return of an unplaced op: it had to be placed
                // before anything still pending, and no choice made that
                // possible.
                if deepest
                    .as_ref()
                    .is_none_or(|d| s.stack.len() > d.prefix.len())
                {
                    deepest = Some(stuck_here(&s, cur));
                }
                Step::Backtrack
            }
            Step::Backtrack => match s.pop() {
                // A forced placement was the only option at its node, so its
                // refutation refutes the node too.
                Some(frame) if frame.forced => Step::Backtrack,
                Some(frame) => Step::Scan(s.events.next[s.events.call_of[frame.op]]),
                None => {
                    return Err(SearchFailure::Stuck(deepest.unwrap_or_else(|| Stuck {
                        op: 0,
                        prefix: Vec::new(),
                        state: s.state.clone(),
                        also_stuck: Vec::new(),
                    })))
                }
            },
        };
    }
}

fn stuck_here(s: &Search<'_>, cur: usize) -> Stuck {
    // Reaching the end of the list with mandatory ops left cannot happen (each
    // has a return entry), but blame something sensible rather than panic.
    let op = if cur != NIL {
        s.events.op[cur]
    } else {
        (0..s.ops.len())
            .find(|&i| !s.ops[i].optional && !s.is_placed(i))
            .unwrap_or(0)
    };
    let mut also_stuck = Vec::new();
    let mut e = s.events.next[0];
    while e != cur && e != NIL {
        let j = s.events.op[e];
        if s.events.is_call[e] && j != op && !s.ops[j].admissible(&s.state) {
            also_stuck.push(j);
        }
        e = s.events.next[e];
    }
    Stuck {
        op,
        prefix: s.stack.iter().map(|f| f.op).collect(),
        state: s.state.clone(),
        also_stuck,
    }
}

// ---------------------------------------------------------------------------
// Explaining a violation.

fn explain(
    history: &History,
    interner: &Interner<'_>,
    ops: &[CompiledOp],
    global_of: &[usize],
    stuck: Stuck,
) -> Violation {
    use fmt::Write as _;
    let orig = |i: usize| ops[i].orig;
    let describe = |i: usize| describe_op(orig(i), &history.ops[orig(i)]);
    let name = |id: u32| match interner.value_name(id) {
        Some(v) => show(v),
        None => "absent".to_string(),
    };
    let key_name = |local: usize| show(interner.key_names[global_of[local]]);

    let mut state: Vec<(Key, Option<Value>)> = global_of
        .iter()
        .zip(&stuck.state)
        .map(|(&g, &v)| {
            (
                interner.key_names[g].to_vec(),
                interner.value_name(v).map(<[u8]>::to_vec),
            )
        })
        .collect();
    state.sort();

    // Why the blocked operation does not fit the state it had to be placed in.
    let why = |i: usize| -> String {
        let op = &ops[i];
        for &(k, p) in &op.holds {
            let v = stuck.state[k];
            if !p.holds(v) {
                let wanted = match p {
                    Pred::Is(x) => name(x),
                    Pred::Present => "present".to_string(),
                };
                return format!("needs {} = {wanted} but it is {}", key_name(k), name(v));
            }
        }
        if let Some((k, p)) = op.fails {
            if p.holds(stuck.state[k]) {
                return format!(
                    "reports its condition on {} false but it holds ({})",
                    key_name(k),
                    name(stuck.state[k])
                );
            }
        }
        "fits this state, but every continuation from there was already refuted".to_string()
    };

    let mut m = String::new();
    let _ = writeln!(
        m,
        "not strictly serializable: no valid order can place op {}",
        describe(stuck.op)
    );
    let _ = writeln!(
        m,
        "  deepest point: {} of {} ops in this key group placed{}",
        stuck.prefix.len(),
        ops.len(),
        if stuck.prefix.is_empty() {
            ""
        } else {
            ", ending with:"
        }
    );
    const SHOWN: usize = 8;
    let skip = stuck.prefix.len().saturating_sub(SHOWN);
    if skip > 0 {
        let _ = writeln!(m, "    ... {skip} earlier");
    }
    for &i in &stuck.prefix[skip..] {
        let _ = writeln!(m, "    {}", describe(i));
    }
    let shown_state: Vec<String> = state
        .iter()
        .map(|(k, v)| {
            let v = show_opt(v.as_deref());
            format!("{} = {v}", show(k))
        })
        .collect();
    let _ = writeln!(m, "  state there: {}", shown_state.join(", "));
    let _ = writeln!(
        m,
        "  op #{} is the earliest-completing op not yet placed, so it must precede every op \
         invoked after it completed, but it {}",
        orig(stuck.op),
        why(stuck.op)
    );
    for &j in &stuck.also_stuck {
        let _ = writeln!(
            m,
            "  eligible instead, but also no fit: {}: it {}",
            describe(j),
            why(j)
        );
    }

    Violation {
        op: orig(stuck.op),
        prefix: stuck.prefix.iter().map(|&i| orig(i)).collect(),
        state,
        also_stuck: stuck.also_stuck.iter().map(|&i| orig(i)).collect(),
        message: m.trim_end().to_string(),
    }
}

/// Printable ASCII as a quoted string, anything else as hex.
fn show(bytes: &[u8]) -> String {
    use fmt::Write as _;
    if bytes.iter().all(|b| (0x20..0x7f).contains(b)) {
        format!("{:?}", String::from_utf8_lossy(bytes))
    } else {
        let mut s = String::from("0x");
        for b in bytes {
            let _ = write!(s, "{b:02x}");
        }
        s
    }
}

fn show_opt(v: Option<&[u8]>) -> String {
    v.map_or_else(|| "absent".to_string(), show)
}

fn describe_op(index: usize, op: &Op) -> String {
    let kind = match &op.kind {
        OpKind::Get { key, observed } => {
            format!("get {} -> {}", show(key), show_opt(observed.as_deref()))
        }
        OpKind::Put { key, value } => format!("put {} = {}", show(key), show(value)),
        OpKind::Delete { key } => format!("delete {}", show(key)),
        OpKind::Txn { conds, writes } => {
            let conds: Vec<String> = conds
                .iter()
                .map(|c| match c {
                    Cond::Equals(k, v) => format!("{} == {}", show(k), show(v)),
                    Cond::Absent(k) => format!("{} absent", show(k)),
                    Cond::Present(k) => format!("{} present", show(k)),
                })
                .collect();
            let writes: Vec<String> = writes
                .iter()
                .map(|w| match w {
                    Write::Put(k, v) => format!("{} = {}", show(k), show(v)),
                    Write::Delete(k) => format!("delete {}", show(k)),
                })
                .collect();
            format!("txn if [{}] then [{}]", conds.join(", "), writes.join(", "))
        }
        OpKind::Mget { keys, observed } => {
            let pairs: Vec<String> = keys
                .iter()
                .zip(observed)
                .map(|(k, v)| format!("{} -> {}", show(k), show_opt(v.as_deref())))
                .collect();
            format!("mget [{}]", pairs.join(", "))
        }
    };
    let outcome = match op.outcome {
        Outcome::Ok => "ok".to_string(),
        Outcome::Failed => "failed".to_string(),
        Outcome::ConditionFailed(i) => format!("condition {i} false"),
        Outcome::Unknown => "unknown".to_string(),
    };
    let end = match (op.outcome, op.complete) {
        (Outcome::Unknown, _) | (_, None) => "inf)".to_string(),
        (_, Some(c)) => format!("{c}]"),
    };
    format!(
        "#{index} (client {}, {kind}: {outcome}, [{}, {end})",
        op.client, op.invoke
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn b(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    fn get(key: &str, observed: Option<&str>) -> OpKind {
        OpKind::Get {
            key: b(key),
            observed: observed.map(b),
        }
    }

    fn put(key: &str, value: &str) -> OpKind {
        OpKind::Put {
            key: b(key),
            value: b(value),
        }
    }

    fn mget(pairs: &[(&str, Option<&str>)]) -> OpKind {
        OpKind::Mget {
            keys: pairs.iter().map(|(k, _)| b(k)).collect(),
            observed: pairs.iter().map(|(_, v)| v.map(b)).collect(),
        }
    }

    fn txn(conds: Vec<Cond>, writes: Vec<Write>) -> OpKind {
        OpKind::Txn { conds, writes }
    }

    fn eq(k: &str, v: &str) -> Cond {
        Cond::Equals(b(k), b(v))
    }

    fn w(k: &str, v: &str) -> Write {
        Write::Put(b(k), b(v))
    }

    /// A completed operation with outcome Ok.
    fn ok(client: u32, invoke: u64, complete: u64, kind: OpKind) -> Op {
        Op {
            client,
            invoke,
            complete: Some(complete),
            kind,
            outcome: Outcome::Ok,
        }
    }

    fn unknown(client: u32, invoke: u64, kind: OpKind) -> Op {
        Op {
            client,
            invoke,
            complete: None,
            kind,
            outcome: Outcome::Unknown,
        }
    }

    fn hist(initial: &[(&str, &str)], ops: Vec<Op>) -> History {
        History {
            initial: initial.iter().map(|(k, v)| (b(k), b(v))).collect(),
            ops,
        }
    }

    fn accept(h: &History) {
        if let Err(e) = check(h) {
            panic!("expected acceptance, got: {e}");
        }
    }

    fn reject(h: &History) -> Violation {
        match check(h) {
            Err(CheckError::Violation(v)) => {
                eprintln!("{v}");
                v
            }
            other => panic!("expected a violation, got {other:?}"),
        }
    }

    // ---- accepted ----

    #[test]
    fn sequential_history() {
        accept(&hist(
            &[],
            vec![
                ok(1, 0, 10, get("x", None)),
                ok(1, 20, 30, put("x", "1")),
                ok(2, 40, 50, get("x", Some("1"))),
                ok(2, 60, 70, OpKind::Delete { key: b("x") }),
                ok(1, 80, 90, get("x", None)),
                ok(
                    1,
                    100,
                    110,
                    txn(vec![Cond::Absent(b("x"))], vec![w("x", "2"), w("y", "3")]),
                ),
                ok(2, 120, 130, mget(&[("x", Some("2")), ("y", Some("3"))])),
            ],
        ));
    }

    #[test]
    fn concurrent_writes_read_sees_either() {
        for seen in ["1", "2"] {
            accept(&hist(
                &[],
                vec![
                    ok(1, 0, 100, put("x", "1")),
                    ok(2, 0, 100, put("x", "2")),
                    ok(3, 110, 120, get("x", Some(seen))),
                    ok(3, 130, 140, get("x", Some(seen))),
                ],
            ));
        }
    }

    #[test]
    fn read_concurrent_with_write_sees_old_or_new() {
        for seen in [Some("0"), Some("1")] {
            accept(&hist(
                &[("x", "0")],
                vec![ok(1, 0, 100, put("x", "1")), ok(2, 10, 50, get("x", seen))],
            ));
        }
    }

    #[test]
    fn unknown_put_later_observed() {
        accept(&hist(
            &[("x", "0")],
            vec![
                ok(2, 0, 5, get("x", Some("0"))),
                unknown(1, 10, put("x", "1")),
                ok(2, 20, 30, get("x", Some("0"))),
                ok(2, 1000, 1010, get("x", Some("1"))),
            ],
        ));
    }

    #[test]
    fn unknown_put_never_observed() {
        accept(&hist(
            &[("x", "0")],
            vec![
                unknown(1, 10, put("x", "1")),
                ok(2, 20, 30, get("x", Some("0"))),
                ok(2, 1000, 1010, get("x", Some("0"))),
            ],
        ));
    }

    #[test]
    fn failed_ops_and_unanswered_reads_are_ignored() {
        let mut failed_put = ok(1, 0, 10, put("x", "9"));
        failed_put.outcome = Outcome::Failed;
        accept(&hist(
            &[("x", "0")],
            vec![
                failed_put,
                unknown(2, 0, get("x", Some("garbage"))),
                ok(3, 20, 30, get("x", Some("0"))),
            ],
        ));
    }

    /// Four concurrent transfers between accounts a and b, each a CAS on both
    /// balances, with snapshot reads that always see the total of 100.
    #[test]
    fn transfers_with_consistent_snapshots() {
        let t = |a0: &str, b0: &str, a1: &str, b1: &str| {
            txn(vec![eq("a", a0), eq("b", b0)], vec![w("a", a1), w("b", b1)])
        };
        let mut stale = ok(4, 5, 70, t("100", "0", "50", "50"));
        stale.outcome = Outcome::ConditionFailed(0);
        accept(&hist(
            &[("a", "100"), ("b", "0")],
            vec![
                ok(1, 0, 40, t("100", "0", "90", "10")),
                ok(2, 10, 60, t("90", "10", "70", "30")),
                ok(3, 20, 50, mget(&[("a", Some("90")), ("b", Some("10"))])),
                stale,
                ok(3, 55, 65, mget(&[("a", Some("70")), ("b", Some("30"))])),
                ok(1, 45, 90, t("70", "30", "60", "40")),
                unknown(2, 65, t("60", "40", "0", "100")),
                ok(3, 70, 80, mget(&[("b", Some("30")), ("a", Some("70"))])),
                ok(3, 95, 99, mget(&[("a", Some("0")), ("b", Some("100"))])),
            ],
        ));
    }

    #[test]
    fn condition_failed_placed_after_the_write_that_falsified_it() {
        let mut cas = ok(2, 20, 30, txn(vec![eq("x", "0")], vec![w("x", "2")]));
        cas.outcome = Outcome::ConditionFailed(0);
        accept(&hist(
            &[("x", "0")],
            vec![
                ok(1, 0, 10, put("x", "1")),
                cas,
                ok(3, 40, 50, get("x", Some("1"))),
            ],
        ));
    }

    // ---- rejected ----

    #[test]
    fn rejects_stale_read() {
        let v = reject(&hist(
            &[("x", "0")],
            vec![
                ok(1, 0, 10, put("x", "1")),
                ok(2, 20, 30, get("x", Some("0"))),
            ],
        ));
        assert_eq!(v.op, 1);
        assert_eq!(v.prefix, vec![0]);
        assert_eq!(v.state, vec![(b("x"), Some(b("1")))]);
    }

    #[test]
    fn rejects_lost_update() {
        let inc = || txn(vec![eq("c", "0")], vec![w("c", "1")]);
        reject(&hist(
            &[("c", "0")],
            vec![
                ok(1, 0, 50, inc()),
                ok(2, 10, 60, inc()),
                ok(3, 100, 110, get("c", Some("1"))),
            ],
        ));
    }

    #[test]
    fn rejects_fractured_read() {
        reject(&hist(
            &[("x", "0"), ("y", "0")],
            vec![
                ok(1, 0, 100, txn(vec![], vec![w("x", "1"), w("y", "1")])),
                ok(2, 10, 90, mget(&[("x", Some("1")), ("y", Some("0"))])),
            ],
        ));
    }

    /// A saw the new x and finished; B started later and saw the old x. Key y is
    /// busy concurrently so the checker must not confuse the two.
    #[test]
    fn rejects_real_time_inversion() {
        let v = reject(&hist(
            &[("x", "0"), ("y", "0")],
            vec![
                ok(1, 0, 100, put("x", "1")),
                ok(3, 0, 100, put("y", "1")),
                ok(2, 10, 20, get("x", Some("1"))),
                ok(4, 15, 25, get("y", Some("0"))),
                ok(5, 30, 40, get("x", Some("0"))),
                ok(4, 30, 40, get("y", Some("1"))),
            ],
        ));
        assert_eq!(v.op, 4, "blames B's read");
    }

    /// The same inversion through a two-key transaction: seeing its x write
    /// and later missing its y write is impossible.
    #[test]
    fn rejects_real_time_inversion_across_keys() {
        reject(&hist(
            &[("x", "0"), ("y", "0")],
            vec![
                ok(1, 0, 100, txn(vec![], vec![w("x", "1"), w("y", "1")])),
                ok(2, 10, 20, get("x", Some("1"))),
                ok(3, 30, 40, get("y", Some("0"))),
            ],
        ));
    }

    #[test]
    fn rejects_write_skew() {
        reject(&hist(
            &[("x", "0"), ("y", "0")],
            vec![
                ok(1, 0, 50, txn(vec![eq("y", "0")], vec![w("x", "1")])),
                ok(2, 0, 50, txn(vec![eq("x", "0")], vec![w("y", "1")])),
                ok(3, 60, 70, mget(&[("x", Some("1")), ("y", Some("1"))])),
            ],
        ));
    }

    #[test]
    fn rejects_txn_whose_condition_never_holds() {
        let v = reject(&hist(
            &[("x", "0")],
            vec![
                ok(1, 0, 100, put("x", "1")),
                ok(2, 0, 100, txn(vec![eq("x", "7")], vec![w("y", "1")])),
            ],
        ));
        assert_eq!(v.op, 1);
    }

    #[test]
    fn rejects_condition_failed_when_condition_held() {
        let mut cas = ok(2, 20, 30, txn(vec![eq("x", "0")], vec![w("x", "2")]));
        cas.outcome = Outcome::ConditionFailed(0);
        reject(&hist(&[("x", "0")], vec![cas]));
    }

    #[test]
    fn rejects_read_of_value_nobody_wrote() {
        let v = reject(&hist(
            &[("x", "0")],
            vec![
                ok(1, 0, 10, put("x", "1")),
                ok(2, 0, 20, get("x", Some("ghost"))),
            ],
        ));
        assert_eq!(v.op, 1);
        assert!(v.message.contains("\"ghost\""), "{}", v.message);
    }

    #[test]
    fn rejects_unknown_put_observed_before_its_invocation() {
        reject(&hist(
            &[("x", "0")],
            vec![
                ok(2, 0, 20, get("x", Some("1"))),
                unknown(1, 50, put("x", "1")),
            ],
        ));
    }

    #[test]
    fn malformed_ops_are_reported() {
        let mut bad = ok(1, 0, 10, get("x", None));
        bad.complete = None;
        assert!(matches!(
            check(&hist(&[], vec![bad])),
            Err(CheckError::Malformed { op: 0, .. })
        ));
        let mut bad = ok(1, 0, 10, put("x", "1"));
        bad.outcome = Outcome::ConditionFailed(0);
        assert!(matches!(
            check(&hist(&[], vec![bad])),
            Err(CheckError::Malformed { op: 0, .. })
        ));
    }

    // ---- generated histories ----

    /// SplitMix64: deterministic, dependency-free randomness for the generator.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
    }

    /// Runs `n` random operations sequentially on a real map (the `i`-th takes
    /// effect at time 100·i), assigns each to one of `clients` sequential
    /// clients, then widens every operation into a random interval around its
    /// effect time that does not overlap the same client's neighbours. The result
    /// is linearizable by construction and heavily concurrent.
    fn generate(seed: u64, n: usize, clients: u32, multi_key: bool) -> History {
        let keys = ["k0", "k1", "k2", "k3"];
        let mut rng = Rng(seed);
        let mut state: BTreeMap<Key, Value> = BTreeMap::new();
        let mut ops = Vec::with_capacity(n);
        for i in 0..n {
            let key = b(keys[rng.below(4) as usize]);
            let other = b(keys[rng.below(4) as usize]);
            let value = format!("v{i}").into_bytes();
            let point = 100 * i as u64 + 100;
            let roll = rng.below(100);
            let mut outcome = Outcome::Ok;
            let kind = match roll {
                0..=34 => OpKind::Get {
                    observed: state.get(&key).cloned(),
                    key,
                },
                35..=59 => {
                    let unanswered = rng.below(20) == 0;
                    // Half the unanswered writes never took effect.
                    if !unanswered || rng.below(2) == 0 {
                        state.insert(key.clone(), value.clone());
                    }
                    if unanswered {
                        outcome = Outcome::Unknown;
                    }
                    OpKind::Put { key, value }
                }
                60..=69 => {
                    state.remove(&key);
                    OpKind::Delete { key }
                }
                70..=89 => {
                    let second = if multi_key { other } else { key.clone() };
                    let current = state.get(&key).cloned();
                    let cond = if rng.below(3) == 0 {
                        Cond::Equals(key.clone(), b("stale"))
                    } else {
                        match current {
                            Some(v) => Cond::Equals(key.clone(), v),
                            None => Cond::Absent(key.clone()),
                        }
                    };
                    let holds = !matches!(&cond, Cond::Equals(_, v) if v == b"stale");
                    let writes = vec![
                        Write::Put(key, value.clone()),
                        Write::Put(second, format!("w{i}").into_bytes()),
                    ];
                    if holds {
                        for wr in &writes {
                            if let Write::Put(k, v) = wr {
                                state.insert(k.clone(), v.clone());
                            }
                        }
                    } else {
                        outcome = Outcome::ConditionFailed(0);
                    }
                    OpKind::Txn {
                        conds: vec![cond],
                        writes,
                    }
                }
                _ => {
                    let ks: Vec<Key> = if multi_key {
                        vec![key, other]
                    } else {
                        vec![key]
                    };
                    OpKind::Mget {
                        observed: ks.iter().map(|k| state.get(k).cloned()).collect(),
                        keys: ks,
                    }
                }
            };
            let client = rng.below(u64::from(clients)) as u32;
            ops.push((
                point,
                Op {
                    client,
                    invoke: 0,
                    complete: None,
                    kind,
                    outcome,
                },
            ));
        }
        // Per client: invoke in (previous effect point, own point], complete in
        // [own point, next invoke).
        for c in 0..clients {
            let mine: Vec<usize> = (0..n).filter(|&i| ops[i].1.client == c).collect();
            let mut prev_point = 0;
            for &i in &mine {
                let point = ops[i].0;
                ops[i].1.invoke = prev_point + 1 + rng.below(point - prev_point);
                prev_point = point;
            }
            for (j, &i) in mine.iter().enumerate() {
                let point = ops[i].0;
                let limit = mine.get(j + 1).map_or(point + 2000, |&nx| ops[nx].1.invoke);
                if ops[i].1.outcome != Outcome::Unknown {
                    ops[i].1.complete = Some(point + rng.below(limit - point));
                }
            }
        }
        History {
            initial: BTreeMap::new(),
            ops: ops.into_iter().map(|(_, op)| op).collect(),
        }
    }

    fn check_generated(multi_key: bool) {
        for seed in 0..5 {
            let h = generate(seed, 200, 8, multi_key);
            let start = Instant::now();
            let result = check(&h);
            let took = start.elapsed();
            eprintln!("seed {seed} multi_key {multi_key}: {took:?}");
            if let Err(e) = result {
                panic!("seed {seed}: generated history rejected: {e}");
            }
            assert!(took < Duration::from_secs(1), "seed {seed} took {took:?}");
        }
    }

    #[test]
    fn generated_single_key_histories_are_accepted_quickly() {
        check_generated(false);
    }

    #[test]
    fn generated_multi_key_histories_are_accepted_quickly() {
        check_generated(true);
    }

    /// The generator could hide a bug that accepts everything; corrupting one
    /// read of a generated history must turn it into a violation.
    #[test]
    fn generated_history_with_a_corrupted_read_is_rejected() {
        for multi_key in [false, true] {
            let mut h = generate(7, 200, 8, multi_key);
            let read = h
                .ops
                .iter()
                .rposition(|op| matches!(op.kind, OpKind::Get { .. }))
                .expect("generator produces reads");
            if let OpKind::Get { observed, .. } = &mut h.ops[read].kind {
                *observed = Some(b("corrupt"));
            }
            let v = reject(&h);
            assert_eq!(v.op, read);
        }
    }

    /// Reference semantics, written independently of the search: replay one
    /// op on a map, or `None` if its observation does not match.
    fn replay(state: &BTreeMap<Key, Value>, op: &Op) -> Option<BTreeMap<Key, Value>> {
        let cond = |c: &Cond| match c {
            Cond::Equals(k, v) => state.get(k) == Some(v),
            Cond::Absent(k) => !state.contains_key(k),
            Cond::Present(k) => state.contains_key(k),
        };
        let mut next = state.clone();
        match (&op.kind, op.outcome) {
            (OpKind::Get { key, observed }, _) => {
                (state.get(key) == observed.as_ref()).then_some(next)
            }
            (OpKind::Mget { keys, observed }, _) => keys
                .iter()
                .zip(observed)
                .all(|(k, v)| state.get(k) == v.as_ref())
                .then_some(next),
            (OpKind::Put { key, value }, _) => {
                next.insert(key.clone(), value.clone());
                Some(next)
            }
            (OpKind::Delete { key }, _) => {
                next.remove(key);
                Some(next)
            }
            (OpKind::Txn { conds, .. }, Outcome::ConditionFailed(i)) => {
                (conds[..i].iter().all(cond) && !cond(&conds[i])).then_some(next)
            }
            (OpKind::Txn { conds, writes }, _) => {
                if !conds.iter().all(cond) {
                    return None;
                }
                for w in writes {
                    match w {
                        Write::Put(k, v) => next.insert(k.clone(), v.clone()),
                        Write::Delete(k) => next.remove(k),
                    };
                }
                Some(next)
            }
        }
    }

    /// Brute force: try every order of every admissible subset, checking real
    /// time pairwise on the finished sequence.
    fn brute_force(h: &History) -> bool {
        let included: Vec<usize> = (0..h.ops.len())
            .filter(|&i| {
                let op = &h.ops[i];
                let read = matches!(op.kind, OpKind::Get { .. } | OpKind::Mget { .. });
                match op.outcome {
                    Outcome::Failed => false,
                    Outcome::Unknown => !read,
                    _ => true,
                }
            })
            .collect();
        let end = |i: usize| match h.ops[i].outcome {
            Outcome::Unknown => u64::MAX,
            _ => h.ops[i].complete.unwrap_or(u64::MAX),
        };
        fn go(
            h: &History,
            included: &[usize],
            end: &dyn Fn(usize) -> u64,
            seq: &mut Vec<usize>,
            state: &BTreeMap<Key, Value>,
        ) -> bool {
            let done = included
                .iter()
                .all(|&i| seq.contains(&i) || h.ops[i].outcome == Outcome::Unknown);
            if done {
                return true;
            }
            for &i in included {
                if seq.contains(&i) {
                    continue;
                }
                // Nothing already placed may have been invoked after i completed.
                if seq.iter().any(|&p| end(i) < h.ops[p].invoke) {
                    continue;
                }
                if let Some(next) = replay(state, &h.ops[i]) {
                    seq.push(i);
                    if go(h, included, end, seq, &next) {
                        return true;
                    }
                    seq.pop();
                }
            }
            false
        }
        // Ops never placed are only legal if optional; the pairwise rule above
        // covers every placed pair, and an unplaced mandatory op fails `done`.
        go(h, &included, &end, &mut Vec::new(), &h.initial)
    }

    fn random_small_history(rng: &mut Rng) -> History {
        let vals = ["0", "1", "2"];
        let keys = ["x", "y"];
        let pick_key = |rng: &mut Rng| b(keys[rng.below(2) as usize]);
        let n = 2 + rng.below(5) as usize;
        let mut ops = Vec::new();
        for _ in 0..n {
            let val = |rng: &mut Rng| b(vals[rng.below(3) as usize]);
            let opt_val = |rng: &mut Rng| (rng.below(4) != 0).then(|| val(rng));
            let kind = match rng.below(5) {
                0 => OpKind::Get {
                    key: pick_key(rng),
                    observed: opt_val(rng),
                },
                1 => OpKind::Put {
                    key: pick_key(rng),
                    value: val(rng),
                },
                2 => OpKind::Delete { key: pick_key(rng) },
                3 => OpKind::Txn {
                    conds: (0..1 + rng.below(2))
                        .map(|_| match rng.below(3) {
                            0 => Cond::Equals(pick_key(rng), val(rng)),
                            1 => Cond::Absent(pick_key(rng)),
                            _ => Cond::Present(pick_key(rng)),
                        })
                        .collect(),
                    writes: (0..rng.below(3))
                        .map(|_| match rng.below(3) {
                            0 => Write::Delete(pick_key(rng)),
                            _ => Write::Put(pick_key(rng), val(rng)),
                        })
                        .collect(),
                },
                _ => {
                    let keys: Vec<Key> = (0..1 + rng.below(2)).map(|_| pick_key(rng)).collect();
                    OpKind::Mget {
                        observed: keys.iter().map(|_| opt_val(rng)).collect(),
                        keys,
                    }
                }
            };
            let outcome = match (rng.below(10), &kind) {
                (0, _) => Outcome::Unknown,
                (1, _) => Outcome::Failed,
                (2..=4, OpKind::Txn { conds, .. }) => {
                    Outcome::ConditionFailed(rng.below(conds.len() as u64) as usize)
                }
                _ => Outcome::Ok,
            };
            let invoke = rng.below(40);
            let complete = (outcome != Outcome::Unknown).then(|| invoke + rng.below(25));
            ops.push(Op {
                client: ops.len() as u32,
                invoke,
                complete,
                kind,
                outcome,
            });
        }
        let mut initial = BTreeMap::new();
        for k in keys {
            if rng.below(3) != 0 {
                initial.insert(b(k), b(vals[rng.below(3) as usize]));
            }
        }
        History { initial, ops }
    }

    /// Differential test against brute force on thousands of tiny histories,
    /// about half of them invalid.
    #[test]
    fn agrees_with_brute_force_on_small_histories() {
        let mut rng = Rng(42);
        let (mut accepted, mut rejected) = (0, 0);
        for case in 0..20_000 {
            let h = random_small_history(&mut rng);
            let expected = brute_force(&h);
            match check(&h) {
                Ok(()) if expected => accepted += 1,
                Err(CheckError::Violation(_)) if !expected => rejected += 1,
                other => {
                    panic!("case {case}: brute force says {expected}, checker {other:?}\n{h:#?}")
                }
            }
        }
        eprintln!("accepted {accepted}, rejected {rejected}");
        assert!(
            accepted > 2_000 && rejected > 2_000,
            "{accepted} / {rejected}"
        );
    }

    #[test]
    fn violation_in_one_group_beats_undecided_other_group() {
        let mut h = generate(3, 200, 8, true);
        h.ops.push(ok(9, 0, 10, put("z", "1")));
        h.ops.push(ok(9, 20, 30, get("z", None)));
        assert!(matches!(
            check_with_budget(&h, 10),
            Err(CheckError::Violation(Violation { op: 201, .. }))
        ));
    }

    #[test]
    fn exhausted_budget_is_not_a_verdict() {
        let h = generate(3, 200, 8, true);
        assert!(matches!(
            check_with_budget(&h, 10),
            Err(CheckError::TooLarge { explored: 10, .. })
        ));
    }
}
